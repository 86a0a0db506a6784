"""Batched, durable hand-off from device sessions to the store.

Sessions submit the fixes and events of one frame and get a future back. The
writer collects submissions into batches (flushed by size or age) and writes
each batch in a worker thread. A future is resolved, and the session sends
its protocol acknowledgement, only once the batch is durable in one of two
places:

* the store, while the database accepts writes;
* the spool (`postloan.store.spool`), while it does not. Every batch goes
  to the spool until a probe write succeeds. Then new batches go to the
  store again, and between them the spool is drained into it, oldest first.

While the store is held (`hold_store`), every batch goes to the spool and
nothing is drained. The gateway calls it when it starts with the database
down and releases the store once the schema is migrated. After
`release_store` the spool is drained as after an outage.

When neither takes a batch (no spool configured, spool full, disk failure)
the batch waits in memory and is retried with capped back-off, its futures
unresolved. The queue then grows past ``max_pending`` and sessions stop
reading their sockets until it drains, which pushes back on the devices.

A batch the store rejects as invalid (`Store.is_data_error`) is split until
the offending records are isolated. Those are appended to
``rejected.jsonl`` in the spool folder, fsynced, and acknowledged, because a
device resends an unacknowledged record forever and would stall its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.store import Store
from postloan.store.spool import (
    RecordBatch,
    Spool,
    SpoolError,
    decode_batch,
    encode_batch,
)
from postloan.times import format_time

if TYPE_CHECKING:
    from postloan.config import StoreConfig

log = logging.getLogger(__name__)

BatchHook = Callable[[RecordBatch], None]

REJECTED_FILE = "rejected.jsonl"
_RETRY_FIRST_S = 0.2
_DRAIN_BUDGET_S = 0.5
_DOWN_LOG_INTERVAL_S = 30.0
_MEBIBYTE = 1 << 20


@dataclass(slots=True)
class _Submission:
    fixes: Sequence[Fix]
    events: Sequence[DeviceEvent]
    fence_events: Sequence[FenceEvent]
    future: asyncio.Future[None] | None


@dataclass(slots=True)
class WriterStats:
    """Counters for metrics; `spool_records` and `spool_bytes` are gauges."""

    batches: int = 0
    fixes_submitted: int = 0
    fixes_stored: int = 0
    events_stored: int = 0
    fence_events_stored: int = 0
    write_failures: int = 0
    last_batch_seconds: float = 0.0
    batches_spooled: int = 0
    fixes_spooled: int = 0
    fixes_drained: int = 0
    spool_failures: int = 0
    spool_records: int = 0
    spool_bytes: int = 0
    records_rejected: int = 0
    maintenance_runs: int = 0
    maintenance_failures: int = 0


@dataclass(slots=True)
class _WriteResult:
    fixes: int = 0
    events: int = 0
    fence_events: int = 0
    rejected: list[tuple[RecordBatch, BaseException]] = field(default_factory=list)

    def add(self, other: _WriteResult) -> None:
        self.fixes += other.fixes
        self.events += other.events
        self.fence_events += other.fence_events
        self.rejected.extend(other.rejected)


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
        spool: Spool | None = None,
        maintenance_interval: float = 0.0,
        retry_max_delay: float = 5.0,
    ) -> None:
        self._store = store
        self._batch_size = max(1, batch_size)
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._on_stored = on_stored
        self._spool = spool
        self._maintenance_interval = maintenance_interval
        self._retry_max_delay = retry_max_delay
        self._queue: deque[_Submission] = deque()
        self._pending_fixes = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._spool_opened = asyncio.Event()
        self._maintenance: asyncio.Task[None] | None = None
        self._next_maintenance = time.monotonic() + maintenance_interval
        # Store health: writes go straight to the store while it is up. While
        # it is down they go to the spool, and a probe is due at _next_probe.
        self._store_up = True
        self._store_held = False
        self._store_failures = 0
        self._next_probe = 0.0
        self._last_down_log = 0.0
        self.stats = WriterStats()

    @classmethod
    def from_config(
        cls, store: Store, settings: StoreConfig, *, on_stored: BatchHook | None = None
    ) -> BatchWriter:
        """Build a writer, with a spool unless ``spool_dir`` is empty, from config."""
        spool = None
        if settings.spool_dir:
            spool = Spool(
                settings.spool_dir,
                max_bytes=settings.spool_max_mb * _MEBIBYTE,
                segment_bytes=settings.spool_segment_mb * _MEBIBYTE,
            )
        return cls(
            store,
            batch_size=settings.batch_size,
            flush_interval=settings.flush_interval_ms / 1000,
            max_pending=settings.max_pending,
            on_stored=on_stored,
            spool=spool,
            maintenance_interval=settings.maintenance_interval_s,
        )

    @property
    def congested(self) -> bool:
        """True while more fixes wait than ``max_pending``: sessions pause reading."""
        return self._pending_fixes >= self._max_pending

    @property
    def pending_fixes(self) -> int:
        """Fixes submitted and not yet durable in the store or the spool."""
        return self._pending_fixes

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
        """Queue records; return a future resolved once they are durable.

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
        """Make what is queued durable, then stop; the spool keeps what it holds."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._maintenance is not None:
            await asyncio.gather(self._maintenance, return_exceptions=True)
        if self._spool is not None:
            await asyncio.to_thread(self._spool.close)

    async def flush(self) -> None:
        """Wait until everything submitted so far is durable (stored or spooled)."""
        while self._queue:
            self._wakeup.set()
            await asyncio.sleep(self._flush_interval / 2 or 0.001)

    async def wait_spool_drained(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the spool to empty; True if it did."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._spool_opened.wait(), timeout)
        while self._spool is not None and self._spool.records:
            if time.monotonic() >= deadline:
                return False
            self._wakeup.set()
            await asyncio.sleep(0.05)
        return True

    @property
    def store_held(self) -> bool:
        """True between `hold_store` and `release_store`."""
        return self._store_held

    def hold_store(self) -> None:
        """Write nothing to the store until `release_store`: batches are spooled.

        For a store that cannot take writes yet, such as a database that was
        down when the process started and is not migrated. Without a spool,
        batches wait in memory (see the module docstring).
        """
        self._store_held = True
        self._store_up = False

    def release_store(self) -> None:
        """Let batches reach the store again; the spool is drained first."""
        if not self._store_held:
            return
        self._store_held = False
        self._store_failures = 0
        self._next_probe = 0.0
        self._wakeup.set()

    # --- the writer task ------------------------------------------------------

    async def _run(self) -> None:
        await self._open_spool()
        while True:
            await self._wait_for_work()
            if self._queue:
                await self._write_next_batch()
            elif self._closing:
                return
            if self._drain_due():
                await self._drain_spool()
            self._start_maintenance_if_due()

    async def _wait_for_work(self) -> None:
        if self._closing or self._pending_fixes >= self._batch_size:
            return
        if not self._queue and self._drain_due():
            return
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), self._flush_interval)

    def _take_batch(self) -> list[_Submission]:
        taken: list[_Submission] = []
        count = 0
        while self._queue and (count < self._batch_size or not taken):
            submission = self._queue.popleft()
            taken.append(submission)
            count += len(submission.fixes)
        return taken

    async def _write_next_batch(self) -> None:
        submissions = self._take_batch()
        batch = RecordBatch(
            [fix for s in submissions for fix in s.fixes],
            [event for s in submissions for event in s.events],
            [event for s in submissions for event in s.fence_events],
        )
        started = time.perf_counter()
        await self._make_durable(batch)
        self.stats.batches += 1
        self.stats.last_batch_seconds = time.perf_counter() - started
        self._pending_fixes -= len(batch.fixes)
        if not self.congested:
            self._drained.set()
        for submission in submissions:
            if submission.future is not None and not submission.future.done():
                submission.future.set_result(None)

    async def _make_durable(self, batch: RecordBatch) -> None:
        """Return once the batch is in the store or the spool, retrying both."""
        attempt = 0
        while True:
            if self._store_writable() and await self._try_store(batch):
                return
            if await self._try_spool(batch):
                return
            attempt += 1
            delay = self._backoff(attempt)
            spool = "the spool failed" if self._spool else "no spool is configured"
            log.warning(
                "%d fixes wait in memory: the store is down and %s (attempt %d); "
                "retrying in %.1f s",
                len(batch.fixes),
                spool,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)
            # Spooled batches go first, so the probe that may bring the store
            # back is a drain; without a spool the next loop probes directly.
            self._next_probe = 0.0
            if self._drain_due():
                await self._drain_spool()

    def _store_writable(self) -> bool:
        if self._store_held:
            return False
        if self._store_up:
            return True
        spool_empty = self._spool is None or self._spool.records == 0
        return spool_empty and time.monotonic() >= self._next_probe

    async def _try_store(self, batch: RecordBatch) -> bool:
        try:
            result = await asyncio.to_thread(self._write_isolating, batch)
        except Exception as exc:  # any driver error: the batch goes elsewhere
            self._store_failed(exc)
            return False
        self._store_recovered()
        await self._record(result, batch)
        return True

    async def _try_spool(self, batch: RecordBatch) -> bool:
        if self._spool is None:
            return False
        try:
            await asyncio.to_thread(self._spool_append, batch)
        except (SpoolError, OSError) as exc:
            self.stats.spool_failures += 1
            log.error("spool append of %d fixes failed: %s", len(batch.fixes), exc)
            return False
        self.stats.batches_spooled += 1
        self.stats.fixes_spooled += len(batch.fixes)
        self._update_spool_gauges()
        return True

    def _spool_append(self, batch: RecordBatch) -> None:
        assert self._spool is not None
        try:
            payload = encode_batch(batch)
        except (TypeError, ValueError):
            batch, rejected = _encodable_part(batch)
            self._reject(rejected)
            if not batch.size:
                return
            payload = encode_batch(batch)
        self._spool.append(payload)

    # --- draining the spool ---------------------------------------------------

    def _drain_due(self) -> bool:
        if self._store_held or self._spool is None or self._spool.records == 0:
            return False
        return self._store_up or time.monotonic() >= self._next_probe

    async def _drain_spool(self) -> None:
        """Write spooled batches to the store, oldest first, for a bounded time."""
        assert self._spool is not None
        deadline = time.monotonic() + _DRAIN_BUDGET_S
        while self._spool.records and time.monotonic() < deadline:
            try:
                payloads = await asyncio.to_thread(self._spool.head, 8)
            except OSError as exc:
                self.stats.spool_failures += 1
                log.error("reading the spool failed: %s", exc)
                self._next_probe = time.monotonic() + self._retry_max_delay
                return
            batch = RecordBatch.merge([self._decode(p) for p in payloads])
            try:
                result = await asyncio.to_thread(self._write_isolating, batch)
            except Exception as exc:  # any driver error: keep the records
                self._store_failed(exc)
                return
            self._store_recovered()
            await asyncio.to_thread(self._spool.consume, len(payloads))
            self.stats.fixes_drained += len(batch.fixes)
            self._update_spool_gauges()
            await self._record(result, batch)
            if not self._spool.records:
                log.info("spool drained into the store")

    def _decode(self, payload: bytes) -> RecordBatch:
        try:
            return decode_batch(payload)
        except (ValueError, TypeError, KeyError) as exc:
            # Checksummed, so this is a record from another postloan version.
            log.error("spool record of %d bytes is unreadable: %s", len(payload), exc)
            self._reject_payload(payload, exc)
            return RecordBatch()

    # --- writing with isolation of invalid records ----------------------------

    def _write_isolating(self, batch: RecordBatch) -> _WriteResult:
        """Write the batch, splitting it to set aside records the store rejects.

        Runs in a worker thread. Errors other than data errors propagate, so
        the whole batch is retried or spooled. The parts already written are
        then written again, and the store skips them as duplicates.
        """
        try:
            return self._write(batch)
        except Exception as exc:
            if not self._store.is_data_error(exc):
                raise
            if batch.size <= 1:
                return _WriteResult(rejected=[(batch, exc)])
            result = _WriteResult()
            for half in batch.split():
                result.add(self._write_isolating(half))
            return result

    def _write(self, batch: RecordBatch) -> _WriteResult:
        result = _WriteResult()
        if batch.fixes:
            result.fixes = self._store.write_fixes(batch.fixes)
        if batch.events:
            result.events = self._store.write_device_events(batch.events)
        if batch.fence_events:
            result.fence_events = self._store.write_fence_events(batch.fence_events)
        return result

    async def _record(self, result: _WriteResult, batch: RecordBatch) -> None:
        self.stats.fixes_stored += result.fixes
        self.stats.events_stored += result.events
        self.stats.fence_events_stored += result.fence_events
        if result.rejected:
            await asyncio.to_thread(self._reject, result.rejected)
        if self._on_stored is None:
            return
        stored = _accepted(batch, result.rejected)
        if not stored.fixes and not stored.events:
            return
        try:
            self._on_stored(stored)
        except Exception:
            log.exception(
                "post-store hook failed for a batch of %d fixes and %d events",
                len(stored.fixes),
                len(stored.events),
            )

    def _reject(self, rejected: list[tuple[RecordBatch, BaseException]]) -> None:
        for batch, error in rejected:
            self.stats.records_rejected += batch.size
            log.error(
                "store rejected a record of device %s as invalid: %s",
                _device_of(batch),
                error,
            )
            self._append_rejected({"error": str(error), "batch": _describe(batch)})

    def _reject_payload(self, payload: bytes, error: BaseException) -> None:
        self.stats.records_rejected += 1
        text = payload.decode("utf-8", errors="replace")
        self._append_rejected({"error": str(error), "payload": text})

    def _append_rejected(self, entry: dict[str, object]) -> None:
        if self._spool is None:
            # NOTE: without a spool folder a rejected record is only logged.
            log.debug("rejected record: %s", entry)
            return
        entry = {"rejected_at": format_time(datetime.now(UTC)), **entry}
        path = Path(self._spool.directory) / REJECTED_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, separators=(",", ":"), default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    # --- store health ---------------------------------------------------------

    def _store_failed(self, error: BaseException) -> None:
        self.stats.write_failures += 1
        self._store_failures += 1
        delay = self._backoff(self._store_failures)
        self._next_probe = time.monotonic() + delay
        now = time.monotonic()
        if self._store_up or now - self._last_down_log >= _DOWN_LOG_INTERVAL_S:
            self._last_down_log = now
            target = "the spool" if self._spool is not None else "memory"
            log.warning(
                "store write failed (%d in a row), batches go to %s; "
                "next try in %.1f s: %s",
                self._store_failures,
                target,
                delay,
                error,
            )
        self._store_up = False

    def _store_recovered(self) -> None:
        if not self._store_up and self._store_failures:
            log.info(
                "store is writable again after %d failed writes; %d records spooled",
                self._store_failures,
                0 if self._spool is None else self._spool.records,
            )
        self._store_up = True
        self._store_failures = 0

    def _backoff(self, attempt: int) -> float:
        delay = min(self._retry_max_delay, _RETRY_FIRST_S * 2.0**attempt)
        return delay * (0.5 + random.random() / 2)

    def _update_spool_gauges(self) -> None:
        if self._spool is not None:
            self.stats.spool_records = self._spool.records
            self.stats.spool_bytes = self._spool.size_bytes

    async def _open_spool(self) -> None:
        try:
            await self._take_spool()
        finally:
            self._spool_opened.set()

    async def _take_spool(self) -> None:
        if self._spool is None:
            return
        try:
            await asyncio.to_thread(self._spool.open)
        except (SpoolError, OSError) as exc:
            log.error(
                "spool %s unusable, running without it: %s", self._spool.directory, exc
            )
            self._spool = None
            return
        self._update_spool_gauges()
        if self._spool.records:
            # Whatever an earlier process spooled is drained before new data.
            self._store_up = False
            self._next_probe = 0.0

    # --- maintenance ------------------------------------------------------------

    def _start_maintenance_if_due(self) -> None:
        if (
            self._maintenance_interval <= 0
            or not self._store_up
            or self._closing
            or (self._maintenance is not None and not self._maintenance.done())
            or time.monotonic() < self._next_maintenance
        ):
            return
        self._next_maintenance = time.monotonic() + self._maintenance_interval
        self._maintenance = asyncio.create_task(
            self._maintain(), name="gateway[store].maintenance"
        )

    async def _maintain(self) -> None:
        try:
            report = await asyncio.to_thread(self._store.maintain)
        except Exception as exc:
            self.stats.maintenance_failures += 1
            log.warning("store maintenance failed; retrying next interval: %s", exc)
            return
        self.stats.maintenance_runs += 1
        if report.created or report.dropped:
            log.info(
                "store maintenance created %d and dropped %d partitions",
                len(report.created),
                len(report.dropped),
            )


def _encodable_part(
    batch: RecordBatch,
) -> tuple[RecordBatch, list[tuple[RecordBatch, BaseException]]]:
    """Split off the records the spool cannot encode.

    Only a record the store would reject too fails here (a fix time without a
    time zone), so such records are set aside like rejected writes.
    """
    try:
        encode_batch(batch)
    except (TypeError, ValueError) as exc:
        if batch.size <= 1:
            return RecordBatch(), [(batch, exc)]
    else:
        return batch, []
    parts: list[RecordBatch] = []
    rejected: list[tuple[RecordBatch, BaseException]] = []
    for half in batch.split():
        part, bad = _encodable_part(half)
        parts.append(part)
        rejected.extend(bad)
    return RecordBatch.merge(parts), rejected


def _describe(batch: RecordBatch) -> object:
    """Return the batch as JSON-ready data, or its repr when it has no JSON form."""
    try:
        return json.loads(encode_batch(batch))
    except (TypeError, ValueError):
        return repr(batch)


def _device_of(batch: RecordBatch) -> str:
    for records in (batch.fixes, batch.events, batch.fence_events):
        if records:
            return records[0].device_id
    return "?"


def _accepted(
    batch: RecordBatch, rejected: Sequence[tuple[RecordBatch, BaseException]]
) -> RecordBatch:
    """Return the fixes and device events of `batch` that the store did not reject."""
    if not rejected:
        return RecordBatch(batch.fixes, batch.events)
    # Rejected parts hold the very objects of `batch`, so identity finds them.
    dropped = {id(r) for part, _ in rejected for r in (*part.fixes, *part.events)}
    return RecordBatch(
        [fix for fix in batch.fixes if id(fix) not in dropped],
        [event for event in batch.events if id(event) not in dropped],
    )
