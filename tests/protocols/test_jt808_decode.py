"""JT808 decoding of single messages, replies and encoder input checks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_jt808_fix_invariants import assert_plausible_message

from postloan.protocols import jt808
from postloan.protocols.base import DecodeError, EncodeError, Location, Message
from postloan.protocols.jt808_frame import xor_checksum
from postloan.protocols.jt808_location import alarm_names

PHONE = "013800138000"
PHONE_2019 = "00000013800138000"
FIX = Location(
    time=datetime(2024, 5, 6, 4, 30, 15, tzinfo=UTC),
    latitude=31.230416,
    longitude=121.473701,
    speed_kmh=63.5,
    course=271,
    altitude_m=12,
    satellites=11,
)
RTVS_LOCATION = bytes.fromhex(
    "7e0200008801576000590301ca000000000000000201b3440d049b204b00db0000000023"
    "11240612360104000000001404000000041504000000001702000130011f31010deb3f00"
    "0c00b28991102305828928061f00060089ffffffff000600c5ffffffef0004002d5a5200"
    "1100d5383634353733303638363639353037000600f880000000ef0d0000000000000000"
    "0011120000ae7e"
)
VIN = "LSVAU2180N2183294"


def _decode(wire: bytes) -> Message:
    message = jt808.decode(wire)
    assert_plausible_message(message)
    return message


def _location_body(
    *,
    alarm: int = 0,
    status: int = 0x2,
    lat: int = 31_230_416,
    lon: int = 121_473_701,
    altitude: int = 12,
    speed: int = 635,
    course: int = 271,
    time: str = "240506123015",
    tail: bytes = b"",
) -> bytes:
    """Build a 0x0200 body field by field, so a test can break any one field."""
    return (
        alarm.to_bytes(4, "big")
        + status.to_bytes(4, "big")
        + lat.to_bytes(4, "big")
        + lon.to_bytes(4, "big")
        + altitude.to_bytes(2, "big", signed=True)
        + speed.to_bytes(2, "big")
        + course.to_bytes(2, "big")
        + bytes.fromhex(time)
        + tail
    )


def _with_content(content: bytes) -> bytes:
    """Wrap raw header + body with a correct checksum and flags (no escaping)."""
    return b"\x7e" + content + bytes([xor_checksum(content)]) + b"\x7e"


# Registration and authentication -------------------------------------------


def test_decode_register_2011_body() -> None:
    wire = jt808.encode_register(
        PHONE,
        3,
        version="2011",
        province=44,
        city=303,
        maker="70111",
        model="GT-100",
        terminal_id="A123456",
        plate_color=2,
        plate="粤B12345",
    )

    message = _decode(wire)

    assert message.type == "register"
    assert message.attributes["version"] == "2011"
    assert message.attributes["model"] == "GT-100"
    assert message.attributes["terminal_id"] == "A123456"
    assert message.attributes["plate_color"] == 2
    assert message.attributes["plate"] == "粤B12345"


def test_decode_register_2011_with_vin() -> None:
    wire = jt808.encode_register(
        PHONE, 3, version="2011", model="GT-100", terminal_id="A123456", plate=VIN
    )

    message = _decode(wire)

    assert message.attributes["version"] == "2011"
    assert message.attributes["plate"] == VIN


def test_decode_register_2013_with_vin() -> None:
    wire = jt808.encode_register(
        PHONE, 3, model="BSJ-A6-BD", terminal_id="0567872", plate=VIN
    )

    message = _decode(wire)

    assert message.attributes["version"] == "2013"
    assert message.attributes["model"] == "BSJ-A6-BD"
    assert message.attributes["plate_color"] == 0
    assert message.attributes["plate"] == VIN


def test_decode_register_too_short() -> None:
    wire = jt808.frame(0x0100, PHONE, 1, b"\x00\x2c\x01")

    with pytest.raises(DecodeError) as caught:
        jt808.decode(wire)

    assert caught.value.reason == "invalid_body"
    assert caught.value.msg_id == 0x0100


def test_decode_auth_2019_fields() -> None:
    wire = jt808.encode_auth(
        PHONE_2019,
        9,
        "a1b2c3",
        version="2019",
        imei="866496077582164",
        software_version="V1.2.3",
    )

    message = _decode(wire)

    assert message.device_id == "00000000013800138000"
    assert message.attributes["auth_code"] == "a1b2c3"
    assert message.attributes["imei"] == "866496077582164"
    assert message.attributes["software_version"] == "V1.2.3"


def test_decode_auth_2019_without_optional_fields() -> None:
    wire = jt808.frame(0x0102, PHONE_2019, 9, b"\x03abc", version="2019")

    message = _decode(wire)

    assert message.attributes["auth_code"] == "abc"
    assert message.attributes["imei"] == ""


def test_decode_binary_phone_keeps_hex() -> None:
    wire = jt808.encode_heartbeat("0B3A73CE2FF2", 1)

    message = _decode(wire)

    assert message.device_id == "0b3a73ce2ff2"
    assert message.attributes["imei"] == "123456789012347"
    assert jt808.encode_heartbeat(message.device_id, 1) == wire


# Locations -------------------------------------------------------------------


def test_decode_location_fields() -> None:
    wire = jt808.encode_location(PHONE, 7, FIX, alarm_flags=1 << 26, status=0x0C01)

    message = _decode(wire)

    (location,) = message.locations
    assert location.time == FIX.time
    assert location.latitude == pytest.approx(FIX.latitude, abs=1e-6)
    assert location.speed_kmh == pytest.approx(63.5)
    assert location.course == 271
    assert location.altitude_m == 12
    assert location.satellites == 11
    assert message.alarms == ("vehicle_stolen",)
    assert message.attributes["oil_cut"] is True
    assert message.attributes["circuit_cut"] is True
    assert message.attributes["acc"] is True


def test_decode_location_utc_offset_per_device() -> None:
    message = jt808.decode(RTVS_LOCATION, utc_offset=timedelta(0))

    assert message.locations[0].time == datetime(2023, 11, 24, 6, 12, 36, tzinfo=UTC)


def test_decode_location_negative_altitude() -> None:
    wire = jt808.frame(0x0200, PHONE, 1, _location_body(altitude=-154))

    message = _decode(wire)

    assert message.locations[0].altitude_m == -154


def test_decode_location_course_out_of_range() -> None:
    wire = jt808.frame(0x0200, PHONE, 1, _location_body(course=400))

    message = _decode(wire)

    assert message.locations[0].course is None
    assert message.attributes["course_raw"] == 400


@pytest.mark.parametrize(
    ("version", "expected"),
    [("2013", "reserved_15"), ("2019", "driving_violation_warning")],
)
def test_alarm_names_bit_15_by_edition(version: str, expected: str) -> None:
    names = alarm_names(1 << 15, version)

    assert names == (expected,)


@pytest.mark.parametrize("version", ["2013", "2019"])
def test_alarm_names_cover_every_bit(version: str) -> None:
    names = alarm_names(0xFFFF_FFFF, version)

    assert len(set(names)) == 32
    assert all(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", name) for name in names)


@pytest.mark.parametrize(
    ("bit", "name"),
    [
        (0, "sos"),
        (5, "gnss_antenna_cut"),
        (7, "main_power_low"),
        (8, "main_power_cut"),
        (18, "driving_timeout_day"),
        (26, "vehicle_stolen"),
        (28, "illegal_displacement"),
    ],
)
def test_alarm_names_standard_bits(bit: int, name: str) -> None:
    names = alarm_names(1 << bit, "2013")

    assert names == (name,)


def test_status_2019_bits_by_edition() -> None:
    body = _location_body(status=0x2 | 1 << 22)
    report_2013 = _decode(jt808.frame(0x0200, PHONE, 1, body))
    report_2019 = _decode(jt808.frame(0x0200, PHONE_2019, 1, body, version="2019"))

    assert "moving" not in report_2013.attributes
    assert report_2019.attributes["moving"] is True


@pytest.mark.parametrize(
    ("item_id", "value", "expected"),
    [
        (0x01, "000010e0", {"mileage_km": 432.0}),
        (0x02, "01f4", {"fuel_l": 50.0}),
        (0x02, "8032", {"fuel_level": 50}),
        (0x03, "0258", {"recorder_speed_kmh": 60.0}),
        (0x04, "0007", {"alarm_event_id": 7}),
        (0x06, "fff6", {"compartment_temperature_c": -10}),
        (0x11, "00", {"overspeed_area_type": "none"}),
        (
            0x11,
            "0200000009",
            {"overspeed_area_type": "rectangle", "overspeed_area_id": 9},
        ),
        (
            0x12,
            "010000000501",
            {"area_type": "circle", "area_id": 5, "area_direction": "out"},
        ),
        (
            0x13,
            "00000003007801",
            {
                "route_id": 3,
                "route_drive_seconds": 120,
                "route_drive_result": "too_long",
            },
        ),
        (0x14, "00000004", {"video_alarms": "0x00000004"}),
        (0x15, "0000000c", {"video_signal_loss_channels": "0x0000000c"}),
        (0x16, "00000001", {"video_occlusion_channels": "0x00000001"}),
        (0x17, "0001", {"storage_faults": "0x0001"}),
        (0x18, "000302", {"abnormal_driving": "0x0003", "fatigue_level": 2}),
        (
            0x25,
            "00000011",
            {"ext_signal_status": "0x00000011", "ext_signals": ("low_beam", "brake")},
        ),
        (0x2A, "0002", {"io_status": "0x0002", "deep_sleep": False, "sleep": True}),
        (0x2B, "00640c80", {"analog_ad0": 3200, "analog_ad1": 100}),
        (0x30, "1f", {"rssi": 31}),
        (0x31, "0a", {"satellites": 10}),
    ],
)
def test_decode_additional_item(
    item_id: int, value: str, expected: dict[str, Any]
) -> None:
    raw = bytes.fromhex(value)
    tail = bytes([item_id, len(raw)]) + raw
    wire = jt808.frame(0x0200, PHONE, 1, _location_body(tail=tail))

    attributes = _decode(wire).locations[0].attributes

    for key, expected_value in expected.items():
        assert attributes[key] == expected_value, key


def test_decode_tyre_pressures_item() -> None:
    raw = bytes([220, 230]) + b"\xff" * 28
    wire = jt808.frame(0x0200, PHONE, 1, _location_body(tail=b"\x05\x1e" + raw))

    attributes = _decode(wire).attributes

    assert attributes["tyre_pressures"][:3] == (220, 230, None)


def test_decode_unknown_item_kept_raw() -> None:
    wire = jt808.frame(0x0200, PHONE, 1, _location_body(tail=b"\x56\x02\x05\x50"))

    attributes = _decode(wire).attributes

    assert attributes["item_0x56"] == "0550"


def test_decode_odd_length_item_kept_raw() -> None:
    wire = jt808.frame(0x0200, PHONE, 1, _location_body(tail=b"\x01\x02\x00\x10"))

    attributes = _decode(wire).attributes

    assert attributes["item_0x01"] == "0010"
    assert "mileage_km" not in attributes


def test_decode_overlong_item_becomes_tail() -> None:
    tail = b"\x30\x01\x1f" + b"\x01\x04\x00\x00"
    wire = jt808.frame(0x0200, PHONE, 1, _location_body(tail=tail))

    attributes = _decode(wire).attributes

    assert attributes["rssi"] == 31
    assert attributes["tail_hex"] == "01040000"


# Batches ---------------------------------------------------------------------


def _batch(
    records: list[bytes], count: int | None = None, batch_type: int = 0
) -> bytes:
    body = (len(records) if count is None else count).to_bytes(2, "big")
    body += bytes([batch_type])
    for record in records:
        body += len(record).to_bytes(2, "big") + record
    return jt808.frame(0x0704, PHONE, 5, body)


def test_batch_keeps_records_beside_bad_one() -> None:
    wire = _batch(
        [_location_body(), _location_body(time="241306123015"), _location_body()]
    )

    message = _decode(wire)

    assert len(message.locations) == 2
    (invalid,) = message.attributes["invalid_records"]
    assert invalid["index"] == 1
    assert invalid["reason"] == "invalid_time"


def test_decode_batch_reports_truncated_record() -> None:
    body = (2).to_bytes(2, "big") + b"\x00" + (28).to_bytes(2, "big") + _location_body()
    body += (40).to_bytes(2, "big") + b"\x00" * 10
    wire = jt808.frame(0x0704, PHONE, 5, body)

    message = _decode(wire)

    assert len(message.locations) == 1
    assert message.attributes["invalid_records"][0]["reason"] == "truncated"


def test_decode_batch_collects_alarms_in_order() -> None:
    wire = _batch([_location_body(alarm=1 << 8), _location_body(alarm=1 | 1 << 8)])

    message = _decode(wire)

    assert message.alarms == ("main_power_cut", "sos")


def test_decode_batch_backfill_flag() -> None:
    message = _decode(_batch([_location_body()], batch_type=1))

    assert message.attributes["backfill"] is True


# Other terminal messages ---------------------------------------------------


def test_decode_heartbeat_with_vendor_bytes() -> None:
    message = _decode(jt808.frame(0x0002, PHONE, 1, b"\x01\x02\x03"))

    assert message.type == "heartbeat"
    assert message.attributes["body_hex"] == "010203"


def test_decode_general_response() -> None:
    wire = jt808.encode_general_response(
        PHONE, 4, answered_serial=77, answered_id=0x8105, result=3
    )

    message = _decode(wire)

    assert message.type == "general_response"
    assert message.attributes["answered_serial"] == 77
    assert message.attributes["answered_id"] == "0x8105"
    assert message.attributes["result"] == 3


def test_decode_parameters_answer() -> None:
    params: dict[int, int | str | bytes] = {
        0x0001: 30,
        0x0013: "10.0.0.1",
        0x0031: 500,
        0x0084: 1,
        0xF001: b"\x01\x02\x03",
    }
    wire = jt808.encode_parameters_response(PHONE, 4, params, answered_serial=12)

    message = _decode(wire)

    assert message.type == "parameters"
    assert message.attributes["answered_serial"] == 12
    assert message.attributes["parameters"] == {
        "0x0001": 30,
        "0x0013": "10.0.0.1",
        "0x0031": 500,
        "0x0084": 1,
        "0xf001": "010203",
    }


def test_decode_attributes_2013_layout() -> None:
    body = (
        b"\x00\x06"
        + b"70111"
        + b"BSJ-A6".ljust(20, b"\x00")
        + b"1234567"
        + bytes.fromhex("89860324947560032900")
        + b"\x04HW-1"
        + b"\x05FW-22"
        + b"\x03\x01"
    )

    message = _decode(jt808.frame(0x0107, PHONE, 2, body))

    assert message.type == "attributes"
    assert message.attributes["manufacturer"] == "70111"
    assert message.attributes["model"] == "BSJ-A6"
    assert message.attributes["terminal_id"] == "1234567"
    assert message.attributes["hw_version"] == "HW-1"
    assert message.attributes["fw_version"] == "FW-22"
    assert message.attributes["gnss_attr"] == "0x03"


@pytest.mark.parametrize(
    ("msg_id", "kind"),
    [(0x0201, "position_response"), (0x0500, "vehicle_control_response")],
)
def test_decode_answered_location(msg_id: int, kind: str) -> None:
    wire = jt808.frame(msg_id, PHONE, 8, b"\x00\x2a" + _location_body(status=0x402))

    message = _decode(wire)

    assert message.type == kind
    assert message.attributes["answered_serial"] == 42
    assert message.attributes["oil_cut"] is True
    assert len(message.locations) == 1


def test_decode_unknown_message_keeps_body() -> None:
    message = _decode(jt808.frame(0x0900, PHONE, 8, b"\xf1hello"))

    assert message.type == "unknown"
    assert message.attributes["body_hex"] == "f168656c6c6f"


# Rejected frames -------------------------------------------------------------


def _reframed_with_length(wire: bytes, length: int) -> bytes:
    content = bytearray(wire[1:-2])
    content[2:4] = length.to_bytes(2, "big")
    return _with_content(bytes(content))


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "missing_start_flag"),
        (b"\x00\x02\x7e", "missing_start_flag"),
        (b"\x7e", "incomplete"),
        (b"\x7e\x00\x02\x7e", "too_short"),
        (
            _reframed_with_length(jt808.encode_heartbeat(PHONE, 1), 3),
            "body_length_mismatch",
        ),
        (
            _with_content(bytes.fromhex("0200040000") + b"\x00" * 8),
            "unsupported_encryption",
        ),
        (
            _with_content(
                bytes.fromhex("02002000") + b"\x00" * 8 + b"\x00\x02\x00\x00"
            ),
            "invalid_subpackage",
        ),
        (_with_content(bytes.fromhex("02004000") + b"\x00" * 10), "too_short"),
        (jt808.frame(0x0200, PHONE, 1, _location_body()[:20]), "invalid_body"),
        (
            jt808.frame(0x0200, PHONE, 1, _location_body(time="2405061a3015")),
            "invalid_time",
        ),
        (
            jt808.frame(0x0200, PHONE, 1, _location_body(time="000000000000")),
            "invalid_time",
        ),
        (
            jt808.frame(0x0200, PHONE, 1, _location_body(lat=95_000_000)),
            "invalid_coordinates",
        ),
        (jt808.frame(0x0104, PHONE, 1, b"\x00"), "invalid_body"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_decode_rejects(wire: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        jt808.decode(wire)

    assert caught.value.reason == reason


def test_decode_error_names_message_and_data() -> None:
    wire = jt808.frame(0x0200, PHONE, 1, _location_body(time="241306123015"))

    with pytest.raises(DecodeError) as caught:
        jt808.decode(wire)

    assert caught.value.msg_id == 0x0200
    assert caught.value.data
    assert "0x0200" in str(caught.value)


# Replies ---------------------------------------------------------------------


def test_reply_register_failure_has_no_auth_code() -> None:
    register = _decode(jt808.encode_register(PHONE, 3, model="M", terminal_id="1"))

    reply = jt808.reply(register, platform_serial=1, result=3)

    assert reply is not None
    answer = jt808.decode(reply)
    assert answer.attributes["result"] == 3
    assert "auth_code" not in answer.attributes


def test_reply_register_default_auth_code() -> None:
    register = _decode(jt808.encode_register(PHONE, 3, model="M", terminal_id="1"))

    reply = jt808.reply(register, platform_serial=1)

    assert reply is not None
    assert jt808.decode(reply).attributes["auth_code"] == PHONE


def test_reply_time_query_with_clock() -> None:
    query = _decode(jt808.frame(0x0004, PHONE_2019, 3, b"", version="2019"))
    now = datetime(2024, 5, 6, 4, 30, 15, tzinfo=UTC)

    reply = jt808.reply(query, platform_serial=1, now=now)

    assert reply is not None
    answer = jt808.decode(reply)
    assert answer.msg_id == 0x8004
    assert answer.attributes["time"] == now.isoformat()


def test_reply_time_query_without_clock() -> None:
    query = _decode(jt808.frame(0x0004, PHONE_2019, 3, b"", version="2019"))

    reply = jt808.reply(query, platform_serial=1)

    assert reply is None


def test_reply_acknowledges_unknown_terminal_message() -> None:
    message = _decode(jt808.frame(0x0900, PHONE, 8, b"\xf1"))

    reply = jt808.reply(message, platform_serial=1)

    assert reply is not None
    assert jt808.decode(reply).attributes["answered_id"] == "0x0900"


def test_reply_skips_platform_message() -> None:
    command = _decode(jt808.encode_position_query(PHONE, 8))

    reply = jt808.reply(command, platform_serial=1)

    assert reply is None


def test_reply_follows_2019_protocol_version() -> None:
    heartbeat = _decode(
        jt808.encode_heartbeat(PHONE_2019, 3, version="2019", protocol_version=3)
    )

    reply = jt808.reply(heartbeat, platform_serial=1)

    assert reply is not None
    answer = jt808.decode(reply)
    assert answer.attributes["version"] == "2019"
    assert answer.attributes["protocol_version"] == 3
    assert answer.device_id == heartbeat.device_id


# Platform commands -----------------------------------------------------------


@pytest.mark.parametrize(("version", "body"), [("2013", "01"), ("2019", "0001000101")])
def test_encode_vehicle_control_body(version: str, body: str) -> None:
    phone = PHONE_2019 if version == "2019" else PHONE

    wire = jt808.encode_vehicle_control(phone, 4, cut=True, version=version)

    message = _decode(wire)
    assert message.attributes["control_flag"] == 1
    assert wire.hex().endswith(body + f"{wire[-2]:02x}7e")


def test_encode_set_parameters_widths() -> None:
    wire = jt808.encode_set_parameters(PHONE, 4, {0x0029: 30, 0x0031: 500, 0x0084: 2})

    message = _decode(wire)

    assert message.type == "set_parameters"
    assert message.attributes["parameters"] == {
        "0x0029": 30,
        "0x0031": 500,
        "0x0084": 2,
    }
    assert len(wire) == 15 + 1 + 3 * 5 + 4 + 2 + 1


# Encoder input checks --------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: jt808.encode_heartbeat("0138001380001", 1),
        lambda: jt808.encode_heartbeat("01380013800x", 1),
        lambda: jt808.encode_heartbeat(PHONE, 70_000),
        lambda: jt808.encode_heartbeat(PHONE, 1, version="2015"),
        lambda: jt808.frame(0x0900, PHONE, 1, b"\x00" * 1024),
        lambda: jt808.encode_register(PHONE, 1, maker="TOO-LONG"),
        lambda: jt808.encode_register(PHONE, 1, plate="\U0001f697"),
        lambda: jt808.encode_location(PHONE, 1, Location(FIX.time, 91.0, 0.0)),
        lambda: jt808.encode_location(
            PHONE, 1, Location(datetime(2024, 1, 1), 1.0, 1.0)
        ),
        lambda: jt808.encode_location(
            PHONE, 1, Location(datetime(1999, 1, 1, tzinfo=UTC), 1.0, 1.0)
        ),
        lambda: jt808.encode_location(PHONE, 1, FIX, items={0: b""}),
        lambda: jt808.encode_set_parameters(PHONE, 1, {0x0084: 300}),
        lambda: jt808.frame(0x0900, PHONE, 1, b"", subpackage=(2, 3)),
    ],
    ids=[
        "phone_too_long",
        "phone_not_hex",
        "serial_too_big",
        "unknown_edition",
        "body_too_long",
        "field_too_long",
        "plate_not_gbk",
        "latitude_out_of_range",
        "naive_time",
        "time_before_2000",
        "item_id_zero",
        "parameter_too_wide",
        "piece_index_past_total",
    ],
)
def test_encoder_rejects_invalid_input(build: Any) -> None:
    with pytest.raises(EncodeError):
        build()
