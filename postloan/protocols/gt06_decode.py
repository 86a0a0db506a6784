"""GT06 message decoders: one small function per protocol number.

Content layouts are from the Concox JM-VL03 protocol v1.1.2 unless a
decoder names another source. Variants of one protocol number are distinguished
by content length, as Traccar's Gt06ProtocolDecoder does; there is no model
setting yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from postloan.protocols.base import Location, Message
from postloan.protocols.gt06_fields import (
    Reader,
    alarm_names,
    bcd_identifier,
    decode_timezone_word,
    known_cells,
    read_bcd_time,
    read_cell,
    read_cell_4g,
    read_cell_wide,
    read_gps,
    read_time,
    terminal_info_attributes,
)
from postloan.protocols.gt06_frame import PROTOCOL, RawFrame
from postloan.protocols.gt06_info import read_info

Decoder = Callable[[RawFrame, Reader, timedelta], Message]
Attributes = dict[str, Any]

GPS_BLOCK_SIZE = 18
EXTENDED_STATUS_SIZE = 16  # 0x13 content of the extended status layout
NEIGHBOUR_SLOTS = 7  # serving cell + 6 neighbours in 0x18/0x28/0x2C/0xA1


def _message(
    raw: RawFrame,
    type_: str,
    attributes: Attributes,
    *,
    locations: Iterable[Location | None] = (),
    alarms: tuple[str, ...] = (),
    device_id: str | None = None,
) -> Message:
    return Message(
        protocol=PROTOCOL,
        type=type_,
        msg_id=raw.msg_id,
        serial=raw.serial,
        device_id=device_id,
        locations=tuple(location for location in locations if location is not None),
        alarms=alarms,
        attributes=MappingProxyType(attributes),
    )


def _keep_trailing(reader: Reader, attributes: Attributes) -> None:
    """Keep content bytes that no known layout covers, so none is dropped."""
    if reader.remaining:
        attributes["trailing_hex"] = reader.rest().hex()


# -- login and status --------------------------------------------------------


def decode_login(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x01: IMEI 8 BCD, then on newer units type code 2 and time zone word 2."""
    device_id = bcd_identifier(reader.take(8))
    if device_id is None:
        raise reader.error(
            "invalid_imei", f"terminal id {raw.content[:8].hex()} is not BCD"
        )
    attributes: Attributes = {}
    if reader.remaining >= 2:
        attributes["type_code"] = f"{reader.u16():04x}"
    if reader.remaining >= 2:
        word = reader.u16()
        attributes["timezone_word"] = f"{word:04x}"
        attributes["language"] = word & 0x03
        offset = decode_timezone_word(word)
        if offset is not None:
            attributes["utc_offset_minutes"] = offset // timedelta(minutes=1)
    _keep_trailing(reader, attributes)
    return _message(raw, "login", attributes, device_id=device_id)


def _read_status(reader: Reader, attributes: Attributes) -> tuple[str, ...]:
    """Read terminal info, voltage level, GSM signal, alarm code and language."""
    info = reader.u8()
    attributes.update(terminal_info_attributes(info))
    attributes["voltage_level"] = reader.u8()  # 0 (off) to 6 (very high)
    attributes["gsm_signal"] = reader.u8()  # 0-4, or 100 on some units
    code = reader.u8()
    attributes["alarm_code"] = code
    attributes["language"] = reader.u8()
    return alarm_names(code, info)


def decode_heartbeat(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x13: terminal info, voltage level, GSM signal, then alarm and language.

    Short clones stop after the GSM byte or the alarm byte. A 16-byte content
    is the extended status layout read by Traccar.
    """
    if reader.remaining == EXTENDED_STATUS_SIZE:
        return _decode_extended_status(raw, reader)
    if reader.remaining >= 5:
        attributes: Attributes = {}
        alarms = _read_status(reader, attributes)
    else:
        info = reader.u8()
        attributes = terminal_info_attributes(info)
        attributes["voltage_level"] = reader.u8()
        attributes["gsm_signal"] = reader.u8()
        code = reader.u8() if reader.remaining else 0
        attributes["alarm_code"] = code
        alarms = alarm_names(code, info)
    _keep_trailing(reader, attributes)
    return _message(raw, "heartbeat", attributes, alarms=alarms)


def _decode_extended_status(raw: RawFrame, reader: Reader) -> Message:
    # Layout from Traccar's Gt06ProtocolDecoder (0x13 with 16 content bytes).
    attributes: Attributes = {
        "information_content": reader.u8(),
        "satellites": reader.u16(),
    }
    code = reader.u8()
    attributes["alarm_code"] = code
    attributes["language"] = reader.u8()
    attributes["battery_level"] = reader.u8()  # percent
    attributes["working_mode"] = reader.u8()
    _keep_trailing(reader, attributes)
    return _message(raw, "heartbeat", attributes, alarms=alarm_names(code))


# -- GPS locations -----------------------------------------------------------

# Tails after the LBS block of 0x12/0x22/0xA0, by size. 0x22 defines ACC,
# upload mode, re-upload and an optional mileage. Traccar's Gt06ProtocolDecoder
# reads 4 trailing bytes of any of these types as the mileage.
LOCATION_TAILS: Mapping[int, tuple[str, ...]] = MappingProxyType(
    {
        0: (),
        3: ("acc", "upload_mode", "reupload"),
        4: ("mileage",),
        7: ("acc", "upload_mode", "reupload", "mileage"),
    }
)
_TAIL_FIELD_SIZES = MappingProxyType(
    {"acc": 1, "upload_mode": 1, "reupload": 1, "mileage": 4}
)
_TAIL_FLAGS = frozenset({"acc", "reupload"})


def read_location_tail(reader: Reader, attributes: Attributes) -> None:
    """Read the tail fields that the remaining size selects, else keep the bytes.

    `reupload` is true for a fix stored while offline and sent later. The
    unit of `mileage` is not given by JM-VL03 v1.1.2; Traccar reads metres.
    """
    layout = LOCATION_TAILS.get(reader.remaining)
    if layout is None:
        _keep_trailing(reader, attributes)
        return
    for name in layout:
        value = reader.uint(_TAIL_FIELD_SIZES[name])
        attributes[name] = bool(value) if name in _TAIL_FLAGS else value


def decode_gps(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x10: the GPS block alone; some units add reserved bytes."""
    location, attributes = read_gps(reader, utc_offset)
    _keep_trailing(reader, attributes)
    return _message(raw, "location", attributes, locations=(location,))


_CELL_READERS = MappingProxyType(
    {
        0x11: read_cell_wide,
        0x12: read_cell,
        0x22: read_cell,
        0xA0: read_cell_4g,
    }
)


def decode_gps_lbs(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x12/0x22/0xA0 (and 0x11 at 28+ bytes): GPS block, LBS block, tail."""
    location, attributes = read_gps(reader, utc_offset)
    attributes["cells"] = known_cells([_CELL_READERS[raw.msg_id](reader)])
    read_location_tail(reader, attributes)
    return _message(raw, "location", attributes, locations=(location,))


def decode_0x11(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x11: GPS + LBS with 2-byte MNC and 4-byte cell id (Traccar) when the
    content has room for both, else an LBS-only packet (the 2G block)."""
    if reader.remaining >= GPS_BLOCK_SIZE + 10:
        return decode_gps_lbs(raw, reader, utc_offset)
    if reader.remaining >= GPS_BLOCK_SIZE:
        return decode_gps(raw, reader, utc_offset)
    attributes: Attributes = {"cells": known_cells([read_cell(reader)])}
    _keep_trailing(reader, attributes)
    return _message(raw, "lbs", attributes)


# -- alarms ------------------------------------------------------------------


def _read_alarm_lbs(reader: Reader) -> list[dict[str, int]]:
    """Read the LBS block of an alarm packet, led by a length byte that counts
    itself: 9 for the 8-byte 2G block, as Traccar's Gt06ProtocolDecoder reads."""
    size = reader.u8()
    block = Reader(reader.take(max(size - 1, 0)), reader.msg_id)
    if not block.remaining:
        return []
    if reader.msg_id == 0xA4:
        cell = read_cell_4g(block)
    elif block.remaining == 9:
        # One byte more than the 2G block: a 4-byte cell id, as some units send.
        cell = {
            "mcc": block.u16(),
            "mnc": block.u8(),
            "lac": block.u16(),
            "cell_id": block.uint(4),
        }
    else:
        cell = read_cell(block)
    return known_cells([cell])


def decode_alarm(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x16/0x26/0x27/0xA4: GPS block, LBS with length byte, status, alarm.

    0x27 and 0xA4 add a fence number (0xFF: none). Units may end with a
    4-byte mileage.
    """
    location, attributes = read_gps(reader, utc_offset)
    attributes["cells"] = _read_alarm_lbs(reader)
    alarms = _read_status(reader, attributes)
    if raw.msg_id in (0x27, 0xA4):
        fence = reader.u8()
        attributes["fence_number"] = None if fence == 0xFF else fence
    if reader.remaining == 4:
        attributes["mileage"] = reader.uint(4)
    _keep_trailing(reader, attributes)
    return _message(raw, "alarm", attributes, locations=(location,), alarms=alarms)


LBS_ALARM_SIZE_WITHOUT_LENGTH = 13


def decode_lbs_alarm(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x19: LBS block and status. 13 content bytes leave no room for the LBS
    length byte; other sizes carry it, as Traccar's Gt06ProtocolDecoder reads."""
    if reader.remaining == LBS_ALARM_SIZE_WITHOUT_LENGTH:
        cells = known_cells([read_cell(reader)])
    else:
        cells = _read_alarm_lbs(reader)
    attributes: Attributes = {"cells": cells}
    alarms = _read_status(reader, attributes)
    _keep_trailing(reader, attributes)
    return _message(raw, "alarm", attributes, alarms=alarms)


# -- cell lists and WiFi -----------------------------------------------------


def _read_cell_list(reader: Reader, *, four_g: bool) -> list[dict[str, int]]:
    """Read MCC, MNC and 7 x [LAC, cell id, RSSI] of a multi-cell packet."""
    mcc = reader.u16()
    mnc = reader.u16() if four_g and mcc & 0x8000 else reader.u8()
    lac_size, cell_size = (4, 8) if four_g else (2, 3)
    cells = []
    for _ in range(NEIGHBOUR_SLOTS):
        cells.append(
            {
                "mcc": mcc & 0x7FFF if four_g else mcc,
                "mnc": mnc,
                "lac": reader.uint(lac_size),
                "cell_id": reader.uint(cell_size),
                "rssi": reader.u8(),  # raw 0-255; the sign convention is undocumented
            }
        )
    return known_cells(cells)


def decode_multi_cell(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x18/0x28 (2G) and 0xA1 (4G): time, serving + 6 neighbour cells, timing
    advance, language."""
    time = read_time(reader, utc_offset)
    attributes: Attributes = {
        "time": time.isoformat(),
        "cells": _read_cell_list(reader, four_g=raw.msg_id == 0xA1),
        "timing_advance": reader.u8(),
    }
    if reader.remaining >= 2:
        attributes["language"] = reader.u16()
    _keep_trailing(reader, attributes)
    return _message(raw, "lbs", attributes)


def _read_wifi(reader: Reader) -> dict[str, Any]:
    mac = reader.take(6).hex(":")
    return {"mac": mac, "rssi": reader.u8()}


def decode_lbs_wifi(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x2C: time, 7 cells, timing advance, WiFi count, n x [MAC 6, RSSI 1]
    (layout as Traccar decodes it)."""
    time = read_time(reader, utc_offset)
    attributes: Attributes = {
        "time": time.isoformat(),
        "cells": _read_cell_list(reader, four_g=False),
        "timing_advance": reader.u8(),
    }
    attributes["wifi"] = [_read_wifi(reader) for _ in range(reader.u8())]
    _keep_trailing(reader, attributes)
    return _message(raw, "wifi", attributes)


def decode_wifi_counted(
    raw: RawFrame, reader: Reader, utc_offset: timedelta
) -> Message:
    """0x17/0x69 without serial or CRC: BCD time, WiFi list, cell count, MCC,
    MNC, c x [LAC 2, CI 2, RSSI 1] (see gt06_frame). In a standard frame these
    numbers have other layouts, so they decode as unknown."""
    if raw.serial is not None:
        return decode_unknown(raw, reader, utc_offset)
    attributes: Attributes = {"time_bcd": raw.content[:6].hex()}
    attributes["time"] = read_bcd_time(reader, utc_offset).isoformat()
    attributes["wifi"] = [_read_wifi(reader) for _ in range(raw.length_field)]
    cell_count = reader.u8()
    mcc, mnc = reader.u16(), reader.u8()
    cells = [
        {
            "mcc": mcc,
            "mnc": mnc,
            "lac": reader.u16(),
            "cell_id": reader.u16(),
            "rssi": reader.u8(),
        }
        for _ in range(cell_count)
    ]
    attributes["cells"] = known_cells(cells)
    _keep_trailing(reader, attributes)
    return _message(raw, "wifi", attributes)


# -- information transfer 0x94 -----------------------------------------------


def decode_info(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x94: sub-type 1, then data that the sub-type defines."""
    attributes: Attributes = {}
    read_info(reader, attributes)
    _keep_trailing(reader, attributes)
    return _message(raw, "info", attributes)


# -- commands, time and address requests -------------------------------------


def _read_text_command(reader: Reader, attributes: Attributes) -> None:
    """Read length 1 (= 4 + text), server flag 4, ASCII text, [language 2]."""
    size = reader.u8()
    if size < 4:
        raise reader.error("invalid_length", f"command length {size} is below 4")
    attributes["server_flag"] = reader.uint(4)
    attributes["text"] = reader.take(size - 4).decode("ascii", errors="replace")
    if reader.remaining >= 2:
        attributes["language"] = reader.u16()


def decode_command_response_old(
    raw: RawFrame, reader: Reader, utc_offset: timedelta
) -> Message:
    """0x15: the terminal's response to 0x80, in the 0x80 layout."""
    attributes: Attributes = {}
    _read_text_command(reader, attributes)
    _keep_trailing(reader, attributes)
    return _message(raw, "command_response", attributes)


_TEXT_ENCODINGS = MappingProxyType({1: "ascii", 2: "utf-16-be"})


def decode_command_response(
    raw: RawFrame, reader: Reader, utc_offset: timedelta
) -> Message:
    """0x21: server flag 4, encoding 1 (1 ASCII, 2 UTF-16BE), text."""
    attributes: Attributes = {"server_flag": reader.uint(4)}
    encoding = reader.u8()
    attributes["encoding"] = encoding
    codec = _TEXT_ENCODINGS.get(encoding, "ascii")
    attributes["text"] = reader.rest().decode(codec, errors="replace")
    return _message(raw, "command_response", attributes)


def decode_command(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """0x80, server to device: lets device simulators read the server's commands."""
    attributes: Attributes = {}
    _read_text_command(reader, attributes)
    _keep_trailing(reader, attributes)
    return _message(raw, "command", attributes)


def decode_time_request(
    raw: RawFrame, reader: Reader, utc_offset: timedelta
) -> Message:
    """0x8A: empty from the device; the server's reply adds the UTC time."""
    attributes: Attributes = {}
    if reader.remaining == 6:
        attributes["server_time"] = read_time(reader, timedelta(0)).isoformat()
    _keep_trailing(reader, attributes)
    return _message(raw, "time_request", attributes)


PHONE_SIZE = 21


def decode_address_request(
    raw: RawFrame, reader: Reader, utc_offset: timedelta
) -> Message:
    """0x2A (and the older 0x1A): GPS block, phone 21 ASCII, alarm, language."""
    location, attributes = read_gps(reader, utc_offset)
    phone = reader.take(PHONE_SIZE).decode("ascii", errors="replace")
    attributes["phone"] = phone.strip("\x00 ")
    code = reader.u8()
    attributes["alarm_code"] = code
    attributes["language"] = reader.u8()
    _keep_trailing(reader, attributes)
    return _message(
        raw,
        "address_request",
        attributes,
        locations=(location,),
        alarms=alarm_names(code),
    )


def decode_unknown(raw: RawFrame, reader: Reader, utc_offset: timedelta) -> Message:
    """Any other protocol number: the content is kept as hex."""
    attributes: Attributes = {
        "content_hex": reader.rest().hex(),
        "long_frame": raw.long_frame,
    }
    return _message(raw, "unknown", attributes)


DECODERS: Mapping[int, Decoder] = MappingProxyType(
    {
        0x01: decode_login,
        0x10: decode_gps,
        0x11: decode_0x11,
        0x12: decode_gps_lbs,
        0x13: decode_heartbeat,
        0x15: decode_command_response_old,
        0x16: decode_alarm,
        0x17: decode_wifi_counted,
        0x18: decode_multi_cell,
        0x19: decode_lbs_alarm,
        0x1A: decode_address_request,
        0x21: decode_command_response,
        0x22: decode_gps_lbs,
        0x26: decode_alarm,
        0x27: decode_alarm,
        0x28: decode_multi_cell,
        0x2A: decode_address_request,
        0x2C: decode_lbs_wifi,
        0x69: decode_wifi_counted,
        0x80: decode_command,
        0x8A: decode_time_request,
        0x94: decode_info,
        0xA0: decode_gps_lbs,
        0xA1: decode_multi_cell,
        0xA4: decode_alarm,
    }
)


def decode_raw(raw: RawFrame, utc_offset: timedelta) -> Message:
    """Decode the content of a verified frame with its protocol number's decoder."""
    decoder = DECODERS.get(raw.msg_id, decode_unknown)
    return decoder(raw, Reader(raw.content, raw.msg_id), utc_offset)
