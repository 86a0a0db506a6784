"""Durable storage of tracks, device and fence events, devices and commands.

`open_store` picks the backend from a URL: SQLite (embedded, the default) or
PostgreSQL. Both implement `Store` and pass the same tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from postloan.store.base import (
    COMMAND_STATUSES,
    COMMAND_TRANSITIONS,
    BindingConflictError,
    BindingNotFoundError,
    BindingRecord,
    CommandNotFoundError,
    CommandRecord,
    CommandTransitionError,
    DeviceRecord,
    MaintenanceReport,
    Store,
    VehicleNotFoundError,
    VehicleRecord,
)
from postloan.store.layout import StorageLayout, storage_layout
from postloan.store.postgres import PostgresStore
from postloan.store.queries import DailyMileage, Sighting, Stop, StopRule
from postloan.store.sqlite import MEMORY, SQLiteStore

__all__ = [
    "COMMAND_STATUSES",
    "COMMAND_TRANSITIONS",
    "BindingConflictError",
    "BindingNotFoundError",
    "BindingRecord",
    "CommandNotFoundError",
    "CommandRecord",
    "CommandTransitionError",
    "DailyMileage",
    "DeviceRecord",
    "MaintenanceReport",
    "PostgresStore",
    "SQLiteStore",
    "Sighting",
    "Stop",
    "StopRule",
    "StorageLayout",
    "Store",
    "StoreNotFoundError",
    "VehicleNotFoundError",
    "VehicleRecord",
    "open_existing_store",
    "open_store",
    "sqlite_file_of",
    "storage_layout",
]


def _open_sqlite(url: str, layout: StorageLayout) -> Store:
    # sqlite:///var/x.db is the relative path var/x.db and sqlite:////srv/x.db
    # the absolute /srv/x.db, as in SQLAlchemy's URLs.
    path = url.removeprefix("sqlite://").removeprefix("/") or MEMORY
    return _sqlite_file(path)


def sqlite_file_of(url: str) -> Path | None:
    """Return the SQLite file that `url` names, or None for PostgreSQL or memory."""
    scheme, separator, _ = url.partition("://")
    if not separator:
        path = url
    elif scheme.lower() == "sqlite":
        path = url[len("sqlite://") :].removeprefix("/") or MEMORY
    else:
        return None
    return None if path == MEMORY else Path(path)


class StoreNotFoundError(FileNotFoundError):
    """A command that must not create a store was given a missing SQLite file."""

    def __init__(self, url: str, path: Path) -> None:
        super().__init__(
            f"store not found: {path} does not exist (from {url!r}); check the "
            "path, or create the store with `postloan db migrate --store URL`"
        )
        self.url = url
        self.path = path


def open_existing_store(
    url: str, *, migrate: bool = False, layout: StorageLayout | None = None
) -> Store:
    """Open a store like `open_store`, but never create a SQLite file.

    Raises StoreNotFoundError naming the path when the SQLite file `url`
    names does not exist. A PostgreSQL database is not checked here, because
    connecting never creates one.
    """
    path = sqlite_file_of(url)
    if path is not None and not path.exists():
        raise StoreNotFoundError(url, path)
    return open_store(url, migrate=migrate, layout=layout)


def _sqlite_file(path: str) -> Store:
    if path != MEMORY:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(path)


def _open_postgres(url: str, layout: StorageLayout) -> Store:
    return PostgresStore(url, schema=_schema_of(url), layout=layout)


def _schema_of(dsn: str) -> str:
    """Return the first schema of a ``-c search_path=...`` libpq option, or public."""
    options = conninfo_to_dict(dsn).get("options") or ""
    match = re.search(r"-c\s*search_path=([^\s,]+)", str(options))
    return match.group(1).strip("'\"") if match else "public"


_OPENERS: dict[str, Callable[[str, StorageLayout], Store]] = {
    "sqlite": _open_sqlite,
    "postgresql": _open_postgres,
    "postgres": _open_postgres,
}


def open_store(
    url: str, *, migrate: bool = True, layout: StorageLayout | None = None
) -> Store:
    """Open the store that `url` names and, by default, migrate its schema.

    Accepted: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
    ``sqlite:///:memory:``, a plain file path (SQLite), and
    ``postgresql://...`` or ``postgres://...`` (a libpq connection URI).
    The parent folder of a SQLite file is created. Pass ``migrate=False``
    when the database role may not run DDL and the schema is already current.
    A PostgreSQL store lives in the schema that the URI's libpq ``options``
    put first on the search path (``?options=-csearch_path%3Dtenant1``), else
    in ``public``. `layout` sets PostgreSQL's time partitioning
    (``storage_layout(config)`` builds it from ``[store]``); SQLite ignores it.
    """
    scheme, separator, _ = url.partition("://")
    if not separator:
        store = _sqlite_file(url)
    elif scheme.lower() in _OPENERS:
        store = _OPENERS[scheme.lower()](url, layout or StorageLayout())
    else:
        accepted = ", ".join(f"{name}://" for name in _OPENERS)
        raise ValueError(
            f"unsupported store URL scheme {scheme!r}; use {accepted} or a file path"
        )
    if migrate:
        store.migrate()
    return store
