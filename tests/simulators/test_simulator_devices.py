"""Tests of simulated device identities and the per-protocol device codecs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from postloan.protocols import gt06, jt808
from postloan.simulators.devices import (
    Ack,
    AckKey,
    Command,
    DeviceState,
    Gt06Codec,
    Jt808Codec,
    device_id_for,
    luhn_check_digit,
    luhn_valid,
)
from postloan.simulators.trajectories import TrackPoint

POINT = TrackPoint(
    time=datetime(2014, 9, 10, 4, 54, 7, tzinfo=UTC),
    latitude=48.16350662940509,
    longitude=11.564388282625075,
    speed_kmh=42.6,
    course=197.3,
)
GT06_IMEI = device_id_for("gt06", "x0001", 0)
JT808_PHONE = device_id_for("jt808", "x0001", 0)


# --- device ids -------------------------------------------------------------


def test_luhn_check_digit_of_real_imei() -> None:
    # IMEI of a real GT06 login (vector gt06-login-basic).
    assert luhn_check_digit("35873507053028") == 1
    assert luhn_valid("358735070530281")


@pytest.mark.parametrize("vehicle_id", ["20000542", "rsk-twizy", "x0001", ""])
@pytest.mark.parametrize("index", [0, 1, 17, 9_999_999])
def test_device_id_gt06_is_valid_imei(vehicle_id: str, index: int) -> None:
    imei = device_id_for("gt06", vehicle_id, index)

    assert len(imei) == 15
    assert imei.isdigit()
    assert luhn_valid(imei)


@pytest.mark.parametrize("index", [0, 42, 9_999_999])
def test_device_id_jt808_is_12_digit_phone(index: int) -> None:
    phone = device_id_for("jt808", "20000542", index)

    assert len(phone) == 12
    assert phone.isdigit()
    assert phone.startswith("01")


def test_device_id_is_stable() -> None:
    first = device_id_for("gt06", "20000542", 7)

    second = device_id_for("gt06", "20000542", 7)

    assert first == second


def test_device_id_distinct_per_index() -> None:
    ids = {device_id_for("jt808", "rsk-twizy", index) for index in range(2000)}

    assert len(ids) == 2000


def test_device_id_depends_on_vehicle() -> None:
    assert device_id_for("gt06", "20000542", 0) != device_id_for("gt06", "20000108", 0)


def test_device_id_rejects_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        device_id_for("h02", "x0001", 0)


def test_device_id_rejects_index_out_of_range() -> None:
    with pytest.raises(ValueError, match="device index"):
        device_id_for("gt06", "x0001", 10_000_000)


# --- GT06 codec -------------------------------------------------------------


def test_gt06_location_decodes_at_protocol_resolution() -> None:
    codec = Gt06Codec(GT06_IMEI)

    frame, key = codec.location(POINT, DeviceState(), resend=True)

    message = gt06.decode(frame)
    location = message.locations[0]
    assert key == (0x22, message.serial)
    assert location.time == POINT.time
    assert location.latitude == pytest.approx(POINT.latitude, abs=1 / 1_800_000)
    assert location.longitude == pytest.approx(POINT.longitude, abs=1 / 1_800_000)
    assert location.speed_kmh == 43
    assert location.course == 197
    assert message.attributes["reupload"] is True


def test_gt06_login_waits_for_ack() -> None:
    codec = Gt06Codec(GT06_IMEI)
    sent: list[tuple[bytes, AckKey]] = []

    async def request(frame: bytes, key: AckKey) -> Ack:
        sent.append((frame, key))
        return Ack(key)

    asyncio.run(codec.login(request, DeviceState()))

    message = gt06.decode(sent[0][0])
    assert message.type == "login"
    assert message.device_id == GT06_IMEI
    assert sent[0][1] == (0x01, message.serial)


def test_gt06_parse_generic_ack() -> None:
    codec = Gt06Codec(GT06_IMEI)

    event = codec.parse(gt06.ack(0x22, 0x0102))

    assert event == Ack((0x22, 0x0102))


@pytest.mark.parametrize(
    ("text", "response_text", "cut"),
    [
        ("Relay,1#", "Cut off the fuel supply: Success!", True),
        ("Relay,0#", "Restore fuel supply: Success!", False),
        ("STATUS#", "STATUS#", False),
    ],
)
def test_gt06_answers_command_with_server_flag(
    text: str, response_text: str, cut: bool
) -> None:
    codec = Gt06Codec(GT06_IMEI)
    state = DeviceState()
    command = codec.parse(gt06.encode_command(text, server_flag=0x0BADCAFE, serial=9))
    assert isinstance(command, Command)

    frame = codec.respond(command, state)

    response = gt06.decode(frame)
    assert response.msg_id == 0x21
    assert response.attributes["server_flag"] == 0x0BADCAFE
    assert response.attributes["text"] == response_text
    assert state.fuel_cut is cut


def test_gt06_heartbeat_reports_fuel_cut() -> None:
    codec = Gt06Codec(GT06_IMEI)

    frame, key = codec.heartbeat(DeviceState(fuel_cut=True))

    message = gt06.decode(frame)
    assert key == (0x13, message.serial)
    assert message.attributes["oil_cut"] is True
    assert message.attributes["acc"] is True


# --- JT808 codec ------------------------------------------------------------


def test_jt808_register_then_auth_with_code() -> None:
    codec = Jt808Codec(JT808_PHONE)
    state = DeviceState()
    sent: list[bytes] = []

    async def request(frame: bytes, key: AckKey) -> Ack:
        sent.append(frame)
        code = "sim-code" if key[0] == 0x0100 else None
        return Ack(key, auth_code=code)

    asyncio.run(codec.login(request, state))

    register, auth = (jt808.decode(frame) for frame in sent)
    assert register.type == "register"
    assert register.device_id == JT808_PHONE
    assert auth.type == "auth"
    assert auth.attributes["auth_code"] == "sim-code"
    assert state.auth_code == "sim-code"


def test_jt808_reconnect_skips_register() -> None:
    codec = Jt808Codec(JT808_PHONE)
    state = DeviceState(auth_code="kept")
    keys: list[AckKey] = []

    async def request(frame: bytes, key: AckKey) -> Ack:
        keys.append(key)
        return Ack(key)

    asyncio.run(codec.login(request, state))

    assert [key[0] for key in keys] == [0x0102]


def test_jt808_parse_register_response_and_ack() -> None:
    codec = Jt808Codec(JT808_PHONE)
    register = jt808.encode_register(JT808_PHONE, 5)
    auth = jt808.encode_auth(JT808_PHONE, 6, "abc")

    registered = codec.parse(
        jt808.reply(jt808.decode(register), platform_serial=1, auth_code="abc") or b""
    )
    acked = codec.parse(jt808.reply(jt808.decode(auth), platform_serial=2) or b"")

    assert registered == Ack((0x0100, 5), 0, "abc")
    assert acked == Ack((0x0102, 6), 0)


def test_jt808_location_carries_cut_status() -> None:
    codec = Jt808Codec(JT808_PHONE)

    frame, key = codec.location(POINT, DeviceState(fuel_cut=True), resend=False)

    message = jt808.decode(frame)
    location = message.locations[0]
    assert key == (0x0200, message.serial)
    assert location.latitude == pytest.approx(POINT.latitude, abs=1e-6)
    assert location.longitude == pytest.approx(POINT.longitude, abs=1e-6)
    assert location.speed_kmh == pytest.approx(42.6)
    assert message.attributes["oil_cut"] is True
    assert message.attributes["circuit_cut"] is True


def test_jt808_backlog_is_backfill_batches() -> None:
    codec = Jt808Codec(JT808_PHONE)
    points = [
        TrackPoint(time=POINT.time.replace(second=s), latitude=48.1, longitude=11.5)
        for s in range(40)
    ]

    batches = codec.backlog(points, DeviceState())

    assert [count for _, _, count in batches] == [30, 10]
    first = jt808.decode(batches[0][0])
    assert first.type == "batch_location"
    assert first.attributes["backfill"] is True
    assert [loc.time for loc in first.locations] == [p.time for p in points[:30]]


def test_jt808_vehicle_control_answer() -> None:
    codec = Jt808Codec(JT808_PHONE)
    state = DeviceState(position=POINT)
    command = codec.parse(jt808.encode_vehicle_control(JT808_PHONE, 77, cut=True))
    assert isinstance(command, Command)

    answer = jt808.decode(codec.respond(command, state))

    assert answer.msg_id == 0x0500
    assert answer.attributes["answered_serial"] == 77
    assert answer.attributes["oil_cut"] is True
    assert answer.attributes["circuit_cut"] is True
    assert answer.locations[0].time == POINT.time
    assert state.fuel_cut is True


def test_jt808_position_query_answer() -> None:
    codec = Jt808Codec(JT808_PHONE)
    command = codec.parse(jt808.encode_position_query(JT808_PHONE, 78))
    assert isinstance(command, Command)

    answer = jt808.decode(codec.respond(command, DeviceState(position=POINT)))

    assert answer.msg_id == 0x0201
    assert answer.attributes["answered_serial"] == 78
    assert answer.locations[0].latitude == pytest.approx(POINT.latitude, abs=1e-6)


@pytest.mark.parametrize(
    ("command_id", "result"), [(0x8105, 0), (0x8103, 0), (0x8104, 3)]
)
def test_jt808_general_answer_result(command_id: int, result: int) -> None:
    codec = Jt808Codec(JT808_PHONE)
    command = Command(command_id, 79)

    answer = jt808.decode(codec.respond(command, DeviceState()))

    assert answer.msg_id == 0x0001
    assert answer.attributes["answered_serial"] == 79
    assert answer.attributes["answered_id"] == f"0x{command_id:04x}"
    assert answer.attributes["result"] == result
