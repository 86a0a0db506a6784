"""GT06 field codecs shared by the message decoders and encoders.

Layouts are from the Concox JM-VL03 protocol v1.1.2 and the GT06 notes in
Traccar's Gt06ProtocolDecoder, as named at each field. All integers are
unsigned big endian.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from postloan.protocols.base import DecodeError, EncodeError, Location
from postloan.protocols.gt06_frame import PROTOCOL

# Latitude and longitude travel as unsigned 32-bit counts of 1/30000 minute.
UNITS_PER_DEGREE = 30_000 * 60
MAX_SATELLITES = 15  # low nibble of the satellite byte
GPS_INFO_LENGTH = 12  # high nibble of the satellite byte; some units send 13


class Reader:
    """Sequential reads from a frame's content that raise DecodeError at its end."""

    __slots__ = ("_data", "_msg_id", "_pos")

    def __init__(self, data: bytes, msg_id: int) -> None:
        self._data = data
        self._msg_id = msg_id
        self._pos = 0

    @property
    def msg_id(self) -> int:
        return self._msg_id

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, count: int) -> bytes:
        end = self._pos + count
        if count < 0 or end > len(self._data):
            raise self.error(
                "truncated_content",
                f"needs {count} bytes at content offset {self._pos}, "
                f"content has {len(self._data)}",
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size))

    def u8(self) -> int:
        return self.uint(1)

    def u16(self) -> int:
        return self.uint(2)

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def error(self, reason: str, detail: str) -> DecodeError:
        """Return a DecodeError about this content at the current offset."""
        return DecodeError(
            reason,
            f"0x{self._msg_id:02x}: {detail}",
            protocol=PROTOCOL,
            msg_id=self._msg_id,
            offset=self._pos,
            data=self._data,
        )


# -- time -------------------------------------------------------------------


def read_time(reader: Reader, utc_offset: timedelta) -> datetime:
    """Read the 6-byte binary device time YY MM DD hh mm ss and convert it to UTC.

    The device clock runs at UTC + `utc_offset`. Year byte 0 is 2000.
    """
    raw = reader.take(6)
    return _to_utc(reader, raw, tuple(raw), utc_offset)


def read_bcd_time(reader: Reader, utc_offset: timedelta) -> datetime:
    """Read the 6-byte BCD time YY MM DD hh mm ss of counted WiFi packets."""
    raw = reader.take(6)
    digits = raw.hex()
    if not digits.isdigit():
        raise reader.error("invalid_time", f"time {digits} is not BCD")
    fields = tuple(int(digits[i : i + 2]) for i in range(0, 12, 2))
    return _to_utc(reader, raw, fields, utc_offset)


def _to_utc(
    reader: Reader, raw: bytes, fields: tuple[int, ...], utc_offset: timedelta
) -> datetime:
    year, month, day, hour, minute, second = fields
    try:
        local = datetime(2000 + year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise reader.error("invalid_time", f"time bytes {raw.hex()}: {exc}") from exc
    return local - utc_offset


def time_bytes(time: datetime, utc_offset: timedelta) -> bytes:
    """Return `time` (aware) as the 6-byte binary device time at UTC + `utc_offset`."""
    if time.tzinfo is None:
        raise EncodeError(f"time {time.isoformat()} has no time zone")
    local = time.astimezone(UTC) + utc_offset
    if not 2000 <= local.year <= 2255:
        raise EncodeError(f"device time {local.isoformat()} is outside 2000..2255")
    return bytes(
        (
            local.year - 2000,
            local.month,
            local.day,
            local.hour,
            local.minute,
            local.second,
        )
    )


# -- GPS block (18 bytes) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CourseStatus:
    """The course/status word (JM-VL03 v1.1.2, 0x22 "Course and Status").

    Bits 0-9 course, bit 10 north, bit 11 west, bit 12 GPS fixed, bit 13
    differential fix. Bits 14-15 are zero in the document, but clones set bit
    14 to mark that bit 15 carries ACC, as Traccar's Gt06ProtocolDecoder reads.
    """

    course: int
    north: bool
    west: bool
    fixed: bool
    differential: bool = False
    acc: bool | None = None

    @classmethod
    def from_word(cls, word: int) -> CourseStatus:
        return cls(
            course=word & 0x3FF,
            north=bool(word & 0x0400),
            west=bool(word & 0x0800),
            fixed=bool(word & 0x1000),
            differential=bool(word & 0x2000),
            acc=bool(word & 0x8000) if word & 0x4000 else None,
        )

    def to_word(self) -> int:
        word = self.course & 0x3FF
        word |= 0x0400 if self.north else 0
        word |= 0x0800 if self.west else 0
        word |= 0x1000 if self.fixed else 0
        word |= 0x2000 if self.differential else 0
        if self.acc is not None:
            word |= 0x4000 | (0x8000 if self.acc else 0)
        return word


def read_gps(
    reader: Reader, utc_offset: timedelta
) -> tuple[Location | None, dict[str, Any]]:
    """Read the GPS block: time 6, satellites 1, lat 4, lon 4, speed 1, course 2.

    Returns no Location, so that the rest of the message (an alarm, for
    example) is kept, when the time bytes are all zero (units that never had
    a fix send such a block, e.g. an alarm in Traccar's Gt06FrameDecoderTest)
    or the coordinates are out of range. `position_error` then states the
    reason. Any other impossible time raises DecodeError ``invalid_time``.
    """
    time_raw = reader.take(6)
    satellites = reader.u8() & 0x0F  # high nibble: GPS info length, 12 or 13
    latitude = reader.uint(4) / UNITS_PER_DEGREE
    longitude = reader.uint(4) / UNITS_PER_DEGREE
    speed = reader.u8()
    status = CourseStatus.from_word(reader.u16())
    attributes: dict[str, Any] = {"gps_differential": status.differential}
    if status.acc is not None:
        attributes["acc"] = status.acc
    if not any(time_raw):
        attributes["position_error"] = "GPS time is all zero: no fix yet"
        return None, attributes
    time = _to_utc(reader, time_raw, tuple(time_raw), utc_offset)
    if latitude > 90 or longitude > 180:
        attributes["position_error"] = (
            f"latitude {latitude:.6f} or longitude {longitude:.6f} is out of range"
        )
        return None, attributes
    location = Location(
        time=time,
        latitude=latitude if status.north else -latitude,
        longitude=-longitude if status.west else longitude,
        speed_kmh=float(speed),
        course=float(status.course) if status.course < 360 else None,
        valid=status.fixed,
        satellites=satellites,
    )
    return location, attributes


def gps_bytes(
    location: Location, utc_offset: timedelta, *, acc: bool | None = None
) -> bytes:
    """Return the 18-byte GPS block for `location`; `acc` goes to course bits 14-15."""
    if not -90 <= location.latitude <= 90 or not -180 <= location.longitude <= 180:
        raise EncodeError(
            f"position ({location.longitude}, {location.latitude}) is out of range"
        )
    if not 0 <= location.speed_kmh < 255.5:
        raise EncodeError(f"speed {location.speed_kmh} km/h is outside 0..255")
    if location.course is not None and not 0 <= location.course < 360:
        raise EncodeError(f"course {location.course} is outside 0..359")
    speed = round(location.speed_kmh)
    satellites = min(location.satellites or 0, MAX_SATELLITES)
    status = CourseStatus(
        course=round(location.course or 0) % 360,  # 359.7 rounds to 0
        north=location.latitude >= 0,
        west=location.longitude < 0,
        fixed=location.valid,
        acc=acc,
    )
    return (
        time_bytes(location.time, utc_offset)
        + bytes(((GPS_INFO_LENGTH << 4) | satellites,))
        + round(abs(location.latitude) * UNITS_PER_DEGREE).to_bytes(4)
        + round(abs(location.longitude) * UNITS_PER_DEGREE).to_bytes(4)
        + bytes((speed,))
        + status.to_word().to_bytes(2)
    )


# -- cell towers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CellTower:
    """The serving cell as encoders write it."""

    mcc: int = 0
    mnc: int = 0
    lac: int = 0
    cell_id: int = 0


def read_cell(reader: Reader) -> dict[str, int]:
    """Read the 2G LBS block: MCC 2, MNC 1, LAC 2, cell id 3."""
    return {
        "mcc": reader.u16(),
        "mnc": reader.u8(),
        "lac": reader.u16(),
        "cell_id": reader.uint(3),
    }


def read_cell_4g(reader: Reader) -> dict[str, int]:
    """Read the 4G LBS block of 0xA0/0xA1/0xA4: MCC 2, MNC 1 or 2, LAC 4, cell id 8.

    MCC bit 15 set means a 2-byte MNC; the bit is not part of the MCC.
    """
    mcc = reader.u16()
    mnc = reader.u16() if mcc & 0x8000 else reader.u8()
    return {
        "mcc": mcc & 0x7FFF,
        "mnc": mnc,
        "lac": reader.uint(4),
        "cell_id": reader.uint(8),
    }


def read_cell_wide(reader: Reader) -> dict[str, int]:
    """Read the LBS block of GPS packet 0x11 (Traccar): MCC 2, MNC 2, LAC 2, cell 4."""
    return {
        "mcc": reader.u16(),
        "mnc": reader.u16(),
        "lac": reader.u16(),
        "cell_id": reader.uint(4),
    }


def cell_bytes(cell: CellTower) -> bytes:
    _check_cell(cell, mnc_max=0xFF, lac_bytes=2, cell_bytes=3)
    return (
        cell.mcc.to_bytes(2)
        + cell.mnc.to_bytes(1)
        + cell.lac.to_bytes(2)
        + cell.cell_id.to_bytes(3)
    )


def cell_bytes_4g(cell: CellTower) -> bytes:
    """Return the 4G LBS block, always with bit 15 of the MCC set and a 2-byte MNC."""
    _check_cell(cell, mnc_max=0xFFFF, lac_bytes=4, cell_bytes=8)
    return (
        (cell.mcc | 0x8000).to_bytes(2)
        + cell.mnc.to_bytes(2)
        + cell.lac.to_bytes(4)
        + cell.cell_id.to_bytes(8)
    )


def _check_cell(
    cell: CellTower, *, mnc_max: int, lac_bytes: int, cell_bytes: int
) -> None:
    limits = {
        "mcc": 0x7FFF,
        "mnc": mnc_max,
        "lac": (1 << (8 * lac_bytes)) - 1,
        "cell_id": (1 << (8 * cell_bytes)) - 1,
    }
    for name, limit in limits.items():
        value = getattr(cell, name)
        if not 0 <= value <= limit:
            raise EncodeError(f"cell {name} {value} is outside 0..{limit}")


def known_cells(cells: list[dict[str, int]]) -> list[dict[str, int]]:
    """Drop all-zero cells, which devices send for empty neighbour slots."""
    return [cell for cell in cells if cell["lac"] or cell["cell_id"]]


# -- terminal information and alarms -----------------------------------------


def terminal_info_attributes(info: int) -> dict[str, Any]:
    """Decode the terminal information byte (JM-VL03 v1.1.2, 0x13).

    Bit 0 defence armed, bit 1 ACC on, bit 2 charging (external power),
    bits 3-5 alarm class (see `alarm_names`), bit 6 GPS tracking on, bit 7
    oil/electric circuit cut.
    """
    return {
        "terminal_info": info,
        "defence": bool(info & 0x01),
        "acc": bool(info & 0x02),
        "charging": bool(info & 0x04),
        "gps_tracking": bool(info & 0x40),
        "oil_cut": bool(info & 0x80),
    }


# Alarm byte of 0x16/0x19/0x26/0x27/0xA4 (JM-VL03 v1.1.2, "Alert and Language").
# 0x09 is tow in the document; Traccar reports it as vibration.
ALARM_CODES: MappingProxyType[int, str] = MappingProxyType(
    {
        0x01: "sos",
        0x02: "power_cut",
        0x03: "vibration",
        0x04: "geofence_enter",
        0x05: "geofence_exit",
        0x06: "overspeed",
        0x09: "tow",
        0x0A: "gps_blind_zone_enter",
        0x0B: "gps_blind_zone_exit",
        0x0C: "power_on",
        0x0D: "gps_first_fix",
        0x0E: "low_external_battery",
        0x0F: "external_battery_protection",
        0x10: "sim_changed",
        0x11: "power_off",
        0x12: "airplane_mode",
        0x13: "tamper",
        0x14: "door",
        0x15: "low_battery_shutdown",
        0x16: "sound_alarm",
        0x17: "fake_base_station",
        0x18: "removal",
        0x19: "low_internal_battery",
        0x20: "deep_sleep",
        0x23: "fall",
        0x29: "harsh_acceleration",
        0x2A: "sharp_left_turn",
        0x2B: "sharp_right_turn",
        0x2C: "collision",
        0x30: "harsh_braking",
        0x32: "unplugged",
        0xFE: "acc_on",
        0xFF: "acc_off",
    }
)

# Bits 3-5 of the terminal information byte. 6 and 7 are vendor extensions
# that Traccar maps to geofence and removal.
TERMINAL_ALARMS: MappingProxyType[int, str] = MappingProxyType(
    {
        1: "vibration",
        2: "power_cut",
        3: "low_battery",
        4: "sos",
        6: "geofence",
        7: "removal",
    }
)


def alarm_names(code: int, terminal_info: int | None = None) -> tuple[str, ...]:
    """Name the alarm of an alarm byte, falling back to the terminal information
    bits 3-5 when the byte is 0 (JM-VL03 v1.1.2). Unlisted codes are named
    ``alarm_0x..`` so that none is lost."""
    if code:
        return (ALARM_CODES.get(code, f"alarm_0x{code:02x}"),)
    if terminal_info is None:
        return ()
    name = TERMINAL_ALARMS.get((terminal_info >> 3) & 0x07)
    return (name,) if name else ()


# -- identifiers and the login time zone word ---------------------------------


def bcd_digits(data: bytes) -> str | None:
    """Return the decimal digits of F-padded BCD, or None if a nibble is not a digit."""
    digits = data.hex().rstrip("f")
    return digits if digits.isdigit() else None


def bcd_identifier(data: bytes) -> str | None:
    """Decode an 8-byte BCD IMEI or IMSI, which has a leading 0 nibble.

    A first nibble other than 0 is kept, so such an id has 16 digits.
    """
    digits = bcd_digits(data)
    if digits is None:
        return None
    if len(digits) == 16 and digits[0] == "0":
        return digits[1:]
    return digits


def imei_bytes(imei: str) -> bytes:
    if len(imei) != 15 or not imei.isdigit() or not imei.isascii():
        raise EncodeError(f"IMEI {imei!r} is not 15 decimal digits")
    return bytes.fromhex("0" + imei)


def decode_timezone_word(word: int) -> timedelta | None:
    """Return the UTC offset in the extended login's time zone/language word.

    Bits 15-4 hold hours * 100 + minutes, bit 3 set means west of UTC
    (JM-VL03 v1.1.2, login 0x01). Returns None for a value that is not an offset
    (minutes above 59 or more than 14 hours).
    """
    hours, minutes = divmod(word >> 4, 100)
    if minutes > 59 or hours > 14 or (hours == 14 and minutes):
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return -offset if word & 0x08 else offset


def timezone_word(offset: timedelta, language: int) -> int:
    """Return the time zone/language word for a whole-minute UTC offset."""
    minutes, rest = divmod(abs(offset), timedelta(minutes=1))
    if rest or minutes > 14 * 60:
        raise EncodeError(f"UTC offset {offset} is not whole minutes within 14 hours")
    if not 0 <= language <= 3:
        raise EncodeError(f"language {language} does not fit bits 0-1")
    hours, minutes = divmod(minutes, 60)
    west = 0x08 if offset < timedelta(0) else 0
    return ((hours * 100 + minutes) << 4) | west | language
