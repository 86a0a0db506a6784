"""JT/T 808 encoders: terminal messages for simulators, platform messages for the
gateway. Each returns one escaped wire frame built by `frame`.

`version` is "2011", "2013" or "2019". It selects the header, where 2019 sets
bit 14 and writes `protocol_version` and a 20-digit phone. Where the editions
differ, it also selects the body layout. `phone` is the device id as `decode`
returns it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from postloan.protocols.base import EncodeError, Location
from postloan.protocols.jt808_frame import DEFAULT_UTC_OFFSET, check_edition, frame
from postloan.protocols.jt808_location import encode_location_body, format_bcd_time

# Widths of integer terminal parameters that are not DWORD in JT/T 808-2013:
# WORD for fence radius, alarm-warning differences, province, city
# and CAN intervals; BYTE for plate colour and GNSS settings.
_WORD_PARAMETERS = frozenset({0x0031, 0x005B, 0x005C, 0x005D, 0x005E} | {0x0081})
_WORD_PARAMETERS |= frozenset({0x0082, 0x0101, 0x0103})
_BYTE_PARAMETERS = frozenset({0x0084, 0x0090, 0x0091, 0x0092, 0x0094})


def _text(name: str, value: str) -> bytes:
    try:
        return value.encode("gbk")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"{name} {value!r} cannot be encoded as GBK") from exc


def _fixed(name: str, value: str, size: int) -> bytes:
    """Encode a BYTE[size] text field, padded with NUL on the right."""
    raw = _text(name, value)
    if len(raw) > size:
        raise EncodeError(f"{name} {value!r} is {len(raw)} bytes, the field {size}")
    return raw.ljust(size, b"\x00")


def _byte(name: str, value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise EncodeError(f"{name} {value} outside 0..255")
    return bytes([value])


def _word(name: str, value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise EncodeError(f"{name} {value} outside 0..65535")
    return value.to_bytes(2, "big")


# Terminal messages ----------------------------------------------------------


def encode_register(
    phone: str,
    serial: int,
    *,
    version: str = "2013",
    province: int = 0,
    city: int = 0,
    maker: str = "",
    model: str = "",
    terminal_id: str = "",
    plate_color: int = 0,
    plate: str = "",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x0100 terminal registration in the layout of `version`.

    Field sizes (maker, model, terminal id): 2011 5/8/7, 2013 5/20/7,
    2019 11/30/30 bytes. The plate is GBK text; with colour 0 it is the VIN.
    """
    check_edition(version)
    sizes = {"2011": (5, 8, 7), "2013": (5, 20, 7), "2019": (11, 30, 30)}[version]
    body = (
        _word("province", province)
        + _word("city", city)
        + _fixed("maker", maker, sizes[0])
        + _fixed("model", model, sizes[1])
        + _fixed("terminal id", terminal_id, sizes[2])
        + _byte("plate colour", plate_color)
        + _text("plate", plate)
    )
    return frame(
        0x0100, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_auth(
    phone: str,
    serial: int,
    code: str,
    *,
    version: str = "2013",
    imei: str = "",
    software_version: str = "",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x0102 authentication.

    Before 2019 the body is the code alone; 2019 sends code length BYTE, code,
    IMEI BYTE[15] and software version BYTE[20].
    """
    body = _text("auth code", code)
    if version == "2019":
        body = (
            _byte("auth code length", len(body))
            + body
            + _fixed("IMEI", imei, 15)
            + _fixed("software version", software_version, 20)
        )
    return frame(
        0x0102, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_heartbeat(
    phone: str, serial: int, *, version: str = "2013", protocol_version: int = 1
) -> bytes:
    """Encode 0x0002 heartbeat (empty body)."""
    return frame(
        0x0002, phone, serial, b"", version=version, protocol_version=protocol_version
    )


def encode_logout(
    phone: str, serial: int, *, version: str = "2013", protocol_version: int = 1
) -> bytes:
    """Encode 0x0003 logout (empty body)."""
    return frame(
        0x0003, phone, serial, b"", version=version, protocol_version=protocol_version
    )


def encode_location(
    phone: str,
    serial: int,
    location: Location,
    *,
    alarm_flags: int = 0,
    status: int | None = None,
    version: str = "2013",
    utc_offset: timedelta = DEFAULT_UTC_OFFSET,
    items: Mapping[int, bytes] | None = None,
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x0200 location report.

    Status bits 1-3 (located, south, west) follow `location`; `status` sets the
    others. `items` are additional items by id, raw values.
    """
    body = encode_location_body(
        location,
        alarm_flags=alarm_flags,
        status=status,
        utc_offset=utc_offset,
        items=items,
    )
    return frame(
        0x0200, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_position_response(
    phone: str,
    serial: int,
    location: Location,
    *,
    answered_serial: int,
    alarm_flags: int = 0,
    status: int | None = None,
    version: str = "2013",
    utc_offset: timedelta = DEFAULT_UTC_OFFSET,
    items: Mapping[int, bytes] | None = None,
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x0201, the response to 0x8201: answered serial and a 0x0200 body."""
    body = _word("answered serial", answered_serial) + encode_location_body(
        location,
        alarm_flags=alarm_flags,
        status=status,
        utc_offset=utc_offset,
        items=items,
    )
    return frame(
        0x0201, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_batch(
    phone: str,
    serial: int,
    locations: Sequence[Location],
    *,
    backfill: bool = False,
    version: str = "2013",
    utc_offset: timedelta = DEFAULT_UTC_OFFSET,
    alarm_flags: int = 0,
    status: int | None = None,
    items: Mapping[int, bytes] | None = None,
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x0704 batch upload: count WORD, type BYTE, [length WORD, body].

    Type 1 marks blind-area back-fill. `alarm_flags`, `status` and `items`
    apply to every record.
    """
    body = bytearray(_word("location count", len(locations)))
    body.append(1 if backfill else 0)
    for location in locations:
        record = encode_location_body(
            location,
            alarm_flags=alarm_flags,
            status=status,
            utc_offset=utc_offset,
            items=items,
        )
        body += _word("record length", len(record)) + record
    return frame(
        0x0704,
        phone,
        serial,
        bytes(body),
        version=version,
        protocol_version=protocol_version,
    )


def encode_general_response(
    phone: str,
    serial: int,
    *,
    answered_serial: int,
    answered_id: int,
    result: int = 0,
    version: str = "2013",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x0001 terminal general response to a platform message.

    Results: 0 ok, 1 failure, 2 message error, 3 not supported.
    """
    body = _response_body(answered_serial, answered_id, result)
    return frame(
        0x0001, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_parameters_response(
    phone: str,
    serial: int,
    params: Mapping[int, int | str | bytes],
    *,
    answered_serial: int,
    version: str = "2013",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x0104, the response to 0x8104/0x8106: answered serial and params."""
    body = _word("answered serial", answered_serial) + _parameter_list(params)
    return frame(
        0x0104, phone, serial, body, version=version, protocol_version=protocol_version
    )


# Platform messages -----------------------------------------------------------


def encode_platform_response(
    phone: str,
    serial: int,
    *,
    answered_serial: int,
    answered_id: int,
    result: int = 0,
    version: str = "2013",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x8001 platform general response.

    Results: 0 ok, 1 failure, 2 message error, 3 not supported, 4 alarm
    handling confirmed.
    """
    body = _response_body(answered_serial, answered_id, result)
    return frame(
        0x8001, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_register_response(
    phone: str,
    serial: int,
    *,
    answered_serial: int,
    result: int = 0,
    auth_code: str = "",
    version: str = "2013",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x8100: answered serial, result and, on success, the auth code.

    Results: 0 ok, 1 vehicle already registered, 2 vehicle unknown, 3 terminal
    already registered, 4 terminal unknown.
    """
    body = _word("answered serial", answered_serial) + _byte("result", result)
    if result == 0:
        body += _text("auth code", auth_code)
    return frame(
        0x8100, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_time_response(
    phone: str,
    serial: int,
    now: datetime,
    *,
    version: str = "2019",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x8004, the JT/T 808-2019 response to 0x0004: BCD[6] time in UTC."""
    body = format_bcd_time(now, timedelta(0))
    return frame(
        0x8004, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_set_parameters(
    phone: str,
    serial: int,
    params: Mapping[int, int | str | bytes],
    *,
    version: str = "2013",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x8103 set terminal parameters: count BYTE, [id DWORD, len, value].

    Integers take the width the standard gives the parameter (DWORD unless it
    is one of the WORD or BYTE ids), text is GBK and bytes go as they are.
    """
    body = _parameter_list(params)
    return frame(
        0x8103, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_query_parameters(
    phone: str, serial: int, *, version: str = "2013", protocol_version: int = 1
) -> bytes:
    """Encode 0x8104, which requests every terminal parameter (empty body)."""
    return frame(
        0x8104, phone, serial, b"", version=version, protocol_version=protocol_version
    )


def encode_terminal_control(
    phone: str,
    serial: int,
    command_word: int,
    parameters: str = "",
    *,
    version: str = "2013",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x8105 terminal control: command word BYTE and parameter text.

    Standard words: 1 upgrade, 2 connect to a server, 3 shut down, 4 reset,
    5 factory reset, 6 close data link, 7 close all wireless links. Vendors add
    their own, such as 0xF0/0xF1 or 0x64/0x65 for engine stop and resume.
    """
    body = _byte("command word", command_word) + _text("parameters", parameters)
    return frame(
        0x8105, phone, serial, body, version=version, protocol_version=protocol_version
    )


def encode_query_attributes(
    phone: str, serial: int, *, version: str = "2013", protocol_version: int = 1
) -> bytes:
    """Encode 0x8107, which requests the terminal attributes (empty body)."""
    return frame(
        0x8107, phone, serial, b"", version=version, protocol_version=protocol_version
    )


def encode_position_query(
    phone: str, serial: int, *, version: str = "2013", protocol_version: int = 1
) -> bytes:
    """Encode 0x8201 position query (empty body); the terminal answers 0x0201."""
    return frame(
        0x8201, phone, serial, b"", version=version, protocol_version=protocol_version
    )


def encode_vehicle_control(
    phone: str,
    serial: int,
    *,
    cut: bool,
    version: str = "2013",
    protocol_version: int = 1,
) -> bytes:
    """Encode 0x8500 vehicle control with control flag 1 (`cut`) or 0.

    2011/2013 send the flag byte alone; 2019 sends count 1 and control type
    0x0001 with the flag. The standard defines the flag as door lock; many
    trackers use it for the fuel/power relay instead, so check the model.
    """
    check_edition(version)
    flag = b"\x01" if cut else b"\x00"
    body = b"\x00\x01\x00\x01" + flag if version == "2019" else flag
    return frame(
        0x8500, phone, serial, body, version=version, protocol_version=protocol_version
    )


def _response_body(answered_serial: int, answered_id: int, result: int) -> bytes:
    return (
        _word("answered serial", answered_serial)
        + _word("answered id", answered_id)
        + _byte("result", result)
    )


def _parameter_list(params: Mapping[int, int | str | bytes]) -> bytes:
    body = bytearray(_byte("parameter count", len(params)))
    for parameter_id, value in params.items():
        if not 0 <= parameter_id <= 0xFFFF_FFFF:
            raise EncodeError(f"parameter id {parameter_id} outside 0..0xFFFFFFFF")
        raw = _parameter_bytes(parameter_id, value)
        body += parameter_id.to_bytes(4, "big") + _byte("parameter length", len(raw))
        body += raw
    return bytes(body)


def _parameter_bytes(parameter_id: int, value: int | str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return _text(f"parameter 0x{parameter_id:04x}", value)
    width = 4
    if parameter_id in _WORD_PARAMETERS:
        width = 2
    elif parameter_id in _BYTE_PARAMETERS:
        width = 1
    if not 0 <= value < 1 << (8 * width):
        raise EncodeError(
            f"parameter 0x{parameter_id:04x} value {value} does not fit {width} bytes"
        )
    return value.to_bytes(width, "big")
