"""Core records that flow from the gateway to the store, fences and risk engine.

Times are timezone-aware UTC datetimes. Coordinates are WGS-84 degrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
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
