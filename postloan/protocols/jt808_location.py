"""JT/T 808 location body (0x0200 and the records of 0x0201, 0x0500 and 0x0704).

The basic block of JT/T 808-2013 is alarm flags DWORD, status DWORD, latitude
and longitude DWORD in 1e-6 degrees, altitude WORD in metres, speed WORD in
0.1 km/h, course WORD in degrees and time BCD[6] YYMMDDhhmmss. The time is in
the unit's zone, GMT+8 by the standard. Additional items [id BYTE, length BYTE,
value] follow to the end of the body.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from postloan.protocols.base import EncodeError, Location
from postloan.protocols.jt808_frame import BodyError

# Altitude is a WORD in the standard. Reading it as signed, as Traccar does,
# keeps places below sea level (Turpan, -154 m) from turning into 65 km.
_BASIC = struct.Struct(">IIIIhHH6s")
BASIC_SIZE = _BASIC.size

# Alarm flag bits of JT/T 808-2013. Bits 15-17 are reserved there and vendors
# reuse them (the G10LS manual: low battery, vibration, removal), so 2013
# reports name them by bit number. JT/T 808-2019 assigns them.
_ALARMS_2013 = (
    "sos",
    "overspeed",
    "fatigue_driving",
    "danger_warning",
    "gnss_module_fault",
    "gnss_antenna_cut",
    "gnss_antenna_short",
    "main_power_low",
    "main_power_cut",
    "lcd_fault",
    "tts_fault",
    "camera_fault",
    "ic_card_fault",
    "overspeed_warning",
    "fatigue_warning",
    "reserved_15",
    "reserved_16",
    "reserved_17",
    "driving_timeout_day",
    "parking_timeout",
    "area_in_out",
    "route_in_out",
    "route_time_abnormal",
    "route_deviation",
    "vss_fault",
    "fuel_abnormal",
    "vehicle_stolen",
    "illegal_ignition",
    "illegal_displacement",
    "collision",
    "rollover",
    "illegal_door_open",
)
_ALARMS_2019 = (
    *_ALARMS_2013[:15],
    "driving_violation_warning",
    "tyre_pressure_warning",
    "right_turn_blind_zone_warning",
    *_ALARMS_2013[18:],
)

# Status bits of JT/T 808-2013. Bits 6, 7 and 22 exist from JT/T 808-2019 on.
_STATUS_2013 = (
    (0, "acc"),
    (1, "located"),
    (2, "south"),
    (3, "west"),
    (4, "out_of_service"),
    (5, "coordinates_encrypted"),
    (10, "oil_cut"),
    (11, "circuit_cut"),
    (12, "door_locked"),
    (13, "door1_open"),
    (14, "door2_open"),
    (15, "door3_open"),
    (16, "door4_open"),
    (17, "door5_open"),
    (18, "gps"),
    (19, "beidou"),
    (20, "glonass"),
    (21, "galileo"),
)
_STATUS_2019 = (
    *_STATUS_2013,
    (6, "forward_collision_warning"),
    (7, "lane_departure_warning"),
    (22, "moving"),
)
_STATUS_MASKS_2013 = tuple((1 << bit, name) for bit, name in _STATUS_2013)
_STATUS_MASKS_2019 = tuple((1 << bit, name) for bit, name in _STATUS_2019)
_LOAD = ("empty", "half", "reserved", "full")  # status bits 8-9
LOCATED_BIT = 1 << 1
SOUTH_BIT = 1 << 2
WEST_BIT = 1 << 3

# Item 0x25 extended vehicle signals, bits 0-14 (JT/T 808-2013).
_EXT_SIGNALS = (
    "low_beam",
    "high_beam",
    "right_turn_signal",
    "left_turn_signal",
    "brake",
    "reverse",
    "fog_light",
    "clearance_light",
    "horn",
    "air_conditioner",
    "neutral",
    "retarder",
    "abs",
    "heater",
    "clutch",
)
_AREA_TYPES = ("none", "circle", "rectangle", "polygon", "route")
SATELLITES_ITEM = 0x31

ItemDecoder = Callable[[bytes], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _ItemSpec:
    lengths: frozenset[int]
    decode: ItemDecoder


def _unsigned(value: bytes) -> int:
    return int.from_bytes(value, "big")


def _scaled(key: str, divisor: float) -> ItemDecoder:
    return lambda value: {key: _unsigned(value) / divisor}


def _integer(key: str) -> ItemDecoder:
    return lambda value: {key: _unsigned(value)}


def _flags(key: str) -> ItemDecoder:
    return lambda value: {key: f"0x{_unsigned(value):0{2 * len(value)}x}"}


def _fuel(value: bytes) -> dict[str, Any]:
    raw = _unsigned(value)
    # Vendor extension: with bit 15 set, the low 15 bits are a fuel level
    # without the 0.1 L scale. Traccar reads it the same way.
    if raw & 0x8000:
        return {"fuel_level": raw & 0x7FFF}
    return {"fuel_l": raw / 10}


def _tyre_pressures(value: bytes) -> dict[str, Any]:
    # JT/T 808-2019 item 0x05: one byte per wheel, 0xFF where no sensor.
    return {"tyre_pressures": tuple(None if b == 0xFF else b for b in value)}


def _compartment_temperature(value: bytes) -> dict[str, Any]:
    return {"compartment_temperature_c": int.from_bytes(value, "big", signed=True)}


def _overspeed(value: bytes) -> dict[str, Any]:
    result: dict[str, Any] = {"overspeed_area_type": _area_type(value[0])}
    if len(value) == 5:
        result["overspeed_area_id"] = _unsigned(value[1:])
    return result


def _area_in_out(value: bytes) -> dict[str, Any]:
    return {
        "area_type": _area_type(value[0]),
        "area_id": _unsigned(value[1:5]),
        "area_direction": "in" if value[5] == 0 else "out",
    }


def _route_time(value: bytes) -> dict[str, Any]:
    return {
        "route_id": _unsigned(value[:4]),
        "route_drive_seconds": _unsigned(value[4:6]),
        "route_drive_result": "too_short" if value[6] == 0 else "too_long",
    }


def _area_type(code: int) -> str:
    return _AREA_TYPES[code] if code < len(_AREA_TYPES) else f"type_{code}"


def _abnormal_driving(value: bytes) -> dict[str, Any]:
    return {
        "abnormal_driving": f"0x{_unsigned(value[:2]):04x}",
        "fatigue_level": value[2],
    }


def _ext_signals(value: bytes) -> dict[str, Any]:
    raw = _unsigned(value)
    names = tuple(name for bit, name in enumerate(_EXT_SIGNALS) if raw >> bit & 1)
    return {"ext_signal_status": f"0x{raw:08x}", "ext_signals": names}


def _io_status(value: bytes) -> dict[str, Any]:
    raw = _unsigned(value)
    return {
        "io_status": f"0x{raw:04x}",
        "deep_sleep": bool(raw & 1),
        "sleep": bool(raw & 2),
    }


def _analog(value: bytes) -> dict[str, Any]:
    # The DWORD is big-endian, so AD1 (bits 16-31) comes first on the wire.
    raw = _unsigned(value)
    return {"analog_ad0": raw & 0xFFFF, "analog_ad1": raw >> 16}


def _spec(lengths: set[int], decode: ItemDecoder) -> _ItemSpec:
    return _ItemSpec(frozenset(lengths), decode)


# Additional items of JT/T 808-2013, plus 0x05 and 0x06 from JT/T 808-2019.
# 0x14-0x18 are JT/T 1078 video alarms, with the lengths of SmallChi/JT808's
# JT1078 extension. An item with another length is kept raw.
_ITEMS: Mapping[int, _ItemSpec] = MappingProxyType(
    {
        0x01: _spec({4}, _scaled("mileage_km", 10)),
        0x02: _spec({2}, _fuel),
        0x03: _spec({2}, _scaled("recorder_speed_kmh", 10)),
        0x04: _spec({2}, _integer("alarm_event_id")),
        0x05: _spec({30}, _tyre_pressures),
        0x06: _spec({2}, _compartment_temperature),
        0x11: _spec({1, 5}, _overspeed),
        0x12: _spec({6}, _area_in_out),
        0x13: _spec({7}, _route_time),
        0x14: _spec({4}, _flags("video_alarms")),
        0x15: _spec({4}, _flags("video_signal_loss_channels")),
        0x16: _spec({4}, _flags("video_occlusion_channels")),
        0x17: _spec({2}, _flags("storage_faults")),
        0x18: _spec({3}, _abnormal_driving),
        0x25: _spec({4}, _ext_signals),
        0x2A: _spec({2}, _io_status),
        0x2B: _spec({4}, _analog),
        0x30: _spec({1}, _integer("rssi")),
        SATELLITES_ITEM: _spec({1}, _integer("satellites")),
    }
)


def alarm_names(flags: int, version: str) -> tuple[str, ...]:
    """Return the snake_case name of every set alarm bit, lowest bit first."""
    if not flags:
        return ()
    table = _ALARMS_2019 if version == "2019" else _ALARMS_2013
    return tuple(name for bit, name in enumerate(table) if flags >> bit & 1)


def decode_items(body: bytes, offset: int, attributes: dict[str, Any]) -> None:
    """Decode additional items from `offset` into `attributes`.

    Unknown ids and known ids with an unexpected length are kept as
    ``item_0xNN`` hex strings. The item list ends at an id of 0x00 (unassigned,
    seen where units append zero padding or a fixed vendor block) or at an item
    whose length runs past the body. Whatever follows is kept as ``tail_hex``,
    so an odd item does not fail the report.
    """
    end = len(body)
    while offset + 2 <= end and body[offset] != 0:
        item_id = body[offset]
        value_end = offset + 2 + body[offset + 1]
        if value_end > end:
            break
        value = body[offset + 2 : value_end]
        spec = _ITEMS.get(item_id)
        if spec is not None and len(value) in spec.lengths:
            attributes.update(spec.decode(value))
        else:
            attributes[f"item_0x{item_id:02x}"] = value.hex()
        offset = value_end
    if offset < end:
        attributes["tail_hex"] = body[offset:].hex()


def parse_bcd_time(stamp: bytes, utc_offset: timedelta) -> datetime:
    """Return the UTC time of a BCD[6] YYMMDDhhmmss stamp taken at `utc_offset`."""
    digits = stamp.hex()
    if not digits.isdigit():
        raise BodyError("invalid_time", f"BCD time {digits} has non-decimal nibbles")
    try:
        local = datetime(
            2000 + int(digits[0:2]),
            int(digits[2:4]),
            int(digits[4:6]),
            int(digits[6:8]),
            int(digits[8:10]),
            int(digits[10:12]),
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise BodyError("invalid_time", f"BCD time {digits}: {exc}") from exc
    return local - utc_offset


def decode_location(body: bytes, *, version: str, utc_offset: timedelta) -> Location:
    """Decode one location body; alarms go to ``attributes["alarms"]``."""
    if len(body) < BASIC_SIZE:
        raise BodyError(
            "invalid_body",
            f"location body of {len(body)} bytes is shorter than {BASIC_SIZE}",
        )
    alarm, status, lat_raw, lon_raw, altitude, speed, course, stamp = (
        _BASIC.unpack_from(body)
    )

    if lat_raw > 90_000_000 or lon_raw > 180_000_000:
        raise BodyError(
            "invalid_coordinates",
            f"latitude {lat_raw / 1e6} or longitude {lon_raw / 1e6} out of range",
        )

    attributes = status_attributes(status, version)
    attributes["alarm_flags"] = f"0x{alarm:08x}"
    attributes["alarms"] = alarm_names(alarm, version)
    if course > 359:
        attributes["course_raw"] = course
    decode_items(body, BASIC_SIZE, attributes)

    latitude = lat_raw / 1e6
    longitude = lon_raw / 1e6
    return Location(
        time=parse_bcd_time(stamp, utc_offset),
        latitude=-latitude if status & SOUTH_BIT else latitude,
        longitude=-longitude if status & WEST_BIT else longitude,
        speed_kmh=speed / 10,
        course=course if course <= 359 else None,
        altitude_m=altitude,
        valid=bool(status & LOCATED_BIT),
        satellites=attributes.get("satellites"),
        attributes=MappingProxyType(attributes),
    )


def status_attributes(status: int, version: str) -> dict[str, Any]:
    """Return the status word as a hex string and one boolean per named bit."""
    table = _STATUS_MASKS_2019 if version == "2019" else _STATUS_MASKS_2013
    attributes: dict[str, Any] = {"status_flags": f"0x{status:08x}"}
    for mask, name in table:
        attributes[name] = status & mask != 0
    attributes["load"] = _LOAD[status >> 8 & 3]
    return attributes


def encode_location_body(
    location: Location,
    *,
    alarm_flags: int,
    status: int | None,
    utc_offset: timedelta,
    items: Mapping[int, bytes] | None,
) -> bytes:
    """Encode one location body.

    Status bits 1-3 (located, south, west) always follow `location`; the other
    bits come from `status`. `location.satellites`, when set, is added as item
    0x31 unless `items` already carries one.
    """
    _check_dword("alarm flags", alarm_flags)
    status_word = status or 0
    _check_dword("status", status_word)
    status_word &= ~(LOCATED_BIT | SOUTH_BIT | WEST_BIT)
    status_word |= LOCATED_BIT if location.valid else 0
    status_word |= SOUTH_BIT if location.latitude < 0 else 0
    status_word |= WEST_BIT if location.longitude < 0 else 0
    basic = _BASIC.pack(
        alarm_flags,
        status_word,
        _coordinate("latitude", location.latitude, 90),
        _coordinate("longitude", location.longitude, 180),
        _bounded("altitude", round(location.altitude_m or 0), -32768, 32767),
        _bounded("speed", round(location.speed_kmh * 10), 0, 0xFFFF),
        _bounded("course", round(location.course or 0), 0, 0xFFFF),
        format_bcd_time(location.time, utc_offset),
    )
    all_items = dict(items or {})
    if location.satellites is not None and SATELLITES_ITEM not in all_items:
        satellites = _bounded("satellites", location.satellites, 0, 0xFF)
        all_items[SATELLITES_ITEM] = bytes([satellites])
    return basic + encode_items(all_items)


def encode_items(items: Mapping[int, bytes]) -> bytes:
    """Encode additional items as [id BYTE, length BYTE, value], in mapping order."""
    out = bytearray()
    for item_id, value in items.items():
        if not 0 < item_id <= 0xFF or len(value) > 0xFF:
            raise EncodeError(
                f"invalid additional item 0x{item_id:x} with {len(value)} bytes: "
                "ids run 1..255 and values hold at most 255 bytes"
            )
        out += bytes([item_id, len(value)]) + value
    return bytes(out)


def format_bcd_time(time: datetime, utc_offset: timedelta) -> bytes:
    """Return BCD[6] YYMMDDhhmmss of aware `time` shifted to `utc_offset`."""
    if time.tzinfo is None:
        raise EncodeError(f"time {time.isoformat()} has no time zone")
    local = time.astimezone(UTC) + utc_offset
    if not 2000 <= local.year <= 2099:
        raise EncodeError(f"time {time.isoformat()} outside the BCD years 2000-2099")
    return bytes.fromhex(local.strftime("%y%m%d%H%M%S"))


def _coordinate(name: str, degrees: float, limit: int) -> int:
    if not -limit <= degrees <= limit:
        raise EncodeError(f"{name} {degrees} outside -{limit}..{limit}")
    return round(abs(degrees) * 1_000_000)


def _check_dword(name: str, value: int) -> None:
    _bounded(name, value, 0, 0xFFFF_FFFF)


def _bounded(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise EncodeError(f"{name} {value} outside {low}..{high}")
    return value
