"""BusPublisher against the shared Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from postloan.bus import BusPublisher
from postloan.bus.schema import command_response_topic
from postloan.config import BusConfig


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
