"""The covering index on open partitions of positions (StorageLayout.covering_index)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from postloan.config import load_config
from postloan.model import Fix
from postloan.store import PostgresStore, StorageLayout, storage_layout

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
COVERING = StorageLayout(timescaledb="off", covering_index=True)

pytestmark = pytest.mark.postgres


def fix_at(moment: datetime, device_id: str, minute: int) -> Fix:
    return Fix(
        device_id,
        moment,
        22.5 + minute * 1e-4,
        114.05,
        speed_kmh=30.0,
        course=None if minute % 2 else 90.0,
        satellites=minute % 12,
        attributes={"mileage_km": minute / 10} if minute % 3 else {},
    )


def fleet_fixes(start: datetime, minutes: int) -> list[Fix]:
    """Three devices reporting once a minute, in arrival (time) order."""
    return [
        fix_at(start + timedelta(minutes=m), f"dev{d}", m)
        for m in range(minutes)
        for d in range(3)
    ]


def index_state(dsn: str, schema: str, index: str) -> tuple[bool, str] | None:
    """Return (valid, definition) of an index in the schema, None if missing."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indexrelid = to_regclass(%s)",
            (f'"{schema}".{index}',),
        ).fetchone()
    return None if row is None else (bool(row[0]), str(row[1]))


def store_with(dsn: str, schema: str, layout: StorageLayout) -> PostgresStore:
    store = PostgresStore(dsn, schema=schema, layout=layout)
    store.migrate()
    store.maintain(NOW)
    return store


@pytest.fixture
def covering_store(pg_dsn: str, pg_schema: str) -> Iterator[PostgresStore]:
    store = store_with(pg_dsn, pg_schema, COVERING)
    yield store
    store.close()


def test_open_partitions_get_covering_index(
    covering_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    today = index_state(pg_dsn, pg_schema, "positions_p20240501_covering")
    ahead = index_state(pg_dsn, pg_schema, "positions_p20240504_covering")

    assert today is not None
    assert today[0]
    assert '(device_id, "time") INCLUDE (latitude' in today[1]
    assert ahead is not None
    assert index_state(pg_dsn, pg_schema, "device_events_p20240501_covering") is None


def test_covering_index_off_by_default(pg_dsn: str, pg_schema: str) -> None:
    store = store_with(pg_dsn, pg_schema, StorageLayout(timescaledb="off"))
    store.close()

    assert index_state(pg_dsn, pg_schema, "positions_p20240501_covering") is None


def test_track_read_is_index_only_scan(
    covering_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    fixes = fleet_fixes(NOW, 60)
    covering_store.write_fixes(fixes)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        conn.execute("VACUUM positions_p20240501")
        # The partition is tiny, so keep the planner off the sequential scan.
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT time, latitude, longitude, speed_kmh, course, "
                "altitude_m, valid, satellites, attributes::text FROM positions "
                "WHERE device_id = 'dev1' AND time >= %s AND time < %s ORDER BY time",
                (NOW, NOW + DAY),
            )
        )

    assert "Index Only Scan using positions_p20240501_covering" in plan
    assert covering_store.track("dev1", NOW, NOW + DAY) == fixes[1::3]


def test_clustering_drops_covering_index(
    covering_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    fixes = fleet_fixes(NOW, 30)
    covering_store.write_fixes(fixes)

    report = covering_store.maintain(NOW + 2 * DAY)

    assert "positions_p20240501" in report.clustered
    assert index_state(pg_dsn, pg_schema, "positions_p20240501_covering") is None
    assert index_state(pg_dsn, pg_schema, "positions_p20240503_covering") is not None
    assert covering_store.track("dev2") == fixes[2::3]


def test_covering_index_added_to_existing_partitions(
    pg_dsn: str, pg_schema: str
) -> None:
    plain = store_with(pg_dsn, pg_schema, StorageLayout(timescaledb="off"))
    plain.write_fixes(fleet_fixes(NOW, 10))
    plain.close()

    covering = store_with(pg_dsn, pg_schema, COVERING)
    covering.close()
    state = index_state(pg_dsn, pg_schema, "positions_p20240501_covering")

    assert state is not None
    assert state[0]


def test_invalid_covering_index_is_rebuilt(
    covering_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    covering_store.write_fixes(fleet_fixes(NOW, 10))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        conn.execute("DROP INDEX positions_p20240501_covering")
        # A concurrent build that fails leaves an invalid index behind: here
        # a unique index on a column whose values repeat.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY positions_p20240501_covering "
                "ON positions_p20240501 (speed_kmh)"
            )
    broken = index_state(pg_dsn, pg_schema, "positions_p20240501_covering")

    covering_store.maintain(NOW)
    rebuilt = index_state(pg_dsn, pg_schema, "positions_p20240501_covering")

    assert broken is not None
    assert not broken[0]
    assert rebuilt is not None
    assert rebuilt[0]
    assert "INCLUDE (latitude" in rebuilt[1]


def test_store_setting_turns_covering_index_on(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[store]\ncovering_index = true\ntimescaledb = "off"\n')
    assert storage_layout(load_config(str(path)).store) == COVERING
    assert not storage_layout(load_config(None).store).covering_index
