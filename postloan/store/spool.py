"""An on-disk, append-only spool for acknowledged batches the database refused.

While the database is unreachable the gateway's writer appends each batch
here, fsyncs, and only then acknowledges it to the devices. When the database
is back, the writer reads the batches oldest first, writes them and consumes
them. Replaying a batch twice is harmless because every store write is
idempotent on the records' natural keys.

On-disk format, all integers little-endian:

* The spool is a folder of segment files ``<sequence>.seg`` (16 decimal
  digits, so names sort in append order) plus a ``LOCK`` file.
* A segment starts with the 8-byte magic ``PLSPOOL1``, followed by records.
* A record is a 4-byte payload length, a 4-byte CRC-32 (zlib) of the length
  bytes and the payload together, and the payload.

A crash can tear only the end of the newest segment, because every append is
fsynced before it is acknowledged and older segments are never written
again. Opening the spool therefore truncates the newest segment after its
last intact record. An invalid record in an older segment is media damage:
the intact records before it are still drained, and the file is then kept
as ``<sequence>.corrupt`` for inspection instead of being deleted.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from postloan.model import EMPTY, DeviceEvent, FenceEvent, Fix

logger = logging.getLogger(__name__)

MAGIC = b"PLSPOOL1"
HEADER = struct.Struct("<II")
# A record larger than this is treated as damage rather than read: a torn
# length field must not make the reader allocate gigabytes.
MAX_RECORD_BYTES = 256 * 1024 * 1024
SEGMENT_SUFFIX = ".seg"
CORRUPT_SUFFIX = ".corrupt"
LOCK_NAME = "LOCK"


class SpoolError(Exception):
    """The spool cannot take or return records."""


class SpoolFullError(SpoolError):
    """Appending would exceed the spool's size limit."""


class SpoolLockedError(SpoolError):
    """Another process has the spool folder locked."""


@dataclass(frozen=True, slots=True)
class _Entry:
    """Location of one record: segment sequence, payload offset and length."""

    segment: int
    offset: int
    length: int

    @property
    def size(self) -> int:
        return HEADER.size + self.length


def _crc(length: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(length))


def encode_record(payload: bytes) -> bytes:
    """Frame a payload as one spool record."""
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", _crc(length, payload)) + payload


class Spool:
    """A crash-safe FIFO of byte records in one folder, for one process at a time.

    The folder and its lock are taken on the first `open` that finds the
    folder, or on the first `append`, so a process that never needs the
    spool never creates or locks it. All methods are thread-safe.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= len(MAGIC):
            raise ValueError("spool max_bytes and segment_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._lock_file: int | None = None
        self._entries: deque[_Entry] = deque()
        self._bytes = 0
        self._active: int | None = None  # sequence of the segment being appended
        self._active_fd: int | None = None
        self._active_size = 0
        self._next_sequence = 1
        self._damaged: set[int] = set()
        self._readers: dict[int, int] = {}

    @property
    def records(self) -> int:
        """Records appended and not yet consumed."""
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes of those records, headers included."""
        return self._bytes

    def open(self) -> None:
        """Take the folder if it exists and index the records left in it.

        Raises SpoolLockedError when another process holds the folder.
        """
        with self._lock:
            if self._lock_file is None and self.directory.is_dir():
                self._take_folder()

    def append(self, payload: bytes) -> None:
        """Append one record and fsync it; it is durable when this returns.

        Raises SpoolFullError past `max_bytes`, SpoolLockedError when another
        process has the folder locked, and OSError when the disk fails. After
        an OSError the segment is cut back to its last whole record.
        """
        record = encode_record(payload)
        with self._lock:
            if self._bytes + len(record) > self.max_bytes:
                raise SpoolFullError(
                    f"spool {self.directory} contains {self._bytes} bytes; "
                    f"{len(record)} more would pass its limit of {self.max_bytes}"
                )
            if self._lock_file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._take_folder()
            if self._active is None or (
                self._active_size > len(MAGIC)
                and self._active_size + len(record) > self.segment_bytes
            ):
                self._start_segment()
            assert self._active is not None and self._active_fd is not None
            offset = self._active_size
            try:
                _write_all(self._active_fd, record)
                os.fsync(self._active_fd)
            except OSError:
                os.ftruncate(self._active_fd, offset)
                raise
            self._active_size += len(record)
            self._entries.append(
                _Entry(self._active, offset + HEADER.size, len(payload))
            )
            self._bytes += len(record)

    def head(self, max_records: int) -> list[bytes]:
        """Return up to `max_records` of the oldest payloads without consuming them.

        A record whose checksum no longer matches is dropped with an error
        logged, and its segment is kept as damaged.
        """
        with self._lock:
            payloads: list[bytes] = []
            index = 0
            while index < len(self._entries) and len(payloads) < max_records:
                payload = self._read(self._entries[index])
                if payload is None:
                    self._drop(index)
                    continue
                payloads.append(payload)
                index += 1
            return payloads

    def consume(self, count: int) -> None:
        """Forget the `count` oldest records, deleting segments left empty."""
        with self._lock:
            for _ in range(min(count, len(self._entries))):
                self._drop_head()

    def close(self) -> None:
        """Close files and release the folder; records stay on disk."""
        with self._lock:
            for fd in self._readers.values():
                os.close(fd)
            self._readers.clear()
            if self._active_fd is not None:
                os.close(self._active_fd)
                self._active_fd = None
            self._active = None
            if self._lock_file is not None:
                os.close(self._lock_file)  # closing releases the flock
                self._lock_file = None
            self._entries.clear()
            self._bytes = 0

    # --- folder and segments ----------------------------------------------------

    def _take_folder(self) -> None:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLockedError(
                f"spool folder {self.directory} is in use by another process"
            ) from None
        self._lock_file = fd
        self._scan()

    def _scan(self) -> None:
        sequences = sorted(_sequences(self.directory, SEGMENT_SUFFIX))
        damaged = _sequences(self.directory, CORRUPT_SUFFIX)
        self._next_sequence = max([0, *sequences, *damaged]) + 1
        for sequence in sequences:
            newest = sequence == sequences[-1]
            self._index_segment(sequence, newest)
        if self._entries:
            logger.info(
                "spool %s contains %d records (%d bytes) from an earlier run",
                self.directory,
                len(self._entries),
                self._bytes,
            )

    def _index_segment(self, sequence: int, newest: bool) -> None:
        path = self._segment_path(sequence)
        data = path.read_bytes()
        entries, end = _parse_segment(sequence, data)
        if end == len(data):
            self._add_entries(sequence, entries)
            return
        if newest:
            logger.warning(
                "spool segment %s ends in %d bytes of a torn record; truncating",
                path,
                len(data) - end,
            )
            if end < len(MAGIC):
                path.unlink()
                return
            with path.open("r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())
            self._add_entries(sequence, entries)
            return
        logger.error(
            "spool segment %s is damaged at byte %d of %d; its %d intact records "
            "will be drained and the file kept as %s",
            path,
            end,
            len(data),
            len(entries),
            CORRUPT_SUFFIX,
        )
        self._damaged.add(sequence)
        self._add_entries(sequence, entries)
        if not entries:
            self._retire(sequence)

    def _add_entries(self, sequence: int, entries: list[_Entry]) -> None:
        self._entries.extend(entries)
        self._bytes += sum(entry.size for entry in entries)

    def _start_segment(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
        sequence = self._next_sequence
        self._next_sequence += 1
        path = self._segment_path(sequence)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            _write_all(fd, MAGIC)
            os.fsync(fd)
            _fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._active, self._active_fd, self._active_size = sequence, fd, len(MAGIC)

    def _read(self, entry: _Entry) -> bytes | None:
        fd = self._readers.get(entry.segment)
        if fd is None:
            fd = os.open(self._segment_path(entry.segment), os.O_RDONLY)
            self._readers[entry.segment] = fd
        start = entry.offset - HEADER.size
        data = os.pread(fd, entry.size, start)
        length, crc = HEADER.unpack_from(data)
        payload = data[HEADER.size :]
        if length == entry.length and crc == _crc(data[:4], payload):
            return payload
        logger.error(
            "spool record at byte %d of segment %d fails its checksum; dropped",
            start,
            entry.segment,
        )
        self._damaged.add(entry.segment)
        return None

    def _drop_head(self) -> None:
        self._drop(0)

    def _drop(self, index: int) -> None:
        entry = self._entries[index]
        del self._entries[index]
        self._bytes -= entry.size
        if any(other.segment == entry.segment for other in self._segment_peers(index)):
            return
        if entry.segment != self._active or not self._entries:
            self._retire(entry.segment)

    def _segment_peers(self, index: int) -> list[_Entry]:
        # Entries are in segment order, so if any entry of the removed one's
        # segment is left, one of its two former neighbours is.
        return [
            self._entries[i] for i in (index - 1, index) if 0 <= i < len(self._entries)
        ]

    def _retire(self, sequence: int) -> None:
        """Delete a drained segment, or keep a damaged one under a new name."""
        fd = self._readers.pop(sequence, None)
        if fd is not None:
            os.close(fd)
        if sequence == self._active:
            assert self._active_fd is not None
            os.close(self._active_fd)
            self._active, self._active_fd = None, None
        path = self._segment_path(sequence)
        if sequence in self._damaged:
            path.rename(path.with_suffix(CORRUPT_SUFFIX))
        else:
            path.unlink(missing_ok=True)

    def _segment_path(self, sequence: int) -> Path:
        return self.directory / f"{sequence:016d}{SEGMENT_SUFFIX}"


def _parse_segment(sequence: int, data: bytes) -> tuple[list[_Entry], int]:
    """Return the intact records of a segment and the byte where they end."""
    if not data.startswith(MAGIC):
        return [], 0
    entries: list[_Entry] = []
    position = len(MAGIC)
    while position + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, position)
        start = position + HEADER.size
        end = start + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break
        length_bytes = data[position : position + 4]
        if crc != _crc(length_bytes, data[start:end]):
            break
        entries.append(_Entry(sequence, start, length))
        position = end
    return entries, position


def _sequences(directory: Path, suffix: str) -> set[int]:
    found = set()
    for path in directory.glob(f"*{suffix}"):
        if path.stem.isdigit():
            found.add(int(path.stem))
    return found


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    # A new file's name is durable only once its folder is synced (POSIX).
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- batches -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """The fixes, device events and fence events written in one transaction set."""

    fixes: Sequence[Fix] = ()
    events: Sequence[DeviceEvent] = ()
    fence_events: Sequence[FenceEvent] = ()

    @property
    def size(self) -> int:
        return len(self.fixes) + len(self.events) + len(self.fence_events)

    def split(self) -> tuple[RecordBatch, RecordBatch]:
        """Cut the batch into two halves of (nearly) equal size."""
        records: list[Any] = [*self.fixes, *self.events, *self.fence_events]
        middle = len(records) // 2
        return _batch_of(records[:middle]), _batch_of(records[middle:])

    @staticmethod
    def merge(batches: Sequence[RecordBatch]) -> RecordBatch:
        return RecordBatch(
            [fix for batch in batches for fix in batch.fixes],
            [event for batch in batches for event in batch.events],
            [event for batch in batches for event in batch.fence_events],
        )


def _batch_of(records: Sequence[Any]) -> RecordBatch:
    return RecordBatch(
        [r for r in records if isinstance(r, Fix)],
        [r for r in records if isinstance(r, DeviceEvent)],
        [r for r in records if isinstance(r, FenceEvent)],
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _time(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def encode_batch(batch: RecordBatch) -> bytes:
    """Serialise a batch as compact JSON, times as integer microseconds (UTC).

    Attribute values that JSON cannot hold are written as their ``str()``,
    the only change a spooled record can undergo.
    """
    document = {
        "v": 1,
        "fixes": [
            [
                f.device_id,
                _us(f.time),
                f.latitude,
                f.longitude,
                f.speed_kmh,
                f.course,
                f.altitude_m,
                f.valid,
                f.satellites,
                dict(f.attributes),
            ]
            for f in batch.fixes
        ],
        "events": [
            [e.device_id, _us(e.time), e.kind, dict(e.attributes)] for e in batch.events
        ],
        "fence_events": [
            [e.device_id, e.fence_id, e.event, _us(e.time), e.latitude, e.longitude]
            for e in batch.fence_events
        ],
    }
    return json.dumps(document, separators=(",", ":"), default=str).encode()


def decode_batch(payload: bytes) -> RecordBatch:
    """Read a batch written by `encode_batch`; raise ValueError for another format."""
    document = json.loads(payload)
    if not isinstance(document, dict) or document.get("v") != 1:
        raise ValueError("spool record is not a version 1 batch")
    fixes = [
        Fix(
            device_id,
            _time(time_us),
            latitude,
            longitude,
            speed,
            course,
            altitude,
            valid,
            satellites,
            attributes or EMPTY,
        )
        for (
            device_id,
            time_us,
            latitude,
            longitude,
            speed,
            course,
            altitude,
            valid,
            satellites,
            attributes,
        ) in document["fixes"]
    ]
    events = [
        DeviceEvent(device_id, _time(time_us), kind, attributes or EMPTY)
        for device_id, time_us, kind, attributes in document["events"]
    ]
    fence_events = [
        FenceEvent(device_id, fence_id, event, _time(time_us), latitude, longitude)
        for device_id, fence_id, event, time_us, latitude, longitude in document[
            "fence_events"
        ]
    ]
    return RecordBatch(fixes, events, fence_events)
