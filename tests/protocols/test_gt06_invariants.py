"""The plausibility check that every GT06 decoder test runs on each decoded message.

Other GT06 test modules import `assert_plausible_message` from here.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from postloan.protocols.base import Location, Message

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
MAX_SPEED_KMH = 255.0  # one unsigned byte
MAX_SATELLITES = 15  # one nibble
MESSAGE_TYPES = frozenset(
    {
        "login",
        "location",
        "heartbeat",
        "alarm",
        "lbs",
        "wifi",
        "info",
        "time_request",
        "command_response",
        "address_request",
        "command",
        "unknown",
    }
)
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def luhn_valid(digits: str) -> bool:
    """Return whether `digits` ends in its Luhn check digit, as IMEIs do."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def assert_valid_imei(imei: str) -> None:
    assert len(imei) == 15, imei
    assert imei.isdigit(), imei
    assert luhn_valid(imei), imei


def assert_plausible_fix(location: Location, *, now: datetime | None = None) -> None:
    """Fail unless `location` could be a real GT06 fix.

    Latitude and longitude in range, an aware UTC time after 2000 and at most
    a day ahead of `now`, speed, course and satellites within what the fields
    can carry, and JSON-compatible attributes.
    """
    now = now or datetime.now(UTC)
    assert -90.0 <= location.latitude <= 90.0, location.latitude
    assert -180.0 <= location.longitude <= 180.0, location.longitude
    assert location.time.utcoffset() == timedelta(0), location.time
    assert location.time > EARLIEST, location.time
    assert location.time <= now + FUTURE_SLACK, location.time
    assert 0.0 <= location.speed_kmh <= MAX_SPEED_KMH, location.speed_kmh
    assert location.course is None or 0 <= location.course < 360, location.course
    assert location.satellites is None or 0 <= location.satellites <= MAX_SATELLITES
    json.dumps(dict(location.attributes))


def assert_plausible_message(message: Message, *, now: datetime | None = None) -> None:
    """Run `assert_plausible_fix` on every fix and check the message's fields.

    The type is a GT06 message type, the serial fits 16 bits, a device id is a
    valid IMEI, alarms are snake_case names and the attributes serialise to
    JSON.
    """
    assert message.protocol == "gt06"
    assert message.type in MESSAGE_TYPES, message.type
    assert message.serial is None or 0 <= message.serial <= 0xFFFF, message.serial
    if message.device_id is not None:
        assert_valid_imei(message.device_id)
    for name in message.alarms:
        assert SNAKE_CASE.match(name), name
    for location in message.locations:
        assert_plausible_fix(location, now=now)
    json.dumps(dict(message.attributes))


def _fix(**changes: object) -> Location:
    fields: dict[str, object] = {
        "time": datetime(2016, 2, 14, 20, 22, 19, tzinfo=UTC),
        "latitude": 41.45768,
        "longitude": 2.186023,
        "speed_kmh": 75.0,
        "course": 134.0,
        "satellites": 12,
    }
    fields.update(changes)
    return Location(**fields)  # type: ignore[arg-type]


def test_plausible_fix_accepts_real_fix() -> None:
    fix = _fix()

    assert_plausible_fix(fix)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"latitude": 90.5}, id="latitude"),
        pytest.param({"longitude": -180.5}, id="longitude"),
        pytest.param({"time": datetime(1999, 12, 31, tzinfo=UTC)}, id="before-2000"),
        pytest.param({"time": datetime.now(UTC) + timedelta(days=2)}, id="future"),
        pytest.param({"time": datetime(2016, 2, 14, 20, 22, 19)}, id="naive-time"),
        pytest.param({"speed_kmh": -1.0}, id="speed"),
        pytest.param({"course": 360.0}, id="course"),
        pytest.param({"satellites": 16}, id="satellites"),
    ],
)
def test_plausible_fix_rejects_impossible_field(changes: dict[str, object]) -> None:
    fix = _fix(**changes)

    with pytest.raises(AssertionError):
        assert_plausible_fix(fix)


def test_valid_imei_rejects_wrong_check_digit() -> None:
    imei = "358735070530282"

    with pytest.raises(AssertionError):
        assert_valid_imei(imei)


def test_plausible_message_rejects_non_json_attribute() -> None:
    message = Message(
        protocol="gt06", type="heartbeat", msg_id=0x13, attributes={"raw": b"\x00"}
    )

    with pytest.raises(TypeError):
        assert_plausible_message(message)
