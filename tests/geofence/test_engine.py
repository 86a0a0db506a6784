"""FenceEngine transitions: hysteresis, dwell, late and invalid fixes, run-time
changes, assignment, and a replay of real Porto taxi trips against a
brute-force reference."""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import shapely
from geographiclib.geodesic import Geodesic
from shapely.geometry import Point, Polygon
from shapely.geometry.base import BaseGeometry

from postloan.geofence import (
    RAW,
    Fence,
    FenceEngine,
    FenceIndex,
    HysteresisSettings,
    Role,
    circle_fence,
    load_fences,
    polygon_fence,
)
from postloan.model import Fix

DATA = Path(__file__).resolve().parents[2] / "postloan" / "data"
PORTUGAL = DATA / "boundaries" / "portugal_municipalities_caop_simplified.geojson"
PORTO_TRIPS = DATA / "trajectories" / "porto_taxi" / "test_partial_trajectories.csv"
START = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
# A 1.1 km square just north of the equator.
SQUARE = Polygon([(0, 0), (0.01, 0), (0.01, 0.01), (0, 0.01)])


def destination(
    lon: float, lat: float, azimuth: float, metres: float
) -> tuple[float, float]:
    result = Geodesic.WGS84.Direct(lat, lon, azimuth, metres)
    return result["lon2"], result["lat2"]


def fix(
    device: str, seconds: float, lon: float, lat: float, *, valid: bool = True
) -> Fix:
    return Fix(device, START + timedelta(seconds=seconds), lat, lon, valid=valid)


def kinds(events: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(event.event, event.fence_id) for event in events]


def jittered(
    lon: float, lat: float, radius_m: float, count: int, rng: random.Random
) -> Iterator[tuple[float, float]]:
    """Yield points spread evenly over a disc of `radius_m` around (lon, lat)."""
    for _ in range(count):
        distance = radius_m * math.sqrt(rng.random())
        yield destination(lon, lat, rng.uniform(0.0, 360.0), distance)


# --- hysteresis ---------------------------------------------------------------


@pytest.fixture(scope="module")
def porto_fences() -> list[Fence]:
    return load_fences(PORTUGAL, id_property="DICO")


def edge_point(fence: Fence, fraction: float) -> tuple[float, float]:
    boundary = fence.shape.geometry.boundary
    point = boundary.interpolate(fraction, normalized=True)
    return point.x, point.y


def test_parked_car_jitter_30m_on_edge_fires_nothing(porto_fences: list[Fence]) -> None:
    porto = next(fence for fence in porto_fences if fence.id == "1312")
    engine = FenceEngine(FenceIndex(porto_fences))
    lon, lat = edge_point(porto, 0.3)
    rng = random.Random(20240501)
    day = 24 * 3600 // 30
    fixes = [
        fix("parked", 30.0 * n, x, y)
        for n, (x, y) in enumerate(jittered(lon, lat, 30.0, day, rng))
    ]

    events = engine.process_many(fixes)

    assert len(fixes) == 2880
    assert events == []


def test_parked_car_single_outliers_fire_nothing(porto_fences: list[Fence]) -> None:
    porto = next(fence for fence in porto_fences if fence.id == "1312")
    engine = FenceEngine(FenceIndex(porto_fences))
    lon, lat = edge_point(porto, 0.6)
    rng = random.Random(7)
    fixes = []
    for n, (x, y) in enumerate(jittered(lon, lat, 30.0, 2880, rng)):
        if n % 97 == 0:  # a multipath jump of 80-200 m, one fix long
            x, y = destination(lon, lat, rng.uniform(0, 360), rng.uniform(80, 200))
        fixes.append(fix("parked", 30.0 * n, x, y))

    events = engine.process_many(fixes)

    assert events == []


def test_real_crossing_fires_exactly_one_enter() -> None:
    engine = FenceEngine(FenceIndex([polygon_fence("sq", SQUARE)]))
    rng = random.Random(3)
    fixes = []
    # From 1 km west of the west edge to 500 m inside, 30 km/h, a fix every 15 s.
    for n in range(int(1500 / 125) + 1):
        x, y = destination(0.0, 0.005, 90.0, -1000.0 + 125.0 * n)
        x, y = destination(x, y, rng.uniform(0, 360), rng.uniform(0, 10))
        fixes.append(fix("car", 15.0 * n, x, y))

    events = engine.process_many(fixes)

    assert kinds(events) == [("enter", "sq")]


def test_first_fix_of_run_gives_event_time() -> None:
    engine = FenceEngine(FenceIndex([polygon_fence("sq", SQUARE)]))
    fixes = [
        fix("car", 0, -0.01, 0.005),
        fix("car", 15, 0.005, 0.005),
        fix("car", 30, 0.006, 0.005),
    ]

    events = engine.process_many(fixes)

    assert len(events) == 1
    assert events[0].time == START + timedelta(seconds=15)
    assert events[0].longitude == 0.005


def test_margin_fix_restarts_confirmation() -> None:
    settings = HysteresisSettings(margin_m=50.0, confirm_fixes=2)
    engine = FenceEngine(FenceIndex([polygon_fence("sq", SQUARE)]), settings)
    on_edge = (0.0, 0.005)
    fixes = [
        fix("car", 0, 0.005, 0.005),
        fix("car", 15, *on_edge),
        fix("car", 30, 0.005, 0.005),
    ]

    events = engine.process_many(fixes)

    assert events == []


def test_exit_after_confirmed_outside() -> None:
    engine = FenceEngine(FenceIndex([polygon_fence("sq", SQUARE)]))
    points = [(0.005, 0.005)] * 3 + [(0.02, 0.005)] * 3

    events = engine.process_many(fix("car", 15 * n, *p) for n, p in enumerate(points))

    assert kinds(events) == [("enter", "sq"), ("exit", "sq")]
    assert events[1].time == START + timedelta(seconds=45)


def test_raw_settings_report_every_change() -> None:
    engine = FenceEngine(FenceIndex([polygon_fence("sq", SQUARE)]), RAW)
    points = [(0.005, 0.005), (0.011, 0.005), (0.01, 0.005), (0.0100001, 0.005)]

    events = engine.process_many(fix("car", 15 * n, *p) for n, p in enumerate(points))

    assert kinds(events) == [
        ("enter", "sq"),
        ("exit", "sq"),
        ("enter", "sq"),
        ("exit", "sq"),
    ]


# --- dwell, late and invalid fixes --------------------------------------------------


def test_dwell_fires_after_configured_time() -> None:
    fence = circle_fence("pawn", 0.0, 0.0, 200.0, role=Role.RISK)
    engine = FenceEngine(FenceIndex([fence]), HysteresisSettings(dwell_s=600.0))

    events = engine.process_many(fix("car", 30.0 * n, 0.0, 0.0) for n in range(30))

    assert kinds(events) == [("enter", "pawn"), ("dwell", "pawn")]
    assert events[1].time == START + timedelta(seconds=600)


def test_dwell_not_for_permitted_region() -> None:
    engine = FenceEngine(FenceIndex([circle_fence("zone", 0.0, 0.0, 200.0)]))

    events = engine.process_many(fix("car", 30.0 * n, 0.0, 0.0) for n in range(40))

    assert kinds(events) == [("enter", "zone")]


def test_dwell_only_once_per_stay() -> None:
    fence = circle_fence("pawn", 0.0, 0.0, 200.0, role=Role.RISK)
    engine = FenceEngine(FenceIndex([fence]), HysteresisSettings(dwell_s=60.0))
    stay = [(0.0, 0.0)] * 10
    away = [(0.01, 0.0)] * 3

    events = engine.process_many(
        fix("car", 30.0 * n, *p) for n, p in enumerate(stay + away + stay)
    )

    assert [e.event for e in events] == ["enter", "dwell", "exit", "enter", "dwell"]


def test_late_fix_fires_nothing_stale() -> None:
    fence = circle_fence("pawn", 0.0, 0.0, 200.0, role=Role.RISK)
    engine = FenceEngine(FenceIndex([fence]))
    engine.process_many(fix("car", 30.0 * n, 0.02, 0.0) for n in range(5))

    late = [engine.process(fix("car", 10.0 + n, 0.0, 0.0)) for n in range(3)]
    after = engine.process(fix("car", 200.0, 0.02, 0.0))

    assert late == [[], [], []]
    assert after == []
    assert engine.stats.late_fixes == 3
    assert engine.inside("car") == frozenset()


def test_duplicate_time_counts_as_late() -> None:
    engine = FenceEngine(FenceIndex([circle_fence("c", 0.0, 0.0, 200.0)]))
    engine.process(fix("car", 0, 0.02, 0.0))

    events = engine.process(fix("car", 0, 0.0, 0.0))

    assert events == []
    assert engine.stats.late_fixes == 1


def test_invalid_fix_ignored() -> None:
    engine = FenceEngine(FenceIndex([circle_fence("c", 0.0, 0.0, 200.0)]), RAW)
    fixes = [
        fix("car", 0, 0.0, 0.0, valid=False),
        fix("car", 15, math.nan, 0.0),
        fix("car", 30, 0.0, 95.0),
    ]

    events = engine.process_many(fixes)

    assert events == []
    assert engine.stats.invalid_fixes == 3


def test_invalid_fix_does_not_advance_time() -> None:
    engine = FenceEngine(FenceIndex([circle_fence("c", 0.0, 0.0, 200.0)]), RAW)
    engine.process(fix("car", 100, 0.0, 0.0, valid=False))

    events = engine.process(fix("car", 50, 0.0, 0.0))

    assert kinds(events) == [("enter", "c")]


def test_naive_time_rejected() -> None:
    engine = FenceEngine(FenceIndex([]))
    naive = Fix("car", datetime(2024, 1, 1), 0.0, 0.0)

    with pytest.raises(ValueError, match="no timezone"):
        engine.process(naive)


def test_dwell_fires_while_parked_on_fast_path() -> None:
    fence = circle_fence("pawn", 0.0, 0.0, 200.0, role=Role.RISK)
    engine = FenceEngine(FenceIndex([fence]), HysteresisSettings(dwell_s=600.0))
    # Drive in, then park: identical positions take the fast path until
    # the dwell deadline makes the engine step the stay again.
    fixes = [fix("car", 0.0, 0.01, 0.0), fix("car", 30.0, 0.0, 0.0)]
    fixes += [fix("car", 30.0 * n, 0.0005, 0.0) for n in range(2, 40)]

    events = engine.process_many(fixes)

    assert kinds(events) == [("enter", "pawn"), ("dwell", "pawn")]
    assert events[1].time == START + timedelta(seconds=630)  # enter at 30 s
    assert engine.stats.evaluations < 10


# --- zone cache ---------------------------------------------------------------------


def test_parked_in_circle_margin_band_is_cached() -> None:
    # 220 m from the centre of a 200 m circle: in the 150-250 m band.
    lon, lat = destination(0.0, 0.0, 60.0, 220.0)
    engine = FenceEngine(FenceIndex([circle_fence("pawn", 0.0, 0.0, 200.0)]))

    events = engine.process_many(fix("car", 30.0 * n, lon, lat) for n in range(100))

    assert events == []
    assert engine.stats.evaluations == 1


def zone_reference_events(
    fences: list[Fence], fixes: list[Fix], settings: HysteresisSettings
) -> list[tuple[str, str, datetime]]:
    """Apply the hysteresis rule fence by fence with `Shape.zone`, no index
    and no cache; dwell is left out."""
    events = []
    state = {fence.id: (False, 0, START) for fence in fences}
    for one in fixes:
        found = []
        for fence in fences:
            inside, run, run_time = state[fence.id]
            margin = fence.shape.effective_margin(settings.margin_m)
            zone = fence.shape.zone(one.longitude, one.latitude, margin)
            if zone == (-1 if inside else 1):
                run, run_time = run + 1, run_time if run else one.time
                if run >= settings.confirm_fixes:
                    inside, run = not inside, 0
                    found.append(("enter" if inside else "exit", fence.id, run_time))
            else:
                run = 0
            state[fence.id] = (inside, run, run_time)
        events.extend(sorted(found, key=lambda e: (e[0] != "exit", e[1])))
    return events


@pytest.mark.parametrize("seed", range(24))
def test_antimeridian_walk_matches_zone_reference(
    seam_fences: list[Fence], seam_walk: Callable[[int], list[Fix]], seed: int
) -> None:
    fences = seam_fences
    fixes = seam_walk(seed)
    settings = HysteresisSettings(margin_m=120.0, confirm_fixes=1, dwell_s=math.inf)
    engine = FenceEngine(FenceIndex(fences), settings)

    events = engine.process_many(fixes)

    expected = zone_reference_events(fences, fixes, settings)
    assert [(e.event, e.fence_id, e.time) for e in events] == expected


# --- run-time changes and assignment -------------------------------------------------


def test_fence_added_at_run_time_is_seen() -> None:
    index = FenceIndex([circle_fence("far", 10.0, 10.0, 100.0)])
    engine = FenceEngine(index, RAW)
    engine.process(fix("car", 0, 0.0, 0.0))

    index.add(circle_fence("new", 0.0, 0.0, 300.0))
    events = engine.process(fix("car", 15, 0.0001, 0.0))

    assert kinds(events) == [("enter", "new")]


def test_fence_removed_at_run_time_ends_without_exit() -> None:
    index = FenceIndex([circle_fence("c", 0.0, 0.0, 300.0)])
    engine = FenceEngine(index, RAW)
    engine.process(fix("car", 0, 0.0, 0.0))

    removed = index.remove("c")
    events = engine.process(fix("car", 15, 0.0001, 0.0))

    assert removed.id == "c"
    assert events == []
    assert engine.inside("car") == frozenset()


def test_fence_replaced_at_run_time_starts_fresh() -> None:
    index = FenceIndex([circle_fence("c", 0.0, 0.0, 300.0)])
    engine = FenceEngine(index, RAW)
    engine.process(fix("car", 0, 0.0, 0.0))

    index.remove("c")
    index.add(circle_fence("c", 0.0, 0.0, 500.0))
    events = engine.process(fix("car", 15, 0.0001, 0.0))

    assert kinds(events) == [("enter", "c")]


def test_assignment_by_group_vehicle_and_device() -> None:
    fences = [
        circle_fence("all", 0.0, 0.0, 300.0),
        circle_fence("fleet", 0.0, 0.0, 300.0, applies_to=["group:fleet-a"]),
        circle_fence("v9", 0.0, 0.0, 300.0, applies_to=["vehicle:V9"]),
        circle_fence("d3", 0.0, 0.0, 300.0, applies_to=["device:d3"]),
    ]
    groups = {"d1": ["fleet-a"], "d2": ["vehicle:V9"], "d3": []}
    engine = FenceEngine(FenceIndex(fences), RAW, groups_of=lambda d: groups[d])

    seen = {
        d: {e.fence_id for e in engine.process(fix(d, 0, 0.0, 0.0))} for d in groups
    }

    assert seen["d1"] == {"all", "fleet"}
    assert seen["d2"] == {"all", "v9"}
    assert seen["d3"] == {"all", "d3"}


def test_events_of_one_fix_exit_before_enter() -> None:
    west = polygon_fence(
        "west", Polygon([(-0.01, 0), (0, 0), (0, 0.01), (-0.01, 0.01)])
    )
    east = polygon_fence("east", SQUARE)
    engine = FenceEngine(FenceIndex([east, west]), RAW)
    engine.process(fix("car", 0, -0.005, 0.005))

    events = engine.process(fix("car", 15, 0.005, 0.005))

    assert kinds(events) == [("exit", "west"), ("enter", "east")]


# --- Porto taxi replay against brute force -------------------------------------------


def read_trip(trip_id: str) -> list[Fix]:
    """Return one trip of the ECML/PKDD 2015 Porto taxi test set as fixes:
    POLYLINE contains [lon, lat] pairs, one every 15 s from TIMESTAMP (UTC)."""
    with PORTO_TRIPS.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["TRIP_ID"] == trip_id:
                start = datetime.fromtimestamp(int(row["TIMESTAMP"]), UTC)
                points = json.loads(row["POLYLINE"])
                return [
                    Fix(row["TAXI_ID"], start + timedelta(seconds=15 * n), lat, lon)
                    for n, (lon, lat) in enumerate(points)
                ]
    raise AssertionError(f"trip {trip_id} not in {PORTO_TRIPS}")


@pytest.fixture(scope="module")
def municipalities_and_districts(porto_fences: list[Fence]) -> list[Fence]:
    districts: dict[str, list[BaseGeometry]] = {}
    for fence in porto_fences:
        districts.setdefault(fence.properties["Distrito"], []).append(
            fence.shape.geometry
        )
    dissolved = [
        polygon_fence(f"district:{name}", shapely.union_all(parts))
        for name, parts in districts.items()
    ]
    return porto_fences + dissolved


def reference_zone(
    geometry: BaseGeometry, lon: float, lat: float, margin_m: float
) -> int:
    """Zone by brute force: shapely covers, and the distance to the whole
    boundary projected to metres at the point (WGS-84 radii of curvature)."""
    inside = geometry.covers(Point(lon, lat))
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    sin_phi = math.sin(math.radians(lat))
    w = math.sqrt(1 - e2 * sin_phi**2)
    east = math.radians(1) * a / w * math.cos(math.radians(lat))
    north = math.radians(1) * a * (1 - e2) / w**3
    local = shapely.transform(
        geometry.boundary,
        lambda xy: (xy - np.array([lon, lat])) * np.array([east, north]),
    )
    if local.distance(Point(0, 0)) < margin_m:
        return 0
    return 1 if inside else -1


def reference_events(
    fences: list[Fence], fixes: list[Fix], settings: HysteresisSettings
) -> list[tuple[str, str, datetime]]:
    """Apply the hysteresis rule fence by fence, fix by fix, with no index."""
    events = []
    state = {fence.id: (False, 0, None) for fence in fences}
    for one in fixes:
        found = []
        for fence in fences:
            inside, run, run_time = state[fence.id]
            margin = fence.shape.effective_margin(settings.margin_m)
            zone = reference_zone(
                fence.shape.geometry, one.longitude, one.latitude, margin
            )
            if zone == (-1 if inside else 1):
                run, run_time = run + 1, run_time if run else one.time
                if run >= settings.confirm_fixes:
                    inside, run = not inside, 0
                    found.append(("enter" if inside else "exit", fence.id, run_time))
            else:
                run = 0
            state[fence.id] = (inside, run, run_time)
        events.extend(sorted(found, key=lambda e: (e[0] != "exit", e[1])))
    return events


@pytest.mark.parametrize("trip_id", ["T71", "T131"])
@pytest.mark.parametrize(
    "settings", [HysteresisSettings(), RAW], ids=["default", "raw"]
)
def test_porto_trip_matches_brute_force(
    municipalities_and_districts: list[Fence],
    trip_id: str,
    settings: HysteresisSettings,
) -> None:
    fixes = read_trip(trip_id)
    engine = FenceEngine(FenceIndex(municipalities_and_districts), settings)

    events = engine.process_many(fixes)
    expected = reference_events(municipalities_and_districts, fixes, settings)

    assert [(e.event, e.fence_id, e.time) for e in events] == expected


def test_porto_t71_crosses_into_braga(
    municipalities_and_districts: list[Fence],
) -> None:
    names = {
        f.id: f.properties.get("Concelho", f.id) for f in municipalities_and_districts
    }
    engine = FenceEngine(FenceIndex(municipalities_and_districts))

    events = engine.process_many(read_trip("T71"))
    entered = [names[e.fence_id] for e in events if e.event == "enter"]

    route = ["PORTO", "MATOSINHOS", "MAIA", "TROFA", "SANTO TIRSO"]
    assert [name for name in entered if name in route] == route
    assert "VILA NOVA DE FAMALICÃO" in entered
    assert "district:BRAGA" in entered
    assert ("exit", "district:PORTO") in kinds(events)
