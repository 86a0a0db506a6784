"""JT/T 808 codec for the 2011, 2013 and 2019 editions, without I/O.

`Framer` cuts a TCP stream into wire frames, `decode` turns one frame into a
`Message`, `Reassembler` joins sub-packaged pieces, `reply` builds the response
the standard requires and the ``encode_*`` functions build terminal messages
(for simulators) and platform commands.

Device id: the terminal phone field as a digit string, 12 digits before 2019
and 20 digits in 2019, zero padding kept (``014130567872``). Some 2013 units
put a 6-byte binary IMEI there. Its nibbles then appear as lowercase hex
(``0b3a73ce2ff2``), the attribute ``imei`` contains the IMEI it encodes, and
the encoders accept the same string to address the unit.

Times in reports are read at `utc_offset` and returned in UTC. The standard
says GMT+8, but some units send UTC, so the gateway passes a per-device offset.

Every message carries ``attributes["version"]``: "2019" for a 2019 header,
"2011" for a registration whose body has the 2011 layout, otherwise "2013"
(the 2011 and 2013 headers are identical).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType

from postloan.protocols.base import DecodeError, EncodeError, Message
from postloan.protocols.jt808_body import decode_body, decode_fragment
from postloan.protocols.jt808_encode import (
    encode_auth,
    encode_batch,
    encode_general_response,
    encode_heartbeat,
    encode_location,
    encode_logout,
    encode_parameters_response,
    encode_platform_response,
    encode_position_query,
    encode_position_response,
    encode_query_attributes,
    encode_query_parameters,
    encode_register,
    encode_register_response,
    encode_set_parameters,
    encode_terminal_control,
    encode_time_response,
    encode_vehicle_control,
)
from postloan.protocols.jt808_frame import (
    DEFAULT_UTC_OFFSET,
    MAX_FRAME,
    PROTOCOL,
    Framer,
    frame,
    frame_pieces,
    split_frame,
)
from postloan.protocols.jt808_reassembly import IncompleteMessage, Reassembler

__all__ = [
    "DEFAULT_UTC_OFFSET",
    "MAX_FRAME",
    "PROTOCOL",
    "DecodeError",
    "EncodeError",
    "Framer",
    "IncompleteMessage",
    "Reassembler",
    "decode",
    "encode_auth",
    "encode_batch",
    "encode_general_response",
    "encode_heartbeat",
    "encode_location",
    "encode_logout",
    "encode_parameters_response",
    "encode_platform_response",
    "encode_position_query",
    "encode_position_response",
    "encode_query_attributes",
    "encode_query_parameters",
    "encode_register",
    "encode_register_response",
    "encode_set_parameters",
    "encode_terminal_control",
    "encode_time_response",
    "encode_vehicle_control",
    "frame",
    "frame_pieces",
    "reply",
]


def decode(frame: bytes, *, utc_offset: timedelta = DEFAULT_UTC_OFFSET) -> Message:
    """Decode one whole wire frame (``7E ... 7E``, still escaped).

    Un-escapes, verifies the XOR checksum and the body length, reads the
    2011/2013 or 2019 header (attribute bit 14) and decodes the body. A
    sub-packaged piece comes back as type ``fragment`` for `Reassembler`.
    Raises only `DecodeError`, whose ``reason`` names the check that failed.
    """
    header, body = split_frame(frame)
    if header.subpackage is not None:
        return decode_fragment(header, body)
    return decode_body(header, body, utc_offset)


_FIRST_PLATFORM_ID = 0x8000
_TERMINAL_RESPONSE = 0x0001


def reply(
    message: Message,
    *,
    platform_serial: int,
    auth_code: str | None = None,
    result: int = 0,
    now: datetime | None = None,
) -> bytes | None:
    """Return the frame the platform must send for `message`, or None.

    - 0x0100 register: 0x8100 with `result` and, on success, `auth_code`
      (default: the device id).
    - 0x0004 time query (2019): 0x8004 with `now` in UTC; no reply without it.
    - 0x0001 terminal general response, platform messages and messages built
      by `Reassembler` (each of their pieces was acknowledged): None.
    - every other terminal message, each sub-packaged piece included: 0x8001
      with `result` (0x0002, 0x0003, 0x0102, 0x0200, 0x0704, responses such
      as 0x0107, and ids this codec does not decode).

    The header edition and protocol version follow `message`.
    """
    if message.protocol != PROTOCOL or message.device_id is None:
        raise EncodeError(f"reply needs a decoded JT808 message, got {message!r}")
    if message.type == "fragment":
        return _general_reply(message, platform_serial, result)
    if (
        message.msg_id >= _FIRST_PLATFORM_ID
        or message.msg_id == _TERMINAL_RESPONSE
        or "pieces" in message.attributes
    ):
        return None
    special = _SPECIAL_REPLIES.get(message.msg_id)
    if special is not None:
        return special(message, platform_serial, auth_code, result, now)
    # NOTE: 0x0801 multimedia data expects 0x8800 with the missing pieces; a
    # single-frame 0x0801 gets the general response here.
    return _general_reply(message, platform_serial, result)


def _edition(message: Message) -> tuple[str, int]:
    """Return the header edition and protocol version a reply must use."""
    version = "2019" if message.attributes.get("version") == "2019" else "2013"
    protocol_version = message.attributes.get("protocol_version")
    return version, 1 if protocol_version is None else int(protocol_version)


def _general_reply(message: Message, platform_serial: int, result: int) -> bytes:
    version, protocol_version = _edition(message)
    return encode_platform_response(
        message.device_id or "",
        platform_serial,
        answered_serial=message.serial or 0,
        answered_id=message.msg_id,
        result=result,
        version=version,
        protocol_version=protocol_version,
    )


def _register_reply(
    message: Message,
    platform_serial: int,
    auth_code: str | None,
    result: int,
    now: datetime | None,
) -> bytes:
    version, protocol_version = _edition(message)
    device_id = message.device_id or ""
    return encode_register_response(
        device_id,
        platform_serial,
        answered_serial=message.serial or 0,
        result=result,
        auth_code=device_id if auth_code is None else auth_code,
        version=version,
        protocol_version=protocol_version,
    )


def _time_reply(
    message: Message,
    platform_serial: int,
    auth_code: str | None,
    result: int,
    now: datetime | None,
) -> bytes | None:
    if now is None:
        return None
    version, protocol_version = _edition(message)
    return encode_time_response(
        message.device_id or "",
        platform_serial,
        now,
        version=version,
        protocol_version=protocol_version,
    )


_ReplyBuilder = Callable[[Message, int, str | None, int, datetime | None], bytes | None]
_SPECIAL_REPLIES: Mapping[int, _ReplyBuilder] = MappingProxyType(
    {0x0100: _register_reply, 0x0004: _time_reply}
)
