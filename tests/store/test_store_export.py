"""Exports parse back with standard readers: json, csv and xml.etree."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from postloan.model import Fix
from postloan.store import Store
from postloan.store.export import (
    CSV_HEADER,
    GPX_NAMESPACE,
    format_time,
    to_geojson,
    write_csv,
    write_geojson,
    write_gpx,
)

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
GPX = f"{{{GPX_NAMESPACE}}}"


def fix(seconds: float, lat: float, lon: float, **fields: Any) -> Fix:
    device_id = fields.pop("device_id", "860000000000001")
    return Fix(device_id, T0 + timedelta(seconds=seconds), lat, lon, **fields)


LINE = [
    fix(0, 22.5, 114.05, speed_kmh=0.0, course=None),
    fix(10, 22.501, 114.052, speed_kmh=36.5, course=45.0, valid=False),
    fix(20.5, 22.502, 114.054, speed_kmh=40.0, course=90.0, altitude_m=12.5),
]
PARKED = [fix(s, 22.5, 114.05) for s in (0, 30, 60)]


def geojson_via_writer(fixes: list[Fix], as_points: bool = False) -> Any:
    out = io.StringIO()
    write_geojson(iter(fixes), out, as_points=as_points)
    return json.loads(out.getvalue())


def test_to_geojson_line_is_lon_lat() -> None:
    feature = to_geojson(LINE)

    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "LineString"
    assert feature["geometry"]["coordinates"] == [
        [f.longitude, f.latitude] for f in LINE
    ]


def test_to_geojson_line_properties() -> None:
    properties = to_geojson(LINE)["properties"]

    assert properties == {
        "device_id": "860000000000001",
        "start": "2024-05-01T08:00:00Z",
        "end": "2024-05-01T08:00:20.500000Z",
        "fixes": 3,
    }


def test_to_geojson_single_fix_is_point() -> None:
    feature = to_geojson(LINE[:1])

    assert feature["geometry"] == {"type": "Point", "coordinates": [114.05, 22.5]}
    assert feature["properties"]["fixes"] == 1


def test_to_geojson_parked_track_is_point() -> None:
    feature = to_geojson(PARKED)

    assert feature["geometry"] == {"type": "Point", "coordinates": [114.05, 22.5]}
    assert feature["properties"]["end"] == "2024-05-01T08:01:00Z"
    assert feature["properties"]["fixes"] == 3


@pytest.mark.parametrize("as_points", [False, True])
def test_to_geojson_empty_track_is_empty_collection(as_points: bool) -> None:
    result = to_geojson([], as_points=as_points)

    assert result == {"type": "FeatureCollection", "features": []}


def test_to_geojson_points_carry_fix_properties() -> None:
    collection = to_geojson(LINE, as_points=True)
    second = collection["features"][1]

    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == 3
    assert second["geometry"] == {"type": "Point", "coordinates": [114.052, 22.501]}
    assert second["properties"] == {
        "device_id": "860000000000001",
        "time": "2024-05-01T08:00:10Z",
        "speed": 36.5,
        "course": 45.0,
        "valid": False,
    }


def test_to_geojson_line_rejects_two_devices() -> None:
    mixed = [LINE[0], fix(5, 1.0, 2.0, device_id="other")]

    with pytest.raises(ValueError, match="as_points=True"):
        to_geojson(mixed)


def test_to_geojson_points_allow_two_devices() -> None:
    mixed = [LINE[0], fix(5, 1.0, 2.0, device_id="other")]

    collection = to_geojson(mixed, as_points=True)

    assert len(collection["features"]) == 2


@pytest.mark.parametrize(
    ("fixes", "as_points"),
    [
        pytest.param([], False, id="empty"),
        pytest.param(LINE[:1], False, id="single"),
        pytest.param(PARKED, False, id="parked"),
        pytest.param(LINE, False, id="line"),
        pytest.param(PARKED + LINE[1:], False, id="parked-then-moving"),
        pytest.param(LINE, True, id="points"),
        pytest.param([], True, id="points-empty"),
    ],
)
def test_write_geojson_matches_to_geojson(fixes: list[Fix], as_points: bool) -> None:
    assert geojson_via_writer(fixes, as_points) == to_geojson(
        fixes, as_points=as_points
    )


def test_write_geojson_line_rejects_two_devices() -> None:
    mixed = [*PARKED, fix(90, 1.0, 2.0, device_id="other")]

    with pytest.raises(ValueError, match="one device"):
        write_geojson(mixed, io.StringIO())


def test_write_geojson_rejects_nan_coordinate() -> None:
    with pytest.raises(ValueError):
        write_geojson([fix(0, float("nan"), 2.0)], io.StringIO(), as_points=True)


def test_write_csv_parses_back() -> None:
    out = io.StringIO(newline="")

    write_csv(LINE, out)
    out.seek(0)
    reader = csv.DictReader(out)
    rows = list(reader)

    assert tuple(reader.fieldnames or ()) == CSV_HEADER
    assert len(rows) == 3
    assert rows[0]["time"] == "2024-05-01T08:00:00Z"
    assert rows[0]["course"] == ""
    assert rows[0]["altitude_m"] == ""
    assert rows[0]["satellites"] == ""
    assert rows[1]["valid"] == "false"
    assert float(rows[2]["latitude"]) == LINE[2].latitude
    assert float(rows[2]["longitude"]) == LINE[2].longitude
    assert float(rows[2]["altitude_m"]) == 12.5


def test_write_csv_empty_track_has_header_only() -> None:
    out = io.StringIO(newline="")

    write_csv([], out)

    assert out.getvalue() == ",".join(CSV_HEADER) + "\r\n"


def parse_gpx(fixes: list[Fix]) -> ET.Element:
    out = io.StringIO()
    write_gpx(fixes, out)
    return ET.fromstring(out.getvalue().encode())


def test_write_gpx_parses_back() -> None:
    root = parse_gpx(LINE)
    points = root.findall(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt")

    assert root.tag == f"{GPX}gpx"
    assert root.get("version") == "1.1"
    assert len(points) == 3
    assert float(points[1].get("lat", "")) == 22.501
    assert float(points[1].get("lon", "")) == 114.052
    assert points[1].findtext(f"{GPX}time") == "2024-05-01T08:00:10Z"
    assert points[1].findtext(f"{GPX}fix") == "none"
    assert points[2].findtext(f"{GPX}ele") == "12.5"


def test_write_gpx_track_per_device() -> None:
    fixes = [*LINE, fix(30, 1.0, 2.0, device_id="a<b&c")]

    tracks = parse_gpx(fixes).findall(f"{GPX}trk")

    assert [t.findtext(f"{GPX}name") for t in tracks] == ["860000000000001", "a<b&c"]


def test_write_gpx_coordinates_without_exponent() -> None:
    root = parse_gpx([fix(0, 1e-7, -5e-5, altitude_m=1e-6)])
    point = root.find(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt")

    assert point is not None
    assert point.get("lat") == "0.0000001"
    assert point.get("lon") == "-0.00005"
    assert point.findtext(f"{GPX}ele") == "0.000001"


def test_write_gpx_empty_track_is_valid_document() -> None:
    root = parse_gpx([])

    assert root.tag == f"{GPX}gpx"
    assert root.findall(f"{GPX}trk") == []


def test_format_time_cases() -> None:
    beijing = timezone(timedelta(hours=8))

    assert format_time(T0) == "2024-05-01T08:00:00Z"
    assert format_time(T0.replace(microsecond=7)) == "2024-05-01T08:00:00.000007Z"
    assert (
        format_time(datetime(2024, 5, 1, 16, tzinfo=beijing)) == "2024-05-01T08:00:00Z"
    )


def test_format_time_rejects_naive() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        format_time(datetime(2024, 5, 1))


def test_export_from_store_round_trips(store: Store) -> None:
    fixes = [
        fix(i * 0.000001, 22.5 + i / 3, 114.05 - i / 7, course=i / 9) for i in range(50)
    ]
    store.write_fixes(fixes)
    out = io.StringIO(newline="")

    write_csv(store.iter_track(fixes[0].device_id, batch=7), out)
    out.seek(0)
    rows = list(csv.DictReader(out))

    assert [float(r["latitude"]) for r in rows] == [f.latitude for f in fixes]
    assert [float(r["course"]) for r in rows] == [f.course for f in fixes]
    assert [r["time"] for r in rows] == [format_time(f.time) for f in fixes]
