"""The `Store` interface that every track store backend implements.

A store keeps what the gateway acknowledged to a device: fixes, device events,
fence events, downlink commands and the devices seen, plus the vehicles and
which device was fitted to which vehicle when. Writes are idempotent on
each record's natural key, so a fix that a device resends after a lost ack is
stored once. Time windows are half-open: `since` is inclusive, `until` is
exclusive, so consecutive windows never count a fix twice.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, ClassVar, Generic, TypeVar

from shapely.geometry.base import BaseGeometry

from postloan.model import EMPTY, DeviceEvent, FenceEvent, Fix
from postloan.store.queries import (
    DEFAULT_MAX_SPEED_KMH,
    AreaRow,
    DailyMileage,
    Sighting,
    Stop,
    StopRule,
    check_area,
    collect_sightings,
    daily_mileage,
    find_stops,
    simplify_track,
)

# Downlink command lifecycle. A device may reply before the gateway has
# recorded the send. A reply that arrives after the timeout is still evidence
# that the command (a fuel cut-off, say) ran. So both moves are legal.
COMMAND_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "queued": frozenset({"sent", "answered", "timeout", "failed", "cancelled"}),
    "sent": frozenset({"sent", "answered", "timeout", "failed"}),
    "timeout": frozenset({"answered"}),
    "answered": frozenset(),
    "failed": frozenset(),
    # An operator withdrew it before it was sent.
    "cancelled": frozenset(),
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


@dataclass(frozen=True, slots=True)
class VehicleRecord:
    """A financed vehicle: its own id, VIN (ISO 3779) and licence plate."""

    vehicle_id: str
    vin: str | None = None
    plate: str | None = None


@dataclass(frozen=True, slots=True)
class BindingRecord:
    """A device fitted to a vehicle from `valid_from` until `valid_to` (exclusive).

    `valid_to` is None while the device is still fitted. `role` is free text
    such as ``wired`` or ``wireless`` for a vehicle with two trackers.
    """

    device_id: str
    vehicle_id: str
    valid_from: datetime
    valid_to: datetime | None = None
    role: str | None = None

    def covers(self, moment: datetime) -> bool:
        return self.valid_from <= moment and (
            self.valid_to is None or moment < self.valid_to
        )

    def overlaps(self, start: datetime, end: datetime | None) -> bool:
        """Report whether the binding shares any instant with [start, end)."""
        ends_after_start = self.valid_to is None or self.valid_to > start
        starts_before_end = end is None or self.valid_from < end
        return ends_after_start and starts_before_end


@dataclass(slots=True)
class MaintenanceReport:
    """Changes made by one maintenance run, and the partitions it skipped."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    clustered: list[str] = field(default_factory=list)
    rows_moved: int = 0
    rows_expired: int = 0
    skipped: list[str] = field(default_factory=list)


class VehicleNotFoundError(LookupError):
    """No vehicle has the given id."""

    def __init__(self, vehicle_id: str) -> None:
        super().__init__(
            f"vehicle {vehicle_id!r} not found; add it with upsert_vehicle"
        )
        self.vehicle_id = vehicle_id


class BindingConflictError(ValueError):
    """A new binding would overlap an existing binding of the same device."""

    def __init__(self, new: BindingRecord, existing: BindingRecord) -> None:
        until = "open" if existing.valid_to is None else existing.valid_to.isoformat()
        super().__init__(
            f"device {new.device_id!r} is bound to vehicle {existing.vehicle_id!r} "
            f"from {existing.valid_from.isoformat()} until {until}, which overlaps "
            f"the requested binding from {new.valid_from.isoformat()}; "
            "unbind it first"
        )
        self.new = new
        self.existing = existing


class BindingNotFoundError(LookupError):
    """The device has no open binding to close."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} has no open vehicle binding")
        self.device_id = device_id


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

    def maintain(self, now: datetime | None = None) -> MaintenanceReport:
        """Create, adopt and expire time partitions; a no-op where there are none.

        The gateway's writer calls this periodically; `now` defaults to the
        current time and is a parameter so tests can run it at any date.
        """
        return MaintenanceReport()

    def is_data_error(self, error: BaseException) -> bool:
        """Report whether `error` means the written records themselves are invalid.

        Retrying such a write cannot succeed, unlike a lost connection or a
        locked database, so the writer sets the offending records aside.
        """
        return isinstance(error, ValueError | TypeError | OverflowError)

    def is_unavailable(self, error: BaseException) -> bool:
        """Report whether `error` means the database cannot be reached now.

        Such a call may succeed later unchanged, so callers retry it. An
        embedded database is always reachable, hence False by default.
        """
        return False

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
        *,
        simplify_m: float | None = None,
    ) -> list[Fix]:
        """Return the device's fixes in fix-time order, `since` <= time < `until`.

        With `simplify_m`, the track is thinned by Douglas-Peucker with that
        tolerance in metres, keeping the first and last fix and the arrival
        and departure of every stop (see `postloan.store.queries`).
        """
        fixes = self._track_page(device_id, since, True, until, None)
        if simplify_m is None:
            return fixes
        return simplify_track(fixes, simplify_m)

    def iter_track(
        self,
        device_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        batch: int = 10_000,
    ) -> Iterator[Fix]:
        """Yield the device's fixes like `track`, reading `batch` rows at a time.

        This default runs one query per page, continuing after the last fix
        time yielded, so no connection stays checked out between pages and a
        fix written meanwhile shows up if its time is after that point.
        PostgreSQL overrides it with a server-side cursor, which reads one
        snapshot instead.
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

    def stops(
        self,
        device_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        rule: StopRule | None = None,
    ) -> list[Stop]:
        """Return the device's stops in the window; `StopRule` states the rule."""
        return find_stops(self.iter_track(device_id, since, until), rule)

    def daily_mileage(
        self,
        device_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        zone: str | tzinfo = "UTC",
        max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH,
    ) -> list[DailyMileage]:
        """Return the distance per day of `zone` over the window's valid fixes.

        See `postloan.store.queries.daily_mileage` for how jumps and legs
        across midnight are handled. Pass a window aligned to local midnight
        to get whole days.
        """
        return daily_mileage(
            self.iter_track(device_id, since, until),
            zone=zone,
            max_speed_kmh=max_speed_kmh,
        )

    def seen_inside(
        self,
        area: BaseGeometry,
        since: datetime,
        until: datetime,
        *,
        valid_only: bool = True,
    ) -> list[Sighting]:
        """Return the devices with a fix inside `area` in the window, by device id.

        `area` is a shapely Polygon or MultiPolygon in (longitude, latitude);
        a fix on its boundary counts as inside. Each sighting lists the
        vehicles the device was bound to at any time between its first and
        last fix inside. Raises ValueError for an invalid area.
        """
        check_area(area)
        since, until = to_utc(since, "since"), to_utc(until, "until")
        chunks = self._area_rows(since, until, area.bounds, valid_only)
        sightings = collect_sightings(chunks, area)
        if not sightings:
            return []
        by_device: dict[str, list[BindingRecord]] = {}
        for binding in self.bindings():
            by_device.setdefault(binding.device_id, []).append(binding)
        return [
            _with_vehicles(sighting, by_device.get(sighting.device_id, []))
            for sighting in sightings
        ]

    @abstractmethod
    def _area_rows(
        self,
        since: datetime,
        until: datetime,
        bounds: tuple[float, float, float, float],
        valid_only: bool,
    ) -> Iterator[Sequence[AreaRow]]:
        """Yield chunks of fixes in the window whose position is inside `bounds`.

        `bounds` is (min longitude, min latitude, max longitude, max latitude),
        inclusive.
        """

    @abstractmethod
    def latest_positions(self) -> list[Fix]:
        """Return each device's fix with the latest fix time, ordered by device id."""

    # Read queries in the backend's SQL dialect. The event queries contain a
    # ``{where}`` field for the filter that `_device_window` builds.
    _COUNT_FIXES_SQL: ClassVar[str]
    _COUNT_DEVICE_FIXES_SQL: ClassVar[str]
    _DEVICE_IDS_SQL: ClassVar[str]
    _DEVICES_SQL: ClassVar[str]
    _DEVICE_EVENTS_SQL: ClassVar[str]
    _FENCE_EVENTS_SQL: ClassVar[str]
    _UPSERT_VEHICLE_SQL: ClassVar[str]
    _VEHICLES_SQL: ClassVar[str]
    _BINDINGS_SQL: ClassVar[str]
    _COMMANDS_SQL: ClassVar[str]
    # Queries of `update_command`. The status query also locks the row where
    # the database needs that. The update takes the named parameters id,
    # status, at and response.
    _COMMAND_STATUS_SQL: ClassVar[str]
    _UPDATE_COMMAND_SQL: ClassVar[str]
    # The driver's query parameter placeholder, such as ``?`` or ``%s``.
    _PLACEHOLDER: ClassVar[str]
    # The driver's exception for a violated unique constraint.
    _UNIQUE_VIOLATION: ClassVar[type[Exception]]

    @abstractmethod
    def _query(self, query: str, params: Sequence[Any] = ()) -> Any:
        """Run a read query and return all rows."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """Open a write transaction and yield its connection."""

    @abstractmethod
    def _device_window(
        self, device_id: str | None, since: datetime | None, until: datetime | None
    ) -> tuple[str, list[Any]]:
        """Build the WHERE clause and parameters of an event query."""

    @abstractmethod
    def _time_to_db(self, value: datetime, name: str) -> Any:
        """Convert an aware datetime to the stored form (ValueError if naive)."""

    @abstractmethod
    def _time_from_db(self, value: Any) -> datetime:
        """Convert a stored time to an aware datetime in UTC."""

    @abstractmethod
    def _attributes_from_db(self, value: Any) -> Mapping[str, Any]:
        """Convert stored event attributes to a mapping."""

    @abstractmethod
    def _binding_from_db(self, row: Sequence[Any]) -> BindingRecord:
        """Convert a row of the bindings query to a BindingRecord."""

    @abstractmethod
    def _command_from_db(self, row: Sequence[Any]) -> CommandRecord:
        """Convert a row of the commands query to a CommandRecord."""

    def _equal_filter(self, **values: Any) -> tuple[str, list[Any]]:
        """Build a WHERE clause matching every column whose value is not None."""
        filters = {
            column: value for column, value in values.items() if value is not None
        }
        clauses = [f"{column} = {self._PLACEHOLDER}" for column in filters]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return where, list(filters.values())

    def count_fixes(self, device_id: str | None = None) -> int:
        """Count the stored fixes of one device, or of all devices."""
        if device_id is None:
            rows = self._query(self._COUNT_FIXES_SQL)
        else:
            rows = self._query(self._COUNT_DEVICE_FIXES_SQL, (device_id,))
        return int(rows[0][0])

    def device_ids(self) -> list[str]:
        """Return the sorted ids of devices with a fix or a `touch_device` record."""
        rows = self._query(self._DEVICE_IDS_SQL)
        return [device_id for (device_id,) in rows]

    def devices(self) -> list[DeviceRecord]:
        """Return the devices recorded by `touch_device`, ordered by device id."""
        rows = self._query(self._DEVICES_SQL)
        return [
            DeviceRecord(
                device_id, protocol, self._time_from_db(first), self._time_from_db(last)
            )
            for device_id, protocol, first, last in rows
        ]

    def device_events(
        self,
        device_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DeviceEvent]:
        """Return device events ordered by time, `since` <= time < `until`."""
        where, params = self._device_window(device_id, since, until)
        rows = self._query(self._DEVICE_EVENTS_SQL.format(where=where), params)
        return [
            DeviceEvent(
                device_id,
                self._time_from_db(time),
                kind,
                self._attributes_from_db(attributes),
            )
            for device_id, time, kind, attributes in rows
        ]

    def fence_events(
        self,
        device_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[FenceEvent]:
        """Return fence events ordered by time, `since` <= time < `until`."""
        where, params = self._device_window(device_id, since, until)
        rows = self._query(self._FENCE_EVENTS_SQL.format(where=where), params)
        return [
            FenceEvent(device_id, fence_id, event, self._time_from_db(time), lat, lon)
            for device_id, fence_id, event, time, lat, lon in rows
        ]

    def upsert_vehicle(
        self, vehicle_id: str, *, vin: str | None = None, plate: str | None = None
    ) -> None:
        """Add a vehicle or replace its VIN and plate.

        Raises ValueError for a VIN that is not 17 characters of ISO 3779
        (digits and capital letters other than I, O and Q).
        """
        check_vin(vin)
        try:
            with self._transaction() as conn:
                conn.execute(self._UPSERT_VEHICLE_SQL, (vehicle_id, vin, plate))
        except self._UNIQUE_VIOLATION as exc:
            raise ValueError(
                f"VIN {vin!r} already belongs to another vehicle than {vehicle_id!r}"
            ) from exc

    def vehicles(self) -> list[VehicleRecord]:
        """Return every vehicle, ordered by vehicle id."""
        rows = self._query(self._VEHICLES_SQL)
        return [VehicleRecord(*row) for row in rows]

    def bind_device(
        self,
        device_id: str,
        vehicle_id: str,
        *,
        valid_from: datetime,
        valid_to: datetime | None = None,
        role: str | None = None,
    ) -> None:
        """Record that the device is fitted to the vehicle from `valid_from`.

        Raises VehicleNotFoundError for an unknown vehicle and
        BindingConflictError when the device is bound elsewhere at any
        instant of [valid_from, valid_to). A vehicle may carry any number of
        devices at once.
        """
        new = BindingRecord(
            device_id,
            vehicle_id,
            to_utc(valid_from, "valid_from"),
            None if valid_to is None else to_utc(valid_to, "valid_to"),
            role,
        )
        self._insert_binding(new)

    @abstractmethod
    def _insert_binding(self, new: BindingRecord) -> None:
        """Store `new` after `check_binding` accepts it, in one transaction.

        Raises VehicleNotFoundError when the vehicle is unknown.
        """

    @abstractmethod
    def unbind_device(self, device_id: str, *, at: datetime) -> None:
        """Close the device's open binding at `at` (exclusive).

        Raises BindingNotFoundError when the device has no open binding, and
        ValueError when `at` is not after the binding's start.
        """

    def bindings(
        self, device_id: str | None = None, vehicle_id: str | None = None
    ) -> list[BindingRecord]:
        """Return bindings ordered by device id and start, optionally filtered."""
        where, params = self._equal_filter(device_id=device_id, vehicle_id=vehicle_id)
        rows = self._query(self._BINDINGS_SQL.format(where=where), params)
        return [self._binding_from_db(row) for row in rows]

    def vehicle_at(self, device_id: str, at: datetime) -> str | None:
        """Return the vehicle the device was fitted to at `at`, if any."""
        moment = to_utc(at, "at")
        for binding in self.bindings(device_id=device_id):
            if binding.covers(moment):
                return binding.vehicle_id
        return None

    def devices_at(self, vehicle_id: str, at: datetime) -> list[str]:
        """Return the devices fitted to the vehicle at `at`, sorted."""
        moment = to_utc(at, "at")
        return sorted(
            binding.device_id
            for binding in self.bindings(vehicle_id=vehicle_id)
            if binding.covers(moment)
        )

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
        check_command_status(status)
        params = {
            "id": command_id,
            "status": status,
            "at": self._time_to_db(at, "at"),
            "response": dump_json(response),
        }
        with self._transaction() as conn:
            row = conn.execute(self._COMMAND_STATUS_SQL, (command_id,)).fetchone()
            if row is None:
                raise CommandNotFoundError(command_id)
            check_command_move(command_id, row[0], status)
            conn.execute(self._UPDATE_COMMAND_SQL, params)

    def commands(
        self, device_id: str | None = None, status: str | None = None
    ) -> list[CommandRecord]:
        """Return commands ordered by id, optionally of one device or status."""
        where, params = self._equal_filter(device_id=device_id, status=status)
        rows = self._query(self._COMMANDS_SQL.format(where=where), params)
        return [self._command_from_db(row) for row in rows]

    @abstractmethod
    def close(self) -> None:
        """Close every connection. Calling it again does nothing."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _with_vehicles(sighting: Sighting, bindings: Sequence[BindingRecord]) -> Sighting:
    vehicles = sorted(
        {
            binding.vehicle_id
            for binding in bindings
            if binding.overlaps(sighting.first_seen, sighting.last_seen + _TICK)
        }
    )
    return replace(sighting, vehicle_ids=tuple(vehicles))


_TICK = timedelta(microseconds=1)
# ISO 3779: 17 characters, digits and capital letters except I, O and Q,
# which are left out so they are not read as 1 and 0.
_VIN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")


def check_vin(vin: str | None) -> None:
    """Raise ValueError unless `vin` is None or has the ISO 3779 form."""
    if vin is not None and not _VIN.fullmatch(vin):
        raise ValueError(
            f"invalid VIN {vin!r}: expected 17 digits or capital letters "
            "other than I, O and Q (ISO 3779)"
        )


def check_binding(new: BindingRecord, existing: Sequence[BindingRecord]) -> None:
    """Raise BindingConflictError if `new` overlaps one of the device's bindings."""
    if new.valid_to is not None and new.valid_to <= new.valid_from:
        raise ValueError(
            f"binding of device {new.device_id!r} must end after it starts "
            f"({new.valid_from.isoformat()})"
        )
    for binding in existing:
        if binding.overlaps(new.valid_from, new.valid_to):
            raise BindingConflictError(new, binding)


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


class JsonAttributes(Mapping[str, Any]):
    """Attributes held as the JSON object text the database returned.

    The text is parsed on first access, so reading a track for an export,
    which never looks at attributes, skips the parse (about 2 us per fix).
    """

    __slots__ = ("_parsed", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._parsed: Mapping[str, Any] | None = None

    def _mapping(self) -> Mapping[str, Any]:
        if self._parsed is None:
            self._parsed = load_json(self._text)
        return self._parsed

    def __getitem__(self, key: str) -> Any:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __repr__(self) -> str:
        return repr(dict(self._mapping()))


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
        self.discard_idle()

    def discard_idle(self) -> None:
        """Close every idle connection, as after a server restart broke them all."""
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
