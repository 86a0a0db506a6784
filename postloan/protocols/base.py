"""Types shared by every protocol module.

A protocol module turns wire bytes into `Message` values and messages into
bytes. It never reads a socket, logs or keeps session state beyond what a
framer buffers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from postloan.model import EMPTY


class DecodeError(ValueError):
    """The device sent bytes that cannot be decoded.

    `reason` is a short machine-readable code such as ``crc_mismatch`` or
    ``incomplete``; metrics count errors by it.
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        protocol: str,
        msg_id: int | None = None,
        offset: int | None = None,
        data: bytes = b"",
    ) -> None:
        super().__init__(f"{protocol}: {reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.protocol = protocol
        self.msg_id = msg_id
        self.offset = offset
        self.data = data

    def __repr__(self) -> str:
        return (
            f"DecodeError(reason={self.reason!r}, protocol={self.protocol!r}, "
            f"msg_id={self.msg_id!r}, offset={self.offset!r}, "
            f"data={self.data[:64].hex()!r})"
        )


class EncodeError(ValueError):
    """Our own code asked for a message that cannot be encoded."""


@dataclass(frozen=True, slots=True)
class Location:
    """A position as a device reported it, time already converted to UTC."""

    time: datetime
    latitude: float
    longitude: float
    speed_kmh: float = 0.0
    course: float | None = None
    altitude_m: float | None = None
    valid: bool = True
    satellites: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded frame.

    `type` is a protocol-neutral name (``login``, ``location``, ``heartbeat``,
    ``alarm``, ``register``, ``auth``, ``batch_location``, ...). `attributes`
    holds the message's other decoded fields with JSON-compatible values.
    """

    protocol: str
    type: str
    msg_id: int
    serial: int | None = None
    device_id: str | None = None
    locations: tuple[Location, ...] = ()
    alarms: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
