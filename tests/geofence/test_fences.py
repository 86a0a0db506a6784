"""Fence shapes, containment and GeoJSON import against vendored boundary files."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from geographiclib.geodesic import Geodesic
from shapely.geometry import Point, Polygon

from postloan.geofence import (
    INSIDE,
    MARGIN,
    OUTSIDE,
    CircleShape,
    Fence,
    FenceError,
    Role,
    circle_fence,
    corridor_fence,
    load_fences,
    polygon_fence,
)
from postloan.geofence.fences import (
    metres_per_degree,
    metres_per_degree_array,
    min_metres_per_degree,
    prepare_shapes,
    scale_floor,
)

BOUNDARIES = Path(__file__).resolve().parents[2] / "postloan" / "data" / "boundaries"
PORTUGAL = BOUNDARIES / "portugal_municipalities_caop_simplified.geojson"
WORLD = BOUNDARIES / "world_countries_ne_110m.geojson"
SWATH = BOUNDARIES / "antimeridian_unsplit_swath_issue164.json"

SQUARE = Polygon([(0, 0), (0.01, 0), (0.01, 0.01), (0, 0.01), (0, 0)])


def destination(
    lon: float, lat: float, azimuth: float, metres: float
) -> tuple[float, float]:
    """Return the point `metres` along the geodesic from (lon, lat), via
    GeographicLib (Karney 2013), as (lon, lat)."""
    result = Geodesic.WGS84.Direct(lat, lon, azimuth, metres)
    return result["lon2"], result["lat2"]


def feature(geometry: Any, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


@pytest.fixture(scope="module")
def portugal() -> dict[str, Fence]:
    return {fence.id: fence for fence in load_fences(PORTUGAL, id_property="DICO")}


@pytest.fixture(scope="module")
def world() -> dict[str, Fence]:
    fences = load_fences(WORLD, id_property="ADM0_A3", repair=True)
    return {fence.id: fence for fence in fences}


# --- containment cases -------------------------------------------------------


def test_polygon_inside() -> None:
    fence = polygon_fence("sq", SQUARE)

    assert fence.covers(0.005, 0.005)


def test_polygon_outside() -> None:
    fence = polygon_fence("sq", SQUARE)

    assert not fence.covers(0.02, 0.005)


def test_polygon_on_edge_counts_as_inside() -> None:
    fence = polygon_fence("sq", SQUARE)

    assert fence.covers(0.01, 0.005)


def test_polygon_on_vertex_counts_as_inside() -> None:
    fence = polygon_fence("sq", SQUARE)

    assert fence.covers(0.01, 0.01)


def test_polygon_edge_is_margin_zone_with_hysteresis() -> None:
    fence = polygon_fence("sq", SQUARE)

    zone = fence.shape.zone(0.01, 0.005, 50.0)

    assert zone == MARGIN


def test_polygon_zone_margin_is_in_metres(portugal: dict[str, Fence]) -> None:
    square = polygon_fence("sq", Polygon([(0, 0), (1, 0), (1, 1), (0, 1)]))
    east_edge = 1.0
    lon_40m, lat = destination(east_edge, 0.5, 270.0, 40.0)
    lon_60m, _ = destination(east_edge, 0.5, 270.0, 60.0)

    assert square.shape.zone(lon_40m, lat, 50.0) == MARGIN
    assert square.shape.zone(lon_60m, lat, 50.0) == INSIDE


def test_polygon_in_hole_is_outside(world: dict[str, Fence]) -> None:
    lesotho_point = world["LSO"].shape.geometry.representative_point()

    covered = world["ZAF"].covers(lesotho_point.x, lesotho_point.y)

    assert not covered


def test_multipolygon_exclave_is_inside(portugal: dict[str, Fence]) -> None:
    montijo = portugal["1507"]
    parts = sorted(montijo.shape.geometry.geoms, key=lambda part: part.area)
    exclave_point = parts[0].representative_point()

    assert len(parts) == 2
    assert montijo.covers(exclave_point.x, exclave_point.y)


def test_split_antimeridian_multipolygon_both_sides(world: dict[str, Fence]) -> None:
    # Taveuni and Vanua Levu, Fiji: land on both sides of 180 (RFC 7946 split).
    fiji = world["FJI"]

    assert fiji.covers(179.9, -16.3)
    assert fiji.covers(-179.95, -16.3)
    assert not fiji.covers(179.9, -15.0)


def test_split_antimeridian_seam_is_not_a_boundary(world: dict[str, Fence]) -> None:
    fiji = world["FJI"]

    zone_east = fiji.shape.zone(179.99999, -16.3, 50.0)
    zone_west = fiji.shape.zone(-179.99999, -16.3, 50.0)

    assert zone_east == INSIDE
    assert zone_west == INSIDE


def test_unsplit_antimeridian_polygon_is_split() -> None:
    ring = [
        [179.0, -17.0],
        [-179.0, -17.0],
        [-179.0, -16.0],
        [179.0, -16.0],
        [179.0, -17.0],
    ]
    [fence] = load_fences(feature({"type": "Polygon", "coordinates": [ring]}, id="am"))

    assert fence.covers(179.5, -16.5)
    assert fence.covers(-179.5, -16.5)
    assert fence.covers(180.0, -16.5)
    assert not fence.covers(0.0, -16.5)
    assert not fence.covers(178.9, -16.5)


def test_unsplit_antimeridian_swath_enclosing_pole_rejected() -> None:
    document = json.loads(SWATH.read_text())

    with pytest.raises(FenceError, match="encloses a pole"):
        load_fences({"type": "Feature", "id": "swath", "geometry": document})


def test_circle_equator_contains_499m_not_501m() -> None:
    fence = circle_fence("c", 10.0, 0.0, 500.0)

    for azimuth in range(0, 360, 15):
        assert fence.covers(*destination(10.0, 0.0, azimuth, 499.0)), azimuth
        assert not fence.covers(*destination(10.0, 0.0, azimuth, 501.0)), azimuth


def test_circle_latitude_60_contains_499m_not_501m() -> None:
    fence = circle_fence("c", 25.0, 60.0, 500.0)

    for azimuth in range(0, 360, 15):
        assert fence.covers(*destination(25.0, 60.0, azimuth, 499.0)), azimuth
        assert not fence.covers(*destination(25.0, 60.0, azimuth, 501.0)), azimuth


def test_circle_across_antimeridian() -> None:
    fence = circle_fence("c", 179.999, 10.0, 500.0)
    west_lon, lat = destination(179.999, 10.0, 90.0, 400.0)

    assert west_lon < -179.99
    assert fence.covers(west_lon, lat)


def test_corridor_width_is_total_width() -> None:
    fence = corridor_fence("road", [(-8.60, 41.10), (-8.60, 41.20)], 200.0)

    assert fence.covers(*destination(-8.60, 41.15, 90.0, 99.0))
    assert not fence.covers(*destination(-8.60, 41.15, 90.0, 101.0))
    assert fence.covers(*destination(-8.60, 41.15, 270.0, 99.0))


def test_corridor_round_end_caps() -> None:
    fence = corridor_fence("road", [(-8.60, 41.10), (-8.60, 41.20)], 200.0)

    assert fence.covers(*destination(-8.60, 41.20, 0.0, 99.0))
    assert not fence.covers(*destination(-8.60, 41.20, 45.0, 101.0))


def test_small_circle_margin_is_capped() -> None:
    fence = circle_fence("c", 0.0, 0.0, 60.0)

    margin = fence.shape.effective_margin(50.0)

    assert margin == 30.0


def test_evaluate_radius_keeps_zone(portugal: dict[str, Fence]) -> None:
    porto = portugal["1312"]

    zone, radius = porto.shape.evaluate(-8.61, 41.15, 50.0)
    moved = porto.shape.zone(-8.61 + radius * 0.7, 41.15 + radius * 0.7, 50.0)

    assert zone == INSIDE
    assert radius > 0.001
    assert moved == INSIDE


def test_circle_margin_band_radius_keeps_zone() -> None:
    fence = circle_fence("c", 0.0, 0.0, 200.0)
    lon, lat = destination(0.0, 0.0, 30.0, 220.0)

    zone, radius = fence.shape.evaluate(lon, lat, 50.0)
    moved = [
        fence.shape.zone(lon + radius * 0.99 * dx, lat + radius * 0.99 * dy, 50.0)
        for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1), (0.7, 0.7), (-0.7, -0.7)]
    ]

    assert zone == MARGIN
    assert radius > 0.0
    assert moved == [MARGIN] * 6


@pytest.mark.parametrize("lat", [0.0, 45.0, -60.0, 80.0])
def test_circle_reach_box_contains_reach(lat: float) -> None:
    circle = CircleShape(10.0, lat, 500.0)
    box = circle.reach_box(50.0)
    rim = [destination(10.0, lat, azimuth, 549.99) for azimuth in range(0, 360, 15)]

    assert box is not None
    assert all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in rim)


def test_circle_reach_box_none_across_antimeridian() -> None:
    circle = CircleShape(179.999, 0.0, 500.0)

    assert circle.reach_box(50.0) is None


def test_scale_floor_is_a_lower_bound() -> None:
    latitudes = np.linspace(0.0, 90.0, 2001)

    floors = [scale_floor(float(lat)) for lat in latitudes]
    exact = [min_metres_per_degree(float(lat)) for lat in latitudes]

    assert all(f <= e for f, e in zip(floors, exact, strict=True))
    # Up to 60° a whole degree changes the scale by under 3.1 %.
    up_to_60 = slice(0, 1334)
    pairs = zip(floors[up_to_60], exact[up_to_60], strict=True)
    assert all(f >= e * 0.969 for f, e in pairs)


def test_metres_per_degree_array_matches_scalar() -> None:
    latitudes = np.linspace(-90.0, 90.0, 721)

    east, north = metres_per_degree_array(latitudes)
    scalar = np.array([metres_per_degree(float(lat)) for lat in latitudes])

    assert np.allclose(east, scalar[:, 0], rtol=1e-12, atol=1e-6)
    assert np.allclose(north, scalar[:, 1], rtol=1e-12)


def local_distance_m(fence: Fence, lon: float, lat: float) -> float:
    """Distance from the point to the fence's edges in the local plane at the
    point, by transforming the whole boundary (no bounds, no clipping)."""
    east, north = metres_per_degree(lat)
    edges = fence.shape.edges  # type: ignore[union-attr]
    local = shapely.transform(
        edges, lambda xy: (xy - np.array([lon, lat])) * np.array([east, north])
    )
    return float(local.distance(Point(0.0, 0.0)))


def near_edge_samples(fence: Fence, seed: int) -> list[tuple[float, float]]:
    """Return points 10-60 m from the fence's boundary in random directions,
    around the limit of a 50 m margin."""
    boundary = fence.shape.geometry.boundary
    rng = np.random.default_rng(seed)
    samples = []
    for fraction in rng.uniform(0.0, 1.0, 150):
        edge = boundary.interpolate(fraction, normalized=True)
        for metres in (10.0, 45.0, 49.0, 51.0, 60.0):
            samples.append(destination(edge.x, edge.y, rng.uniform(0, 360), metres))
    return samples


def expected_zone(fence: Fence, lon: float, lat: float, margin_m: float) -> int:
    if local_distance_m(fence, lon, lat) < margin_m:
        return MARGIN
    return INSIDE if fence.shape.geometry.covers(Point(lon, lat)) else OUTSIDE


@pytest.mark.parametrize("fence_id", ["1312", "1106"])
def test_polygon_zone_near_edges_matches_local_distance(
    portugal: dict[str, Fence], fence_id: str
) -> None:
    fence = portugal[fence_id]

    for lon, lat in near_edge_samples(fence, seed=7):
        assert fence.shape.zone(lon, lat, 50.0) == expected_zone(fence, lon, lat, 50.0)


def test_polygon_zone_near_edges_at_high_latitude() -> None:
    # At 70°N a degree of longitude is a third of a degree of latitude, so
    # the two bounds on the local distance lie far apart.
    square = Polygon([(20, 70), (21, 70), (21, 70.5), (20, 70.5)])
    fence = polygon_fence("north", square)

    for lon, lat in near_edge_samples(fence, seed=3):
        assert fence.shape.zone(lon, lat, 50.0) == expected_zone(fence, lon, lat, 50.0)


def test_polygon_near_boxes_add_seam_copies(world: dict[str, Fence]) -> None:
    fiji = world["FJI"].shape
    square = polygon_fence("sq", SQUARE).shape

    assert len(fiji.near_boxes) == 3 * len(fiji.boxes)  # type: ignore[union-attr]
    assert square.near_boxes == square.boxes  # type: ignore[union-attr]


def test_prepare_shapes_builds_edges_once() -> None:
    fence = polygon_fence("sq", SQUARE)

    prepare_shapes([fence.shape])
    edges = fence.shape.__dict__.get("edges")
    prepare_shapes([fence.shape])

    assert edges is not None
    assert fence.shape.__dict__["edges"] is edges
    assert fence.shape.__dict__["_prepared"] is True


# --- GeoJSON import -----------------------------------------------------------


def test_load_portugal_municipalities(portugal: dict[str, Fence]) -> None:
    assert len(portugal) == 278
    assert portugal["1312"].properties["Concelho"] == "PORTO"


def test_load_bare_geometry_takes_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "depot.geojson"
    path.write_text(
        json.dumps({"type": "Polygon", "coordinates": [list(SQUARE.exterior.coords)]})
    )

    [fence] = load_fences(path)

    assert fence.id == "depot"


def test_load_roles_and_assignment() -> None:
    document = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "pawn",
                "geometry": {"type": "Point", "coordinates": [-8.6, 41.15]},
                "properties": {
                    "radius_m": 150,
                    "role": "risk",
                    "applies_to": "group:fleet-a",
                },
            },
            feature(
                {"type": "LineString", "coordinates": [[-8.6, 41.1], [-8.5, 41.2]]},
                id="route",
                width_m=300,
                applies_to=["vehicle:V1", "device:D2"],
            ),
        ],
    }

    pawn, route = load_fences(document)

    assert pawn.role is Role.RISK
    assert pawn.applies_to == frozenset({"group:fleet-a"})
    assert route.role is Role.PERMITTED
    assert route.applies_to == frozenset({"vehicle:V1", "device:D2"})
    assert route.shape.kind == "corridor"


def test_load_id_falls_back_to_properties_id() -> None:
    document = feature({"type": "Point", "coordinates": [0, 0]}, id="p-1", radius_m=10)

    [fence] = load_fences(document)

    assert fence.id == "p-1"


INVALID_CASES = [
    ("null geometry", {"geometry": None}, "geometry is null"),
    (
        "unclosed ring",
        {
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]],
            }
        },
        "ring 0 is not closed",
    ),
    (
        "too few points",
        {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}},
        "at least 4",
    ),
    (
        "self-intersection",
        {
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
            }
        },
        "Self-intersection",
    ),
    (
        "latitude out of range",
        {
            "geometry": {"type": "Point", "coordinates": [10, 91]},
            "properties": {"radius_m": 5},
        },
        "out of range",
    ),
    (
        "longitude out of range",
        {
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [181, 0], [1, 1], [0, 0]]],
            }
        },
        "out of range",
    ),
    (
        "circle without radius",
        {"geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {}},
        "radius_m",
    ),
    (
        "corridor with one point",
        {
            "geometry": {"type": "LineString", "coordinates": [[0, 0], [0, 0]]},
            "properties": {"width_m": 10},
        },
        "at least 2",
    ),
    (
        "unknown role",
        {
            "geometry": {"type": "Point", "coordinates": [0, 0]},
            "properties": {"radius_m": 5, "role": "vip"},
        },
        "role 'vip'",
    ),
    (
        "bad selector",
        {
            "geometry": {"type": "Point", "coordinates": [0, 0]},
            "properties": {"radius_m": 5, "applies_to": "fleet"},
        },
        "applies_to entry 'fleet'",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "message"), INVALID_CASES, ids=[c[0] for c in INVALID_CASES]
)
def test_load_invalid_feature_names_feature(
    case: str, change: dict[str, Any], message: str
) -> None:
    good = feature({"type": "Point", "coordinates": [0, 0]}, radius_m=5)
    bad = copy.deepcopy(good)
    bad.update(change)
    bad["id"] = "broken"
    document = {"type": "FeatureCollection", "features": [dict(good, id="fine"), bad]}

    with pytest.raises(FenceError) as caught:
        load_fences(document)

    assert caught.value.index == 1
    assert caught.value.fence_id == "broken"
    assert message in str(caught.value)
    assert "feature 1 (id 'broken')" in str(caught.value)


def test_load_missing_id_names_index() -> None:
    document = {"type": "FeatureCollection", "features": [feature(None)]}

    with pytest.raises(FenceError, match=r"feature 0 \(no id\): missing id"):
        load_fences(document)


def test_load_duplicate_id_names_both_features() -> None:
    point = {"type": "Point", "coordinates": [0, 0]}
    document = {
        "type": "FeatureCollection",
        "features": [
            feature(point, id="a", radius_m=5),
            feature(point, id="a", radius_m=9),
        ],
    }

    with pytest.raises(FenceError, match=r"feature 1 .*also used by feature 0"):
        load_fences(document)


def test_load_repair_fixes_bowtie_and_open_ring() -> None:
    bowtie = [[0, 0], [1, 1], [1, 0], [0, 1]]  # open and self-intersecting
    document = feature({"type": "Polygon", "coordinates": [bowtie]}, id="bow")

    [fence] = load_fences(document, repair=True)

    assert fence.covers(0.1, 0.5)
    assert fence.covers(0.9, 0.5)
    assert not fence.covers(0.5, 0.9)


def test_load_world_invalid_without_repair_names_country() -> None:
    with pytest.raises(FenceError, match=r"id 'SDN'.*Self-intersection"):
        load_fences(WORLD, id_property="ADM0_A3")


def test_load_rejects_projected_crs() -> None:
    document = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3763"}},
        "features": [],
    }

    with pytest.raises(FenceError, match="not WGS-84"):
        load_fences(document)
