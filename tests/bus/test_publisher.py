"""BusPublisher against the shared Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from postloan.bus import BusPublisher
from postloan.bus.schema import (
    command_response_topic,
    decode_event,
    decode_fix,
    event_topic,
    position_topic,
)
from postloan.config import BusConfig
from postloan.model import DeviceEvent, Fix


async def _publish_response(config: BusConfig, device_id: str) -> dict[str, object]:
    async with aiomqtt.Client("127.0.0.1", 1883) as subscriber:
        await subscriber.subscribe(command_response_topic(device_id), qos=1)
        publisher = BusPublisher(config)
        await publisher.start()
        try:
            publisher.publish_command_response(device_id, 42, {"result": "ok"})
            message = await asyncio.wait_for(anext(aiter(subscriber.messages)), 15)
        finally:
            await publisher.close()
    assert isinstance(message.payload, bytes)
    document: dict[str, object] = json.loads(message.payload)
    return document


def test_publisher_sends_command_response(
    tmp_path: Path, shared_broker_url: str, run_id: str
) -> None:
    config = BusConfig(
        url=shared_broker_url,
        client_id=f"test-{run_id}",
        queue_dir=str(tmp_path / "queue"),
    )

    document = asyncio.run(_publish_response(config, f"dev-{run_id}"))

    assert document["command_id"] == 42
    assert document["device_id"] == f"dev-{run_id}"
    assert document["response"] == {"result": "ok"}
    assert document["v"] == 1


def test_publisher_rejects_non_mqtt_url(tmp_path: Path) -> None:
    config = BusConfig(url="tcp://127.0.0.1:1883", queue_dir=str(tmp_path))

    with pytest.raises(ValueError, match="expected mqtt://host:port"):
        BusPublisher(config)


async def _publish_records(
    config: BusConfig, fixes: list[Fix], events: list[DeviceEvent]
) -> list[aiomqtt.Message]:
    device_id = fixes[0].device_id
    async with aiomqtt.Client("127.0.0.1", 1883) as subscriber:
        await subscriber.subscribe(position_topic(device_id, config.partitions), qos=1)
        await subscriber.subscribe(event_topic(device_id, config.partitions), qos=1)
        publisher = BusPublisher(config)
        await publisher.start()
        received: list[aiomqtt.Message] = []
        try:
            publisher.publish_records(fixes, events)
            messages = aiter(subscriber.messages)
            for _ in range(len(fixes) + len(events)):
                received.append(await asyncio.wait_for(anext(messages), 15))
        finally:
            await publisher.close()
    return received


def test_publisher_sends_fixes_and_events(
    tmp_path: Path, shared_broker_url: str, run_id: str
) -> None:
    config = BusConfig(
        url=shared_broker_url,
        client_id=f"test-{run_id}",
        queue_dir=str(tmp_path / "queue"),
    )
    device_id = f"dev-{run_id}"
    start = datetime(2026, 1, 31, 8, 0, tzinfo=UTC)
    fixes = [
        Fix(device_id, start + timedelta(seconds=s), 41.15, -8.61) for s in range(3)
    ]
    events = [
        DeviceEvent(device_id, start, "login", {"protocol": "gt06"}),
        DeviceEvent(device_id, start, "alarm:power_cut", {"alarm": "power_cut"}),
    ]

    received = asyncio.run(_publish_records(config, fixes, events))

    positions = [m for m in received if "/positions/" in m.topic.value]
    alarms = [m for m in received if "/events/" in m.topic.value]
    assert [decode_fix(m.payload) for m in positions] == fixes  # type: ignore[arg-type]
    assert [decode_event(m.payload) for m in alarms] == events  # type: ignore[arg-type]
    assert {m.qos for m in received} == {1}
