"""The plausibility check that every JT808 decoder test runs on each decoded fix.

Other test modules import `assert_plausible_fix` from here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from postloan.protocols.base import Location, Message

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
MAX_SPEED_KMH = 400.0
ALTITUDE_RANGE_M = (-1_000.0, 10_000.0)
MAX_SATELLITES = 128


def assert_plausible_fix(location: Location, *, now: datetime | None = None) -> None:
    """Fail unless `location` could be a real fix.

    Latitude and longitude in range, an aware UTC time after 2000 and not more
    than a day ahead of `now`, speed, course, altitude and satellite count in
    physical ranges, and JSON-serialisable attributes.
    """
    now = now or datetime.now(UTC)
    assert -90.0 <= location.latitude <= 90.0, location.latitude
    assert -180.0 <= location.longitude <= 180.0, location.longitude
    assert location.time.utcoffset() == timedelta(0), location.time
    assert location.time > EARLIEST, location.time
    assert location.time <= now + FUTURE_SLACK, location.time
    assert 0.0 <= location.speed_kmh <= MAX_SPEED_KMH, location.speed_kmh
    assert location.course is None or 0 <= location.course < 360, location.course
    if location.altitude_m is not None:
        low, high = ALTITUDE_RANGE_M
        assert low <= location.altitude_m <= high, location.altitude_m
    if location.satellites is not None:
        assert 0 <= location.satellites <= MAX_SATELLITES, location.satellites
    json.dumps(dict(location.attributes))


def assert_plausible_message(message: Message) -> None:
    """Run `assert_plausible_fix` on every fix and check the attribute types."""
    for location in message.locations:
        assert_plausible_fix(location)
    assert all(isinstance(name, str) for name in message.alarms)
    json.dumps(dict(message.attributes))


def _fix(**changes: object) -> Location:
    fields: dict[str, object] = {
        "time": datetime(2024, 5, 6, 19, 51, 52, tzinfo=UTC),
        "latitude": 28.961528,
        "longitude": -81.325702,
        "speed_kmh": 42.0,
        "course": 180.0,
        "altitude_m": 24.0,
        "satellites": 7,
    }
    fields.update(changes)
    return Location(**fields)  # type: ignore[arg-type]


def test_plausible_fix_accepts_real_fix() -> None:
    location = _fix()

    assert_plausible_fix(location)


@pytest.mark.parametrize(
    "changes",
    [
        {"latitude": 90.5},
        {"longitude": -180.1},
        {"time": datetime(1999, 12, 31, tzinfo=UTC)},
        {"time": datetime(2024, 5, 6, 19, 51, 52)},
        {"time": datetime.now(UTC) + timedelta(days=2)},
        {"speed_kmh": -1.0},
        {"speed_kmh": 650.0},
        {"course": 360.0},
        {"altitude_m": 65_000.0},
        {"satellites": 255},
        {"attributes": {"raw": b"\x00"}},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_plausible_fix_rejects_implausible_field(changes: dict[str, object]) -> None:
    location = _fix(**changes)

    with pytest.raises((AssertionError, TypeError)):
        assert_plausible_fix(location)
