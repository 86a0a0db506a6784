"""Turn hex captures into JSON-ready records, for support engineers.

The protocol is recognised from the first bytes: ``78 78`` / ``79 79`` is GT06,
``7E`` is JT/T 808 and ``$`` (hex ``24``) is NMEA 0183.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from postloan.config import ConfigError, parse_utc_offset
from postloan.protocols import gt06, jt808, nmea
from postloan.protocols.base import DecodeError, Location, Message
from postloan.times import TimeValueError, format_time, parse_time

_HEX = set(string.hexdigits)


def parse_hex(text: str) -> bytes:
    """Parse hex with optional spaces, newlines, colons or a 0x prefix."""
    cleaned = text.replace("0x", "").replace("0X", "")
    digits = "".join(ch for ch in cleaned if not ch.isspace() and ch not in ":,-")
    bad = sorted({ch for ch in digits if ch not in _HEX})
    if bad:
        raise ValueError(f"invalid hex: unexpected characters {''.join(bad)!r}")
    if len(digits) % 2:
        raise ValueError(f"invalid hex: odd number of digits ({len(digits)})")
    return bytes.fromhex(digits)


def detect_protocol(data: bytes) -> str | None:
    if data[:2] in (b"\x78\x78", b"\x79\x79"):
        return "gt06"
    if data[:1] == b"\x7e":
        return "jt808"
    if data[:1] in (b"$", b"#") or data[:1].isdigit():
        return "nmea"
    return None


def location_record(location: Location) -> dict[str, Any]:
    record: dict[str, Any] = {
        "time": format_time(location.time),
        "latitude": round(location.latitude, 7),
        "longitude": round(location.longitude, 7),
        "speed_kmh": location.speed_kmh,
        "course": location.course,
        "valid": location.valid,
        "satellites": location.satellites,
    }
    if location.altitude_m is not None:
        record["altitude_m"] = location.altitude_m
    if location.attributes:
        record["attributes"] = _utc_times(location.attributes)
    return record


def _utc_times(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Copy decoder attributes, writing device times (``time``, ``server_time``)
    in UTC with Z like every other time postloan prints."""
    copied = dict(attributes)
    for name, value in attributes.items():
        if name.endswith("time") and isinstance(value, str):
            # Text that is no timestamp (a duration, a code) stays as decoded.
            with contextlib.suppress(TimeValueError):
                copied[name] = format_time(parse_time(value, name))
    return copied


def message_record(message: Message, reply: bytes | None) -> dict[str, Any]:
    """Flatten a message: one location's fields sit at the top level."""
    record: dict[str, Any] = {
        "protocol": message.protocol,
        "type": message.type,
        "msg_id": f"0x{message.msg_id:02x}",
        "serial": message.serial,
        "device_id": message.device_id,
    }
    if len(message.locations) == 1:
        record.update(location_record(message.locations[0]))
    if message.locations:
        record["positions"] = [location_record(loc) for loc in message.locations]
    if message.alarms:
        record["alarm"] = list(message.alarms)
    if message.attributes:
        record["attributes"] = _utc_times(message.attributes)
    if reply is not None:
        record["reply"] = reply.hex()
    return record


def _error_record(
    protocol: str | None, error: DecodeError | ValueError
) -> dict[str, Any]:
    if isinstance(error, DecodeError):
        record: dict[str, Any] = {"error": error.reason, "detail": error.detail}
        if error.msg_id is not None:
            record["msg_id"] = f"0x{error.msg_id:02x}"
        if error.data:
            record["data"] = error.data.hex()
    else:
        record = {"error": "invalid_input", "detail": str(error)}
    record["protocol"] = protocol
    return record


def _decoder(
    protocol: str, offset: timedelta | None, now: datetime
) -> tuple[Any, Callable[[bytes], dict[str, Any]]]:
    if protocol == "gt06":
        gt06_offset = offset if offset is not None else timedelta(0)

        def decode_gt06(frame: bytes) -> dict[str, Any]:
            message = gt06.decode(frame, utc_offset=gt06_offset)
            return message_record(message, gt06.reply(message, now=now))

        return gt06.Framer(), decode_gt06
    if protocol == "jt808":
        jt808_offset = offset if offset is not None else jt808.DEFAULT_UTC_OFFSET

        def decode_jt808(frame: bytes) -> dict[str, Any]:
            message = jt808.decode(frame, utc_offset=jt808_offset)
            return message_record(message, jt808.reply(message, platform_serial=0))

        return jt808.Framer(), decode_jt808

    def decode_nmea(line: bytes) -> dict[str, Any]:
        return message_record(nmea.decode(line), None)

    return nmea.Framer(), decode_nmea


def decode_hex(text: str, *, utc_offset: str | None = None) -> list[dict[str, Any]]:
    """Decode every frame in a hex capture; failures become ``{"error": ...}``."""
    try:
        offset = parse_utc_offset(utc_offset) if utc_offset else None
        data = parse_hex(text)
    except (ValueError, ConfigError) as exc:
        return [_error_record(None, exc)]
    if not data:
        return [
            {"error": "invalid_input", "detail": "no bytes given", "protocol": None}
        ]
    protocol = detect_protocol(data)
    if protocol is None:
        detail = (
            f"unknown protocol: first bytes {data[:4].hex()} are not 7878/7979/7e/24"
        )
        return [{"error": "unknown_protocol", "detail": detail, "protocol": None}]
    framer, decode = _decoder(protocol, offset, datetime.now(UTC))
    if protocol == "nmea" and not data.endswith(b"\n"):
        data += b"\r\n"
    records: list[dict[str, Any]] = []
    for item in framer.feed(data):
        if isinstance(item, DecodeError):
            records.append(_error_record(protocol, item))
            continue
        try:
            records.append(decode(item))
        except DecodeError as exc:
            records.append(_error_record(protocol, exc))
    if framer.buffered:
        detail = f"{framer.buffered} bytes at the end do not complete a frame"
        records.append({"error": "incomplete", "detail": detail, "protocol": protocol})
    return records
