"""The embedded track store on SQLite (the standard library's sqlite3).

The database runs in WAL mode so that reader threads never block the writer.
``synchronous=FULL`` is the default because SQLite then syncs the WAL on every
commit, so a fix the gateway acknowledged survives a power cut as well as a
process crash (https://www.sqlite.org/pragma.html#pragma_synchronous).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.store.base import (
    BindingNotFoundError,
    BindingRecord,
    CommandRecord,
    ConnectionPool,
    Store,
    VehicleNotFoundError,
    check_binding,
    dump_json,
    load_json,
    to_utc,
)
from postloan.store.migrations import SQLITE_MIGRATIONS, pending
from postloan.store.queries import AreaRow

logger = logging.getLogger(__name__)

SYNCHRONOUS_LEVELS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
MEMORY = ":memory:"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_FIX_COLUMNS = (
    "device_id, time_us, latitude, longitude, speed_kmh, course, altitude_m, "
    "valid, satellites, attributes"
)
_INSERT_FIX = (
    f"INSERT INTO positions ({_FIX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
_UPSERT_HEAD = (
    "INSERT INTO track_heads (device_id, time_us) VALUES (?, ?) "
    "ON CONFLICT (device_id) DO UPDATE SET time_us = excluded.time_us "
    "WHERE excluded.time_us > track_heads.time_us"
)
_INSERT_DEVICE_EVENT = (
    "INSERT INTO device_events (device_id, time_us, kind, attributes) "
    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_INSERT_FENCE_EVENT = (
    "INSERT INTO fence_events "
    "(device_id, fence_id, event, time_us, latitude, longitude) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_UPSERT_DEVICE = """
    INSERT INTO devices (device_id, protocol, first_seen_us, last_seen_us)
    VALUES (?, ?, ?, ?)
    ON CONFLICT (device_id) DO UPDATE SET
        protocol = CASE WHEN excluded.last_seen_us >= devices.last_seen_us
                        THEN excluded.protocol ELSE devices.protocol END,
        first_seen_us = min(devices.first_seen_us, excluded.first_seen_us),
        last_seen_us = max(devices.last_seen_us, excluded.last_seen_us)
"""
_COMMAND_COLUMNS = (
    "id, device_id, protocol, kind, payload, status, created_us, updated_us, "
    "sent_us, response"
)
_BINDING_COLUMNS = "device_id, vehicle_id, valid_from_us, valid_to_us, role"
_AREA_CHUNK_ROWS = 50_000
_UPDATE_COMMAND = """
    UPDATE commands SET
        status = :status,
        updated_us = :at,
        sent_us = CASE WHEN :status = 'sent' THEN :at ELSE sent_us END,
        response = coalesce(:response, response)
    WHERE id = :id
"""


def to_us(value: datetime, name: str = "time") -> int:
    """Convert an aware datetime to integer microseconds since the Unix epoch."""
    return (to_utc(value, name) - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class SQLiteStore(Store):
    """A track store in one SQLite file, or in memory for ``":memory:"``.

    Writes go through one connection under a lock. File databases give each
    reader thread a pooled connection of its own, so reads run alongside a
    write. An in-memory database exists only on its one connection, so there
    reads share the write lock.
    """

    # SQL of the queries that the `Store` base class runs on this backend.
    _COUNT_FIXES_SQL = "SELECT count(*) FROM positions"
    _COUNT_DEVICE_FIXES_SQL = "SELECT count(*) FROM positions WHERE device_id = ?"
    _DEVICE_IDS_SQL = (
        "SELECT device_id FROM track_heads UNION SELECT device_id FROM devices "
        "ORDER BY 1"
    )
    _DEVICES_SQL = (
        "SELECT device_id, protocol, first_seen_us, last_seen_us FROM devices "
        "ORDER BY device_id"
    )
    _DEVICE_EVENTS_SQL = (
        "SELECT device_id, time_us, kind, attributes FROM device_events"
        "{where} ORDER BY time_us, device_id, kind"
    )
    _FENCE_EVENTS_SQL = (
        "SELECT device_id, fence_id, event, time_us, latitude, longitude "
        "FROM fence_events{where} ORDER BY time_us, device_id, fence_id, event"
    )
    _UPSERT_VEHICLE_SQL = (
        "INSERT INTO vehicles (vehicle_id, vin, plate) VALUES (?, ?, ?) "
        "ON CONFLICT (vehicle_id) DO UPDATE "
        "SET vin = excluded.vin, plate = excluded.plate"
    )
    _VEHICLES_SQL = "SELECT vehicle_id, vin, plate FROM vehicles ORDER BY vehicle_id"
    _BINDINGS_SQL = (
        f"SELECT {_BINDING_COLUMNS} FROM device_bindings{{where}} "
        "ORDER BY device_id, valid_from_us"
    )
    _COMMANDS_SQL = f"SELECT {_COMMAND_COLUMNS} FROM commands{{where}} ORDER BY id"
    _COMMAND_STATUS_SQL = "SELECT status FROM commands WHERE id = ?"
    _UPDATE_COMMAND_SQL = _UPDATE_COMMAND
    _PLACEHOLDER = "?"
    _UNIQUE_VIOLATION = sqlite3.IntegrityError

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        readers: int = 4,
        busy_timeout_s: float = 10.0,
    ) -> None:
        level = synchronous.upper()
        if level not in SYNCHRONOUS_LEVELS:
            known = ", ".join(sorted(SYNCHRONOUS_LEVELS))
            raise ValueError(f"invalid synchronous level {synchronous!r}; use {known}")
        self.path = os.fspath(path)
        self.synchronous = level
        self._busy_timeout_s = busy_timeout_s
        self._closed = False
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._readers: ConnectionPool[sqlite3.Connection] | None = None
        if self.path != MEMORY:
            self._enable_wal()
            self._readers = ConnectionPool(
                self._connect_reader,
                sqlite3.Connection.close,
                lambda conn: not conn.in_transaction,
                max_size=readers,
            )

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None turns off the module's implicit transactions,
        # so `_transaction` controls BEGIN and COMMIT itself.
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _enable_wal(self) -> None:
        (mode,) = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            # Some file systems (network mounts) cannot hold the WAL index.
            logger.warning(
                "SQLite kept journal mode %s for %s; readers will block writes",
                mode,
                self.path,
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock at once, so a concurrent writer
        # in another process waits (busy timeout) instead of failing mid-way.
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) can leave the
                # transaction open, and the next BEGIN would then fail.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._readers is None:
            with self._write_lock:
                yield self._writer
        else:
            with self._readers.connection() as conn:
                yield conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._read() as conn:
            return conn.execute(sql, params).fetchall()

    def migrate(self) -> None:
        with self._write_lock:
            self._writer.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_us INTEGER NOT NULL)"
            )
        while self._apply_next_migration():
            pass

    def _apply_next_migration(self) -> bool:
        with self._transaction() as conn:
            applied = {
                v for (v,) in conn.execute("SELECT version FROM schema_migrations")
            }
            todo = pending(SQLITE_MIGRATIONS, applied)
            if not todo:
                return False
            migration = todo[0]
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_us) "
                "VALUES (?, ?, ?)",
                (migration.version, migration.name, to_us(datetime.now(UTC))),
            )
        logger.info(
            "applied schema migration %d (%s)", migration.version, migration.name
        )
        return True

    def is_data_error(self, error: BaseException) -> bool:
        # OperationalError (locked, disk I/O, disk full) is worth a retry.
        return super().is_data_error(error) or isinstance(
            error, sqlite3.DataError | sqlite3.IntegrityError
        )

    def write_fixes(self, fixes: Sequence[Fix]) -> int:
        if not fixes:
            return 0
        rows = [_fix_row(fix) for fix in fixes]
        heads: dict[str, int] = {}
        for device_id, time_us, *_ in rows:
            heads[device_id] = max(time_us, heads.get(device_id, time_us))
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(_INSERT_FIX, rows)
            stored = conn.total_changes - before
            conn.executemany(_UPSERT_HEAD, sorted(heads.items()))
        return stored

    def write_device_events(self, events: Sequence[DeviceEvent]) -> int:
        rows = [
            (e.device_id, to_us(e.time), e.kind, dump_json(e.attributes or None))
            for e in events
        ]
        return self._insert_many(_INSERT_DEVICE_EVENT, rows)

    def write_fence_events(self, events: Sequence[FenceEvent]) -> int:
        rows = [
            (
                e.device_id,
                e.fence_id,
                e.event,
                to_us(e.time),
                float(e.latitude),
                float(e.longitude),
            )
            for e in events
        ]
        return self._insert_many(_INSERT_FENCE_EVENT, rows)

    def _insert_many(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(sql, rows)
            return conn.total_changes - before

    def touch_device(self, device_id: str, protocol: str, *, seen_at: datetime) -> None:
        seen_us = to_us(seen_at, "seen_at")
        with self._transaction() as conn:
            conn.execute(_UPSERT_DEVICE, (device_id, protocol, seen_us, seen_us))

    def _track_page(
        self,
        device_id: str,
        lower: datetime | None,
        lower_inclusive: bool,
        until: datetime | None,
        limit: int | None,
    ) -> list[Fix]:
        clauses, params = _window("time_us", lower, until, lower_inclusive)
        where = _where(["device_id = ?", *clauses])
        sql = f"SELECT {_FIX_COLUMNS} FROM positions{where} ORDER BY time_us"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_fix_from_row(row) for row in self._query(sql, [device_id, *params])]

    def _area_rows(
        self,
        since: datetime,
        until: datetime,
        bounds: tuple[float, float, float, float],
        valid_only: bool,
    ) -> Iterator[Sequence[AreaRow]]:
        min_lon, min_lat, max_lon, max_lat = bounds
        sql = (
            "SELECT device_id, time_us, longitude, latitude FROM positions "
            "WHERE time_us >= ? AND time_us < ? "
            "AND longitude BETWEEN ? AND ? AND latitude BETWEEN ? AND ?"
        )
        if valid_only:
            sql += " AND valid"
        params = (to_us(since), to_us(until), min_lon, max_lon, min_lat, max_lat)
        with self._read() as conn:
            cursor = conn.execute(sql, params)
            while rows := cursor.fetchmany(_AREA_CHUNK_ROWS):
                yield [
                    (device_id, from_us(time_us), lon, lat)
                    for device_id, time_us, lon, lat in rows
                ]

    def latest_positions(self) -> list[Fix]:
        columns = ", ".join(f"p.{name.strip()}" for name in _FIX_COLUMNS.split(","))
        rows = self._query(
            f"SELECT {columns} FROM track_heads h JOIN positions p "
            "ON p.device_id = h.device_id AND p.time_us = h.time_us "
            "ORDER BY h.device_id"
        )
        return [_fix_from_row(row) for row in rows]

    def _device_window(
        self, device_id: str | None, since: datetime | None, until: datetime | None
    ) -> tuple[str, list[Any]]:
        return _device_window(device_id, since, until)

    def _time_to_db(self, value: datetime, name: str) -> Any:
        return to_us(value, name)

    def _time_from_db(self, value: Any) -> datetime:
        return from_us(value)

    def _attributes_from_db(self, value: Any) -> Mapping[str, Any]:
        return load_json(value)

    def _binding_from_db(self, row: Sequence[Any]) -> BindingRecord:
        return _binding_from_row(row)

    def _command_from_db(self, row: Sequence[Any]) -> CommandRecord:
        return _command_from_row(row)

    def _insert_binding(self, new: BindingRecord) -> None:
        device_id, vehicle_id, role = new.device_id, new.vehicle_id, new.role
        # BEGIN IMMEDIATE holds the database's write lock, so the overlap
        # check and the insert cannot interleave with another writer.
        with self._transaction() as conn:
            vehicle = conn.execute(
                "SELECT 1 FROM vehicles WHERE vehicle_id = ?", (vehicle_id,)
            ).fetchone()
            if vehicle is None:
                raise VehicleNotFoundError(vehicle_id)
            rows = conn.execute(
                f"SELECT {_BINDING_COLUMNS} FROM device_bindings WHERE device_id = ?",
                (device_id,),
            ).fetchall()
            check_binding(new, [_binding_from_row(row) for row in rows])
            conn.execute(
                f"INSERT INTO device_bindings ({_BINDING_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    device_id,
                    vehicle_id,
                    to_us(new.valid_from),
                    None if new.valid_to is None else to_us(new.valid_to),
                    role,
                ),
            )

    def unbind_device(self, device_id: str, *, at: datetime) -> None:
        end_us = to_us(at, "at")
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT valid_from_us FROM device_bindings "
                "WHERE device_id = ? AND valid_to_us IS NULL",
                (device_id,),
            ).fetchone()
            if row is None:
                raise BindingNotFoundError(device_id)
            if end_us <= row[0]:
                raise ValueError(
                    f"device {device_id!r} was bound at {from_us(row[0]).isoformat()}, "
                    f"so it cannot be unbound at {from_us(end_us).isoformat()}"
                )
            conn.execute(
                "UPDATE device_bindings SET valid_to_us = ? "
                "WHERE device_id = ? AND valid_from_us = ?",
                (end_us, device_id, row[0]),
            )

    def add_command(
        self,
        device_id: str,
        protocol: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        created_at: datetime,
    ) -> int:
        created_us = to_us(created_at, "created_at")
        payload_json = dump_json(payload)
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO commands (device_id, protocol, kind, payload, status, "
                "created_us, updated_us) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                (device_id, protocol, kind, payload_json, created_us, created_us),
            )
        assert cursor.lastrowid is not None  # set by every successful INSERT
        return cursor.lastrowid

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._readers is not None:
                self._readers.close()
            self._writer.close()


def _fix_row(fix: Fix) -> tuple[Any, ...]:
    return (
        fix.device_id,
        to_us(fix.time, f"fix time of device {fix.device_id}"),
        float(fix.latitude),
        float(fix.longitude),
        float(fix.speed_kmh),
        None if fix.course is None else float(fix.course),
        None if fix.altitude_m is None else float(fix.altitude_m),
        bool(fix.valid),
        fix.satellites,
        dump_json(fix.attributes or None),
    )


def _fix_from_row(row: Sequence[Any]) -> Fix:
    device_id, time_us, lat, lon, speed, course, altitude, valid, sats, attrs = row
    return Fix(
        device_id=device_id,
        time=from_us(time_us),
        latitude=lat,
        longitude=lon,
        speed_kmh=speed,
        course=course,
        altitude_m=altitude,
        valid=bool(valid),
        satellites=sats,
        attributes=load_json(attrs),
    )


def _binding_from_row(row: Sequence[Any]) -> BindingRecord:
    device_id, vehicle_id, valid_from_us, valid_to_us, role = row
    return BindingRecord(
        device_id,
        vehicle_id,
        from_us(valid_from_us),
        None if valid_to_us is None else from_us(valid_to_us),
        role,
    )


def _command_from_row(row: Sequence[Any]) -> CommandRecord:
    command_id, device_id, protocol, kind, payload, status = row[:6]
    created, updated, sent, resp = row[6:]
    return CommandRecord(
        command_id=command_id,
        device_id=device_id,
        protocol=protocol,
        kind=kind,
        payload=json.loads(payload),
        status=status,
        created_at=from_us(created),
        updated_at=from_us(updated),
        sent_at=None if sent is None else from_us(sent),
        response=None if resp is None else json.loads(resp),
    )


def _window(
    column: str,
    since: datetime | None,
    until: datetime | None,
    since_inclusive: bool = True,
) -> tuple[list[str], list[Any]]:
    """Build the conditions of a half-open time window on `column`."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append(f"{column} {'>=' if since_inclusive else '>'} ?")
        params.append(to_us(since, "since"))
    if until is not None:
        clauses.append(f"{column} < ?")
        params.append(to_us(until, "until"))
    return clauses, params


def _device_window(
    device_id: str | None, since: datetime | None, until: datetime | None
) -> tuple[str, list[Any]]:
    clauses, params = _window("time_us", since, until)
    if device_id is not None:
        clauses.insert(0, "device_id = ?")
        params.insert(0, device_id)
    return _where(clauses), params


def _where(clauses: list[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""
