"""Replay recorded trajectories through simulated GT06 or JT808 trackers over TCP.

Each simulated device behaves as a real tracker does towards the gateway:

1. It connects and logs in (GT06 0x01 and its ack; JT808 0x0100 register, the
   auth code from 0x8100, then 0x0102 and its 0x8001).
2. It sends each track point as a location packet when its time comes:
   ``speedup=1`` replays in real time, ``speedup=60`` one recorded minute per
   second, ``speedup=None`` as fast as the acknowledgement window allows.
3. It keeps at most `window` location packets unacknowledged. When the
   connection drops, or no ack comes within `ack_timeout`, it reconnects with
   capped, jittered back-off, logs in again and resends what was not
   acknowledged (GT06 0x22 with the re-upload flag, JT808 0x0704 blind-area
   batches).
4. It sends a heartbeat when it has sent nothing for `heartbeat_interval`
   seconds of recorded time, and responds to server commands as devices do.

`DeviceReport.acked_points` lists the points whose packets the server
acknowledged, so a test can compare them with what the store holds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from postloan.protocols.base import DecodeError, EncodeError
from postloan.simulators.devices import (
    CODECS,
    Ack,
    AckKey,
    Command,
    DeviceCodec,
    DeviceState,
    LoginRejected,
    device_id_for,
)
from postloan.simulators.trajectories import TrackPoint, Trajectory

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 50
_MAX_LOGGED_REJECTS = 5  # per device; the report lists up to MAX_REPORTED_ERRORS
_READ_SIZE = 65_536
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0


class ConnectionLost(ConnectionError):
    """The server closed the connection."""


_RETRYABLE = (OSError, TimeoutError, DecodeError)


@dataclass
class DeviceReport:
    """Counts of one simulated device's location records, acks and commands.

    `sent` counts location records sent, resends included. `acked_points` are
    the distinct points whose packets were acknowledged, in time order, and
    `acked` is their number.
    """

    device_id: str
    protocol: str
    vehicle_id: str
    sent: int = 0
    acked: int = 0
    acked_points: list[TrackPoint] = field(default_factory=list)
    commands_answered: int = 0
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    heartbeats: int = 0

    def add_error(self, text: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(text)


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """Server address, replay pace and retry limits of simulated devices, in seconds."""

    host: str
    port: int
    speedup: float | None = None
    ack_timeout: float = 10.0
    heartbeat_interval: float = 180.0
    window: int = 16
    max_reconnects: int = 5


class SimulatedDevice:
    """One tracker replaying one trajectory, across as many connections as it takes."""

    def __init__(
        self, codec: DeviceCodec, trajectory: Trajectory, settings: ReplaySettings
    ) -> None:
        self._codec = codec
        self._points = trajectory.points
        self._settings = settings
        self.report = DeviceReport(
            codec.device_id, codec.protocol, trajectory.vehicle_id
        )
        self._state = DeviceState()
        self._next = 0  # index of the first point never sent
        self._unacked: dict[AckKey, list[int]] = {}
        self._acked = [False] * len(self._points)
        self._waiters: dict[AckKey, asyncio.Future[Ack]] = {}
        self._progress = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._last_sent = 0.0
        self._start: float | None = None  # loop time at which point 0 was due
        self._random = random.Random(codec.device_id)
        self._rejected = 0  # server frames dropped, for rate-limited logging

    @property
    def name(self) -> str:
        return f"simulator[{self._codec.device_id}]"

    async def run(self) -> DeviceReport:
        """Replay every point; return the report, also after giving up."""
        attempt = 0
        while True:
            error = await self._try_session()
            if error is None:
                break
            self.report.add_error(f"{type(error).__name__}: {error}")
            if (
                isinstance(error, LoginRejected)
                or attempt >= self._settings.max_reconnects
            ):
                log.warning("%s gave up: %s", self.name, error)
                break
            attempt += 1
            self.report.reconnects += 1
            delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2**attempt)
            log.info("%s reconnects in %.2f s after: %s", self.name, delay, error)
            await asyncio.sleep(delay * self._random.uniform(0.5, 1.0))
        self.report.acked_points = [
            point
            for point, acked in zip(self._points, self._acked, strict=True)
            if acked
        ]
        self.report.acked = len(self.report.acked_points)
        return self.report

    async def _try_session(self) -> BaseException | None:
        """Run one connection; return the error that ended it, None when done."""
        try:
            await self._session()
        except Exception as exc:
            error = _first_error(exc)
            if isinstance(error, (*_RETRYABLE, LoginRejected)):
                return error
            raise
        return None

    async def _session(self) -> None:
        settings = self._settings
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings.host, settings.port), settings.ack_timeout
        )
        self._writer = writer
        log.debug("%s connected to %s:%d", self.name, settings.host, settings.port)
        try:
            async with asyncio.TaskGroup() as group:
                reading = group.create_task(
                    self._read(reader), name=f"{self.name}.reader"
                )
                await self._codec.login(self._request, self._state)
                await self._resend_unacked()
                await self._stream()
                await self._drain()
                reading.cancel()
        finally:
            self._writer = None
            for waiter in self._waiters.values():
                waiter.cancel()
            self._waiters.clear()
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()

    # --- sending -------------------------------------------------------------

    async def _send(self, frame: bytes) -> None:
        if self._writer is None:
            raise ConnectionLost("not connected")
        self._writer.write(frame)
        await self._writer.drain()
        self._last_sent = asyncio.get_running_loop().time()

    async def _request(self, frame: bytes, key: AckKey) -> Ack:
        waiter: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        await self._send(frame)
        try:
            return await asyncio.wait_for(waiter, self._settings.ack_timeout)
        except TimeoutError:
            raise TimeoutError(
                f"timed out waiting for the reply to 0x{key[0]:04x} serial {key[1]}"
            ) from None

    async def _resend_unacked(self) -> None:
        indexes = sorted(index for batch in self._unacked.values() for index in batch)
        self._unacked.clear()
        if not indexes:
            return
        points = [self._points[index] for index in indexes]
        start = 0
        for frame, key, count in self._codec.backlog(points, self._state):
            self._unacked[key] = indexes[start : start + count]
            start += count
            await self._send(frame)
            self.report.sent += count
        log.debug("%s resent %d unacknowledged points", self.name, len(indexes))

    async def _stream(self) -> None:
        while self._next < len(self._points):
            index = self._next
            await self._wait_until_due(index)
            await self._wait_for(lambda: len(self._unacked) < self._settings.window)
            point = self._points[index]
            self._next += 1
            try:
                frame, key = self._codec.location(point, self._state, resend=False)
            except EncodeError as exc:
                # A point the protocol cannot carry (a time before 2000 in
                # GT06 or JT808) is reported and skipped, as a device would.
                self.report.add_error(f"point {index} not sent: {exc}")
                continue
            self._unacked[key] = [index]
            self._state.position = point
            await self._send(frame)
            self.report.sent += 1

    async def _drain(self) -> None:
        await self._wait_for(lambda: not self._unacked)

    async def _wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition` holds; raise TimeoutError if no ack comes."""
        while not condition():
            self._progress.clear()
            try:
                await asyncio.wait_for(
                    self._progress.wait(), self._settings.ack_timeout
                )
            except TimeoutError:
                count = len(self._unacked)
                raise TimeoutError(f"no ack for {count} location packets") from None

    async def _wait_until_due(self, index: int) -> None:
        """Sleep until point `index` is due, sending heartbeats while idle."""
        speedup = self._settings.speedup
        if speedup is None:
            return
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        elapsed = (self._points[index].time - self._points[0].time).total_seconds()
        due = self._start + elapsed / speedup
        idle = self._settings.heartbeat_interval / speedup
        while (now := loop.time()) < due:
            heartbeat_at = self._last_sent + idle
            if heartbeat_at <= now:
                frame, _ = self._codec.heartbeat(self._state)
                await self._send(frame)
                self.report.heartbeats += 1
                continue
            await asyncio.sleep(min(due, heartbeat_at) - now)

    # --- receiving -----------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = self._codec.new_framer()
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise ConnectionLost("server closed the connection")
            for item in framer.feed(data):
                if isinstance(item, DecodeError):
                    self._reject(item)
                    continue
                try:
                    event = self._codec.parse(item)
                except DecodeError as exc:
                    self._reject(exc)
                    continue
                if isinstance(event, Ack):
                    self._on_ack(event)
                elif isinstance(event, Command):
                    self._on_command(event)

    def _reject(self, error: DecodeError) -> None:
        # A real tracker drops a server frame it cannot read and stays online.
        self._rejected += 1
        if self._rejected <= _MAX_LOGGED_REJECTS:
            log.warning("%s dropped a server frame: %s", self.name, error)
        self.report.add_error(f"server frame: {error}")

    def _on_ack(self, ack: Ack) -> None:
        waiter = self._waiters.pop(ack.key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(ack)
        indexes = self._unacked.pop(ack.key, None)
        if indexes is None:
            return
        if ack.result != 0:
            self.report.add_error(
                f"0x{ack.key[0]:04x} rejected with result {ack.result}"
            )
        else:
            for index in indexes:
                self._acked[index] = True
        self._progress.set()

    def _on_command(self, command: Command) -> None:
        try:
            response = self._codec.respond(command, self._state)
        except EncodeError as exc:
            self.report.add_error(f"command 0x{command.msg_id:04x}: {exc}")
            return
        if self._writer is not None:
            # No drain here: the sending task drains, and the response is small.
            self._writer.write(response)
            self.report.commands_answered += 1
            log.info("%s responded to command 0x%04x", self.name, command.msg_id)


def _first_error(exc: BaseException) -> BaseException:
    """Return the first exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def replay(
    trajectories: Sequence[Trajectory],
    *,
    protocol: str,
    host: str,
    port: int,
    speedup: float | None = None,
    concurrency: int = 1000,
    ack_timeout: float = 10.0,
    device_index_start: int = 0,
    heartbeat_interval: float = 180.0,
    window: int = 16,
    max_reconnects: int = 5,
) -> list[DeviceReport]:
    """Replay each trajectory through one simulated device; return their reports.

    Device i gets `device_id_for(protocol, vehicle_id, device_index_start + i)`.
    At most `concurrency` devices are connected at a time. `heartbeat_interval`
    is in recorded seconds, so it shrinks with `speedup`. Reports come back in
    the order of `trajectories`.
    """
    if protocol not in CODECS:
        raise ValueError(
            f"unknown protocol {protocol!r}; expected one of {sorted(CODECS)}"
        )
    if speedup is not None and speedup <= 0:
        raise ValueError(f"speedup must be positive or None, got {speedup}")
    if concurrency < 1 or window < 1:
        raise ValueError("concurrency and window must be at least 1")
    settings = ReplaySettings(
        host, port, speedup, ack_timeout, heartbeat_interval, window, max_reconnects
    )
    devices = [
        SimulatedDevice(
            CODECS[protocol](
                device_id_for(protocol, trajectory.vehicle_id, device_index_start + i)
            ),
            trajectory,
            settings,
        )
        for i, trajectory in enumerate(trajectories)
    ]
    gate = asyncio.Semaphore(concurrency)

    async def run(device: SimulatedDevice) -> DeviceReport:
        async with gate:
            return await device.run()

    log.info("replaying %d %s devices to %s:%d", len(devices), protocol, host, port)
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(run(device), name=f"{device.name}.device")
            for device in devices
        ]
    reports = [task.result() for task in tasks]
    log.info(
        "replay done: %d devices, %d points sent, %d acknowledged",
        len(reports),
        sum(report.sent for report in reports),
        sum(report.acked for report in reports),
    )
    return reports
