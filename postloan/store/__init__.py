"""Durable storage of tracks, device and fence events, devices and commands.

`open_store` picks the backend from a URL: SQLite (embedded, the default) or
PostgreSQL. Both implement `Store` and pass the same tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from postloan.store.base import (
    COMMAND_STATUSES,
    COMMAND_TRANSITIONS,
    CommandNotFoundError,
    CommandRecord,
    CommandTransitionError,
    DeviceRecord,
    Store,
)
from postloan.store.postgres import PostgresStore
from postloan.store.sqlite import MEMORY, SQLiteStore

__all__ = [
    "COMMAND_STATUSES",
    "COMMAND_TRANSITIONS",
    "CommandNotFoundError",
    "CommandRecord",
    "CommandTransitionError",
    "DeviceRecord",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "open_store",
]


def _open_sqlite(url: str) -> Store:
    # sqlite:///var/x.db is the relative path var/x.db and sqlite:////srv/x.db
    # the absolute /srv/x.db, as in SQLAlchemy's URLs.
    path = url.removeprefix("sqlite://").removeprefix("/") or MEMORY
    return _sqlite_file(path)


def _sqlite_file(path: str) -> Store:
    if path != MEMORY:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(path)


_OPENERS: dict[str, Callable[[str], Store]] = {
    "sqlite": _open_sqlite,
    "postgresql": PostgresStore,
    "postgres": PostgresStore,
}


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store that `url` names and, by default, migrate its schema.

    Accepted: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
    ``sqlite:///:memory:``, a plain file path (SQLite), and
    ``postgresql://...`` or ``postgres://...`` (a libpq connection URI).
    The parent folder of a SQLite file is created. Pass ``migrate=False``
    when the database role may not run DDL and the schema is already current.
    """
    scheme, separator, _ = url.partition("://")
    if not separator:
        store = _sqlite_file(url)
    elif scheme.lower() in _OPENERS:
        store = _OPENERS[scheme.lower()](url)
    else:
        accepted = ", ".join(f"{name}://" for name in _OPENERS)
        raise ValueError(
            f"unsupported store URL scheme {scheme!r}; use {accepted} or a file path"
        )
    if migrate:
        store.migrate()
    return store
