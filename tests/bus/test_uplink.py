"""MQTT trackers: JSON positions stored, commands sent and answered.

Runs against the shared Mosquitto on 127.0.0.1:1883.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from postloan.bus.schema import downlink_topic, uplink_topic
from postloan.bus.uplink import MqttDevices, parse_positions
from postloan.config import BusConfig, Config, GatewayConfig
from postloan.gateway import Gateway
from postloan.store import Store, open_store
from postloan.validation import DEVICE_ID_PATTERN

START = datetime(2026, 1, 31, 8, 0, tzinfo=UTC)


def _position(seconds: int) -> dict[str, object]:
    return {
        "time": (START + timedelta(seconds=seconds)).isoformat(),
        "lon": -8.61 + seconds * 1e-4,
        "lat": 41.15,
        "speed_kmh": 30.0,
    }


def test_parse_positions_takes_device_from_topic() -> None:
    positions = parse_positions("dev1", json.dumps([_position(0), _position(5)]))

    fixes = positions.fixes
    assert [fix.device_id for fix in fixes] == ["dev1", "dev1"]
    assert fixes[1].time == START + timedelta(seconds=5)
    assert positions.rejected == []


def test_parse_positions_rejects_other_device() -> None:
    position = {**_position(0), "device_id": "dev2"}

    positions = parse_positions("dev1", json.dumps(position))

    assert positions.fixes == []
    assert positions.rejected[0].field == "device_id"
    assert positions.rejected[0].value == "dev2"


BAD_VALUES = [
    ("lon", -800, "longitude"),
    ("lon", 180.5, "longitude"),
    ("lat", -91, "latitude"),
    ("speed_kmh", -50, "speed_kmh"),
    ("speed_kmh", 1e308, "speed_kmh"),
    ("speed_kmh", float("nan"), "speed_kmh"),
    ("course", 400, "course"),
]


@pytest.mark.parametrize(("key", "value", "field"), BAD_VALUES)
def test_parse_positions_rejects_out_of_range(
    key: str, value: float, field: str
) -> None:
    bad = {**_position(10), key: value}
    payload = json.dumps([_position(0), bad, _position(20)])

    positions = parse_positions("dev1", payload)

    assert [fix.time for fix in positions.fixes] == [
        START,
        START + timedelta(seconds=20),
    ]
    assert len(positions.rejected) == 1
    assert positions.rejected[0].index == 1
    assert positions.rejected[0].field == field
    assert positions.rejected[0].reason == f"invalid_{field}"


@pytest.mark.parametrize("device_id", ["", "x" * 300, "a b", ".hidden", "a/b"])
def test_parse_positions_rejects_topic_device_id(device_id: str) -> None:
    positions = parse_positions(device_id, json.dumps(_position(0)))

    assert positions.fixes == []
    assert positions.rejected[0].field == "device_id"
    assert positions.rejected[0].value == device_id


def test_parse_positions_rejects_non_json() -> None:
    positions = parse_positions("dev1", b"not json")

    assert positions.fixes == []
    assert positions.rejected[0].field == "payload"


def test_parse_positions_rejects_future_fix() -> None:
    payload = json.dumps([_position(0), _position(3600)])

    positions = parse_positions("dev1", payload, latest=START + timedelta(minutes=1))

    assert [fix.time for fix in positions.fixes] == [START]
    assert positions.rejected[0].field == "time"


def test_validation_device_pattern_matches_api() -> None:
    from postloan.api.context import ID_PATTERN

    assert DEVICE_ID_PATTERN == ID_PATTERN


async def _until(check: object, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _device_session(config: Config, store: Store, device_id: str) -> str:
    stop = asyncio.Event()
    async with Gateway(config, store) as gateway:
        devices = MqttDevices(config, store, gateway.writer.submit, poll_interval=0.1)
        served = asyncio.create_task(devices.run(stop))
        try:
            async with aiomqtt.Client("127.0.0.1", 1883) as tracker:
                await tracker.subscribe(downlink_topic(device_id), qos=1)
                await asyncio.sleep(0.5)
                batch = [_position(0), _position(10)]
                await tracker.publish(uplink_topic(device_id), json.dumps(batch), qos=1)
                await tracker.publish(
                    uplink_topic(device_id), json.dumps(_position(20)), qos=1
                )
                await _until(lambda: store.count_fixes(device_id) == 3)
                command_id = store.add_command(
                    device_id, "mqtt", "reboot", {}, created_at=datetime.now(UTC)
                )
                message = await asyncio.wait_for(anext(aiter(tracker.messages)), 15)
                command = json.loads(message.payload)  # type: ignore[arg-type]
                assert command["command_id"] == command_id
                answer = {"command_id": command_id, "result": "ok"}
                await tracker.publish(
                    uplink_topic(device_id) + "/response", json.dumps(answer), qos=1
                )
                await _until(lambda: store.commands(device_id)[0].status == "answered")
        finally:
            stop.set()
            await asyncio.wait_for(served, 10)
    return store.commands(device_id)[0].kind


def test_mqtt_tracker_positions_and_command(
    tmp_path: Path, shared_broker_url: str, run_id: str
) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=-1, jt808_port=-1, nmea_port=-1
        ),
        bus=BusConfig(url=shared_broker_url, client_id=f"test-{run_id}"),
    )
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    device_id = f"mqtt-{run_id}"

    kind = asyncio.run(_device_session(config, store, device_id))

    track = store.track(device_id)
    assert [fix.time for fix in track] == [
        START + timedelta(seconds=s) for s in (0, 10, 20)
    ]
    assert kind == "reboot"
    response = store.commands(device_id)[0].response
    assert response is not None
    assert response["result"] == "ok"


async def _unanswered_command(config: Config, store: Store, device_id: str) -> int:
    stop = asyncio.Event()
    async with Gateway(config, store) as gateway:
        devices = MqttDevices(config, store, gateway.writer.submit, poll_interval=0.1)
        served = asyncio.create_task(devices.run(stop))
        try:
            async with aiomqtt.Client("127.0.0.1", 1883) as tracker:
                await tracker.subscribe(downlink_topic(device_id), qos=1)
                await asyncio.sleep(0.5)
                command_id = store.add_command(
                    device_id, "mqtt", "fuel_cut", {}, created_at=datetime.now(UTC)
                )
                message = await asyncio.wait_for(anext(aiter(tracker.messages)), 15)
                command = json.loads(message.payload)  # type: ignore[arg-type]
                assert command["command_id"] == command_id
                await _until(lambda: store.commands(device_id)[0].status == "timeout")
                # A response after the timeout is still recorded.
                answer = {"command_id": command_id, "result": "late"}
                await tracker.publish(
                    uplink_topic(device_id) + "/response", json.dumps(answer), qos=1
                )
                await _until(lambda: store.commands(device_id)[0].status == "answered")
                # A response to no known command is rejected, and the link goes on.
                unknown = {"command_id": command_id + 1000, "result": "ok"}
                await tracker.publish(
                    uplink_topic(device_id) + "/response", json.dumps(unknown), qos=1
                )
                await _until(lambda: devices.rejected == 1)
                await tracker.publish(
                    uplink_topic(device_id), json.dumps(_position(30)), qos=1
                )
                await _until(lambda: store.count_fixes(device_id) == 1)
        finally:
            stop.set()
            await asyncio.wait_for(served, 10)
    assert served.exception() is None
    return devices.commands_timed_out


def test_mqtt_command_times_out(
    tmp_path: Path, shared_broker_url: str, run_id: str
) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1",
            gt06_port=-1,
            jt808_port=-1,
            nmea_port=-1,
            command_timeout_s=1.0,
        ),
        bus=BusConfig(url=shared_broker_url, client_id=f"test-{run_id}"),
    )
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    device_id = f"mqtt-{run_id}"

    timed_out = asyncio.run(_unanswered_command(config, store, device_id))

    assert timed_out == 1
    command = store.commands(device_id)[0]
    assert command.status == "answered"
    assert command.response is not None
    assert command.response["result"] == "late"
    assert command.sent_at is not None
    assert command.updated_at - command.sent_at >= timedelta(seconds=1)


async def _invalid_uplink(
    config: Config, store: Store, device_id: str
) -> tuple[MqttDevices, Gateway]:
    stop = asyncio.Event()
    async with Gateway(config, store) as gateway:
        devices = MqttDevices(
            config,
            store,
            gateway.writer.submit,
            poll_interval=0.1,
            dropped=gateway.stats.dropped,
        )
        served = asyncio.create_task(devices.run(stop))
        try:
            async with aiomqtt.Client("127.0.0.1", 1883) as tracker:
                await asyncio.sleep(0.5)
                bad = {**_position(10), "lon": -800}
                batch = json.dumps([_position(0), bad, _position(20)])
                await tracker.publish(uplink_topic(device_id), batch, qos=1)
                for topic_id in ("", "x" * 300, f"{device_id} b"):
                    await tracker.publish(
                        uplink_topic(topic_id), json.dumps(_position(0)), qos=1
                    )
                await tracker.publish(
                    uplink_topic(device_id), json.dumps(_position(30)), qos=1
                )
                await _until(lambda: store.count_fixes(device_id) == 3)
                await _until(lambda: devices.rejected == 4)
        finally:
            stop.set()
            await asyncio.wait_for(served, 10)
    assert served.exception() is None
    return devices, gateway


def test_mqtt_invalid_positions_rejected(
    tmp_path: Path,
    shared_broker_url: str,
    run_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=-1, jt808_port=-1, nmea_port=-1
        ),
        bus=BusConfig(url=shared_broker_url, client_id=f"test-{run_id}"),
    )
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    device_id = f"mqtt-{run_id}"

    with caplog.at_level("WARNING", logger="postloan.bus.uplink"):
        _, gateway = asyncio.run(_invalid_uplink(config, store, device_id))

    track = store.track(device_id)
    assert [fix.time for fix in track] == [
        START + timedelta(seconds=s) for s in (0, 20, 30)
    ]
    assert all(-180 <= fix.longitude <= 180 for fix in track)
    assert store.count_fixes() == 3
    assert gateway.stats.dropped[("mqtt", "invalid_longitude")] == 1
    assert gateway.stats.dropped[("mqtt", "invalid_device_id")] == 3
    messages = [record.getMessage() for record in caplog.records]
    longitude = [m for m in messages if "invalid longitude -800" in m]
    assert len(longitude) == 1
    assert uplink_topic(device_id) in longitude[0]
    assert any("invalid device_id ''" in m for m in messages)
