"""Core records that flow from the gateway to the store, fences and risk engine.

Times are timezone-aware UTC datetimes. Coordinates are WGS-84 degrees.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from itertools import repeat
from types import MappingProxyType, MemberDescriptorType
from typing import Any

EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Fix:
    """One position of one device at one fix time."""

    device_id: str
    time: datetime
    latitude: float
    longitude: float
    speed_kmh: float = 0.0
    course: float | None = None
    altitude_m: float | None = None
    valid: bool = True
    satellites: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


def _slot_setters() -> tuple[Callable[[Fix, Any], None], ...]:
    setters = []
    for name in (f.name for f in fields(Fix)):
        descriptor = Fix.__dict__[name]
        if not isinstance(descriptor, MemberDescriptorType):
            raise TypeError(f"Fix.{name} must be a slot for fixes_from_columns")
        setters.append(descriptor.__set__)
    return tuple(setters)


# The slot descriptors' setters write a field without the frozen dataclass's
# __setattr__ guard, one C call per value.
_FIX_SETTERS = _slot_setters()
_consume = deque[None](maxlen=0).extend


def fixes_from_columns(device_id: str, columns: Sequence[Sequence[Any]]) -> list[Fix]:
    """Build one device's fixes from columns of their other fields.

    `columns` contains one sequence per field after `device_id`, in field order
    (time to attributes), all of the same length. Values are stored as given,
    as `Fix(...)` would store them, so they must already have the field types
    (a UTC datetime, a mapping of attributes). The result equals
    ``[Fix(device_id, *values) for values in zip(*columns)]`` but is built
    field by field in C loops instead of calling the generated ``__init__``
    per fix, which takes about half the time in CPython 3.11 (figures in
    bench/RESULTS-store.md).
    """
    if len(columns) != len(_FIX_SETTERS) - 1:
        raise ValueError(
            f"expected {len(_FIX_SETTERS) - 1} columns (time to attributes), "
            f"got {len(columns)}"
        )
    count = len(columns[0])
    lengths = {len(column) for column in columns}
    if lengths != {count}:
        raise ValueError(f"columns differ in length: {sorted(lengths)}")
    fixes: list[Fix] = list(map(object.__new__, repeat(Fix, count)))
    _consume(map(_FIX_SETTERS[0], fixes, repeat(device_id, count)))
    for setter, column in zip(_FIX_SETTERS[1:], columns, strict=True):
        _consume(map(setter, fixes, column))
    return fixes


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """Something a device reported that is not a position: login, alarm, status."""

    device_id: str
    time: datetime
    kind: str
    attributes: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class FenceEvent:
    """A device entering, leaving or dwelling in a fence, decided by fix time."""

    device_id: str
    fence_id: str
    event: str
    time: datetime
    latitude: float
    longitude: float
