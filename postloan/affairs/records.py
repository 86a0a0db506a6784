"""Record helpers shared by the affairs types: JSON-ready dicts and aware times."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any


def require_aware(at: datetime) -> None:
    if at.tzinfo is None:
        raise ValueError(f"time {at.isoformat()} has no time zone; pass aware UTC")


def record_of(value: Any) -> dict[str, Any]:
    """Return a slotted dataclass as a dict: times ISO 8601, enums by value."""
    record: dict[str, Any] = {}
    for name in value.__slots__:
        item = getattr(value, name)
        if isinstance(item, datetime):
            item = item.isoformat()
        elif isinstance(item, StrEnum):
            item = item.value
        record[name] = item
    return record


def parse_times(record: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    values = dict(record)
    for name in names:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return values
