"""Property tests for the JT808 codec: round trips, stream splits, hostile input.

Every property runs a bounded number of examples (`settings` below) so the
file finishes in seconds.
"""

from __future__ import annotations

import itertools
import string
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_jt808_fix_invariants import assert_plausible_message

from postloan.protocols import jt808
from postloan.protocols.base import DecodeError, Location

BOUNDED = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
EDITIONS = st.sampled_from(["2011", "2013", "2019"])
# Item ids without a decoder, so their raw value must come back unchanged.
DECODED_ITEMS = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x11, 0x12, 0x13}
DECODED_ITEMS |= {0x14, 0x15, 0x16, 0x17, 0x18, 0x25, 0x2A, 0x2B, 0x30, 0x31}
# Message ids with a body decoder, and one without (0x0900).
DECODED_IDS: tuple[int, ...] = (
    0x0001,
    0x0002,
    0x0100,
    0x0102,
    0x0104,
    0x0107,
    0x0200,
    0x0201,
)
DECODED_IDS += (0x0500, 0x0704, 0x8001, 0x8004, 0x8100, 0x8103, 0x8105, 0x8500)
DECODED_IDS += (0x0900,)
RAW_ITEM_IDS = st.integers(1, 255).filter(lambda item_id: item_id not in DECODED_ITEMS)


def _phone(version: str) -> st.SearchStrategy[str]:
    digits = 20 if version == "2019" else 12
    return st.text("0123456789", min_size=1, max_size=digits).map(
        lambda phone: phone.rjust(digits, "0")
    )


def _ascii(max_size: int) -> st.SearchStrategy[str]:
    return st.text(string.ascii_letters + string.digits + "-", max_size=max_size)


# Whole seconds in the past, inside the 2000-2099 range of the BCD stamp at any
# UTC offset used below.
FIX_TIMES = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2020, 12, 31)
).map(lambda moment: moment.replace(microsecond=0, tzinfo=UTC))

LOCATIONS = st.builds(
    Location,
    time=FIX_TIMES,
    latitude=st.integers(-90_000_000, 90_000_000).map(lambda raw: raw / 1e6),
    longitude=st.integers(-180_000_000, 180_000_000).map(lambda raw: raw / 1e6),
    speed_kmh=st.integers(0, 3000).map(lambda raw: raw / 10),
    course=st.integers(0, 359),
    altitude_m=st.integers(-500, 8000),
    valid=st.booleans(),
    satellites=st.none() | st.integers(0, 60),
)


def _assert_same_fix(decoded: Location, sent: Location) -> None:
    assert decoded.time == sent.time
    assert decoded.latitude == pytest.approx(sent.latitude, abs=1e-6)
    assert decoded.longitude == pytest.approx(sent.longitude, abs=1e-6)
    assert decoded.speed_kmh == pytest.approx(sent.speed_kmh)
    assert decoded.course == sent.course
    assert decoded.altitude_m == sent.altitude_m
    assert decoded.valid is sent.valid
    assert decoded.satellites == sent.satellites


# Round trips -----------------------------------------------------------------


@BOUNDED
@given(data=st.data(), version=EDITIONS)
def test_register_round_trip(data: st.DataObject, version: str) -> None:
    sizes = {"2011": (5, 8, 7), "2013": (5, 20, 7), "2019": (11, 30, 30)}[version]
    fields: dict[str, Any] = {
        "province": data.draw(st.integers(0, 0xFFFF)),
        "city": data.draw(st.integers(0, 0xFFFF)),
        "maker": data.draw(_ascii(sizes[0])),
        "model": data.draw(_ascii(sizes[1])),
        "terminal_id": data.draw(_ascii(sizes[2])),
        "plate_color": data.draw(st.sampled_from([1, 2, 3, 4, 5, 9])),
        "plate": data.draw(st.sampled_from(["粤B88888", "京A12345", "沪C0000警", ""])),
    }
    phone = data.draw(_phone(version))

    message = jt808.decode(jt808.encode_register(phone, 1, version=version, **fields))

    assert message.device_id == phone
    assert message.attributes["version"] == version
    assert message.attributes["manufacturer"] == fields["maker"]
    for key in ("province", "city", "model", "terminal_id", "plate_color", "plate"):
        assert message.attributes[key] == fields[key], key


@BOUNDED
@given(data=st.data(), version=EDITIONS)
def test_auth_round_trip(data: st.DataObject, version: str) -> None:
    phone = data.draw(_phone(version))
    code = data.draw(_ascii(40))
    imei = data.draw(st.text("0123456789", min_size=15, max_size=15))
    software = data.draw(_ascii(20))

    wire = jt808.encode_auth(
        phone, 2, code, version=version, imei=imei, software_version=software
    )
    message = jt808.decode(wire)

    assert message.type == "auth"
    assert message.attributes["auth_code"] == code
    if version == "2019":
        assert message.attributes["imei"] == imei
        assert message.attributes["software_version"] == software


@BOUNDED
@given(
    data=st.data(),
    version=EDITIONS,
    location=LOCATIONS,
    alarm_flags=st.integers(0, 0xFFFF_FFFF),
    status=st.integers(0, 0xFFFF_FFFF),
    items=st.dictionaries(RAW_ITEM_IDS, st.binary(max_size=40), max_size=6),
)
def test_location_round_trip(
    data: st.DataObject,
    version: str,
    location: Location,
    alarm_flags: int,
    status: int,
    items: dict[int, bytes],
) -> None:
    phone = data.draw(_phone(version))

    wire = jt808.encode_location(
        phone,
        3,
        location,
        alarm_flags=alarm_flags,
        status=status,
        version=version,
        items=items,
    )
    message = jt808.decode(wire)

    assert_plausible_message(message)
    (decoded,) = message.locations
    _assert_same_fix(decoded, location)
    assert int(message.attributes["alarm_flags"], 16) == alarm_flags
    expected_status = status & ~0xE
    expected_status |= (2 if location.valid else 0) | (
        4 if location.latitude < 0 else 0
    )
    expected_status |= 8 if location.longitude < 0 else 0
    assert int(message.attributes["status_flags"], 16) == expected_status
    assert len(message.alarms) == alarm_flags.bit_count()
    for item_id, value in items.items():
        assert message.attributes[f"item_0x{item_id:02x}"] == value.hex()


@BOUNDED
@given(
    version=EDITIONS,
    locations=st.lists(LOCATIONS, max_size=20),
    backfill=st.booleans(),
    offset_hours=st.integers(-12, 14),
)
def test_batch_round_trip(
    version: str, locations: list[Location], backfill: bool, offset_hours: int
) -> None:
    offset = timedelta(hours=offset_hours)
    phone = "13800138000"

    wire = jt808.encode_batch(
        phone, 4, locations, backfill=backfill, version=version, utc_offset=offset
    )
    message = jt808.decode(wire, utc_offset=offset)

    assert_plausible_message(message)
    assert message.attributes["backfill"] is backfill
    assert message.attributes["count"] == len(locations)
    assert len(message.locations) == len(locations)
    for decoded, original in zip(message.locations, locations, strict=True):
        _assert_same_fix(decoded, original)


@BOUNDED
@given(
    data=st.data(),
    version=EDITIONS,
    serial=st.integers(0, 0xFFFF),
    command_word=st.integers(0, 255),
    parameters=_ascii(60),
    cut=st.booleans(),
    params=st.dictionaries(
        st.integers(0x0020, 0x002F), st.integers(0, 0xFFFF_FFFF), max_size=8
    ),
)
def test_commands_round_trip(
    data: st.DataObject,
    version: str,
    serial: int,
    command_word: int,
    parameters: str,
    cut: bool,
    params: dict[int, int],
) -> None:
    phone = data.draw(_phone(version))

    control = jt808.decode(
        jt808.encode_terminal_control(
            phone, serial, command_word, parameters, version=version
        )
    )
    vehicle = jt808.decode(
        jt808.encode_vehicle_control(phone, serial, cut=cut, version=version)
    )
    query = jt808.decode(jt808.encode_position_query(phone, serial, version=version))
    settings_message = jt808.decode(
        jt808.encode_set_parameters(phone, serial, params, version=version)
    )

    assert control.attributes["command_word"] == command_word
    assert control.attributes["parameters"] == parameters
    assert vehicle.attributes["control_flag"] == int(cut)
    assert query.type == "position_query"
    assert settings_message.attributes["parameters"] == {
        f"0x{key:04x}": value for key, value in params.items()
    }
    assert {control.serial, vehicle.serial, query.serial} == {serial}
    assert control.device_id == phone


@BOUNDED
@given(
    version=EDITIONS,
    answered_serial=st.integers(0, 0xFFFF),
    answered_id=st.integers(0, 0xFFFF),
    result=st.integers(0, 4),
)
def test_general_response_round_trip(
    version: str, answered_serial: int, answered_id: int, result: int
) -> None:
    phone = "13800138000"

    message = jt808.decode(
        jt808.encode_general_response(
            phone,
            9,
            answered_serial=answered_serial,
            answered_id=answered_id,
            result=result,
            version=version,
        )
    )

    assert message.attributes["answered_serial"] == answered_serial
    assert message.attributes["answered_id"] == f"0x{answered_id:04x}"
    assert message.attributes["result"] == result
    assert jt808.reply(message, platform_serial=1) is None


# Streams ---------------------------------------------------------------------


def _valid_stream(locations: list[Location]) -> tuple[bytes, list[bytes]]:
    frames = [
        jt808.encode_location("13800138000", serial, location)
        for serial, location in enumerate(locations)
    ]
    frames.append(jt808.encode_heartbeat("13800138000", 999))
    return b"".join(frames), frames


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


@BOUNDED
@given(
    locations=st.lists(LOCATIONS, min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
)
def test_framer_any_split_same_frames(
    locations: list[Location], cuts: list[int]
) -> None:
    stream, frames = _valid_stream(locations)
    framer = jt808.Framer()

    out: list[bytes | DecodeError] = []
    for chunk in _split(stream, cuts):
        out.extend(framer.feed(chunk))

    assert out == frames
    assert framer.buffered == 0


@BOUNDED
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
    max_frame=st.integers(15, 300),
)
def test_framer_output_independent_of_split(
    data: bytes, cuts: list[int], max_frame: int
) -> None:
    whole = jt808.Framer(max_frame)
    split = jt808.Framer(max_frame)

    expected = whole.feed(data)
    out: list[bytes | DecodeError] = []
    for chunk in _split(data, cuts):
        out.extend(split.feed(chunk))
        assert split.buffered < max_frame

    assert [_summary(item) for item in out] == [_summary(item) for item in expected]
    assert split.buffered == whole.buffered


def _summary(item: bytes | DecodeError) -> tuple[str, bytes]:
    if isinstance(item, DecodeError):
        return item.reason, item.data
    return "frame", item


FLAG_HEAVY = st.lists(
    st.sampled_from([b"\x7e", b"\x7d", b"\x7d\x01", b"\x7d\x02", b"\x00", b"\x02"])
    | st.binary(max_size=40),
    max_size=40,
).map(b"".join)


@BOUNDED
@given(chunks=st.lists(st.binary(max_size=600) | FLAG_HEAVY, max_size=20))
def test_framer_never_raises_and_stays_bounded(chunks: list[bytes]) -> None:
    framer = jt808.Framer(max_frame=256)

    for chunk in chunks:
        out = framer.feed(chunk)
        assert framer.buffered < 256
        for item in out:
            assert isinstance(item, bytes | DecodeError)
            if isinstance(item, bytes):
                assert len(item) <= 256


# Hostile input ---------------------------------------------------------------


def _decode_only_raises_decode_error(data: bytes) -> None:
    try:
        message = jt808.decode(data)
    except DecodeError as exc:
        assert exc.protocol == "jt808"
        assert exc.reason
        return
    jt808.reply(message, platform_serial=1)
    if message.type == "fragment":
        jt808.Reassembler().add(message)


@BOUNDED
@given(data=st.binary(max_size=300) | FLAG_HEAVY)
def test_decode_random_bytes_fails_cleanly(data: bytes) -> None:
    _decode_only_raises_decode_error(data)


@BOUNDED
@given(
    body=st.binary(max_size=300),
    msg_id=st.sampled_from(DECODED_IDS),
    version=EDITIONS,
)
def test_decode_random_body_fails_cleanly(
    body: bytes, msg_id: int, version: str
) -> None:
    phone = "13800138000"

    wire = jt808.frame(msg_id, phone, 1, body, version=version)

    _decode_only_raises_decode_error(wire)


@BOUNDED
@given(
    location=LOCATIONS,
    position=st.integers(0, 10_000),
    value=st.integers(0, 255),
    cut=st.integers(0, 10_000),
)
def test_decode_corrupted_or_truncated_frame(
    location: Location, position: int, value: int, cut: int
) -> None:
    wire = bytearray(jt808.encode_location("13800138000", 5, location))
    corrupted = bytearray(wire)
    corrupted[position % len(wire)] = value

    _decode_only_raises_decode_error(bytes(corrupted))
    _decode_only_raises_decode_error(bytes(wire[: cut % len(wire)]))
