"""Versioned schema migrations for both store backends.

Each backend applies, in version order, the migrations that its
``schema_migrations`` table does not list, one transaction per migration, and
records each version it applied. Migrations are append-only: a released one is
never edited, a change gets a new version.

SQLite stores times as INTEGER microseconds since 1970-01-01 UTC (columns
ending in ``_us``), which round-trips Python's microsecond precision exactly
and sorts like the times themselves. PostgreSQL uses timestamptz, which has the
same precision.

PostgreSQL migration 3 depends on the server: it makes hypertables where
TimescaleDB can be loaded and native range partitions elsewhere (see
`postloan.store.layout`), so `postgres_migrations` builds the list for one
server.
"""

from __future__ import annotations

from dataclasses import dataclass

from postloan.store.layout import (
    StorageLayout,
    native_partitioning_statements,
    timescaledb_statements,
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, a short name and the DDL that creates it."""

    version: int
    name: str
    statements: tuple[str, ...]


_COMMAND_STATUS_CHECK = (
    "CHECK (status IN ('queued', 'sent', 'answered', 'timeout', 'failed'))"
)
# Version 3 (SQLite) and 4 (PostgreSQL) add 'cancelled'.
_COMMAND_STATUSES_WITH_CANCELLED = (
    "'queued', 'sent', 'answered', 'timeout', 'failed', 'cancelled'"
)

SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tracks, events, devices and commands",
        (
            # WITHOUT ROWID clusters each device's fixes by time on disk, so a
            # track query reads contiguous pages.
            """CREATE TABLE positions (
                device_id TEXT NOT NULL,
                time_us INTEGER NOT NULL,
                latitude REAL NOT NULL,
                longitude REAL NOT NULL,
                speed_kmh REAL NOT NULL,
                course REAL,
                altitude_m REAL,
                valid INTEGER NOT NULL,
                satellites INTEGER,
                attributes TEXT,
                PRIMARY KEY (device_id, time_us)
            ) WITHOUT ROWID""",
            # The latest fix time per device, kept in the write transaction so
            # that latest_positions reads one row per device.
            """CREATE TABLE track_heads (
                device_id TEXT PRIMARY KEY,
                time_us INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE device_events (
                device_id TEXT NOT NULL,
                time_us INTEGER NOT NULL,
                kind TEXT NOT NULL,
                attributes TEXT,
                PRIMARY KEY (device_id, time_us, kind)
            ) WITHOUT ROWID""",
            "CREATE INDEX device_events_time ON device_events (time_us)",
            """CREATE TABLE fence_events (
                device_id TEXT NOT NULL,
                fence_id TEXT NOT NULL,
                event TEXT NOT NULL,
                time_us INTEGER NOT NULL,
                latitude REAL NOT NULL,
                longitude REAL NOT NULL,
                PRIMARY KEY (device_id, fence_id, event, time_us)
            ) WITHOUT ROWID""",
            "CREATE INDEX fence_events_device_time "
            "ON fence_events (device_id, time_us)",
            "CREATE INDEX fence_events_time ON fence_events (time_us)",
            """CREATE TABLE devices (
                device_id TEXT PRIMARY KEY,
                protocol TEXT NOT NULL,
                first_seen_us INTEGER NOT NULL,
                last_seen_us INTEGER NOT NULL
            ) WITHOUT ROWID""",
            # AUTOINCREMENT so that a command id is never reused, even after
            # the newest command is deleted: ids are cited as evidence.
            f"""CREATE TABLE commands (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                device_id TEXT NOT NULL,
                protocol TEXT NOT NULL,
                kind TEXT NOT NULL,
                payload TEXT NOT NULL,
                status TEXT NOT NULL {_COMMAND_STATUS_CHECK},
                created_us INTEGER NOT NULL,
                updated_us INTEGER NOT NULL,
                sent_us INTEGER,
                response TEXT
            )""",
            "CREATE INDEX commands_device ON commands (device_id, id)",
            "CREATE INDEX commands_status ON commands (status, id)",
        ),
    ),
    Migration(
        2,
        "vehicles, device bindings and a time index on positions",
        (
            """CREATE TABLE vehicles (
                vehicle_id TEXT PRIMARY KEY,
                vin TEXT UNIQUE,
                plate TEXT
            ) WITHOUT ROWID""",
            # A device belongs to one vehicle at a time, from valid_from
            # (inclusive) to valid_to (exclusive, NULL while it is fitted).
            # A vehicle may carry several devices (wired and wireless).
            """CREATE TABLE device_bindings (
                device_id TEXT NOT NULL,
                vehicle_id TEXT NOT NULL REFERENCES vehicles (vehicle_id),
                valid_from_us INTEGER NOT NULL,
                valid_to_us INTEGER,
                role TEXT,
                PRIMARY KEY (device_id, valid_from_us),
                CHECK (valid_to_us IS NULL OR valid_to_us > valid_from_us)
            ) WITHOUT ROWID""",
            "CREATE INDEX device_bindings_vehicle "
            "ON device_bindings (vehicle_id, valid_from_us)",
            # Area queries scan one time window across all devices.
            "CREATE INDEX positions_time ON positions (time_us)",
        ),
    ),
    Migration(
        3,
        "cancelled commands",
        (
            # SQLite cannot alter a CHECK constraint, so the table is rebuilt.
            # The AUTOINCREMENT counter is carried over, so the id of a deleted
            # newest command is still never reused.
            f"""CREATE TABLE commands_v3 (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                device_id TEXT NOT NULL,
                protocol TEXT NOT NULL,
                kind TEXT NOT NULL,
                payload TEXT NOT NULL,
                status TEXT NOT NULL
                    CHECK (status IN ({_COMMAND_STATUSES_WITH_CANCELLED})),
                created_us INTEGER NOT NULL,
                updated_us INTEGER NOT NULL,
                sent_us INTEGER,
                response TEXT
            )""",
            "INSERT INTO commands_v3 SELECT * FROM commands",
            """UPDATE sqlite_sequence SET seq = max(seq, coalesce(
                (SELECT seq FROM sqlite_sequence WHERE name = 'commands'), 0))
                WHERE name = 'commands_v3'""",
            """INSERT INTO sqlite_sequence (name, seq)
                SELECT 'commands_v3', seq FROM sqlite_sequence
                WHERE name = 'commands' AND NOT EXISTS
                    (SELECT 1 FROM sqlite_sequence WHERE name = 'commands_v3')""",
            "DROP TABLE commands",
            "ALTER TABLE commands_v3 RENAME TO commands",
            "CREATE INDEX commands_device ON commands (device_id, id)",
            "CREATE INDEX commands_status ON commands (status, id)",
        ),
    ),
)

_POSTGRES_BASE: tuple[Migration, ...] = (
    Migration(
        1,
        "tracks, events, devices and commands",
        (
            """CREATE TABLE positions (
                device_id text NOT NULL,
                time timestamptz NOT NULL,
                latitude double precision NOT NULL,
                longitude double precision NOT NULL,
                speed_kmh double precision NOT NULL,
                course double precision,
                altitude_m double precision,
                valid boolean NOT NULL,
                satellites integer,
                attributes jsonb,
                PRIMARY KEY (device_id, time)
            )""",
            # Fixes arrive roughly in time order, so a BRIN index serves
            # cross-device time-window scans at a tiny fraction of a btree's size.
            "CREATE INDEX positions_time_brin ON positions USING brin (time)",
            """CREATE TABLE track_heads (
                device_id text PRIMARY KEY,
                time timestamptz NOT NULL
            )""",
            """CREATE TABLE device_events (
                device_id text NOT NULL,
                time timestamptz NOT NULL,
                kind text NOT NULL,
                attributes jsonb,
                PRIMARY KEY (device_id, time, kind)
            )""",
            "CREATE INDEX device_events_time ON device_events (time)",
            """CREATE TABLE fence_events (
                device_id text NOT NULL,
                fence_id text NOT NULL,
                event text NOT NULL,
                time timestamptz NOT NULL,
                latitude double precision NOT NULL,
                longitude double precision NOT NULL,
                PRIMARY KEY (device_id, fence_id, event, time)
            )""",
            "CREATE INDEX fence_events_device_time ON fence_events (device_id, time)",
            "CREATE INDEX fence_events_time ON fence_events (time)",
            """CREATE TABLE devices (
                device_id text PRIMARY KEY,
                protocol text NOT NULL,
                first_seen timestamptz NOT NULL,
                last_seen timestamptz NOT NULL
            )""",
            f"""CREATE TABLE commands (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                device_id text NOT NULL,
                protocol text NOT NULL,
                kind text NOT NULL,
                payload jsonb NOT NULL,
                status text NOT NULL {_COMMAND_STATUS_CHECK},
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                sent_at timestamptz,
                response jsonb
            )""",
            "CREATE INDEX commands_device ON commands (device_id, id)",
            "CREATE INDEX commands_status ON commands (status, id)",
        ),
    ),
    Migration(
        2,
        "vehicles and device bindings",
        (
            """CREATE TABLE vehicles (
                vehicle_id text PRIMARY KEY,
                vin text UNIQUE,
                plate text
            )""",
            # A device belongs to one vehicle at a time, from valid_from
            # (inclusive) to valid_to (exclusive, NULL while it is fitted).
            # A vehicle may carry several devices (wired and wireless).
            """CREATE TABLE device_bindings (
                device_id text NOT NULL,
                vehicle_id text NOT NULL REFERENCES vehicles (vehicle_id),
                valid_from timestamptz NOT NULL,
                valid_to timestamptz,
                role text,
                PRIMARY KEY (device_id, valid_from),
                CHECK (valid_to IS NULL OR valid_to > valid_from)
            )""",
            "CREATE INDEX device_bindings_vehicle "
            "ON device_bindings (vehicle_id, valid_from)",
            # Heads are updated in place. Free space on each page lets
            # PostgreSQL make those updates HOT, which skips the index and
            # roughly doubled their rate in a test on PostgreSQL 15.
            "ALTER TABLE track_heads SET (fillfactor = 50)",
        ),
    ),
)

TIME_PARTITIONING_VERSION = 3


def postgres_migrations(
    layout: StorageLayout, timescaledb_schema: str | None
) -> tuple[Migration, ...]:
    """Return the PostgreSQL migrations for a server with or without TimescaleDB.

    `timescaledb_schema` is the schema of the installed extension, or None
    for native partitioning.
    """
    if timescaledb_schema is None:
        name = "time partitioning (native range partitions)"
        statements = native_partitioning_statements()
    else:
        name = "time partitioning (TimescaleDB hypertables)"
        statements = timescaledb_statements(layout, timescaledb_schema)
    return (
        *_POSTGRES_BASE,
        Migration(TIME_PARTITIONING_VERSION, name, statements),
        _POSTGRES_CANCELLED,
    )


_POSTGRES_CANCELLED = Migration(
    4,
    "cancelled commands",
    (
        # The inline CHECK of version 1 got PostgreSQL's default name.
        "ALTER TABLE commands DROP CONSTRAINT IF EXISTS commands_status_check",
        "ALTER TABLE commands ADD CONSTRAINT commands_status_check "
        f"CHECK (status IN ({_COMMAND_STATUSES_WITH_CANCELLED}))",
    ),
)


def pending(migrations: tuple[Migration, ...], applied: set[int]) -> list[Migration]:
    """Return the migrations not yet applied, in version order.

    Raises RuntimeError when the database has a version this code does not
    know, because an older postloan must not write to a newer schema.
    """
    known = {migration.version for migration in migrations}
    unknown = sorted(applied - known)
    if unknown:
        raise RuntimeError(
            f"database has schema versions {unknown} that this postloan does not "
            f"know (latest known: {max(known)}); upgrade postloan"
        )
    return sorted(
        (m for m in migrations if m.version not in applied), key=lambda m: m.version
    )
