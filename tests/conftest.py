"""Store fixtures: every `store` test runs on SQLite and on a real PostgreSQL.

PostgreSQL tests use the server named by POSTLOAN_TEST_PG_DSN (default
postgresql://postgres@127.0.0.1:5432/test, trust auth). Each test gets a
fresh schema that is dropped afterwards. An unreachable server fails the
tests instead of skipping them, so a green run always includes PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from postloan.store import PostgresStore, SQLiteStore, Store

PG_DSN_ENV = "POSTLOAN_TEST_PG_DSN"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _without_password(dsn: str) -> str:
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return " ".join(f"{key}={value}" for key, value in params.items())


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """Return the test server's DSN after checking that it accepts connections."""
    dsn = os.environ.get(PG_DSN_ENV, DEFAULT_PG_DSN)
    error: psycopg.Error | None = None
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        error = exc
    if error is not None:
        pytest.fail(
            f"PostgreSQL test server {_without_password(dsn)!r} failed: {error}\n"
            "Start a local server with trust auth and a database named test, e.g.\n"
            "  pg_ctlcluster --skip-systemctl-redirect 15 main start\n"
            "  createdb -h 127.0.0.1 -U postgres test\n"
            f"or point {PG_DSN_ENV} at a server you may write to.",
            pytrace=False,
        )
    return dsn


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """Return the name of a throw-away schema, dropped with its tables afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
        )


@pytest.fixture
def postgres_store(pg_dsn: str, pg_schema: str) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_dsn, schema=pg_schema)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "postloan.db")
    store.migrate()
    yield store
    store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Store:
    """A migrated, empty store on each backend in turn."""
    backend: Store = request.getfixturevalue(f"{request.param}_store")
    return backend
