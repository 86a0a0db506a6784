"""GT06 Framer: every frame fed whole, byte by byte and followed by the next
frame's start; the max-frame bound and the resynchronisation rule."""

from __future__ import annotations

import pytest

from postloan.protocols import gt06
from postloan.protocols.base import DecodeError
from postloan.protocols.gt06_frame import MIN_FRAME, build_frame

LOGIN = bytes.fromhex("78780d010358735070530281007718630d0a")
HEARTBEAT = bytes.fromhex("78780a13050604000200780b410d0a")
GPS = bytes.fromhex(
    "78781f1210020e141613cc0472ab50003c0a7a4b1486000000000000000004ac36680d0a"
)
LONG_INFO = bytes.fromhex(
    "79790020940a035160808482034403340201998760788952020617251318615f000253a60d0a"
)
WIFI_0x69 = bytes.fromhex(
    "787800691709261259400700cc0400d376714600d37a3d5000d37a3c5000d393505a"
    "00d3765d5a00d376735a00d32e6b640d0a"
)
WIFI_0x17 = bytes.fromhex(
    "787808171709281135331491827b75594dc8d719a9708452cad719a9708550cad719a970"
    "86521491827b75574cac9e17b308085dc8d71939633947cad71939633a480700cc0400d3"
    "7a3d5a00d37a3d5a00d37a3d5a00d37a3d5a00d37a3d5a00d37a3d5a00d37a3d5a0d0a"
)
LYING_HEARTBEAT = bytes.fromhex("787808134606020002044dc5050d0a")
FRAMES = [
    pytest.param(LOGIN, id="login"),
    pytest.param(HEARTBEAT, id="heartbeat"),
    pytest.param(GPS, id="gps"),
    pytest.param(LONG_INFO, id="long-frame"),
    pytest.param(WIFI_0x69, id="wifi-0x69"),
    pytest.param(WIFI_0x17, id="wifi-0x17"),
]


def _frames(items: list[bytes | DecodeError]) -> list[bytes]:
    return [item for item in items if isinstance(item, bytes)]


def _reasons(items: list[bytes | DecodeError]) -> list[str]:
    return [item.reason for item in items if isinstance(item, DecodeError)]


# -- three ways to feed one frame ----------------------------------------------


@pytest.mark.parametrize("frame", FRAMES)
def test_framer_whole_frame(frame: bytes) -> None:
    framer = gt06.Framer()

    items = framer.feed(frame)

    assert items == [frame]
    assert framer.buffered == 0


@pytest.mark.parametrize("frame", FRAMES)
def test_framer_byte_by_byte_nothing_before_last_byte(frame: bytes) -> None:
    framer = gt06.Framer()

    early = [framer.feed(frame[i : i + 1]) for i in range(len(frame) - 1)]
    last = framer.feed(frame[-1:])

    assert all(items == [] for items in early)
    assert last == [frame]


@pytest.mark.parametrize("frame", FRAMES)
def test_framer_keeps_start_of_next_frame(frame: bytes) -> None:
    framer = gt06.Framer()
    next_start = HEARTBEAT[:5]

    items = framer.feed(frame + next_start)

    assert items == [frame]
    assert framer.buffered == len(next_start)


def test_framer_completes_buffered_next_frame() -> None:
    framer = gt06.Framer()
    framer.feed(GPS + HEARTBEAT[:5])

    items = framer.feed(HEARTBEAT[5:])

    assert items == [HEARTBEAT]


def test_framer_many_frames_in_one_read() -> None:
    stream = LOGIN + HEARTBEAT + GPS + LONG_INFO + WIFI_0x69 + HEARTBEAT
    framer = gt06.Framer()

    items = framer.feed(stream)

    assert items == [LOGIN, HEARTBEAT, GPS, LONG_INFO, WIFI_0x69, HEARTBEAT]


def test_framer_empty_read_returns_nothing() -> None:
    framer = gt06.Framer()
    framer.feed(GPS[:7])

    items = framer.feed(b"")

    assert items == []
    assert framer.buffered == 7


def test_framer_lone_marker_byte_is_kept() -> None:
    framer = gt06.Framer()

    items = framer.feed(b"\x78")

    assert items == []
    assert framer.buffered == 1


# -- the max-frame bound ---------------------------------------------------------


def test_framer_rejects_frame_longer_than_max_frame() -> None:
    big = build_frame(0x94, bytes(100), 1, long_frame=True)
    framer = gt06.Framer(max_frame=64)

    items = framer.feed(big[:10])

    assert _reasons(items) == ["frame_too_long"]
    assert framer.buffered <= 64


def test_framer_accepts_frame_of_exactly_max_frame() -> None:
    frame = build_frame(0x94, bytes(54), 1, long_frame=True)
    framer = gt06.Framer(max_frame=len(frame))

    items = framer.feed(frame)

    assert items == [frame]


def test_framer_declared_length_above_bound_not_buffered() -> None:
    framer = gt06.Framer(max_frame=128)
    header = bytes.fromhex("7979ffff94")

    items = framer.feed(header + bytes(500))

    assert _reasons(items)[0] == "frame_too_long"
    assert framer.buffered <= 128


def test_framer_junk_never_buffered() -> None:
    framer = gt06.Framer(max_frame=64)

    for _ in range(100):
        framer.feed(b"GET / HTTP/1.1\r\n" * 10)

    assert framer.buffered <= 1


def test_framer_rejects_max_frame_below_smallest_frame() -> None:
    with pytest.raises(ValueError, match="smallest frame"):
        gt06.Framer(max_frame=MIN_FRAME - 1)


# -- resynchronisation --------------------------------------------------------------


def test_framer_junk_before_frame_is_one_error() -> None:
    framer = gt06.Framer()

    items = framer.feed(b"GET / HTTP/1.1\r\n\r\n" + HEARTBEAT)

    assert _reasons(items) == ["junk"]
    assert _frames(items) == [HEARTBEAT]


def test_framer_junk_run_one_error() -> None:
    framer = gt06.Framer()
    junk = b"SSH-2.0-OpenSSH_9.6\r\n"

    items = [item for byte in junk for item in framer.feed(bytes((byte,)))]
    items += framer.feed(HEARTBEAT)

    assert _reasons(items) == ["junk"]
    assert _frames(items) == [HEARTBEAT]


def test_framer_junk_error_has_stream_offset() -> None:
    framer = gt06.Framer()
    framer.feed(HEARTBEAT)

    items = framer.feed(b"\x00\x01" + GPS)

    error = items[0]
    assert isinstance(error, DecodeError)
    assert error.offset == len(HEARTBEAT)
    assert error.data == b"\x00\x01"


def test_framer_lying_length_byte_is_rejected() -> None:
    framer = gt06.Framer()

    items = framer.feed(LYING_HEARTBEAT + HEARTBEAT)

    assert _reasons(items) == ["bad_stop_bytes", "junk"]
    assert _frames(items) == [HEARTBEAT]


def test_framer_same_errors_whole_and_byte_by_byte() -> None:
    stream = b"\x00junk" + LYING_HEARTBEAT + GPS + b"\xff\xfe" + HEARTBEAT
    whole = gt06.Framer().feed(stream)
    framer = gt06.Framer()

    split = [
        item for i in range(len(stream)) for item in framer.feed(stream[i : i + 1])
    ]

    assert _reasons(split) == _reasons(whole)
    assert _frames(split) == _frames(whole)


def test_framer_finds_frame_inside_rejected_candidate() -> None:
    # 78 78 1f: a false start whose declared frame swallows the heartbeat.
    false_start = bytes.fromhex("78781f12")
    framer = gt06.Framer()

    items = framer.feed(false_start + HEARTBEAT + GPS)

    assert _reasons(items) == ["bad_stop_bytes"]
    assert _frames(items) == [HEARTBEAT, GPS]


def test_framer_stray_marker_byte_delays_but_keeps_frame() -> None:
    framer = gt06.Framer()
    first = framer.feed(b"\x78" + HEARTBEAT)

    later = framer.feed(GPS * 4)

    assert first == []
    assert _frames(later) == [HEARTBEAT, GPS, GPS, GPS, GPS]


def test_framer_length_below_minimum_is_rejected() -> None:
    framer = gt06.Framer()

    items = framer.feed(bytes.fromhex("78780213") + HEARTBEAT)

    assert _reasons(items) == ["length_mismatch"]
    assert _frames(items) == [HEARTBEAT]


def test_framer_corrupted_crc_passes_envelope_to_decode() -> None:
    corrupted = bytearray(GPS)
    corrupted[10] ^= 0x01
    framer = gt06.Framer()

    items = framer.feed(bytes(corrupted))

    assert items == [bytes(corrupted)]
    with pytest.raises(DecodeError, match="crc_mismatch"):
        gt06.decode(bytes(corrupted))
