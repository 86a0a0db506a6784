"""The track store on PostgreSQL (psycopg 3).

Fix batches go to the server with binary COPY into a temporary staging table
and then move into ``positions`` with one ``INSERT ... SELECT ... ON CONFLICT
DO NOTHING``. COPY is the fastest bulk path PostgreSQL has, and the staged
``SELECT DISTINCT ON`` removes duplicates inside a batch while ``ON CONFLICT``
skips fixes stored by earlier batches.

Every connection runs with ``TimeZone = UTC`` and ``search_path`` set to the
store's schema alone, so tests and tenants can each use their own schema.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.store.base import (
    CommandNotFoundError,
    CommandRecord,
    ConnectionPool,
    DeviceRecord,
    Store,
    as_attributes,
    check_command_move,
    check_command_status,
    dump_json,
    to_utc,
)
from postloan.store.migrations import POSTGRES_MIGRATIONS, pending

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[TupleRow]

_FIX_COLUMNS = (
    "device_id, time, latitude, longitude, speed_kmh, course, altitude_m, "
    "valid, satellites, attributes"
)
# `seq` is the fix's position in its batch, so that the first copy of a
# duplicated fix wins, as it does on SQLite. Attributes stay text here and
# are cast to jsonb on the way into positions.
_CREATE_STAGE = """
    CREATE TEMPORARY TABLE fix_stage (
        seq integer NOT NULL,
        device_id text NOT NULL,
        time timestamptz NOT NULL,
        latitude double precision NOT NULL,
        longitude double precision NOT NULL,
        speed_kmh double precision NOT NULL,
        course double precision,
        altitude_m double precision,
        valid boolean NOT NULL,
        satellites integer,
        attributes text
    ) ON COMMIT DELETE ROWS
"""
_STAGE_TYPES = (
    "int4",
    "text",
    "timestamptz",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "bool",
    "int4",
    "text",
)
_COPY_STAGE = f"COPY fix_stage (seq, {_FIX_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_INSERT_FROM_STAGE = f"""
    INSERT INTO positions ({_FIX_COLUMNS})
    SELECT DISTINCT ON (device_id, time)
        device_id, time, latitude, longitude, speed_kmh, course, altitude_m,
        valid, satellites, attributes::jsonb
    FROM fix_stage
    ORDER BY device_id, time, seq
    ON CONFLICT DO NOTHING
"""
# Ordered by device id so that two writers (two gateway processes) lock
# track_heads rows in the same order, which avoids deadlocks between them.
_UPSERT_HEADS_FROM_STAGE = """
    INSERT INTO track_heads (device_id, time)
    SELECT device_id, max(time) FROM fix_stage GROUP BY device_id ORDER BY device_id
    ON CONFLICT (device_id) DO UPDATE SET time = excluded.time
    WHERE excluded.time > track_heads.time
"""
_INSERT_DEVICE_EVENT = """
    INSERT INTO device_events (device_id, time, kind, attributes)
    VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING
"""
_INSERT_FENCE_EVENT = """
    INSERT INTO fence_events (device_id, fence_id, event, time, latitude, longitude)
    VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
_UPSERT_DEVICE = """
    INSERT INTO devices (device_id, protocol, first_seen, last_seen)
    VALUES (%(device_id)s, %(protocol)s, %(seen)s, %(seen)s)
    ON CONFLICT (device_id) DO UPDATE SET
        protocol = CASE WHEN excluded.last_seen >= devices.last_seen
                        THEN excluded.protocol ELSE devices.protocol END,
        first_seen = least(devices.first_seen, excluded.first_seen),
        last_seen = greatest(devices.last_seen, excluded.last_seen)
"""
_COMMAND_COLUMNS = (
    "id, device_id, protocol, kind, payload, status, created_at, updated_at, "
    "sent_at, response"
)
_UPDATE_COMMAND = """
    UPDATE commands SET
        status = %(status)s::text,
        updated_at = %(at)s,
        sent_at = CASE WHEN %(status)s::text = 'sent' THEN %(at)s ELSE sent_at END,
        response = coalesce(%(response)s::jsonb, response)
    WHERE id = %(id)s
"""
_CREATE_MIGRATIONS_TABLE = """
    CREATE TABLE schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""


class PostgresStore(Store):
    """A track store in one PostgreSQL schema.

    Writes share one connection under a lock. Reads take a connection from a
    small pool, so a long export does not hold up the gateway's writes. When
    the writer connection breaks (a server restart, say), the write that hit
    the failure raises and the next write opens a new connection.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        readers: int = 4,
        connect_timeout_s: int = 10,
    ) -> None:
        self.schema = schema
        self._dsn = dsn
        self._connect_timeout_s = connect_timeout_s
        self._closed = False
        self._write_lock = threading.Lock()
        self._writer = self._connect_writer()
        self._readers: ConnectionPool[Connection] = ConnectionPool(
            self._connect, Connection.close, _is_idle, max_size=readers
        )
        try:
            self.timescaledb: bool = self._detect_timescaledb()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> Connection:
        conn = psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=self._connect_timeout_s
        )
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema))
        )
        return conn

    def _connect_writer(self) -> Connection:
        conn = self._connect()
        conn.execute(_CREATE_STAGE)
        # An acknowledged fix must survive a server crash, so a server-wide
        # `synchronous_commit = off` must not apply to this connection.
        if conn.execute("SHOW synchronous_commit").fetchone() == ("off",):
            conn.execute("SET synchronous_commit TO on")
        return conn

    def _detect_timescaledb(self) -> bool:
        """Report whether the server offers TimescaleDB, installed or not."""
        rows = self._query(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions "
            "WHERE name = 'timescaledb')"
        )
        return bool(rows[0][0])

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._write_lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            if self._writer.broken or self._writer.closed:
                self._writer.close()
                self._writer = self._connect_writer()
            with self._writer.transaction():
                yield self._writer

    def _query(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        with self._readers.connection() as conn:
            return conn.execute(query, params).fetchall()

    def migrate(self) -> None:
        lock_name = f"postloan.migrate.{self.schema}"
        # A session-level advisory lock serialises migrate() across processes
        # and, unlike a transaction lock, spans the per-migration transactions.
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock_name,))
        try:
            self._create_schema()
            while self._apply_next_migration():
                pass
        finally:
            with self._write_lock:
                if not self._writer.broken:
                    self._writer.execute(
                        "SELECT pg_advisory_unlock(hashtext(%s))", (lock_name,)
                    )
        # NOTE: when self.timescaledb is true, this is where positions becomes
        # a hypertable on `time` with compression; until then it is a plain table.

    def _create_schema(self) -> None:
        # Existence is checked first because CREATE ... IF NOT EXISTS still
        # needs the CREATE privilege, which a runtime role may lack.
        with self._transaction() as conn:
            has_schema = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s",
                (self.schema,),
            ).fetchone()
            if has_schema is None:
                conn.execute(
                    sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema))
                )
            has_table = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_tables "
                "WHERE schemaname = %s AND tablename = 'schema_migrations'",
                (self.schema,),
            ).fetchone()
            if has_table is None:
                conn.execute(_CREATE_MIGRATIONS_TABLE)

    def _apply_next_migration(self) -> bool:
        with self._transaction() as conn:
            applied = {
                v for (v,) in conn.execute("SELECT version FROM schema_migrations")
            }
            todo = pending(POSTGRES_MIGRATIONS, applied)
            if not todo:
                return False
            migration = todo[0]
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        logger.info(
            "applied schema migration %d (%s) to schema %s",
            migration.version,
            migration.name,
            self.schema,
        )
        return True

    def write_fixes(self, fixes: Sequence[Fix]) -> int:
        if not fixes:
            return 0
        rows = [_fix_row(seq, fix) for seq, fix in enumerate(fixes)]
        with self._transaction() as conn, conn.cursor() as cursor:
            with cursor.copy(_COPY_STAGE) as copy:
                copy.set_types(list(_STAGE_TYPES))
                for row in rows:
                    copy.write_row(row)
            cursor.execute(_INSERT_FROM_STAGE)
            stored = cursor.rowcount
            cursor.execute(_UPSERT_HEADS_FROM_STAGE)
        return stored

    def write_device_events(self, events: Sequence[DeviceEvent]) -> int:
        rows = [
            (e.device_id, to_utc(e.time), e.kind, dump_json(e.attributes or None))
            for e in events
        ]
        return self._insert_many(_INSERT_DEVICE_EVENT, rows)

    def write_fence_events(self, events: Sequence[FenceEvent]) -> int:
        rows = [
            (
                e.device_id,
                e.fence_id,
                e.event,
                to_utc(e.time),
                float(e.latitude),
                float(e.longitude),
            )
            for e in events
        ]
        return self._insert_many(_INSERT_FENCE_EVENT, rows)

    def _insert_many(self, query: str, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        with self._transaction() as conn, conn.cursor() as cursor:
            # psycopg 3 sums the row counts of an executemany.
            cursor.executemany(query, rows)
            return cursor.rowcount

    def touch_device(self, device_id: str, protocol: str, *, seen_at: datetime) -> None:
        params = {
            "device_id": device_id,
            "protocol": protocol,
            "seen": to_utc(seen_at, "seen_at"),
        }
        with self._transaction() as conn:
            conn.execute(_UPSERT_DEVICE, params)

    def _track_page(
        self,
        device_id: str,
        lower: datetime | None,
        lower_inclusive: bool,
        until: datetime | None,
        limit: int | None,
    ) -> list[Fix]:
        clauses, params = _window(lower, until, lower_inclusive)
        where = _where(["device_id = %s", *clauses])
        query = f"SELECT {_FIX_COLUMNS} FROM positions{where} ORDER BY time"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [_fix_from_row(row) for row in self._query(query, [device_id, *params])]

    def latest_positions(self) -> list[Fix]:
        columns = ", ".join(f"p.{name.strip()}" for name in _FIX_COLUMNS.split(","))
        rows = self._query(
            f"SELECT {columns} FROM track_heads h JOIN positions p "
            "ON p.device_id = h.device_id AND p.time = h.time "
            "ORDER BY h.device_id"
        )
        return [_fix_from_row(row) for row in rows]

    def count_fixes(self, device_id: str | None = None) -> int:
        if device_id is None:
            rows = self._query("SELECT count(*) FROM positions")
        else:
            rows = self._query(
                "SELECT count(*) FROM positions WHERE device_id = %s", (device_id,)
            )
        return int(rows[0][0])

    def device_ids(self) -> list[str]:
        rows = self._query(
            "SELECT device_id FROM track_heads UNION SELECT device_id FROM devices "
            "ORDER BY 1"
        )
        return [device_id for (device_id,) in rows]

    def devices(self) -> list[DeviceRecord]:
        rows = self._query(
            "SELECT device_id, protocol, first_seen, last_seen FROM devices "
            "ORDER BY device_id"
        )
        return [
            DeviceRecord(device_id, protocol, _utc(first), _utc(last))
            for device_id, protocol, first, last in rows
        ]

    def device_events(
        self,
        device_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DeviceEvent]:
        where, params = _device_window(device_id, since, until)
        rows = self._query(
            "SELECT device_id, time, kind, attributes FROM device_events"
            f"{where} ORDER BY time, device_id, kind",
            params,
        )
        return [
            DeviceEvent(device_id, _utc(time), kind, as_attributes(attributes))
            for device_id, time, kind, attributes in rows
        ]

    def fence_events(
        self,
        device_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[FenceEvent]:
        where, params = _device_window(device_id, since, until)
        rows = self._query(
            "SELECT device_id, fence_id, event, time, latitude, longitude "
            f"FROM fence_events{where} ORDER BY time, device_id, fence_id, event",
            params,
        )
        return [
            FenceEvent(device_id, fence_id, event, _utc(time), lat, lon)
            for device_id, fence_id, event, time, lat, lon in rows
        ]

    def add_command(
        self,
        device_id: str,
        protocol: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        created_at: datetime,
    ) -> int:
        created = to_utc(created_at, "created_at")
        with self._transaction() as conn:
            row = conn.execute(
                "INSERT INTO commands (device_id, protocol, kind, payload, status, "
                "created_at, updated_at) "
                "VALUES (%s, %s, %s, %s::jsonb, 'queued', %s, %s) RETURNING id",
                (device_id, protocol, kind, dump_json(payload), created, created),
            ).fetchone()
        assert row is not None  # RETURNING yields the inserted row
        return int(row[0])

    def update_command(
        self,
        command_id: int,
        status: str,
        *,
        at: datetime,
        response: Mapping[str, Any] | None = None,
    ) -> None:
        check_command_status(status)
        params = {
            "id": command_id,
            "status": status,
            "at": to_utc(at, "at"),
            "response": dump_json(response),
        }
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status FROM commands WHERE id = %s FOR UPDATE", (command_id,)
            ).fetchone()
            if row is None:
                raise CommandNotFoundError(command_id)
            check_command_move(command_id, row[0], status)
            conn.execute(_UPDATE_COMMAND, params)

    def commands(
        self, device_id: str | None = None, status: str | None = None
    ) -> list[CommandRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        if device_id is not None:
            clauses.append("device_id = %s")
            params.append(device_id)
        if status is not None:
            clauses.append("status = %s")
            params.append(status)
        rows = self._query(
            f"SELECT {_COMMAND_COLUMNS} FROM commands{_where(clauses)} ORDER BY id",
            params,
        )
        return [_command_from_row(row) for row in rows]

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._readers.close()
            self._writer.close()


def _is_idle(conn: Connection) -> bool:
    return (
        not conn.closed
        and not conn.broken
        and conn.info.transaction_status == TransactionStatus.IDLE
    )


def _utc(value: datetime) -> datetime:
    """Normalise a timestamptz from the server to datetime.timezone.utc."""
    return value.astimezone(UTC)


# NOTE: jsonb rejects the NUL character (\u0000) in strings, which SQLite
# stores, so here one such attribute value fails its whole batch.
def _fix_row(seq: int, fix: Fix) -> tuple[Any, ...]:
    return (
        seq,
        fix.device_id,
        to_utc(fix.time, f"fix time of device {fix.device_id}"),
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
    device_id, time, lat, lon, speed, course, altitude, valid, sats, attrs = row
    return Fix(
        device_id=device_id,
        time=_utc(time),
        latitude=lat,
        longitude=lon,
        speed_kmh=speed,
        course=course,
        altitude_m=altitude,
        valid=valid,
        satellites=sats,
        attributes=as_attributes(attrs),
    )


def _command_from_row(row: Sequence[Any]) -> CommandRecord:
    command_id, device_id, protocol, kind, payload, status = row[:6]
    created, updated, sent, resp = row[6:]
    return CommandRecord(
        command_id=command_id,
        device_id=device_id,
        protocol=protocol,
        kind=kind,
        payload=payload,
        status=status,
        created_at=_utc(created),
        updated_at=_utc(updated),
        sent_at=None if sent is None else _utc(sent),
        response=resp,
    )


def _window(
    since: datetime | None, until: datetime | None, since_inclusive: bool = True
) -> tuple[list[str], list[Any]]:
    """Build the conditions of a half-open window on the ``time`` column."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append(f"time {'>=' if since_inclusive else '>'} %s")
        params.append(to_utc(since, "since"))
    if until is not None:
        clauses.append("time < %s")
        params.append(to_utc(until, "until"))
    return clauses, params


def _device_window(
    device_id: str | None, since: datetime | None, until: datetime | None
) -> tuple[str, list[Any]]:
    clauses, params = _window(since, until)
    if device_id is not None:
        clauses.insert(0, "device_id = %s")
        params.insert(0, device_id)
    return _where(clauses), params


def _where(clauses: list[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""
