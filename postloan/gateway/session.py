"""One TCP connection from one tracker, on the asyncio Protocol API.

The Protocol API is used rather than streams because on uvloop it spent 3-4x
less CPU per frame, and streams cost about 4x the memory per connection
(measured with 10,000 connections on a 2-core x86_64 machine).

Replies go out in frame order: each reply waits for the store to make the
frame's records durable, and a reply never overtakes an earlier one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

from postloan.gateway.handlers import (
    Handler,
    Outcome,
    screen_future_fixes,
    screen_invalid_fixes,
)
from postloan.protocols.base import DecodeError

if TYPE_CHECKING:
    from postloan.gateway.server import Gateway

log = logging.getLogger(__name__)


class DeviceSession(asyncio.Protocol):
    """Frame, decode, store and acknowledge the traffic of one device."""

    def __init__(self, gateway: Gateway, handler: Handler, connection_id: int) -> None:
        self.gateway = gateway
        self.handler = handler
        self.connection_id = connection_id
        self.transport: asyncio.Transport | None = None
        self.last_activity = time.monotonic()
        self.consecutive_errors = 0
        self._outbox: deque[tuple[asyncio.Future[None] | None, bytes | None]] = deque()
        self._waiting = False
        self._paused = False
        self._warned_future = False
        self._max_future = timedelta(seconds=gateway.config.devices.max_future_s)
        self._warned_decode = False
        # Drop and rejection reasons already logged on this connection. Their
        # repeats are only counted in the gateway stats.
        self._warned_reasons: set[str] = set()
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.closed = False

    @property
    def protocol(self) -> str:
        return self.handler.protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.gateway.session_opened(self)
        log.debug(
            "conn[%d] %s connected from %s",
            self.connection_id,
            self.protocol,
            self.transport.get_extra_info("peername"),
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        outcome = self.handler.finish(datetime.now(UTC))
        if outcome.fixes or outcome.events:
            self.gateway.writer.submit(outcome.fixes, outcome.events, durable=False)
        self.gateway.session_closed(self)
        if self.handler.device_id is not None:
            log.info(
                "conn[%d] %s device %s disconnected%s",
                self.connection_id,
                self.protocol,
                self.handler.device_id,
                f": {exc}" if exc else "",
            )

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        log.debug("conn[%d] %s rx %s", self.connection_id, self.protocol, data.hex())
        for item in self.handler.framer.feed(data):
            if isinstance(item, DecodeError):
                self._decode_failed(item)
            else:
                self._frame_received(item)
            if self.closed:
                return
        if self.gateway.writer.congested and not self._paused:
            self._pause()

    def _frame_received(self, frame: bytes) -> None:
        try:
            message = self.handler.decode(frame)
        except DecodeError as exc:
            self._decode_failed(exc)
            return
        self.consecutive_errors = 0
        now = datetime.now(UTC)
        outcome = self.handler.handle(message, now)
        screen_invalid_fixes(outcome, now)
        rejected = screen_future_fixes(outcome, now, self._max_future)
        if rejected and not self._warned_future:
            self._warned_future = True
            log.warning(
                "conn[%d] %s device %s sent a fix dated %s, more than %.0f s ahead; "
                "not stored as a position (set its UTC offset if its clock is local)",
                self.connection_id,
                self.protocol,
                self.handler.device_id,
                rejected[0].time.isoformat(),
                self._max_future.total_seconds(),
            )
        self._report_rejections(outcome)
        self.gateway.message_handled(self, message, outcome)
        self._act(outcome)

    def _report_rejections(self, outcome: Outcome) -> None:
        """Count each ``fix_rejected`` event and log the first of each reason."""
        for event in outcome.events:
            if event.kind != "fix_rejected":
                continue
            reason = str(event.attributes.get("reason"))
            self.gateway.stats.dropped[(self.protocol, reason)] += 1
            if reason == "time_in_future" or reason in self._warned_reasons:
                continue  # a future fix has its own warning
            self._warned_reasons.add(reason)
            log.warning(
                "conn[%d] %s device %s: fix rejected, invalid %s %r. It is stored as "
                "device event fix_rejected, and later ones on this connection "
                "are only counted",
                self.connection_id,
                self.protocol,
                event.device_id,
                event.attributes.get("field"),
                event.attributes.get("value"),
            )
        if outcome.drop_detail is None:
            return
        key = outcome.dropped or outcome.drop_detail
        if key in self._warned_reasons:
            return
        self._warned_reasons.add(key)
        log.warning(
            "conn[%d] %s device %s: %s",
            self.connection_id,
            self.protocol,
            self.handler.device_id,
            outcome.drop_detail,
        )

    def _act(self, outcome: Outcome) -> None:
        future = None
        if outcome.fixes or outcome.events:
            future = self.gateway.writer.submit(outcome.fixes, outcome.events)
        if future is not None or outcome.reply is not None or self._outbox:
            self._outbox.append((future, outcome.reply))
            self._send_ready_replies()
        if outcome.close:
            self.close_after_replies()

    def _send_ready_replies(self) -> None:
        while self._outbox:
            future, reply = self._outbox[0]
            if future is not None and not future.done():
                if not self._waiting:
                    self._waiting = True
                    future.add_done_callback(self._future_done)
                return
            self._outbox.popleft()
            if reply is not None and not self.closed and self.transport is not None:
                log.debug(
                    "conn[%d] %s tx %s", self.connection_id, self.protocol, reply.hex()
                )
                self.transport.write(reply)
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self._closing_after_replies:
            self.close()

    _closing_after_replies = False

    async def replies_sent(self) -> None:
        """Wait until every reply owed so far (a login ack, say) has been written."""
        if not self._outbox:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _future_done(self, _: asyncio.Future[None]) -> None:
        self._waiting = False
        self._send_ready_replies()

    def _decode_failed(self, error: DecodeError) -> None:
        self.consecutive_errors += 1
        self.gateway.decode_failed(self, error)
        if not self._warned_decode:
            # One warning per connection; the rest are counted in the stats.
            self._warned_decode = True
            log.warning(
                "conn[%d] %s device %s: undecodable frame (%s): %s",
                self.connection_id,
                self.protocol,
                self.handler.device_id,
                error.reason,
                error.detail,
            )
        if self.consecutive_errors >= max(
            1, self.gateway.config.gateway.max_decode_errors
        ):
            log.warning(
                "conn[%d] %s device %s: %d decode errors in a row (last %s), closing",
                self.connection_id,
                self.protocol,
                self.handler.device_id,
                self.consecutive_errors,
                error.reason,
            )
            self.close()

    def _pause(self) -> None:
        if self.transport is None:
            return
        self._paused = True
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(
            self._resume_when_drained(),
            name=f"gateway[{self.connection_id}].backpressure",
        )

    async def _resume_when_drained(self) -> None:
        await self.gateway.writer.wait_uncongested()
        self._paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def send(self, data: bytes) -> None:
        """Send a downlink frame now (commands do not wait for the store)."""
        if self.transport is not None and not self.closed:
            log.debug(
                "conn[%d] %s tx %s", self.connection_id, self.protocol, data.hex()
            )
            self.transport.write(data)

    def close_after_replies(self) -> None:
        self._closing_after_replies = True
        self._send_ready_replies()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
