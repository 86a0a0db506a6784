"""Bus topics and the JSON payloads of fixes and device events (schema v1).

docs/mqtt.md lists the fields. A payload carries its schema version in "v";
a reader rejects a version it does not know instead of guessing.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from postloan.model import EMPTY, DeviceEvent, Fix
from postloan.times import TimeValueError, format_time, parse_time

SCHEMA_VERSION = 1
PREFIX = f"postloan/v{SCHEMA_VERSION}"


class PayloadError(ValueError):
    """A bus message is not a valid payload of this schema version."""


def partition_of(device_id: str, partitions: int) -> int:
    """Return the partition of a device: CRC-32 of its id modulo `partitions`.

    CRC-32 (zlib) gives the same value in every process and Python version,
    unlike the built-in hash, which is salted per process.
    """
    return zlib.crc32(device_id.encode("utf-8")) % partitions


def position_topic(device_id: str, partitions: int) -> str:
    return f"{PREFIX}/positions/{partition_of(device_id, partitions)}/{device_id}"


def event_topic(device_id: str, partitions: int) -> str:
    return f"{PREFIX}/events/{partition_of(device_id, partitions)}/{device_id}"


def command_response_topic(device_id: str) -> str:
    return f"{PREFIX}/commands/{device_id}/response"


def uplink_topic(device_id: str) -> str:
    return f"{PREFIX}/uplink/{device_id}"


def downlink_topic(device_id: str) -> str:
    return f"{PREFIX}/downlink/{device_id}"


def position_filters(group: str | None, partitions: list[int]) -> list[str]:
    """Return one topic filter per partition, shared by `group` unless it is None."""
    share = "" if group is None else f"$share/{group}/"
    return [f"{share}{PREFIX}/positions/{p}/#" for p in partitions]


def event_filters(group: str | None, partitions: list[int]) -> list[str]:
    """Return one event topic filter per partition, shared by `group` unless None."""
    share = "" if group is None else f"$share/{group}/"
    return [f"{share}{PREFIX}/events/{p}/#" for p in partitions]


def topic_kind(topic: str) -> str:
    """Return "positions", "events" or another level 3 of a bus topic."""
    levels = topic.split("/")
    if len(levels) < 3 or "/".join(levels[:2]) != PREFIX:
        raise PayloadError(f"topic {topic!r} is not under {PREFIX}/")
    return levels[2]


def worker_partitions(partitions: int, index: int, count: int) -> list[int]:
    """Return the partitions p with p % count == index."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"invalid worker index {index} of {count}: "
            "expected 0 <= worker_index < worker_count"
        )
    return [p for p in range(partitions) if p % count == index]


def broker_address(url: str) -> tuple[str, int]:
    """Return (host, port) of an ``mqtt://host:port`` URL; the port defaults to 1883."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"invalid bus url {url!r}: expected mqtt://host:port")
    return parts.hostname, parts.port or 1883


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise PayloadError(f"fix time {value!r} has no time zone")
    return format_time(value)


def _parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise PayloadError(f"invalid time {text!r}: expected an ISO-8601 string")
    try:
        return parse_time(text)
    except TimeValueError as exc:
        raise PayloadError(str(exc)) from exc


def encode_fix(fix: Fix) -> bytes:
    document = {
        "v": SCHEMA_VERSION,
        "device_id": fix.device_id,
        "time": _iso(fix.time),
        "lon": fix.longitude,
        "lat": fix.latitude,
        "speed_kmh": fix.speed_kmh,
        "course": fix.course,
        "altitude_m": fix.altitude_m,
        "valid": fix.valid,
        "satellites": fix.satellites,
        "attributes": dict(fix.attributes),
    }
    return json.dumps(document, separators=(",", ":"), default=str).encode()


def decode_fix(payload: bytes | str) -> Fix:
    """Parse a position payload; raises PayloadError when it is invalid."""
    document = _load(payload)
    try:
        return Fix(
            device_id=str(document["device_id"]),
            time=_parse_time(document["time"]),
            latitude=float(document["lat"]),
            longitude=float(document["lon"]),
            speed_kmh=float(document.get("speed_kmh") or 0.0),
            course=_optional_float(document.get("course")),
            altitude_m=_optional_float(document.get("altitude_m")),
            valid=bool(document.get("valid", True)),
            satellites=_optional_int(document.get("satellites")),
            attributes=document.get("attributes") or EMPTY,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"invalid position payload: {exc!r}") from exc


def encode_event(event: DeviceEvent) -> bytes:
    document = {
        "v": SCHEMA_VERSION,
        "device_id": event.device_id,
        "time": _iso(event.time),
        "kind": event.kind,
        "attributes": dict(event.attributes),
    }
    return json.dumps(document, separators=(",", ":"), default=str).encode()


def decode_event(payload: bytes | str) -> DeviceEvent:
    """Parse a device event payload; raises PayloadError when it is invalid."""
    document = _load(payload)
    try:
        kind = document["kind"]
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"invalid kind {kind!r}: expected a non-empty string")
        attributes = document.get("attributes") or EMPTY
        if not isinstance(attributes, Mapping):
            raise ValueError(f"invalid attributes {attributes!r}: expected an object")
        return DeviceEvent(
            device_id=str(document["device_id"]),
            time=_parse_time(document["time"]),
            kind=kind,
            attributes=attributes,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(f"invalid event payload: {exc!r}") from exc


def _load(payload: bytes | str) -> Mapping[str, Any]:
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"payload is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PayloadError("payload is not a JSON object")
    if document.get("v", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise PayloadError(
            f"unsupported schema version {document.get('v')!r}; "
            f"this reader knows {SCHEMA_VERSION}"
        )
    return document


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
