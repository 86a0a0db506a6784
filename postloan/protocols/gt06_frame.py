"""GT06 framing: cut frames out of a TCP byte stream and check one frame's envelope.

Frame layout (Concox JM-VL03 protocol v1.1.2, "General Packet Format")::

    78 78 | length:1 | protocol:1 | content | serial:2 | crc:2 | 0D 0A
    79 79 | length:2 | protocol:1 | content | serial:2 | crc:2 | 0D 0A

`length` counts the protocol byte, the content, the serial and the CRC, so a
frame is `length + 5` bytes (short) or `length + 6` bytes (long). The CRC is
CRC-16/X.25 over the bytes from the length field through the serial, sent high
byte first.

One vendor format breaks this layout: WiFi packets 0x17 and 0x69 put the
WiFi count where the length belongs and carry no serial and no CRC (real
packets in Traccar's Gt06FrameDecoderTest)::

    78 78 | wifi count n | 17/69 | time:6 BCD | n x [MAC:6, RSSI:1] |
    cell count c | MCC:2 | MNC:1 | c x [LAC:2, CI:2, RSSI:1] | [1 byte] | 0D 0A

Their size follows from the two counts, so they are framed without searching
for 0D 0A. The optional byte before 0D 0A appears in packets of the
GT06-derived Topin protocol (Traccar's TopinProtocolDecoderTest).
"""

from __future__ import annotations

from dataclasses import dataclass

from postloan.protocols.base import DecodeError, EncodeError
from postloan.protocols.crc import crc16_x25

PROTOCOL = "gt06"
MAX_FRAME = 1024

SHORT_START = b"\x78\x78"
LONG_START = b"\x79\x79"
STOP = b"\r\n"
MIN_LENGTH = 5  # protocol 1 + serial 2 + CRC 2, with empty content
MIN_FRAME = MIN_LENGTH + 5
MAX_SHORT_LENGTH = 0xFF
MAX_LONG_LENGTH = 0xFFFF

COUNTED_WIFI_TYPES = frozenset({0x17, 0x69})
_WIFI_HEADER = 10  # start 2, wifi count 1, protocol 1, BCD time 6
_WIFI_ENTRY = 7  # MAC 6, RSSI 1
_WIFI_CELL = 5  # LAC 2, CI 2, RSSI 1
_WIFI_CELL_HEADER = 4  # cell count 1, MCC 2, MNC 1


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A frame whose envelope and CRC are verified, split into its fields.

    `serial` is None for counted WiFi frames (0x17/0x69), which carry none;
    their `length_field` is the WiFi count.
    """

    msg_id: int
    content: bytes
    serial: int | None
    long_frame: bool
    length_field: int


def _error(
    reason: str,
    detail: str,
    *,
    msg_id: int | None = None,
    offset: int | None = None,
    data: bytes = b"",
) -> DecodeError:
    return DecodeError(
        reason, detail, protocol=PROTOCOL, msg_id=msg_id, offset=offset, data=data
    )


def _length_field(data: bytes, start: int, header: int) -> int:
    return int.from_bytes(data[start + 2 : start + header])


def wifi_frame_size(data: bytes, start: int) -> int | None:
    """Return the size of the counted WiFi frame at `start`, without the
    optional byte before 0D 0A.

    Returns None while `data` ends before the cell count, which fixes the size.
    The caller checks that `data[start + 3]` is 0x17 or 0x69.
    """
    wifi_count = data[start + 2]
    cell_count_at = start + _WIFI_HEADER + wifi_count * _WIFI_ENTRY
    if cell_count_at >= len(data):
        return None
    cell_count = data[cell_count_at]
    return (
        _WIFI_HEADER
        + wifi_count * _WIFI_ENTRY
        + _WIFI_CELL_HEADER
        + cell_count * _WIFI_CELL
        + len(STOP)
    )


def parse_frame(frame: bytes) -> RawFrame:
    """Check the envelope and CRC of one whole frame and split it into fields.

    Raises DecodeError with reason ``incomplete`` (the frame ends early and
    not with 0D 0A), ``length_mismatch``, ``bad_start``, ``bad_stop_bytes`` or
    ``crc_mismatch``.
    """
    start = frame[:2]
    if len(start) == 2 and start not in (SHORT_START, LONG_START):
        detail = f"frame starts with {start.hex()}, not 7878 or 7979"
        raise _error("bad_start", detail, data=frame)
    if len(frame) < 4:
        detail = f"{len(frame)} bytes are too few for a frame"
        raise _error("incomplete", detail, data=frame)
    header = 3 if start == SHORT_START else 4
    try:
        return _parse_standard(frame, header, _length_field(frame, 0, header))
    except DecodeError:
        wifi = None
        if header == 3 and frame[3] in COUNTED_WIFI_TYPES:
            wifi = _parse_wifi_frame(frame)
        if wifi is None:
            raise
        return wifi


def _parse_standard(frame: bytes, header: int, length: int) -> RawFrame:
    size = length + header + len(STOP)
    if size != len(frame) or length < MIN_LENGTH:
        raise _length_error(frame, length, size)
    msg_id = frame[header]
    if frame[-2:] != STOP:
        detail = f"frame ends with {frame[-2:].hex()}, not 0d0a"
        raise _error("bad_stop_bytes", detail, msg_id=msg_id, data=frame)
    sent = int.from_bytes(frame[-4:-2])
    computed = crc16_x25(frame[2:-4])
    if sent != computed:
        detail = f"CRC in frame is {sent:04x}, computed {computed:04x}"
        raise _error("crc_mismatch", detail, msg_id=msg_id, data=frame)
    return RawFrame(
        msg_id=msg_id,
        content=frame[header + 1 : -6],
        serial=int.from_bytes(frame[-6:-4]),
        long_frame=header == 4,
        length_field=length,
    )


def _length_error(frame: bytes, length: int, size: int) -> DecodeError:
    msg_id = frame[3] if len(frame) > 3 and frame[:2] == SHORT_START else None
    if length < MIN_LENGTH:
        detail = f"length field {length} is below the minimum {MIN_LENGTH}"
        return _error("length_mismatch", detail, msg_id=msg_id, data=frame)
    detail = f"length field {length} means {size} bytes, the frame has {len(frame)}"
    if len(frame) < size and not frame.endswith(STOP):
        return _error("incomplete", detail, msg_id=msg_id, data=frame)
    return _error("length_mismatch", detail, msg_id=msg_id, data=frame)


def _parse_wifi_frame(frame: bytes) -> RawFrame | None:
    size = wifi_frame_size(frame, 0)
    if size is None or len(frame) not in (size, size + 1) or frame[-2:] != STOP:
        return None
    return RawFrame(
        msg_id=frame[3],
        content=frame[4:-2],
        serial=None,
        long_frame=False,
        length_field=frame[2],
    )


def build_frame(
    msg_id: int, content: bytes, serial: int, *, long_frame: bool = False
) -> bytes:
    """Return a whole frame with length, serial, CRC and stop bytes.

    Raises EncodeError when the content does not fit the frame's length field
    or an integer is out of range.
    """
    length = 1 + len(content) + 4
    limit = MAX_LONG_LENGTH if long_frame else MAX_SHORT_LENGTH
    if length > limit:
        kind = "long" if long_frame else "short"
        raise EncodeError(
            f"content of {len(content)} bytes does not fit a {kind} frame "
            f"(length field at most {limit})"
        )
    if not 0 <= msg_id <= 0xFF:
        raise EncodeError(f"protocol number {msg_id} is outside 0..255")
    if not 0 <= serial <= 0xFFFF:
        raise EncodeError(f"serial {serial} is outside 0..65535")
    length_field = length.to_bytes(2 if long_frame else 1)
    body = length_field + bytes((msg_id,)) + content + serial.to_bytes(2)
    start = LONG_START if long_frame else SHORT_START
    return start + body + crc16_x25(body).to_bytes(2) + STOP


def _find_start(buffer: bytes, pos: int) -> tuple[int, bool]:
    """Return the index of the next start marker at or after `pos`, and True.

    Without a marker, return the end of `buffer`, or the index of its last byte
    when that byte is 78 or 79 and may begin a marker that the next read
    completes, and False.
    """
    short = buffer.find(SHORT_START, pos)
    long = buffer.find(LONG_START, pos)
    if short >= 0 and (long < 0 or short < long):
        return short, True
    if long >= 0:
        return long, True
    if buffer[-1] in (SHORT_START[0], LONG_START[0]):
        return len(buffer) - 1, False
    return len(buffer), False


class Framer:
    """Cut GT06 frames out of a TCP byte stream.

    `feed` returns whole wire frames and DecodeErrors in stream order. It
    does not check CRCs, because `decode` does. Between calls the framer keeps
    at most `max_frame - 1` bytes: the start of a frame that is not complete.

    Resynchronisation rule:

    * Bytes outside frames are dropped. Each run of them up to the next start
      marker (78 78 or 79 79) is reported once, as a ``junk`` error that
      contains the run's first bytes, however many reads the run spans.
    * A candidate frame ends where its length field says. The framer rejects
      it when the two bytes there are not 0D 0A (``bad_stop_bytes``), when the
      length field is below 5 (``length_mismatch``) or when the frame would be
      longer than `max_frame` (``frame_too_long``). It then drops only the
      first byte of the marker and searches again, so a real frame that starts
      inside the rejected bytes is still found. Bytes that it then skips
      within the rejected frame's declared size are not reported as junk.
    * A wrong length field is not repaired by searching for 0D 0A, as
      Traccar's Gt06FrameDecoder does, because 0D 0A also occurs inside
      coordinates and CRCs. A clone heartbeat whose length byte is 0x08 for
      ten bytes (Traccar's Gt06FrameDecoderTest) is therefore rejected.
    * Counted WiFi frames 0x17/0x69 are the exception (see the module
      docstring).
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        if max_frame < MIN_FRAME:
            raise ValueError(
                f"max_frame {max_frame} is below the smallest frame, {MIN_FRAME} bytes"
            )
        self._max_frame = max_frame
        self._buffer = b""
        self._offset = 0  # stream offset of self._buffer[0]
        self._reported_until = (
            0  # stream offset up to which dropped bytes were reported
        )
        self._in_junk = False  # the last read ended inside a reported junk run

    @property
    def buffered(self) -> int:
        """Number of bytes kept for a frame that is not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | DecodeError]:
        """Append `data` and return the frames and errors it completes, in order.

        Never raises on any input bytes.
        """
        buffer = self._buffer + data
        out: list[bytes | DecodeError] = []
        pos = 0
        while pos < len(buffer):
            start, found = _find_start(buffer, pos)
            if start > pos:
                self._drop(buffer, pos, start, out)
                pos = start
            self._in_junk = self._in_junk and not found
            if len(buffer) - pos < 2:
                break
            result = self._cut(buffer, pos)
            if result is None:
                break
            out.append(result)
            pos += 1 if isinstance(result, DecodeError) else len(result)
        self._offset += pos
        self._buffer = buffer[pos:]
        return out

    def _drop(
        self, buffer: bytes, pos: int, end: int, out: list[bytes | DecodeError]
    ) -> None:
        first = max(self._offset + pos, self._reported_until)
        last = self._offset + end
        if last <= first:
            return
        self._reported_until = last
        if self._in_junk:
            return
        self._in_junk = True
        data = buffer[first - self._offset : end]
        detail = f"{len(data)} bytes outside a frame"
        out.append(_error("junk", detail, offset=first, data=data))

    def _cut(self, buffer: bytes, pos: int) -> bytes | DecodeError | None:
        """Return the frame at `pos`, an error for a rejected candidate, or None
        while more bytes are needed."""
        available = len(buffer) - pos
        short = buffer[pos] == SHORT_START[0]
        header = 3 if short else 4
        if available < header:
            return None
        length = _length_field(buffer, pos, header)
        size = length + header + len(STOP)
        plausible = length >= MIN_LENGTH and size <= self._max_frame
        if plausible and size > available:
            return None  # a counted WiFi frame is longer still
        if plausible and buffer[pos + size - 2 : pos + size] == STOP:
            return buffer[pos : pos + size]
        if short and available < 4:
            return None  # the protocol byte decides whether WiFi counting applies
        if short and buffer[pos + 3] in COUNTED_WIFI_TYPES:
            wifi_size = self._wifi_size(buffer, pos)
            if wifi_size > 0:
                return buffer[pos : pos + wifi_size]
            if wifi_size == 0:
                return None
        return self._reject(buffer, pos, header, length, size)

    def _wifi_size(self, buffer: bytes, pos: int) -> int:
        """Return the size of the counted WiFi frame at `pos`, 0 while more bytes
        are needed, or -1 when the bytes cannot be one within `max_frame`."""
        fixed = _WIFI_HEADER + _WIFI_CELL_HEADER + len(STOP) + 1
        if fixed + buffer[pos + 2] * _WIFI_ENTRY > self._max_frame:
            return -1
        size = wifi_frame_size(buffer, pos)
        if size is None:
            return 0
        if size + 1 > self._max_frame:
            return -1
        available = len(buffer) - pos
        for candidate in (size, size + 1):
            if available < candidate:
                return 0
            if buffer[pos + candidate - 2 : pos + candidate] == STOP:
                return candidate
        return -1

    def _reject(
        self, buffer: bytes, pos: int, header: int, length: int, size: int
    ) -> DecodeError:
        offset = self._offset + pos
        msg_id = buffer[pos + header] if len(buffer) > pos + header else None
        if length < MIN_LENGTH:
            reason = "length_mismatch"
            detail = f"length field {length} is below the minimum {MIN_LENGTH}"
        elif size > self._max_frame:
            reason = "frame_too_long"
            detail = (
                f"length field {length} means {size} bytes, above {self._max_frame}"
            )
        else:
            reason = "bad_stop_bytes"
            stop = buffer[pos + size - 2 : pos + size].hex()
            detail = f"bytes {size - 2}..{size - 1} of the frame are {stop}, not 0d0a"
        self._reported_until = max(self._reported_until, offset + size)
        data = buffer[pos : pos + size]
        return _error(reason, detail, msg_id=msg_id, offset=offset, data=data)
