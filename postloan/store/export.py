"""Track exports for analysts: GeoJSON (RFC 7946), CSV and GPX 1.1.

Every writer takes any iterable of fixes and writes as it reads, so an export
of a long window through `Store.iter_track` never keeps the whole track in
memory. Fixes are written in the order given, which for a track from the
store is fix-time order. Times are ISO 8601 in UTC with a ``Z`` suffix.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any, TextIO
from xml.sax.saxutils import escape, quoteattr

from postloan.model import Fix
from postloan.times import format_time

CSV_HEADER = (
    "device_id",
    "time",
    "latitude",
    "longitude",
    "speed_kmh",
    "course",
    "altitude_m",
    "valid",
    "satellites",
)
GPX_NAMESPACE = "http://www.topografix.com/GPX/1/1"

# NaN has no JSON form (RFC 8259 §6), so a fix carrying one fails the export
# instead of producing a file that strict parsers reject.
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def to_geojson(fixes: Iterable[Fix], *, as_points: bool = False) -> dict[str, Any]:
    """Build a GeoJSON object for a track; coordinates are [longitude, latitude].

    By default the result is one Feature with a LineString through the fixes
    of one device, with properties ``device_id``, ``start``, ``end`` and
    ``fixes`` (the count). A track that never leaves its first position (one
    fix, or a parked car) gets a Point instead, because a LineString needs two
    distinct positions to be valid. With `as_points`, the result is a
    FeatureCollection of one Point per fix with properties ``device_id``,
    ``time``, ``speed`` (km/h), ``course`` (degrees) and ``valid``. No fixes
    give an empty FeatureCollection either way.

    Raises ValueError when a line would join fixes of different devices.
    """
    track = list(fixes)
    if not track:
        return {"type": "FeatureCollection", "features": []}
    if as_points:
        features = [_point_feature(fix) for fix in track]
        return {"type": "FeatureCollection", "features": features}
    for fix in track:
        _check_same_device(track[0], fix)
    first_position = _position(track[0])
    if all(_position(fix) == first_position for fix in track):
        geometry: dict[str, Any] = {"type": "Point", "coordinates": first_position}
    else:
        coordinates = [_position(fix) for fix in track]
        geometry = {"type": "LineString", "coordinates": coordinates}
    properties = _track_properties(track[0], track[-1], len(track))
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def write_geojson(
    fixes: Iterable[Fix], out: TextIO, *, as_points: bool = False
) -> None:
    """Write the same GeoJSON as `to_geojson`, one fix at a time.

    When the fixes of a line turn out to come from two devices, ValueError is
    raised with part of the document already written.
    """
    iterator = iter(fixes)
    first = next(iterator, None)
    if first is None:
        out.write(_encode({"type": "FeatureCollection", "features": []}))
    elif as_points:
        _write_points(first, iterator, out)
    else:
        _write_track(first, iterator, out)


def _write_points(first: Fix, rest: Iterator[Fix], out: TextIO) -> None:
    out.write('{"type":"FeatureCollection","features":[')
    out.write(_encode(_point_feature(first)))
    for fix in rest:
        out.write(",")
        out.write(_encode(_point_feature(fix)))
    out.write("]}")


def _write_track(first: Fix, rest: Iterator[Fix], out: TextIO) -> None:
    # Fixes at the first position are held back until a second position
    # shows that the track is a line. They share one coordinate pair, so
    # counting them is enough, even for a car parked for weeks.
    first_position = _position(first)
    at_first, last = 1, first
    moved: Fix | None = None
    for fix in rest:
        _check_same_device(first, fix)
        if _position(fix) != first_position:
            moved = fix
            break
        at_first, last = at_first + 1, fix

    if moved is None:
        geometry = {"type": "Point", "coordinates": first_position}
        properties = _track_properties(first, last, at_first)
        out.write(
            _encode({"type": "Feature", "geometry": geometry, "properties": properties})
        )
        return

    out.write('{"type":"Feature","geometry":{"type":"LineString","coordinates":[')
    out.write(",".join([_encode(first_position)] * at_first))
    count, last = at_first + 1, moved
    out.write(f",{_encode(_position(moved))}")
    for fix in rest:
        _check_same_device(first, fix)
        out.write(f",{_encode(_position(fix))}")
        count, last = count + 1, fix

    out.write(']},"properties":')
    out.write(_encode(_track_properties(first, last, count)))
    out.write("}")


def _position(fix: Fix) -> list[float]:
    return [fix.longitude, fix.latitude]


def _point_feature(fix: Fix) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": _position(fix)},
        "properties": {
            "device_id": fix.device_id,
            "time": format_time(fix.time),
            "speed": fix.speed_kmh,
            "course": fix.course,
            "valid": fix.valid,
        },
    }


def _track_properties(first: Fix, last: Fix, count: int) -> dict[str, Any]:
    return {
        "device_id": first.device_id,
        "start": format_time(first.time),
        "end": format_time(last.time),
        "fixes": count,
    }


def _check_same_device(first: Fix, fix: Fix) -> None:
    if fix.device_id != first.device_id:
        raise ValueError(
            f"a track line needs fixes of one device, got {first.device_id!r} "
            f"and {fix.device_id!r}; export with as_points=True instead"
        )


def write_csv(fixes: Iterable[Fix], out: TextIO) -> None:
    """Write one CSV row per fix under CSV_HEADER.

    Missing values are empty fields and ``valid`` is ``true`` or ``false``.
    Rows end in CRLF as RFC 4180 specifies, so open a file with ``newline=""``.
    """
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for fix in fixes:
        writer.writerow(
            (
                fix.device_id,
                format_time(fix.time),
                repr(fix.latitude),
                repr(fix.longitude),
                repr(fix.speed_kmh),
                _optional(fix.course),
                _optional(fix.altitude_m),
                "true" if fix.valid else "false",
                "" if fix.satellites is None else str(fix.satellites),
            )
        )


def _optional(value: float | None) -> str:
    return "" if value is None else repr(value)


def write_gpx(fixes: Iterable[Fix], out: TextIO) -> None:
    """Write a GPX 1.1 document with one ``trk`` per run of one device's fixes.

    Each ``trkpt`` carries ``ele`` (altitude in metres) and ``sat`` when
    known, its ``time``, and ``<fix>none</fix>`` for a fix the device marked
    invalid. GPX 1.1 has no speed or course element for track points, so
    those are left out; the CSV and GeoJSON exports carry them.
    """
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(f'<gpx version="1.1" creator="postloan" xmlns="{GPX_NAMESPACE}">\n')
    device_id: str | None = None
    for fix in fixes:
        if fix.device_id != device_id:
            if device_id is not None:
                out.write("</trkseg></trk>\n")
            device_id = fix.device_id
            out.write(f"<trk><name>{escape(device_id)}</name><trkseg>\n")
        out.write(_trkpt(fix))
    if device_id is not None:
        out.write("</trkseg></trk>\n")
    out.write("</gpx>\n")


def _trkpt(fix: Fix) -> str:
    # Child order follows the wptType sequence of the GPX 1.1 schema:
    # ele, time, ..., fix, sat.
    lat = quoteattr(_decimal(fix.latitude))
    lon = quoteattr(_decimal(fix.longitude))
    parts = [f"<trkpt lat={lat} lon={lon}>"]
    if fix.altitude_m is not None:
        parts.append(f"<ele>{_decimal(fix.altitude_m)}</ele>")
    parts.append(f"<time>{format_time(fix.time)}</time>")
    if not fix.valid:
        parts.append("<fix>none</fix>")
    if fix.satellites is not None:
        parts.append(f"<sat>{int(fix.satellites)}</sat>")
    parts.append("</trkpt>\n")
    return "".join(parts)


def _decimal(value: float) -> str:
    """Format a float exactly in xsd:decimal notation, which has no exponent."""
    return format(Decimal(repr(value)), "f")
