"""GT06 codec against the real packets in tests/vectors/vectors.json, one case each.

Every decoded message goes through `assert_plausible_message`. Device times are
read at the vector's `tz_assumed` offset (UTC unless the vector says otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_gt06_invariants import assert_plausible_message

from postloan.protocols import gt06
from postloan.protocols.base import DecodeError, Message

VECTORS_PATH = Path(__file__).parent.parent / "vectors" / "vectors.json"
ALL_VECTORS: list[dict[str, Any]] = [
    vector
    for vector in json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    if vector["protocol"] == "gt06"
]
COMMAND_VECTORS = [v for v in ALL_VECTORS if v.get("direction") == "server_to_device"]
STREAM_VECTORS = [v for v in ALL_VECTORS if "reads" in v]
ERROR_VECTORS = [v for v in ALL_VECTORS if v.get("expect", {}).get("error")]
PACKET_VECTORS = [
    v
    for v in ALL_VECTORS
    if v not in COMMAND_VECTORS and v not in STREAM_VECTORS and v not in ERROR_VECTORS
]
COORDINATE_TOLERANCE = 1e-6
# Any clock works for replies that carry none; this one is after every vector.
REPLY_CLOCK = datetime(2026, 1, 1, tzinfo=UTC)


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [vector["id"] for vector in vectors]


def _utc_offset(vector: dict[str, Any]) -> timedelta:
    """Return the device clock offset in `details.tz_assumed`, e.g. "+08:00"."""
    text = vector.get("details", {}).get("tz_assumed", "+00:00")
    sign = -1 if text.startswith("-") else 1
    hours, minutes = text[1:].split(":")
    return sign * timedelta(hours=int(hours), minutes=int(minutes))


def _decode(vector: dict[str, Any]) -> Message:
    message = gt06.decode(bytes.fromhex(vector["hex"]), utc_offset=_utc_offset(vector))
    assert_plausible_message(message)
    return message


def _position_cases(vectors: list[dict[str, Any]]) -> list[Any]:
    cases = []
    for vector in vectors:
        for index, position in enumerate(vector["expect"]["positions"]):
            for field_name in position:
                case_id = f"{vector['id']}-{index}-{field_name}"
                cases.append(pytest.param(vector, index, field_name, id=case_id))
    return cases


def _observed_position_field(location: Any, field_name: str) -> Any:
    values = {
        "latitude": location.latitude,
        "longitude": location.longitude,
        "time": location.time,
        "speed_kmh": location.speed_kmh,
        "course": location.course,
        "valid": location.valid,
        "satellites": location.satellites,
    }
    return values[field_name]


def _assert_position_field(location: Any, field_name: str, expected: Any) -> None:
    observed = _observed_position_field(location, field_name)
    if field_name in ("latitude", "longitude"):
        assert observed == pytest.approx(expected, abs=COORDINATE_TOLERANCE)
    elif field_name == "time":
        assert observed == datetime.fromisoformat(expected)
    else:
        assert observed == expected


# -- packets -----------------------------------------------------------------


@pytest.mark.parametrize("vector", PACKET_VECTORS, ids=_ids(PACKET_VECTORS))
def test_decode_vector_position_count(vector: dict[str, Any]) -> None:
    expected = len(vector["expect"]["positions"])

    message = _decode(vector)

    assert len(message.locations) == expected


@pytest.mark.parametrize(
    ("vector", "index", "field_name"), _position_cases(PACKET_VECTORS)
)
def test_decode_vector_position_field(
    vector: dict[str, Any], index: int, field_name: str
) -> None:
    expected = vector["expect"]["positions"][index][field_name]

    message = _decode(vector)

    _assert_position_field(message.locations[index], field_name, expected)


@pytest.mark.parametrize("vector", PACKET_VECTORS, ids=_ids(PACKET_VECTORS))
def test_decode_vector_device_id(vector: dict[str, Any]) -> None:
    expected = vector["expect"].get("device_id")

    message = _decode(vector)

    assert message.device_id == expected


@pytest.mark.parametrize("vector", PACKET_VECTORS, ids=_ids(PACKET_VECTORS))
def test_decode_vector_alarms(vector: dict[str, Any]) -> None:
    expected = set(vector["expect"]["alarms"])

    message = _decode(vector)

    assert expected <= set(message.alarms)
    assert bool(expected) == bool(message.alarms)


@pytest.mark.parametrize("vector", PACKET_VECTORS, ids=_ids(PACKET_VECTORS))
def test_decode_vector_msg_id_and_serial(vector: dict[str, Any]) -> None:
    details = vector["details"]

    message = _decode(vector)

    assert message.msg_id == int(details["msg_type"], 16)
    assert message.serial == details["serial"]


def _reply_clock(vector: dict[str, Any]) -> datetime:
    stamp = vector["details"].get("reply_at_server_time_utc")
    return datetime.fromisoformat(stamp) if stamp else REPLY_CLOCK


def _expected_reply(vector: dict[str, Any]) -> str | None:
    """Return the reply hex the vector requires; 0x8A vectors give it in details."""
    replies = vector["expect"]["replies"]
    if replies:
        return str(replies[0])
    echoed = vector["details"].get("reply_hex_echo_serial")
    return str(echoed) if echoed else None


@pytest.mark.parametrize("vector", PACKET_VECTORS, ids=_ids(PACKET_VECTORS))
def test_reply_vector(vector: dict[str, Any]) -> None:
    message = _decode(vector)

    answer = gt06.reply(message, now=_reply_clock(vector))

    observed = None if answer is None else answer.hex()
    assert observed == _expected_reply(vector)


OPTIONAL_REPLY_VECTORS = [v for v in PACKET_VECTORS if v["expect"]["replies_optional"]]


@pytest.mark.parametrize(
    "vector", OPTIONAL_REPLY_VECTORS, ids=_ids(OPTIONAL_REPLY_VECTORS)
)
def test_ack_vector_optional_reply(vector: dict[str, Any]) -> None:
    message = _decode(vector)
    assert message.serial is not None

    answer = gt06.ack(message.msg_id, message.serial)

    assert answer.hex() == vector["expect"]["replies_optional"][0]


SKIPPED_REPLY_VECTORS = [
    v for v in PACKET_VECTORS if v["expect"]["reply_check"] == "skip"
]


@pytest.mark.parametrize(
    "vector", SKIPPED_REPLY_VECTORS, ids=_ids(SKIPPED_REPLY_VECTORS)
)
def test_reply_vector_time_shape(vector: dict[str, Any]) -> None:
    message = _decode(vector)
    now = datetime.now(UTC).replace(microsecond=0)

    answer = gt06.reply(message, now=now)

    assert answer is not None
    decoded = gt06.decode(answer)
    assert decoded.msg_id == 0x8A
    assert decoded.serial == message.serial
    assert decoded.attributes["server_time"] == now.isoformat()


# -- details the vectors were checked to contain -------------------------------


def _cell(message: Message) -> dict[str, int]:
    cells = message.attributes["cells"]
    return dict(cells[0]) if cells else {"mcc": 0, "mnc": 0, "lac": 0, "cell_id": 0}


def _hex_int(text: str) -> int:
    return int(text, 16)


def _alarm_language(message: Message) -> str:
    attributes = message.attributes
    return f"{attributes['alarm_code']:02x}{attributes['language']:02x}"


def _serving_cell(message: Message) -> dict[str, int]:
    cell = dict(message.attributes["cells"][0])
    return {"lac": cell["lac"], "cell_id": cell["cell_id"], "rssi": cell["rssi"]}


def _expected_serving_cell(value: dict[str, int]) -> dict[str, int]:
    return {
        "lac": value["lac"],
        "cell_id": value["cell_id"],
        "rssi": value.get("rssi", value.get("rssi_raw", -1)),
    }


def _wifi(message: Message) -> list[dict[str, Any]]:
    return [dict(entry) for entry in message.attributes["wifi"]]


def _expected_wifi(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"mac": entry["mac"], "rssi": entry["rssi_raw"]} for entry in value]


def _attribute(name: str) -> Callable[[Message], Any]:
    return lambda message: message.attributes[name]


def _same(value: Any) -> Any:
    return value


# detail key -> (observed value from the message, expected value from the detail)
DETAIL_CHECKS: dict[str, tuple[Callable[[Message], Any], Callable[[Any], Any]]] = {
    "device_id": (lambda m: m.device_id, _same),
    "type_code": (_attribute("type_code"), _same),
    "tz_offset_minutes": (_attribute("utc_offset_minutes"), _same),
    "terminal_info": (_attribute("terminal_info"), _hex_int),
    "defence_armed": (_attribute("defence"), _same),
    "acc": (_attribute("acc"), _same),
    "charging": (_attribute("charging"), _same),
    "gps_tracking": (_attribute("gps_tracking"), _same),
    "fuel_cut": (_attribute("oil_cut"), _same),
    "voltage_level": (_attribute("voltage_level"), _same),
    "gsm_signal": (_attribute("gsm_signal"), _same),
    "alarm_language": (_alarm_language, lambda text: text.lower()),
    "alarm_code": (_attribute("alarm_code"), _hex_int),
    "mcc": (lambda m: _cell(m)["mcc"], _same),
    "mnc": (lambda m: _cell(m)["mnc"], _same),
    "lac": (lambda m: _cell(m)["lac"], _same),
    "cell_id": (lambda m: _cell(m)["cell_id"], _same),
    "acc_from_course_word": (_attribute("acc"), _same),
    "acc_byte": (_attribute("acc"), bool),
    "upload_mode": (_attribute("upload_mode"), _same),
    "reupload": (_attribute("reupload"), bool),
    "serving_cell": (_serving_cell, _expected_serving_cell),
    "timing_advance": (_attribute("timing_advance"), _same),
    "wifi": (_wifi, _expected_wifi),
    "time_raw": (_attribute("time"), lambda text: text + "+00:00"),
    "info_type": (_attribute("info_type"), _hex_int),
    "imei": (_attribute("imei"), _same),
    "imsi": (_attribute("imsi"), _same),
    "iccid": (_attribute("iccid"), _same),
    "server_flag": (_attribute("server_flag"), _hex_int),
    "encoding": (_attribute("encoding"), _same),
    "text": (_attribute("text"), _same),
    "phone": (_attribute("phone"), _same),
}


def _language_check(vector: dict[str, Any]) -> Any:
    # Alarm packets give the language byte as a number, others the word as hex.
    value = vector["details"]["language"]
    return value if isinstance(value, int) else _hex_int(value)


def _detail_cases() -> list[Any]:
    cases = []
    for vector in PACKET_VECTORS:
        for key in vector["details"]:
            if key in DETAIL_CHECKS or key == "language":
                cases.append(pytest.param(vector, key, id=f"{vector['id']}-{key}"))
    return cases


@pytest.mark.parametrize(("vector", "key"), _detail_cases())
def test_decode_vector_detail(vector: dict[str, Any], key: str) -> None:
    if key == "language":
        observe, expected = _attribute("language"), _language_check(vector)
    else:
        observe, convert = DETAIL_CHECKS[key]
        expected = convert(vector["details"][key])

    message = _decode(vector)

    assert observe(message) == expected


# -- rejected packets ----------------------------------------------------------


def _expected_reason(vector: dict[str, Any]) -> str:
    details = vector["details"]
    return str(details.get("error") or details["strict_error"])


@pytest.mark.parametrize("vector", ERROR_VECTORS, ids=_ids(ERROR_VECTORS))
def test_decode_vector_error(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["hex"])

    with pytest.raises(DecodeError) as caught:
        gt06.decode(frame)

    assert caught.value.reason == _expected_reason(vector)


@pytest.mark.parametrize("vector", ERROR_VECTORS, ids=_ids(ERROR_VECTORS))
def test_framer_vector_error_yields_no_frame_that_decodes(
    vector: dict[str, Any],
) -> None:
    framer = gt06.Framer()

    items = framer.feed(bytes.fromhex(vector["hex"]))

    for item in items:
        if isinstance(item, bytes):
            with pytest.raises(DecodeError):
                gt06.decode(item)


# -- streams -------------------------------------------------------------------


def _feed_reads(vector: dict[str, Any]) -> tuple[list[bytes], list[int]]:
    framer = gt06.Framer()
    frames: list[bytes] = []
    buffered = []
    for chunk in vector["reads"]:
        for item in framer.feed(bytes.fromhex(chunk)):
            assert isinstance(item, bytes), item
            frames.append(item)
        buffered.append(framer.buffered)
    return frames, buffered


@pytest.mark.parametrize("vector", STREAM_VECTORS, ids=_ids(STREAM_VECTORS))
def test_stream_vector_frame_count(vector: dict[str, Any]) -> None:
    expected = vector["details"].get("frame_count", len(vector["details"]["frames"]))

    frames, _ = _feed_reads(vector)

    assert len(frames) == expected


@pytest.mark.parametrize("vector", STREAM_VECTORS, ids=_ids(STREAM_VECTORS))
def test_stream_vector_leaves_nothing_buffered(vector: dict[str, Any]) -> None:
    _, buffered = _feed_reads(vector)

    assert buffered[-1] == 0


def test_stream_vector_split_keeps_first_part() -> None:
    vector = next(v for v in STREAM_VECTORS if v["id"] == "gt06-stream-split-mid")
    expected = vector["details"]["after_read_1"]["buffered_bytes"]

    _, buffered = _feed_reads(vector)

    assert buffered[0] == expected


def _stream_messages(vector: dict[str, Any]) -> list[Message]:
    frames, _ = _feed_reads(vector)
    messages = [gt06.decode(frame) for frame in frames]
    for message in messages:
        assert_plausible_message(message)
    return messages


def _stream_position_cases() -> list[Any]:
    return _position_cases(STREAM_VECTORS)


@pytest.mark.parametrize(("vector", "index", "field_name"), _stream_position_cases())
def test_stream_vector_position_field(
    vector: dict[str, Any], index: int, field_name: str
) -> None:
    expected = vector["expect"]["positions"][index][field_name]

    messages = _stream_messages(vector)

    locations = [location for message in messages for location in message.locations]
    _assert_position_field(locations[index], field_name, expected)


@pytest.mark.parametrize("vector", STREAM_VECTORS, ids=_ids(STREAM_VECTORS))
def test_stream_vector_replies(vector: dict[str, Any]) -> None:
    messages = _stream_messages(vector)

    replies = [gt06.reply(message, now=REPLY_CLOCK) for message in messages]

    observed = [answer.hex() for answer in replies if answer is not None]
    assert observed == vector["expect"]["replies"]


# -- server commands -----------------------------------------------------------


@pytest.mark.parametrize("vector", COMMAND_VECTORS, ids=_ids(COMMAND_VECTORS))
def test_encode_command_vector(vector: dict[str, Any]) -> None:
    command = vector["expect_command"]

    frame = gt06.encode_command(
        command["command"],
        server_flag=int(command["server_flag"], 16),
        serial=command["serial"],
    )

    assert frame.hex() == vector["hex"]


@pytest.mark.parametrize("vector", COMMAND_VECTORS, ids=_ids(COMMAND_VECTORS))
def test_decode_command_vector(vector: dict[str, Any]) -> None:
    command = vector["expect_command"]

    message = _decode(vector)

    assert message.type == "command"
    assert message.attributes["text"] == command["command"]
    assert message.attributes["server_flag"] == int(command["server_flag"], 16)


def test_vectors_cover_every_kind() -> None:
    kinds = [PACKET_VECTORS, ERROR_VECTORS, STREAM_VECTORS, COMMAND_VECTORS]

    sizes = [len(vectors) for vectors in kinds]

    assert all(sizes), sizes
    assert sum(sizes) == len(ALL_VECTORS)
