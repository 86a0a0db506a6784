"""The `Store` interface that every track store backend implements.

A store keeps what the gateway acknowledged to a device: fixes, device events,
fence events, downlink commands and the devices seen. Writes are idempotent on
each record's natural key, so a fix that a device resends after a lost ack is
stored once. Time windows are half-open: `since` is inclusive, `until` is
exclusive, so consecutive windows never count a fix twice.
"""

from __future__ import annotations

import json
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from postloan.model import EMPTY, DeviceEvent, FenceEvent, Fix

# Downlink command lifecycle. A device may reply before the gateway has
# recorded the send. A reply that arrives after the timeout is still evidence
# that the command (a fuel cut-off, say) ran. So both moves are legal.
COMMAND_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "queued": frozenset({"sent", "answered", "timeout", "failed"}),
    "sent": frozenset({"sent", "answered", "timeout", "failed"}),
    "timeout": frozenset({"answered"}),
    "answered": frozenset(),
    "failed": frozenset(),
}
COMMAND_STATUSES = frozenset(COMMAND_TRANSITIONS)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A tracker the gateway has seen, with the protocol it last spoke."""

    device_id: str
    protocol: str
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A downlink command and, once it came, the device's response."""

    command_id: int
    device_id: str
    protocol: str
    kind: str
    payload: Mapping[str, Any]
    status: str
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None = None
    response: Mapping[str, Any] | None = None


class CommandNotFoundError(LookupError):
    """No command has the given id."""

    def __init__(self, command_id: int) -> None:
        super().__init__(f"command {command_id} not found")
        self.command_id = command_id


class CommandTransitionError(ValueError):
    """The requested status cannot follow the command's current status."""

    def __init__(self, command_id: int, current: str, requested: str) -> None:
        allowed = ", ".join(sorted(COMMAND_TRANSITIONS[current])) or "none"
        super().__init__(
            f"command {command_id}: cannot move from {current!r} to "
            f"{requested!r} (allowed: {allowed})"
        )
        self.command_id = command_id
        self.current = current
        self.requested = requested


class Store(ABC):
    """Durable, de-duplicating storage of tracks, events and commands.

    Implementations are thread-safe for one writer thread plus any number of
    reader threads. Every write call is one transaction and is durable when it
    returns, which is what lets the gateway acknowledge the data to the device.
    """

    @abstractmethod
    def migrate(self) -> None:
        """Apply the schema migrations that the database lacks, in order."""

    @abstractmethod
    def write_fixes(self, fixes: Sequence[Fix]) -> int:
        """Store the fixes and return how many were new.

        A fix whose (device_id, time) is already stored, or appears earlier in
        the same batch, is skipped and the first copy is kept.
        """

    @abstractmethod
    def write_device_events(self, events: Sequence[DeviceEvent]) -> int:
        """Store the events, unique on (device_id, time, kind).

        Return how many were new.
        """

    @abstractmethod
    def write_fence_events(self, events: Sequence[FenceEvent]) -> int:
        """Store the events, unique on (device_id, fence_id, event, time).

        Return how many were new.
        """

    @abstractmethod
    def touch_device(self, device_id: str, protocol: str, *, seen_at: datetime) -> None:
        """Record that the device was seen, widening its first/last seen times.

        The protocol is replaced only when `seen_at` is not older than the
        stored last-seen time.
        """

    def track(
        self,
        device_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Fix]:
        """Return the device's fixes in fix-time order, `since` <= time < `until`."""
        return self._track_page(device_id, since, True, until, None)

    def iter_track(
        self,
        device_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        batch: int = 10_000,
    ) -> Iterator[Fix]:
        """Yield the device's fixes like `track`, reading `batch` rows per query.

        Each page is a separate query that continues after the last fix time
        yielded, so no connection stays checked out between pages. A fix
        written meanwhile shows up if its time is after that point.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        lower, inclusive = since, True
        while True:
            page = self._track_page(device_id, lower, inclusive, until, batch)
            yield from page
            if len(page) < batch:
                return
            lower, inclusive = page[-1].time, False

    @abstractmethod
    def _track_page(
        self,
        device_id: str,
        lower: datetime | None,
        lower_inclusive: bool,
        until: datetime | None,
        limit: int | None,
    ) -> list[Fix]:
        """Select up to `limit` fixes of one device in time order (all if None)."""

    @abstractmethod
    def latest_positions(self) -> list[Fix]:
        """Return each device's fix with the latest fix time, ordered by device id."""

    @abstractmethod
    def count_fixes(self, device_id: str | None = None) -> int:
        """Count the stored fixes of one device, or of all devices."""

    @abstractmethod
    def device_ids(self) -> list[str]:
        """Return the sorted ids of devices with a fix or a `touch_device` record."""

    @abstractmethod
    def devices(self) -> list[DeviceRecord]:
        """Return the devices recorded by `touch_device`, ordered by device id."""

    @abstractmethod
    def device_events(
        self,
        device_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DeviceEvent]:
        """Return device events ordered by time, `since` <= time < `until`."""

    @abstractmethod
    def fence_events(
        self,
        device_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[FenceEvent]:
        """Return fence events ordered by time, `since` <= time < `until`."""

    @abstractmethod
    def add_command(
        self,
        device_id: str,
        protocol: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        created_at: datetime,
    ) -> int:
        """Queue a downlink command and return its id; its status is ``queued``."""

    @abstractmethod
    def update_command(
        self,
        command_id: int,
        status: str,
        *,
        at: datetime,
        response: Mapping[str, Any] | None = None,
    ) -> None:
        """Move a command to `status` at time `at`, keeping the device's response.

        Raises CommandNotFoundError for an unknown id, ValueError for an unknown
        status and CommandTransitionError for a move that COMMAND_TRANSITIONS
        does not allow. A `response` of None keeps the stored one.
        """

    @abstractmethod
    def commands(
        self, device_id: str | None = None, status: str | None = None
    ) -> list[CommandRecord]:
        """Return commands ordered by id, optionally of one device or status."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection. Calling it again does nothing."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def to_utc(value: datetime, name: str = "time") -> datetime:
    """Convert an aware datetime to UTC; raise ValueError for a naive one."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be timezone-aware, got naive {value.isoformat()}"
        )
    return value.astimezone(UTC)


def check_command_move(command_id: int, current: str, requested: str) -> None:
    """Raise unless a command may move from `current` to `requested`."""
    check_command_status(requested)
    if requested not in COMMAND_TRANSITIONS[current]:
        raise CommandTransitionError(command_id, current, requested)


def check_command_status(status: str) -> None:
    if status not in COMMAND_STATUSES:
        known = ", ".join(sorted(COMMAND_STATUSES))
        raise ValueError(f"unknown command status {status!r}; expected one of {known}")


def dump_json(value: Mapping[str, Any] | None) -> str | None:
    """Serialise a mapping as compact JSON, keeping None as None.

    NaN and infinity are rejected because PostgreSQL jsonb rejects them too,
    and both backends must accept the same input.
    """
    if value is None:
        return None
    return json.dumps(dict(value), separators=(",", ":"), allow_nan=False)


def load_json(text: str | None) -> Mapping[str, Any]:
    return EMPTY if text is None else as_attributes(json.loads(text))


def as_attributes(value: Any) -> Mapping[str, Any]:
    """Return decoded JSON attributes, with EMPTY for null or an empty object."""
    if not value:
        return EMPTY
    if not isinstance(value, dict):
        raise TypeError(f"stored attributes must be a JSON object, got {value!r}")
    return value


Connection = TypeVar("Connection")


class ConnectionPool(Generic[Connection]):
    """A bounded pool of reader connections, opened on first use.

    A connection that `is_healthy` rejects when it comes back is closed and
    replaced later, so one broken connection does not poison the pool.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        close: Callable[[Connection], None],
        is_healthy: Callable[[Connection], bool],
        *,
        max_size: int,
        wait_s: float = 30.0,
    ) -> None:
        self._connect = connect
        self._close = close
        self._is_healthy = is_healthy
        self._wait_s = wait_s
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max_size)
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        if self._closed:
            raise RuntimeError("the store is closed")
        if not self._slots.acquire(timeout=self._wait_s):
            raise TimeoutError(
                f"no reader connection became free within {self._wait_s} s"
            )
        try:
            conn = self._take()
            try:
                yield conn
            finally:
                self._give_back(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._close(self._idle.get_nowait())
            except queue.Empty:
                return

    def _take(self) -> Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._connect()

    def _give_back(self, conn: Connection) -> None:
        if self._closed or not self._is_healthy(conn):
            self._close(conn)
        else:
            self._idle.put(conn)
