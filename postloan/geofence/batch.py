"""Vectorized fence evaluation for backfills and re-evaluation.

`evaluate_batch` returns exactly the events that a fresh `FenceEngine` with
the same index, settings and groups returns from `process_many` over the same
fixes in the same order. A property test in tests/geofence checks that the
two paths agree.

It works on numpy arrays in four steps:

1. drop invalid and late fixes as the engine would;
2. cut each device's fixes into chunks of `CHUNK_FIXES` and query the index
   once per chunk box;
3. settle whole chunks against a fence's sure-inner and sure-outer
   geometries, then the remaining fixes one by one, and only the few fixes
   near a boundary through the exact scalar zone test;
4. find the runs of confirming fixes per (device, fence) with array
   operations and turn them into enter, exit and dwell events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import shapely

from postloan.geofence.engine import (
    DEFAULT_SETTINGS,
    DWELL_BY_ROLE,
    EVENT_RANK,
    HysteresisSettings,
    device_labels,
)
from postloan.geofence.fences import (
    INSIDE,
    MARGIN,
    OUTSIDE,
    CircleShape,
    Fence,
    circle_distances_m,
    pad_degrees,
)
from postloan.geofence.index import FenceIndex
from postloan.model import FenceEvent, Fix

#: Fixes per chunk: one index query and one sure test per chunk and fence.
CHUNK_FIXES = 16

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: Circle distances this close to a threshold are recomputed by the scalar
#: code, so numpy's and libm's last-bit differences cannot change a zone.
_TIE_M = 1e-6


@dataclass(frozen=True)
class TrackArrays:
    """Fixes as parallel arrays, in arrival order.

    `device` contains indexes into `device_ids`; `time_us` is microseconds
    since the Unix epoch (UTC), so it compares exactly like datetimes.
    """

    device_ids: Sequence[str]
    device: np.ndarray
    time_us: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    valid: np.ndarray

    @classmethod
    def from_fixes(cls, fixes: Iterable[Fix]) -> TrackArrays:
        codes: dict[str, int] = {}
        device, time_us, lon, lat, valid = [], [], [], [], []
        for fix in fixes:
            if fix.time.tzinfo is None:
                stamp = fix.time.isoformat()
                raise ValueError(f"fix time {stamp} of {fix.device_id} has no timezone")
            device.append(codes.setdefault(fix.device_id, len(codes)))
            time_us.append((fix.time - _EPOCH) // _MICROSECOND)
            lon.append(fix.longitude)
            lat.append(fix.latitude)
            valid.append(fix.valid)
        return cls(
            tuple(codes),
            np.array(device, dtype=np.int64),
            np.array(time_us, dtype=np.int64),
            np.array(lon, dtype=float),
            np.array(lat, dtype=float),
            np.array(valid, dtype=bool),
        )


@dataclass(frozen=True)
class _Accepted:
    """Accepted fixes grouped by device, in processing order."""

    source: np.ndarray  # index into the input arrays
    device: np.ndarray
    position: np.ndarray  # 0-based position within the device's fixes
    count: np.ndarray  # the device's number of accepted fixes, per fix
    start: np.ndarray  # index of the device's first fix, per fix
    time_us: np.ndarray
    lon: np.ndarray
    lat: np.ndarray


def evaluate_batch(
    index: FenceIndex,
    track: TrackArrays | Iterable[Fix],
    settings: HysteresisSettings = DEFAULT_SETTINGS,
    *,
    groups_of: Callable[[str], Collection[str]] | None = None,
) -> list[FenceEvent]:
    """Return the fence events for a track, equal to `FenceEngine.process_many`."""
    arrays = track if isinstance(track, TrackArrays) else TrackArrays.from_fixes(track)
    fixes = _accept(arrays)
    if len(fixes.source) == 0:
        return []
    index.compact()
    labels = [device_labels(device_id, groups_of) for device_id in arrays.device_ids]
    key, row, zone = _zones(index, fixes, labels, settings.margin_m)
    order = np.lexsort((row, key))
    key, row, zone = key[order], row[order], zone[order]
    events = _transitions(index, arrays.device_ids, fixes, key, row, zone, settings)
    events.sort(key=lambda item: (item[0], EVENT_RANK[item[1].event], item[1].fence_id))
    return [event for _, event in events]


def _accept(arrays: TrackArrays) -> _Accepted:
    lon, lat = arrays.lon, arrays.lat
    with np.errstate(invalid="ignore"):
        ok = arrays.valid & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)
    source = np.flatnonzero(ok)
    source = source[np.argsort(arrays.device[source], kind="stable")]
    device = arrays.device[source]
    time_us = arrays.time_us[source]
    same = np.empty(len(source), dtype=bool)
    same[:1] = False
    same[1:] = device[1:] == device[:-1]
    keep = ~same | (np.diff(time_us, prepend=0) > 0)
    if not keep.all():
        keep = _drop_late(device, time_us, same)
    source, device, time_us = source[keep], device[keep], time_us[keep]
    first = np.ones(len(source), dtype=bool)
    first[1:] = device[1:] != device[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(source)))
    start = np.repeat(starts, counts)
    return _Accepted(
        source,
        device,
        np.arange(len(source)) - start,
        np.repeat(counts, counts),
        start,
        time_us,
        lon[source],
        lat[source],
    )


def _drop_late(device: np.ndarray, time_us: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Keep a fix only if it is later than every earlier fix of its device."""
    keep = np.ones(len(device), dtype=bool)
    starts = np.flatnonzero(~same)
    ends = np.append(starts[1:], len(device))
    for start, end in zip(starts, ends, strict=True):
        times = time_us[start:end]
        if len(times) > 1 and not (np.diff(times) > 0).all():
            before = np.maximum.accumulate(times)[:-1]
            keep[start + 1 : end] = times[1:] > before
    return keep


class _FenceTable:
    """Per-call arrays describing the fences a batch touches, by slot."""

    def __init__(self, index: FenceIndex, slots: np.ndarray, margin_m: float) -> None:
        self.row_of = np.full(index.slot_count, -1, dtype=np.int64)
        self.fences = [index.slot_fence(int(s)) for s in slots]
        self.row_of[slots] = np.arange(len(slots))
        count = len(slots)
        self.margin = np.array(
            [f.shape.effective_margin(margin_m) for f in self.fences]
        )
        self.circle = np.zeros(count, dtype=bool)
        self.lon = np.zeros(count)
        self.lat = np.zeros(count)
        self.rho = np.ones(count)
        self.radius = np.zeros(count)
        self.inner = np.empty(count, dtype=object)
        self.outer = np.empty(count, dtype=object)
        for row, fence in enumerate(self.fences):
            shape = fence.shape
            if isinstance(shape, CircleShape):
                self.circle[row] = True
                self.lon[row], self.lat[row] = shape.lon, shape.lat
                self.rho[row] = shape.curvature_m
                self.radius[row] = shape.radius_m
            else:
                self.inner[row], self.outer[row] = shape.sure_geometries(
                    self.margin[row]
                )


def _zones(
    index: FenceIndex, fixes: _Accepted, labels: list[frozenset[str]], margin_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (pair key, row, zone) for every fix that is not OUTSIDE a fence
    applying to its device; pair key = device * slot_count + slot."""
    chunk_first = (fixes.position % CHUNK_FIXES) == 0
    chunk_start = np.flatnonzero(chunk_first)
    chunk_end = np.append(chunk_start[1:], len(fixes.source))
    boxes = _chunk_boxes(fixes, chunk_start)
    chunk, slot = _query_chunks(index, boxes, margin_m)
    chunk_device = fixes.device[chunk_start]
    chunk, slot = _applicable(index, labels, chunk_device, chunk, slot)
    table = _FenceTable(index, np.unique(slot), margin_m)
    settled = _settle_chunks(table, boxes, chunk, slot)
    keys: list[np.ndarray] = []
    rows_out: list[np.ndarray] = []
    zones: list[np.ndarray] = []
    for verdict in (INSIDE, MARGIN):
        chosen = settled == verdict
        starts, ends = chunk_start[chunk[chosen]], chunk_end[chunk[chosen]]
        rows = _expand(starts, ends)
        fix_slot = np.repeat(slot[chosen], ends - starts)
        if verdict == MARGIN:
            fix_zone = _fix_zones(table, fixes, rows, fix_slot)
        else:
            fix_zone = np.full(len(rows), INSIDE, dtype=np.int8)
        hit = fix_zone != OUTSIDE
        rows, fix_slot, fix_zone = rows[hit], fix_slot[hit], fix_zone[hit]
        keys.append(fixes.device[rows].astype(np.int64) * index.slot_count + fix_slot)
        rows_out.append(rows)
        zones.append(fix_zone)
    return np.concatenate(keys), np.concatenate(rows_out), np.concatenate(zones)


def _chunk_boxes(fixes: _Accepted, chunk_start: np.ndarray) -> np.ndarray:
    """Return the (min_x, min_y, max_x, max_y) boxes of each chunk's fixes,
    grown by 1e-9 degree so even a one-fix chunk has an area."""
    eps = 1e-9
    return np.column_stack(
        [
            np.minimum.reduceat(fixes.lon, chunk_start) - eps,
            np.minimum.reduceat(fixes.lat, chunk_start) - eps,
            np.maximum.reduceat(fixes.lon, chunk_start) + eps,
            np.maximum.reduceat(fixes.lat, chunk_start) + eps,
        ]
    )


def _query_chunks(
    index: FenceIndex, boxes: np.ndarray, margin_m: float
) -> tuple[np.ndarray, np.ndarray]:
    max_lat = np.maximum(np.abs(boxes[:, 1]), np.abs(boxes[:, 3]))
    # Pads per whole degree of latitude, rounded up: a safe pad for the box.
    table = np.array([pad_degrees(margin_m, float(lat)) for lat in range(92)])
    pad = table[np.minimum(np.ceil(max_lat), 91).astype(np.int64)]
    min_x = boxes[:, 0] - pad
    max_x = boxes[:, 2] + pad
    min_y = np.maximum(boxes[:, 1] - pad, -90.0)
    max_y = np.minimum(boxes[:, 3] + pad, 90.0)
    owner = np.arange(len(boxes))
    # Boxes reaching past ±180 also query their wrapped-around part.
    west = min_x < -180.0
    east = max_x > 180.0
    extra_owner = np.concatenate([owner[west], owner[east]])
    extra = np.column_stack(
        [
            np.concatenate([min_x[west] + 360.0, np.full(east.sum(), -180.0)]),
            np.concatenate([min_y[west], min_y[east]]),
            np.concatenate([np.full(west.sum(), 180.0), max_x[east] - 360.0]),
            np.concatenate([max_y[west], max_y[east]]),
        ]
    )
    all_owner = np.concatenate([owner, extra_owner])
    query, slot = index.query_boxes(
        np.concatenate([np.maximum(min_x, -180.0), extra[:, 0]]),
        np.concatenate([min_y, extra[:, 1]]),
        np.concatenate([np.minimum(max_x, 180.0), extra[:, 2]]),
        np.concatenate([max_y, extra[:, 3]]),
    )
    pairs = np.unique(
        all_owner[query].astype(np.int64) * (slot.max(initial=0) + 1) + slot
    )
    width = slot.max(initial=0) + 1
    return pairs // width, pairs % width


def _applicable(
    index: FenceIndex,
    labels: list[frozenset[str]],
    chunk_device: np.ndarray,
    chunk: np.ndarray,
    slot: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the (chunk, slot) pairs whose fence applies to the chunk's device."""
    restricted = {
        int(s)
        for s in np.unique(slot)
        if index.slot_fence(int(s)).applies_to is not None
    }
    if not restricted:
        return chunk, slot
    keep = np.ones(len(chunk), dtype=bool)
    for row in np.flatnonzero(np.isin(slot, list(restricted))):
        fence = index.slot_fence(int(slot[row]))
        keep[row] = fence.applies(labels[int(chunk_device[chunk[row]])])
    return chunk[keep], slot[keep]


def _settle_chunks(
    table: _FenceTable, boxes: np.ndarray, chunk: np.ndarray, slot: np.ndarray
) -> np.ndarray:
    """Return INSIDE or OUTSIDE for (chunk, fence) pairs settled as a whole,
    MARGIN for pairs whose fixes need a test each (always for circles,
    whose exact test is cheap)."""
    settled = np.full(len(chunk), MARGIN, dtype=np.int8)
    rows = table.row_of[slot]
    shaped = np.flatnonzero(~table.circle[rows])
    if len(shaped) == 0:
        return settled
    picked = chunk[shaped]
    chunk_boxes = shapely.box(
        boxes[picked, 0], boxes[picked, 1], boxes[picked, 2], boxes[picked, 3]
    )
    inside = shapely.contains(table.inner[rows[shaped]], chunk_boxes)
    away = ~shapely.intersects(table.outer[rows[shaped]], chunk_boxes)
    settled[shaped[inside]] = INSIDE
    settled[shaped[away & ~inside]] = OUTSIDE
    return settled


def _expand(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Return the concatenated ranges [start, end) as one index array."""
    lengths = ends - starts
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(
        starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths
    )
    result: np.ndarray = np.arange(lengths.sum(), dtype=np.int64) + offsets
    return result


def _fix_zones(
    table: _FenceTable, fixes: _Accepted, rows: np.ndarray, fix_slot: np.ndarray
) -> np.ndarray:
    """Return the zone of each (fix row, fence slot) pair, as `Shape.zone`
    would: circles by numpy distances, other shapes by their sure
    geometries, and the rest (ties, fixes near a boundary) by `Shape.zone`."""
    zone = np.full(len(rows), MARGIN, dtype=np.int8)
    fence_row = table.row_of[fix_slot]
    lon = fixes.lon[rows]
    lat = fixes.lat[rows]
    margin = table.margin[fence_row]
    unsure: list[np.ndarray] = []
    circle = np.flatnonzero(table.circle[fence_row])
    if len(circle):
        fence_rows = fence_row[circle]
        distance = circle_distances_m(
            table.lon[fence_rows],
            table.lat[fence_rows],
            table.rho[fence_rows],
            lon[circle],
            lat[circle],
        )
        low = table.radius[fence_rows] - margin[circle]
        high = table.radius[fence_rows] + margin[circle]
        zone[circle] = np.where(
            distance <= low, INSIDE, np.where(distance >= high, OUTSIDE, MARGIN)
        )
        tie = np.minimum(np.abs(distance - low), np.abs(distance - high)) < _TIE_M
        unsure.append(circle[tie])
    shaped = np.flatnonzero(~table.circle[fence_row])
    if len(shaped):
        fence_rows = fence_row[shaped]
        inside = shapely.intersects_xy(
            table.inner[fence_rows], lon[shaped], lat[shaped]
        )
        zone[shaped[inside]] = INSIDE
        rest = shaped[~inside]
        near = shapely.intersects_xy(table.outer[fence_row[rest]], lon[rest], lat[rest])
        zone[rest[~near]] = OUTSIDE
        unsure.append(rest[near])
    for n in np.concatenate(unsure) if unsure else ():
        fence = table.fences[int(fence_row[n])]
        zone[n] = fence.shape.zone(float(lon[n]), float(lat[n]), float(margin[n]))
    return zone


def _transitions(
    index: FenceIndex,
    device_ids: Sequence[str],
    fixes: _Accepted,
    key: np.ndarray,
    row: np.ndarray,
    zone: np.ndarray,
    settings: HysteresisSettings,
) -> list[tuple[int, FenceEvent]]:
    """Turn (key, row, zone) entries sorted by key and row into events, each
    tagged with the input index of the fix that fires it."""
    k = settings.confirm_fixes
    slots_count = index.slot_count
    runs_key, runs_start, runs_type = _qualifying_runs(fixes, key, row, zone, k)
    if len(runs_key) == 0:
        return []
    order = np.lexsort((runs_start, runs_key))
    runs_key, runs_start, runs_type = (
        runs_key[order],
        runs_start[order],
        runs_type[order],
    )
    first = np.ones(len(runs_key), dtype=bool)
    first[1:] = runs_key[1:] != runs_key[:-1]
    previous = np.empty(len(runs_key), dtype=np.int8)
    previous[0] = OUTSIDE
    previous[1:] = runs_type[:-1]
    previous[first] = OUTSIDE
    flips = np.flatnonzero(runs_type != previous)
    events: list[tuple[int, FenceEvent]] = []
    dwell = settings.dwell
    dwell_us = None if dwell is None else dwell // _MICROSECOND
    for n, flip in enumerate(flips):
        pair_key = int(runs_key[flip])
        fence = index.slot_fence(pair_key % slots_count)
        start = int(runs_start[flip])
        confirm = start + k - 1
        kind = "enter" if runs_type[flip] == INSIDE else "exit"
        event = _event(device_ids, fixes, fence, kind, start)
        events.append((int(fixes.source[confirm]), event))
        if kind == "enter" and dwell_us is not None and DWELL_BY_ROLE[fence.role]:
            following = flips[n + 1] if n + 1 < len(flips) else None
            stay_end = (
                int(runs_start[following]) + k - 1
                if following is not None and int(runs_key[following]) == pair_key
                else None
            )
            found = _dwell_fix(
                fixes, key, row, pair_key, start, confirm, stay_end, dwell_us
            )
            if found is not None:
                event = _event(device_ids, fixes, fence, "dwell", found)
                events.append((int(fixes.source[found]), event))
    return events


def _qualifying_runs(
    fixes: _Accepted, key: np.ndarray, row: np.ndarray, zone: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (key, first row, zone) of every run of at least `k` consecutive
    INSIDE entries or of at least `k` consecutive fixes with no entry
    (OUTSIDE), per pair key."""
    same = np.zeros(len(key), dtype=bool)
    same[1:] = key[1:] == key[:-1]
    inside = zone == INSIDE
    follows = np.zeros(len(key), dtype=bool)
    follows[1:] = same[1:] & (row[1:] == row[:-1] + 1) & inside[:-1]
    run_start = inside & ~follows
    run_id = np.cumsum(run_start) - 1
    lengths = np.bincount(run_id[inside], minlength=int(run_start.sum()))
    starts = np.flatnonzero(run_start)
    long_in = lengths >= k
    in_key, in_row = key[starts[long_in]], row[starts[long_in]]
    # Gaps between a pair's entries, and after its last entry, are OUTSIDE.
    last = np.ones(len(key), dtype=bool)
    last[:-1] = ~same[1:]
    gap_row = row + 1
    gap_end = np.where(last, fixes.start[row] + fixes.count[row], np.roll(row, -1))
    long_out = (gap_end - gap_row) >= k
    out_key, out_row = key[long_out], gap_row[long_out]
    return (
        np.concatenate([in_key, out_key]),
        np.concatenate([in_row, out_row]),
        np.concatenate(
            [
                np.full(len(in_key), INSIDE, np.int8),
                np.full(len(out_key), OUTSIDE, np.int8),
            ]
        ),
    )


def _dwell_fix(
    fixes: _Accepted,
    key: np.ndarray,
    row: np.ndarray,
    pair_key: int,
    enter_row: int,
    confirm_row: int,
    stay_end: int | None,
    dwell_us: int,
) -> int | None:
    """Return the row of the fix that fires dwell during a stay, or None."""
    device_end = int(fixes.start[enter_row] + fixes.count[enter_row])
    due = int(fixes.time_us[enter_row]) + dwell_us
    due_row = enter_row + int(
        np.searchsorted(fixes.time_us[enter_row:device_end], due, side="left")
    )
    target = max(confirm_row, due_row)
    low, high = (
        np.searchsorted(key, pair_key, "left"),
        np.searchsorted(key, pair_key, "right"),
    )
    found = low + int(np.searchsorted(row[low:high], target, side="left"))
    if found >= high:
        return None
    hit = int(row[found])
    return hit if stay_end is None or hit < stay_end else None


def _event(
    device_ids: Sequence[str], fixes: _Accepted, fence: Fence, kind: str, row: int
) -> FenceEvent:
    return FenceEvent(
        device_ids[int(fixes.device[row])],
        fence.id,
        kind,
        _EPOCH + timedelta(microseconds=int(fixes.time_us[row])),
        float(fixes.lat[row]),
        float(fixes.lon[row]),
    )
