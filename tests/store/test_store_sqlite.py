"""SQLite backend specifics: pragmas, durability across a killed process, URLs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import postloan
from postloan.model import Fix
from postloan.store import SQLiteStore, open_store
from postloan.store.migrations import SQLITE_MIGRATIONS

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def test_sqlite_store_uses_wal(sqlite_store: SQLiteStore) -> None:
    with sqlite3.connect(sqlite_store.path) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()

    assert mode == "wal"


def test_sqlite_store_synchronous_full_by_default(sqlite_store: SQLiteStore) -> None:
    # synchronous is a per-connection setting, so read it on the writer itself.
    (level,) = sqlite_store._writer.execute("PRAGMA synchronous").fetchone()

    assert sqlite_store.synchronous == "FULL"
    assert level == 2


def test_sqlite_store_synchronous_configurable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "normal.db", synchronous="normal")

    (level,) = store._writer.execute("PRAGMA synchronous").fetchone()
    store.close()

    assert level == 1


def test_sqlite_store_rejects_unknown_synchronous(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid synchronous level 'fast'"):
        SQLiteStore(tmp_path / "x.db", synchronous="fast")


def test_sqlite_store_fix_survives_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from datetime import UTC, datetime, timedelta
        from postloan.model import Fix
        from postloan.store import SQLiteStore

        store = SQLiteStore({str(path)!r})
        store.migrate()
        t0 = datetime(2024, 5, 1, tzinfo=UTC)
        stored = store.write_fixes(
            [Fix("a", t0 + timedelta(seconds=i), 1.0, 2.0) for i in range(100)]
        )
        print(stored, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    package_root = str(Path(postloan.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": package_root}

    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    reopened = SQLiteStore(path)
    count = reopened.count_fixes()
    reopened.close()

    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.strip() == "100"
    assert count == 100


def test_sqlite_memory_store_round_trip() -> None:
    store = SQLiteStore(":memory:")
    store.migrate()
    fixes = [Fix("a", T0 + timedelta(seconds=i), 1.0, 2.0) for i in range(5)]

    stored = store.write_fixes(fixes + fixes)
    track = store.track("a")
    store.close()

    assert stored == 5
    assert track == fixes


def test_sqlite_migrate_records_versions(sqlite_store: SQLiteStore) -> None:
    sqlite_store.migrate()

    with sqlite3.connect(sqlite_store.path) as conn:
        versions = conn.execute(
            "SELECT version FROM schema_migrations ORDER BY version"
        ).fetchall()

    assert versions == [(1,), (2,), (3,)]


def test_sqlite_migrate_rejects_newer_schema(sqlite_store: SQLiteStore) -> None:
    with sqlite3.connect(sqlite_store.path) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_us) "
            "VALUES (99, 'from the future', 0)"
        )

    with pytest.raises(RuntimeError, match=r"schema versions \[99\]"):
        sqlite_store.migrate()


def test_open_store_sqlite_url_is_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    store = open_store("sqlite:///var/postloan.db")
    store.close()

    assert isinstance(store, SQLiteStore)
    assert (tmp_path / "var" / "postloan.db").is_file()


def test_open_store_sqlite_url_absolute(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "track.db"

    store = open_store(f"sqlite:///{path}")
    store.close()

    assert path.is_file()


def test_open_store_plain_path_creates_parent(tmp_path: Path) -> None:
    path = tmp_path / "new" / "track.db"

    store = open_store(str(path))
    count = store.count_fixes()
    store.close()

    assert count == 0
    assert path.is_file()


def test_open_store_memory_url() -> None:
    store = open_store("sqlite:///:memory:")

    count = store.count_fixes()
    store.close()

    assert isinstance(store, SQLiteStore)
    assert store.path == ":memory:"
    assert count == 0


def test_open_store_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError) as error:
        open_store("mysql://root:secret@127.0.0.1/postloan")

    message = str(error.value)
    assert "'mysql'" in message
    assert "sqlite://" in message
    assert "postgresql://" in message
    assert "secret" not in message


def test_sqlite_upgrade_allows_cancelled_and_keeps_ids(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "name TEXT NOT NULL, applied_us INTEGER NOT NULL)"
        )
        for migration in SQLITE_MIGRATIONS[:2]:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, 0)",
                (migration.version, migration.name),
            )
        for _ in range(3):
            conn.execute(
                "INSERT INTO commands (device_id, protocol, kind, payload, status, "
                "created_us, updated_us) VALUES ('d1', 'gt06', 'fuel_cut', '{}', "
                "'queued', 0, 0)"
            )
        conn.execute("DELETE FROM commands WHERE id = 3")
    conn.close()

    store = SQLiteStore(str(path))
    store.migrate()
    store.update_command(1, "cancelled", at=datetime(2024, 5, 1, tzinfo=UTC))
    new_id = store.add_command(
        "d1", "gt06", "fuel_cut", {}, created_at=datetime(2024, 5, 1, tzinfo=UTC)
    )
    statuses = {c.command_id: c.status for c in store.commands()}
    store.close()

    assert statuses == {1: "cancelled", 2: "queued", 4: "queued"}
    assert new_id == 4
