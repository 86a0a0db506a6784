"""Time-series layouts of the PostgreSQL store: native partitions or TimescaleDB.

Positions, device events and fence events grow without bound, so both layouts
split them by time. With the TimescaleDB extension they become hypertables
with compression, optional retention and a continuous aggregate of daily
figures. Without it they become native range partitions (PostgreSQL 11 and
later) with a default partition, which `postloan.store.partitions` keeps
ahead of need. The same migration version produces either layout, chosen
when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postloan.config import StoreConfig

PARTITION_INTERVALS = frozenset({"day", "week"})
TIMESCALEDB_MODES = frozenset({"auto", "off"})

# The tables split by time, each with the indexes it has besides its primary
# key. The primary keys all end in `time`, which PostgreSQL requires of a
# unique index on a partitioned table and TimescaleDB of one on a hypertable.
TIME_SERIES_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "positions": (("positions_time_brin", "USING brin (time)"),),
    "device_events": (("device_events_time", "(time)"),),
    "fence_events": (
        ("fence_events_device_time", "(device_id, time)"),
        ("fence_events_time", "(time)"),
    ),
}

# The covering index that `StorageLayout.covering_index` adds to the open
# partitions of positions. Its key columns are the primary key's, and it
# includes every other column a track read returns, so that read is an
# index-only scan. Each is named <partition>_covering.
COVERING_INDEX_SUFFIX = "_covering"
COVERING_INDEX_SPEC = (
    "(device_id, time) INCLUDE (latitude, longitude, speed_kmh, course, "
    "altitude_m, valid, satellites, attributes)"
)


@dataclass(frozen=True, slots=True)
class StorageLayout:
    """Partitioning, retention and compression settings of the PostgreSQL store.

    `partition_interval` is the span of one native partition or TimescaleDB
    chunk. `partitions_ahead` is how many partitions after the current one
    maintenance keeps created. `retention_days` of 0 keeps data forever.
    `compress_after_days` applies to TimescaleDB only. `timescaledb` is
    ``"auto"`` to use the extension when the server can load it, or ``"off"``.

    `covering_index` adds COVERING_INDEX_SPEC to each native partition of
    positions until it closes, and maintenance drops it before clustering
    the partition. Fixes arrive in time order from the whole fleet, so
    without it one device's fixes of the current day lie on as many heap
    pages as there are fixes. With it, the day's track is read from a few
    dozen index pages. Every write then updates a second, wide index. In
    bench/RESULTS-store.md, the current day's fetch took 6.1 ms against 8.8
    to 13.2 ms without it, and ingest ran at 0.64 of a raw COPY against 0.85.
    """

    partition_interval: str = "day"
    partitions_ahead: int = 3
    retention_days: int = 0
    compress_after_days: int = 7
    timescaledb: str = "auto"
    covering_index: bool = False

    def __post_init__(self) -> None:
        if self.partition_interval not in PARTITION_INTERVALS:
            known = ", ".join(sorted(PARTITION_INTERVALS))
            raise ValueError(
                f"invalid partition interval {self.partition_interval!r}; use {known}"
            )
        if self.timescaledb not in TIMESCALEDB_MODES:
            known = ", ".join(sorted(TIMESCALEDB_MODES))
            raise ValueError(f"invalid timescaledb mode {self.timescaledb!r}; {known}")
        for name in ("partitions_ahead", "retention_days", "compress_after_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


def storage_layout(config: StoreConfig) -> StorageLayout:
    """Build the layout from the ``[store]`` settings."""
    return StorageLayout(
        partition_interval=config.partition_interval,
        partitions_ahead=config.partitions_ahead,
        retention_days=config.retention_days,
        compress_after_days=config.compress_after_days,
        timescaledb=config.timescaledb,
        covering_index=config.covering_index,
    )


def quote_ident(name: str) -> str:
    """Quote an SQL identifier, doubling embedded quotes."""
    return '"' + name.replace('"', '""') + '"'


def native_partitioning_statements() -> tuple[str, ...]:
    """Return DDL that turns the time-series tables into range-partitioned ones.

    Each table is renamed aside, recreated with the same columns, primary key
    and indexes as ``PARTITION BY RANGE (time)`` with a default partition,
    and refilled. The refilled rows land in the default partition until the
    first maintenance run moves them into partitions of their own.
    """
    statements: list[str] = []
    for table, indexes in TIME_SERIES_TABLES.items():
        old = f"{table}_unpartitioned"
        statements += [
            f"ALTER TABLE {table} RENAME TO {old}",
            f"ALTER INDEX {table}_pkey RENAME TO {old}_pkey",
            *(f"ALTER INDEX {name} RENAME TO {old}_{name}" for name, _ in indexes),
            # LIKE copies the columns, NOT NULL and CHECK constraints.
            f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS "
            "INCLUDING CONSTRAINTS) PARTITION BY RANGE (time)",
            f"ALTER TABLE {table} ADD PRIMARY KEY ({_primary_key(table)})",
            *(f"CREATE INDEX {name} ON {table} {spec}" for name, spec in indexes),
            f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT",
            f"INSERT INTO {table} SELECT * FROM {old}",
            f"DROP TABLE {old}",
        ]
    return tuple(statements)


_PRIMARY_KEYS = {
    "positions": "device_id, time",
    "device_events": "device_id, time, kind",
    "fence_events": "device_id, fence_id, event, time",
}


def _primary_key(table: str) -> str:
    return _PRIMARY_KEYS[table]


# The device odometer in km: JT/T 808-2019 table 27 item 0x01 (decoded as
# `mileage_km`), else the GT06 4-byte mileage, which Traccar reads as metres.
_ODOMETER_KM = (
    "coalesce((attributes->>'mileage_km')::double precision, "
    "(attributes->>'mileage')::double precision / 1000)"
)


def timescaledb_statements(
    layout: StorageLayout, extension_schema: str
) -> tuple[str, ...]:
    """Return DDL that turns the time-series tables into TimescaleDB hypertables.

    `extension_schema` is where the extension's functions live; calls are
    qualified with it because the store's connections search only the
    store's own schema. Every policy call passes ``if_not_exists``, so a
    rerun after a partial failure does not fail on what already exists.
    """
    # NOTE: this DDL is tested as text only; it has not run on a TimescaleDB
    # server. Late fixes into compressed chunks need the unique-constraint
    # checks TimescaleDB documents for 2.11 and later (ON CONFLICT DO NOTHING).
    ts = quote_ident(extension_schema)
    interval = f"INTERVAL '1 {layout.partition_interval}'"
    statements: list[str] = []
    for table in TIME_SERIES_TABLES:
        statements += [
            # The existing primary key and indexes serve the hypertable, so
            # TimescaleDB's default (time DESC) index would be a third copy.
            f"SELECT {ts}.create_hypertable('{table}', 'time', "
            f"chunk_time_interval => {interval}, create_default_indexes => false, "
            "migrate_data => true, if_not_exists => true)",
            # Segmenting by device keeps one device's track together in a
            # compressed batch, which is how tracks are read.
            f"ALTER TABLE {table} SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'device_id', "
            "timescaledb.compress_orderby = 'time DESC')",
            f"SELECT {ts}.add_compression_policy('{table}', "
            f"compress_after => INTERVAL '{layout.compress_after_days} days', "
            "if_not_exists => true)",
        ]
        if layout.retention_days:
            statements.append(
                f"SELECT {ts}.add_retention_policy('{table}', "
                f"drop_after => INTERVAL '{layout.retention_days} days', "
                "if_not_exists => true)"
            )
    statements += _daily_mileage_aggregate(ts)
    return tuple(statements)


def _daily_mileage_aggregate(ts: str) -> list[str]:
    # A continuous aggregate may not use window functions (TimescaleDB 2.x),
    # so it cannot sum the distances between consecutive fixes. It carries
    # the odometer difference instead; `Store.daily_mileage` computes the
    # haversine distance. WITH NO DATA lets it run inside the migration's
    # transaction, and the refresh policy fills it.
    return [
        "CREATE MATERIALIZED VIEW daily_mileage "
        "WITH (timescaledb.continuous) AS "
        f"SELECT device_id, {ts}.time_bucket(INTERVAL '1 day', time) AS day, "
        "count(*) AS fixes, sum(valid::integer) AS valid_fixes, "
        "min(time) AS first_fix, max(time) AS last_fix, "
        "max(speed_kmh) AS max_speed_kmh, "
        f"max({_ODOMETER_KM}) - min({_ODOMETER_KM}) AS odometer_km "
        "FROM positions GROUP BY device_id, day WITH NO DATA",
        f"SELECT {ts}.add_continuous_aggregate_policy('daily_mileage', "
        "start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour', "
        "schedule_interval => INTERVAL '1 hour', if_not_exists => true)",
    ]
