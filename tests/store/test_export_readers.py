"""Exports of a real stored track open in the standard readers of each format.

GeoJSON is checked by the `geojson` package's validator and read by shapely,
GPX is read by gpxpy, and CSV by the standard library's DictReader. The track
is a recorded 1 Hz drive (the vendored Munich trajectory), written to the
store and exported through the streamed `Store.iter_track`.
"""

from __future__ import annotations

import csv
import io
import json

import geojson
import gpxpy
import pytest
from shapely.geometry import shape

from postloan.model import Fix
from postloan.simulators import load_trajectories, vendored_trajectories
from postloan.store import Store
from postloan.store.export import CSV_HEADER, write_csv, write_geojson, write_gpx

DEVICE = "353451000000011"


@pytest.fixture(scope="module")
def recorded() -> list[Fix]:
    paths = [p for p in vendored_trajectories() if "munich" in str(p)]
    trajectory = load_trajectories(paths[0])[0]
    return [
        Fix(
            DEVICE,
            point.time,
            point.latitude,
            point.longitude,
            speed_kmh=point.speed_kmh or 0.0,
            course=point.course,
            altitude_m=point.altitude_m,
        )
        for point in trajectory.points
    ]


@pytest.fixture
def stored(store: Store, recorded: list[Fix]) -> Store:
    store.write_fixes(recorded)
    return store


def test_geojson_line_is_valid(stored: Store, recorded: list[Fix]) -> None:
    out = io.StringIO()
    write_geojson(stored.iter_track(DEVICE, batch=100), out)
    feature = geojson.loads(out.getvalue())
    line = shape(feature["geometry"])

    assert feature.is_valid, feature.errors()
    assert line.geom_type == "LineString"
    assert len(line.coords) == len(recorded)
    assert line.coords[0] == pytest.approx(
        (recorded[0].longitude, recorded[0].latitude), abs=1e-6
    )


def test_geojson_points_are_valid(stored: Store, recorded: list[Fix]) -> None:
    out = io.StringIO()
    write_geojson(stored.iter_track(DEVICE, batch=100), out, as_points=True)
    collection = geojson.loads(out.getvalue())

    assert collection.is_valid, collection.errors()
    assert len(collection["features"]) == len(recorded)
    assert json.loads(out.getvalue())["type"] == "FeatureCollection"


def test_gpx_opens_in_gpxpy(stored: Store, recorded: list[Fix]) -> None:
    out = io.StringIO()
    write_gpx(stored.iter_track(DEVICE, batch=100), out)
    gpx = gpxpy.parse(out.getvalue())
    points = [p for track in gpx.tracks for s in track.segments for p in s.points]

    assert len(gpx.tracks) == 1
    assert len(points) == len(recorded)
    assert [p.time for p in points] == [f.time for f in recorded]
    assert points[-1].latitude == pytest.approx(recorded[-1].latitude, abs=1e-6)
    # gpxpy's own length, in metres, of a drive of about 13.6 km.
    assert 13_000 < gpx.length_2d() < 14_000


def test_csv_has_header_and_every_fix(stored: Store, recorded: list[Fix]) -> None:
    out = io.StringIO(newline="")
    write_csv(stored.iter_track(DEVICE, batch=100), out)
    out.seek(0)
    reader = csv.DictReader(out)
    rows = list(reader)

    assert tuple(reader.fieldnames or ()) == CSV_HEADER
    assert len(rows) == len(recorded)
    assert rows[0]["device_id"] == DEVICE
    assert float(rows[-1]["longitude"]) == pytest.approx(recorded[-1].longitude)
