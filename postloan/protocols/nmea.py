"""NMEA 0183 sentences from trackers and receivers that stream raw NMEA over TCP.

Framing is one sentence per line, ended by LF or CR LF. Each line decodes to one
`Message`:

* ``$ttRMC`` gives ``type="location"`` with one `Location` (speed converted from
  knots to km/h). An RMC without a date, a time or a position gives a
  ``location`` message with no locations. A receiver without a fix sends such
  sentences (``$GPRMC,,V,,,,,,,,,,N*53``), and they are not counted as bad bytes.
* ``$ttGGA`` gives ``type="fix"`` with the attributes ``time_of_day``,
  ``satellites``, ``altitude_m`` and ``fix_quality``. `FixCombiner` merges them into
  the RMC of the same time of day.
* Any other sentence with a valid checksum gives ``type="other"`` with the
  sentence type in ``attributes["sentence"]``.
* A line starting with ``#`` gives ``type="comment"`` (gpsd test logs put their
  metadata there).
* A line of 8 to 20 digits gives ``type="login"`` with ``device_id``: trackers that
  stream raw NMEA commonly send their IMEI as the first line of a connection.

NMEA has no numeric message ids, so `Message.msg_id` is always 0.

Every sentence must carry its ``*hh`` checksum (NMEA 0183 makes it optional for
some sentences, but a tracker stream over TCP has no other integrity check).
Only `DecodeError` leaves this module. Its reasons are ``line_too_long``,
``invalid_start``, ``missing_checksum``, ``checksum_mismatch`` and
``invalid_sentence``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any

import pynmea2

from postloan.protocols.base import DecodeError, Location, Message

PROTOCOL = "nmea"

# NMEA 0183 limits a sentence to 82 characters including $ and CR LF; 256 leaves
# room for long proprietary sentences and NMEA 4.x fields.
MAX_LINE = 256

KNOTS_TO_KMH = 1.852

_CHECKSUMMED = re.compile(rb"^\$(?P<body>[^*]*)\*(?P<checksum>[0-9A-Fa-f]{2})$")
_ADDRESS = re.compile(r"^[A-Z0-9]{2,}$")
_LOGIN = re.compile(rb"^[0-9]{8,20}$")
_MINUTES_FIELD = re.compile(r"^\d{3,5}\.\d+$")


def _error(reason: str, detail: str, line: bytes) -> DecodeError:
    return DecodeError(reason, detail, protocol=PROTOCOL, data=line)


class Framer:
    """Split a byte stream into NMEA lines.

    `feed` returns each complete line without its LF or CR LF terminator, and a
    ``line_too_long`` `DecodeError` for a line longer than `max_line` bytes. The
    rest of such a line is discarded up to the next LF, which resynchronises the
    stream. Empty lines are skipped. The framer buffers at most ``max_line + 1``
    bytes (the extra byte is the CR of a CR LF terminator) and never raises.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._buffer = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | DecodeError]:
        out: list[bytes | DecodeError] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._keep(data[start:], out)
                return out
            if self._discarding:
                self._discarding = False
            else:
                self._buffer += data[start:end]
                self._emit_line(out)
            self._buffer.clear()
            start = end + 1

    def _keep(self, tail: bytes, out: list[bytes | DecodeError]) -> None:
        if self._discarding or not tail:
            return
        self._buffer += tail
        if len(self._buffer) > self._max_line + 1:
            out.append(self._too_long())
            self._buffer.clear()
            self._discarding = True

    def _emit_line(self, out: list[bytes | DecodeError]) -> None:
        line = bytes(self._buffer)
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self._max_line:
            out.append(self._too_long())
        elif line:
            out.append(line)

    def _too_long(self) -> DecodeError:
        return _error(
            "line_too_long",
            f"line longer than {self._max_line} bytes, skipped to the next newline",
            bytes(self._buffer[:64]),
        )


def decode(line: bytes) -> Message:
    """Decode one line as the `Framer` returns it (a trailing CR LF is allowed).

    Raises `DecodeError` and nothing else.
    """
    line = line.rstrip(b"\r\n")
    for pattern, handler in _LINE_KINDS:
        if pattern(line):
            return handler(line)
    raise _error("invalid_start", "line starts with neither '$', '#' nor digits", line)


def _decode_comment(line: bytes) -> Message:
    text = line[1:].decode("utf-8", errors="replace").strip()
    return Message(
        protocol=PROTOCOL, type="comment", msg_id=0, attributes={"text": text}
    )


def _decode_login(line: bytes) -> Message:
    device_id = line.decode("ascii")
    return Message(protocol=PROTOCOL, type="login", msg_id=0, device_id=device_id)


def _decode_sentence(line: bytes) -> Message:
    text = _checked_text(line)
    address = text[1:].split(",", 1)[0]
    if not _ADDRESS.match(address):
        raise _error("invalid_sentence", f"invalid address field {address!r}", line)
    # In NMEA 0183 a proprietary sentence starts with P and a manufacturer code.
    # Every other address is a 2-character talker id and the sentence formatter.
    if address.startswith("P"):
        talker, sentence_type = None, address
    else:
        talker, sentence_type = address[:2], address[2:]
    decoder = _SENTENCE_DECODERS.get(sentence_type)
    if decoder is None or talker is None:
        attributes = {"talker": talker, "sentence": sentence_type}
        return Message(protocol=PROTOCOL, type="other", msg_id=0, attributes=attributes)
    try:
        sentence = pynmea2.parse(text, check=True)
        return decoder(sentence, talker)
    except (ValueError, TypeError, IndexError) as exc:
        # pynmea2 raises ParseError (a ValueError) for unparsable text and
        # ValueError or TypeError from its field converters.
        raise _error("invalid_sentence", str(exc), line) from exc


def _checked_text(line: bytes) -> str:
    """Return the sentence text after checking its checksum and characters."""
    match = _CHECKSUMMED.match(line)
    if match is None:
        if re.search(rb"\*[0-9A-Fa-f]{2}$", line) is None:
            raise _error("missing_checksum", "sentence has no *hh checksum", line)
        raise _error("invalid_sentence", "'*' inside the sentence body", line)
    body = match.group("body")
    expected = int(match.group("checksum"), 16)
    actual = 0
    for byte in body:
        actual ^= byte
    if actual != expected:
        detail = f"checksum is {expected:02X}, computed {actual:02X}"
        raise _error("checksum_mismatch", detail, line)
    if b"$" in body or any(byte < 0x20 or byte > 0x7E for byte in body):
        raise _error("invalid_sentence", "'$' or a non-printable byte inside", line)
    return line.decode("ascii")


def _decode_rmc(sentence: Any, talker: str) -> Message:
    attributes: dict[str, Any] = {
        "talker": talker,
        "sentence": "RMC",
        "status": sentence.status or None,
        "mode": sentence.mode_indicator or None,
    }
    day_time = _field(sentence, "timestamp", time)
    day = _field(sentence, "datestamp", date)
    position = _position(sentence)
    if day_time is None or day is None or position is None:
        return Message(
            protocol=PROTOCOL, type="location", msg_id=0, attributes=attributes
        )
    attributes["time_of_day"] = _format_time_of_day(day_time)
    knots = _field(sentence, "spd_over_grnd", float)
    course = _field(sentence, "true_course", float)
    location = Location(
        time=datetime.combine(day, day_time.replace(tzinfo=None), tzinfo=UTC),
        latitude=position[1],
        longitude=position[0],
        speed_kmh=0.0 if knots is None else knots * KNOTS_TO_KMH,
        course=course,
        # A receiver sets status A only with a fix; NMEA 2.3+ adds the mode
        # indicator, where N means "data not valid" even with status A.
        valid=bool(sentence.is_valid),
    )
    return Message(
        protocol=PROTOCOL,
        type="location",
        msg_id=0,
        locations=(location,),
        attributes=attributes,
    )


def _decode_gga(sentence: Any, talker: str) -> Message:
    day_time = _field(sentence, "timestamp", time)
    satellites = sentence.num_sats
    altitude = _field(sentence, "altitude", float)
    if altitude is not None and sentence.altitude_units not in ("M", ""):
        raise ValueError(f"altitude unit {sentence.altitude_units!r} is not metres")
    attributes: dict[str, Any] = {
        "talker": talker,
        "sentence": "GGA",
        "time_of_day": None if day_time is None else _format_time_of_day(day_time),
        "satellites": int(satellites) if satellites else None,
        "altitude_m": altitude,
        "fix_quality": _field(sentence, "gps_qual", int),
    }
    return Message(protocol=PROTOCOL, type="fix", msg_id=0, attributes=attributes)


def _field(sentence: Any, name: str, kind: type[Any]) -> Any:
    """Return a converted pynmea2 field, or None when the field is empty.

    pynmea2 returns the raw text when its converter fails, so a field of the
    wrong type is an invalid sentence, not a missing value.
    """
    value = getattr(sentence, name)
    if value is None or value == "":
        return None
    if not isinstance(value, kind):
        raise ValueError(f"invalid {name} field {value!r}")
    return value


def _position(sentence: Any) -> tuple[float, float] | None:
    """Return (lon, lat) in degrees, or None when the fields are empty."""
    if not sentence.lat or not sentence.lon:
        return None
    for value in (sentence.lat, sentence.lon):
        # ddmm.mmmm / dddmm.mmmm: minutes must be below 60.
        if not _MINUTES_FIELD.match(value) or float(value) % 100 >= 60:
            raise ValueError(f"invalid ddmm.mmmm coordinate {value!r}")
    if sentence.lat_dir not in ("N", "S") or sentence.lon_dir not in ("E", "W"):
        raise ValueError("latitude or longitude hemisphere is missing or invalid")
    latitude, longitude = float(sentence.latitude), float(sentence.longitude)
    if abs(latitude) > 90 or abs(longitude) > 180:
        raise ValueError(f"position out of range: lat {latitude}, lon {longitude}")
    return longitude, latitude


def _format_time_of_day(value: time) -> str:
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds")


_LINE_KINDS: tuple[tuple[Callable[[bytes], bool], Callable[[bytes], Message]], ...] = (
    (lambda line: line.startswith(b"$"), _decode_sentence),
    (lambda line: line.startswith(b"#"), _decode_comment),
    (lambda line: _LOGIN.match(line) is not None, _decode_login),
)

_SENTENCE_DECODERS: Mapping[str, Callable[[Any, str], Message]] = {
    "RMC": _decode_rmc,
    "GGA": _decode_gga,
}


class FixCombiner:
    """Merge GGA satellites and altitude into the RMC of the same time of day.

    Receivers send RMC and GGA for each fix in either order. `add` keeps an RMC
    until the GGA with the same time of day arrives, or until a sentence of
    another fix shows that none will come. It returns each finished
    ``location`` message once. Other messages return None. Call `flush` at the
    end of a stream to get an RMC still held.
    """

    def __init__(self) -> None:
        self._pending: Message | None = None
        self._gga: Mapping[str, Any] | None = None

    def add(self, message: Message) -> Message | None:
        if message.type == "fix":
            return self._add_gga(message.attributes)
        if message.type == "location" and message.locations:
            return self._add_rmc(message)
        return None

    def flush(self) -> Message | None:
        pending, self._pending = self._pending, None
        return pending

    def _add_rmc(self, message: Message) -> Message | None:
        finished = self.flush()
        gga = self._gga
        if gga is not None and gga["time_of_day"] == _time_of_day(message):
            message = _merge(message, gga)
            if finished is None:
                return message
        # Either no GGA for this fix yet, or an older RMC comes out first and
        # this one (already merged) waits for the next call.
        self._pending = message
        return finished

    def _add_gga(self, gga: Mapping[str, Any]) -> Message | None:
        self._gga = gga
        pending = self._pending
        if pending is None:
            return None
        self._pending = None
        if gga["time_of_day"] == _time_of_day(pending):
            return _merge(pending, gga)
        return pending


def _time_of_day(message: Message) -> str | None:
    value = message.attributes.get("time_of_day")
    return value if isinstance(value, str) else None


def _merge(message: Message, gga: Mapping[str, Any]) -> Message:
    location = dataclasses.replace(
        message.locations[0],
        satellites=gga["satellites"],
        altitude_m=gga["altitude_m"],
    )
    attributes = {**message.attributes, "fix_quality": gga["fix_quality"]}
    return dataclasses.replace(message, locations=(location,), attributes=attributes)
