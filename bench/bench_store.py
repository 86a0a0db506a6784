"""Benchmark the PostgreSQL track store: ingest rate and the fetch of one device-day.

Ingest: the same fixes are written in the same batches two ways, in
alternating rounds so that load from other processes hits both alike:

* through ``PostgresStore.write_fixes``, the gateway writer's path (binary
  COPY into the partitioned ``positions`` with de-duplication, plus the
  track heads);
* as a raw binary COPY into a plain table with the same columns and primary
  key, one transaction per batch, on the same connection.

Fetch: ``--rows`` positions are generated in SQL (``generate_series``) into
daily partitions, 30 s apart per device and in time order, as a fleet
reports them. Maintenance then clusters the closed days. The last day stays
open: it is loaded half an hour at a time, and a VACUUM runs whenever
autovacuum's insert trigger (PostgreSQL 13 and later) would have fired, so
the fixes after the last trigger are not yet all-visible. ``Store.track``
fetches random (device, UTC day) pairs, and the median and 95th percentile
are reported beside the time of the bare SQL query.

``--covering-index`` runs everything with ``StorageLayout(covering_index=
True)``: every partition is created with a covering index, so the ingest
and the load pay for it, and the open day is read by an index-only scan.
Maintenance drops the index from the closed days when it clusters them.

Everything lives in a throwaway schema of the database named by ``--dsn``
(default: POSTLOAN_TEST_PG_DSN or postgresql://postgres@127.0.0.1:5432/test),
dropped at the end unless ``--keep`` is given. Run from the repository root:

    .venv/bin/python bench/bench_store.py --rows 10000000
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from postloan.model import Fix
from postloan.store import PostgresStore, StorageLayout
from postloan.store.partitions import partition_name
from postloan.store.postgres import (
    _COPY_POSITIONS,
    _TRACK_COLUMNS,
    _copy_rows,
    _fix_row,
)

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
FIXES_PER_DEVICE_DAY = 2880  # one fix every 30 s


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


# --- ingest ------------------------------------------------------------------------


def fleet_fixes(devices: int, count: int, start: datetime) -> list[Fix]:
    """Build `count` fixes of `devices` devices interleaved by time, 10 s apart."""
    return [
        Fix(
            f"86{i % devices:013d}",
            start + timedelta(seconds=10 * (i // devices)),
            38.7 + (i // devices) * 1e-5,
            -9.14 + (i % devices) * 1e-4,
            speed_kmh=42.0,
            course=90.0,
            altitude_m=80.0,
            satellites=9,
            attributes={"mileage_km": round((i // devices) * 0.1, 1)},
        )
        for i in range(count)
    ]


def raw_copy(store: PostgresStore, table: str) -> Callable[[Sequence[Fix]], int]:
    statement = _COPY_POSITIONS.replace("positions", table, 1)

    def write(fixes: Sequence[Fix]) -> int:
        rows = [_fix_row(fix) for fix in fixes]
        with store._transaction() as conn, conn.cursor() as cursor:
            _copy_rows(cursor, statement, rows)
        return len(rows)

    return write


def bench_ingest(store: PostgresStore, args: argparse.Namespace) -> dict[str, float]:
    with store._transaction() as conn:
        conn.execute("CREATE TABLE positions_raw (LIKE positions INCLUDING DEFAULTS)")
        conn.execute("ALTER TABLE positions_raw ADD PRIMARY KEY (device_id, time)")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    fixes = fleet_fixes(args.devices, args.ingest_fixes, today)
    writers = {"store": store.write_fixes, "raw": raw_copy(store, "positions_raw")}
    seconds = {"store": 0.0, "raw": 0.0}
    batches = [fixes[i : i + args.batch] for i in range(0, len(fixes), args.batch)]
    for number, batch in enumerate(batches):
        # Alternating which goes first spreads any warm-up effect evenly.
        for name in ("store", "raw") if number % 2 else ("raw", "store"):
            started = time.perf_counter()
            writers[name](batch)
            seconds[name] += time.perf_counter() - started
        if number % (len(batches) // 10 or 1) == 0:
            log(f"ingest batch {number + 1}/{len(batches)}")
    assert store.count_fixes() == len(fixes)

    # Resends: every batch repeats a tenth of the previous one, which sends
    # each batch down the de-duplicating path.
    resend_fixes = fleet_fixes(args.devices, len(fixes) // 4, today + timedelta(days=1))
    resend_s, stored = _timed_resends(store, resend_fixes, args.batch)
    assert stored == len(resend_fixes)
    return {
        "fixes": len(fixes),
        "store_per_s": len(fixes) / seconds["store"],
        "raw_per_s": len(fixes) / seconds["raw"],
        "ratio": seconds["raw"] / seconds["store"],
        "resend_per_s": len(resend_fixes) / resend_s,
    }


def _timed_resends(
    store: PostgresStore, fixes: Sequence[Fix], batch: int
) -> tuple[float, int]:
    stored = 0
    previous: Sequence[Fix] = ()
    started = time.perf_counter()
    for start in range(0, len(fixes), batch):
        current = fixes[start : start + batch]
        stored += store.write_fixes([*previous[: batch // 10], *current])
        previous = current
    return time.perf_counter() - started, stored


# --- fetch -------------------------------------------------------------------------

# Row i is fix number i // devices of device i % devices, so rows
# first .. first + count - 1 continue a day where an earlier call stopped.
_GENERATE_FIXES = """
    INSERT INTO positions (device_id, time, latitude, longitude, speed_kmh,
                           course, altitude_m, valid, satellites, attributes)
    SELECT 'bench' || lpad((i %% %(devices)s)::text, 10, '0'),
           %(day)s::timestamptz + (i / %(devices)s) * interval '30 seconds',
           38.7 + (i / %(devices)s) * 1e-5,
           -9.14 + (i %% %(devices)s) * 1e-4,
           (i %% 90)::double precision, (i %% 360)::double precision, 80.0,
           true, 9,
           jsonb_build_object('mileage_km', round((i / %(devices)s) * 0.1, 1))
    FROM generate_series(%(first)s::bigint, %(first)s::bigint + %(count)s - 1) AS i
"""
# Fixes per device in one load step of the open day: half an hour.
_OPEN_DAY_STEP = 60


def setting(conn: psycopg.Connection[tuple[Any, ...]], name: str) -> str:
    row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def generate_fixes(
    store: PostgresStore, day: datetime, devices: int, first: int, count: int
) -> None:
    params = {"devices": devices, "day": day, "first": first, "count": count}
    with store._transaction() as conn:
        conn.execute(_GENERATE_FIXES, params)


def load_open_day(
    store: PostgresStore, day: datetime, devices: int, unvacuumed_share: float | None
) -> int:
    """Load the open day in steps, vacuuming as autovacuum would.

    Autovacuum vacuums a table once the rows inserted since its last vacuum
    exceed autovacuum_vacuum_insert_threshold plus
    autovacuum_vacuum_insert_scale_factor times its row count. Autovacuum is
    switched off on the partition so that only this model runs. The real
    daemon also waits up to autovacuum_naptime (1 min by default) after the
    trigger, which is ignored here. With `unvacuumed_share`, the last VACUUM
    runs once that share of the day is still to come, and none after it.
    Return how many rows were inserted after the last VACUUM.
    """
    partition = sql.Identifier(partition_name("positions", day))
    with psycopg.connect(store._dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(partition)
        )
        threshold = float(setting(conn, "autovacuum_vacuum_insert_threshold"))
        scale = float(setting(conn, "autovacuum_vacuum_insert_scale_factor"))
        rows = vacuumed_rows = vacuums = 0
        step = devices * _OPEN_DAY_STEP
        total = devices * FIXES_PER_DEVICE_DAY
        last_at = math.inf
        if unvacuumed_share is not None:
            last_at = total * (1 - unvacuumed_share)
        for first in range(0, total, step):
            generate_fixes(store, day, devices, first, step)
            rows += step
            if rows >= last_at:
                due = vacuumed_rows < last_at
            else:
                due = rows - vacuumed_rows > threshold + scale * vacuumed_rows
            if due:
                conn.execute(sql.SQL("VACUUM {}").format(partition))
                vacuumed_rows = rows
                vacuums += 1
        # Autoanalyze keeps the statistics of a growing table current.
        conn.execute(sql.SQL("ANALYZE {}").format(partition))
        log(
            f"open day: {vacuums} VACUUMs, the last after {vacuumed_rows} of "
            f"{rows} rows"
        )
    return rows - vacuumed_rows


def load_rows(
    store: PostgresStore, rows: int, unvacuumed_share: float | None
) -> dict[str, Any]:
    """Generate `rows` positions; return the devices, first day, days and more."""
    days = max(1, min(7, rows // (FIXES_PER_DEVICE_DAY * 10)))
    devices = max(1, rows // (days * FIXES_PER_DEVICE_DAY))
    first_day = datetime.now(UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    ) - timedelta(days=days + 2)
    partitions = PostgresStore(
        store._dsn,
        schema=store.schema,
        layout=dataclasses.replace(store.layout, partitions_ahead=days),
    )
    partitions.maintain(first_day)
    partitions.close()

    started = time.perf_counter()
    closed_days = [first_day + timedelta(days=offset) for offset in range(days - 1)]
    for number, day in enumerate(closed_days, 1):
        generate_fixes(store, day, devices, 0, devices * FIXES_PER_DEVICE_DAY)
        log(f"loaded day {number}/{days} ({time.perf_counter() - started:.0f} s)")
    with psycopg.connect(store._dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema))
        )
        for day in closed_days:
            partition = sql.Identifier(partition_name("positions", day))
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(partition))
    log(f"vacuum done ({time.perf_counter() - started:.0f} s)")

    open_day = first_day + timedelta(days=days - 1)
    unvacuumed = load_open_day(store, open_day, devices, unvacuumed_share)
    log(f"loaded the open day ({time.perf_counter() - started:.0f} s)")

    # Maintenance at the end of the last loaded day clusters the days before
    # it, a few per run, as the gateway's periodic runs would. The last day
    # stays open and unclustered, like today's partition in production.
    cluster_started = time.perf_counter()
    while store.maintain(first_day + timedelta(days=days)).clustered:
        log(f"clustering ({time.perf_counter() - started:.0f} s)")
    return {
        "devices": devices,
        "first_day": first_day,
        "days": days,
        "unvacuumed": unvacuumed,
        "cluster_s": time.perf_counter() - cluster_started,
    }


def bench_fetch(store: PostgresStore, args: argparse.Namespace) -> dict[str, float]:
    loaded = load_rows(store, args.rows, args.unvacuumed_share)
    devices, first_day, days = loaded["devices"], loaded["first_day"], loaded["days"]
    results: dict[str, float] = {
        "rows": store.count_fixes(),
        "devices": devices,
        "days": days,
        "unvacuumed": loaded["unvacuumed"],
        "cluster_s": loaded["cluster_s"],
    }
    picker = random.Random(7)
    closed_days = [first_day + timedelta(days=n) for n in range(days - 1)]
    open_day = first_day + timedelta(days=days - 1)
    for label, choices in (("closed", closed_days), ("open", [open_day])):
        pairs = [
            (f"bench{picker.randrange(devices):010d}", picker.choice(choices))
            for _ in range(args.fetches + 20)
        ]
        for key, value in _time_fetches(store, pairs).items():
            results[f"{label}_{key}"] = value
    return results


def _time_fetches(
    store: PostgresStore, pairs: list[tuple[str, datetime]]
) -> dict[str, float]:
    """Time Store.track and the bare query on each (device, day); skip 20 warm-ups."""
    api_ms: list[float] = []
    sql_ms: list[float] = []
    sizes: list[int] = []
    for index, (device_id, day) in enumerate(pairs):
        window = (device_id, day, day + timedelta(days=1))
        # Alternating which runs first keeps either from always finding the
        # other's pages in shared buffers.
        order = ("api", "sql") if index % 2 else ("sql", "api")
        for which in order:
            started = time.perf_counter()
            if which == "api":
                track = store.track(*window)
            else:
                store._query(
                    f"SELECT {_TRACK_COLUMNS} FROM positions WHERE device_id = %s "
                    "AND time >= %s AND time < %s ORDER BY time",
                    window,
                    binary=True,
                )
            elapsed = (time.perf_counter() - started) * 1000
            if index >= 20:
                (api_ms if which == "api" else sql_ms).append(elapsed)
        if index >= 20:
            sizes.append(len(track))
    return {
        "fixes": statistics.median(sizes),
        "median_ms": statistics.median(api_ms),
        "p95_ms": statistics.quantiles(api_ms, n=20)[-1],
        "sql_median_ms": statistics.median(sql_ms),
    }


def print_results(
    version: str,
    args: argparse.Namespace,
    ingest: dict[str, float],
    fetch: dict[str, float],
) -> None:
    print(f"machine: {machine()}; PostgreSQL {version}")
    print(f"command: {' '.join(sys.argv)}")
    if args.covering_index:
        print("layout: covering index on open partitions")
    print(
        f"ingest: {ingest['fixes']:.0f} fixes in batches of {args.batch}: "
        f"store {ingest['store_per_s']:.0f} fixes/s, "
        f"raw COPY {ingest['raw_per_s']:.0f} fixes/s, "
        f"ratio {ingest['ratio']:.2f}; "
        f"with 10 % resends {ingest['resend_per_s']:.0f} fixes/s"
    )
    print(
        f"fetch: {fetch['rows']:.0f} rows ({fetch['devices']:.0f} devices x "
        f"{fetch['days']:.0f} days), one device-day = "
        f"{fetch['closed_fixes']:.0f} fixes; clustering took "
        f"{fetch['cluster_s']:.0f} s; {fetch['unvacuumed']:.0f} rows of the "
        "open day inserted after its last VACUUM"
    )
    for label, what in (("closed", "clustered closed days"), ("open", "open day")):
        print(
            f"  {what}: median {fetch[f'{label}_median_ms']:.2f} ms, "
            f"p95 {fetch[f'{label}_p95_ms']:.2f} ms "
            f"(SQL only: median {fetch[f'{label}_sql_median_ms']:.2f} ms)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn", default=os.environ.get("POSTLOAN_TEST_PG_DSN", DEFAULT_DSN)
    )
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="rows to generate for the fetch"
    )
    parser.add_argument(
        "--ingest-fixes", type=int, default=200_000, help="fixes written each way"
    )
    parser.add_argument(
        "--devices", type=int, default=2000, help="devices in the ingest"
    )
    parser.add_argument("--batch", type=int, default=500, help="fixes per write")
    parser.add_argument(
        "--fetches", type=int, default=200, help="device-days fetched and timed"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the benchmark schema afterwards"
    )
    parser.add_argument(
        "--unvacuumed-share",
        type=float,
        help="share of the open day (0 to 1) to insert after its last VACUUM; "
        "by default, as autovacuum's insert trigger falls",
    )
    parser.add_argument(
        "--covering-index",
        action="store_true",
        help="give open partitions the covering index (StorageLayout option)",
    )
    args = parser.parse_args()
    if args.unvacuumed_share is not None and not 0 <= args.unvacuumed_share <= 1:
        parser.error(f"--unvacuumed-share must be 0 to 1, got {args.unvacuumed_share}")

    schema = f"bench_store_{uuid.uuid4().hex[:8]}"
    layout = StorageLayout(timescaledb="off", covering_index=args.covering_index)
    store = PostgresStore(args.dsn, schema=schema, layout=layout)
    try:
        store.migrate()
        version = store._query("SHOW server_version")[0][0]
        version += f", shared_buffers {store._query('SHOW shared_buffers')[0][0]}"
        ingest = bench_ingest(store, args)
        with store._transaction() as conn:
            conn.execute("TRUNCATE positions, positions_raw, track_heads")
        fetch = bench_fetch(store, args)
    finally:
        store.close()
        if not args.keep:
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(schema)
                    )
                )
    print_results(version, args, ingest, fetch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
