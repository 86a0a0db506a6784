"""Replay tests against tiny asyncio servers that acknowledge as each protocol requires.

The servers listen on 127.0.0.1 only, decode with the real protocol modules and
reply with their `reply`/`ack` helpers. A script can withhold acks, drop the
first connection or send commands, so the tests see which fixes the simulated
devices got acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from postloan.protocols import gt06, jt808
from postloan.protocols.base import DecodeError, Message
from postloan.simulators.replay import DeviceReport, replay
from postloan.simulators.trajectories import (
    DATA_DIR,
    TrackPoint,
    Trajectory,
    read_barefoot_json,
    read_nmea_log,
)

START = datetime(2024, 3, 1, 8, 0, 0, tzinfo=UTC)
RESPONSE_TYPES = frozenset(
    {
        "command_response",
        "general_response",
        "position_response",
        "vehicle_control_response",
    }
)
T = TypeVar("T")
NMEA_LOG = DATA_DIR.parent / "nmea" / "gp-320fw-2019-04-07-coldboot.log"


def straight_track(
    count: int, step_s: int = 15, vehicle_id: str = "car-1"
) -> Trajectory:
    points = [
        TrackPoint(
            time=START + timedelta(seconds=i * step_s),
            latitude=41.15 + i * 0.0005,
            longitude=-8.61,
        )
        for i in range(count)
    ]
    return Trajectory.from_points(vehicle_id, "test", points)


@dataclass
class Script:
    """What the server does beyond plain acking."""

    # In the first connection: ack this many locations, read `withhold` more
    # without acking, then close the connection.
    ack_then_drop: tuple[int, int] | None = None
    ack_locations: bool = True
    # Commands sent once, after the first location arrives. That location is
    # acked only when every command has its response.
    commands: list[Callable[[str, int], bytes]] = field(default_factory=list)


@dataclass
class Received:
    locations: list[tuple[int, Message]] = field(default_factory=list)
    responses: list[Message] = field(default_factory=list)
    heartbeats: int = 0
    logins: int = 0
    connections: int = 0


class AckingServer:
    """One protocol's server side, recording what devices sent."""

    port = 0
    _device_id: str | None = None

    def __init__(self, protocol: str, script: Script) -> None:
        self.protocol = protocol
        self.script = script
        self.received = Received()
        self._platform_serial = 0
        self._commands_sent = False
        self._held: list[bytes] = []

    def _framer(self) -> gt06.Framer | jt808.Framer:
        return gt06.Framer() if self.protocol == "gt06" else jt808.Framer()

    def _decode(self, frame: bytes) -> Message:
        return gt06.decode(frame) if self.protocol == "gt06" else jt808.decode(frame)

    def _reply(self, message: Message) -> bytes | None:
        if self.protocol == "gt06":
            answer = gt06.reply(message, now=datetime.now(UTC))
            if answer is None and message.locations and message.serial is not None:
                answer = gt06.ack(message.msg_id, message.serial)
            return answer
        self._platform_serial += 1
        return jt808.reply(
            message, platform_serial=self._platform_serial, auth_code="sim-code"
        )

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = self.received.connections
        self.received.connections += 1
        framer = self._framer()
        count = 0
        try:
            while data := await reader.read(4096):
                for frame in framer.feed(data):
                    assert not isinstance(frame, DecodeError), frame
                    message = self._decode(frame)
                    if self._on_message(message, connection, count, writer):
                        count += 1
                    if self._dropping(connection, count):
                        return
        finally:
            writer.close()

    def _dropping(self, connection: int, count: int) -> bool:
        plan = self.script.ack_then_drop
        return plan is not None and connection == 0 and count >= sum(plan)

    def _on_message(
        self,
        message: Message,
        connection: int,
        count: int,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Handle one message; return True for a location report."""
        if message.type in RESPONSE_TYPES:
            self._record_response(message, writer)
            return False
        self.received.logins += message.type in ("login", "auth")
        self.received.heartbeats += message.type == "heartbeat"
        if message.type in ("login", "auth"):
            self._device_id = message.device_id
        is_location = bool(message.locations)
        if is_location:
            self.received.locations.append((connection, message))
        reply = self._reply(message)

        if reply is None or (is_location and not self._acking(connection, count)):
            return is_location
        if is_location and self.script.commands and not self._commands_sent:
            self._send_commands(reply, writer)
            return True
        writer.write(reply)
        return is_location

    def _send_commands(self, held_reply: bytes, writer: asyncio.StreamWriter) -> None:
        """Send the scripted commands; keep the location ack until they are done."""
        self._commands_sent = True
        self._held.append(held_reply)
        for build in self.script.commands:
            writer.write(build(self._device_id or "", 901))

    def _record_response(self, message: Message, writer: asyncio.StreamWriter) -> None:
        self.received.responses.append(message)
        if len(self.received.responses) == len(self.script.commands):
            for held in self._held:
                writer.write(held)

    def _acking(self, connection: int, count: int) -> bool:
        plan = self.script.ack_then_drop
        if plan is not None and connection == 0:
            return count < plan[0]
        return self.script.ack_locations


@asynccontextmanager
async def serving(
    protocol: str, script: Script | None = None
) -> AsyncIterator[AckingServer]:
    server = AckingServer(protocol, script or Script())
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 30))


# --- plain replay -----------------------------------------------------------


@pytest.mark.parametrize("protocol", ["gt06", "jt808"])
def test_replay_all_points_acked(protocol: str) -> None:
    trajectory = straight_track(20)

    async def scenario() -> tuple[list[DeviceReport], AckingServer]:
        async with serving(protocol) as server:
            reports = await replay(
                [trajectory], protocol=protocol, host="127.0.0.1", port=server.port
            )
            return reports, server

    reports, server = run(scenario())

    report = reports[0]
    assert report.sent == 20
    assert report.acked == 20
    assert report.acked_points == list(trajectory.points)
    assert report.errors == []
    assert report.vehicle_id == "car-1"
    assert server.received.logins == 1
    times = [message.locations[0].time for _, message in server.received.locations]
    assert times == [point.time for point in trajectory.points]


def test_replay_munich_positions_at_gt06_resolution() -> None:
    trajectory = read_barefoot_json(DATA_DIR / "barefoot_munich" / "x0001-015.json")

    async def scenario() -> AckingServer:
        async with serving("gt06") as server:
            await replay(
                [trajectory], protocol="gt06", host="127.0.0.1", port=server.port
            )
            return server

    server = run(scenario())

    decoded = [message.locations[0] for _, message in server.received.locations]
    assert len(decoded) == 80
    for point, location in zip(trajectory.points, decoded, strict=True):
        assert location.time == point.time
        assert abs(location.latitude - point.latitude) <= 0.5 / 1_800_000
        assert abs(location.longitude - point.longitude) <= 0.5 / 1_800_000
        assert location.speed_kmh == round(point.speed_kmh or 0)


def test_replay_jt808_positions_at_micro_degree() -> None:
    trajectory = read_barefoot_json(DATA_DIR / "barefoot_munich" / "x0001-015.json")

    async def scenario() -> AckingServer:
        async with serving("jt808") as server:
            await replay(
                [trajectory], protocol="jt808", host="127.0.0.1", port=server.port
            )
            return server

    server = run(scenario())

    decoded = [message.locations[0] for _, message in server.received.locations]
    for point, location in zip(trajectory.points, decoded, strict=True):
        assert location.time == point.time
        assert abs(location.latitude - point.latitude) <= 0.5e-6
        assert abs(location.longitude - point.longitude) <= 0.5e-6


def test_replay_many_devices_distinct_ids() -> None:
    trajectories = [straight_track(3, vehicle_id=f"car-{i}") for i in range(30)]

    async def scenario() -> list[DeviceReport]:
        async with serving("jt808") as server:
            return await replay(
                trajectories,
                protocol="jt808",
                host="127.0.0.1",
                port=server.port,
                concurrency=8,
                device_index_start=100,
            )

    reports = run(scenario())

    assert len({report.device_id for report in reports}) == 30
    assert sum(report.acked for report in reports) == 90
    assert [report.vehicle_id for report in reports] == [f"car-{i}" for i in range(30)]


# --- reconnect and resend ---------------------------------------------------


def test_replay_gt06_reconnect_resends_unacked() -> None:
    trajectory = straight_track(12)
    script = Script(ack_then_drop=(5, 3))

    async def scenario() -> tuple[list[DeviceReport], AckingServer]:
        async with serving("gt06", script) as server:
            reports = await replay(
                [trajectory],
                protocol="gt06",
                host="127.0.0.1",
                port=server.port,
                window=3,
            )
            return reports, server

    reports, server = run(scenario())

    report = reports[0]
    assert report.reconnects == 1
    assert report.acked_points == list(trajectory.points)
    assert report.sent == 12 + 3
    assert server.received.connections == 2
    assert server.received.logins == 2
    resent = [
        message.locations[0].time
        for connection, message in server.received.locations
        if connection == 1 and message.attributes.get("reupload")
    ]
    assert resent == [point.time for point in trajectory.points[5:8]]


def test_replay_jt808_reconnect_resends_backfill_batch() -> None:
    trajectory = straight_track(12)
    script = Script(ack_then_drop=(5, 3))

    async def scenario() -> tuple[list[DeviceReport], AckingServer]:
        async with serving("jt808", script) as server:
            reports = await replay(
                [trajectory],
                protocol="jt808",
                host="127.0.0.1",
                port=server.port,
                window=3,
            )
            return reports, server

    reports, server = run(scenario())

    report = reports[0]
    assert report.reconnects == 1
    assert report.acked == 12
    batches = [
        message
        for connection, message in server.received.locations
        if connection == 1 and message.type == "batch_location"
    ]
    assert len(batches) == 1
    assert batches[0].attributes["backfill"] is True
    assert [loc.time for loc in batches[0].locations] == [
        point.time for point in trajectory.points[5:8]
    ]
    assert server.received.logins == 2


def test_replay_gives_up_without_acks() -> None:
    trajectory = straight_track(4)
    script = Script(ack_locations=False)

    async def scenario() -> list[DeviceReport]:
        async with serving("gt06", script) as server:
            return await replay(
                [trajectory],
                protocol="gt06",
                host="127.0.0.1",
                port=server.port,
                ack_timeout=0.2,
                max_reconnects=1,
            )

    started = time.monotonic()
    reports = run(scenario())
    elapsed = time.monotonic() - started

    report = reports[0]
    assert report.acked == 0
    assert report.reconnects == 1
    assert len(report.errors) == 2
    assert "no ack" in report.errors[0]
    assert elapsed < 5


def test_replay_connection_refused_is_reported() -> None:
    async def scenario() -> list[DeviceReport]:
        listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        await listener.wait_closed()
        return await replay(
            [straight_track(2)],
            protocol="gt06",
            host="127.0.0.1",
            port=port,
            max_reconnects=2,
        )

    reports = run(scenario())

    assert reports[0].acked == 0
    assert reports[0].reconnects == 2
    assert all("ConnectionRefusedError" in error for error in reports[0].errors)


# --- pacing and heartbeats --------------------------------------------------


def test_replay_speedup_paces_points() -> None:
    trajectory = straight_track(3, step_s=15)

    async def scenario() -> list[DeviceReport]:
        async with serving("gt06") as server:
            return await replay(
                [trajectory],
                protocol="gt06",
                host="127.0.0.1",
                port=server.port,
                speedup=60,
            )

    started = time.monotonic()
    reports = run(scenario())
    elapsed = time.monotonic() - started

    assert reports[0].acked == 3
    assert 0.45 <= elapsed < 3.0


@pytest.mark.parametrize("protocol", ["gt06", "jt808"])
def test_replay_heartbeats_while_idle(protocol: str) -> None:
    trajectory = straight_track(2, step_s=600)

    async def scenario() -> tuple[list[DeviceReport], AckingServer]:
        async with serving(protocol) as server:
            reports = await replay(
                [trajectory],
                protocol=protocol,
                host="127.0.0.1",
                port=server.port,
                speedup=600,
                heartbeat_interval=180,
            )
            return reports, server

    reports, server = run(scenario())

    assert reports[0].heartbeats >= 2
    assert server.received.heartbeats == reports[0].heartbeats
    assert reports[0].acked == 2


# --- commands ---------------------------------------------------------------


def test_replay_gt06_command_round_trip() -> None:
    def relay(text: str) -> Callable[[str, int], bytes]:
        return lambda _, serial: gt06.encode_command(
            text, server_flag=0x00C0FFEE + serial, serial=serial
        )

    script = Script(commands=[relay("Relay,1#"), relay("Relay,0#"), relay("WHERE#")])

    async def scenario() -> tuple[list[DeviceReport], AckingServer]:
        async with serving("gt06", script) as server:
            reports = await replay(
                [straight_track(5)], protocol="gt06", host="127.0.0.1", port=server.port
            )
            return reports, server

    reports, server = run(scenario())

    responses = server.received.responses
    assert [response.msg_id for response in responses] == [0x21, 0x21, 0x21]
    assert [response.attributes["text"] for response in responses] == [
        "Cut off the fuel supply: Success!",
        "Restore fuel supply: Success!",
        "WHERE#",
    ]
    assert [response.attributes["server_flag"] for response in responses] == [
        0x00C0FFEE + 901
    ] * 3
    assert reports[0].commands_answered == 3
    assert reports[0].acked == 5


def test_replay_jt808_command_round_trip() -> None:
    script = Script(
        commands=[
            lambda phone, serial: jt808.encode_vehicle_control(phone, serial, cut=True),
            lambda phone, serial: jt808.encode_position_query(phone, serial + 1),
            lambda phone, serial: jt808.encode_terminal_control(phone, serial + 2, 4),
        ]
    )
    trajectory = straight_track(5)

    async def scenario() -> tuple[list[DeviceReport], AckingServer]:
        async with serving("jt808", script) as server:
            reports = await replay(
                [trajectory],
                protocol="jt808",
                host="127.0.0.1",
                port=server.port,
                window=1,
            )
            return reports, server

    reports, server = run(scenario())

    cut, position, control = server.received.responses
    assert cut.msg_id == 0x0500
    assert cut.attributes["answered_serial"] == 901
    assert cut.attributes["oil_cut"] is True
    assert cut.attributes["circuit_cut"] is True
    assert cut.locations[0].time == trajectory.points[0].time
    assert position.msg_id == 0x0201
    assert position.attributes["answered_serial"] == 902
    assert control.msg_id == 0x0001
    assert control.attributes["answered_id"] == "0x8105"
    assert control.attributes["result"] == 0
    assert reports[0].commands_answered == 3
    later = [message for _, message in server.received.locations[1:]]
    assert all(message.attributes["oil_cut"] for message in later)


@pytest.mark.parametrize("protocol", ["gt06", "jt808"])
def test_replay_skips_point_protocol_cannot_carry(protocol: str) -> None:
    # The cold-boot log's GPS-week-rollover fixes are dated 1999, before the
    # 2000-based years of GT06 and JT808 time fields.
    trajectory = read_nmea_log(NMEA_LOG)

    async def scenario() -> list[DeviceReport]:
        async with serving(protocol) as server:
            return await replay(
                [trajectory], protocol=protocol, host="127.0.0.1", port=server.port
            )

    report = run(scenario())[0]

    assert len(trajectory.points) == 12
    assert report.sent == 6
    assert report.acked == 6
    assert len(report.errors) == 6
    assert all("not sent" in error for error in report.errors)
