"""JT/T 808 wire layer: escaping, XOR checksum, message header and stream framing.

Layouts follow JT/T 808-2011/2013 (frame, escaping, 12/16-byte header) and JT/T
808-2019 (attribute bit 14, protocol version byte, 10-byte BCD phone, 17/21-byte
header). A frame on the wire is ``7E header body checksum 7E``. The checksum is
the XOR of header and body, computed before escaping. The body length in the
header counts unescaped bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

from postloan.protocols.base import DecodeError, EncodeError

PROTOCOL = "jt808"
# Escaped frame bound, both flags included. The longest standard frame is 1045
# bytes unescaped (21-byte 2019 header, 1023-byte body, checksum), so 2048 leaves
# room for escaping unless nearly every byte is 7D or 7E.
MAX_FRAME = 2048
# JT/T 808 stamps every time in GMT+8 (Beijing time).
DEFAULT_UTC_OFFSET = timedelta(hours=8)
MAX_BODY = 1023  # attribute bits 0-9

FLAG = 0x7E
ESCAPE = 0x7D
_ESCAPED_ESCAPE = b"\x7d\x01"
_ESCAPED_FLAG = b"\x7d\x02"

# Bits of the body attribute word in the header.
LENGTH_MASK = 0x03FF
ENCRYPTION_MASK = 0x1C00
SUBPACKAGE_BIT = 0x2000
VERSION_2019_BIT = 0x4000

EDITIONS = ("2011", "2013", "2019")
PHONE_DIGITS_2013 = 12
PHONE_DIGITS_2019 = 20

_HEADER_2013 = struct.Struct(">HH6sH")
_HEADER_2019 = struct.Struct(">HHB10sH")
_PIECE = struct.Struct(">HH")
# Smallest frame content after unescaping: 12-byte header and the checksum.
_MIN_CONTENT = _HEADER_2013.size + 1


@dataclass(frozen=True, slots=True)
class Header:
    """Decoded message header of one frame."""

    msg_id: int
    body_length: int
    version: str  # "2019" when attribute bit 14 is set, else "2013"
    protocol_version: int | None  # 2019 header only
    phone: str  # lowercase hex digits of the phone field, see `phone_to_device_id`
    serial: int
    subpackage: tuple[int, int] | None  # (total, 1-based index)

    @property
    def size(self) -> int:
        base = _HEADER_2019.size if self.version == "2019" else _HEADER_2013.size
        return base + (_PIECE.size if self.subpackage is not None else 0)


class BodyError(Exception):
    """A message body that does not match its layout.

    Body decoders raise it without frame context; the caller turns it into a
    `DecodeError` carrying the message id and the body bytes.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def fail(
    reason: str,
    detail: str,
    *,
    msg_id: int | None = None,
    offset: int | None = None,
    data: bytes = b"",
) -> NoReturn:
    """Raise a JT808 `DecodeError`."""
    raise DecodeError(
        reason, detail, protocol=PROTOCOL, msg_id=msg_id, offset=offset, data=data
    )


def xor_checksum(data: bytes) -> int:
    """Return the XOR of all bytes of `data` (0 for empty data).

    Folding the bytes as one big integer in halves takes log2(n) integer
    operations instead of a Python loop over every byte.
    """
    value = int.from_bytes(data, "big")
    width = len(data)
    while width > 1:
        half = (width + 1) // 2
        shift = 8 * half
        value = (value >> shift) ^ (value & ((1 << shift) - 1))
        width = half
    return value


def escape(data: bytes) -> bytes:
    """Escape 7D as 7D 01 and 7E as 7D 02, in that order."""
    return data.replace(b"\x7d", _ESCAPED_ESCAPE).replace(b"\x7e", _ESCAPED_FLAG)


def unescape(data: bytes) -> bytes:
    """Undo `escape`; raise `invalid_escape` on 7D followed by anything but 01/02."""
    if ESCAPE not in data:
        return data
    parts = data.split(b"\x7d")
    out = [parts[0]]
    offset = len(parts[0])
    for part in parts[1:]:
        if not part or part[0] not in (1, 2):
            fail(
                "invalid_escape",
                f"0x7D at content offset {offset} is followed by "
                f"{part[:1].hex() or 'another 0x7D or the end'}, not 01 or 02",
                offset=offset + 1,
                data=data,
            )
        out.append(b"\x7d" if part[0] == 1 else b"\x7e")
        out.append(part[1:])
        offset += len(part) + 1
    return b"".join(out)


def phone_to_device_id(field: bytes) -> str:
    """Return the phone field's BCD digits as a string.

    Some 2013 units store a 6-byte binary IMEI in the field instead of BCD. Its
    nibbles are rendered the same way, so the id keeps hex letters (for example
    ``0b3a73ce2ff2``) and `phone_to_field` turns it back into the same bytes.
    """
    return field.hex()


def phone_to_field(phone: str, version: str) -> bytes:
    """Return the phone field for `phone`, left-padded with 0 to 12 or 20 digits.

    Accepts decimal digits and, for units that send a binary phone field, hex
    digits as `phone_to_device_id` produces them.
    """
    digits = PHONE_DIGITS_2019 if version == "2019" else PHONE_DIGITS_2013
    if len(phone) > digits or not _is_hex(phone):
        raise EncodeError(
            f"invalid JT808 phone {phone!r}: expected up to {digits} decimal or "
            "hex digits"
        )
    return bytes.fromhex(phone.rjust(digits, "0"))


def _is_hex(text: str) -> bool:
    return all(char in "0123456789abcdefABCDEF" for char in text)


def check_edition(version: str) -> None:
    """Raise `EncodeError` unless `version` names a supported edition."""
    if version not in EDITIONS:
        raise EncodeError(
            f"invalid JT808 edition {version!r}: expected one of {EDITIONS}"
        )


def split_frame(frame: bytes) -> tuple[Header, bytes]:
    """Check one wire frame and return its header and unescaped body.

    The checks run in wire order: flags, stray inner 7E, escaping, minimum
    size, checksum (damaged or cut frames), then the body length that the
    header declares (a well-formed frame whose sender counted wrongly).
    """
    if not frame or frame[0] != FLAG:
        fail("missing_start_flag", "a frame must start with 0x7E", data=frame)
    if len(frame) < 2 or frame[-1] != FLAG:
        fail("incomplete", "no closing 0x7E yet", data=frame)
    inner = frame[1:-1]
    stray = inner.find(FLAG)
    if stray >= 0:
        fail(
            "frame_split_by_inner_0x7e",
            f"unescaped 0x7E at offset {stray + 1}; the sender did not escape it",
            offset=stray + 1,
            data=frame,
        )
    content = unescape(inner)
    if len(content) < _MIN_CONTENT:
        fail(
            "too_short",
            f"{len(content)} bytes after unescaping, below the {_MIN_CONTENT}-byte"
            " minimum",
            data=frame,
        )
    expected = xor_checksum(content[:-1])
    if expected != content[-1]:
        fail(
            "checksum_mismatch",
            f"checksum byte is 0x{content[-1]:02x}, XOR of the content is "
            f"0x{expected:02x}",
            msg_id=int.from_bytes(content[:2], "big"),
            data=frame,
        )
    header = parse_header(content)
    body = content[header.size : -1]
    if len(body) != header.body_length:
        fail(
            "body_length_mismatch",
            f"header declares a {header.body_length}-byte body, frame carries "
            f"{len(body)} bytes",
            msg_id=header.msg_id,
            data=frame,
        )
    return header, body


def parse_header(content: bytes) -> Header:
    """Parse the header at the start of unescaped frame content."""
    msg_id, attributes = struct.unpack_from(">HH", content)
    subpackage = bool(attributes & SUBPACKAGE_BIT)
    is_2019 = bool(attributes & VERSION_2019_BIT)
    fixed = _HEADER_2019 if is_2019 else _HEADER_2013
    size = fixed.size + (_PIECE.size if subpackage else 0)
    if len(content) < size + 1:
        fail(
            "too_short",
            f"{len(content)} bytes cannot hold a {size}-byte header and checksum",
            msg_id=msg_id,
            data=content,
        )
    protocol_version: int | None = None
    if is_2019:
        _, _, protocol_version, phone, serial = _HEADER_2019.unpack_from(content)
    else:
        _, _, phone, serial = _HEADER_2013.unpack_from(content)
    if attributes & ENCRYPTION_MASK:
        fail(
            "unsupported_encryption",
            f"encryption bits 0x{attributes & ENCRYPTION_MASK:04x} are set; "
            "RSA-encrypted bodies cannot be read without the key",
            msg_id=msg_id,
            data=content,
        )
    return Header(
        msg_id=msg_id,
        body_length=attributes & LENGTH_MASK,
        version="2019" if is_2019 else "2013",
        protocol_version=protocol_version,
        phone=phone_to_device_id(phone),
        serial=serial,
        subpackage=_parse_piece(content, fixed.size, msg_id) if subpackage else None,
    )


def _parse_piece(content: bytes, offset: int, msg_id: int) -> tuple[int, int]:
    total, index = _PIECE.unpack_from(content, offset)
    if total == 0 or not 1 <= index <= total:
        fail(
            "invalid_subpackage",
            f"piece index {index} of total {total}; the index counts from 1",
            msg_id=msg_id,
            offset=offset,
            data=content,
        )
    return total, index


def frame(
    msg_id: int,
    phone: str,
    serial: int,
    body: bytes,
    *,
    version: str = "2013",
    subpackage: tuple[int, int] | None = None,
    protocol_version: int = 1,
) -> bytes:
    """Build one wire frame: header, body, XOR checksum, escaping and flags.

    `version` "2011" and "2013" share the 12-byte header; "2019" sets attribute
    bit 14 and writes `protocol_version` and a 20-digit phone. `subpackage` is
    (total, 1-based index) of this piece.
    """
    check_edition(version)
    _check_word("message id", msg_id)
    _check_word("serial", serial)
    if len(body) > MAX_BODY:
        raise EncodeError(
            f"JT808 body of {len(body)} bytes exceeds {MAX_BODY}; split it with "
            "`frame_pieces`"
        )
    attributes = len(body)
    if subpackage is not None:
        total, index = subpackage
        if not 1 <= index <= total <= 0xFFFF:
            raise EncodeError(f"invalid subpackage (total, index) {subpackage}")
        attributes |= SUBPACKAGE_BIT
    phone_field = phone_to_field(phone, version)
    if version == "2019":
        if not 0 <= protocol_version <= 0xFF:
            raise EncodeError(f"invalid protocol version {protocol_version}")
        attributes |= VERSION_2019_BIT
        header = _HEADER_2019.pack(
            msg_id, attributes, protocol_version, phone_field, serial
        )
    else:
        header = _HEADER_2013.pack(msg_id, attributes, phone_field, serial)
    if subpackage is not None:
        header += _PIECE.pack(*subpackage)
    content = header + body
    content += bytes([xor_checksum(content)])
    return b"\x7e" + escape(content) + b"\x7e"


def frame_pieces(
    msg_id: int,
    phone: str,
    first_serial: int,
    body: bytes,
    *,
    piece_size: int = MAX_BODY,
    version: str = "2013",
    protocol_version: int = 1,
) -> list[bytes]:
    """Split `body` into sub-packaged frames with consecutive serials.

    JT/T 808 numbers the pieces from 1 and gives each its own serial, starting
    at `first_serial` and wrapping at 0xFFFF.
    """
    if not 1 <= piece_size <= MAX_BODY:
        raise EncodeError(f"piece size {piece_size} outside 1..{MAX_BODY}")
    chunks = [body[i : i + piece_size] for i in range(0, len(body), piece_size)]
    chunks = chunks or [b""]
    total = len(chunks)
    return [
        frame(
            msg_id,
            phone,
            (first_serial + number) & 0xFFFF,
            chunk,
            version=version,
            subpackage=(total, number + 1),
            protocol_version=protocol_version,
        )
        for number, chunk in enumerate(chunks)
    ]


def _check_word(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise EncodeError(f"JT808 {name} {value} outside 0..65535")


class Framer:
    """Cut a TCP byte stream into JT808 wire frames.

    Resynchronisation rule: bytes before a 0x7E are junk and are reported as
    one `junk` DecodeError when the 0x7E arrives. Two 0x7E in a row mean that
    the first one closed a frame we did not see start, so the second one opens
    the next frame and no empty frame is returned. A frame that would exceed
    `max_frame` bytes is reported as `frame_too_long` and its bytes are dropped
    up to the next 0x7E, which opens a new frame. Junk runs are also reported
    each time they reach `max_frame` bytes. These rules give the same output
    however the stream is split into reads.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        if max_frame < _MIN_CONTENT + 2:
            raise ValueError(
                f"max_frame {max_frame} cannot hold the smallest frame "
                f"({_MIN_CONTENT + 2} bytes)"
            )
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._in_frame = False  # the buffer starts with an opening 0x7E
        self._skipping = False  # dropping the rest of an oversize frame

    @property
    def buffered(self) -> int:
        """Number of bytes held: a partial frame or a junk run not reported yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | DecodeError]:
        """Append `data`; return complete frames and errors in stream order."""
        out: list[bytes | DecodeError] = []
        position = 0
        while position <= len(data):
            flag_at = data.find(FLAG, position)
            end = len(data) if flag_at < 0 else flag_at
            if end > position:
                self._take(data[position:end], out)
            if flag_at < 0:
                break
            self._on_flag(out)
            position = flag_at + 1
        return out

    def _take(self, chunk: bytes, out: list[bytes | DecodeError]) -> None:
        if self._skipping:
            return
        if self._in_frame:
            # Leave room for the closing flag.
            if len(self._buffer) + len(chunk) > self._max_frame - 1:
                head = bytes(self._buffer + chunk)[: self._max_frame]
                out.append(_error("frame_too_long", self._too_long_detail(), head))
                self._buffer.clear()
                self._in_frame = False
                self._skipping = True
                return
            self._buffer += chunk
            return
        self._buffer += chunk
        while len(self._buffer) >= self._max_frame:
            junk = bytes(self._buffer[: self._max_frame])
            del self._buffer[: self._max_frame]
            out.append(_error("junk", _junk_detail(junk), junk))

    def _on_flag(self, out: list[bytes | DecodeError]) -> None:
        if self._in_frame and len(self._buffer) > 1:
            self._buffer.append(FLAG)
            out.append(bytes(self._buffer))
            self._buffer.clear()
            self._in_frame = False
            return
        if not self._in_frame and self._buffer:
            junk = bytes(self._buffer)
            out.append(_error("junk", _junk_detail(junk), junk))
        # Opening flag, or a second flag in a row that replaces the first.
        self._buffer[:] = b"\x7e"
        self._in_frame = True
        self._skipping = False

    def _too_long_detail(self) -> str:
        return f"no closing 0x7E within {self._max_frame} bytes"


def _junk_detail(junk: bytes) -> str:
    return f"{len(junk)} bytes outside any frame, starting {junk[:16].hex()}"


def _error(reason: str, detail: str, data: bytes) -> DecodeError:
    return DecodeError(reason, detail, protocol=PROTOCOL, data=data)
