"""Reassembly of sub-packaged JT808 messages: order, duplicates, expiry, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_jt808_fix_invariants import assert_plausible_message

from postloan.protocols import jt808
from postloan.protocols.base import DecodeError, Location, Message
from postloan.protocols.jt808_location import encode_location_body

PHONE = "013800138000"
START = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _batch_body(count: int) -> bytes:
    body = bytearray(count.to_bytes(2, "big") + b"\x01")
    for number in range(count):
        fix = Location(
            time=START + timedelta(seconds=30 * number),
            latitude=22.5 + number / 1000,
            longitude=114.0,
            satellites=9,
        )
        record = encode_location_body(
            fix, alarm_flags=0, status=None, utc_offset=timedelta(hours=8), items=None
        )
        body += len(record).to_bytes(2, "big") + record
    return bytes(body)


def _pieces(
    first_serial: int = 100, count: int = 20, phone: str = PHONE
) -> list[Message]:
    frames = jt808.frame_pieces(
        0x0704, phone, first_serial, _batch_body(count), piece_size=256
    )
    return [jt808.decode(frame) for frame in frames]


def _add_all(
    reassembler: jt808.Reassembler, pieces: list[Message]
) -> list[Message | None]:
    return [reassembler.add(piece) for piece in pieces]


def test_pieces_are_fragments() -> None:
    pieces = _pieces()

    assert [piece.type for piece in pieces] == ["fragment"] * 3
    assert [piece.attributes["index"] for piece in pieces] == [1, 2, 3]
    assert {piece.attributes["total"] for piece in pieces} == {3}


def test_reassembler_in_order() -> None:
    reassembler = jt808.Reassembler()

    results = _add_all(reassembler, _pieces())

    assert results[:2] == [None, None]
    whole = results[2]
    assert whole is not None
    assert whole.type == "batch_location"
    assert whole.serial == 100
    assert whole.attributes["pieces"] == 3
    assert len(whole.locations) == 20
    assert_plausible_message(whole)
    assert reassembler.pending == 0
    assert reassembler.buffered_bytes == 0


def test_reassembler_out_of_order() -> None:
    reassembler = jt808.Reassembler()
    first, second, third = _pieces()

    results = _add_all(reassembler, [third, first, second])

    whole = results[2]
    assert whole is not None
    assert [location.latitude for location in whole.locations][:2] == [22.5, 22.501]


def test_reassembler_ignores_duplicates() -> None:
    reassembler = jt808.Reassembler()
    first, second, third = _pieces()

    results = _add_all(reassembler, [first, first, second, second, third])

    assert results[:4] == [None, None, None, None]
    assert results[4] is not None
    assert reassembler.pending == 0


def test_reassembler_serials_wrap() -> None:
    reassembler = jt808.Reassembler()
    pieces = _pieces(first_serial=0xFFFF)

    results = _add_all(reassembler, pieces)

    assert [piece.serial for piece in pieces] == [0xFFFF, 0, 1]
    whole = results[2]
    assert whole is not None
    assert whole.serial == 0xFFFF


def test_reassembler_keeps_messages_apart() -> None:
    reassembler = jt808.Reassembler()
    one = _pieces(first_serial=10)
    other = _pieces(first_serial=10, phone="013800138001")

    results = _add_all(reassembler, [one[0], other[0], one[1], other[1], one[2]])

    whole = results[4]
    assert whole is not None
    assert whole.device_id == PHONE
    assert reassembler.pending == 1


def test_reassembler_expires_missing_piece() -> None:
    clock = FakeClock()
    reassembler = jt808.Reassembler(max_age=60.0, clock=clock)
    first, _, third = _pieces()
    reassembler.add(first)
    reassembler.add(third)

    clock.now += 61.0
    expired = reassembler.expire()

    assert expired == (jt808.IncompleteMessage(PHONE, 0x0704, 100, 3, missing=(2,)),)
    assert reassembler.pending == 0
    assert reassembler.buffered_bytes == 0
    assert reassembler.dropped == 1


def test_reassembler_keeps_young_message() -> None:
    clock = FakeClock()
    reassembler = jt808.Reassembler(max_age=60.0, clock=clock)
    reassembler.add(_pieces()[0])

    clock.now += 59.0
    expired = reassembler.expire()

    assert expired == ()
    assert reassembler.pending == 1


def test_reassembler_late_piece_starts_over() -> None:
    clock = FakeClock()
    reassembler = jt808.Reassembler(max_age=60.0, clock=clock)
    first, second, third = _pieces()
    reassembler.add(first)
    reassembler.add(second)

    clock.now += 120.0
    result = reassembler.add(third)

    assert result is None
    assert reassembler.pending == 1
    assert reassembler.dropped == 1


def test_reassembler_bounds_pending_messages() -> None:
    reassembler = jt808.Reassembler(max_pending=2)

    for serial in (10, 20, 30, 40):
        reassembler.add(_pieces(first_serial=serial)[0])

    assert reassembler.pending == 2
    assert reassembler.dropped == 2


def test_reassembler_bytes_bound_drops_oldest() -> None:
    reassembler = jt808.Reassembler(max_bytes=600)
    older = _pieces(first_serial=10)
    newer = _pieces(first_serial=20)

    reassembler.add(older[0])
    reassembler.add(older[1])
    reassembler.add(newer[0])

    assert reassembler.pending == 1
    assert reassembler.buffered_bytes <= 600
    assert reassembler.dropped == 1


def test_reassembler_rejects_oversize_message() -> None:
    reassembler = jt808.Reassembler(max_bytes=300)
    first, second, _ = _pieces()
    reassembler.add(first)

    with pytest.raises(DecodeError) as caught:
        reassembler.add(second)

    assert caught.value.reason == "subpackage_too_large"
    assert reassembler.pending == 0
    assert reassembler.buffered_bytes == 0


def test_reassembler_rejects_changed_total() -> None:
    reassembler = jt808.Reassembler()
    reassembler.add(_pieces()[0])
    # Same first serial (101 - 2 + 1), but four pieces instead of three.
    odd = jt808.decode(jt808.frame(0x0704, PHONE, 101, b"\x00", subpackage=(4, 2)))

    with pytest.raises(DecodeError) as caught:
        reassembler.add(odd)

    assert caught.value.reason == "invalid_subpackage"


def test_reassembler_passes_whole_messages_through() -> None:
    reassembler = jt808.Reassembler()
    heartbeat = jt808.decode(jt808.encode_heartbeat(PHONE, 5))

    result = reassembler.add(heartbeat)

    assert result is heartbeat


def test_reassembler_uses_its_utc_offset() -> None:
    reassembler = jt808.Reassembler(utc_offset=timedelta(0))

    whole = _add_all(reassembler, _pieces())[2]

    assert whole is not None
    assert whole.locations[0].time == START + timedelta(hours=8)


def test_reply_acknowledges_each_piece() -> None:
    pieces = _pieces()

    replies = [jt808.reply(piece, platform_serial=1) for piece in pieces]

    acknowledged = [jt808.decode(reply) for reply in replies if reply is not None]
    assert [ack.attributes["answered_serial"] for ack in acknowledged] == [
        100,
        101,
        102,
    ]
    assert {ack.attributes["answered_id"] for ack in acknowledged} == {"0x0704"}


def test_reply_skips_reassembled_message() -> None:
    whole = _add_all(jt808.Reassembler(), _pieces())[2]
    assert whole is not None

    reply = jt808.reply(whole, platform_serial=1)

    assert reply is None
