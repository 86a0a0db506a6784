"""Geofences: fence model and GeoJSON import, spatial index, transitions.

Typical use::

    index = FenceIndex(load_fences("fences.geojson"))
    index.prepare(DEFAULT_SETTINGS.margin_m)  # once, at start-up
    engine = FenceEngine(index)
    events = engine.process(fix)

`evaluate_batch` returns the same events as `FenceEngine.process_many` for
backfills and re-evaluation, using array operations.
"""

from postloan.geofence.batch import TrackArrays, evaluate_batch
from postloan.geofence.engine import (
    DEFAULT_SETTINGS,
    DWELL_BY_ROLE,
    RAW,
    EngineStats,
    FenceEngine,
    HysteresisSettings,
)
from postloan.geofence.fences import (
    INSIDE,
    MARGIN,
    OUTSIDE,
    CircleShape,
    CorridorShape,
    Fence,
    FenceError,
    PolygonShape,
    Role,
    circle_fence,
    corridor_fence,
    load_fences,
    polygon_fence,
)
from postloan.geofence.index import FenceIndex

__all__ = [
    "DEFAULT_SETTINGS",
    "DWELL_BY_ROLE",
    "INSIDE",
    "MARGIN",
    "OUTSIDE",
    "RAW",
    "CircleShape",
    "CorridorShape",
    "EngineStats",
    "Fence",
    "FenceEngine",
    "FenceError",
    "FenceIndex",
    "HysteresisSettings",
    "PolygonShape",
    "Role",
    "TrackArrays",
    "circle_fence",
    "corridor_fence",
    "evaluate_batch",
    "load_fences",
    "polygon_fence",
]
