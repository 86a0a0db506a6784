"""Hypothesis properties of the GT06 codec: round trips, stream splits and
robustness against random, truncated and corrupted input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gt06_invariants import assert_plausible_message, luhn_valid

from postloan.protocols import gt06
from postloan.protocols.base import DecodeError, Location
from postloan.protocols.crc import crc16_x25
from postloan.protocols.gt06_fields import ALARM_CODES, CellTower

COORDINATE_TOLERANCE = 1e-6
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def imeis(draw: st.DrawFn) -> str:
    body = draw(st.text("0123456789", min_size=14, max_size=14))
    check = next(digit for digit in "0123456789" if luhn_valid(body + digit))
    return body + check


serials = st.integers(0, 0xFFFF)
utc_offsets = st.builds(
    lambda minutes: timedelta(minutes=minutes), st.integers(-12 * 60, 14 * 60)
)
times = st.datetimes(
    min_value=datetime(2001, 1, 1),
    max_value=datetime(2025, 12, 31),
    timezones=st.just(UTC),
).map(lambda time: time.replace(microsecond=0))


@st.composite
def locations(
    draw: st.DrawFn, latitude_sign: int = 0, longitude_sign: int = 0
) -> Location:
    """Draw a fix; a nonzero sign pins the hemisphere."""
    latitude = draw(st.floats(0.0, 90.0))
    longitude = draw(st.floats(0.0, 180.0))
    latitude *= latitude_sign or draw(st.sampled_from([-1, 1]))
    longitude *= longitude_sign or draw(st.sampled_from([-1, 1]))
    return Location(
        time=draw(times),
        latitude=latitude,
        longitude=longitude,
        speed_kmh=float(draw(st.integers(0, 255))),
        course=float(draw(st.integers(0, 359))),
        valid=draw(st.booleans()),
        satellites=draw(st.integers(0, 15)),
    )


cells_2g = st.builds(
    CellTower,
    mcc=st.integers(0, 0x7FFF),
    mnc=st.integers(0, 0xFF),
    lac=st.integers(1, 0xFFFF),
    cell_id=st.integers(0, 0xFFFFFF),
)
cells_4g = st.builds(
    CellTower,
    mcc=st.integers(0, 0x7FFF),
    mnc=st.integers(0, 0xFFFF),
    lac=st.integers(1, 0xFFFFFFFF),
    cell_id=st.integers(0, 0xFFFFFFFFFFFFFFFF),
)


def _assert_same_fix(decoded: Location, sent: Location) -> None:
    assert decoded.time == sent.time
    assert decoded.latitude == pytest.approx(sent.latitude, abs=COORDINATE_TOLERANCE)
    assert decoded.longitude == pytest.approx(sent.longitude, abs=COORDINATE_TOLERANCE)
    assert decoded.speed_kmh == sent.speed_kmh
    assert decoded.course == sent.course
    assert decoded.valid == sent.valid
    assert decoded.satellites == sent.satellites


def _cell_dict(cell: CellTower) -> dict[str, int]:
    return {"mcc": cell.mcc, "mnc": cell.mnc, "lac": cell.lac, "cell_id": cell.cell_id}


# -- round trips ---------------------------------------------------------------


@SETTINGS
@given(
    imei=imeis(),
    serial=serials,
    offset=st.none() | utc_offsets,
    language=st.integers(0, 3),
)
def test_login_round_trip(
    imei: str, serial: int, offset: timedelta | None, language: int
) -> None:
    frame = gt06.encode_login(imei, serial, utc_offset=offset, language=language)

    message = gt06.decode(frame)

    assert_plausible_message(message)
    assert message.device_id == imei
    assert message.serial == serial
    assert gt06.login_utc_offset(message) == offset
    assert gt06.reply(message, now=datetime.now(UTC)) == gt06.ack(0x01, serial)


@SETTINGS
@given(
    location=locations(),
    serial=serials,
    msg_type=st.sampled_from([0x10, 0x12, 0x22, 0xA0]),
    offset=utc_offsets,
    acc=st.none() | st.booleans(),
    reupload=st.booleans(),
)
def test_location_round_trip(
    location: Location,
    serial: int,
    msg_type: int,
    offset: timedelta,
    acc: bool | None,
    reupload: bool,
) -> None:
    frame = gt06.encode_location(
        location,
        serial,
        msg_type=msg_type,
        utc_offset=offset,
        acc=acc,
        reupload=reupload,
    )

    message = gt06.decode(frame, utc_offset=offset)

    assert_plausible_message(message)
    assert message.type == "location"
    _assert_same_fix(message.locations[0], location)
    if acc is not None:
        assert message.attributes["acc"] == acc
    if msg_type in (0x22, 0xA0):
        assert message.attributes["reupload"] == reupload


HEMISPHERES = [
    pytest.param(1, 1, id="north-east"),
    pytest.param(1, -1, id="north-west"),
    pytest.param(-1, 1, id="south-east"),
    pytest.param(-1, -1, id="south-west"),
]


@pytest.mark.parametrize(("latitude_sign", "longitude_sign"), HEMISPHERES)
def test_location_round_trip_hemisphere(
    latitude_sign: int, longitude_sign: int
) -> None:
    @SETTINGS
    @given(location=locations(latitude_sign, longitude_sign), cell=cells_2g)
    def check(location: Location, cell: CellTower) -> None:
        frame = gt06.encode_location(location, 1, msg_type=0x12, cell=cell)

        message = gt06.decode(frame)

        _assert_same_fix(message.locations[0], location)
        assert message.attributes["cells"] == [_cell_dict(cell)]

    check()


@SETTINGS
@given(location=locations(), cell=cells_4g, mileage=st.integers(0, 0xFFFFFFFF))
def test_location_4g_round_trip(
    location: Location, cell: CellTower, mileage: int
) -> None:
    frame = gt06.encode_location(location, 2, msg_type=0xA0, cell=cell, mileage=mileage)

    message = gt06.decode(frame)

    assert message.attributes["cells"] == [_cell_dict(cell)]
    assert message.attributes["mileage"] == mileage


@SETTINGS
@given(
    serial=serials,
    terminal_info=st.integers(0, 0xFF),
    voltage_level=st.integers(0, 6),
    gsm_signal=st.integers(0, 4),
    alarm=st.integers(0, 0xFF),
    language=st.integers(0, 0xFF),
)
def test_heartbeat_round_trip(
    serial: int,
    terminal_info: int,
    voltage_level: int,
    gsm_signal: int,
    alarm: int,
    language: int,
) -> None:
    frame = gt06.encode_heartbeat(
        serial,
        terminal_info=terminal_info,
        voltage_level=voltage_level,
        gsm_signal=gsm_signal,
        alarm=alarm,
        language=language,
    )

    message = gt06.decode(frame)

    assert_plausible_message(message)
    assert message.type == "heartbeat"
    assert message.attributes["terminal_info"] == terminal_info
    assert message.attributes["voltage_level"] == voltage_level
    assert message.attributes["gsm_signal"] == gsm_signal
    assert message.attributes["alarm_code"] == alarm
    assert message.attributes["oil_cut"] == bool(terminal_info & 0x80)
    assert gt06.reply(message, now=datetime.now(UTC)) == gt06.ack(0x13, serial)


@SETTINGS
@given(
    location=locations(),
    serial=serials,
    code=st.sampled_from(sorted(ALARM_CODES)),
    msg_type=st.sampled_from([0x16, 0x26, 0x27, 0xA4]),
    fence=st.none() | st.integers(0, 0xFE),
    offset=utc_offsets,
)
def test_alarm_round_trip(
    location: Location,
    serial: int,
    code: int,
    msg_type: int,
    fence: int | None,
    offset: timedelta,
) -> None:
    frame = gt06.encode_alarm(
        location,
        serial,
        alarm_code=code,
        msg_type=msg_type,
        fence_number=fence,
        utc_offset=offset,
    )

    message = gt06.decode(frame, utc_offset=offset)

    assert_plausible_message(message)
    assert message.alarms == (ALARM_CODES[code],)
    _assert_same_fix(message.locations[0], location)
    if msg_type in (0x27, 0xA4):
        assert message.attributes["fence_number"] == fence
    assert gt06.reply(message, now=datetime.now(UTC)) == gt06.ack(msg_type, serial)


command_texts = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=200
)


@SETTINGS
@given(
    text=command_texts,
    server_flag=st.integers(0, 0xFFFFFFFF),
    serial=serials,
    language=st.none() | st.integers(0, 0xFFFF),
)
def test_command_round_trip(
    text: str, server_flag: int, serial: int, language: int | None
) -> None:
    frame = gt06.encode_command(
        text, server_flag=server_flag, serial=serial, language=language
    )

    message = gt06.decode(frame)

    assert message.type == "command"
    assert message.attributes["text"] == text
    assert message.attributes["server_flag"] == server_flag
    assert message.attributes.get("language") == language


@SETTINGS
@given(
    text=st.text(min_size=1, max_size=300),
    server_flag=st.integers(0, 0xFFFFFFFF),
    serial=serials,
)
def test_command_response_0x21_round_trip(
    text: str, server_flag: int, serial: int
) -> None:
    frame = gt06.encode_command_response(server_flag, text, serial)

    message = gt06.decode(frame)

    assert message.type == "command_response"
    assert message.attributes["text"] == text
    assert message.attributes["server_flag"] == server_flag
    assert gt06.reply(message, now=datetime.now(UTC)) is None


@SETTINGS
@given(text=command_texts, server_flag=st.integers(0, 0xFFFFFFFF), serial=serials)
def test_command_response_0x15_round_trip(
    text: str, server_flag: int, serial: int
) -> None:
    frame = gt06.encode_command_response(server_flag, text[:200], serial, msg_type=0x15)

    message = gt06.decode(frame)

    assert message.attributes["text"] == text[:200]
    assert message.attributes["server_flag"] == server_flag


# -- stream splits ----------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """Draw 1-8 valid frames of mixed types."""
    builders = st.one_of(
        st.builds(lambda s: gt06.encode_heartbeat(s), serials),
        st.builds(lambda i, s: gt06.encode_login(i, s), imeis(), serials),
        st.builds(lambda loc, s: gt06.encode_location(loc, s), locations(), serials),
        st.builds(
            lambda loc, s: gt06.encode_alarm(loc, s, alarm_code=2, msg_type=0xA4),
            locations(),
            serials,
        ),
        st.builds(
            lambda t, s: gt06.encode_command_response(1, t, s),
            st.text(max_size=600),
            serials,
        ),
    )
    return draw(st.lists(builders, min_size=1, max_size=8))


@SETTINGS
@given(frames=streams(), data=st.data())
def test_framer_any_split_gives_same_frames(
    frames: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [
        stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)
    ]
    framer = gt06.Framer(max_frame=2048)

    items = [item for chunk in chunks for item in framer.feed(chunk)]

    assert items == frames
    assert framer.buffered == 0


# -- robustness ---------------------------------------------------------------------


@SETTINGS
@given(data=st.binary(max_size=600))
def test_decode_random_bytes_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        gt06.decode(data)


@SETTINGS
@given(data=st.binary(max_size=300).map(lambda body: _with_valid_envelope(body)))
def test_decode_valid_crc_random_content(
    data: bytes,
) -> None:
    with contextlib.suppress(DecodeError):
        gt06.decode(data)


def _with_valid_envelope(body: bytes) -> bytes:
    """Wrap random protocol number, content and serial in a correct envelope."""
    if len(body) < 3:
        body = body + bytes(3 - len(body))
    length = len(body) + 2
    if length <= 0xFF:
        covered = bytes((length,)) + body
        start = b"\x78\x78"
    else:
        covered = length.to_bytes(2) + body
        start = b"\x79\x79"
    return start + covered + crc16_x25(covered).to_bytes(2) + b"\r\n"


@SETTINGS
@given(frames=streams(), data=st.data())
def test_decode_truncated_frame_raises_decode_error(
    frames: list[bytes], data: st.DataObject
) -> None:
    frame = frames[0]
    cut = data.draw(st.integers(0, len(frame) - 1))

    with pytest.raises(DecodeError):
        gt06.decode(frame[:cut])


@SETTINGS
@given(frames=streams(), data=st.data())
def test_decode_bit_flip_raises_decode_error(
    frames: list[bytes], data: st.DataObject
) -> None:
    frame = bytearray(frames[0])
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)

    with pytest.raises(DecodeError):
        gt06.decode(bytes(frame))


@SETTINGS
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=30),
    max_frame=st.integers(10, 1024),
)
def test_framer_random_input_never_raises_or_overflows(
    chunks: list[bytes], max_frame: int
) -> None:
    framer = gt06.Framer(max_frame=max_frame)

    for chunk in chunks:
        items = framer.feed(chunk)

        assert framer.buffered <= max_frame
        for item in items:
            assert isinstance(item, (bytes, DecodeError))


@SETTINGS
@given(
    frames=streams(),
    noise=st.lists(st.binary(min_size=1, max_size=40), max_size=6),
    data=st.data(),
)
def test_framer_recovers_frames_after_noise(
    frames: list[bytes], noise: list[bytes], data: st.DataObject
) -> None:
    # Noise without marker bytes cannot hide a frame, so every frame comes out.
    cleaned = [chunk.replace(b"\x78", b"").replace(b"\x79", b"") for chunk in noise]
    parts: list[bytes] = []
    for frame in frames:
        parts.append(data.draw(st.sampled_from(cleaned or [b""])))
        parts.append(frame)
    framer = gt06.Framer(max_frame=2048)

    items = framer.feed(b"".join(parts))

    assert [item for item in items if isinstance(item, bytes)] == frames
