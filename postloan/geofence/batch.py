"""Vectorized fence evaluation for backfills and re-evaluation.

`evaluate_batch` returns exactly the events that a fresh `FenceEngine` with
the same index, settings and groups returns from `process_many` over the same
fixes in the same order. A property test in tests/geofence checks that the
two paths agree.

It works on numpy arrays in four steps:

1. drop invalid and late fixes as the engine would;
2. cut each device's fixes into chunks of `CHUNK_FIXES` and query the index
   once per chunk box;
3. settle whole chunks by their box: outside a fence's reach box, or far
   from its lines (polygon edges, corridor routes). Chunks left undecided
   are settled by sub-chunks of `SUB_CHUNK_FIXES`, then fix by fix. Only
   the few fixes that the distance bounds cannot decide go through the
   exact scalar zone test;
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
    Fence,
    circle_distances_m,
    metres_per_degree_array,
    min_metres_per_degree_array,
    pad_degrees,
)
from postloan.geofence.index import (
    CIRCLE,
    CORRIDOR,
    POLYGON,
    FenceIndex,
    FenceTable,
)
from postloan.model import FenceEvent, Fix

#: Fixes per chunk: one index query per chunk, one test per chunk and fence.
CHUNK_FIXES = 16
#: Fixes per sub-chunk: a driving car covers several km in a chunk, so a
#: chunk near a boundary is tested again in parts before fix by fix.
SUB_CHUNK_FIXES = 4

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: Circle distances this close to a threshold are recomputed by the scalar
#: code, so numpy's and libm's last-bit differences cannot change a zone.
_TIE_M = 1e-6
#: Zone placeholder for a fix that the scalar `Shape.zone` must decide.
_UNDECIDED = 2
#: Factors that keep 1e-9 of slack on bounds of a local distance.
_ABOVE = 1.0 + 1e-9
_BELOW = 1.0 - 1e-9
#: A chunk box closer than this (degrees) to a polygon's edges may touch
#: them, because of rounding.
_TOUCH_DEG = 1e-9


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
    codes = arrays.device[source]
    if len(arrays.device_ids) <= 1 << 16:
        # numpy sorts 16-bit integers stably by radix sort, in linear time.
        codes = codes.astype(np.uint16)
    source = source[np.argsort(codes, kind="stable")]
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


def _zones(
    index: FenceIndex, fixes: _Accepted, labels: list[frozenset[str]], margin_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (pair key, row, zone) for every fix that is not OUTSIDE a fence
    applying to its device; pair key = device * slot_count + slot."""
    chunks = _chunks(fixes, CHUNK_FIXES)
    start, end, boxes = chunks
    chunk, slot = _query_chunks(index, boxes, margin_m)
    table, row_of = index.fence_table(margin_m, np.unique(slot))
    fence_row = row_of[slot]
    keep = _applicable(table, labels, fixes.device[start[chunk]], fence_row)
    chunk, slot, fence_row = chunk[keep], slot[keep], fence_row[keep]
    settled = _settle_chunks(table, chunks, chunk, fence_row, fixes)
    found = [_inside_fixes(start, end, chunk, slot, settled == INSIDE)]
    # Chunks left undecided: settle their sub-chunks, then fix by fix.
    subs = _chunks(fixes, SUB_CHUNK_FIXES)
    sub_start, sub_end, _ = subs
    left = settled == MARGIN
    first = np.searchsorted(sub_start, start[chunk[left]])
    count = np.searchsorted(sub_start, end[chunk[left]]) - first
    sub = _expand(first, first + count)
    slot, fence_row = np.repeat(slot[left], count), np.repeat(fence_row[left], count)
    settled = _settle_chunks(table, subs, sub, fence_row, fixes)
    found.append(_inside_fixes(sub_start, sub_end, sub, slot, settled == INSIDE))
    left = settled == MARGIN
    count = sub_end[sub[left]] - sub_start[sub[left]]
    rows = _expand(sub_start[sub[left]], sub_end[sub[left]])
    zone = _fix_zones(table, fixes, rows, np.repeat(fence_row[left], count))
    hit = zone != OUTSIDE
    found.append((rows[hit], np.repeat(slot[left], count)[hit], zone[hit]))
    rows = np.concatenate([rows for rows, _, _ in found])
    slot = np.concatenate([slot for _, slot, _ in found])
    keys = fixes.device[rows].astype(np.int64) * index.slot_count + slot
    return keys, rows, np.concatenate([zone for _, _, zone in found])


def _inside_fixes(
    start: np.ndarray,
    end: np.ndarray,
    chunk: np.ndarray,
    slot: np.ndarray,
    chosen: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (row, slot, zone INSIDE) for every fix of the chosen pairs."""
    starts, ends = start[chunk[chosen]], end[chunk[chosen]]
    rows = _expand(starts, ends)
    return (
        rows,
        np.repeat(slot[chosen], ends - starts),
        np.full(len(rows), INSIDE, np.int8),
    )


def _chunks(fixes: _Accepted, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the start and end rows of each device's runs of `size` fixes
    and their (min_x, min_y, max_x, max_y) boxes, grown by 1e-9 degree so
    that even a one-fix chunk has an area."""
    start = np.flatnonzero(fixes.position % size == 0)
    end = np.append(start[1:], len(fixes.source))
    eps = 1e-9
    boxes = np.column_stack(
        [
            np.minimum.reduceat(fixes.lon, start) - eps,
            np.minimum.reduceat(fixes.lat, start) - eps,
            np.maximum.reduceat(fixes.lon, start) + eps,
            np.maximum.reduceat(fixes.lat, start) + eps,
        ]
    )
    return start, end, boxes


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
    if len(extra_owner) == 0:
        return query, slot  # unique pairs already
    width = slot.max(initial=0) + 1
    pairs = np.unique(all_owner[query].astype(np.int64) * width + slot)
    return pairs // width, pairs % width


def _applicable(
    table: FenceTable,
    labels: list[frozenset[str]],
    device: np.ndarray,
    fence_row: np.ndarray,
) -> np.ndarray:
    """Return which (device, fence row) pairs have a fence that applies to
    the device."""
    keep = np.ones(len(device), dtype=bool)
    for n in np.flatnonzero(table.restricted[fence_row]):
        fence = table.fences[int(fence_row[n])]
        keep[n] = fence.applies(labels[int(device[n])])
    return keep


def _settle_chunks(
    table: FenceTable,
    chunks: tuple[np.ndarray, np.ndarray, np.ndarray],
    chunk: np.ndarray,
    fence_row: np.ndarray,
    fixes: _Accepted,
) -> np.ndarray:
    """Return INSIDE or OUTSIDE for (chunk, fence) pairs settled as a whole,
    MARGIN for pairs whose fixes need a test each (always for circles,
    whose exact test is cheap). `chunks` is the output of `_chunks`.

    A chunk box outside a fence's reach box is OUTSIDE. A box farther from
    a fence's lines than any zone change can be, scaled by the smallest
    metres per degree over the box, is firm: all its fixes are inside a
    polygon or none is, so its first fix decides.
    """
    start, _, boxes = chunks
    settled = np.full(len(chunk), MARGIN, dtype=np.int8)
    near = _box_meets(boxes[chunk], table.reach_bounds[fence_row])
    settled[~near] = OUTSIDE
    shaped = np.flatnonzero(near & (table.kind[fence_row] != CIRCLE))
    box = boxes[chunk[shaped]]
    rows = fence_row[shaped]
    # A fix in the box is at least the centre's distance minus half the
    # diagonal from the lines: a point distance costs a third of a box's.
    centre_x = (box[:, 0] + box[:, 2]) / 2.0
    centre_y = (box[:, 1] + box[:, 3]) / 2.0
    half_diagonal = np.hypot(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]) / 2.0
    centres = shapely.points(centre_x, centre_y)
    distance = shapely.distance(table.lines[rows], centres) - half_diagonal
    max_lat = np.maximum(np.abs(box[:, 1]), np.abs(box[:, 3]))
    low = distance * min_metres_per_degree_array(max_lat)
    margin = table.margin[rows]
    polygon = table.kind[rows] == POLYGON
    # With margin 0 a box that touches the edges is not firm.
    firm = polygon & (distance > _TOUCH_DEG) & (low >= margin * _ABOVE)
    first = start[chunk[shaped[firm]]]
    inside = shapely.intersects_xy(
        table.area[rows[firm]], fixes.lon[first], fixes.lat[first]
    )
    settled[shaped[firm]] = np.where(inside, INSIDE, OUTSIDE)
    away = ~polygon & (low >= (table.half[rows] + margin) * _ABOVE)
    settled[shaped[away]] = OUTSIDE
    return settled


def _box_meets(box: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Return whether each box meets the matching bounds (boundary
    included; False for NaN bounds)."""
    result: np.ndarray = (
        (box[:, 0] <= bounds[:, 2])
        & (box[:, 1] <= bounds[:, 3])
        & (box[:, 2] >= bounds[:, 0])
        & (box[:, 3] >= bounds[:, 1])
    )
    return result


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
    table: FenceTable, fixes: _Accepted, rows: np.ndarray, fence_row: np.ndarray
) -> np.ndarray:
    """Return the zone of each (fix row, fence row) pair, as `Shape.zone`
    would: circles by numpy distances, other shapes by bounds on their
    distance, and the rest (ties, fixes near a boundary) by `Shape.zone`."""
    zone = np.full(len(rows), OUTSIDE, dtype=np.int8)
    lon = fixes.lon[rows]
    lat = fixes.lat[rows]
    points = np.column_stack([lon, lat, lon, lat])
    # A fix outside a fence's reach box is OUTSIDE: no distance needed.
    near = np.flatnonzero(_box_meets(points, table.reach_bounds[fence_row]))
    circle = near[table.kind[fence_row[near]] == CIRCLE]
    zone[circle] = _circle_zones(table, fence_row[circle], lon[circle], lat[circle])
    shaped = near[table.kind[fence_row[near]] != CIRCLE]
    zone[shaped] = _line_zones(table, fence_row[shaped], lon[shaped], lat[shaped])
    margin = table.margin[fence_row]
    for n in np.flatnonzero(zone == _UNDECIDED):
        fence = table.fences[int(fence_row[n])]
        zone[n] = fence.shape.zone(float(lon[n]), float(lat[n]), float(margin[n]))
    return zone


def _circle_zones(
    table: FenceTable, rows: np.ndarray, lon: np.ndarray, lat: np.ndarray
) -> np.ndarray:
    """Return circle zones, _UNDECIDED within _TIE_M of a threshold."""
    distance = circle_distances_m(
        table.lon[rows], table.lat[rows], table.rho[rows], lon, lat
    )
    low = table.radius[rows] - table.margin[rows]
    high = table.radius[rows] + table.margin[rows]
    zone = np.where(
        distance <= low, INSIDE, np.where(distance >= high, OUTSIDE, MARGIN)
    ).astype(np.int8)
    tie = np.minimum(np.abs(distance - low), np.abs(distance - high)) < _TIE_M
    zone[tie] = _UNDECIDED
    return zone


def _line_zones(
    table: FenceTable, rows: np.ndarray, lon: np.ndarray, lat: np.ndarray
) -> np.ndarray:
    """Return polygon and corridor zones from the distance to their lines.

    `Shape.zone` measures that distance in the local plane at the point,
    which scales degrees by `east` and `north`. So the local distance lies
    between `low` and `high` below, and a zone that both bounds agree on is
    the zone. The rest is _UNDECIDED. The bounds keep 1e-9 of slack, far
    more than numpy and the math module differ by.
    """
    distance = shapely.distance(table.lines[rows], shapely.points(lon, lat))
    east, north = metres_per_degree_array(lat)
    low = distance * np.minimum(east, north)
    high = distance * np.maximum(east, north)
    margin = table.margin[rows]
    zone = np.full(len(rows), _UNDECIDED, dtype=np.int8)
    polygon = np.flatnonzero(table.kind[rows] == POLYGON)
    firm = polygon[low[polygon] >= margin[polygon] * _ABOVE]
    inside = shapely.intersects_xy(table.area[rows[firm]], lon[firm], lat[firm])
    zone[firm] = np.where(inside, INSIDE, OUTSIDE)
    zone[polygon[high[polygon] < margin[polygon] * _BELOW]] = MARGIN
    corridor = np.flatnonzero(table.kind[rows] == CORRIDOR)
    inner = table.half[rows[corridor]] - margin[corridor]
    outer = table.half[rows[corridor]] + margin[corridor]
    low, high = low[corridor], high[corridor]
    zone[corridor[high <= inner * _BELOW]] = INSIDE
    zone[corridor[low >= outer * _ABOVE]] = OUTSIDE
    zone[corridor[(low > inner * _ABOVE) & (high < outer * _BELOW)]] = MARGIN
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
