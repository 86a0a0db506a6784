"""Batched, durable hand-off from device sessions to the store.

Sessions submit the fixes and events of one frame and get a future back. The
writer collects submissions into batches (flushed by size or age), writes each
batch in a worker thread, and only then resolves the futures, so a session
sends its protocol acknowledgement after the data is durable. A failed write is
retried with capped back-off and the futures stay pending: nothing is
acknowledged that is not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.store import Store

log = logging.getLogger(__name__)

BatchHook = Callable[[Sequence[Fix]], None]


@dataclass(slots=True)
class _Submission:
    fixes: Sequence[Fix]
    events: Sequence[DeviceEvent]
    fence_events: Sequence[FenceEvent]
    future: asyncio.Future[None] | None


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    fixes_submitted: int = 0
    fixes_stored: int = 0
    events_stored: int = 0
    fence_events_stored: int = 0
    write_failures: int = 0
    last_batch_seconds: float = 0.0


class BatchWriter:
    """Write submissions to a store in batches, resolving each after it is durable."""

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        max_pending: int = 20_000,
        on_stored: BatchHook | None = None,
    ) -> None:
        self._store = store
        self._batch_size = max(1, batch_size)
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._on_stored = on_stored
        self._queue: deque[_Submission] = deque()
        self._pending_fixes = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.stats = WriterStats()

    @property
    def congested(self) -> bool:
        """True while more fixes wait than ``max_pending``: sessions pause reading."""
        return self._pending_fixes >= self._max_pending

    async def wait_uncongested(self) -> None:
        while self.congested:
            self._drained.clear()
            await self._drained.wait()

    def submit(
        self,
        fixes: Sequence[Fix] = (),
        events: Sequence[DeviceEvent] = (),
        fence_events: Sequence[FenceEvent] = (),
        *,
        durable: bool = True,
    ) -> asyncio.Future[None] | None:
        """Queue records; return a future resolved once they are stored.

        With ``durable=False`` no future is made (fence events, which no device
        waits for).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] | None = loop.create_future() if durable else None
        self._queue.append(_Submission(fixes, events, fence_events, future))
        self._pending_fixes += len(fixes)
        self.stats.fixes_submitted += len(fixes)
        if self._pending_fixes >= self._batch_size:
            self._wakeup.set()
        return future

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway[store].writer")

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def flush(self) -> None:
        """Wait until everything submitted so far is stored."""
        while self._queue:
            self._wakeup.set()
            await asyncio.sleep(self._flush_interval / 2 or 0.001)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._flush_interval)
                continue
            if not self._closing and self._pending_fixes < self._batch_size:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._flush_interval)
            await self._write_next_batch()

    def _take_batch(self) -> list[_Submission]:
        taken: list[_Submission] = []
        count = 0
        while self._queue and (count < self._batch_size or not taken):
            submission = self._queue.popleft()
            taken.append(submission)
            count += len(submission.fixes)
        return taken

    async def _write_next_batch(self) -> None:
        batch = self._take_batch()
        fixes = [fix for s in batch for fix in s.fixes]
        events = [event for s in batch for event in s.events]
        fence_events = [event for s in batch for event in s.fence_events]
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                stored = await asyncio.to_thread(
                    self._write, fixes, events, fence_events
                )
                break
            except Exception as exc:  # any driver error: keep the batch, retry
                attempt += 1
                self.stats.write_failures += 1
                delay = min(30.0, 0.2 * 2**attempt) * (0.5 + random.random() / 2)
                log.warning(
                    "store write of %d fixes failed (attempt %d), retry in %.1f s: %s",
                    len(fixes),
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.last_batch_seconds = elapsed
        self.stats.fixes_stored += stored
        self._pending_fixes -= len(fixes)
        if not self.congested:
            self._drained.set()
        for submission in batch:
            if submission.future is not None and not submission.future.done():
                submission.future.set_result(None)
        if self._on_stored is not None and fixes:
            try:
                self._on_stored(fixes)
            except Exception:
                log.exception(
                    "post-store hook failed for a batch of %d fixes", len(fixes)
                )

    def _write(
        self,
        fixes: Sequence[Fix],
        events: Sequence[DeviceEvent],
        fence_events: Sequence[FenceEvent],
    ) -> int:
        stored = self._store.write_fixes(fixes) if fixes else 0
        if events:
            self.stats.events_stored += self._store.write_device_events(events)
        if fence_events:
            self.stats.fence_events_stored += self._store.write_fence_events(
                fence_events
            )
        return stored
