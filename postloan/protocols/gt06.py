"""Concox GT06 protocol: framing, decoding, replies and encoders, without I/O.

The gateway feeds each connection's bytes to a `Framer`, passes every frame to
`decode` and sends what `reply` returns once the message is stored::

    framer = Framer()
    for item in framer.feed(data):
        if isinstance(item, DecodeError):
            ...  # count item.reason
            continue
        message = decode(item, utc_offset=session_offset)
        response = reply(message, now=clock())

Time zones: GT06 times carry no zone. `decode` reads them as device local
time at UTC + `utc_offset`. The gateway passes the offset from the extended
login (`login_utc_offset`) or else the device's configured zone, default UTC,
and `decode` applies it to every packet type, as Traccar does.
NOTE: JM-VL03 v1.1.2 labels 0x22, 0x26 and 0x2A as UTC packets although its
login reports a zone; a unit that follows it literally needs utc_offset 0.

Modules: gt06_frame (framing, envelope, CRC), gt06_fields (field codecs),
gt06_decode (one decoder per protocol number), gt06_info (0x94 sub-types),
gt06_encode (encoders).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType

from postloan.protocols.base import EncodeError, Message
from postloan.protocols.gt06_decode import decode_raw
from postloan.protocols.gt06_encode import (
    ack,
    encode_alarm,
    encode_command,
    encode_command_response,
    encode_heartbeat,
    encode_location,
    encode_login,
    encode_time_reply,
)
from postloan.protocols.gt06_fields import ALARM_CODES, CellTower
from postloan.protocols.gt06_frame import (
    MAX_FRAME,
    PROTOCOL,
    SHORT_START,
    STOP,
    Framer,
    parse_frame,
)

__all__ = [
    "ALARM_CODES",
    "MAX_FRAME",
    "PROTOCOL",
    "CellTower",
    "Framer",
    "ack",
    "decode",
    "encode_alarm",
    "encode_command",
    "encode_command_response",
    "encode_heartbeat",
    "encode_location",
    "encode_login",
    "login_utc_offset",
    "reply",
]

MAX_UTC_OFFSET = timedelta(hours=24)

# Protocol numbers the device waits to see acknowledged (JM-VL03 v1.1.2):
# login, heartbeat and the alarms. 0x19 is the LBS alarm, which Traccar acks.
ACKNOWLEDGED = frozenset({0x01, 0x13, 0x16, 0x19, 0x26, 0x27, 0xA4})


def decode(frame: bytes, *, utc_offset: timedelta = timedelta(0)) -> Message:
    """Decode one whole frame as `Framer.feed` returns it.

    Verifies the start and stop bytes, the length field and the CRC (which
    counted WiFi frames 0x17/0x69 do not carry), then decodes the content by
    protocol number. Unknown protocol numbers decode
    to type ``unknown`` with the content in ``content_hex``. Raises only
    DecodeError for any `frame` bytes; an offset of a day or more is a
    ValueError.
    """
    if not -MAX_UTC_OFFSET < utc_offset < MAX_UTC_OFFSET:
        raise ValueError(f"utc_offset {utc_offset} is not within 24 hours")
    return decode_raw(parse_frame(bytes(frame)), utc_offset)


def login_utc_offset(message: Message) -> timedelta | None:
    """Return the UTC offset that an extended login reports, else None."""
    if message.protocol != PROTOCOL or message.type != "login":
        return None
    minutes = message.attributes.get("utc_offset_minutes")
    return None if minutes is None else timedelta(minutes=minutes)


def _time_reply(message: Message, now: datetime) -> bytes | None:
    if "server_time" in message.attributes or message.serial is None:
        return None  # the server's own reply, decoded by a simulator
    # JM-VL03 v1.1.2 echoes the request serial; Traccar sends 0000.
    return encode_time_reply(now, message.serial)


def _wifi_reply(message: Message, now: datetime) -> bytes | None:
    # Traccar replies to counted WiFi packets (0x17/0x69) with their BCD time
    # between 78 78 00 <type> and 0D 0A. 0x2C has no time_bcd and gets none.
    time_bcd = message.attributes.get("time_bcd")
    if not isinstance(time_bcd, str):
        return None
    header = SHORT_START + bytes((0x00, message.msg_id))
    return header + bytes.fromhex(time_bcd) + STOP


def _unknown_reply(message: Message, now: datetime) -> bytes | None:
    # Traccar acks unknown short-frame types so that the device does not resend.
    if message.attributes.get("long_frame") or message.serial is None:
        return None
    return ack(message.msg_id, message.serial)


_REPLIES_BY_TYPE: Mapping[str, Callable[[Message, datetime], bytes | None]] = (
    MappingProxyType(
        {
            "time_request": _time_reply,
            "unknown": _unknown_reply,
            "wifi": _wifi_reply,
        }
    )
)


def reply(message: Message, *, now: datetime) -> bytes | None:
    """Return the frame that the protocol requires in reply to `message`, or None.

    Login, heartbeat and alarm packets get the generic ack echoing their
    serial, 0x8A gets the UTC time from `now` (aware), counted WiFi packets
    (0x17/0x69) get their time echoed, and unknown short-frame packets get
    the generic ack.
    Location, LBS, information and command-response packets need none; a
    gateway may still send `ack(message.msg_id, message.serial)`.
    """
    if message.protocol != PROTOCOL:
        raise EncodeError(f"message of protocol {message.protocol!r} is not GT06")
    if message.msg_id in ACKNOWLEDGED and message.serial is not None:
        return ack(message.msg_id, message.serial)
    build = _REPLIES_BY_TYPE.get(message.type)
    return None if build is None else build(message, now)
