"""JT808 stream framing: feeding patterns, junk, resynchronisation and size bound."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postloan.protocols import jt808
from postloan.protocols.base import DecodeError, Location

HEARTBEAT = bytes.fromhex("7e0002000000570445552900177f7e")
# A Traccar decoder-test packet printed after unescaping: two of its bytes are
# a bare 0x7E, so on the wire it splits into three pieces.
UNESCAPED = bytes.fromhex(
    "7e020000834eb6fb4af2c1010f00000800000c000b01aab48204ea7e57000801ad00b626"
    "032715524501040000045130011f310112eb095554432d30343a3030140400000001150400"
    "000004642f0000000b00040100000000002a000801aab33804ea7e54260327155245040030"
    "3037343234322603271552450b0500e81120050e200102008c0006010400070200069b7e"
)


def _location_frame(serial: int) -> bytes:
    fix = Location(
        time=datetime(2024, 5, 6, 12, 0, tzinfo=UTC), latitude=22.5, longitude=114.0
    )
    return jt808.encode_location("013800138000", serial, fix)


def _frames(out: list[bytes | DecodeError]) -> list[bytes]:
    return [item for item in out if isinstance(item, bytes)]


def _reasons(out: list[bytes | DecodeError]) -> list[str]:
    return [item.reason for item in out if isinstance(item, DecodeError)]


def test_framer_whole_frame() -> None:
    framer = jt808.Framer()

    out = framer.feed(HEARTBEAT)

    assert out == [HEARTBEAT]
    assert framer.buffered == 0


def test_framer_byte_by_byte_emits_only_at_last_byte() -> None:
    framer = jt808.Framer()
    outputs = []

    for value in HEARTBEAT:
        outputs.append(framer.feed(bytes([value])))

    assert all(out == [] for out in outputs[:-1])
    assert outputs[-1] == [HEARTBEAT]


def test_framer_keeps_start_of_next_frame() -> None:
    framer = jt808.Framer()
    following = _location_frame(7)

    out = framer.feed(HEARTBEAT + following[:5])

    assert out == [HEARTBEAT]
    assert framer.buffered == 5
    assert framer.feed(following[5:]) == [following]


def test_framer_two_frames_in_one_read() -> None:
    framer = jt808.Framer()
    second = _location_frame(8)

    out = framer.feed(HEARTBEAT + second)

    assert out == [HEARTBEAT, second]


def test_framer_reports_junk_before_frame() -> None:
    framer = jt808.Framer()
    junk = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"

    out = framer.feed(junk + HEARTBEAT)

    assert _reasons(out) == ["junk"]
    assert isinstance(out[0], DecodeError)
    assert out[0].data == junk
    assert out[1] == HEARTBEAT


def test_framer_junk_reported_at_next_flag() -> None:
    framer = jt808.Framer()

    first = framer.feed(b"\x01\x02\x03")
    second = framer.feed(HEARTBEAT)

    assert first == []
    assert _reasons(second) == ["junk"]
    assert _frames(second) == [HEARTBEAT]


def test_framer_double_flag_opens_new_frame() -> None:
    # Joining mid-stream: the first byte seen is the closing flag of a frame
    # whose start was missed, directly followed by the next frame.
    framer = jt808.Framer()

    out = framer.feed(b"\x7e" + HEARTBEAT)

    assert out == [HEARTBEAT]


def test_framer_tail_of_missed_frame_is_junk() -> None:
    framer = jt808.Framer()

    out = framer.feed(b"\x31\x32\x7e" + HEARTBEAT)

    assert _reasons(out) == ["junk"]
    assert _frames(out) == [HEARTBEAT]


def test_framer_recovers_after_unescaped_flag() -> None:
    framer = jt808.Framer()

    out = framer.feed(UNESCAPED + HEARTBEAT)

    assert out[-1] == HEARTBEAT
    pieces = _frames(out[:-1])
    assert len(pieces) == 2
    for piece in pieces:
        with pytest.raises(DecodeError):
            jt808.decode(piece)
    assert _reasons(out) == ["junk"]


def test_framer_accepts_frame_of_exactly_max_frame() -> None:
    framer = jt808.Framer(max_frame=len(HEARTBEAT))

    out = framer.feed(HEARTBEAT)

    assert out == [HEARTBEAT]


def test_framer_rejects_frame_over_max_frame() -> None:
    location = _location_frame(9)
    framer = jt808.Framer(max_frame=len(location) - 1)

    out = framer.feed(location)

    assert _reasons(out) == ["frame_too_long"]
    assert _frames(out) == []


def test_framer_recovers_after_oversize_frame() -> None:
    framer = jt808.Framer(max_frame=64)
    oversize = b"\x7e" + b"\x01" * 200 + b"\x7e"

    out = framer.feed(oversize + HEARTBEAT)

    assert _reasons(out) == ["frame_too_long"]
    assert _frames(out) == [HEARTBEAT]


def test_framer_never_buffers_max_frame() -> None:
    framer = jt808.Framer(max_frame=64)
    sizes = []

    for _ in range(50):
        framer.feed(b"\x7e" + b"\x01" * 30)
        sizes.append(framer.buffered)
        framer.feed(b"\x02" * 70)
        sizes.append(framer.buffered)

    assert max(sizes) < 64


def test_framer_reports_long_junk_without_flag() -> None:
    framer = jt808.Framer(max_frame=64)

    out = framer.feed(b"A" * 150)

    assert _reasons(out) == ["junk", "junk"]
    assert framer.buffered == 150 - 2 * 64


def test_framer_default_bound_is_max_frame() -> None:
    framer = jt808.Framer()

    out = framer.feed(b"\x7e" + b"\x01" * jt808.MAX_FRAME)

    assert _reasons(out) == ["frame_too_long"]
    assert framer.buffered == 0


def test_framer_rejects_bound_below_smallest_frame() -> None:
    with pytest.raises(ValueError):
        jt808.Framer(max_frame=10)
