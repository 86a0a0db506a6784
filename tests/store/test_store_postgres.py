"""PostgreSQL backend specifics: COPY batches, schemas, indexes, reconnects."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from postloan.model import Fix
from postloan.store import PostgresStore, open_store
from postloan.store.base import JsonAttributes
from postloan.store.postgres import HEAD_REFRESH

pytestmark = pytest.mark.postgres

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def fleet_fixes(devices: int, per_device: int) -> list[Fix]:
    """Build fixes of several devices, interleaved by time as they arrive."""
    return [
        Fix(
            f"86000000{d:07d}",
            T0 + timedelta(seconds=15 * i, microseconds=d),
            22.5 + i * 1e-5,
            114.05 + d * 1e-3,
            speed_kmh=float(i % 120),
            course=float(i % 360),
            satellites=9,
            attributes={"mileage_km": i * 0.25},
        )
        for i in range(per_device)
        for d in range(devices)
    ]


def test_postgres_copy_batch_of_50000_fixes(
    postgres_store: PostgresStore, record_property: Callable[[str, object], None]
) -> None:
    fixes = fleet_fixes(devices=100, per_device=500)

    started = time.perf_counter()
    stored = postgres_store.write_fixes(fixes)
    elapsed = time.perf_counter() - started
    record_property("copy_50000_fixes_s", round(elapsed, 3))

    assert stored == 50_000
    assert postgres_store.count_fixes() == 50_000
    assert postgres_store.write_fixes(fixes) == 0
    assert len(postgres_store.latest_positions()) == 100


def test_postgres_copy_batch_dedupes_inside_and_against_stored(
    postgres_store: PostgresStore,
) -> None:
    fixes = fleet_fixes(devices=3, per_device=10)
    postgres_store.write_fixes(fixes[:10])

    stored = postgres_store.write_fixes(fixes + fixes[20:])

    assert stored == 20
    assert postgres_store.count_fixes() == 30


def test_postgres_schemas_isolate_stores(
    postgres_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    other = PostgresStore(pg_dsn, schema=f"{pg_schema}_other")
    try:
        other.migrate()
        postgres_store.write_fixes(fleet_fixes(devices=1, per_device=3))

        other_count = other.count_fixes()
    finally:
        other.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{pg_schema}_other" CASCADE')

    assert other_count == 0
    assert postgres_store.count_fixes() == 3


def test_postgres_records_timescaledb_availability(
    postgres_store: PostgresStore, pg_dsn: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()

    assert row is not None
    assert postgres_store.timescaledb is (row[0] == 1)


def test_postgres_positions_indexes(
    postgres_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT indexdef FROM pg_indexes "
            "WHERE schemaname = %s AND tablename = 'positions'",
            (pg_schema,),
        ).fetchall()
    definitions = " | ".join(definition for (definition,) in rows)

    assert "UNIQUE INDEX positions_pkey" in definitions
    assert 'btree (device_id, "time")' in definitions
    assert 'USING brin ("time")' in definitions


def test_postgres_attributes_stored_as_jsonb(
    postgres_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    postgres_store.write_fixes(fleet_fixes(devices=1, per_device=1))

    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            f'SELECT jsonb_typeof(attributes) FROM "{pg_schema}".positions'
        ).fetchone()

    assert row == ("object",)


def test_postgres_migrate_rejects_newer_schema(
    postgres_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            f'INSERT INTO "{pg_schema}".schema_migrations (version, name) '
            "VALUES (99, 'from the future')"
        )

    with pytest.raises(RuntimeError, match=r"schema versions \[99\]"):
        postgres_store.migrate()


def test_postgres_writer_reconnects_after_server_drops_it(
    postgres_store: PostgresStore, pg_dsn: str
) -> None:
    fixes = fleet_fixes(devices=1, per_device=4)
    postgres_store.write_fixes(fixes[:2])
    writer_pid = postgres_store._writer.info.backend_pid
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (writer_pid,))

    with pytest.raises(psycopg.OperationalError):
        postgres_store.write_fixes(fixes[2:])
    stored = postgres_store.write_fixes(fixes[2:])

    assert stored == 2
    assert postgres_store.track(fixes[0].device_id) == fixes


def test_open_store_postgres_url(pg_dsn: str) -> None:
    store = open_store(pg_dsn, migrate=False)

    store.close()

    assert isinstance(store, PostgresStore)
    assert store.schema == "public"


def test_open_store_takes_schema_from_search_path_option(
    pg_dsn: str, pg_schema: str
) -> None:
    separator = "&" if "?" in pg_dsn else "?"
    url = f"{pg_dsn}{separator}options=-csearch_path%3D{pg_schema}"

    store = open_store(url)
    store.close()

    assert isinstance(store, PostgresStore)
    assert store.schema == pg_schema


def test_postgres_track_attributes_parse_on_access(
    postgres_store: PostgresStore,
) -> None:
    fixes = fleet_fixes(devices=1, per_device=2)
    postgres_store.write_fixes(fixes)

    track = postgres_store.track(fixes[0].device_id)

    assert isinstance(track[1].attributes, JsonAttributes)
    assert track[1].attributes["mileage_km"] == 0.25
    assert dict(track[1].attributes) == {"mileage_km": 0.25}
    assert track == fixes


def test_postgres_resent_fix_takes_deduplicating_path(
    postgres_store: PostgresStore,
) -> None:
    fixes = fleet_fixes(devices=2, per_device=5)
    postgres_store.write_fixes(fixes[:4])

    stored = postgres_store.write_fixes(fixes[2:])

    assert stored == 6
    assert postgres_store.count_fixes() == 10


def test_postgres_latest_positions_with_head_behind(
    postgres_store: PostgresStore,
) -> None:
    device = "860000000000042"
    early = [Fix(device, T0 + timedelta(minutes=m), 1.0, 2.0) for m in range(3)]
    postgres_store.write_fixes(early)
    # Within HEAD_REFRESH of the head written above, so the head stays put.
    later = Fix(device, T0 + HEAD_REFRESH - timedelta(seconds=1), 1.5, 2.5)
    postgres_store.write_fixes([later])

    assert postgres_store.latest_positions() == [later]


def test_postgres_latest_positions_after_restart(
    postgres_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    device = "860000000000043"
    postgres_store.write_fixes([Fix(device, T0, 1.0, 2.0)])
    other = PostgresStore(pg_dsn, schema=pg_schema)
    try:
        newest = Fix(device, T0 + timedelta(hours=2), 3.0, 4.0)
        other.write_fixes([newest])
        late = Fix(device, T0 + timedelta(hours=1), 5.0, 6.0)
        postgres_store.write_fixes([late])

        latest = other.latest_positions()
    finally:
        other.close()

    assert latest == [newest]


@pytest.mark.parametrize("enabled", [True, False], ids=["gc-on", "gc-off"])
def test_postgres_track_leaves_gc_as_found(
    postgres_store: PostgresStore, enabled: bool
) -> None:
    fixes = fleet_fixes(devices=1, per_device=50)
    postgres_store.write_fixes(fixes)
    was_enabled = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        track = postgres_store.track(fixes[0].device_id)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was_enabled else gc.disable)()

    assert track == sorted(fixes, key=lambda fix: fix.time)
