"""Downlink commands through the gateway to simulated devices and back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from postloan.config import Config, GatewayConfig
from postloan.gateway import Gateway
from postloan.simulators import replay
from postloan.simulators.devices import device_id_for
from postloan.simulators.trajectories import TrackPoint, Trajectory
from postloan.store import Store


def _parked_car(vehicle_id: str, seconds: int) -> Trajectory:
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    points = tuple(
        TrackPoint(
            time=start + timedelta(seconds=i),
            latitude=41.1579 + i * 1e-5,
            longitude=-8.6291,
            speed_kmh=0.0,
        )
        for i in range(seconds)
    )
    return Trajectory(vehicle_id=vehicle_id, source="test", points=points)


async def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def _send_command(
    store: Store, protocol: str, kind: str, timeout_s: float = 60.0
) -> tuple[str, int]:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1",
            gt06_port=0,
            jt808_port=0,
            nmea_port=-1,
            command_timeout_s=timeout_s,
        )
    )
    vehicle = f"command-{protocol}"
    device_id = device_id_for(protocol, vehicle, 0)
    async with Gateway(config, store, command_poll_interval=0.1) as gateway:
        device = asyncio.create_task(
            replay(
                [_parked_car(vehicle, 40)],
                protocol=protocol,
                host="127.0.0.1",
                port=gateway.ports[protocol],
                speedup=10.0,
            )
        )
        await _wait_for(lambda: gateway.connected_devices().get(protocol))

        command_id = await gateway.queue_command(device_id, protocol, kind, {})
        outcomes = ("answered", "timeout", "failed")
        await _wait_for(lambda: sum(gateway.stats.commands[k] for k in outcomes))
        await asyncio.sleep(0.2)
        device.cancel()
        await asyncio.gather(device, return_exceptions=True)
    return device_id, command_id


@pytest.mark.parametrize("protocol", ["gt06", "jt808"])
def test_fuel_cut_is_sent_answered_and_stored(store: Store, protocol: str) -> None:
    device_id, command_id = asyncio.run(_send_command(store, protocol, "fuel_cut"))

    [record] = store.commands(device_id)

    assert record.command_id == command_id
    assert record.status == "answered"
    assert record.response is not None
    if protocol == "gt06":
        assert record.response["text"] == "Cut off the fuel supply: Success!"
    else:
        assert record.response["oil_cut"] is True


def test_command_for_unknown_kind_is_marked_failed(store: Store) -> None:
    device_id, _ = asyncio.run(_send_command(store, "jt808", "no_such_command", 5))

    [record] = store.commands(device_id)

    assert record.status == "failed"
    assert record.response is not None
    assert "no_such_command" in record.response["error"]


GT06_LOGIN = bytes.fromhex("78780d010358735070530281007718630d0a")


def test_unanswered_command_times_out(store: Store) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1",
            gt06_port=0,
            jt808_port=-1,
            nmea_port=-1,
            command_timeout_s=0.3,
        )
    )

    async def main() -> bytes:
        async with Gateway(config, store, command_poll_interval=0.05) as gateway:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", gateway.ports["gt06"]
            )
            writer.write(GT06_LOGIN)
            await asyncio.wait_for(reader.readexactly(10), timeout=5)
            await gateway.queue_command("358735070530281", "gt06", "fuel_cut", {})
            frame = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5)
            await _wait_for(lambda: gateway.stats.commands["timeout"])
            writer.close()
            return frame

    frame = asyncio.run(main())

    [record] = store.commands("358735070530281")
    assert frame[3] == 0x80
    assert b"Relay,1#" in frame
    assert record.status == "timeout"


def test_queued_command_expires_when_device_stays_offline(store: Store) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=0, jt808_port=-1, nmea_port=-1
        )
    )
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()

    async def main() -> None:
        async with Gateway(config, store, command_poll_interval=0.05) as gateway:
            await gateway.queue_command(
                "358735070530281", "gt06", "fuel_cut", {"expires_at": past}
            )
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", gateway.ports["gt06"]
            )
            writer.write(GT06_LOGIN)
            await asyncio.wait_for(reader.readexactly(10), timeout=5)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(100), timeout=0.5)
            writer.close()

    asyncio.run(main())

    [record] = store.commands("358735070530281")
    assert record.status == "failed"
    assert record.response is not None
    assert "expired" in record.response["error"]


def test_command_is_sent_after_the_login_ack(store: Store) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=0, jt808_port=-1, nmea_port=-1
        )
    )

    async def main() -> bytes:
        async with Gateway(config, store, command_poll_interval=30) as gateway:
            await gateway.queue_command("358735070530281", "gt06", "fuel_cut", {})
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", gateway.ports["gt06"]
            )
            writer.write(GT06_LOGIN)
            first = await asyncio.wait_for(reader.readexactly(10), timeout=5)
            command = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=5)
            writer.close()
            return first + command

    data = asyncio.run(main())

    assert data[:10] == bytes.fromhex("787805010077cf6d0d0a")
    assert data[13] == 0x80
