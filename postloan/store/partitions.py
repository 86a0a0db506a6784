"""Maintenance of native range partitions: create ahead, adopt strays, expire.

Each time-series table (see `postloan.store.layout`) has partitions of one
day or one week, named ``<table>_p<YYYYMMDD>`` after their first day, and a
default partition ``<table>_default``. A fix whose time has no partition
(a late backfill, a device clock years off) lands in the default partition,
so no write is ever rejected for its time. A maintenance run then:

1. drops partitions that lie wholly before the retention cutoff, and deletes
   rows of the default partition before it;
2. creates a partition for every interval that has rows in the default
   partition, moving those rows into it;
3. creates the partitions from the current interval to `partitions_ahead`
   intervals after it;
4. with `StorageLayout.covering_index`, builds the covering index on each
   partition of positions that is not closed yet and lacks it;
5. clusters closed partitions on their primary key (device, time), newest
   first and at most CLUSTER_PER_RUN per table per run. Fixes arrive in time
   order, so one device's day is spread over as many heap pages as it has
   fixes. Clustered, it fills a few dozen pages (see bench/RESULTS-store.md
   for the effect on fetch times). CLUSTER locks the partition while it
   rewrites it, 2.5 to 7 s for 1.4 million rows on the benchmark machine,
   so the store's writer waits at most its lock timeout and then spools.
   A covering index is dropped before the CLUSTER, and each clustered
   partition is then analyzed, so the planner's statistics record that its
   rows are now in (device, time) order.

New partitions are built as plain tables and then attached, because ATTACH
PARTITION needs only a SHARE UPDATE EXCLUSIVE lock on the parent (PostgreSQL
12 and later) while CREATE TABLE ... PARTITION OF takes ACCESS EXCLUSIVE,
which would stall the gateway's inserts behind a long analyst query. Every
step runs in its own transaction with a lock timeout, so a step that cannot
get its locks is skipped and retried by the next run. The one exception is
the covering index of an existing partition: CREATE INDEX CONCURRENTLY
cannot run in a transaction, so it runs alone under the same lock timeout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from postloan.store.base import MaintenanceReport
from postloan.store.layout import (
    COVERING_INDEX_SPEC,
    COVERING_INDEX_SUFFIX,
    TIME_SERIES_TABLES,
    StorageLayout,
)

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[TupleRow]

# A partition counts as closed this long after its end, when late fixes have
# mostly arrived.
CLOSED_AFTER = timedelta(hours=1)
CLUSTER_PER_RUN = 2
_FAR_PAST = datetime.min.replace(tzinfo=UTC)
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)
_BOUND = re.compile(r"FOR VALUES FROM \((?P<lower>[^)]*)\) TO \((?P<upper>[^)]*)\)")


@dataclass(frozen=True, slots=True)
class Partition:
    """One range partition: rows with lower <= time < upper."""

    name: str
    lower: datetime
    upper: datetime


def interval_start(value: datetime, interval: str) -> datetime:
    """Return the start of the UTC day, or the ISO week (Monday), holding `value`."""
    day = value.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        return day - timedelta(days=day.weekday())
    return day


def interval_end(start: datetime, interval: str) -> datetime:
    return start + (timedelta(weeks=1) if interval == "week" else timedelta(days=1))


def uncovered(
    lower: datetime, upper: datetime, partitions: Iterable[Partition]
) -> list[tuple[datetime, datetime]]:
    """Return the parts of [lower, upper) that no partition covers, in order.

    After a change of `partition_interval`, a new interval can overlap
    partitions of the old one; only its uncovered parts become partitions.
    """
    gaps: list[tuple[datetime, datetime]] = []
    cursor = lower
    for partition in sorted(partitions, key=lambda p: p.lower):
        if partition.upper <= cursor or partition.lower >= upper:
            continue
        if partition.lower > cursor:
            gaps.append((cursor, partition.lower))
        cursor = max(cursor, partition.upper)
        if cursor >= upper:
            return gaps
    if cursor < upper:
        gaps.append((cursor, upper))
    return gaps


def parse_bound(text: str) -> datetime:
    """Parse one side of a partition bound as pg_get_expr prints it (DateStyle ISO)."""
    value = text.strip()
    if value == "MINVALUE" or value == "'-infinity'":
        return _FAR_PAST
    if value == "MAXVALUE" or value == "'infinity'":
        return _FAR_FUTURE
    return datetime.fromisoformat(value.strip("'")).astimezone(UTC)


def partition_name(table: str, lower: datetime) -> str:
    return f"{table}_p{lower:%Y%m%d}"


class PartitionMaintainer:
    """Run the maintenance steps on every time-series table of one schema."""

    def __init__(self, layout: StorageLayout, *, lock_timeout_s: float = 5.0) -> None:
        self.layout = layout
        self.lock_timeout_ms = int(lock_timeout_s * 1000)

    def run(self, conn: Connection, now: datetime) -> MaintenanceReport:
        """Maintain each partitioned table; `conn` must be in autocommit mode."""
        report = MaintenanceReport()
        for table in TIME_SERIES_TABLES:
            if is_partitioned(conn, table):
                self._maintain_table(conn, table, now, report)
        return report

    def _maintain_table(
        self, conn: Connection, table: str, now: datetime, report: MaintenanceReport
    ) -> None:
        interval = self.layout.partition_interval
        if self.layout.retention_days:
            cutoff = now - timedelta(days=self.layout.retention_days)
            self._expire(conn, table, cutoff, report)
        needed = set(self._default_intervals(conn, table))
        start = interval_start(now, interval)
        for _ in range(self.layout.partitions_ahead + 1):
            needed.add(start)
            start = interval_end(start, interval)
        for lower in sorted(needed):
            upper = interval_end(lower, interval)
            for gap_lower, gap_upper in uncovered(
                lower, upper, list_partitions(conn, table)
            ):
                self._create(conn, table, gap_lower, gap_upper, now, report)
        if self._wants_covering_index(table):
            for partition in list_partitions(conn, table):
                if not _is_closed(partition, now):
                    self._add_covering_index(conn, partition.name, report)
        self._cluster_closed(conn, table, now, report)

    def _wants_covering_index(self, table: str) -> bool:
        return self.layout.covering_index and table == "positions"

    def _add_covering_index(
        self, conn: Connection, partition: str, report: MaintenanceReport
    ) -> None:
        """Build the covering index on a partition that lacks a valid one.

        CREATE INDEX CONCURRENTLY lets the gateway keep writing meanwhile. A
        build that fails (a lock timeout, a cancel) leaves an invalid index,
        which the next run drops and builds again.
        """
        index = f"{partition}{COVERING_INDEX_SUFFIX}"
        valid = _index_validity(conn, index)
        if valid:
            return
        try:
            conn.execute(
                sql.SQL("SET lock_timeout = {}").format(
                    sql.Literal(f"{self.lock_timeout_ms}ms")
                )
            )
            if valid is False:
                conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(index))
                )
            conn.execute(
                sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} {}").format(
                    sql.Identifier(index),
                    sql.Identifier(partition),
                    sql.SQL(COVERING_INDEX_SPEC),
                )
            )
        except psycopg.errors.LockNotAvailable:
            logger.warning("covering index %s not built: its locks were busy", index)
            report.skipped.append(index)
            return
        finally:
            if not conn.broken:
                conn.execute("RESET lock_timeout")
        logger.info("built covering index %s", index)

    def _cluster_closed(
        self, conn: Connection, table: str, now: datetime, report: MaintenanceReport
    ) -> None:
        closed = [
            partition
            for partition in reversed(list_partitions(conn, table))
            if _is_closed(partition, now)
        ]
        done = 0
        for partition in closed:
            if done == CLUSTER_PER_RUN:
                return
            key = _primary_key_index(conn, partition.name)
            if key is None or key[1] or _is_empty(conn, partition.name):
                continue
            table_name = sql.Identifier(partition.name)
            try:
                with conn.transaction():
                    self._set_lock_timeout(conn)
                    # A clustered partition keeps each device-day on a few
                    # pages, so the covering index no longer saves reads
                    # there. Dropping it first also spares CLUSTER a rebuild.
                    conn.execute(
                        sql.SQL("DROP INDEX IF EXISTS {}").format(
                            sql.Identifier(f"{partition.name}{COVERING_INDEX_SUFFIX}")
                        )
                    )
                    conn.execute(
                        sql.SQL("CLUSTER {} USING {}").format(
                            table_name, sql.Identifier(key[0])
                        )
                    )
                    # CLUSTER keeps the planner statistics from before the
                    # rewrite, and autovacuum does not analyze a partition
                    # that takes no more writes. The old statistics plan a
                    # device-day read as a bitmap heap scan and a sort. Fresh
                    # ones plan an index scan, which needs no sort.
                    conn.execute(sql.SQL("ANALYZE {}").format(table_name))
            except psycopg.errors.LockNotAvailable:
                logger.warning("partition %s not clustered: locks busy", partition.name)
                report.skipped.append(partition.name)
                continue
            done += 1
            report.clustered.append(partition.name)
            logger.info("clustered partition %s by device and time", partition.name)

    def _default_intervals(self, conn: Connection, table: str) -> list[datetime]:
        unit = sql.Literal(self.layout.partition_interval)
        rows = conn.execute(
            sql.SQL("SELECT DISTINCT date_trunc({}, time) FROM {}").format(
                unit, sql.Identifier(f"{table}_default")
            )
        ).fetchall()
        return [value.astimezone(UTC) for (value,) in rows]

    def _create(
        self,
        conn: Connection,
        table: str,
        lower: datetime,
        upper: datetime,
        now: datetime,
        report: MaintenanceReport,
    ) -> None:
        name = partition_name(table, lower)
        covering = self._wants_covering_index(table) and not _is_closed(
            Partition(name, lower, upper), now
        )
        parent = sql.Identifier(table)
        default = sql.Identifier(f"{table}_default")
        child = sql.Identifier(name)
        bounds = {"lower": sql.Literal(lower), "upper": sql.Literal(upper)}
        try:
            with conn.transaction():
                self._set_lock_timeout(conn)
                # Taken first, so no insert can add a row in [lower, upper) to
                # the default partition between the move and the attach.
                conn.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(default)
                )
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS "
                        "INCLUDING CONSTRAINTS)"
                    ).format(child, parent)
                )
                moved = conn.execute(
                    sql.SQL(
                        "WITH moved AS (DELETE FROM {default} WHERE time >= {lower} "
                        "AND time < {upper} RETURNING *) "
                        "INSERT INTO {child} SELECT * FROM moved"
                    ).format(default=default, child=child, **bounds)
                ).rowcount
                if covering:
                    # Built before the attach, while the new table is still
                    # private to this transaction.
                    conn.execute(
                        sql.SQL("CREATE INDEX {} ON {} {}").format(
                            sql.Identifier(f"{name}{COVERING_INDEX_SUFFIX}"),
                            child,
                            sql.SQL(COVERING_INDEX_SPEC),
                        )
                    )
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} ATTACH PARTITION {} "
                        "FOR VALUES FROM ({lower}) TO ({upper})"
                    ).format(parent, child, **bounds)
                )
        except psycopg.errors.LockNotAvailable:
            logger.warning("partition %s skipped: its locks were busy", name)
            report.skipped.append(name)
            return
        report.created.append(name)
        report.rows_moved += max(moved, 0)
        logger.info(
            "created partition %s [%s, %s) with %d rows from %s_default",
            name,
            lower.isoformat(),
            upper.isoformat(),
            moved,
            table,
        )

    def _expire(
        self,
        conn: Connection,
        table: str,
        cutoff: datetime,
        report: MaintenanceReport,
    ) -> None:
        for partition in list_partitions(conn, table):
            if partition.upper > cutoff:
                continue
            try:
                with conn.transaction():
                    self._set_lock_timeout(conn)
                    conn.execute(
                        sql.SQL("DROP TABLE {}").format(sql.Identifier(partition.name))
                    )
            except psycopg.errors.LockNotAvailable:
                logger.warning("expired partition %s kept: locks busy", partition.name)
                report.skipped.append(partition.name)
                continue
            report.dropped.append(partition.name)
            logger.info("dropped partition %s, older than retention", partition.name)
        with conn.transaction():
            self._set_lock_timeout(conn)
            report.rows_expired += conn.execute(
                sql.SQL("DELETE FROM {} WHERE time < %s").format(
                    sql.Identifier(f"{table}_default")
                ),
                (cutoff,),
            ).rowcount

    def _set_lock_timeout(self, conn: Connection) -> None:
        conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(
                sql.Literal(f"{self.lock_timeout_ms}ms")
            )
        )


def is_partitioned(conn: Connection, table: str) -> bool:
    """Report whether `table` in the current schema is a partitioned table."""
    row = conn.execute(
        "SELECT c.relkind = 'p' FROM pg_catalog.pg_class c "
        "WHERE c.oid = to_regclass(%s)",
        (table,),
    ).fetchone()
    return bool(row and row[0])


def _is_closed(partition: Partition, now: datetime) -> bool:
    return partition.upper <= now - CLOSED_AFTER


def _index_validity(conn: Connection, index: str) -> bool | None:
    """Return whether the index is valid, or None if it does not exist."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_catalog.pg_index i "
        "WHERE i.indexrelid = to_regclass(%s)",
        (sql.Identifier(index).as_string(conn),),
    ).fetchone()
    return None if row is None else bool(row[0])


def _is_empty(conn: Connection, table: str) -> bool:
    row = conn.execute(
        sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
    ).fetchone()
    return bool(row and row[0])


def _primary_key_index(conn: Connection, table: str) -> tuple[str, bool] | None:
    """Return the name of the table's primary key index and whether it is clustered."""
    row = conn.execute(
        "SELECT c.relname, i.indisclustered FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary",
        (table,),
    ).fetchone()
    return None if row is None else (str(row[0]), bool(row[1]))


def list_partitions(conn: Connection, table: str) -> list[Partition]:
    """Return the range partitions of `table` (not its default) by lower bound."""
    with conn.transaction():
        # pg_get_expr prints bounds in the session's DateStyle and TimeZone.
        conn.execute("SET LOCAL DateStyle = 'ISO'")
        rows = conn.execute(
            "SELECT c.relname, pg_catalog.pg_get_expr(c.relpartbound, c.oid) "
            "FROM pg_catalog.pg_inherits i "
            "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            (table,),
        ).fetchall()
    partitions = []
    for name, bound in rows:
        match = _BOUND.search(bound)
        if match is None:  # the DEFAULT partition
            continue
        partitions.append(
            Partition(name, parse_bound(match["lower"]), parse_bound(match["upper"]))
        )
    return sorted(partitions, key=lambda p: p.lower)
