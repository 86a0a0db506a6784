"""Fixtures shared by the geofence tests."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from postloan.geofence import Fence, circle_fence, corridor_fence, load_fences
from postloan.model import Fix

SEAM_START = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def seam_fences() -> list[Fence]:
    """A multipolygon split at 180° into unequal parts, a circle and a
    corridor across the antimeridian."""
    east = [[179.99, 0.0], [180.0, 0.0], [180.0, 0.01], [179.99, 0.01], [179.99, 0.0]]
    west = [
        [-180.0, 0.004],
        [-179.995, 0.004],
        [-179.995, 0.006],
        [-180.0, 0.006],
        [-180.0, 0.004],
    ]
    split = {"type": "MultiPolygon", "coordinates": [[east], [west]]}
    feature = {"type": "Feature", "id": "split", "geometry": split, "properties": {}}
    return [
        load_fences(feature)[0],
        circle_fence("seam-circle", 179.9995, 0.012, 150.0),
        corridor_fence("road", [(179.98, 0.015), (-179.99, 0.015)], 100.0),
    ]


@pytest.fixture
def seam_walk() -> Callable[[int], list[Fix]]:
    """Return a function of a seed that returns a random walk of one car,
    up to 230 m per fix every 30 s, back and forth across 180°."""

    def walk(seed: int) -> list[Fix]:
        rng = random.Random(seed)
        lon, lat, fixes = 179.995, 0.005, []
        for n in range(80):
            lon = (lon + rng.uniform(-0.0015, 0.0015) + 180.0) % 360.0 - 180.0
            lat += rng.uniform(-0.0015, 0.0015)
            time = SEAM_START + timedelta(seconds=30 * n)
            fixes.append(Fix("car", time, lat, lon))
        return fixes

    return walk
