"""JT/T 808 message bodies: one small decoder per message id and the dispatch.

Body layouts are those of JT/T 808-2013 and JT/T 808-2019. Where the editions
differ, the header's edition (attribute bit 14) selects the layout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from postloan.protocols.base import DecodeError, Location, Message
from postloan.protocols.jt808_frame import PROTOCOL, BodyError, Header
from postloan.protocols.jt808_location import decode_location, parse_bcd_time

# Plate colours (JT/T 697.7-2014 as cited by QuecPython/jtt808): 1 blue,
# 2 yellow, 3 black, 4 white, 5 green, 9 other; 0 means no plate and the plate
# field carries the VIN.
_PLATE_COLOURS = frozenset({0, 1, 2, 3, 4, 5, 9})
# 0x0100 field sizes (maker, model, terminal id) per edition. The fixed part is
# province WORD, city WORD, these three, plate colour BYTE: 25 bytes in 2011,
# 37 in 2013 and 76 in 2019, followed by the plate.
_REGISTER_FIELDS = {"2011": (5, 8, 7), "2013": (5, 20, 7), "2019": (11, 30, 30)}
# 0x0107 model and terminal-id sizes; the maker stays 5 bytes even in 2019.
_ATTRIBUTE_FIELDS = {"2013": (20, 7), "2019": (30, 30)}
# Terminal parameters of type STRING in JT/T 808-2013. The other standard
# parameters are BYTE, WORD or DWORD integers.
_STRING_PARAMETERS = frozenset(
    {*range(0x0010, 0x0018), 0x001A, 0x001D, *range(0x0040, 0x0045), 0x0048}
    | {0x0049, 0x0083}
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """Fields of one body as a decoder found them, before header fields are added."""

    type: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    locations: tuple[Location, ...] = ()
    alarms: tuple[str, ...] = ()


BodyDecoder = Callable[[bytes, Header, timedelta], Decoded]


class _Reader:
    """Sequential reads from a body that raise `BodyError` when it runs short."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise BodyError(
                "invalid_body",
                f"needs {size} bytes at offset {self.offset}, body has "
                f"{len(self.data)}",
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def integer(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def text(self, size: int) -> str:
        return decode_text(self.take(size))

    def rest(self) -> bytes:
        chunk = self.data[self.offset :]
        self.offset = len(self.data)
        return chunk

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset


def decode_text(raw: bytes) -> str:
    """Decode a GBK STRING or BYTE[n] field without its NUL or space padding."""
    return raw.strip(b"\x00 ").decode("gbk", errors="replace")


def decode_body(header: Header, body: bytes, utc_offset: timedelta) -> Message:
    """Decode a whole (not sub-packaged) body into a `Message`."""
    decoder = _DECODERS.get(header.msg_id, _decode_unknown)
    try:
        decoded = decoder(body, header, utc_offset)
    except BodyError as exc:
        raise _error(header, body, exc.reason, exc.detail) from exc
    except (struct.error, IndexError, ValueError) as exc:
        raise _error(header, body, "invalid_body", str(exc)) from exc
    return build_message(header, decoded)


def decode_fragment(header: Header, body: bytes) -> Message:
    """Return a sub-packaged piece as a ``fragment`` message for `Reassembler`."""
    assert header.subpackage is not None
    total, index = header.subpackage
    attributes = {"total": total, "index": index, "body_hex": body.hex()}
    return build_message(header, Decoded("fragment", attributes))


def build_message(header: Header, decoded: Decoded) -> Message:
    """Combine header fields and a decoded body into a `Message`."""
    attributes: dict[str, Any] = {"version": header.version}
    if header.protocol_version is not None:
        attributes["protocol_version"] = header.protocol_version
    if header.version != "2019" and not header.phone.isdigit():
        attributes["imei"] = binary_phone_imei(header.phone)
    attributes.update(decoded.attributes)
    return Message(
        protocol=PROTOCOL,
        type=decoded.type,
        msg_id=header.msg_id,
        serial=header.serial,
        device_id=header.phone,
        locations=decoded.locations,
        alarms=decoded.alarms,
        attributes=MappingProxyType(attributes),
    )


def binary_phone_imei(phone: str) -> str:
    """Return the IMEI that a binary 6-byte phone field encodes.

    The 48-bit value contains the first 14 IMEI digits. The Luhn check digit
    is appended, as Traccar's JT808 decoder does for such units.
    """
    digits = str(int(phone, 16))
    return digits + str(luhn_digit(digits))


def luhn_digit(digits: str) -> int:
    """Return the Luhn check digit for `digits`."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return (10 - total % 10) % 10


def _error(header: Header, body: bytes, reason: str, detail: str) -> DecodeError:
    return DecodeError(
        reason,
        f"message 0x{header.msg_id:04x}: {detail}",
        protocol=PROTOCOL,
        msg_id=header.msg_id,
        data=body,
    )


def _decode_empty(kind: str) -> BodyDecoder:
    # Heartbeat and logout bodies are empty; some vendors append bytes.
    def decode(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
        return Decoded(kind, {"body_hex": body.hex()} if body else {})

    return decode


def _decode_unknown(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
    return Decoded("unknown", {"body_hex": body.hex()})


def _register_edition(body: bytes, header: Header) -> str:
    """Tell a 2011 registration from a 2013 one; the header cannot.

    The 2013 fixed part ends with the plate colour at offset 36, the 2011 one at
    offset 24. A known colour code at one of these offsets decides. Otherwise
    the body length decides, because 2011 bodies rarely carry a plate or VIN of
    12 or more bytes.
    """
    if header.version == "2019":
        return "2019"
    if len(body) >= 37 and body[36] in _PLATE_COLOURS:
        return "2013"
    if len(body) >= 25 and body[24] in _PLATE_COLOURS:
        return "2011"
    return "2013" if len(body) >= 37 else "2011"


def _decode_register(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
    edition = _register_edition(body, header)
    maker_size, model_size, id_size = _REGISTER_FIELDS[edition]
    reader = _Reader(body)
    attributes = {
        "version": edition,
        "province": reader.integer(2),
        "city": reader.integer(2),
        "manufacturer": reader.text(maker_size),
        "model": reader.text(model_size),
        "terminal_id": reader.text(id_size),
        "plate_color": reader.integer(1),
        "plate": decode_text(reader.rest()),
    }
    return Decoded("register", attributes)


def _decode_auth(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
    if header.version != "2019":
        return Decoded("auth", {"auth_code": decode_text(body)})
    # 2019: code length BYTE, code, IMEI BYTE[15], software version BYTE[20].
    reader = _Reader(body)
    attributes = {"auth_code": reader.text(reader.integer(1))}
    attributes["imei"] = reader.text(min(15, reader.remaining))
    attributes["software_version"] = reader.text(min(20, reader.remaining))
    return Decoded("auth", attributes)


def _decode_response(kind: str) -> BodyDecoder:
    # 0x0001 and 0x8001: answered serial WORD, answered id WORD, result BYTE
    # (0 ok, 1 failure, 2 message error, 3 not supported, 4 alarm confirmed).
    def decode(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
        reader = _Reader(body)
        attributes = {
            "answered_serial": reader.integer(2),
            "answered_id": f"0x{reader.integer(2):04x}",
            "result": reader.integer(1),
        }
        return Decoded(kind, attributes)

    return decode


def _decode_location(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
    return _location_result("location", body, header, utc_offset, {})


def _decode_answered_location(kind: str) -> BodyDecoder:
    # 0x0201 and 0x0500: answered serial WORD, then a 0x0200 body.
    def decode(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
        reader = _Reader(body)
        answered = {"answered_serial": reader.integer(2)}
        return _location_result(kind, reader.rest(), header, utc_offset, answered)

    return decode


def _location_result(
    kind: str,
    body: bytes,
    header: Header,
    utc_offset: timedelta,
    extra: dict[str, Any],
) -> Decoded:
    location = decode_location(body, version=header.version, utc_offset=utc_offset)
    attributes = {**extra, **location.attributes} if extra else location.attributes
    return Decoded(kind, attributes, (location,), location.attributes["alarms"])


def _decode_batch(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
    """Decode 0x0704: count WORD, type BYTE, count x [length WORD, location].

    A record that fails to decode is listed in ``invalid_records`` and the
    others are kept, so one bad record does not cost the whole batch.
    """
    reader = _Reader(body)
    count = reader.integer(2)
    batch_type = reader.integer(1)
    locations: list[Location] = []
    invalid: list[dict[str, Any]] = []
    for index in range(count):
        if reader.remaining < 2:
            invalid.append(_invalid_record(index, "truncated", "body ended"))
            break
        size = reader.integer(2)
        if size > reader.remaining:
            detail = f"record of {size} bytes, {reader.remaining} left"
            invalid.append(_invalid_record(index, "truncated", detail))
            break
        record = reader.take(size)
        try:
            locations.append(
                decode_location(record, version=header.version, utc_offset=utc_offset)
            )
        except BodyError as exc:
            invalid.append(_invalid_record(index, exc.reason, exc.detail))
    attributes: dict[str, Any] = {
        "count": count,
        "batch_type": batch_type,
        "backfill": batch_type == 1,  # 1 = blind-area back-fill
    }
    if invalid:
        attributes["invalid_records"] = tuple(invalid)
    if reader.remaining:
        attributes["tail_hex"] = reader.rest().hex()
    alarms = dict.fromkeys(
        name for location in locations for name in location.attributes["alarms"]
    )
    return Decoded("batch_location", attributes, tuple(locations), tuple(alarms))


def _invalid_record(index: int, reason: str, detail: str) -> dict[str, Any]:
    return {"index": index, "reason": reason, "detail": detail}


def decode_parameter_list(reader: _Reader, count: int) -> dict[str, Any]:
    """Decode [id DWORD, length BYTE, value] entries keyed by ``0x%04x`` id.

    STRING parameters become text, 1/2/4-byte values integers, anything else
    hex. Entries that run past the body end the list.
    """
    parameters: dict[str, Any] = {}
    for _ in range(count):
        if reader.remaining < 5:
            break
        parameter_id = reader.integer(4)
        size = reader.integer(1)
        if size > reader.remaining:
            break
        value = reader.take(size)
        parameters[f"0x{parameter_id:04x}"] = _parameter_value(parameter_id, value)
    return parameters


def _parameter_value(parameter_id: int, value: bytes) -> int | str:
    if parameter_id in _STRING_PARAMETERS:
        return decode_text(value)
    if len(value) in (1, 2, 4):
        return int.from_bytes(value, "big")
    return value.hex()


def _decode_parameters(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
    # 0x0104: answered serial WORD, count BYTE, parameter list.
    reader = _Reader(body)
    answered_serial = reader.integer(2)
    count = reader.integer(1)
    attributes: dict[str, Any] = {
        "answered_serial": answered_serial,
        "count": count,
        "parameters": decode_parameter_list(reader, count),
    }
    if reader.remaining:
        attributes["tail_hex"] = reader.rest().hex()
    return Decoded("parameters", attributes)


def _decode_attributes(body: bytes, header: Header, utc_offset: timedelta) -> Decoded:
    # 0x0107: type WORD, maker BYTE[5], model, terminal id, ICCID BCD[10],
    # hardware and firmware versions as [length BYTE, STRING], GNSS module
    # BYTE, communication module BYTE.
    model_size, id_size = _ATTRIBUTE_FIELDS[
        "2019" if header.version == "2019" else "2013"
    ]
    reader = _Reader(body)
    attributes = {
        "terminal_type": f"0x{reader.integer(2):04x}",
        "manufacturer": reader.text(5),
        "model": reader.text(model_size),
        "terminal_id": reader.text(id_size),
        "iccid": reader.take(10).hex(),
        "hw_version": reader.text(reader.integer(1)),
        "fw_version": reader.text(reader.integer(1)),
        "gnss_attr": f"0x{reader.integer(1):02x}",
        "comm_attr": f"0x{reader.integer(1):02x}",
    }
    return Decoded("attributes", attributes)


def _decode_register_response(
    body: bytes, header: Header, utc_offset: timedelta
) -> Decoded:
    # 0x8100: answered serial WORD, result BYTE, auth code STRING on success.
    reader = _Reader(body)
    attributes: dict[str, Any] = {
        "answered_serial": reader.integer(2),
        "result": reader.integer(1),
    }
    if attributes["result"] == 0:
        attributes["auth_code"] = decode_text(reader.rest())
    return Decoded("register_response", attributes)


def _decode_set_parameters(
    body: bytes, header: Header, utc_offset: timedelta
) -> Decoded:
    reader = _Reader(body)
    count = reader.integer(1)
    attributes = {"count": count, "parameters": decode_parameter_list(reader, count)}
    return Decoded("set_parameters", attributes)


def _decode_terminal_control(
    body: bytes, header: Header, utc_offset: timedelta
) -> Decoded:
    # 0x8105: command word BYTE, then a ';'-separated parameter STRING.
    reader = _Reader(body)
    attributes = {
        "command_word": reader.integer(1),
        "parameters": decode_text(reader.rest()),
    }
    return Decoded("terminal_control", attributes)


def _decode_vehicle_control(
    body: bytes, header: Header, utc_offset: timedelta
) -> Decoded:
    reader = _Reader(body)
    if header.version != "2019":
        return Decoded("vehicle_control", {"control_flag": reader.integer(1)})
    # 2019: count WORD, then [control type WORD, parameter]; only type 0x0001
    # (door, 1-byte parameter) has a known length, so decoding stops at others.
    count = reader.integer(2)
    controls: dict[str, int] = {}
    for _ in range(count):
        control_type = reader.integer(2)
        if control_type != 0x0001:
            break
        controls[f"0x{control_type:04x}"] = reader.integer(1)
    attributes: dict[str, Any] = {"count": count, "controls": controls}
    if "0x0001" in controls:
        attributes["control_flag"] = controls["0x0001"]
    if reader.remaining:
        attributes["tail_hex"] = reader.rest().hex()
    return Decoded("vehicle_control", attributes)


def _decode_time_response(
    body: bytes, header: Header, utc_offset: timedelta
) -> Decoded:
    # 0x8004 carries UTC (field "UTC时间" in yezhihao/jt808-server T8004).
    time = parse_bcd_time(_Reader(body).take(6), timedelta(0))
    return Decoded("time_response", {"time": time.isoformat()})


_DECODERS: Mapping[int, BodyDecoder] = MappingProxyType(
    {
        0x0001: _decode_response("general_response"),
        0x0002: _decode_empty("heartbeat"),
        0x0003: _decode_empty("logout"),
        0x0004: _decode_empty("time_query"),
        0x0100: _decode_register,
        0x0102: _decode_auth,
        0x0104: _decode_parameters,
        0x0107: _decode_attributes,
        0x0200: _decode_location,
        0x0201: _decode_answered_location("position_response"),
        0x0500: _decode_answered_location("vehicle_control_response"),
        0x0704: _decode_batch,
        # Platform messages, decoded for device simulators and round trips.
        0x8001: _decode_response("platform_response"),
        0x8004: _decode_time_response,
        0x8100: _decode_register_response,
        0x8103: _decode_set_parameters,
        0x8104: _decode_empty("query_parameters"),
        0x8105: _decode_terminal_control,
        0x8107: _decode_empty("query_attributes"),
        0x8201: _decode_empty("position_query"),
        0x8500: _decode_vehicle_control,
    }
)
