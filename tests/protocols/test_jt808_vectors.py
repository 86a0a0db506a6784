"""Every JT808 packet in tests/vectors/vectors.json, one test case each.

Each vector is checked by its kind: a decodable packet (fixes, device id,
alarms, checked detail fields, replies), a packet that must be rejected, a
stream split into TCP reads, or a command the platform builds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from test_jt808_fix_invariants import assert_plausible_message

from postloan.protocols import jt808
from postloan.protocols.base import DecodeError, Location, Message

VECTORS_PATH = Path(__file__).parent.parent / "vectors" / "vectors.json"
VECTORS = [
    vector
    for vector in json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    if vector["protocol"] == "jt808"
]

# Vector detail keys and the attribute names this codec uses for them.
ATTRIBUTE_NAMES = {
    "fix_valid": "located",
    "ack_serial": "answered_serial",
    "ack_msg_id": "answered_id",
}
# Detail keys compared with the message attributes when a vector lists them.
MESSAGE_DETAILS = (
    "province",
    "city",
    "manufacturer",
    "model",
    "terminal_id",
    "plate_color",
    "plate",
    "auth_code",
    "protocol_version",
    "ack_serial",
    "ack_msg_id",
    "result",
    "terminal_type",
    "iccid",
    "hw_version",
    "fw_version",
    "gnss_attr",
    "comm_attr",
    "count",
    "batch_type",
)
# Detail keys compared with each fix's attributes.
FIX_DETAILS = (
    "alarm_flags",
    "status_flags",
    "acc",
    "fix_valid",
    "oil_cut",
    "circuit_cut",
    "mileage_km",
    "fuel_l",
    "recorder_speed_kmh",
    "ext_signal_status",
    "io_status",
    "rssi",
    "satellites",
    "tail_hex",
)
# The vector lists no reply for this piece. The platform acknowledges every
# sub-package piece with 0x8001 so that the terminal sends the next one, so
# the reply is checked against that rule instead.
PIECE_ACKNOWLEDGED = frozenset({"jt808-subpackage-2019"})


def _kind(vector: dict[str, Any]) -> str:
    if vector.get("direction") == "server_to_device":
        return "command"
    if "reads" in vector:
        return "stream"
    if vector["expect"]["error"]:
        return "error"
    return "decode"


def _reply_options(vector: dict[str, Any]) -> dict[str, Any]:
    """Return the platform serial and auth code that the vector's reply used."""
    assumptions = vector["details"].get("reply_assumptions", {})
    options: dict[str, Any] = {"platform_serial": assumptions.get("platform_serial", 0)}
    if "auth_code" in assumptions:
        options["auth_code"] = assumptions["auth_code"].split()[0]
    return options


def _unescape(data: bytes) -> bytes:
    return data.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")


def _without_platform_serial(wire: bytes) -> bytes:
    """Return header and body with the serial zeroed and the checksum dropped.

    This is the `jt808-serial-free` rule: the platform serial and therefore
    the checksum are the server's choice, every other byte must match.
    """
    content = bytearray(_unescape(wire[1:-1]))
    serial_at = 15 if content[2] & 0x40 else 10  # bit 14: 2019 header
    content[serial_at : serial_at + 2] = b"\x00\x00"
    return bytes(content[:-1])


def _assert_reply(actual: bytes | None, expected_hex: str) -> None:
    assert actual is not None
    expected = bytes.fromhex(expected_hex)
    assert _without_platform_serial(actual) == _without_platform_serial(expected)


def _assert_position(location: Location, expected: dict[str, Any]) -> None:
    assert location.latitude == pytest.approx(expected["latitude"], abs=1e-6)
    assert location.longitude == pytest.approx(expected["longitude"], abs=1e-6)
    if "time" in expected:
        assert location.time == datetime.fromisoformat(expected["time"])
    if "speed_kmh" in expected:
        assert location.speed_kmh == pytest.approx(expected["speed_kmh"])
    if "course" in expected:
        assert location.course == expected["course"]
    if "valid" in expected:
        assert location.valid is expected["valid"]
    if "satellites" in expected:
        assert location.satellites == expected["satellites"]


def _assert_details(
    attributes: Any, details: dict[str, Any], keys: tuple[str, ...]
) -> None:
    for key in keys:
        if key in details:
            name = ATTRIBUTE_NAMES.get(key, key)
            assert attributes[name] == details[key], key


def _assert_fix_details(location: Location, details: dict[str, Any]) -> None:
    _assert_details(location.attributes, details, FIX_DETAILS)
    if "altitude_m" in details:
        assert location.altitude_m == details["altitude_m"]
    assert set(details.get("alarms", ())) <= set(location.attributes["alarms"])


def _assert_decoded(message: Message, vector: dict[str, Any]) -> None:
    expect, details = vector["expect"], vector["details"]
    assert_plausible_message(message)
    assert message.device_id == expect["device_id"]
    assert message.serial == details["serial"]
    assert message.msg_id == int(details["msg_id"], 16)
    assert set(expect["alarms"]) <= set(message.alarms)
    assert len(message.locations) == len(expect["positions"])
    for location, position in zip(message.locations, expect["positions"], strict=True):
        _assert_position(location, position)
    _assert_details(message.attributes, details, MESSAGE_DETAILS)
    records = details.get("locations", [details] if message.locations else [])
    for location, record in zip(message.locations, records, strict=True):
        _assert_fix_details(location, record)


def _check_decode(vector: dict[str, Any]) -> None:
    message = jt808.decode(bytes.fromhex(vector["hex"]))
    _assert_decoded(message, vector)
    if vector["id"] in PIECE_ACKNOWLEDGED:
        _check_piece(message, vector)
        return
    options = _reply_options(vector)
    reply = jt808.reply(message, **options)
    expected = vector["expect"]["replies"]
    if not expected:
        assert reply is None
        return
    (expected_hex,) = expected
    _assert_reply(
        jt808.reply(message, **{**options, "platform_serial": 4321}), expected_hex
    )
    assert reply is not None
    assert reply.hex() == expected_hex


def _check_piece(message: Message, vector: dict[str, Any]) -> None:
    details = vector["details"]
    assert message.type == "fragment"
    assert message.attributes["total"] == details["pkt_total"]
    assert message.attributes["index"] == details["pkt_index"]
    reply = jt808.reply(message, platform_serial=0)
    assert reply is not None
    acknowledgement = jt808.decode(reply)
    assert acknowledgement.msg_id == 0x8001
    assert acknowledgement.attributes["answered_serial"] == details["serial"]
    assert acknowledgement.attributes["answered_id"] == details["msg_id"]
    assert acknowledgement.device_id == message.device_id


def _check_error(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    with pytest.raises(DecodeError) as caught:
        jt808.decode(data)
    expected_reason = vector["details"].get("error")
    if expected_reason is not None:
        assert caught.value.reason == expected_reason
    assert caught.value.protocol == "jt808"
    if expected_reason == "incomplete":
        framer = jt808.Framer()
        assert framer.feed(data) == []
        assert framer.buffered == len(data)


def _check_stream(vector: dict[str, Any]) -> None:
    framer = jt808.Framer()
    frames: list[bytes | DecodeError] = []
    for number, chunk in enumerate(vector["reads"], start=1):
        out = framer.feed(bytes.fromhex(chunk))
        after = vector["details"].get(f"after_read_{number}")
        if after is not None and "frames" in after:
            assert out == []
        frames.extend(out)
    assert framer.buffered == 0
    assert all(isinstance(frame, bytes) for frame in frames)
    messages = [jt808.decode(frame) for frame in frames if isinstance(frame, bytes)]
    positions = vector["expect"]["positions"]
    assert len(messages) == len(vector["details"]["frames"])
    for message, expected in zip(messages, vector["details"]["frames"], strict=True):
        assert_plausible_message(message)
        assert message.serial == expected["serial"]
    for message, position in zip(messages, positions, strict=True):
        _assert_position(message.locations[0], position)
    replies = [jt808.reply(message, platform_serial=0) for message in messages]
    expected_replies = vector["expect"]["replies"]
    assert len(replies) >= len(expected_replies)
    for reply, expected_hex in zip(replies, expected_replies, strict=False):
        _assert_reply(reply, expected_hex)


def _check_command(vector: dict[str, Any]) -> None:
    command = vector["expect_command"]

    wire = jt808.encode_terminal_control(
        command["device_id"], command["serial"], int(command["command_word"], 16)
    )

    assert wire.hex() == vector["hex"]
    decoded = jt808.decode(wire)
    assert decoded.device_id == command["device_id"]
    assert decoded.attributes["command_word"] == int(command["command_word"], 16)


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "decode": _check_decode,
    "error": _check_error,
    "stream": _check_stream,
    "command": _check_command,
}


def test_vectors_cover_jt808() -> None:
    kinds = {_kind(vector) for vector in VECTORS}

    assert kinds == set(CHECKS)


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["id"] for vector in VECTORS])
def test_jt808_vector(vector: dict[str, Any]) -> None:
    CHECKS[_kind(vector)](vector)
