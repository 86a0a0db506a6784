"""Device identities and the per-protocol side of a simulated GT06 or JT808 tracker.

A codec builds the frames a real tracker sends (login, locations, heartbeats,
command responses) and turns the server's frames into `Ack` or `Command`
events. It keeps the device's message serial and nothing else. The
connection, the unacknowledged window and the pacing live in
`postloan.simulators.replay`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from postloan.model import EMPTY
from postloan.protocols import gt06, jt808
from postloan.protocols.base import DecodeError, Location
from postloan.protocols.gt06_frame import parse_frame
from postloan.protocols.jt808_location import encode_location_body
from postloan.simulators.trajectories import TrackPoint

# Device ids keep the device index in their last digits, so that distinct
# indexes never collide; the vehicle id only picks the digits before it.
MAX_DEVICE_INDEX = 10_000_000


def luhn_check_digit(digits: str) -> int:
    """Return the Luhn check digit that completes `digits` (IMEI, ISO/IEC 7812)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return (10 - total % 10) % 10


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_check_digit(number[:-1]) == int(number[-1])


def _vehicle_digits(vehicle_id: str, count: int) -> str:
    digest = hashlib.sha256(vehicle_id.encode("utf-8")).digest()
    return str(int.from_bytes(digest[:8]) % 10**count).zfill(count)


def _gt06_imei(vehicle_id: str, index: int) -> str:
    # 14 digits: "35" as many real IMEIs start, 5 digits from the vehicle id
    # and 7 from the index. The 15th is the Luhn check digit.
    body = f"35{_vehicle_digits(vehicle_id, 5)}{index:07d}"
    return body + str(luhn_check_digit(body))


def _jt808_phone(vehicle_id: str, index: int) -> str:
    # 12 BCD digits as JT/T 808-2013 carries them: a leading 0, then an
    # 11-digit number starting with 1 like a Chinese mobile number.
    return f"01{_vehicle_digits(vehicle_id, 3)}{index:07d}"


_DEVICE_IDS: Mapping[str, Callable[[str, int], str]] = {
    gt06.PROTOCOL: _gt06_imei,
    jt808.PROTOCOL: _jt808_phone,
}


def device_id_for(protocol: str, vehicle_id: str, index: int) -> str:
    """Return a stable device id: a GT06 IMEI or a 12-digit JT808 phone number.

    The same (protocol, vehicle id, index) always gives the same id, and two
    different indexes below 10,000,000 never give the same id.
    """
    make = _DEVICE_IDS.get(protocol)
    if make is None:
        raise ValueError(f"unknown protocol {protocol!r}; expected gt06 or jt808")
    if not 0 <= index < MAX_DEVICE_INDEX:
        raise ValueError(f"device index {index} is outside 0..{MAX_DEVICE_INDEX - 1}")
    return make(vehicle_id, index)


# --- events and shared state ------------------------------------------------

AckKey = tuple[int, int]  # (acknowledged message id, acknowledged serial)


@dataclass(frozen=True, slots=True)
class Ack:
    """The server's acknowledgement of one device message."""

    key: AckKey
    result: int = 0
    auth_code: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """A server command the device must respond to."""

    msg_id: int
    serial: int
    attributes: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(slots=True)
class DeviceState:
    """Device state: last sent position, relay (fuel cut) and auth code."""

    position: TrackPoint | None = None
    fuel_cut: bool = False
    auth_code: str | None = None


Request = Callable[[bytes, AckKey], Awaitable[Ack]]


class LoginRejected(Exception):
    """The server rejected a login or registration with a failure result."""


class DeviceCodec(Protocol):
    protocol: str
    device_id: str

    def new_framer(self) -> gt06.Framer | jt808.Framer: ...

    async def login(self, request: Request, state: DeviceState) -> None: ...

    def location(
        self, point: TrackPoint, state: DeviceState, *, resend: bool
    ) -> tuple[bytes, AckKey]: ...

    def backlog(
        self, points: Sequence[TrackPoint], state: DeviceState
    ) -> list[tuple[bytes, AckKey, int]]: ...

    def heartbeat(self, state: DeviceState) -> tuple[bytes, AckKey]: ...

    def parse(self, frame: bytes) -> Ack | Command | None: ...

    def respond(self, command: Command, state: DeviceState) -> bytes: ...


def to_location(point: TrackPoint) -> Location:
    """Return the `Location` a tracker reports for a recorded point.

    The encoders round speed and course to their protocol's resolution.
    """
    return Location(
        time=point.time,
        latitude=point.latitude,
        longitude=point.longitude,
        speed_kmh=point.speed_kmh or 0.0,
        course=None if point.course is None else point.course % 360.0,
        altitude_m=point.altitude_m,
        valid=point.valid,
    )


class _Serials:
    """The device's message serial: a 16-bit counter from power-on."""

    def __init__(self) -> None:
        self._serial = 0

    def next(self) -> int:
        self._serial = (self._serial + 1) & 0xFFFF
        return self._serial


# --- GT06 -------------------------------------------------------------------

# Terminal info byte of the 0x13 heartbeat (Concox JM-VL03 protocol v1.1.2):
# bit 1 ACC on, bit 2 charging, bit 6 GPS tracking on, bit 7 oil/electric cut.
_GT06_TERMINAL_INFO = 0b0100_0110
_GT06_FUEL_CUT_BIT = 0b1000_0000

GT06_RESPONSES: Mapping[str, tuple[str, bool]] = {
    "Relay,1#": ("Cut off the fuel supply: Success!", True),
    "Relay,0#": ("Restore fuel supply: Success!", False),
}


class Gt06Codec:
    """A Concox GT06 tracker: 0x01 login, 0x22 locations, 0x13 heartbeats."""

    protocol = gt06.PROTOCOL

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._serials = _Serials()

    def new_framer(self) -> gt06.Framer:
        return gt06.Framer()

    async def login(self, request: Request, state: DeviceState) -> None:
        serial = self._serials.next()
        await request(gt06.encode_login(self.device_id, serial), (0x01, serial))

    def location(
        self, point: TrackPoint, state: DeviceState, *, resend: bool
    ) -> tuple[bytes, AckKey]:
        serial = self._serials.next()
        frame = gt06.encode_location(
            to_location(point), serial, acc=True, reupload=resend
        )
        return frame, (0x22, serial)

    def backlog(
        self, points: Sequence[TrackPoint], state: DeviceState
    ) -> list[tuple[bytes, AckKey, int]]:
        # GT06 has no batch packet: stored fixes go out one by one, flagged as
        # re-uploaded in the 0x22 re-upload byte.
        return [(*self.location(point, state, resend=True), 1) for point in points]

    def heartbeat(self, state: DeviceState) -> tuple[bytes, AckKey]:
        serial = self._serials.next()
        info = _GT06_TERMINAL_INFO | (_GT06_FUEL_CUT_BIT if state.fuel_cut else 0)
        return gt06.encode_heartbeat(serial, terminal_info=info), (0x13, serial)

    def parse(self, frame: bytes) -> Ack | Command | None:
        raw = parse_frame(frame)
        if raw.serial is None:
            return None
        if raw.msg_id == 0x80:
            return Command(0x80, raw.serial, _gt06_command(raw.content))
        if not raw.content:
            return Ack((raw.msg_id, raw.serial))
        return None  # 0x8A time, address replies: nothing to act on

    def respond(self, command: Command, state: DeviceState) -> bytes:
        text = str(command.attributes["text"])
        reply, cut = GT06_RESPONSES.get(text, (text, state.fuel_cut))
        state.fuel_cut = cut
        flag = int(command.attributes["server_flag"])
        return gt06.encode_command_response(flag, reply, self._serials.next())


def _gt06_command(content: bytes) -> dict[str, Any]:
    # 0x80 content: length 1 (= 4 + text), server flag 4, ASCII text, then an
    # optional language word (Concox JM-VL03 protocol v1.1.2, online command).
    if len(content) < 5 or content[0] < 4 or len(content) < 1 + content[0]:
        raise DecodeError(
            "invalid_length",
            f"0x80 content of {len(content)} bytes is shorter than its length byte",
            protocol=gt06.PROTOCOL,
            msg_id=0x80,
            data=content,
        )
    text = content[5 : 1 + content[0]].decode("ascii", errors="replace")
    return {"server_flag": int.from_bytes(content[1:5]), "text": text}


# --- JT/T 808 ---------------------------------------------------------------

JT808_VERSION = "2013"
# JT/T 808-2013 location status bits: 0 ACC on, 10 oil circuit cut, 11 electric
# circuit cut. The encoder sets bits 1-3 (located, south, west) itself.
_JT808_ACC = 1 << 0
_JT808_CUT = (1 << 10) | (1 << 11)
# A 0x0704 body must fit 1023 bytes: 3 header bytes + records of 2 + 28 bytes.
_JT808_BATCH_SIZE = 30
_JT808_REGISTER_OK = 0


class Jt808Codec:
    """A JT/T 808-2013 terminal: register, authenticate, 0x0200, 0x0704 backfill."""

    protocol = jt808.PROTOCOL

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._serials = _Serials()

    def new_framer(self) -> jt808.Framer:
        return jt808.Framer()

    async def login(self, request: Request, state: DeviceState) -> None:
        # A registered unit skips 0x0100 and authenticates with its stored code
        # on every reconnect.
        if state.auth_code is None:
            serial = self._serials.next()
            frame = jt808.encode_register(
                self.device_id, serial, version=JT808_VERSION, model="postloan-sim"
            )
            registered = await request(frame, (0x0100, serial))
            if registered.result != _JT808_REGISTER_OK or registered.auth_code is None:
                raise LoginRejected(f"0x8100 register result {registered.result}")
            state.auth_code = registered.auth_code
        serial = self._serials.next()
        frame = jt808.encode_auth(
            self.device_id, serial, state.auth_code, version=JT808_VERSION
        )
        authenticated = await request(frame, (0x0102, serial))
        if authenticated.result != 0:
            state.auth_code = None
            raise LoginRejected(f"0x8001 auth result {authenticated.result}")

    def location(
        self, point: TrackPoint, state: DeviceState, *, resend: bool
    ) -> tuple[bytes, AckKey]:
        serial = self._serials.next()
        frame = jt808.encode_location(
            self.device_id,
            serial,
            to_location(point),
            status=_jt808_status(state),
            version=JT808_VERSION,
        )
        return frame, (0x0200, serial)

    def backlog(
        self, points: Sequence[TrackPoint], state: DeviceState
    ) -> list[tuple[bytes, AckKey, int]]:
        # Stored fixes go out as 0x0704 blind-area back-fill batches; one 0x8001
        # acknowledges a whole batch.
        batches = []
        for start in range(0, len(points), _JT808_BATCH_SIZE):
            chunk = points[start : start + _JT808_BATCH_SIZE]
            serial = self._serials.next()
            frame = jt808.encode_batch(
                self.device_id,
                serial,
                [to_location(point) for point in chunk],
                backfill=True,
                status=_jt808_status(state),
                version=JT808_VERSION,
            )
            batches.append((frame, (0x0704, serial), len(chunk)))
        return batches

    def heartbeat(self, state: DeviceState) -> tuple[bytes, AckKey]:
        serial = self._serials.next()
        frame = jt808.encode_heartbeat(self.device_id, serial, version=JT808_VERSION)
        return frame, (0x0002, serial)

    def parse(self, frame: bytes) -> Ack | Command | None:
        message = jt808.decode(frame)
        attributes = message.attributes
        if message.msg_id == 0x8100:
            key = (0x0100, int(attributes["answered_serial"]))
            code = attributes.get("auth_code")
            return Ack(
                key, int(attributes["result"]), None if code is None else str(code)
            )
        if message.msg_id == 0x8001:
            answered = int(str(attributes["answered_id"]), 16)
            key = (answered, int(attributes["answered_serial"]))
            return Ack(key, int(attributes["result"]))
        if message.msg_id >= 0x8000:
            return Command(message.msg_id, message.serial or 0, attributes)
        return None

    def respond(self, command: Command, state: DeviceState) -> bytes:
        build = _JT808_RESPONSES.get(command.msg_id, _jt808_general_response)
        return build(self, command, state)

    def general_response(self, command: Command, result: int) -> bytes:
        return jt808.encode_general_response(
            self.device_id,
            self._serials.next(),
            answered_serial=command.serial,
            answered_id=command.msg_id,
            result=result,
            version=JT808_VERSION,
        )

    def position_response(
        self, msg_id: int, command: Command, state: DeviceState
    ) -> bytes:
        """Build 0x0201 or 0x0500: answered serial WORD, then a 0x0200 body."""
        if state.position is None:
            return self.general_response(command, result=1)
        body = command.serial.to_bytes(2) + encode_location_body(
            to_location(state.position),
            alarm_flags=0,
            status=_jt808_status(state),
            utc_offset=jt808.DEFAULT_UTC_OFFSET,
            items=None,
        )
        serial = self._serials.next()
        return jt808.frame(msg_id, self.device_id, serial, body, version=JT808_VERSION)


def _jt808_status(state: DeviceState) -> int:
    return _JT808_ACC | (_JT808_CUT if state.fuel_cut else 0)


def _jt808_general_response(
    codec: Jt808Codec, command: Command, state: DeviceState
) -> bytes:
    # 0x8103 set parameters and 0x8105 terminal control succeed (result 0).
    # Other platform commands get result 3, "not supported".
    result = 0 if command.msg_id in (0x8103, 0x8105) else 3
    return codec.general_response(command, result)


def _jt808_position_query(
    codec: Jt808Codec, command: Command, state: DeviceState
) -> bytes:
    return codec.position_response(0x0201, command, state)


def _jt808_vehicle_control(
    codec: Jt808Codec, command: Command, state: DeviceState
) -> bytes:
    # 0x8500 flag bit 0: many trackers use the 2013 door-lock bit as the relay
    # (1 cut, 0 restore) and confirm it with status bits 10/11 in 0x0500.
    state.fuel_cut = bool(int(command.attributes.get("control_flag", 0)) & 1)
    return codec.position_response(0x0500, command, state)


_JT808_RESPONSES: Mapping[int, Callable[[Jt808Codec, Command, DeviceState], bytes]] = {
    0x8201: _jt808_position_query,
    0x8500: _jt808_vehicle_control,
}

CODECS: Mapping[str, Callable[[str], DeviceCodec]] = {
    gt06.PROTOCOL: Gt06Codec,
    jt808.PROTOCOL: Jt808Codec,
}
