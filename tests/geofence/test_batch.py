"""The vectorized batch path returns exactly what FenceEngine.process_many does."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon

from postloan.geofence import (
    RAW,
    Fence,
    FenceEngine,
    FenceIndex,
    HysteresisSettings,
    Role,
    TrackArrays,
    circle_fence,
    corridor_fence,
    evaluate_batch,
    load_fences,
    polygon_fence,
)
from postloan.model import Fix

DATA = Path(__file__).resolve().parents[2] / "postloan" / "data"
PORTUGAL = DATA / "boundaries" / "portugal_municipalities_caop_simplified.geojson"
PORTO_TRIPS = DATA / "trajectories" / "porto_taxi" / "test_partial_trajectories.csv"
START = datetime(2024, 5, 1, tzinfo=UTC)

SHELL = [(0, 0), (0.01, 0), (0.01, 0.01), (0, 0.01)]
HOLE = [(0.004, 0.004), (0.006, 0.004), (0.006, 0.006), (0.004, 0.006)]
FENCES = [
    polygon_fence("holed", Polygon(SHELL, [HOLE])),
    polygon_fence(
        "pair",
        MultiPolygon(
            [
                Polygon([(0.012, 0), (0.02, 0), (0.02, 0.004), (0.012, 0.004)]),
                Polygon(
                    [(0.012, 0.008), (0.013, 0.008), (0.013, 0.0086), (0.012, 0.0086)]
                ),
            ]
        ),
        role=Role.HOME,
    ),
    circle_fence("pawn", 0.005, 0.012, 300.0, role=Role.RISK),
    circle_fence("tiny", 0.015, 0.006, 40.0, role=Role.RISK),
    corridor_fence("road", [(-0.01, -0.005), (0.025, 0.015)], 120.0, role=Role.WORK),
    circle_fence(
        "fleet", 0.0, 0.0, 500.0, applies_to=["group:fleet-a"], role=Role.RISK
    ),
]
GROUPS = {"a": ["fleet-a"], "b": [], "c": ["vehicle:V1"]}
# Coordinates that sit on edges and vertices, so ties get tested.
EDGES = [0.0, 0.004, 0.006, 0.01, 0.012, 0.013, 0.02]

coordinate = st.one_of(
    st.floats(-0.005, 0.025, allow_nan=False),
    st.sampled_from(EDGES),
)
fix_tuples = st.tuples(
    st.sampled_from(sorted(GROUPS)),
    st.sampled_from([15, 15, 30, 60, 400, 0, -20]),
    coordinate,
    coordinate,
    st.sampled_from([True, True, True, False]),  # valid flag, mostly true
)
hysteresis = st.builds(
    HysteresisSettings,
    margin_m=st.sampled_from([0.0, 10.0, 50.0, 120.0]),
    confirm_fixes=st.integers(1, 3),
    dwell_s=st.sampled_from([30.0, 300.0, math.inf]),
)


def to_fixes(rows: list[tuple[str, int, float, float, bool]]) -> list[Fix]:
    clock = dict.fromkeys(GROUPS, START)
    fixes = []
    for device, step, lon, lat, valid in rows:
        clock[device] += timedelta(seconds=step)
        fixes.append(Fix(device, clock[device], lat, lon, valid=valid))
    return fixes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(fix_tuples, min_size=1, max_size=120), chosen=hysteresis)
def test_batch_equals_per_fix(
    rows: list[tuple[str, int, float, float, bool]], chosen: HysteresisSettings
) -> None:
    fixes = to_fixes(rows)
    index = FenceIndex(FENCES)
    engine = FenceEngine(index, chosen, groups_of=lambda d: GROUPS[d])

    expected = engine.process_many(fixes)
    actual = evaluate_batch(index, fixes, chosen, groups_of=lambda d: GROUPS[d])

    assert actual == expected


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=2, max_size=200
    ),
    chosen=hysteresis,
)
def test_batch_equals_per_fix_on_walks(
    steps: list[tuple[float, float]], chosen: HysteresisSettings
) -> None:
    # A random walk of about 1 m to 150 m per fix: long runs, real crossings.
    lon, lat, rows = 0.003, 0.002, []
    for n, (dx, dy) in enumerate(steps):
        lon += dx * 0.0013
        lat += dy * 0.0013
        rows.append(("b", 30, lon, lat, n % 17 != 5))
    fixes = to_fixes(rows)
    index = FenceIndex(FENCES)

    expected = FenceEngine(index, chosen).process_many(fixes)
    actual = evaluate_batch(index, fixes, chosen)

    assert actual == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(fix_tuples, min_size=1, max_size=120), chosen=hysteresis)
def test_batch_equals_per_fix_prepared_index(
    rows: list[tuple[str, int, float, float, bool]], chosen: HysteresisSettings
) -> None:
    fixes = to_fixes(rows)
    index = FenceIndex(FENCES)
    index.prepare(chosen.margin_m)
    engine = FenceEngine(index, chosen, groups_of=lambda d: GROUPS[d])

    expected = engine.process_many(fixes)
    actual = evaluate_batch(index, fixes, chosen, groups_of=lambda d: GROUPS[d])

    assert actual == expected


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("prepared", [False, True], ids=["lazy", "prepared"])
def test_batch_across_antimeridian_equals_per_fix(
    seam_fences: list[Fence],
    seam_walk: Callable[[int], list[Fix]],
    seed: int,
    prepared: bool,
) -> None:
    fixes = seam_walk(seed)
    chosen = HysteresisSettings(margin_m=120.0, confirm_fixes=1, dwell_s=300.0)
    index = FenceIndex(seam_fences)
    if prepared:
        index.prepare(chosen.margin_m)

    expected = FenceEngine(index, chosen).process_many(fixes)
    actual = evaluate_batch(index, fixes, chosen)

    assert actual == expected


def test_batch_after_run_time_changes_to_prepared_index() -> None:
    fixes = to_fixes([("b", 30, 0.001 * n, 0.005, True) for n in range(25)])
    index = FenceIndex(FENCES)
    index.prepare(RAW.margin_m)
    index.remove("holed")
    index.add(circle_fence("late", 0.015, 0.005, 400.0))

    expected = FenceEngine(index, RAW).process_many(fixes)
    actual = evaluate_batch(index, fixes, RAW)

    assert actual == expected
    assert {event.fence_id for event in actual} >= {"late"}
    assert "holed" not in {event.fence_id for event in actual}


def test_batch_from_arrays_matches_fixes() -> None:
    fixes = to_fixes([("b", 30, 0.001 * n, 0.005, True) for n in range(25)])
    track = TrackArrays.from_fixes(fixes)
    index = FenceIndex(FENCES)

    from_arrays = evaluate_batch(index, track, RAW)
    from_fixes = evaluate_batch(index, fixes, RAW)

    assert from_arrays == from_fixes
    assert (from_arrays[0].event, from_arrays[0].fence_id) == ("enter", "holed")


def test_batch_empty_track() -> None:
    track = TrackArrays(
        (), *(np.zeros(0, dtype=t) for t in (np.int64, np.int64, float, float, bool))
    )

    events = evaluate_batch(FenceIndex(FENCES), track)

    assert events == []


def test_batch_porto_trips_equal_engine() -> None:
    fences = load_fences(PORTUGAL, id_property="DICO")
    fixes = []
    with PORTO_TRIPS.open(newline="") as handle:
        for row in csv.DictReader(handle):
            start = datetime.fromtimestamp(int(row["TIMESTAMP"]), UTC)
            for n, (lon, lat) in enumerate(json.loads(row["POLYLINE"])):
                fixes.append(
                    Fix(row["TAXI_ID"], start + timedelta(seconds=15 * n), lat, lon)
                )
    index = FenceIndex(fences)

    expected = FenceEngine(index).process_many(fixes)
    actual = evaluate_batch(index, fixes)

    assert len(fixes) == 14438
    assert len(expected) > 100
    assert actual == expected
