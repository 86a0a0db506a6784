"""Per-connection protocol state: what a frame means for the session.

A handler turns one decoded `Message` into an `Outcome`: the fixes and events
to store, the reply to send once they are durable, and any device response to
a downlink command. Handlers hold session state (the device id, its clock offset, the
platform serial) but never touch sockets or the database.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from postloan.config import Config
from postloan.model import DeviceEvent, Fix
from postloan.protocols import gt06, jt808, nmea
from postloan.protocols.base import DecodeError, Message
from postloan.times import format_time
from postloan.validation import InvalidFixError, check_fix


@dataclass(slots=True)
class Outcome:
    """The records, reply and command response that one message produces."""

    fixes: list[Fix] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    reply: bytes | None = None
    close: bool = False
    login: bool = False
    command_answer: tuple[int, dict[str, Any]] | None = None
    dropped: str | None = None
    # Why the frame was dropped, for the session's log line.
    drop_detail: str | None = None


class Framer(Protocol):
    def feed(self, data: bytes) -> list[bytes | DecodeError]: ...

    @property
    def buffered(self) -> int: ...


class Handler(Protocol):
    protocol: str
    device_id: str | None
    framer: Framer

    def decode(self, frame: bytes) -> Message: ...

    def handle(self, message: Message, now: datetime) -> Outcome: ...

    def finish(self, now: datetime) -> Outcome: ...

    def encode_command(
        self, command_id: int, kind: str, payload: Mapping[str, Any]
    ) -> tuple[bytes, int]: ...


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def fixes_of(message: Message, device_id: str) -> list[Fix]:
    """Turn the locations of a message into fixes of one device."""
    return [
        Fix(
            device_id=device_id,
            time=location.time,
            latitude=location.latitude,
            longitude=location.longitude,
            speed_kmh=location.speed_kmh,
            course=location.course,
            altitude_m=location.altitude_m,
            valid=location.valid,
            satellites=location.satellites,
            attributes=_jsonable(dict(location.attributes)),
        )
        for location in message.locations
    ]


def rejected_fix_event(
    fix: Fix, now: datetime, reason: str, **details: Any
) -> DeviceEvent:
    """Return the ``fix_rejected`` device event that keeps a rejected fix as evidence.

    Non-finite numbers are stored as strings, because JSON has no NaN or
    infinity.
    """
    attributes: dict[str, Any] = {
        "reason": reason,
        **details,
        "fix_time": format_time(fix.time),
        "latitude": fix.latitude,
        "longitude": fix.longitude,
        "speed_kmh": fix.speed_kmh,
        "valid": fix.valid,
    }
    for key, value in attributes.items():
        if isinstance(value, float) and not math.isfinite(value):
            attributes[key] = str(value)
    return DeviceEvent(
        device_id=fix.device_id, time=now, kind="fix_rejected", attributes=attributes
    )


def screen_invalid_fixes(
    outcome: Outcome, now: datetime
) -> list[tuple[Fix, InvalidFixError]]:
    """Move fixes that fail `check_fix` out of the outcome, as events.

    Returns each rejected fix with its error. The event names the field and
    its value.
    """
    rejected: list[tuple[Fix, InvalidFixError]] = []
    valid: list[Fix] = []
    for fix in outcome.fixes:
        try:
            check_fix(fix)
        except InvalidFixError as exc:
            rejected.append((fix, exc))
        else:
            valid.append(fix)
    if not rejected:
        return rejected
    outcome.fixes = valid
    for fix, error in rejected:
        outcome.events.append(
            rejected_fix_event(
                fix, now, f"invalid_{error.field}", field=error.field, value=error.value
            )
        )
    return rejected


def screen_future_fixes(
    outcome: Outcome, now: datetime, max_future: timedelta
) -> list[Fix]:
    """Move fixes stamped too far after ``now`` out of the outcome, as events.

    Returns the rejected fixes. Each one is kept as a ``fix_rejected`` device
    event with its position, so the evidence stays but the track, the latest
    position and the fence state never see a time from the future.
    """
    limit = now + max_future
    rejected = [fix for fix in outcome.fixes if fix.time > limit]
    if not rejected:
        return rejected
    outcome.fixes = [fix for fix in outcome.fixes if fix.time <= limit]
    for fix in rejected:
        outcome.events.append(rejected_fix_event(fix, now, "time_in_future"))
    return rejected


def alarm_events(message: Message, device_id: str, now: datetime) -> list[DeviceEvent]:
    """Return one event per alarm name, stamped with the fix time if there is one."""
    if not message.alarms:
        return []
    when = message.locations[0].time if message.locations else now
    where: dict[str, Any] = {}
    if message.locations:
        where = {
            "latitude": message.locations[0].latitude,
            "longitude": message.locations[0].longitude,
        }
    return [
        DeviceEvent(
            device_id=device_id,
            time=when,
            kind=f"alarm:{name}",
            attributes={"alarm": name, "protocol": message.protocol, **where},
        )
        for name in message.alarms
    ]


def status_event(message: Message, device_id: str, now: datetime) -> DeviceEvent:
    return DeviceEvent(
        device_id=device_id,
        time=now,
        kind=message.type,
        attributes=_jsonable(dict(message.attributes)),
    )


class Gt06Handler:
    """Session state of one GT06 connection: nothing counts before the login."""

    protocol = "gt06"

    def __init__(self, config: Config) -> None:
        self._config = config
        self.device_id: str | None = None
        self.framer: Framer = gt06.Framer(
            config.gateway.max_frame_bytes or gt06.MAX_FRAME
        )
        self._utc_offset = config.devices.utc_offset("gt06", None)
        self._serial = 0

    def decode(self, frame: bytes) -> Message:
        return gt06.decode(frame, utc_offset=self._utc_offset)

    def handle(self, message: Message, now: datetime) -> Outcome:
        if message.type == "login":
            return self._login(message, now)
        if self.device_id is None:
            return Outcome(dropped="before_login")
        device_id = self.device_id
        outcome = Outcome(
            fixes=fixes_of(message, device_id),
            events=alarm_events(message, device_id, now),
            reply=gt06.reply(message, now=now),
        )
        # The decoder drops a GPS block with coordinates out of range and
        # states why in `position_error`. The frame still gets its ack, so
        # the unit does not send it again.
        position_error = message.attributes.get("position_error")
        if isinstance(position_error, str) and "out of range" in position_error:
            outcome.events.append(_out_of_range_event(message, device_id, now))
        carries_gps = bool(message.locations) or position_error is not None
        wants_ack = self._config.gateway.gt06_ack_locations and carries_gps
        if outcome.reply is None and wants_ack and message.serial is not None:
            outcome.reply = gt06.ack(message.msg_id, message.serial)
        if message.type in {"heartbeat", "info", "unknown"}:
            outcome.events.append(status_event(message, device_id, now))
        if message.type == "command_response":
            flag = message.attributes.get("server_flag")
            if flag is not None:
                key = int(flag, 16) if isinstance(flag, str) else int(flag)
                outcome.command_answer = (key, _jsonable(dict(message.attributes)))
        return outcome

    def finish(self, now: datetime) -> Outcome:
        return Outcome()

    def _login(self, message: Message, now: datetime) -> Outcome:
        assert message.device_id is not None
        if self.device_id is not None and message.device_id != self.device_id:
            # Fixes after such a login would be stored under another device.
            return Outcome(
                close=True,
                dropped="login_device_changed",
                drop_detail=(
                    f"login as {message.device_id} on the connection of "
                    f"{self.device_id}, closing"
                ),
            )
        self.device_id = message.device_id
        configured = self._config.devices.utc_offsets.get(message.device_id)
        announced = gt06.login_utc_offset(message)
        if configured is not None:
            self._utc_offset = self._config.devices.utc_offset(
                "gt06", message.device_id
            )
        elif announced is not None:
            self._utc_offset = announced
        event = status_event(message, message.device_id, now)
        return Outcome(events=[event], reply=gt06.reply(message, now=now), login=True)

    def encode_command(
        self, command_id: int, kind: str, payload: Mapping[str, Any]
    ) -> tuple[bytes, int]:
        """Build a 0x80 command; the server flag carries the command id back."""
        text = gt06_command_text(kind, payload)
        self._serial = (self._serial + 1) & 0xFFFF
        flag = command_id & 0xFFFFFFFF
        return gt06.encode_command(text, server_flag=flag, serial=self._serial), flag


def _out_of_range_event(message: Message, device_id: str, now: datetime) -> DeviceEvent:
    """Return the ``fix_rejected`` event of a GT06 GPS block out of range.

    NOTE: the decoder keeps only its message (both coordinates), not which
    field was out of range, so the event carries that message as ``value``.
    """
    return DeviceEvent(
        device_id=device_id,
        time=now,
        kind="fix_rejected",
        attributes={
            "reason": "position_out_of_range",
            "field": "position",
            "value": message.attributes["position_error"],
            "protocol": message.protocol,
            "msg_type": message.type,
        },
    )


GT06_COMMANDS = {
    "fuel_cut": "Relay,1#",
    "fuel_restore": "Relay,0#",
}


def gt06_command_text(kind: str, payload: Mapping[str, Any]) -> str:
    if kind == "text":
        return str(payload["text"])
    if kind == "report_interval":
        return f"TIMER,{int(payload['seconds'])}#"
    try:
        return str(payload.get("text") or GT06_COMMANDS[kind])
    except KeyError:
        known = ", ".join(sorted([*GT06_COMMANDS, "text", "report_interval"]))
        raise ValueError(
            f"unknown GT06 command kind {kind!r}; known: {known}"
        ) from None


# Result codes of the JT/T 808 platform general response 0x8001.
JT808_RESULT_OK = 0
JT808_RESULT_FAILURE = 1

# Messages a terminal may send before it authenticates with 0x0102.
JT808_BEFORE_AUTH = frozenset({"register", "auth", "heartbeat"})


class Jt808Handler:
    """Session state of one JT/T 808 connection.

    With ``[devices] jt808_require_auth``, only register, authenticate and
    heartbeat are accepted until the terminal sends 0x0102 with the code this
    gateway issues for its phone number. Other messages get result 1 and are
    not stored.
    """

    protocol = "jt808"

    def __init__(self, config: Config, auth_secret: bytes = b"postloan") -> None:
        self._config = config
        self.device_id: str | None = None
        self.framer: Framer = jt808.Framer(
            config.gateway.max_frame_bytes or jt808.MAX_FRAME
        )
        self._default_offset = config.devices.utc_offset("jt808", None)
        self._reassembler = jt808.Reassembler()
        self._platform_serial = 0
        self._auth_secret = auth_secret
        self._version = "2013"
        self._require_auth = config.devices.jt808_require_auth
        # The phone number that authenticated on this connection.
        self._authenticated: str | None = None

    def auth_code(self, device_id: str) -> str:
        """Return the auth code issued to one phone number, stable across restarts.

        The code is derived from the phone number, so a terminal keeps it over
        reconnects and gateway restarts without the store. NOTE: with
        ``jt808_require_auth = false``, a 0x0102 is accepted whatever code it
        carries, for units registered on another platform.
        """
        digest = hmac.new(self._auth_secret, device_id.encode(), hashlib.sha256)
        return digest.hexdigest()[:16]

    def _next_serial(self) -> int:
        self._platform_serial = (self._platform_serial + 1) & 0xFFFF
        return self._platform_serial

    def decode(self, frame: bytes) -> Message:
        message = jt808.decode(frame, utc_offset=self._default_offset)
        device_id = message.device_id
        if device_id is not None and device_id in self._config.devices.utc_offsets:
            offset = self._config.devices.utc_offset("jt808", device_id)
            message = jt808.decode(frame, utc_offset=offset)
        return message

    def _authenticates(self, message: Message) -> bool:
        code = message.attributes.get("auth_code")
        expected = self.auth_code(message.device_id or "")
        return isinstance(code, str) and hmac.compare_digest(code, expected)

    def _unauthenticated(self, message: Message) -> Outcome:
        reply = jt808.reply(
            message,
            platform_serial=self._next_serial(),
            result=JT808_RESULT_FAILURE,
        )
        return Outcome(
            reply=reply,
            dropped="unauthenticated",
            drop_detail=(
                f"0x{message.msg_id:04x} ({message.type}) from terminal "
                f"{message.device_id} rejected with result 1 and not stored, "
                "because the terminal has not authenticated with 0x0102 "
                "(later ones on this connection are only counted)"
            ),
        )

    def handle(self, message: Message, now: datetime) -> Outcome:
        result = JT808_RESULT_OK
        if self._require_auth:
            if message.type == "auth":
                if self._authenticates(message):
                    self._authenticated = message.device_id
                else:
                    result = JT808_RESULT_FAILURE
                    self._authenticated = None
            elif (
                message.type not in JT808_BEFORE_AUTH
                and message.device_id != self._authenticated
            ):
                return self._unauthenticated(message)
        reply = jt808.reply(
            message,
            platform_serial=self._next_serial(),
            auth_code=self.auth_code(message.device_id or ""),
            result=result,
        )
        if message.type == "fragment":
            whole = self._reassembler.add(message)
            if whole is None:
                return Outcome(reply=reply)
            message = whole
        device_id = message.device_id or ""
        if self._require_auth:
            login = message.type == "auth" and result == JT808_RESULT_OK
        else:
            login = self.device_id is None
        self.device_id = device_id
        version = message.attributes.get("version")
        if isinstance(version, str):
            self._version = version
        outcome = Outcome(
            fixes=fixes_of(message, device_id),
            events=alarm_events(message, device_id, now),
            reply=reply,
            login=login,
        )
        if message.type in {"register", "auth", "logout", "heartbeat", "attributes"}:
            event = status_event(message, device_id, now)
            if message.type == "auth":
                event = _auth_event(event, result)
            outcome.events.append(event)
        if result != JT808_RESULT_OK:
            outcome.drop_detail = (
                f"terminal {device_id} sent a wrong auth code, answered with "
                "result 1. It stays unauthenticated until it sends the right one"
            )
        answered = message.attributes.get("answered_serial")
        if answered is not None and message.type != "fragment":
            outcome.command_answer = (
                int(answered),
                _jsonable(dict(message.attributes)),
            )
        if message.type == "logout":
            outcome.close = True
        return outcome

    def finish(self, now: datetime) -> Outcome:
        return Outcome()

    def encode_command(
        self, command_id: int, kind: str, payload: Mapping[str, Any]
    ) -> tuple[bytes, int]:
        """Build a platform command; the reply names our serial, which matches it."""
        assert self.device_id is not None
        serial = self._next_serial()
        phone, version = self.device_id, self._version
        builders = {
            "fuel_cut": lambda: jt808.encode_vehicle_control(
                phone, serial, cut=True, version=version
            ),
            "fuel_restore": lambda: jt808.encode_vehicle_control(
                phone, serial, cut=False, version=version
            ),
            "position_query": lambda: jt808.encode_position_query(
                phone, serial, version=version
            ),
            "terminal_control": lambda: jt808.encode_terminal_control(
                phone,
                serial,
                int(payload["command_word"]),
                str(payload.get("parameters", "")),
                version=version,
            ),
            "report_interval": lambda: jt808.encode_set_parameters(
                phone, serial, {0x0029: int(payload["seconds"])}, version=version
            ),
        }
        if kind not in builders:
            known = ", ".join(sorted(builders))
            raise ValueError(f"unknown JT808 command kind {kind!r}; known: {known}")
        return builders[kind](), serial


def _auth_event(event: DeviceEvent, result: int) -> DeviceEvent:
    """Return the 0x0102 event with its result and without the auth code."""
    attributes = {k: v for k, v in event.attributes.items() if k != "auth_code"}
    attributes["result"] = result
    return DeviceEvent(event.device_id, event.time, event.kind, attributes)


class NmeaHandler:
    """A raw NMEA 0183 stream. The device id is the identification line, if sent."""

    protocol = "nmea"

    def __init__(self, config: Config, peer: str) -> None:
        self.device_id: str | None = None
        self._peer_id = f"nmea-{peer}"
        self.framer: Framer = nmea.Framer()
        self._combiner = nmea.FixCombiner()

    def decode(self, frame: bytes) -> Message:
        return nmea.decode(frame)

    def handle(self, message: Message, now: datetime) -> Outcome:
        if message.type == "login" and message.device_id:
            self.device_id = message.device_id
            return Outcome(events=[status_event(message, message.device_id, now)])
        device_id = self.device_id or self._peer_id
        self.device_id = device_id
        combined = self._combiner.add(message)
        if combined is None:
            return Outcome()
        return Outcome(fixes=fixes_of(combined, device_id))

    def finish(self, now: datetime) -> Outcome:
        """Store the last RMC, which waited for a GGA that will not come."""
        held = self._combiner.flush()
        if held is None or self.device_id is None:
            return Outcome()
        return Outcome(fixes=fixes_of(held, self.device_id))

    def encode_command(
        self, command_id: int, kind: str, payload: Mapping[str, Any]
    ) -> tuple[bytes, int]:
        raise ValueError("raw NMEA devices take no commands")
