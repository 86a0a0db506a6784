"""The durable spool: record framing, rotation, crash recovery and batch encoding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.store.spool import (
    HEADER,
    MAGIC,
    RecordBatch,
    Spool,
    SpoolFullError,
    SpoolLockedError,
    decode_batch,
    encode_batch,
    encode_record,
)

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def payloads(count: int, size: int = 100) -> list[bytes]:
    return [f"{i:06d}".encode().ljust(size, b".") for i in range(count)]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def reopen(directory: Path, **limits: int) -> Spool:
    spool = Spool(directory, **limits)
    spool.open()
    return spool


def test_spool_append_then_head_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    records = payloads(5)

    for record in records:
        spool.append(record)

    assert spool.head(10) == records
    assert spool.records == 5
    assert spool.size_bytes == 5 * (HEADER.size + 100)


def test_spool_head_does_not_consume(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(b"one")

    spool.head(1)

    assert spool.head(1) == [b"one"]


def test_spool_consume_advances_head(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for record in payloads(4):
        spool.append(record)

    spool.consume(3)

    assert spool.head(10) == payloads(4)[3:]
    assert spool.records == 1


def test_spool_not_created_until_first_append(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")

    spool.open()

    assert not (tmp_path / "spool").exists()


def test_spool_rotates_segments_by_size(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, segment_bytes=1000)

    for record in payloads(30):
        spool.append(record)

    assert len(segments(directory)) == 4
    assert all(path.stat().st_size <= 1000 for path in segments(directory))
    assert spool.head(30) == payloads(30)


def test_spool_deletes_drained_segments(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, segment_bytes=1000)
    for record in payloads(30):
        spool.append(record)

    # 9 records of 108 bytes fit a segment after its 8-byte magic.
    spool.consume(18)

    assert len(segments(directory)) == 2
    assert spool.head(1) == [payloads(30)[18]]


def test_spool_empty_after_drain_leaves_no_segment(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, segment_bytes=1000)
    for record in payloads(12):
        spool.append(record)

    spool.consume(12)
    spool.append(b"after")

    assert [path.name for path in segments(directory)] == ["0000000000000003.seg"]
    assert spool.head(5) == [b"after"]


def test_spool_reopen_keeps_undrained_records(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, segment_bytes=1000)
    for record in payloads(20):
        spool.append(record)
    spool.consume(5)
    spool.close()

    reopened = reopen(directory, segment_bytes=1000)

    # Consumption is not persisted inside a segment: records of a segment
    # not yet fully drained come back, and the store ignores duplicates.
    assert reopened.head(100) == payloads(20)
    assert reopened.records == 20


def test_spool_reopen_appends_after_existing(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append(b"first")
    spool.close()

    reopened = reopen(directory)
    reopened.append(b"second")

    assert reopened.head(5) == [b"first", b"second"]
    assert len(segments(directory)) == 2


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size, HEADER.size + 50])
def test_spool_truncates_torn_last_record(tmp_path: Path, cut: int) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append(b"kept")
    spool.close()
    path = segments(directory)[0]
    intact = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(encode_record(b"x" * 100)[:cut])

    reopened = reopen(directory)

    assert reopened.head(5) == [b"kept"]
    assert path.stat().st_size == intact


def test_spool_truncates_last_record_with_bad_checksum(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append(b"kept")
    spool.append(b"torn")
    spool.close()
    path = segments(directory)[0]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    reopened = reopen(directory)

    assert reopened.head(5) == [b"kept"]


def test_spool_rejects_huge_length_as_torn(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append(b"kept")
    spool.close()
    path = segments(directory)[0]
    with path.open("ab") as handle:
        handle.write(b"\xff\xff\xff\xff\x00\x00\x00\x00partial")

    reopened = reopen(directory)

    assert reopened.head(5) == [b"kept"]


def test_spool_torn_segment_magic_is_removed(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append(b"kept")
    spool.close()
    (directory / "0000000000000002.seg").write_bytes(MAGIC[:3])

    reopened = reopen(directory)

    assert reopened.head(5) == [b"kept"]
    assert not (directory / "0000000000000002.seg").exists()


def test_spool_damaged_older_segment_keeps_intact_prefix(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, segment_bytes=400)
    for record in payloads(6):
        spool.append(record)
    spool.close()
    first = segments(directory)[0]
    data = bytearray(first.read_bytes())
    second_record = len(MAGIC) + HEADER.size + 100 + HEADER.size
    data[second_record] ^= 0xFF
    first.write_bytes(bytes(data))

    reopened = reopen(directory, segment_bytes=400)
    drained = reopened.head(10)
    reopened.consume(len(drained))

    assert drained == [payloads(6)[0], *payloads(6)[3:]]
    assert (directory / "0000000000000001.corrupt").exists()
    assert segments(directory) == []


def test_spool_record_damaged_after_open_is_dropped(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    for record in payloads(3):
        spool.append(record)
    path = segments(directory)[0]
    with path.open("r+b") as handle:
        handle.seek(len(MAGIC) + HEADER.size + 100 + HEADER.size + 10)
        handle.write(b"!")

    drained = spool.head(10)

    assert drained == [payloads(3)[0], payloads(3)[2]]
    assert spool.records == 2


def test_spool_full_raises_and_keeps_contents(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=500)
    for record in payloads(4):
        spool.append(record)

    with pytest.raises(SpoolFullError, match="limit of 500"):
        spool.append(b"x" * 100)

    assert spool.records == 4


def test_spool_second_process_is_locked_out(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append(b"mine")
    script = textwrap.dedent(
        f"""
        from postloan.store.spool import Spool, SpoolLockedError
        try:
            Spool({str(directory)!r}).open()
        except SpoolLockedError as exc:
            print("locked:", exc)
        """
    )

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )

    assert result.stdout.startswith("locked:"), result.stderr


def test_spool_lock_released_by_close(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.append(b"mine")
    with pytest.raises(SpoolLockedError):
        Spool(directory).open()

    spool.close()

    assert reopen(directory).head(1) == [b"mine"]


def test_spool_survives_killed_writer(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    script = textwrap.dedent(
        f"""
        import os, signal
        from postloan.store.spool import Spool
        spool = Spool({str(directory)!r}, segment_bytes=4096)
        for i in range(200):
            spool.append(b"record %d" % i)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )

    subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    reopened = reopen(directory)

    assert reopened.head(1000) == [b"record %d" % i for i in range(200)]


def test_spool_rejects_invalid_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        Spool(tmp_path, segment_bytes=4)


def test_spool_files_are_private_to_owner_group_readable(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")

    spool.append(b"x")

    mode = segments(tmp_path / "spool")[0].stat().st_mode & 0o777
    assert mode & 0o022 == 0
    assert os.access(segments(tmp_path / "spool")[0], os.R_OK)


def sample_batch() -> RecordBatch:
    fixes = [
        Fix(
            "860000000000001",
            T0 + timedelta(seconds=i, microseconds=7),
            22.5 + i * 1e-7,
            114.05,
            speed_kmh=12.5,
            course=None if i else 90.0,
            altitude_m=None,
            valid=bool(i % 2),
            satellites=None if i else 9,
            attributes={"mileage_km": 12.3, "acc": True} if i else {},
        )
        for i in range(3)
    ]
    events = [DeviceEvent("860000000000001", T0, "alarm", {"code": 1})]
    fence_events = [FenceEvent("860000000000001", "depot", "enter", T0, 22.5, 114.05)]
    return RecordBatch(fixes, events, fence_events)


def test_batch_encoding_round_trips_exactly() -> None:
    batch = sample_batch()

    decoded = decode_batch(encode_batch(batch))

    assert list(decoded.fixes) == list(batch.fixes)
    assert list(decoded.events) == list(batch.events)
    assert list(decoded.fence_events) == list(batch.fence_events)


def test_batch_decoding_rejects_other_versions() -> None:
    with pytest.raises(ValueError, match="version 1"):
        decode_batch(b'{"v": 2}')


def test_batch_encoding_rejects_naive_time() -> None:
    naive = Fix("a", datetime(2024, 5, 1), 1.0, 2.0)

    with pytest.raises(TypeError):
        encode_batch(RecordBatch([naive]))


def test_batch_split_halves_every_kind() -> None:
    batch = sample_batch()

    left, right = batch.split()

    assert left.size + right.size == batch.size
    assert list(RecordBatch.merge([left, right]).fixes) == list(batch.fixes)
    assert abs(left.size - right.size) <= 1
