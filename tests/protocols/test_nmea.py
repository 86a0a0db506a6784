"""Tests of the NMEA 0183 codec against the vendored gpsd logs and built sentences."""

from __future__ import annotations

import functools
import operator
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postloan.protocols import nmea
from postloan.protocols.base import DecodeError, Message

NMEA_DIR = Path(nmea.__file__).resolve().parent.parent / "data" / "nmea"
BT451 = NMEA_DIR / "bt451.log"
COLDBOOT = NMEA_DIR / "gp-320fw-2019-04-07-coldboot.log"

# gpsd's expected output for bt451.log (the TPV reports in test/daemon/bt451.log.chk
# of ntpsec/gpsd at commit 46977faa8f94eb036ca68c24a3fc0d233732e707): one row per
# RMC that gpsd reported, as (time UTC, lat, lon, speed m/s, track deg, alt m).
# The RMCs at 15:25:08.5 and 14:33:08.5 end their sections and have no TPV.
BT451_TPV = [
    ("2009-12-09T15:25:05.000+00:00", 55.797018833, 23.569021667, 0.130, None, 37.0),
    ("2009-12-09T15:25:05.500+00:00", 55.797019833, 23.569020667, 0.136, None, 36.7),
    ("2009-12-09T15:25:06.000+00:00", 55.797021000, 23.569019500, 0.175, None, 36.5),
    ("2009-12-09T15:25:06.500+00:00", 55.797022000, 23.569018833, 0.173, None, 36.2),
    ("2009-12-09T15:25:07.000+00:00", 55.797023167, 23.569017500, 0.191, 16.99, 36.0),
    ("2009-12-09T15:25:07.500+00:00", 55.797024167, 23.569016333, 0.159, None, 35.7),
    ("2009-12-09T15:25:08.000+00:00", 55.797025000, 23.569015333, 0.159, None, 35.5),
    (
        "2009-12-09T14:33:06.500+00:00",
        55.780497167,
        23.578687167,
        15.600,
        221.16,
        128.9,
    ),
    (
        "2009-12-09T14:33:07.000+00:00",
        55.780441500,
        23.578604167,
        15.876,
        221.48,
        128.1,
    ),
    (
        "2009-12-09T14:33:07.500+00:00",
        55.780385667,
        23.578519667,
        16.128,
        221.51,
        127.5,
    ),
    (
        "2009-12-09T14:33:08.000+00:00",
        55.780329167,
        23.578434000,
        16.462,
        221.54,
        127.1,
    ),
]


def with_checksum(body: str) -> bytes:
    checksum = functools.reduce(operator.xor, body.encode("latin-1"), 0)
    return f"${body}*{checksum:02X}".encode("latin-1")


def decode_log(path: Path) -> tuple[list[Message], Counter[str]]:
    """Decode every line of a log; return the messages and the error reasons."""
    messages: list[Message] = []
    errors: Counter[str] = Counter()
    for item in nmea.Framer().feed(path.read_bytes()):
        if isinstance(item, DecodeError):
            errors[item.reason] += 1
            continue
        try:
            messages.append(nmea.decode(item))
        except DecodeError as exc:
            errors[exc.reason] += 1
    return messages, errors


def combined_locations(messages: list[Message]) -> list[Message]:
    combiner = nmea.FixCombiner()
    finished = [combiner.add(message) for message in messages]
    finished.append(combiner.flush())
    return [message for message in finished if message is not None]


# --- Framer -------------------------------------------------------------------


def test_framer_whole_stream_splits_lines() -> None:
    framer = nmea.Framer()

    items = framer.feed(b"$GPTXT,1*00\r\n#note\n12345678\n")

    assert items == [b"$GPTXT,1*00", b"#note", b"12345678"]
    assert framer.buffered == 0


def test_framer_byte_by_byte_emits_at_newline() -> None:
    framer = nmea.Framer()
    stream = b"$GPGGA,1,2*00\r\n"

    early = [framer.feed(stream[i : i + 1]) for i in range(len(stream) - 1)]
    last = framer.feed(stream[-1:])

    assert all(items == [] for items in early)
    assert last == [b"$GPGGA,1,2*00"]


def test_framer_keeps_start_of_next_line() -> None:
    framer = nmea.Framer()

    items = framer.feed(b"$GPZDA,1*00\r\n$GPRM")

    assert items == [b"$GPZDA,1*00"]
    assert framer.buffered == len(b"$GPRM")


def test_framer_skips_empty_lines() -> None:
    framer = nmea.Framer()

    items = framer.feed(b"\r\n\n$GPZDA*00\n\r\n")

    assert items == [b"$GPZDA*00"]


def test_framer_long_line_is_error_then_resyncs() -> None:
    framer = nmea.Framer(max_line=16)
    stream = b"$" + b"A" * 40 + b"\r\n$GPZDA*00\r\n"

    items = framer.feed(stream)

    assert len(items) == 2
    assert isinstance(items[0], DecodeError)
    assert items[0].reason == "line_too_long"
    assert items[1] == b"$GPZDA*00"


def test_framer_long_line_byte_by_byte_bounded() -> None:
    framer = nmea.Framer(max_line=16)
    stream = b"$" + b"A" * 40 + b"\r\n$GPZDA*00\r\n"
    items: list[bytes | DecodeError] = []
    sizes = []

    for i in range(len(stream)):
        items += framer.feed(stream[i : i + 1])
        sizes.append(framer.buffered)

    assert max(sizes) <= 17
    assert [type(item) for item in items] == [DecodeError, bytes]
    assert items[1] == b"$GPZDA*00"


def test_framer_line_of_max_length_with_crlf_passes() -> None:
    framer = nmea.Framer(max_line=8)

    items = framer.feed(b"12345678\r")
    items += framer.feed(b"\n")

    assert items == [b"12345678"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.binary(max_size=40) | st.sampled_from([b"\n", b"\r\n", b"$GPRMC,", b"*"]),
        max_size=30,
    ),
    st.data(),
)
def test_framer_any_split_gives_same_items(
    chunks: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(chunks)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    pieces = [
        stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)
    ]
    whole = nmea.Framer(max_line=32)
    split = nmea.Framer(max_line=32)

    expected = whole.feed(stream)
    actual: list[bytes | DecodeError] = []
    for piece in pieces:
        actual += split.feed(piece)
        assert split.buffered <= 33

    assert [item if isinstance(item, bytes) else item.reason for item in actual] == [
        item if isinstance(item, bytes) else item.reason for item in expected
    ]


# --- decode: single sentences -------------------------------------------------------


def test_decode_rmc_location() -> None:
    line = b"$GPRMC,143307.00,A,5546.82649,N,02334.71625,E,30.860,221.48,091209,,,A*5D"

    message = nmea.decode(line)

    assert message.protocol == "nmea"
    assert message.type == "location"
    assert len(message.locations) == 1
    location = message.locations[0]
    assert location.time == datetime(2009, 12, 9, 14, 33, 7, tzinfo=UTC)
    assert location.latitude == pytest.approx(55 + 46.82649 / 60, abs=1e-9)
    assert location.longitude == pytest.approx(23 + 34.71625 / 60, abs=1e-9)
    assert location.speed_kmh == pytest.approx(30.860 * 1.852)
    assert location.course == pytest.approx(221.48)
    assert location.valid is True
    assert message.attributes["time_of_day"] == "14:33:07.000"


def test_decode_rmc_south_west() -> None:
    line = with_checksum("GNRMC,010203,A,3356.1234,S,07012.5000,W,0.0,,010124,,,A")

    location = nmea.decode(line).locations[0]

    assert location.latitude == pytest.approx(-(33 + 56.1234 / 60))
    assert location.longitude == pytest.approx(-(70 + 12.5 / 60))
    assert location.course is None


def test_decode_rmc_void_is_invalid_location() -> None:
    line = b"$GPRMC,235948.00,V,0000.0000,N,00000.0000,E,,,161206,,,N*45"

    message = nmea.decode(line)

    assert message.type == "location"
    assert message.locations[0].valid is False
    assert message.locations[0].time == datetime(2006, 12, 16, 23, 59, 48, tzinfo=UTC)


def test_decode_rmc_mode_n_invalid() -> None:
    line = with_checksum("GPRMC,120000,A,4807.0380,N,01131.0000,E,0.0,0.0,070419,,,N")

    location = nmea.decode(line).locations[0]

    assert location.valid is False


def test_decode_rmc_without_fix_has_no_location() -> None:
    message = nmea.decode(b"$GPRMC,,V,,,,,,,,,,N*53")

    assert message.type == "location"
    assert message.locations == ()
    assert message.attributes["status"] == "V"


def test_decode_rmc_without_date_has_no_location() -> None:
    line = with_checksum("GPRMC,000343.03,A,4808.9993,N,01135.0798,E,0.1,0.0,,,,A")

    message = nmea.decode(line)

    assert message.locations == ()


def test_decode_gga_fix_attributes() -> None:
    line = b"$GPGGA,152505.00,5547.82113,N,02334.14130,E,1,04,2.72,37.0,M,26.9,M,,*6B"

    message = nmea.decode(line)

    assert message.type == "fix"
    assert message.attributes["time_of_day"] == "15:25:05.000"
    assert message.attributes["satellites"] == 4
    assert message.attributes["altitude_m"] == 37.0
    assert message.attributes["fix_quality"] == 1


def test_decode_gga_without_fix() -> None:
    message = nmea.decode(b"$GPGGA,,,,,,0,00,99.99,,,,,,*48")

    assert message.attributes["time_of_day"] is None
    assert message.attributes["satellites"] == 0
    assert message.attributes["altitude_m"] is None
    assert message.attributes["fix_quality"] == 0


@pytest.mark.parametrize(
    ("line", "talker", "sentence"),
    [
        (b"$GPGSV,1,1,00*79", "GP", "GSV"),
        (b"$GPVTG,,,,,,,,,N*30", "GP", "VTG"),
        (with_checksum("PLCS,REV,PLN012054S07,070312,145743"), None, "PLCS"),
        (with_checksum("GNSNRSTAT,1,2"), "GN", "SNRSTAT"),
    ],
)
def test_decode_other_sentence_type(
    line: bytes, talker: str | None, sentence: str
) -> None:
    message = nmea.decode(line)

    assert message.type == "other"
    assert message.attributes["talker"] == talker
    assert message.attributes["sentence"] == sentence


def test_decode_comment_line() -> None:
    message = nmea.decode(b"# Name: BT-451\r\n")

    assert message.type == "comment"
    assert message.attributes["text"] == "Name: BT-451"


def test_decode_identification_line_is_login() -> None:
    message = nmea.decode(b"358735070530281\r\n")

    assert message.type == "login"
    assert message.device_id == "358735070530281"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"$GPRMC,000344.03,A,4808.9992,N,4,02.3*05", "checksum_mismatch"),
        (b"$GPRMC,,V,,,,,,,,,,N*54", "checksum_mismatch"),
        (b"$PLCS,REV,PLN012054S07,070312,145743", "missing_checksum"),
        (b"$GPRMC,000346.03,A,4808" + b"\x00" * 12 + b" " * 18, "missing_checksum"),
        (b"$GPGSA,A,1,,,,,,,,,,,,,,,*1E0,*4E", "invalid_sentence"),
        (b",,,,,,,,,,,,,*1E", "invalid_start"),
        (b"1234567", "invalid_start"),
        (
            with_checksum("GPRMC,120000,A,4867.0000,N,01131.0000,E,0,0,070419,,,A"),
            "invalid_sentence",
        ),
        (
            with_checksum("GPRMC,120000,A,4807.0000,X,01131.0000,E,0,0,070419,,,A"),
            "invalid_sentence",
        ),
        (
            with_checksum("GPRMC,250000,A,4807.0000,N,01131.0000,E,0,0,070419,,,A"),
            "invalid_sentence",
        ),
        (
            with_checksum("GPRMC,120000,A,4807.0000,N,01131.0000,E,fast,0,070419,,,A"),
            "invalid_sentence",
        ),
        (
            with_checksum("GPRMC,120000,A,4807.0000,N,01131.0000,E,0,0,320419,,,A"),
            "invalid_sentence",
        ),
        (
            with_checksum("GPGGA,120000,4807.0,N,01131.0,E,1,x4,1.0,5.0,M,,M,,"),
            "invalid_sentence",
        ),
        (with_checksum("GP\x01RMC,1"), "invalid_sentence"),
    ],
)
def test_decode_rejects_bad_line(line: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        nmea.decode(line)

    assert caught.value.reason == reason
    assert caught.value.protocol == "nmea"


# --- decode: vendored gpsd logs -----------------------------------------------------


def test_decode_bt451_counts() -> None:
    messages, errors = decode_log(BT451)

    kinds = Counter(message.type for message in messages)
    assert errors == Counter()
    assert kinds["location"] == 17
    assert kinds["fix"] == 17
    assert sum(1 for m in messages if m.type == "location" and not m.locations) == 4


def test_decode_bt451_matches_gpsd_tpv() -> None:
    messages, _ = decode_log(BT451)
    by_time = {
        message.locations[0].time.isoformat(timespec="milliseconds"): message
        for message in combined_locations(messages)
    }

    for moment, latitude, longitude, speed_ms, track, altitude in BT451_TPV:
        location = by_time[moment].locations[0]
        assert location.latitude == pytest.approx(latitude, abs=1e-8), moment
        assert location.longitude == pytest.approx(longitude, abs=1e-8), moment
        assert location.speed_kmh / 3.6 == pytest.approx(speed_ms, abs=1e-3), moment
        assert location.course == (None if track is None else pytest.approx(track))
        assert location.altitude_m == pytest.approx(altitude), moment
        assert location.valid is True


def test_decode_bt451_merges_gga_satellites() -> None:
    messages, _ = decode_log(BT451)

    locations = [message.locations[0] for message in combined_locations(messages)]

    assert len(locations) == 13
    assert [location.satellites for location in locations[:8]] == [4] * 8
    assert [location.satellites for location in locations[8:12]] == [9] * 4
    assert locations[12].satellites is None


def test_decode_coldboot_errors_by_reason() -> None:
    messages, errors = decode_log(COLDBOOT)

    assert errors == Counter(
        checksum_mismatch=35, missing_checksum=5, invalid_sentence=6, invalid_start=2
    )
    assert sum(len(message.locations) for message in messages) == 12


def test_decode_coldboot_only_decode_errors_escape() -> None:
    lines = [line for line in COLDBOOT.read_bytes().split(b"\n") if line.strip()]
    outcomes: Counter[str] = Counter()

    for line in lines:
        try:
            nmea.decode(line)
            outcomes["message"] += 1
        except DecodeError:
            outcomes["decode_error"] += 1

    assert outcomes["decode_error"] == 48
    assert outcomes["message"] == len(lines) - 48


def test_decode_coldboot_void_and_rollover_dates() -> None:
    messages, _ = decode_log(COLDBOOT)

    locations = [loc for message in messages for loc in message.locations]

    assert locations[0].time == datetime(2019, 4, 7, 0, 3, 45, 30000, tzinfo=UTC)
    assert locations[0].valid is True
    assert all(not location.valid for location in locations[1:])
    assert locations[-1].time.date().isoformat() == "1999-08-22"


def test_decode_coldboot_byte_by_byte_same_as_whole() -> None:
    data = COLDBOOT.read_bytes()
    whole = nmea.Framer().feed(data)
    framer = nmea.Framer()

    split = [item for i in range(len(data)) for item in framer.feed(data[i : i + 1])]

    assert split == whole


# --- FixCombiner --------------------------------------------------------------

RMC_T1 = with_checksum("GPRMC,100000.00,A,4807.0000,N,01131.0000,E,1.0,90.0,070419,,,A")
GGA_T1 = with_checksum("GPGGA,100000.00,4807.0000,N,01131.0000,E,1,07,1.0,512.5,M,,M,,")
RMC_T2 = with_checksum("GPRMC,100001.00,A,4807.0010,N,01131.0000,E,1.0,90.0,070419,,,A")
GGA_T2 = with_checksum("GPGGA,100001.00,4807.0010,N,01131.0000,E,1,08,1.0,513.0,M,,M,,")


def run_combiner(lines: list[bytes]) -> list[Message]:
    return combined_locations([nmea.decode(line) for line in lines])


def test_fix_combiner_rmc_then_gga() -> None:
    finished = run_combiner([RMC_T1, GGA_T1, RMC_T2, GGA_T2])

    assert [m.locations[0].satellites for m in finished] == [7, 8]
    assert [m.locations[0].altitude_m for m in finished] == [512.5, 513.0]


def test_fix_combiner_gga_then_rmc() -> None:
    finished = run_combiner([GGA_T1, RMC_T1, GGA_T2, RMC_T2])

    assert [m.locations[0].satellites for m in finished] == [7, 8]
    assert finished[0].attributes["fix_quality"] == 1


def test_fix_combiner_rmc_without_gga_passes() -> None:
    finished = run_combiner([RMC_T1, RMC_T2, GGA_T2])

    assert [m.locations[0].satellites for m in finished] == [None, 8]


def test_fix_combiner_returns_after_other_fix_gga() -> None:
    combiner = nmea.FixCombiner()

    first = combiner.add(nmea.decode(RMC_T1))
    second = combiner.add(nmea.decode(GGA_T2))

    assert first is None
    assert second is not None
    assert second.locations[0].satellites is None
    assert combiner.flush() is None


def test_fix_combiner_ignores_other_messages() -> None:
    combiner = nmea.FixCombiner()

    result = combiner.add(nmea.decode(b"$GPGSV,1,1,00*79"))

    assert result is None


# --- robustness ---------------------------------------------------------------

FIELD_TEXT = st.text(alphabet="0123456789.,-+NSEWAVMX*$ ", max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_decode_random_bytes_only_decode_error(line: bytes) -> None:
    try:
        message = nmea.decode(line)
    except DecodeError:
        return

    assert isinstance(message, Message)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["GPRMC", "GNRMC", "GPGGA", "BDGGA"]),
    st.lists(FIELD_TEXT, max_size=14),
)
def test_decode_checksummed_garbage_only_decode_error(
    address: str, fields: list[str]
) -> None:
    line = with_checksum(",".join([address, *fields]))

    try:
        message = nmea.decode(line)
    except DecodeError:
        return

    for location in message.locations:
        assert -90 <= location.latitude <= 90
        assert -180 <= location.longitude <= 180
        assert location.time.tzinfo is UTC
