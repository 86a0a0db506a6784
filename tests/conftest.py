"""Store fixtures: every `store` test runs on SQLite and on a real PostgreSQL.

PostgreSQL tests use the server named by POSTLOAN_TEST_PG_DSN (default
postgresql://postgres@127.0.0.1:5432/test, trust auth). Each test gets a
fresh schema that is dropped afterwards. An unreachable server fails the
tests instead of skipping them, so a green run always includes PostgreSQL.

Tests that stop the database use `pg_cluster` instead: a throwaway cluster
made by initdb in a temporary folder, on a free port of 127.0.0.1, and
stopped and deleted when the test ends.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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


POSTGRES_ROOT = Path("/usr/lib/postgresql")


def _postgres_bin_dir() -> Path | None:
    """Return the bin folder of the newest PostgreSQL under /usr/lib/postgresql."""
    versions = [p for p in POSTGRES_ROOT.glob("*/bin") if (p / "initdb").exists()]
    if not versions:
        return None
    return max(versions, key=lambda p: int(p.parent.name.split(".")[0]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster that a test may stop and start."""

    bin_dir: Path
    data_dir: Path
    socket_dir: Path
    log_file: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"server log {self.log_file}:\n{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"

    def initdb(self) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        # fsync=off: the tests stop the server cleanly and never crash the
        # machine, so syncing would only slow them down.
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file),
            "-o", options, "-W", "start",
        )  # fmt: skip
        self._wait_ready(timeout=60)

    def _wait_ready(self, timeout: float) -> None:
        """Wait until the server accepts a connection; a real login is the test."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections in {timeout} s: "
                        f"{exc}\nserver log {self.log_file}:\n{self._log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def stop(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30",
            "stop",
        )  # fmt: skip

    def is_running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()


@pytest.fixture
def pg_cluster(tmp_path: Path) -> Iterator[PostgresCluster]:
    """Start a throwaway PostgreSQL cluster; stop and delete it afterwards.

    The cluster lives in a fresh folder of the system temporary directory
    rather than under tmp_path. As root, initdb and postgres run as the
    ``postgres`` user, which would need search permission on pytest's
    temporary root, and every pytest session that starts resets that root
    to mode 0700. The server log is copied to tmp_path at the end.
    """
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.fail(
            f"no PostgreSQL server binaries under {POSTGRES_ROOT}; install the "
            "postgresql package to run the outage tests",
            pytrace=False,
        )
    root = Path(tempfile.mkdtemp(prefix="postloan-pgcluster-"))
    if os.geteuid() == 0:
        os.chown(root, *_postgres_ids())
    cluster = PostgresCluster(
        bin_dir, root / "data", root, root / "server.log", _free_port()
    )
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        try:
            if cluster.is_running():
                cluster.stop()
        finally:
            if cluster.log_file.exists():
                shutil.copy(cluster.log_file, tmp_path / "postgres-server.log")
            shutil.rmtree(root, ignore_errors=True)


def _postgres_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid
