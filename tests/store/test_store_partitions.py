"""Time partitioning on PostgreSQL: native partitions, maintenance, TimescaleDB DDL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from postloan.config import StoreConfig
from postloan.model import DeviceEvent, Fix
from postloan.store import PostgresStore, StorageLayout, storage_layout
from postloan.store.layout import (
    TIME_SERIES_TABLES,
    native_partitioning_statements,
    timescaledb_statements,
)
from postloan.store.migrations import (
    TIME_PARTITIONING_VERSION,
    postgres_migrations,
)
from postloan.store.partitions import (
    Partition,
    interval_start,
    parse_bound,
    partition_name,
    uncovered,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # a Wednesday
DAY = timedelta(days=1)


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fix_at(moment: datetime, device_id: str = "860000000000001") -> Fix:
    return Fix(device_id, moment, 22.5, 114.05)


def partitions_of(dsn: str, schema: str, table: str = "positions") -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s) ORDER BY 1",
            (f'"{schema}".{table}',),
        ).fetchall()
    return [name for (name,) in rows]


def rows_in(dsn: str, schema: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def layout_store(
    request: pytest.FixtureRequest, pg_dsn: str, pg_schema: str
) -> Iterator[PostgresStore]:
    """A store with the layout given by indirect parametrisation, maintained at NOW."""
    layout = getattr(request, "param", StorageLayout(timescaledb="off"))
    store = PostgresStore(pg_dsn, schema=pg_schema, layout=layout)
    store.migrate()
    store.maintain(NOW)
    yield store
    store.close()


# --- pure helpers ------------------------------------------------------------------


def test_interval_start_day_and_week() -> None:
    assert interval_start(NOW, "day") == day("2024-05-01")
    assert interval_start(NOW, "week") == day("2024-04-29")


def test_uncovered_without_partitions_is_whole_range() -> None:
    assert uncovered(day("2024-05-01"), day("2024-05-08"), []) == [
        (day("2024-05-01"), day("2024-05-08"))
    ]


def test_uncovered_skips_existing_partitions() -> None:
    existing = [
        Partition("a", day("2024-05-02"), day("2024-05-03")),
        Partition("b", day("2024-05-05"), day("2024-05-06")),
    ]

    gaps = uncovered(day("2024-05-01"), day("2024-05-08"), existing)

    assert gaps == [
        (day("2024-05-01"), day("2024-05-02")),
        (day("2024-05-03"), day("2024-05-05")),
        (day("2024-05-06"), day("2024-05-08")),
    ]


def test_uncovered_fully_covered_is_empty() -> None:
    existing = [Partition("w", day("2024-04-29"), day("2024-05-06"))]

    assert uncovered(day("2024-05-01"), day("2024-05-02"), existing) == []


def test_parse_bound_iso_and_open_ends() -> None:
    assert parse_bound("'2024-05-01 00:00:00+00'") == day("2024-05-01")
    assert parse_bound("MINVALUE").year == 1
    assert parse_bound("MAXVALUE").year == 9999


def test_partition_name_uses_first_day() -> None:
    assert partition_name("positions", day("2024-04-29")) == "positions_p20240429"


def test_storage_layout_rejects_unknown_interval() -> None:
    with pytest.raises(ValueError, match="partition interval 'month'"):
        StorageLayout(partition_interval="month")


def test_storage_layout_rejects_negative_retention() -> None:
    with pytest.raises(ValueError, match="retention_days"):
        StorageLayout(retention_days=-1)


def test_storage_layout_from_config() -> None:
    config = StoreConfig(partition_interval="week", retention_days=400)

    layout = storage_layout(config)

    assert layout.partition_interval == "week"
    assert layout.retention_days == 400


# --- generated DDL -----------------------------------------------------------------


def test_timescaledb_ddl_makes_every_table_a_hypertable() -> None:
    statements = timescaledb_statements(StorageLayout(), "public")

    for table in TIME_SERIES_TABLES:
        assert any(
            s.startswith(f"SELECT \"public\".create_hypertable('{table}', 'time'")
            and "chunk_time_interval => INTERVAL '1 day'" in s
            and "migrate_data => true" in s
            for s in statements
        ), table


def test_timescaledb_ddl_compresses_by_device() -> None:
    statements = timescaledb_statements(StorageLayout(compress_after_days=3), "ts")

    compress = [s for s in statements if "timescaledb.compress," in s]
    policies = [s for s in statements if "add_compression_policy" in s]
    assert len(compress) == len(TIME_SERIES_TABLES)
    assert all("compress_segmentby = 'device_id'" in s for s in compress)
    assert all("INTERVAL '3 days'" in s for s in policies)
    assert all(s.startswith('SELECT "ts".add_compression_policy') for s in policies)


def test_timescaledb_ddl_retention_only_when_set() -> None:
    keep = timescaledb_statements(StorageLayout(retention_days=0), "public")
    expire = timescaledb_statements(StorageLayout(retention_days=730), "public")

    assert not any("add_retention_policy" in s for s in keep)
    retention = [s for s in expire if "add_retention_policy" in s]
    assert len(retention) == len(TIME_SERIES_TABLES)
    assert all("drop_after => INTERVAL '730 days'" in s for s in retention)


def test_timescaledb_ddl_weekly_chunks() -> None:
    statements = timescaledb_statements(
        StorageLayout(partition_interval="week"), "public"
    )

    hypertables = [s for s in statements if "create_hypertable" in s]
    assert all("INTERVAL '1 week'" in s for s in hypertables)


def test_timescaledb_ddl_daily_mileage_aggregate() -> None:
    statements = timescaledb_statements(StorageLayout(), "public")

    view = next(s for s in statements if "MATERIALIZED VIEW daily_mileage" in s)
    policy = next(s for s in statements if "add_continuous_aggregate_policy" in s)
    assert "WITH (timescaledb.continuous)" in view
    assert "\"public\".time_bucket(INTERVAL '1 day', time)" in view
    assert "GROUP BY device_id, day" in view
    # Without NO DATA the view cannot be created inside a transaction.
    assert view.endswith("WITH NO DATA")
    assert "'daily_mileage'" in policy


def test_timescaledb_ddl_quotes_extension_schema() -> None:
    statements = timescaledb_statements(StorageLayout(), 'odd"name')

    assert all('"odd""name".' in s for s in statements if s.startswith("SELECT"))


def test_postgres_migrations_pick_layout() -> None:
    (native,) = [
        m
        for m in postgres_migrations(StorageLayout(), None)
        if m.version == TIME_PARTITIONING_VERSION
    ]
    (hypertables,) = [
        m
        for m in postgres_migrations(StorageLayout(), "public")
        if m.version == TIME_PARTITIONING_VERSION
    ]

    assert native.version == hypertables.version == TIME_PARTITIONING_VERSION
    assert native.statements == native_partitioning_statements()
    assert "TimescaleDB" in hypertables.name


# --- native partitions on a real server ------------------------------------------


needs_postgres = pytest.mark.postgres


@needs_postgres
def test_migrate_creates_default_and_partitions_ahead(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    names = partitions_of(pg_dsn, pg_schema)

    assert "positions_default" in names
    for offset in range(4):
        assert partition_name("positions", day("2024-05-01") + offset * DAY) in names


@needs_postgres
def test_every_time_series_table_is_partitioned(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    for table in TIME_SERIES_TABLES:
        assert f"{table}_default" in partitions_of(pg_dsn, pg_schema, table)


@needs_postgres
def test_late_and_future_fixes_are_accepted(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    late = fix_at(day("2019-03-07") + timedelta(hours=5))
    future = fix_at(day("2037-01-01"))

    stored = layout_store.write_fixes([late, future])

    assert stored == 2
    assert rows_in(pg_dsn, pg_schema, "positions_default") == 2
    assert layout_store.track(late.device_id) == [late, future]


@needs_postgres
def test_maintain_moves_default_rows_into_partitions(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    late = fix_at(day("2019-03-07") + timedelta(hours=5))
    future = fix_at(day("2037-01-01"))
    layout_store.write_fixes([late, future])

    report = layout_store.maintain(NOW)

    assert "positions_p20190307" in report.created
    assert "positions_p20370101" in report.created
    assert report.rows_moved == 2
    assert rows_in(pg_dsn, pg_schema, "positions_default") == 0
    assert rows_in(pg_dsn, pg_schema, "positions_p20190307") == 1
    assert layout_store.track(late.device_id) == [late, future]


@needs_postgres
def test_resent_fix_after_move_is_not_stored_twice(
    layout_store: PostgresStore,
) -> None:
    late = fix_at(day("2019-03-07"))
    layout_store.write_fixes([late])
    layout_store.maintain(NOW)

    stored = layout_store.write_fixes([late])

    assert stored == 0
    assert layout_store.count_fixes() == 1


@needs_postgres
def test_maintain_twice_changes_nothing(layout_store: PostgresStore) -> None:
    report = layout_store.maintain(NOW)

    assert report.created == []
    assert report.dropped == []


@needs_postgres
def test_maintain_moves_device_events_too(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    event = DeviceEvent("860000000000001", day("2020-02-02"), "login")
    layout_store.write_device_events([event])

    layout_store.maintain(NOW)

    assert rows_in(pg_dsn, pg_schema, "device_events_p20200202") == 1
    assert layout_store.device_events() == [event]


@needs_postgres
@pytest.mark.parametrize(
    "layout_store",
    [StorageLayout(partition_interval="week", partitions_ahead=1, timescaledb="off")],
    indirect=True,
)
def test_weekly_partitions_start_on_monday(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    names = partitions_of(pg_dsn, pg_schema)

    assert "positions_p20240429" in names
    assert "positions_p20240506" in names
    assert "positions_p20240501" not in names


@needs_postgres
def test_interval_change_fills_only_gaps(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    weekly = PostgresStore(
        pg_dsn,
        schema=pg_schema,
        layout=StorageLayout(partition_interval="week", timescaledb="off"),
    )
    try:
        report = weekly.maintain(NOW)
    finally:
        weekly.close()

    # Daily partitions cover 1-4 May; the week of 29 April gets its first
    # two days and its last two as separate partitions, then whole weeks.
    assert "positions_p20240429" in report.created
    assert "positions_p20240505" in report.created
    assert "positions_p20240506" in report.created
    assert "positions_p20240501" in partitions_of(pg_dsn, pg_schema)


@needs_postgres
@pytest.mark.parametrize(
    "layout_store",
    [StorageLayout(retention_days=30, timescaledb="off")],
    indirect=True,
)
def test_retention_drops_old_partitions_and_rows(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    old, recent = fix_at(NOW - 40 * DAY), fix_at(NOW - 2 * DAY)
    layout_store.write_fixes([old, recent])
    # Three weeks ago the old fix was within retention and got a partition.
    layout_store.maintain(NOW - 21 * DAY)
    older = fix_at(NOW - 400 * DAY)
    layout_store.write_fixes([older])

    report = layout_store.maintain(NOW)

    assert partition_name("positions", interval_start(old.time, "day")) in (
        report.dropped
    )
    assert report.rows_expired == 1
    assert layout_store.track(old.device_id) == [recent]


@needs_postgres
def test_migrate_partitions_existing_unpartitioned_data(
    pg_dsn: str, pg_schema: str
) -> None:
    from postloan.store.migrations import _POSTGRES_BASE

    fixes = [fix_at(day("2023-12-31") + i * timedelta(hours=8)) for i in range(6)]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for statement in _POSTGRES_BASE[0].statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (1, 'v1')")
        conn.execute("SET TIME ZONE 'UTC'")
        for fix in fixes:
            conn.execute(
                "INSERT INTO positions (device_id, time, latitude, longitude, "
                "speed_kmh, valid) VALUES (%s, %s, %s, %s, 0, true)",
                (fix.device_id, fix.time, fix.latitude, fix.longitude),
            )

    store = PostgresStore(pg_dsn, schema=pg_schema, layout=StorageLayout())
    try:
        store.migrate()
        track = store.track(fixes[0].device_id)
    finally:
        store.close()

    assert track == fixes
    assert "positions_p20231231" in partitions_of(pg_dsn, pg_schema)
    assert rows_in(pg_dsn, pg_schema, "positions_default") == 0


def is_clustered(dsn: str, schema: str, partition: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT i.indisclustered FROM pg_index i "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary",
            (f'"{schema}".{partition}',),
        ).fetchone()
    return bool(row and row[0])


@needs_postgres
def test_maintain_clusters_closed_partition_once(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    fixes = [fix_at(NOW + timedelta(minutes=m), f"dev{m % 3}") for m in range(30)]
    layout_store.write_fixes(fixes)

    first = layout_store.maintain(NOW + 2 * DAY)
    second = layout_store.maintain(NOW + 2 * DAY)

    assert "positions_p20240501" in first.clustered
    assert "positions_p20240501" not in second.clustered
    assert is_clustered(pg_dsn, pg_schema, "positions_p20240501")
    assert layout_store.track("dev1") == fixes[1::3]


def column_correlation(dsn: str, schema: str, table: str, column: str) -> float | None:
    """Return the planner's physical-order correlation of a column, None if unset."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT correlation FROM pg_stats "
            "WHERE schemaname = %s AND tablename = %s AND attname = %s",
            (schema, table, column),
        ).fetchone()
    return None if row is None else float(row[0])


@needs_postgres
def test_maintain_analyzes_clustered_partition(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    # Written in time order, so the heap interleaves the three devices.
    fixes = [fix_at(NOW + timedelta(minutes=m), f"dev{m % 3}") for m in range(300)]
    layout_store.write_fixes(fixes)

    report = layout_store.maintain(NOW + 2 * DAY)
    correlation = column_correlation(
        pg_dsn, pg_schema, "positions_p20240501", "device_id"
    )

    assert "positions_p20240501" in report.clustered
    assert correlation == pytest.approx(1.0)


@needs_postgres
def test_maintain_leaves_open_and_empty_partitions_unclustered(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    layout_store.write_fixes([fix_at(NOW + DAY)])

    report = layout_store.maintain(NOW + DAY + timedelta(minutes=30))

    assert report.clustered == []
    assert not is_clustered(pg_dsn, pg_schema, "positions_p20240502")


@needs_postgres
def test_writer_connection_gives_up_on_busy_lock(
    layout_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    with psycopg.connect(pg_dsn) as blocker:
        blocker.execute(
            f'LOCK TABLE "{pg_schema}".positions_p20240501 IN ACCESS EXCLUSIVE MODE'
        )

        with pytest.raises(psycopg.errors.LockNotAvailable):
            layout_store.write_fixes([fix_at(NOW)])
