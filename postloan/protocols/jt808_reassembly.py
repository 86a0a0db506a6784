"""Reassembly of sub-packaged JT/T 808 messages (attribute bit 13).

A long message is sent as pieces, each a complete frame carrying (total,
1-based index) after the serial. The pieces of one message have consecutive
serials, so (phone, message id, serial of piece 1) identifies the message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import MappingProxyType

from postloan.protocols.base import DecodeError, Message
from postloan.protocols.jt808_body import decode_body
from postloan.protocols.jt808_frame import DEFAULT_UTC_OFFSET, PROTOCOL, Header

_Key = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class IncompleteMessage:
    """A sub-packaged message dropped before all its pieces arrived."""

    device_id: str
    msg_id: int
    first_serial: int
    total: int
    missing: tuple[int, ...]  # 1-based piece indexes never received


@dataclass(slots=True)
class _Pending:
    version: str
    protocol_version: int | None
    total: int
    created: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Join the pieces of sub-packaged messages into whole messages.

    Memory is bounded: at most `max_pending` unfinished messages holding at
    most `max_bytes` of body bytes, each kept at most `max_age` seconds (by
    `clock`) after its first piece. When a bound is exceeded, the oldest
    unfinished messages are dropped and counted in `dropped`. `expire` also
    returns the messages it drops with their missing pieces, so the gateway
    can request them again with 0x8003.
    """

    def __init__(
        self,
        *,
        max_pending: int = 64,
        max_age: float = 120.0,
        max_bytes: int = 2 * 1024 * 1024,
        utc_offset: timedelta = DEFAULT_UTC_OFFSET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_pending < 1 or max_age <= 0 or max_bytes < 1:
            raise ValueError(
                "max_pending, max_age and max_bytes must be positive, got "
                f"{max_pending}, {max_age}, {max_bytes}"
            )
        self._max_pending = max_pending
        self._max_age = max_age
        self._max_bytes = max_bytes
        self._utc_offset = utc_offset
        self._clock = clock
        # Insertion order is creation order, so the first entry is the oldest.
        self._pending: dict[_Key, _Pending] = {}
        self._bytes = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Number of messages still waiting for pieces."""
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        """Body bytes held for unfinished messages."""
        return self._bytes

    def add(self, message: Message) -> Message | None:
        """Add one piece; return the whole message when its last piece arrives.

        A message that is not a ``fragment`` is returned unchanged. A repeated
        piece is ignored. Raises `DecodeError` for a piece whose total differs
        from earlier pieces of the same message, for a message larger than
        `max_bytes`, and when the joined body does not decode.
        """
        if message.type != "fragment":
            return message
        self.expire()
        total = int(message.attributes["total"])
        index = int(message.attributes["index"])
        key = _key(message, index)
        entry = self._pending.get(key)
        if entry is None:
            entry = _Pending(
                version=str(message.attributes["version"]),
                protocol_version=message.attributes.get("protocol_version"),
                total=total,
                created=self._clock(),
            )
            self._pending[key] = entry
        elif entry.total != total:
            raise _error(message, "invalid_subpackage", _total_detail(entry, total))
        if index in entry.pieces:
            return None
        body = bytes.fromhex(str(message.attributes["body_hex"]))
        entry.pieces[index] = body
        entry.size += len(body)
        self._bytes += len(body)
        self._enforce_bounds(key, message)
        if len(entry.pieces) < entry.total:
            return None
        return self._complete(key, entry)

    def expire(self) -> tuple[IncompleteMessage, ...]:
        """Drop messages older than `max_age` and return them."""
        now = self._clock()
        expired = []
        for key, entry in list(self._pending.items()):
            if now - entry.created <= self._max_age:
                break
            expired.append(self._drop(key))
        return tuple(expired)

    def _enforce_bounds(self, key: _Key, message: Message) -> None:
        for other in list(self._pending):
            if not self._over_bounds():
                return
            if other != key:
                self._drop(other)
        if self._over_bounds():
            self._drop(key)
            raise _error(
                message,
                "subpackage_too_large",
                f"pieces exceed the {self._max_bytes}-byte reassembly bound",
            )

    def _over_bounds(self) -> bool:
        return len(self._pending) > self._max_pending or self._bytes > self._max_bytes

    def _drop(self, key: _Key) -> IncompleteMessage:
        entry = self._pending.pop(key)
        self._bytes -= entry.size
        self.dropped += 1
        missing = tuple(i for i in range(1, entry.total + 1) if i not in entry.pieces)
        device_id, msg_id, first_serial = key
        return IncompleteMessage(device_id, msg_id, first_serial, entry.total, missing)

    def _complete(self, key: _Key, entry: _Pending) -> Message:
        del self._pending[key]
        self._bytes -= entry.size
        body = b"".join(entry.pieces[i] for i in range(1, entry.total + 1))
        device_id, msg_id, first_serial = key
        header = Header(
            msg_id=msg_id,
            body_length=len(body),
            version=entry.version,
            protocol_version=entry.protocol_version,
            phone=device_id,
            serial=first_serial,
            subpackage=None,
        )
        whole = decode_body(header, body, self._utc_offset)
        attributes = {**whole.attributes, "pieces": entry.total}
        return replace(whole, attributes=MappingProxyType(attributes))


def _key(message: Message, index: int) -> _Key:
    serial = message.serial or 0
    first_serial = (serial - index + 1) & 0xFFFF
    return (message.device_id or "", message.msg_id, first_serial)


def _total_detail(entry: _Pending, total: int) -> str:
    return f"piece says {total} pieces, earlier pieces said {entry.total}"


def _error(message: Message, reason: str, detail: str) -> DecodeError:
    return DecodeError(reason, detail, protocol=PROTOCOL, msg_id=message.msg_id)
