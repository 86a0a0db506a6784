"""The track store on PostgreSQL (psycopg 3).

Fix batches go to the server with binary COPY, the fastest bulk path
PostgreSQL has. A batch is first de-duplicated in Python (the first copy of a
fix wins) and copied straight into ``positions`` inside a savepoint. A fix
stored by an earlier batch (a device resending after a lost ack, a
blind-area backfill) makes that COPY fail. The savepoint is then rolled
back, the batch is copied into a temporary staging table, and one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` adds the new fixes. Most
batches contain no duplicates, so most cost one COPY and nothing more.

Every connection runs with ``TimeZone = UTC`` and ``search_path`` set to the
store's schema alone, so tests and tenants can each use their own schema.

Positions and events are split by time: TimescaleDB hypertables where the
server can load the extension, native range partitions elsewhere (see
`postloan.store.layout` and `postloan.store.partitions`).
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_dumps

from postloan.model import EMPTY, DeviceEvent, FenceEvent, Fix, fixes_from_columns
from postloan.store.base import (
    BindingNotFoundError,
    BindingRecord,
    CommandRecord,
    ConnectionPool,
    JsonAttributes,
    MaintenanceReport,
    Store,
    VehicleNotFoundError,
    as_attributes,
    check_binding,
    dump_json,
    to_utc,
)
from postloan.store.layout import StorageLayout
from postloan.store.migrations import (
    TIME_PARTITIONING_VERSION,
    Migration,
    pending,
    postgres_migrations,
)
from postloan.store.partitions import PartitionMaintainer
from postloan.store.queries import AreaRow

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[TupleRow]

_FIX_COLUMNS = (
    "device_id, time, latitude, longitude, speed_kmh, course, altitude_m, "
    "valid, satellites, attributes"
)
_FIX_TYPES = (
    "text",
    "timestamptz",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "bool",
    "int4",
    "jsonb",
)
# Tracks omit device_id, which the query names, and read attributes as
# text for JsonAttributes to parse only if asked.
_TRACK_COLUMNS = (
    "time, latitude, longitude, speed_kmh, course, altitude_m, valid, satellites, "
    "attributes::text"
)
_COPY_POSITIONS = f"COPY positions ({_FIX_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_CREATE_STAGE = """
    CREATE TEMPORARY TABLE fix_stage (
        device_id text NOT NULL,
        time timestamptz NOT NULL,
        latitude double precision NOT NULL,
        longitude double precision NOT NULL,
        speed_kmh double precision NOT NULL,
        course double precision,
        altitude_m double precision,
        valid boolean NOT NULL,
        satellites integer,
        attributes jsonb
    ) ON COMMIT DELETE ROWS
"""
_COPY_STAGE = f"COPY fix_stage ({_FIX_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_INSERT_FROM_STAGE = f"""
    INSERT INTO positions ({_FIX_COLUMNS})
    SELECT {_FIX_COLUMNS} FROM fix_stage
    ON CONFLICT DO NOTHING
"""
# track_heads stores, per device, the time of a stored fix less than
# HEAD_REFRESH older than the device's latest fix. latest_positions searches
# from there, which touches the newest partition or two. So the writer
# updates a head once per HEAD_REFRESH of fix time, where an exact head
# would cost a row update per device in nearly every batch.
HEAD_REFRESH = timedelta(minutes=10)
# Seconds a write waits for a lock before failing, which spools the batch.
WRITER_LOCK_TIMEOUT_S = 5
# Ordered by device id so that two writers (two gateway processes) lock
# track_heads rows in the same order, which avoids deadlocks between them.
_UPSERT_HEADS = """
    INSERT INTO track_heads (device_id, time)
    SELECT * FROM unnest(%s::text[], %s::timestamptz[]) ORDER BY 1
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
_BINDING_COLUMNS = "device_id, vehicle_id, valid_from, valid_to, role"
_TIMESCALEDB_SCHEMA = """
    SELECT n.nspname FROM pg_catalog.pg_extension e
    JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'timescaledb'
"""
# Rows per round trip when streaming through a server-side cursor.
_AREA_CHUNK_ROWS = 50_000
_cursor_numbers = itertools.count(1)
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
    small pool, so a long export does not hold up the gateway's writes.
    Connections open on first use, so a store can be made while the server
    is down; each call then raises `psycopg.OperationalError` (see
    `is_unavailable`) until the server answers. When the writer connection
    breaks (a server restart, say), the write that hit the failure raises and
    the next write opens a new connection.
    """

    # SQL of the queries that the `Store` base class runs on this backend.
    _COUNT_FIXES_SQL = "SELECT count(*) FROM positions"
    _COUNT_DEVICE_FIXES_SQL = "SELECT count(*) FROM positions WHERE device_id = %s"
    _DEVICE_IDS_SQL = (
        "SELECT device_id FROM track_heads UNION SELECT device_id FROM devices "
        "ORDER BY 1"
    )
    _DEVICES_SQL = (
        "SELECT device_id, protocol, first_seen, last_seen FROM devices "
        "ORDER BY device_id"
    )
    _DEVICE_EVENTS_SQL = (
        "SELECT device_id, time, kind, attributes FROM device_events"
        "{where} ORDER BY time, device_id, kind"
    )
    _FENCE_EVENTS_SQL = (
        "SELECT device_id, fence_id, event, time, latitude, longitude "
        "FROM fence_events{where} ORDER BY time, device_id, fence_id, event"
    )
    _UPSERT_VEHICLE_SQL = (
        "INSERT INTO vehicles (vehicle_id, vin, plate) VALUES (%s, %s, %s) "
        "ON CONFLICT (vehicle_id) DO UPDATE "
        "SET vin = excluded.vin, plate = excluded.plate"
    )
    _VEHICLES_SQL = "SELECT vehicle_id, vin, plate FROM vehicles ORDER BY vehicle_id"
    _BINDINGS_SQL = (
        f"SELECT {_BINDING_COLUMNS} FROM device_bindings{{where}} "
        "ORDER BY device_id, valid_from"
    )
    _COMMANDS_SQL = f"SELECT {_COMMAND_COLUMNS} FROM commands{{where}} ORDER BY id"
    _COMMAND_STATUS_SQL = "SELECT status FROM commands WHERE id = %s FOR UPDATE"
    _UPDATE_COMMAND_SQL = _UPDATE_COMMAND
    _PLACEHOLDER = "%s"
    _UNIQUE_VIOLATION = psycopg.errors.UniqueViolation

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        readers: int = 4,
        connect_timeout_s: int = 10,
        layout: StorageLayout | None = None,
    ) -> None:
        self.schema = schema
        self.layout = layout or StorageLayout()
        self._maintainer = PartitionMaintainer(self.layout)
        self._dsn = dsn
        self._connect_timeout_s = connect_timeout_s
        self._closed = False
        self._write_lock = threading.Lock()
        self._known_heads: dict[str, datetime] = {}
        # Opened by the first write, and again after the connection broke.
        self._writer: Connection | None = None
        self._readers: ConnectionPool[Connection] = ConnectionPool(
            self._connect, Connection.close, _is_idle, max_size=readers
        )
        self._timescaledb: bool | None = None

    @property
    def timescaledb(self) -> bool:
        """Whether the server offers TimescaleDB; asked once, on first use."""
        if self._timescaledb is None:
            self._timescaledb = self._detect_timescaledb()
        return self._timescaledb

    def is_unavailable(self, error: BaseException) -> bool:
        # Refused or lost connections, a server starting up or shutting down,
        # and lock timeouts are all OperationalError.
        # NOTE: so are a wrong password and a missing role or database (libpq
        # reports them without a SQLSTATE), which are then retried as outages.
        return isinstance(error, psycopg.OperationalError)

    def _connect(self) -> Connection:
        conn = psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=self._connect_timeout_s
        )
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute(
                sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema))
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_writer(self) -> Connection:
        conn = self._connect()
        try:
            self._prepare_writer(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare_writer(self, conn: Connection) -> None:
        conn.execute(_CREATE_STAGE)
        # Binary COPY into jsonb serialises attribute mappings with this.
        set_json_dumps(_dump_attributes, context=conn)
        # An acknowledged fix must survive a server crash, so a server-wide
        # `synchronous_commit = off` must not apply to this connection.
        if conn.execute("SHOW synchronous_commit").fetchone() == ("off",):
            conn.execute("SET synchronous_commit TO on")
        # A write that waits longer for a lock (a partition being clustered,
        # a table locked by hand) fails, so the gateway spools the batch
        # instead of stalling every device behind it.
        conn.execute(
            sql.SQL("SET lock_timeout = {}").format(
                sql.Literal(f"{WRITER_LOCK_TIMEOUT_S}s")
            )
        )

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
            writer = self._writer
            if writer is None or writer.broken or writer.closed:
                if writer is not None:
                    writer.close()
                    self._writer = None
                writer = self._writer = self._connect_writer()
            with writer.transaction():
                yield writer

    def _query(
        self,
        query: str,
        params: Sequence[Any] | Mapping[str, Any] = (),
        *,
        binary: bool = False,
    ) -> Any:
        """Run a read on a pooled connection and return all rows.

        With `binary`, rows come in PostgreSQL's binary format, which psycopg
        decodes faster, and the statement is prepared on first use.
        """
        # Idle pooled connections that the server closed meanwhile (a
        # restart, an idle timeout) fail on first use. After one fails, the
        # idle ones are discarded, so the retry opens a fresh connection.
        # Reads are safe to repeat.
        for attempt in (1, 2):
            try:
                with self._readers.connection() as conn:
                    cursor = conn.cursor(binary=binary)
                    return cursor.execute(query, params, prepare=binary).fetchall()
            except psycopg.OperationalError:
                if attempt == 2:
                    raise
                logger.debug("reader connection failed; retrying on a new one")
                self._readers.discard_idle()
        raise AssertionError("unreachable")

    def migrate(self) -> None:
        lock_name = f"postloan.migrate.{self.schema}"
        # A session-level advisory lock serialises migrate() across processes
        # and, unlike a transaction lock, spans the per-migration transactions.
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock_name,))
        try:
            self._create_schema()
            migrations = postgres_migrations(
                self.layout, self._timescaledb_schema_for_migration()
            )
            while self._apply_next_migration(migrations):
                pass
        finally:
            with self._write_lock:
                if self._writer is not None and not self._writer.broken:
                    self._writer.execute(
                        "SELECT pg_advisory_unlock(hashtext(%s))", (lock_name,)
                    )
        self.maintain()

    def _timescaledb_schema_for_migration(self) -> str | None:
        """Return the TimescaleDB schema if migration 3 should make hypertables.

        An available extension that is not yet installed is created in
        ``public``, so dropping one store's schema never drops the extension
        that other schemas use. Creating it fails unless the server preloads
        the library (``shared_preload_libraries``); the store then falls back
        to native partitions.
        """
        with self._transaction() as conn:
            applied = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = %s",
                (TIME_PARTITIONING_VERSION,),
            ).fetchone()
            if applied is not None or self.layout.timescaledb == "off":
                return None
            row = conn.execute(_TIMESCALEDB_SCHEMA).fetchone()
        if row is not None:
            return str(row[0])
        if not self.timescaledb:
            return None
        try:
            with self._transaction() as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb SCHEMA public")
        except psycopg.Error as exc:
            logger.warning(
                "TimescaleDB is available but could not be created (%s); "
                "using native range partitions in schema %s",
                exc,
                self.schema,
            )
            return None
        return "public"

    def maintain(self, now: datetime | None = None) -> MaintenanceReport:
        moment = datetime.now(UTC) if now is None else to_utc(now, "now")
        lock_name = f"postloan.maintain.{self.schema}"
        with self._readers.connection() as conn:
            # Another process already maintaining the schema makes this run
            # redundant, so it returns instead of waiting.
            (locked,) = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s))", (lock_name,)
            ).fetchone() or (False,)
            if not locked:
                return MaintenanceReport()
            try:
                return self._maintainer.run(conn, moment)
            finally:
                if not conn.broken:
                    conn.execute(
                        "SELECT pg_advisory_unlock(hashtext(%s))", (lock_name,)
                    )

    def is_data_error(self, error: BaseException) -> bool:
        # DataError covers invalid values (a NUL character in jsonb text);
        # IntegrityError a violated CHECK. Connection and lock errors are
        # OperationalError and retried.
        return super().is_data_error(error) or isinstance(
            error, psycopg.DataError | psycopg.IntegrityError
        )

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

    def _apply_next_migration(self, migrations: tuple[Migration, ...]) -> bool:
        with self._transaction() as conn:
            applied = {
                v for (v,) in conn.execute("SELECT version FROM schema_migrations")
            }
            todo = pending(migrations, applied)
            if not todo:
                return False
            migration = todo[0]
            # Schema changes wait for their locks as long as it takes.
            conn.execute("SET LOCAL lock_timeout = 0")
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
        rows: dict[tuple[str, datetime], tuple[Any, ...]] = {}
        heads: dict[str, datetime] = {}
        for fix in fixes:
            row = _fix_row(fix)
            device_id, time = row[0], row[1]
            rows.setdefault((device_id, time), row)
            latest = heads.get(device_id)
            if latest is None or time > latest:
                heads[device_id] = time
        with self._transaction() as conn, conn.cursor() as cursor:
            stored = self._copy_new_fixes(conn, cursor, list(rows.values()))
            advanced = self._advanced_heads(heads)
            if advanced:
                devices = sorted(advanced)
                times = [advanced[device] for device in devices]
                cursor.execute(_UPSERT_HEADS, (devices, times))
        self._known_heads.update(advanced)
        return stored

    def _advanced_heads(self, heads: dict[str, datetime]) -> dict[str, datetime]:
        """Return the heads that moved HEAD_REFRESH past what this store wrote.

        Another process may have written later heads; the upsert keeps the
        later one, so a stale entry here costs one redundant update.
        """
        advanced = {}
        for device_id, time in heads.items():
            known = self._known_heads.get(device_id)
            if known is None or time >= known + HEAD_REFRESH:
                advanced[device_id] = time
        return advanced

    def _copy_new_fixes(
        self,
        conn: Connection,
        cursor: psycopg.Cursor[TupleRow],
        rows: list[tuple[Any, ...]],
    ) -> int:
        try:
            with conn.transaction():  # a savepoint inside the write transaction
                _copy_rows(cursor, _COPY_POSITIONS, rows)
            return len(rows)
        except psycopg.errors.UniqueViolation:
            pass  # some fix is stored already: take the de-duplicating path
        _copy_rows(cursor, _COPY_STAGE, rows)
        cursor.execute(_INSERT_FROM_STAGE)
        return cursor.rowcount

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
        query = f"SELECT {_TRACK_COLUMNS} FROM positions{where} ORDER BY time"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with _cyclic_gc_paused():
            rows = self._query(query, [device_id, *params], binary=True)
            return _track_fixes(device_id, rows)

    def iter_track(
        self,
        device_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        batch: int = 10_000,
    ) -> Iterator[Fix]:
        """Yield the device's fixes like `track` through a server-side cursor.

        The cursor fetches `batch` rows per round trip. It keeps one reader
        connection checked out, and reads one snapshot, until the iterator is
        exhausted or closed.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        clauses, params = _window(since, until)
        where = _where(["device_id = %s", *clauses])
        query = f"SELECT {_TRACK_COLUMNS} FROM positions{where} ORDER BY time"
        for rows in self._stream(query, [device_id, *params], batch):
            yield from _track_fixes(device_id, rows)

    def _area_rows(
        self,
        since: datetime,
        until: datetime,
        bounds: tuple[float, float, float, float],
        valid_only: bool,
    ) -> Iterator[Sequence[AreaRow]]:
        min_lon, min_lat, max_lon, max_lat = bounds
        query = (
            "SELECT device_id, time, longitude, latitude FROM positions "
            "WHERE time >= %s AND time < %s "
            "AND longitude BETWEEN %s AND %s AND latitude BETWEEN %s AND %s"
        )
        if valid_only:
            query += " AND valid"
        params = [since, until, min_lon, max_lon, min_lat, max_lat]
        for rows in self._stream(query, params, _AREA_CHUNK_ROWS):
            yield [(device_id, _utc(t), lon, lat) for device_id, t, lon, lat in rows]

    def _stream(
        self, query: str, params: Sequence[Any], chunk_rows: int
    ) -> Iterator[list[TupleRow]]:
        """Yield the rows of `query` in chunks from a server-side cursor.

        A failure before the first chunk is retried once on a new connection,
        as in `_query`; a failure later propagates.
        """
        for attempt in (1, 2):
            name = f"postloan_cursor_{next(_cursor_numbers)}"
            started = False
            try:
                with (
                    self._readers.connection() as conn,
                    conn.transaction(),
                    conn.cursor(name=name, binary=True) as cursor,
                ):
                    cursor.execute(query, params)
                    rows = cursor.fetchmany(chunk_rows)
                    started = True
                    while rows:
                        yield rows
                        rows = cursor.fetchmany(chunk_rows)
                return
            except psycopg.OperationalError:
                if started or attempt == 2:
                    raise
                self._readers.discard_idle()

    def latest_positions(self) -> list[Fix]:
        # The head's time is a lower bound of the device's latest fix time,
        # which lets run-time partition pruning skip older partitions.
        rows = self._query(
            f"SELECT p.* FROM track_heads h CROSS JOIN LATERAL ("
            f"SELECT {_FIX_COLUMNS} FROM positions "
            "WHERE device_id = h.device_id AND time >= h.time "
            "ORDER BY time DESC LIMIT 1) p ORDER BY h.device_id"
        )
        return [_fix_from_row(row) for row in rows]

    def _device_window(
        self, device_id: str | None, since: datetime | None, until: datetime | None
    ) -> tuple[str, list[Any]]:
        return _device_window(device_id, since, until)

    def _time_to_db(self, value: datetime, name: str) -> Any:
        return to_utc(value, name)

    def _time_from_db(self, value: Any) -> datetime:
        return _utc(value)

    def _attributes_from_db(self, value: Any) -> Mapping[str, Any]:
        return as_attributes(value)

    def _binding_from_db(self, row: Sequence[Any]) -> BindingRecord:
        return _binding_from_row(row)

    def _command_from_db(self, row: Sequence[Any]) -> CommandRecord:
        return _command_from_row(row)

    def _insert_binding(self, new: BindingRecord) -> None:
        device_id, vehicle_id, role = new.device_id, new.vehicle_id, new.role
        with self._transaction() as conn:
            self._lock_device_bindings(conn, device_id)
            vehicle = conn.execute(
                "SELECT 1 FROM vehicles WHERE vehicle_id = %s", (vehicle_id,)
            ).fetchone()
            if vehicle is None:
                raise VehicleNotFoundError(vehicle_id)
            rows = conn.execute(
                f"SELECT {_BINDING_COLUMNS} FROM device_bindings WHERE device_id = %s",
                (device_id,),
            ).fetchall()
            check_binding(new, [_binding_from_row(row) for row in rows])
            conn.execute(
                f"INSERT INTO device_bindings ({_BINDING_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s)",
                (device_id, vehicle_id, new.valid_from, new.valid_to, role),
            )

    def unbind_device(self, device_id: str, *, at: datetime) -> None:
        end = to_utc(at, "at")
        with self._transaction() as conn:
            self._lock_device_bindings(conn, device_id)
            row = conn.execute(
                "SELECT valid_from FROM device_bindings "
                "WHERE device_id = %s AND valid_to IS NULL",
                (device_id,),
            ).fetchone()
            if row is None:
                raise BindingNotFoundError(device_id)
            if end <= row[0]:
                raise ValueError(
                    f"device {device_id!r} was bound at {_utc(row[0]).isoformat()}, "
                    f"so it cannot be unbound at {end.isoformat()}"
                )
            conn.execute(
                "UPDATE device_bindings SET valid_to = %s "
                "WHERE device_id = %s AND valid_from = %s",
                (end, device_id, row[0]),
            )

    def _lock_device_bindings(self, conn: Connection, device_id: str) -> None:
        # Serialises binding changes of one device across processes: row
        # locks alone cannot stop two transactions inserting overlapping rows.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            (f"postloan.binding.{self.schema}.{device_id}",),
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

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._readers.close()
            if self._writer is not None:
                self._writer.close()


def _is_idle(conn: Connection) -> bool:
    return (
        not conn.closed
        and not conn.broken
        and conn.info.transaction_status == TransactionStatus.IDLE
    )


def _utc(value: datetime) -> datetime:
    """Normalise a timestamptz from the server to datetime.timezone.utc."""
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _dump_attributes(value: Any) -> str:
    # Same rules as dump_json, which SQLite uses: compact, and NaN or
    # infinity rejected with ValueError because jsonb has no form for them.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _copy_rows(
    cursor: psycopg.Cursor[TupleRow], statement: str, rows: list[tuple[Any, ...]]
) -> None:
    with cursor.copy(statement) as copy:
        copy.set_types(list(_FIX_TYPES))
        for row in rows:
            copy.write_row(row)


# NOTE: jsonb rejects the NUL character (\u0000) in strings, which SQLite
# stores. Such an attribute value fails its batch here, and the gateway's
# writer then isolates the fix and sets it aside.
def _fix_row(fix: Fix) -> tuple[Any, ...]:
    return (
        fix.device_id,
        to_utc(fix.time, f"fix time of device {fix.device_id}"),
        float(fix.latitude),
        float(fix.longitude),
        float(fix.speed_kmh),
        None if fix.course is None else float(fix.course),
        None if fix.altitude_m is None else float(fix.altitude_m),
        bool(fix.valid),
        fix.satellites,
        dict(fix.attributes) if fix.attributes else None,
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


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a track's rows become fixes.

    A device-day is about 3,000 row tuples and 3,000 fixes, none in a
    reference cycle, yet their allocation runs several collections, each of
    which walks every tracked object of the process. Reference counting
    still frees everything at once; cycles made meanwhile wait for the next
    collection. The collector stays off if it was off, and another thread
    that starts while it is paused leaves it as it found it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _track_fixes(device_id: str, rows: Sequence[Sequence[Any]]) -> list[Fix]:
    """Build fixes from rows of _TRACK_COLUMNS, converting them column by column."""
    if not rows:
        return []
    times, *columns, attributes = zip(*rows, strict=True)
    return fixes_from_columns(
        device_id,
        [
            list(map(_utc, times)),
            *columns,
            [EMPTY if text is None else JsonAttributes(text) for text in attributes],
        ],
    )


def _binding_from_row(row: Sequence[Any]) -> BindingRecord:
    device_id, vehicle_id, valid_from, valid_to, role = row
    return BindingRecord(
        device_id,
        vehicle_id,
        _utc(valid_from),
        None if valid_to is None else _utc(valid_to),
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
