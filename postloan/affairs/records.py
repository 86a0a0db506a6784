"""Record helpers shared by the affairs types: JSON-ready dicts and aware times."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from postloan.times import format_time, parse_time, require_utc


def require_aware(at: datetime, field: str = "time") -> datetime:
    """Return `at` in UTC; a naive time raises TimeValueError naming `field`."""
    return require_utc(at, field)


def record_of(value: Any) -> dict[str, Any]:
    """Return a slotted dataclass as a dict: times ISO 8601 UTC, enums by value."""
    record: dict[str, Any] = {}
    for name in value.__slots__:
        item = getattr(value, name)
        if isinstance(item, datetime):
            item = format_time(item)
        elif isinstance(item, StrEnum):
            item = item.value
        record[name] = item
    return record


def parse_times(record: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    values = dict(record)
    for name in names:
        if values.get(name) is not None:
            values[name] = parse_time(values[name], name)
    return values
