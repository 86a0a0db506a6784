"""Range checks that every fix passes before the store writes it.

The TCP gateway and the MQTT uplink call `check_fix` on each decoded fix, so
both paths accept and reject the same values.
"""

from __future__ import annotations

import math
import re

from postloan.model import Fix

# The same pattern as the HTTP API's ids (postloan.api.context.ID_PATTERN), so
# every stored device can be read back through GET /devices/{device_id}.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,99}$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)

# Above any road vehicle and above the largest GT06 speed byte (255 km/h).
# NOTE: JT/T 808 can encode up to 6553.5 km/h, and such fixes are rejected here.
MAX_SPEED_KMH = 1000.0


class InvalidFixError(ValueError):
    """A fix field contains a value outside its range."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"invalid {field} {value!r}: expected {expected}")
        self.field = field
        self.value = value
        self.expected = expected


def check_device_id(device_id: str) -> None:
    """Raise InvalidFixError unless `device_id` matches DEVICE_ID_PATTERN."""
    if not _DEVICE_ID.fullmatch(device_id):
        raise InvalidFixError(
            "device_id",
            device_id,
            f"1 to 100 characters matching {DEVICE_ID_PATTERN}",
        )


def _check_range(field: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidFixError(field, value, f"a finite number in {low:g}..{high:g}")


def check_fix(fix: Fix) -> None:
    """Raise InvalidFixError naming the first field of `fix` out of range."""
    check_device_id(fix.device_id)
    _check_range("latitude", fix.latitude, -90.0, 90.0)
    _check_range("longitude", fix.longitude, -180.0, 180.0)
    _check_range("speed_kmh", fix.speed_kmh, 0.0, MAX_SPEED_KMH)
    if fix.course is not None:
        _check_range("course", fix.course, 0.0, 360.0)
    if fix.altitude_m is not None and not math.isfinite(fix.altitude_m):
        raise InvalidFixError("altitude_m", fix.altitude_m, "a finite number")
