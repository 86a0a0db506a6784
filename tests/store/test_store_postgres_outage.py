"""A PostgreSQL store made while its server is down, and the migration retry.

`postloan run` and `postloan worker` make the store and migrate it at start;
a server that is down then must delay the migration, not stop the process.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg
import pytest

from postloan.model import Fix
from postloan.runner import migrate_when_available
from postloan.store import PostgresStore, open_store

if TYPE_CHECKING:
    from conftest import PostgresCluster

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def test_store_opens_while_server_down_and_reconnects(
    pg_cluster: PostgresCluster,
) -> None:
    pg_cluster.stop()
    store = open_store(pg_cluster.dsn, migrate=False)
    try:
        with pytest.raises(psycopg.OperationalError) as failure:
            store.migrate()
        assert store.is_unavailable(failure.value)
        with pytest.raises(psycopg.OperationalError):
            store.count_fixes()

        pg_cluster.start()
        store.migrate()
        fix = Fix("dev-1", datetime(2024, 5, 1, 8, 0, tzinfo=UTC), 48.1, 11.5)
        assert store.write_fixes([fix]) == 1
        assert store.count_fixes() == 1
    finally:
        store.close()


def test_migrate_when_available_waits_for_the_server(
    pg_cluster: PostgresCluster,
) -> None:
    pg_cluster.stop()
    store = PostgresStore(pg_cluster.dsn)

    async def scenario() -> bool:
        stop = asyncio.Event()
        migrating = asyncio.create_task(migrate_when_available(store, stop))
        await asyncio.sleep(1.5)
        assert not migrating.done()
        await asyncio.to_thread(pg_cluster.start)
        return await asyncio.wait_for(migrating, 60)

    try:
        assert asyncio.run(scenario()) is True
        assert store.count_fixes() == 0
    finally:
        store.close()


def test_migrate_when_available_returns_false_on_stop(
    pg_cluster: PostgresCluster,
) -> None:
    pg_cluster.stop()
    store = PostgresStore(pg_cluster.dsn)

    async def scenario() -> bool:
        stop = asyncio.Event()
        migrating = asyncio.create_task(migrate_when_available(store, stop))
        await asyncio.sleep(0.5)
        stop.set()
        return await asyncio.wait_for(migrating, 10)

    try:
        assert asyncio.run(scenario()) is False
    finally:
        store.close()


def test_migrate_when_available_raises_privilege_error(
    pg_cluster: PostgresCluster,
) -> None:
    with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE reader LOGIN")
        conn.execute("REVOKE CREATE ON DATABASE postgres FROM PUBLIC")
    dsn = pg_cluster.dsn.replace("postgres@", "reader@")
    store = PostgresStore(dsn, schema="tenant")

    async def scenario() -> bool:
        return await migrate_when_available(store, asyncio.Event())

    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            asyncio.run(scenario())
    finally:
        store.close()
