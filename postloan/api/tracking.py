"""Devices, vehicles, tracks, latest positions, events and downlink commands."""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from datetime import datetime
from enum import StrEnum
from itertools import islice
from typing import Annotated, Any, TextIO

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from postloan.api.context import (
    ID_PATTERN,
    Admin,
    ApiError,
    Context,
    Reader,
    UtcTime,
    not_found,
)
from postloan.commands import KINDS, CommandError, build_payload
from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.store import COMMAND_STATUSES, CommandRecord
from postloan.store.export import to_geojson, write_csv, write_geojson, write_gpx
from postloan.times import format_optional, format_time

log = logging.getLogger(__name__)
router = APIRouter(tags=["tracking"])

DeviceId = Annotated[str, Path(pattern=ID_PATTERN, max_length=100)]
Since = Annotated[
    UtcTime | None, Query(description="first fix time, inclusive; ISO 8601 with Z")
]
Until = Annotated[
    UtcTime | None, Query(description="last fix time, exclusive; ISO 8601 with Z")
]

# Largest page of fixes a JSON request returns; exports stream without limit.
MAX_PAGE = 10_000


class ExportFormat(StrEnum):
    GEOJSON = "geojson"
    GPX = "gpx"
    CSV = "csv"


_EXPORTS: dict[ExportFormat, tuple[Callable[[Iterable[Fix], TextIO], None], str]] = {
    ExportFormat.GEOJSON: (write_geojson, "application/geo+json"),
    ExportFormat.GPX: (write_gpx, "application/gpx+xml"),
    ExportFormat.CSV: (write_csv, "text/csv; charset=utf-8"),
}


def fix_record(fix: Fix) -> dict[str, Any]:
    return {
        "device_id": fix.device_id,
        "time": format_time(fix.time),
        "longitude": fix.longitude,
        "latitude": fix.latitude,
        "speed_kmh": fix.speed_kmh,
        "course": fix.course,
        "altitude_m": fix.altitude_m,
        "valid": fix.valid,
        "satellites": fix.satellites,
        "attributes": dict(fix.attributes),
    }


def json_value(value: Any) -> Any:
    """Return `value` with every mapping (a read-only `MappingProxyType`
    included) as a dict, sequences as lists and times as ISO 8601 text.

    `dataclasses.asdict` deep-copies field values and so raises on a
    `MappingProxyType`, which decoders use for read-only attributes.
    """
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, datetime):
        return format_time(value)
    return value


def _dataclass_record(instance: Any) -> dict[str, Any]:
    return {f.name: json_value(getattr(instance, f.name)) for f in fields(instance)}


def _event_record(event: DeviceEvent | FenceEvent) -> dict[str, Any]:
    return _dataclass_record(event)


def command_record(command: CommandRecord) -> dict[str, Any]:
    record = _dataclass_record(command)
    for name in ("created_at", "updated_at", "sent_at"):
        record[name] = format_optional(getattr(command, name))
    return record


@router.get("/devices")
def list_devices(context: Context, user: Reader) -> list[dict[str, Any]]:
    """Trackers the gateway has seen, with the protocol each last spoke."""
    return [
        {
            "device_id": d.device_id,
            "protocol": d.protocol,
            "first_seen": format_time(d.first_seen),
            "last_seen": format_time(d.last_seen),
        }
        for d in context.store.devices()
    ]


@router.get("/vehicles")
def list_vehicles(context: Context, user: Reader) -> list[dict[str, Any]]:
    """Vehicles with the devices fitted to them now."""
    now = context.clock()
    return [
        {
            "vehicle_id": v.vehicle_id,
            "vin": v.vin,
            "plate": v.plate,
            "devices": context.store.devices_at(v.vehicle_id, now),
        }
        for v in context.store.vehicles()
    ]


@router.get("/positions/latest")
def latest_positions(context: Context, user: Reader) -> list[dict[str, Any]]:
    """Return each device's fix with the latest fix time."""
    return [fix_record(fix) for fix in context.store.latest_positions()]


@router.get("/devices/{device_id}/track")
def track_page(
    device_id: DeviceId,
    context: Context,
    user: Reader,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
) -> dict[str, Any]:
    """Return one page of a track as GeoJSON points.

    ``next_since`` is the time of the first fix after the page, to pass as
    ``since`` for the next page, or null after the last page.
    """
    fixes = list(islice(context.store.iter_track(device_id, since, until), limit + 1))
    page = fixes[:limit]
    document = to_geojson(page, as_points=True)
    more = len(fixes) > limit
    document["next_since"] = format_time(fixes[limit].time) if more else None
    return document


@router.get("/devices/{device_id}/track.{export}")
def export_track(
    device_id: DeviceId,
    export: ExportFormat,
    context: Context,
    user: Reader,
    since: Since = None,
    until: Until = None,
) -> StreamingResponse:
    """Stream a whole track window as GeoJSON, GPX 1.1 or CSV."""
    writer, media_type = _EXPORTS[export]
    fixes = context.store.iter_track(device_id, since, until)
    filename = f"{device_id}.{export.value}"
    return StreamingResponse(
        _stream(writer, fixes),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


class _QueueWriter(io.TextIOBase):
    """A text sink that hands full chunks to a bounded queue."""

    def __init__(self, chunks: queue.Queue[str | None], stop: threading.Event) -> None:
        self._chunks = chunks
        self._stop = stop
        self._buffer: list[str] = []
        self._size = 0

    def write(self, text: str) -> int:
        self._buffer.append(text)
        self._size += len(text)
        if self._size >= 64 * 1024:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self.put("".join(self._buffer))
            self._buffer, self._size = [], 0

    def put(self, item: str | None) -> None:
        """Queue a chunk (None ends the stream), waiting while the client reads."""
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise ConnectionAbortedError("export client went away")


def _stream(
    writer: Callable[[Iterable[Fix], TextIO], None], fixes: Iterator[Fix]
) -> Iterator[str]:
    """Run an export writer in a thread and yield its output in 64 KiB chunks.

    The queue takes at most 8 chunks, so a slow client slows the reader
    instead of the whole track piling up in memory.
    """
    chunks: queue.Queue[str | None] = queue.Queue(maxsize=8)
    stop = threading.Event()
    sink = _QueueWriter(chunks, stop)

    def produce() -> None:
        try:
            writer(fixes, sink)  # type: ignore[arg-type]
            sink.flush()
        except ConnectionAbortedError:
            return
        except Exception:
            # The status line is already sent, so the client sees a cut file.
            log.exception("track export failed; the response is truncated")
        finally:
            if not stop.is_set():
                sink.put(None)

    thread = threading.Thread(target=produce, name="api[export].writer", daemon=True)
    thread.start()
    try:
        while (chunk := chunks.get()) is not None:
            yield chunk
    finally:
        stop.set()
        thread.join(timeout=5)


@router.get("/devices/{device_id}/events")
def device_events(
    device_id: DeviceId,
    context: Context,
    user: Reader,
    since: Since = None,
    until: Until = None,
) -> list[dict[str, Any]]:
    """Device events (login, heartbeat, alarms, status changes) in time order."""
    events = context.store.device_events(device_id, since, until)
    return [_event_record(e) for e in events]


@router.get("/fence-events")
def fence_events(
    context: Context,
    user: Reader,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    since: Since = None,
    until: Until = None,
) -> list[dict[str, Any]]:
    """Fence enter, exit and dwell events in time order."""
    events = context.store.fence_events(device_id, since, until)
    return [_event_record(e) for e in events]


class CommandRequest(BaseModel):
    """A downlink command to queue for a device, as ``postloan command`` takes it."""

    kind: str = Field(description="one of " + ", ".join(KINDS))
    reason: str = Field(min_length=1, max_length=500)
    text: str | None = Field(default=None, max_length=200)
    seconds: int | None = None
    command_word: int | None = None
    ttl_s: float = Field(default=300.0, gt=0, le=86_400, description="seconds")


@router.get("/commands")
def list_commands(
    context: Context,
    user: Reader,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> list[dict[str, Any]]:
    """Downlink commands and their outcomes, ordered by id."""
    if status is not None and status not in COMMAND_STATUSES:
        allowed = ", ".join(sorted(COMMAND_STATUSES))
        raise ApiError(
            422,
            f"invalid status {status!r}; expected one of {allowed}",
            field="status",
            value=status,
        )
    try:
        commands = context.store.commands(device_id, status)
    except ValueError as exc:
        raise ApiError(422, str(exc), field="status", value=status) from exc
    return [command_record(c) for c in commands]


@router.post("/devices/{device_id}/commands", status_code=201)
def queue_command(
    device_id: DeviceId, body: CommandRequest, context: Context, user: Admin
) -> dict[str, Any]:
    """Queue a downlink command; the gateway sends it when the device is online.

    A fuel cut-off queued here skips the two-person immobilize approval, so
    it is for admins only; staff use ``/immobilize`` requests instead.
    """
    device = next(
        (d for d in context.store.devices() if d.device_id == device_id), None
    )
    if device is None:
        raise not_found("device", "device_id", device_id)
    now = context.clock()
    try:
        payload = build_payload(
            device.protocol,
            body.kind,
            text=body.text,
            seconds=body.seconds,
            command_word=body.command_word,
            ttl_s=body.ttl_s,
            now=now,
        )
    except CommandError as exc:
        raise ApiError(422, str(exc), field="kind", value=body.kind) from exc
    payload.update(reason=body.reason, requested_by=user.user)
    command_id = context.store.add_command(
        device_id, device.protocol, body.kind, payload, created_at=now
    )
    context.record(user, f"command.{body.kind}", str(command_id), device_id=device_id)
    return {"command_id": command_id, "status": "queued"}
