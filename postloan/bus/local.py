"""Run a bus consumer in the gateway process, fed by the gateway's stored records.

With a role in ``[bus] roles``, `postloan run` hands each batch the store
wrote to the same consumer class a ``postloan worker`` process uses, so the
role behaves the same in both layouts. Batches are handled one at a time in
the order stored.

NOTE: batches wait in memory, so a gateway crash drops those not yet
handled. For the risk role, the device's next fix or alarm triggers the
evaluation again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from postloan.bus.worker import Consumer, EventConsumer
from postloan.model import DeviceEvent, Fix

log = logging.getLogger(__name__)

_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 10.0


class LocalRole:
    """Feed stored fixes and events to `consumer` in a task of this event loop."""

    def __init__(self, role: str, consumer: Consumer) -> None:
        self.role = role
        self.consumer = consumer
        self._queue: asyncio.Queue[tuple[list[Fix], list[DeviceEvent]] | None] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Batches stored and not yet handled."""
        return self._queue.qsize()

    def observe(self, fixes: Sequence[Fix], events: Sequence[DeviceEvent]) -> None:
        """Queue one stored batch; returns at once (event loop thread)."""
        if fixes or events:
            self._queue.put_nowait((list(fixes), list(events)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"bus.local.{self.role}")

    async def close(self, timeout: float = 30.0) -> None:
        """Handle the queued batches for up to `timeout` seconds, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.warning(
                "%s role stopped with %d batches not handled", self.role, self.backlog
            )
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            await self._handle(*item)

    async def _handle(self, fixes: list[Fix], events: list[DeviceEvent]) -> None:
        failures = 0
        while True:
            try:
                if fixes:
                    await self.consumer.handle(fixes)
                if events and isinstance(self.consumer, EventConsumer):
                    await self.consumer.handle_events(events)
                return
            except Exception as exc:  # e.g. the store is down: retry the batch
                failures += 1
                delay = min(_RETRY_MAX_S, _RETRY_FIRST_S * 2.0**failures)
                log.error(
                    "%s role failed on %d fixes and %d events (%d in a row), "
                    "retrying in %.1f s: %r",
                    self.role,
                    len(fixes),
                    len(events),
                    failures,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
