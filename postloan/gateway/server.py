"""The gateway: TCP listeners per protocol, the store writer, fences and commands."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from postloan.commands import command_expired
from postloan.config import Config
from postloan.gateway.handlers import (
    Gt06Handler,
    Handler,
    Jt808Handler,
    NmeaHandler,
    Outcome,
)
from postloan.gateway.session import DeviceSession
from postloan.gateway.writer import BatchWriter, WriterStats
from postloan.model import DeviceEvent, Fix
from postloan.outage import OutageLog
from postloan.protocols.base import DecodeError, Message
from postloan.store import Store
from postloan.store.spool import RecordBatch
from postloan.times import format_time

log = logging.getLogger(__name__)

FenceHook = Callable[[Fix], Sequence[Any]]
RecordsHook = Callable[[Sequence[Fix], Sequence[DeviceEvent]], None]


@dataclass(slots=True)
class GatewayStats:
    connections: Counter[str] = field(default_factory=Counter)
    frames: Counter[tuple[str, str]] = field(default_factory=Counter)
    decode_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    fence_events: int = 0
    commands: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _PendingCommand:
    command_id: int
    deadline: float


class Gateway:
    """Serve trackers until closed. Use as ``async with Gateway(...) as gateway``."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        fence_check: FenceHook | None = None,
        command_poll_interval: float = 1.0,
    ) -> None:
        self.config = config
        self.store = store
        self.writer = BatchWriter.from_config(
            store, config.store, on_stored=self._batch_stored
        )
        self.stats = GatewayStats()
        # Called with `WriterStats` after each batch that stored fixes; metrics
        # use it for the store latency histogram.
        self.batch_observers: list[Callable[[WriterStats], None]] = []
        # Called with the fixes and device events of each batch once the store
        # contains them, without the records it rejected as invalid. The bus
        # publisher and the bus roles of this process are such observers.
        self.record_observers: list[RecordsHook] = []
        # Called with (device id, command id, response) for each command response.
        self.answer_observers: list[Callable[[str, int, dict[str, Any]], None]] = []
        self.ports: dict[str, int] = {}
        self._fence_check = fence_check
        self._servers: list[asyncio.Server] = []
        self._sessions: set[DeviceSession] = set()
        self._by_device: dict[tuple[str, str], DeviceSession] = {}
        self._pending: dict[tuple[str, str, int], _PendingCommand] = {}
        self._connection_ids = itertools.count(1)
        self._command_poll_interval = command_poll_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._command_lock = asyncio.Lock()
        # Store writes that failed while the database was unreachable (device
        # logins, command responses and timeouts), retried in order by the
        # command poll. A later write with the same key replaces an earlier one.
        self._deferred: dict[Hashable, Callable[[], object]] = {}
        self._deferred_written = 0

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        gateway = self.config.gateway
        self.writer.start()
        listeners: list[tuple[str, int]] = [
            ("gt06", gateway.gt06_port),
            ("jt808", gateway.jt808_port),
            ("nmea", gateway.nmea_port),
        ]
        for protocol, port in listeners:
            if port < 0:
                continue
            server = await loop.create_server(
                lambda p=protocol: self._new_session(p),  # type: ignore[misc]
                host=gateway.host,
                port=port,
                reuse_address=True,
                backlog=4096,
            )
            self._servers.append(server)
            self.ports[protocol] = server.sockets[0].getsockname()[1]
            log.info(
                "listening for %s on %s:%d",
                protocol,
                gateway.host,
                self.ports[protocol],
            )
        self._tasks.append(
            asyncio.create_task(self._sweep_idle(), name="gateway[all].idle_sweep")
        )
        self._tasks.append(
            asyncio.create_task(self._poll_commands(), name="gateway[all].commands")
        )

    async def close(self) -> None:
        """Stop listening, close sessions, and flush what was accepted."""
        for server in self._servers:
            server.close()
        for session in list(self._sessions):
            session.close()
        for server in self._servers:
            await server.wait_closed()
        # connection_lost runs in later loop iterations and may submit records.
        for _ in range(100):
            if not self._sessions:
                break
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.writer.close()
        log.info("gateway stopped")

    def _new_session(self, protocol: str) -> DeviceSession:
        handler: Handler
        connection_id = next(self._connection_ids)
        if protocol == "gt06":
            handler = Gt06Handler(self.config)
        elif protocol == "jt808":
            handler = Jt808Handler(self.config)
        else:
            handler = NmeaHandler(self.config, peer=f"conn{connection_id}")
        return DeviceSession(self, handler, connection_id)

    # Session callbacks

    def session_opened(self, session: DeviceSession) -> None:
        self._sessions.add(session)
        self.stats.connections[session.protocol] += 1
        if isinstance(session.handler, NmeaHandler) and session.transport is not None:
            peer = session.transport.get_extra_info("peername")
            host = peer[0] if isinstance(peer, tuple) else str(peer)
            session.handler = NmeaHandler(self.config, peer=host)

    def session_closed(self, session: DeviceSession) -> None:
        self._sessions.discard(session)
        self.stats.connections[session.protocol] -= 1
        device_id = session.handler.device_id
        if device_id is not None:
            key = (session.protocol, device_id)
            if self._by_device.get(key) is session:
                del self._by_device[key]

    def message_handled(
        self, session: DeviceSession, message: Message, outcome: Outcome
    ) -> None:
        self.stats.frames[(session.protocol, message.type)] += 1
        if outcome.dropped is not None:
            self.stats.dropped[(session.protocol, outcome.dropped)] += 1
        device_id = session.handler.device_id
        if outcome.login and device_id is not None:
            self._device_logged_in(session, device_id)
        if outcome.command_answer is not None and device_id is not None:
            key, response = outcome.command_answer
            self._command_answered(session.protocol, device_id, key, response)

    def decode_failed(self, session: DeviceSession, error: DecodeError) -> None:
        self.stats.decode_errors[(session.protocol, error.reason)] += 1
        log.debug(
            "conn[%d] %s decode error: %r",
            session.connection_id,
            session.protocol,
            error,
        )

    def _device_logged_in(self, session: DeviceSession, device_id: str) -> None:
        previous = self._by_device.get((session.protocol, device_id))
        self._by_device[(session.protocol, device_id)] = session
        if previous is not None and previous is not session:
            log.info(
                "conn[%d] %s device %s logged in again on conn[%d], closing this one",
                previous.connection_id,
                session.protocol,
                device_id,
                session.connection_id,
            )
            previous.close()
        log.info(
            "conn[%d] %s device %s logged in",
            session.connection_id,
            session.protocol,
            device_id,
        )
        self._spawn(
            self._touch(device_id, session.protocol, datetime.now(UTC)),
            f"gateway[{device_id}].touch",
        )
        self._spawn(
            self._send_after_login(session, device_id), f"gateway[{device_id}].commands"
        )

    async def _touch(self, device_id: str, protocol: str, seen_at: datetime) -> None:
        touch = functools.partial(
            self.store.touch_device, device_id, protocol, seen_at=seen_at
        )
        await self._store_write(("touch", protocol, device_id), touch, keep_first=True)

    async def _send_after_login(self, session: DeviceSession, device_id: str) -> None:
        # Devices ignore traffic until their login is acked, so commands wait.
        await session.replies_sent()
        if self.writer.store_held:
            return  # the command poll sends them once the store is ready
        try:
            await self._send_queued(device_id)
        except Exception as exc:
            if not self.store.is_unavailable(exc):
                raise
            # The command poll logs the outage and sends the commands later.
            log.debug("commands of device %s wait for the store: %s", device_id, exc)

    # Store writes that survive a database outage

    async def _store_write(
        self, key: Hashable, write: Callable[[], object], *, keep_first: bool = False
    ) -> None:
        """Run `write` in a thread, or defer it (`defer_store_write`) in an outage.

        While the writer keeps batches from the store (its schema is not
        migrated yet), or earlier writes are deferred, `write` is deferred
        without a try, so deferred writes keep their order.
        """
        if self.writer.store_held:
            reason = "its schema is not migrated yet"
        elif self._deferred:
            reason = "earlier writes are waiting"
        else:
            try:
                await asyncio.to_thread(write)
                return
            except Exception as exc:
                if not self.store.is_unavailable(exc):
                    raise
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self.defer_store_write(key, write, reason, keep_first=keep_first)

    def defer_store_write(
        self,
        key: Hashable,
        write: Callable[[], object],
        reason: str = "",
        *,
        keep_first: bool = False,
    ) -> None:
        """Keep a store write that failed in an outage; the command poll retries it.

        Call it on the event loop. A write replaces the deferred one with the
        same key, unless `keep_first` is set: then the first one stays and
        only the latest after it is kept, as device touches need for
        first_seen and last_seen. The first deferral of an outage logs one
        warning with `reason`.
        """
        if not self._deferred:
            log.warning(
                "store unavailable (%s): device logins and command results are "
                "kept in memory until it is back",
                reason or "no reason given",
            )
        if keep_first and key in self._deferred:
            self._deferred[(key, "latest")] = write
        else:
            self._deferred[key] = write

    async def _write_deferred(self) -> None:
        """Retry the deferred store writes in order; stop at the first outage error."""
        while self._deferred:
            key, write = next(iter(self._deferred.items()))
            try:
                await asyncio.to_thread(write)
            except Exception as exc:
                if self.store.is_unavailable(exc):
                    return
                log.error("deferred store write %s failed: %s", key, exc)
            else:
                self._deferred_written += 1
            # A newer write with this key, deferred meanwhile, stays queued.
            if self._deferred.get(key) is write:
                del self._deferred[key]
        if self._deferred_written:
            log.info(
                "store back: wrote %d device logins and command results kept "
                "during the outage",
                self._deferred_written,
            )
            self._deferred_written = 0

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed: %r", task.get_name(), task.exception())

    def _records_stored(
        self, fixes: Sequence[Fix], events: Sequence[DeviceEvent]
    ) -> None:
        for observe in self.record_observers:
            try:
                observe(fixes, events)
            except Exception:  # one failing observer must not starve the others
                log.exception(
                    "record observer %r failed on %d fixes and %d events",
                    observe,
                    len(fixes),
                    len(events),
                )

    # Fences

    def _batch_stored(self, batch: RecordBatch) -> None:
        """Pass what the store now contains to the observers; run the fence check."""
        fixes = batch.fixes
        if fixes:
            for observe in self.batch_observers:
                observe(self.writer.stats)
        self._records_stored(fixes, batch.events)
        if self._fence_check is None or not fixes:
            return
        events: list[Any] = []
        for fix in fixes:
            events.extend(self._fence_check(fix))
        if events:
            self.stats.fence_events += len(events)
            self.writer.submit(fence_events=events, durable=False)

    # Idle connections

    async def _sweep_idle(self) -> None:
        timeout = self.config.gateway.idle_timeout_s
        if timeout <= 0:
            return
        while True:
            await asyncio.sleep(min(timeout / 4, 30.0))
            cutoff = time.monotonic() - timeout
            for session in list(self._sessions):
                if session.last_activity < cutoff:
                    log.info(
                        "conn[%d] %s device %s idle for %.0f s, closing",
                        session.connection_id,
                        session.protocol,
                        session.handler.device_id,
                        timeout,
                    )
                    session.close()

    # Downlink commands: the store's commands table is the outbox

    async def _poll_commands(self) -> None:
        outage = OutageLog(log, "command dispatch")
        while True:
            await asyncio.sleep(self._command_poll_interval)
            if self.writer.store_held:
                continue  # the store has no schema yet; nothing can be read
            try:
                await self._write_deferred()
                await self._send_queued(None)
                await self._expire_commands()
            except Exception as exc:  # the store is down: keep polling
                outage.failed(exc)
            else:
                outage.succeeded()

    async def _send_queued(self, device_id: str | None = None) -> None:
        async with self._command_lock:
            await self._send_queued_locked(device_id)

    async def _send_queued_locked(self, device_id: str | None) -> None:
        queued = await asyncio.to_thread(self.store.commands, device_id, "queued")
        now = datetime.now(UTC)
        for command in queued:
            if command_expired(command.payload, now):
                await self._expire_queued(command.command_id, command.payload)
                continue
            session = self._by_device.get((command.protocol, command.device_id))
            if session is None or session.closed:
                continue
            try:
                frame, key = session.handler.encode_command(
                    command.command_id, command.kind, command.payload
                )
            except (ValueError, KeyError) as exc:
                await asyncio.to_thread(
                    self.store.update_command,
                    command.command_id,
                    "failed",
                    at=datetime.now(UTC),
                    response={"error": str(exc)},
                )
                self.stats.commands["failed"] += 1
                continue
            # Recorded before the write, so a fast response never races the
            # update. If the store fails here, the command stays queued.
            await asyncio.to_thread(
                self.store.update_command,
                command.command_id,
                "sent",
                at=datetime.now(UTC),
                response={"frame": frame.hex()},
            )
            deadline = time.monotonic() + self.config.gateway.command_timeout_s
            self._pending[(command.protocol, command.device_id, key)] = _PendingCommand(
                command.command_id, deadline
            )
            session.send(frame)
            self.stats.commands["sent"] += 1
            log.info(
                "command %d (%s) sent to %s device %s",
                command.command_id,
                command.kind,
                command.protocol,
                command.device_id,
            )

    async def _expire_queued(self, command_id: int, payload: Mapping[str, Any]) -> None:
        self.stats.commands["expired"] += 1
        await asyncio.to_thread(
            self.store.update_command,
            command_id,
            "failed",
            at=datetime.now(UTC),
            response={
                "error": "expired before the device connected",
                "expires_at": payload.get("expires_at"),
            },
        )
        log.warning("command %d expired before its device connected", command_id)

    async def _expire_commands(self) -> None:
        now = time.monotonic()
        for key, pending in list(self._pending.items()):
            if pending.deadline <= now:
                del self._pending[key]
                self.stats.commands["timeout"] += 1
                await self._store_write(
                    ("command", pending.command_id),
                    functools.partial(
                        self.store.update_command,
                        pending.command_id,
                        "timeout",
                        at=datetime.now(UTC),
                    ),
                )
                log.warning(
                    "command %d timed out on device %s", pending.command_id, key[1]
                )

    def _command_answered(
        self, protocol: str, device_id: str, key: int, response: dict[str, Any]
    ) -> None:
        pending = self._pending.pop((protocol, device_id, key), None)
        if pending is None:
            self.stats.commands["unmatched_answer"] += 1
            return
        self.stats.commands["answered"] += 1
        self._spawn(
            self._store_write(
                ("command", pending.command_id),
                functools.partial(
                    self.store.update_command,
                    pending.command_id,
                    "answered",
                    at=datetime.now(UTC),
                    response=response,
                ),
            ),
            f"gateway[{device_id}].command_answer",
        )
        log.info("device %s responded to command %d", device_id, pending.command_id)
        for observe in self.answer_observers:
            observe(device_id, pending.command_id, response)

    async def queue_command(
        self, device_id: str, protocol: str, kind: str, payload: dict[str, Any]
    ) -> int:
        """Record a command in the outbox and send it now if the device is connected.

        Without an ``expires_at`` in the payload the command expires after
        ``[gateway] command_ttl_s``.
        """
        if "expires_at" not in payload:
            ttl = timedelta(seconds=self.config.gateway.command_ttl_s)
            payload = {**payload, "expires_at": format_time(datetime.now(UTC) + ttl)}
        command_id = await asyncio.to_thread(
            self.store.add_command,
            device_id,
            protocol,
            kind,
            payload,
            created_at=datetime.now(UTC),
        )
        await self._send_queued(device_id)
        return command_id

    def connected_devices(self) -> dict[str, int]:
        counts: Counter[str] = Counter(protocol for protocol, _ in self._by_device)
        return dict(counts)
