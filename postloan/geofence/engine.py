"""Per-device fence transitions with hysteresis and dwell, decided by fix time.

Rules, per device and fence, over the device's fixes in the order processed:

* Each valid fix falls in a zone of the fence (see `fences`): INSIDE means
  covered and at least `margin_m` metres from the boundary, OUTSIDE means
  not covered and at least `margin_m` from it, MARGIN is everything closer.
  The boundary itself counts as inside (`covers`), which matters only with
  `margin_m=0`. A fence narrower than twice the margin uses a smaller one
  (half its inradius), so it can still be entered.
* Every device starts outside every fence. After `confirm_fixes`
  consecutive fixes in the opposite zone the state flips and an ``enter`` or
  ``exit`` event fires. Its time and position are those of the first fix of
  that run. A MARGIN fix keeps the state and restarts the count.
* A ``dwell`` event fires once per stay in a risk, home or work fence, at
  the first fix that is at least `dwell_s` after the enter time while the
  device is inside with no exit pending.
* Invalid fixes (`Fix.valid` False, or coordinates out of range) are ignored.
* A late fix, one whose time is not after the newest fix already processed
  for its device, changes no state and fires nothing: the state already
  reflects later positions, so applying it could only raise stale alerts.
  `EngineStats.late_fixes` counts them. To recompute history that includes
  backfilled fixes, replay the track in time order through `batch` or
  ``postloan fences check``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import shapely
from shapely.geometry import Point

from postloan.geofence.fences import (
    INSIDE,
    OUTSIDE,
    CircleShape,
    Fence,
    PolygonShape,
    Role,
    pad_degrees,
)
from postloan.geofence.index import FenceIndex
from postloan.model import FenceEvent, Fix

#: Roles whose fences fire dwell events; enter and exit fire for all roles.
DWELL_BY_ROLE: dict[Role, bool] = {
    Role.PERMITTED: False,
    Role.RISK: True,
    Role.HOME: True,
    Role.WORK: True,
}

#: Order of events that one fix fires: leave before arriving elsewhere.
EVENT_RANK = {"exit": 0, "enter": 1, "dwell": 2}

#: Half-size in degrees of the box around a fix whose candidate fences a
#: device keeps: about 11 km, 20 or more fixes of a moving car. On the data
#: of bench/bench_geofence.py 0.1 gave the lowest mean cost per fix. With
#: 0.05 the engine queries the index twice as often, and with 0.2 it tests
#: more fences per fix.
CACHE_HALF_DEG = 0.1

MAX_MARGIN_M = 5_000.0


@dataclass(frozen=True)
class HysteresisSettings:
    """How fixes near a boundary are confirmed.

    The defaults keep a parked car quiet: tracker fixes scatter about 5-30 m
    (more under multipath), so a 50 m margin leaves 20 m of headroom over a
    30 m jitter, and two confirming fixes stop a single outlier. A real
    crossing at 10-30 s per fix is confirmed 1-2 fixes after the car is
    50 m past the boundary. Ten minutes of dwell separates a visit from
    a drive-past or a wait at a traffic light.
    """

    margin_m: float = 50.0
    confirm_fixes: int = 2
    dwell_s: float = 600.0  # math.inf disables dwell events

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin_m <= MAX_MARGIN_M:
            raise ValueError(
                f"margin_m {self.margin_m!r} must be in [0, {MAX_MARGIN_M:g}]"
            )
        if isinstance(self.confirm_fixes, bool) or not isinstance(
            self.confirm_fixes, int
        ):
            raise ValueError(f"confirm_fixes {self.confirm_fixes!r} must be an integer")
        if self.confirm_fixes < 1:
            raise ValueError(f"confirm_fixes {self.confirm_fixes!r} must be at least 1")
        if not self.dwell_s > 0.0:
            raise ValueError(
                f"dwell_s {self.dwell_s!r} must be positive (inf: no dwell)"
            )

    @property
    def dwell(self) -> timedelta | None:
        return None if math.isinf(self.dwell_s) else timedelta(seconds=self.dwell_s)


DEFAULT_SETTINGS = HysteresisSettings()

#: No hysteresis: every change of containment, boundary inside, no dwell.
RAW = HysteresisSettings(margin_m=0.0, confirm_fixes=1, dwell_s=math.inf)


@dataclass
class EngineStats:
    """Counters of fixes the engine did not evaluate, and of evaluations."""

    invalid_fixes: int = 0
    late_fixes: int = 0
    evaluations: int = 0
    index_queries: int = 0


def device_labels(
    device_id: str, groups_of: Callable[[str], Collection[str]] | None
) -> frozenset[str]:
    """Return the selectors a device matches: ``device:<id>`` plus the
    labels `groups_of` returns (a bare label is a group name)."""
    labels = {f"device:{device_id}"}
    for label in groups_of(device_id) if groups_of is not None else ():
        labels.add(label if ":" in label else f"group:{label}")
    return frozenset(labels)


class _Pair:
    """State of one device in one fence, plus a cached zone.

    The zone cache is a disc in degrees around (`cx`, `cy`) within which the
    zone cannot change; `radius` < 0 means no cache, and `radius2` is its
    square (-1 without cache). `pad` is the margin in degrees: a fix farther
    than that from every one of `boxes` is OUTSIDE.
    """

    __slots__ = (
        "boxes",
        "candidate",
        "circle",
        "cx",
        "cy",
        "dwell",
        "dwelled",
        "enter_time",
        "fence",
        "inside",
        "margin",
        "pad",
        "radius",
        "radius2",
        "run",
        "run_lat",
        "run_lon",
        "run_time",
        "zone",
    )

    def __init__(self, fence: Fence, margin_m: float) -> None:
        self.fence = fence
        self.margin = fence.shape.effective_margin(margin_m)
        self.dwell = DWELL_BY_ROLE[fence.role]
        shape = fence.shape
        self.circle = isinstance(shape, CircleShape)
        self.boxes = (
            shape.near_boxes if isinstance(shape, PolygonShape) else shape.boxes
        )
        self.candidate = True
        self.pad = 0.0
        self.inside = False
        self.run = 0
        self.run_time: datetime | None = None
        self.run_lat = 0.0
        self.run_lon = 0.0
        self.enter_time: datetime | None = None
        self.dwelled = False
        self.zone = OUTSIDE
        self.cx = 0.0
        self.cy = 0.0
        self.radius = -1.0
        self.radius2 = -1.0


class _Device:
    __slots__ = (
        "box",
        "deadline",
        "fast_r2",
        "fast_x",
        "fast_y",
        "labels",
        "last_time",
        "pairs",
        "version",
    )

    def __init__(self, labels: frozenset[str]) -> None:
        self.labels = labels
        self.last_time: datetime | None = None
        self.box = (1.0, 1.0, -1.0, -1.0)  # empty: the first fix queries
        self.version = -1
        self.pairs: dict[str, _Pair] = {}
        self.fast_x = 0.0
        self.fast_y = 0.0
        self.fast_r2 = -1.0
        self.deadline: datetime | None = None


class FenceEngine:
    """Turn fixes into fence events, one device state per device id.

    `groups_of(device_id)` returns the device's group names and its
    ``vehicle:<id>`` label; a fence's `applies_to` selects on them. Labels
    are read once per device; call `refresh_device` after they change.

    Call `FenceIndex.prepare` once before the first fix. Otherwise the first
    fix near each fence also builds that fence's edges and indexes.
    """

    def __init__(
        self,
        index: FenceIndex,
        settings: HysteresisSettings = DEFAULT_SETTINGS,
        *,
        groups_of: Callable[[str], Collection[str]] | None = None,
    ) -> None:
        self._index = index
        self._settings = settings
        self._groups_of = groups_of
        self._confirm = settings.confirm_fixes
        self._dwell = settings.dwell
        self._devices: dict[str, _Device] = {}
        self.stats = EngineStats()

    @property
    def settings(self) -> HysteresisSettings:
        return self._settings

    def process(self, fix: Fix) -> list[FenceEvent]:
        """Apply one fix; return the events it fires (often none)."""
        lon = fix.longitude
        lat = fix.latitude
        if not (fix.valid and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            self.stats.invalid_fixes += 1
            return []
        time = fix.time
        if time.tzinfo is None:
            raise ValueError(
                f"fix time {time.isoformat()} of {fix.device_id} has no timezone"
            )
        device = self._devices.get(fix.device_id)
        if device is None:
            device = self._add_device(fix.device_id)
        last = device.last_time
        if last is not None and time <= last:
            self.stats.late_fixes += 1
            return []
        device.last_time = time
        dx = lon - device.fast_x
        dy = lat - device.fast_y
        if (
            dx * dx + dy * dy <= device.fast_r2
            and device.version == self._index.version
            and (device.deadline is None or time < device.deadline)
        ):
            return []
        return self._evaluate(device, fix, lon, lat)

    def process_many(self, fixes: Iterable[Fix]) -> list[FenceEvent]:
        """Apply fixes in the given order; return all events in order."""
        events: list[FenceEvent] = []
        for fix in fixes:
            found = self.process(fix)
            if found:
                events.extend(found)
        return events

    def inside(self, device_id: str) -> frozenset[str]:
        """Return the ids of the fences a device is confirmed inside."""
        device = self._devices.get(device_id)
        if device is None:
            return frozenset()
        return frozenset(fid for fid, pair in device.pairs.items() if pair.inside)

    def refresh_device(self, device_id: str) -> None:
        """Re-read a device's labels from `groups_of` at its next fix."""
        device = self._devices.get(device_id)
        if device is not None:
            device.labels = device_labels(device_id, self._groups_of)
            device.version = -1
            device.fast_r2 = -1.0

    def _add_device(self, device_id: str) -> _Device:
        device = _Device(device_labels(device_id, self._groups_of))
        self._devices[device_id] = device
        return device

    def _evaluate(
        self, device: _Device, fix: Fix, lon: float, lat: float
    ) -> list[FenceEvent]:
        self.stats.evaluations += 1
        min_x, min_y, max_x, max_y = device.box
        inside_box = min_x <= lon <= max_x and min_y <= lat <= max_y
        refresh = device.version != self._index.version or not inside_box
        if refresh:
            self._refresh_candidates(device, lon, lat)
            min_x, min_y, max_x, max_y = device.box
        events: list[FenceEvent] = []
        reach = min(lon - min_x, max_x - lon, lat - min_y, max_y - lat)
        # Past the deadline some stay is due for dwell: step every pair inside.
        dwell_due = device.deadline is not None and fix.time >= device.deadline
        point: Point | None = None  # built once, by the first shape test
        dropped: list[str] = []
        for fence_id, pair in device.pairs.items():
            distance2 = 0.0
            if not pair.candidate:
                zone = OUTSIDE
            else:
                dx = lon - pair.cx
                dy = lat - pair.cy
                distance2 = dx * dx + dy * dy
                if distance2 <= pair.radius2:
                    zone = pair.zone
                else:
                    zone, point = self._zone(pair, lon, lat, point)
                    distance2 = 0.0
            # Without a run, a zone other than the target and no dwell due,
            # a step changes nothing.
            target = OUTSIDE if pair.inside else INSIDE
            if pair.run or zone == target or (dwell_due and pair.inside):
                self._step(pair, zone, fix, events)
            if pair.run:
                reach = -1.0
            elif pair.candidate:
                reach = min(reach, pair.radius - math.sqrt(distance2))
            elif not pair.inside:
                dropped.append(fence_id)  # left behind: nothing to remember
        for fence_id in dropped:
            del device.pairs[fence_id]
        if refresh or events:
            device.deadline = self._dwell_deadline(device)
        device.fast_x = lon
        device.fast_y = lat
        device.fast_r2 = reach * reach if reach > 0.0 else -1.0
        if len(events) > 1:
            events.sort(key=lambda event: (EVENT_RANK[event.event], event.fence_id))
        return events

    def _dwell_deadline(self, device: _Device) -> datetime | None:
        """Return the earliest time at which a stay becomes due for dwell."""
        if self._dwell is None:
            return None
        deadline: datetime | None = None
        for pair in device.pairs.values():
            if pair.inside and pair.dwell and not pair.dwelled:
                assert pair.enter_time is not None
                due = pair.enter_time + self._dwell
                deadline = due if deadline is None or due < deadline else deadline
        return deadline

    def _refresh_candidates(self, device: _Device, lon: float, lat: float) -> None:
        self.stats.index_queries += 1
        half = CACHE_HALF_DEG
        margin_m = self._settings.margin_m
        max_lat = abs(lat) + half
        pad = pad_degrees(margin_m, max_lat)
        found = self._index.candidates(
            lon - half - pad, lat - half - pad, lon + half + pad, lat + half + pad
        )
        # Pads by effective margin: only fences narrower than twice the
        # margin differ from the setting.
        pads = {margin_m: pad}
        pairs: dict[str, _Pair] = {}
        old = device.pairs
        labels = device.labels
        for fence in found:
            if fence.applies_to is not None and not fence.applies(labels):
                continue
            pair = old.get(fence.id)
            if pair is None or pair.fence is not fence:
                pair = _Pair(fence, margin_m)
            pair.candidate = True
            fence_pad = pads.get(pair.margin)
            if fence_pad is None:
                fence_pad = pads[pair.margin] = pad_degrees(pair.margin, max_lat)
            pair.pad = fence_pad
            pairs[fence.id] = pair
        for fence_id, pair in old.items():
            # Far from a fence it is still inside: that stay ends by exit.
            # A fence removed or replaced in the index ends without events.
            if fence_id in pairs or not (pair.inside or pair.run):
                continue
            if self._index.get(fence_id) is pair.fence:
                pair.candidate = False
                pair.radius = -1.0
                pair.radius2 = -1.0
                pairs[fence_id] = pair
        device.pairs = pairs
        device.box = (lon - half, lat - half, lon + half, lat + half)
        device.version = self._index.version

    @staticmethod
    def _zone(
        pair: _Pair, lon: float, lat: float, point: Point | None
    ) -> tuple[int, Point | None]:
        """Evaluate a candidate pair's zone and cache it with its disc.

        Return the zone and `point`, which is built here if it was None and
        a shape test needs it.
        """
        shape = pair.fence.shape
        gap = _box_gap(pair.boxes, lon, lat, pair.pad)
        if gap > 0.0:
            zone, radius = OUTSIDE, gap
        elif pair.circle:
            zone, radius = shape.evaluate(lon, lat, pair.margin)
        else:
            if point is None:
                point = shapely.points((lon, lat))  # faster than Point(lon, lat)
            zone, radius = shape.evaluate(lon, lat, pair.margin, point)
        # Shrink the disc a little: a point exactly at its rim may lie on a
        # boundary, where the zone changes (the boundary counts as inside).
        radius = radius * (1.0 - 1e-9) - 1e-12
        pair.zone = zone
        pair.cx = lon
        pair.cy = lat
        if radius > 0.0:
            pair.radius = radius
            pair.radius2 = radius * radius
        else:
            pair.radius = -1.0
            pair.radius2 = -1.0
        return zone, point

    def _step(self, pair: _Pair, zone: int, fix: Fix, events: list[FenceEvent]) -> None:
        target = OUTSIDE if pair.inside else INSIDE
        if zone == target:
            if pair.run == 0:
                pair.run_time = fix.time
                pair.run_lat = fix.latitude
                pair.run_lon = fix.longitude
            pair.run += 1
            if pair.run >= self._confirm:
                self._flip(pair, fix.device_id, events)
        else:
            pair.run = 0
        if pair.inside and pair.run == 0 and pair.dwell and not pair.dwelled:
            assert pair.enter_time is not None
            if self._dwell is not None and fix.time - pair.enter_time >= self._dwell:
                pair.dwelled = True
                events.append(
                    FenceEvent(
                        fix.device_id,
                        pair.fence.id,
                        "dwell",
                        fix.time,
                        fix.latitude,
                        fix.longitude,
                    )
                )

    @staticmethod
    def _flip(pair: _Pair, device_id: str, events: list[FenceEvent]) -> None:
        assert pair.run_time is not None
        pair.inside = not pair.inside
        pair.run = 0
        if pair.inside:
            pair.enter_time = pair.run_time
            pair.dwelled = False
        kind = "enter" if pair.inside else "exit"
        events.append(
            FenceEvent(
                device_id,
                pair.fence.id,
                kind,
                pair.run_time,
                pair.run_lat,
                pair.run_lon,
            )
        )


def _box_gap(
    boxes: tuple[tuple[float, float, float, float], ...],
    lon: float,
    lat: float,
    pad: float,
) -> float:
    """Return the distance in degrees from (lon, lat) to the nearest box grown
    by `pad`, 0 when inside one."""
    best = math.inf
    # Comparisons instead of max(): this runs several times per evaluation.
    for min_x, min_y, max_x, max_y in boxes:
        dx = min_x - pad - lon
        if dx <= 0.0:
            dx = lon - max_x - pad
        dy = min_y - pad - lat
        if dy <= 0.0:
            dy = lat - max_y - pad
        if dx <= 0.0:
            if dy <= 0.0:
                return 0.0
            gap = dy
        elif dy <= 0.0:
            gap = dx
        else:
            gap = math.hypot(dx, dy)
        if gap < best:
            best = gap
    return best
