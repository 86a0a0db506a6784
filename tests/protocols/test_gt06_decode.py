"""GT06 decoder variants, replies and encoder checks beyond the shared vectors.

Packets named DOC_ are examples from the Concox JM-VL03 protocol v1.1.2,
TRACCAR_ packets come from Traccar's Gt06FrameDecoderTest and TOPIN_ packets
from its TopinProtocolDecoderTest (a GT06-derived protocol). Other frames are
built here with valid CRCs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_gt06_invariants import assert_plausible_message

from postloan.protocols import gt06
from postloan.protocols.base import DecodeError, EncodeError, Location, Message
from postloan.protocols.crc import USING_C_EXTENSION, crc16_x25
from postloan.protocols.gt06_fields import ALARM_CODES, TERMINAL_ALARMS, CellTower
from postloan.protocols.gt06_frame import build_frame

FIX = Location(
    time=datetime(2016, 2, 14, 20, 22, 19, tzinfo=UTC),
    latitude=41.45768,
    longitude=2.186023,
    speed_kmh=75.0,
    course=134.0,
    satellites=12,
)
# GPS block of vector gt06-gps-0x12-zero-lbs: 2016-02-14 20:22:19, 12 satellites.
GPS_BLOCK = "10020e141613cc0472ab50003c0a7a4b1486"
CELL_2G = "01cc00287d001f71"  # MCC 460, MNC 0, LAC 10365, cell 8049
STATUS = "4006040102"  # terminal info, voltage, GSM, alarm code 1, language 2
DOC_LBS_0x28 = (
    "78783b2810010d02020201cc00287d001f713e287d001f7231287d001e232d287d001f40"
    "18000000000000000000000000000000000000ff00020005b14b0d0a"
)
DOC_ALARM_0x27 = (
    "78782627100419092d07c5027ac91c0c46580000053709000000000000000080"
    "02000c01ff00004df60d0a"
)
TRACCAR_WIFI_0x69 = (
    "787800691709261259400700cc0400d376714600d37a3d5000d37a3c5000d393505a"
    "00d3765d5a00d376735a00d32e6b640d0a"
)
TRACCAR_WIFI_0x69_THREE_APS = (
    "787803691604130318491475905bd30e25001e10bbf7635d14759006e626560501cc0028"
    "660f213228660f1f2828660ea81e286610731428660f20140d0a"
)
TRACCAR_WIFI_0x17 = (
    "787808171709281135331491827b75594dc8d719a9708452cad719a9708550cad719a970"
    "86521491827b75574cac9e17b308085dc8d71939633947cad71939633a480700cc0400d3"
    "7a3d5a00d37a3d5a00d37a3d5a00d37a3d5a00d37a3d5a00d37a3d5a00d37a3d5a0d0a"
)
TRACCAR_ALARM_WITHOUT_FIX = (
    "78782516000000000000c000000000000000000020000900fa0210ef00fb6200066403"
    "01000468030d0a"
)
TOPIN_WIFI_0x69_EXTRA_BYTE = "7878006921120412565802010601071e4a9764071e4a9864010d0a"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _frame(msg_id: int, content_hex: str, serial: int = 1, long: bool = False) -> bytes:
    return build_frame(msg_id, bytes.fromhex(content_hex), serial, long_frame=long)


def _decode(frame: bytes, utc_offset: timedelta = timedelta(0)) -> Message:
    message = gt06.decode(frame, utc_offset=utc_offset)
    assert_plausible_message(message)
    return message


# -- CRC ---------------------------------------------------------------------


def test_crc16_x25_check_value() -> None:
    data = b"123456789"

    checksum = crc16_x25(data)

    assert checksum == 0x906E


def test_crc16_x25_uses_c_extension() -> None:
    assert USING_C_EXTENSION


# -- GPS and LBS packets -------------------------------------------------------


def test_decode_satellite_nibble_13_tolerated() -> None:
    block = GPS_BLOCK[:12] + "dc" + GPS_BLOCK[14:]

    message = _decode(_frame(0x12, block + CELL_2G))

    assert message.locations[0].satellites == 12


def test_decode_course_bits_14_15_carry_acc() -> None:
    block = GPS_BLOCK[:-4] + "d486"  # bits 14 and 15 set on 0x1486

    message = _decode(_frame(0x12, block + CELL_2G))

    assert message.attributes["acc"] is True
    assert message.locations[0].course == 134.0


def test_decode_0x12_four_byte_tail_is_mileage() -> None:
    content = GPS_BLOCK + CELL_2G + "0001e240"

    message = _decode(_frame(0x12, content))

    assert message.attributes["mileage"] == 123456


def test_decode_0x12_unknown_tail_is_kept() -> None:
    content = GPS_BLOCK + CELL_2G + "0102"

    message = _decode(_frame(0x12, content))

    assert message.attributes["trailing_hex"] == "0102"


def test_decode_0x22_mileage_after_reupload_flag() -> None:
    content = GPS_BLOCK + CELL_2G + "01" + "03" + "00" + "00000064"

    message = _decode(_frame(0x22, content))

    assert message.attributes["acc"] is True
    assert message.attributes["upload_mode"] == 3
    assert message.attributes["reupload"] is False
    assert message.attributes["mileage"] == 100


def test_decode_gps_packet_in_long_frame() -> None:
    content = GPS_BLOCK + CELL_2G + "000000"

    message = _decode(_frame(0x22, content, long=True))

    assert message.type == "location"
    assert message.locations[0].latitude == pytest.approx(41.45768, abs=1e-6)


def test_decode_0x11_with_wide_cell_is_location() -> None:
    content = GPS_BLOCK + "01cc" + "0001" + "287d" + "0001f771"

    message = _decode(_frame(0x11, content))

    assert message.type == "location"
    assert message.attributes["cells"] == [
        {"mcc": 460, "mnc": 1, "lac": 10365, "cell_id": 128881}
    ]


def test_decode_0x11_without_gps_is_lbs() -> None:
    message = _decode(_frame(0x11, CELL_2G))

    assert message.type == "lbs"
    assert message.locations == ()
    assert message.attributes["cells"][0]["cell_id"] == 8049


def test_decode_lbs_multi_cell_doc_example() -> None:
    message = _decode(bytes.fromhex(DOC_LBS_0x28))

    assert message.type == "lbs"
    assert len(message.attributes["cells"]) == 4
    assert message.attributes["time"] == "2016-01-13T02:02:02+00:00"
    assert message.attributes["timing_advance"] == 255


def test_decode_lbs_time_uses_utc_offset() -> None:
    frame = bytes.fromhex(DOC_LBS_0x28)

    message = _decode(frame, utc_offset=timedelta(hours=8))

    assert message.attributes["time"] == "2016-01-12T18:02:02+00:00"


def test_decode_latitude_out_of_range_keeps_alarm() -> None:
    block = GPS_BLOCK[:14] + "0a000000" + GPS_BLOCK[22:]  # 167,772,160 units = 93.2°

    message = _decode(_frame(0x16, block + "09" + CELL_2G + "6506040102"))

    assert message.locations == ()
    assert message.alarms == ("sos",)
    assert "position_error" in message.attributes


@pytest.mark.parametrize(
    "time_hex",
    [
        pytest.param("10000e141613", id="month-0"),
        pytest.param("1002001416 13", id="day-0"),
        pytest.param("10021e141613", id="february-30"),
        pytest.param("10020e181613", id="hour-24"),
        pytest.param("10020e143c13", id="minute-60"),
    ],
)
def test_decode_invalid_time_raises_decode_error(time_hex: str) -> None:
    content = time_hex.replace(" ", "") + GPS_BLOCK[12:] + CELL_2G

    with pytest.raises(DecodeError) as caught:
        gt06.decode(_frame(0x12, content))

    assert caught.value.reason == "invalid_time"


def test_decode_short_gps_block_raises_truncated_content() -> None:
    content = GPS_BLOCK[:20]

    with pytest.raises(DecodeError) as caught:
        gt06.decode(_frame(0x22, content))

    assert caught.value.reason == "truncated_content"


# -- alarms and status -----------------------------------------------------------


def test_decode_alarm_without_fix_keeps_alarm() -> None:
    message = _decode(bytes.fromhex(TRACCAR_ALARM_WITHOUT_FIX))

    assert message.locations == ()
    assert message.alarms == ("vibration",)
    assert message.attributes["cells"][0]["mcc"] == 250


def test_decode_alarm_multi_fence_doc_example() -> None:
    message = _decode(bytes.fromhex(DOC_ALARM_0x27))

    assert message.alarms == ("power_on",)
    assert message.attributes["fence_number"] is None
    assert message.attributes["cells"] == []
    assert message.locations[0].valid is False


@pytest.mark.parametrize(("bits", "name"), sorted(TERMINAL_ALARMS.items()))
def test_decode_alarm_code_zero_uses_terminal_bits(bits: int, name: str) -> None:
    frame = gt06.encode_alarm(FIX, 1, alarm_code=0, terminal_info=bits << 3)

    message = _decode(frame)

    assert message.alarms == (name,)


def test_decode_alarm_unlisted_code_keeps_number() -> None:
    frame = gt06.encode_alarm(FIX, 1, alarm_code=0x07)

    message = _decode(frame)

    assert message.alarms == ("alarm_0x07",)


def test_decode_alarm_seeworld_four_byte_cell_id() -> None:
    content = GPS_BLOCK + "0a" + "01cc00287d0001f771" + STATUS

    message = _decode(_frame(0x16, content))

    assert message.attributes["cells"][0]["cell_id"] == 128881
    assert message.alarms == ("sos",)


def test_decode_alarm_4g_with_fence_number() -> None:
    cell = CellTower(mcc=460, mnc=11, lac=0x12345678, cell_id=0x0123456789)
    frame = gt06.encode_alarm(
        FIX, 7, alarm_code=0x05, msg_type=0xA4, cell=cell, fence_number=2
    )

    message = _decode(frame)

    assert message.alarms == ("geofence_exit",)
    assert message.attributes["fence_number"] == 2
    assert message.attributes["cells"] == [
        {"mcc": 460, "mnc": 11, "lac": 0x12345678, "cell_id": 0x0123456789}
    ]


def test_alarm_codes_are_unique_snake_case_names() -> None:
    names = list(ALARM_CODES.values())

    assert len(set(names)) == len(names)
    assert all(name.replace("_", "").isalnum() and name.islower() for name in names)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(CELL_2G + STATUS, id="without-length-byte"),
        pytest.param("09" + CELL_2G + STATUS, id="with-length-byte"),
    ],
)
def test_decode_lbs_alarm_0x19_variants(content: str) -> None:
    message = _decode(_frame(0x19, content))

    assert message.type == "alarm"
    assert message.alarms == ("sos",)
    assert message.attributes["cells"][0]["lac"] == 10365


@pytest.mark.parametrize(
    ("content", "expected_alarm_code"),
    [
        pytest.param("460602", None, id="three-bytes"),
        pytest.param("46060201", 1, id="four-bytes"),
    ],
)
def test_decode_heartbeat_short_clone(
    content: str, expected_alarm_code: int | None
) -> None:
    message = _decode(_frame(0x13, content))

    assert message.type == "heartbeat"
    assert message.attributes["gsm_signal"] == 2
    assert message.attributes["alarm_code"] == (expected_alarm_code or 0)


def test_decode_heartbeat_extended_status() -> None:
    content = (
        "01"
        + "0007"
        + "00"
        + "02"
        + "5a"
        + "01"
        + "0190"
        + "00"
        + "0002"
        + "0003"
        + "8012"
    )

    message = _decode(_frame(0x13, content))

    assert message.attributes["battery_level"] == 90
    assert message.attributes["satellites"] == 7
    assert message.alarms == ()


# -- information, commands, WiFi and unknown types --------------------------------


def test_decode_info_external_voltage_doc_value() -> None:
    message = _decode(_frame(0x94, "00049f", long=True))

    assert message.attributes["external_voltage"] == pytest.approx(11.83)


def test_decode_info_status_text_fuel_cut() -> None:
    text = "ALM1=FF;STA1=C0;DYD=02;MODE=MODE,1,20,500"

    message = _decode(_frame(0x94, "04" + text.encode().hex(), long=True))

    assert message.attributes["status_fields"]["DYD"] == "02"
    assert message.attributes["oil_cut"] is True
    assert message.attributes["oil_cut_pending"] is False


def test_decode_info_door() -> None:
    message = _decode(_frame(0x94, "0505", long=True))

    assert message.attributes["door"] is True
    assert message.attributes["io_high"] is True


def test_decode_info_gps_status() -> None:
    message = _decode(
        _frame(0x94, "09" + "03" + "02" + "2a2b" + "01" + "10", long=True)
    )

    assert message.attributes["satellites"] == 2
    assert message.attributes["satellites_visible"] == 1


def test_decode_info_unknown_subtype_keeps_data() -> None:
    message = _decode(_frame(0x94, "420102", long=True))

    assert message.attributes["info_type"] == 0x42
    assert message.attributes["trailing_hex"] == "0102"


def test_decode_command_response_utf16() -> None:
    frame = gt06.encode_command_response(9, "断油成功", 3)

    message = _decode(frame)

    assert message.attributes["encoding"] == 2
    assert message.attributes["text"] == "断油成功"


def test_decode_command_response_length_below_four_raises() -> None:
    with pytest.raises(DecodeError) as caught:
        gt06.decode(_frame(0x15, "03000000"))

    assert caught.value.reason == "invalid_length"


def test_decode_wifi_0x69_without_serial() -> None:
    message = _decode(bytes.fromhex(TRACCAR_WIFI_0x69))

    assert message.type == "wifi"
    assert message.serial is None
    assert len(message.attributes["cells"]) == 7
    assert message.attributes["time"] == "2017-09-26T12:59:40+00:00"


def test_decode_wifi_0x69_extra_byte_kept() -> None:
    message = _decode(bytes.fromhex(TOPIN_WIFI_0x69_EXTRA_BYTE))

    assert message.attributes["trailing_hex"] == "01"


def test_decode_wifi_0x69_access_points() -> None:
    message = _decode(bytes.fromhex(TRACCAR_WIFI_0x69_THREE_APS))

    assert len(message.attributes["wifi"]) == 3
    assert message.attributes["wifi"][0] == {"mac": "14:75:90:5b:d3:0e", "rssi": 0x25}


def test_decode_wifi_0x17_counted() -> None:
    message = _decode(bytes.fromhex(TRACCAR_WIFI_0x17))

    assert message.type == "wifi"
    assert len(message.attributes["wifi"]) == 8
    assert message.attributes["time"] == "2017-09-28T11:35:33+00:00"


def test_decode_wifi_0x17_standard_frame_is_unknown() -> None:
    message = _decode(_frame(0x17, "0102"))

    assert message.type == "unknown"


def test_reply_wifi_0x69_echoes_time() -> None:
    message = _decode(bytes.fromhex(TRACCAR_WIFI_0x69))

    answer = gt06.reply(message, now=NOW)

    assert answer == bytes.fromhex("787800691709261259400d0a")


def test_decode_unknown_type_keeps_content() -> None:
    message = _decode(_frame(0x8B, "a1b2"))

    assert message.type == "unknown"
    assert message.attributes["content_hex"] == "a1b2"


def test_reply_unknown_short_frame_is_ack() -> None:
    message = _decode(_frame(0xFD, "00", serial=0x0102))

    answer = gt06.reply(message, now=NOW)

    assert answer == gt06.ack(0xFD, 0x0102)


def test_reply_unknown_long_frame_is_none() -> None:
    message = _decode(_frame(0xF2, "00", long=True))

    answer = gt06.reply(message, now=NOW)

    assert answer is None


# -- login and time zones ----------------------------------------------------------


def test_encode_login_west_offset_word() -> None:
    frame = gt06.encode_login("358735070530281", 1, utc_offset=-timedelta(hours=4))

    message = _decode(frame)

    assert message.attributes["timezone_word"] == "190a"
    assert gt06.login_utc_offset(message) == -timedelta(hours=4)


def test_login_utc_offset_none_for_basic_login() -> None:
    message = _decode(gt06.encode_login("358735070530281", 1))

    offset = gt06.login_utc_offset(message)

    assert offset is None


def test_decode_login_invalid_timezone_word_keeps_login() -> None:
    content = "0358735070530281" + "7000" + "3cc2"  # 0x3cc = 972 -> 9 h 72 min

    message = _decode(_frame(0x01, content))

    assert message.device_id == "358735070530281"
    assert gt06.login_utc_offset(message) is None


def test_decode_login_non_bcd_imei_raises() -> None:
    with pytest.raises(DecodeError) as caught:
        gt06.decode(_frame(0x01, "0358735070530a81"))

    assert caught.value.reason == "invalid_imei"


def test_decode_rejects_offset_of_a_day() -> None:
    frame = gt06.ack(0x8A, 1)

    with pytest.raises(ValueError, match="24 hours"):
        gt06.decode(frame, utc_offset=timedelta(days=1))


def test_decode_applies_utc_offset_to_gps_time() -> None:
    frame = gt06.encode_location(FIX, 1, utc_offset=timedelta(hours=5, minutes=30))

    message = _decode(frame, utc_offset=timedelta(hours=5, minutes=30))

    assert message.locations[0].time == FIX.time


# -- replies and encoder errors -----------------------------------------------------


def test_reply_location_is_none() -> None:
    message = _decode(gt06.encode_location(FIX, 5))

    answer = gt06.reply(message, now=NOW)

    assert answer is None


def test_reply_lbs_alarm_is_ack() -> None:
    message = _decode(_frame(0x19, CELL_2G + STATUS, serial=9))

    answer = gt06.reply(message, now=NOW)

    assert answer == gt06.ack(0x19, 9)


def test_reply_time_request_needs_aware_clock() -> None:
    message = _decode(gt06.ack(0x8A, 6))

    with pytest.raises(EncodeError):
        gt06.reply(message, now=datetime(2026, 1, 1))


def test_reply_rejects_other_protocol() -> None:
    message = Message(protocol="jt808", type="heartbeat", msg_id=0x0002, serial=1)

    with pytest.raises(EncodeError):
        gt06.reply(message, now=NOW)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: gt06.encode_login("35873507053028", 1), id="imei-14-digits"
        ),
        pytest.param(lambda: gt06.encode_login("35873507053028x", 1), id="imei-letter"),
        pytest.param(lambda: gt06.encode_heartbeat(70000), id="serial"),
        pytest.param(lambda: gt06.encode_heartbeat(1, voltage_level=256), id="voltage"),
        pytest.param(
            lambda: gt06.encode_location(
                Location(time=FIX.time, latitude=1.0, longitude=1.0, speed_kmh=300.0), 1
            ),
            id="speed",
        ),
        pytest.param(
            lambda: gt06.encode_location(
                Location(time=datetime(2016, 1, 1), latitude=1.0, longitude=1.0), 1
            ),
            id="naive-time",
        ),
        pytest.param(
            lambda: gt06.encode_location(FIX, 1, msg_type=0x16), id="location-type"
        ),
        pytest.param(
            lambda: gt06.encode_alarm(FIX, 1, alarm_code=1, msg_type=0x22),
            id="alarm-type",
        ),
        pytest.param(
            lambda: gt06.encode_command("Relais,1#€", server_flag=0, serial=0),
            id="non-ascii",
        ),
        pytest.param(
            lambda: gt06.encode_command("x" * 252, server_flag=0, serial=0),
            id="long-command",
        ),
        pytest.param(
            lambda: gt06.encode_command("Relay,1#", server_flag=1 << 32, serial=0),
            id="server-flag",
        ),
        pytest.param(
            lambda: gt06.encode_login(
                "358735070530281", 1, utc_offset=timedelta(seconds=30)
            ),
            id="offset-seconds",
        ),
    ],
)
def test_encoder_rejects_unencodable_value(build: object) -> None:
    assert callable(build)

    with pytest.raises(EncodeError):
        build()
