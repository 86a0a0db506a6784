"""GT06 encoders: device packets for simulators and tests, and server frames.

Layouts mirror the decoders in gt06_decode (Concox JM-VL03 protocol v1.1.2).
Every encoder raises EncodeError for a value that its field cannot carry.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from postloan.protocols.base import EncodeError, Location
from postloan.protocols.gt06_fields import (
    CellTower,
    cell_bytes,
    cell_bytes_4g,
    gps_bytes,
    imei_bytes,
    time_bytes,
    timezone_word,
)
from postloan.protocols.gt06_frame import build_frame

LOCATION_TYPES = frozenset({0x10, 0x12, 0x22, 0xA0})
ALARM_TYPES = frozenset({0x16, 0x26, 0x27, 0xA4})
COMMAND_RESPONSE_TYPES = frozenset({0x15, 0x21})
MAX_TEXT_COMMAND = 0xFF - 4  # the length byte counts the 4-byte server flag
NO_CELL = CellTower()  # all zero, as units send without network


def _byte_fields(**fields: int) -> bytes:
    for name, value in fields.items():
        if not 0 <= value <= 0xFF:
            raise EncodeError(f"{name} {value} is outside 0..255")
    return bytes(fields.values())


def _uint(name: str, value: int, size: int) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise EncodeError(f"{name} {value} does not fit {size} bytes")
    return value.to_bytes(size)


def ack(msg_type: int, serial: int) -> bytes:
    """Return the generic server ack: 78 78 05 <type> <serial> <crc> 0D 0A."""
    return build_frame(msg_type, b"", serial)


def encode_time_reply(now: datetime, serial: int) -> bytes:
    """Return the 0x8A reply carrying `now` (aware) in UTC, echoing `serial`."""
    return build_frame(0x8A, time_bytes(now, timedelta(0)), serial)


def encode_login(
    imei: str,
    serial: int,
    *,
    utc_offset: timedelta | None = None,
    type_code: int = 0,
    language: int = 2,
) -> bytes:
    """Return a login 0x01. With `utc_offset`, the extended form adds the type
    code and the time zone/language word (length 0x11)."""
    content = imei_bytes(imei)
    if utc_offset is not None:
        content += _uint("type code", type_code, 2)
        content += timezone_word(utc_offset, language).to_bytes(2)
    return build_frame(0x01, content, serial)


def encode_location(
    location: Location,
    serial: int,
    *,
    msg_type: int = 0x22,
    utc_offset: timedelta = timedelta(0),
    acc: bool | None = None,
    reupload: bool = False,
    cell: CellTower = NO_CELL,
    upload_mode: int = 0,
    mileage: int | None = None,
) -> bytes:
    """Return a GPS packet 0x10, 0x12, 0x22 or 0xA0 (4G cell).

    0x22/0xA0 carry `acc`, `upload_mode` and `reupload` in their own bytes;
    0x10/0x12 carry `acc` in course bits 14-15 as clones do and have no
    re-upload flag. `mileage` appends the 4-byte tail (not for 0x10).
    """
    if msg_type not in LOCATION_TYPES:
        raise EncodeError(f"0x{msg_type:02x} is not a GPS location type")
    if msg_type in (0x10, 0x12):
        content = gps_bytes(location, utc_offset, acc=acc)
        if msg_type == 0x12:
            content += cell_bytes(cell)
    else:
        content = gps_bytes(location, utc_offset)
        content += cell_bytes_4g(cell) if msg_type == 0xA0 else cell_bytes(cell)
        content += _byte_fields(
            acc=int(bool(acc)), upload_mode=upload_mode, reupload=int(reupload)
        )
    if mileage is not None:
        if msg_type == 0x10:
            raise EncodeError("0x10 has no mileage field")
        content += _uint("mileage", mileage, 4)
    return build_frame(msg_type, content, serial)


def encode_heartbeat(
    serial: int,
    *,
    terminal_info: int = 0,
    voltage_level: int = 4,
    gsm_signal: int = 4,
    alarm: int = 0,
    language: int = 2,
) -> bytes:
    """Return a heartbeat/status 0x13 with the 5-byte content."""
    content = _byte_fields(
        terminal_info=terminal_info,
        voltage_level=voltage_level,
        gsm_signal=gsm_signal,
        alarm=alarm,
        language=language,
    )
    return build_frame(0x13, content, serial)


def encode_alarm(
    location: Location,
    serial: int,
    *,
    alarm_code: int,
    msg_type: int = 0x26,
    terminal_info: int = 0,
    voltage_level: int = 4,
    gsm_signal: int = 4,
    language: int = 2,
    utc_offset: timedelta = timedelta(0),
    cell: CellTower = NO_CELL,
    fence_number: int | None = None,
    mileage: int | None = None,
) -> bytes:
    """Return an alarm 0x16, 0x26, 0x27 or 0xA4 (4G cell).

    0x27/0xA4 carry `fence_number`, 0xFF when None.
    """
    if msg_type not in ALARM_TYPES:
        raise EncodeError(f"0x{msg_type:02x} is not an alarm type")
    lbs = cell_bytes_4g(cell) if msg_type == 0xA4 else cell_bytes(cell)
    content = gps_bytes(location, utc_offset) + bytes((len(lbs) + 1,)) + lbs
    content += _byte_fields(
        terminal_info=terminal_info,
        voltage_level=voltage_level,
        gsm_signal=gsm_signal,
        alarm_code=alarm_code,
        language=language,
    )
    if msg_type in (0x27, 0xA4):
        fence = 0xFF if fence_number is None else fence_number
        content += _byte_fields(fence_number=fence)
    if mileage is not None:
        content += _uint("mileage", mileage, 4)
    return build_frame(msg_type, content, serial)


def _text_command(server_flag: int, text: str, language: int | None) -> bytes:
    """Return length 1, server flag 4, ASCII text and the optional language word."""
    if not text.isascii():
        raise EncodeError(f"command text {text!r} is not ASCII")
    data = text.encode("ascii")
    if len(data) > MAX_TEXT_COMMAND:
        raise EncodeError(
            f"command text of {len(data)} bytes is over {MAX_TEXT_COMMAND}"
        )
    content = bytes((len(data) + 4,)) + _uint("server flag", server_flag, 4) + data
    if language is not None:
        content += _uint("language", language, 2)
    return content


def encode_command(
    text: str, *, server_flag: int, serial: int, language: int | None = None
) -> bytes:
    """Return the server's online command 0x80, e.g. "Relay,1#" to cut fuel.

    The device echoes `server_flag` in its 0x15/0x21 response. Traccar sends no
    language word; JM-VL03 v1.1.2 shows one (1 Chinese, 2 English).
    """
    return build_frame(0x80, _text_command(server_flag, text, language), serial)


def encode_command_response(
    server_flag: int,
    text: str,
    serial: int,
    *,
    msg_type: int = 0x21,
    language: int = 2,
) -> bytes:
    """Return the terminal's response 0x21 (long frame, ASCII or UTF-16BE) or
    0x15 (short frame, ASCII, with language word)."""
    if msg_type not in COMMAND_RESPONSE_TYPES:
        raise EncodeError(f"0x{msg_type:02x} is not a command response type")
    if msg_type == 0x15:
        return build_frame(0x15, _text_command(server_flag, text, language), serial)
    encoding, codec = (1, "ascii") if text.isascii() else (2, "utf-16-be")
    try:
        data = text.encode(codec)
    except UnicodeEncodeError as exc:
        raise EncodeError(f"text {text!r} cannot be encoded as {codec}") from exc
    content = _uint("server flag", server_flag, 4) + bytes((encoding,)) + data
    return build_frame(0x21, content, serial, long_frame=True)
