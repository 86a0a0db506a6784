"""Track analytics shared by every store backend: simplification, stops,
daily mileage and presence inside an area.

The functions here take fixes (or rows) already read from a store, so both
backends return the same results. Distances are great-circle distances on a
sphere of radius 6,371,008.8 m (the IUGG mean Earth radius), which is within
0.5 % of the WGS-84 ellipsoid distance.

Stop rule: a stop is a run of consecutive valid fixes, each slower than
`StopRule.max_speed_kmh` and within `StopRule.radius_m` of the run's first
fix, that spans at least `StopRule.min_duration` from its first to its last
fix. Fixes marked invalid are skipped: they neither extend nor break a run.
A gap without fixes inside a run (a parked car that stops reporting) counts
as part of the stop, because the next fix shows the car did not move. Arrival
is the time of the run's first fix and departure that of its last, so a stop
at the edge of a query window is clipped to the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from postloan.model import Fix

EARTH_RADIUS_M = 6_371_008.8
# Faster than any road vehicle, slower than the jump a bad fix makes.
DEFAULT_MAX_SPEED_KMH = 250.0
# Maximum silence between two fixes whose leg is shared among the days it
# spans. A longer leg counts on the day of the fix that ends it.
SHARED_GAP = timedelta(hours=1)

AreaRow = tuple[str, datetime, float, float]
"""(device_id, fix time, longitude, latitude) of one fix read for an area query."""


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance in metres between two points in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = (
        math.sin(dphi / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _distance_m(a: Fix, b: Fix) -> float:
    return haversine_m(a.latitude, a.longitude, b.latitude, b.longitude)


# --- stops ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StopRule:
    """Thresholds of the stop rule in the module docstring."""

    max_speed_kmh: float = 5.0
    radius_m: float = 100.0
    min_duration: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.max_speed_kmh <= 0 or self.radius_m <= 0:
            raise ValueError("max_speed_kmh and radius_m must be positive")
        if self.min_duration < timedelta(0):
            raise ValueError("min_duration must not be negative")


@dataclass(frozen=True, slots=True)
class Stop:
    """A place where a device stayed, at the mean position of its fixes there."""

    device_id: str
    latitude: float
    longitude: float
    arrival: datetime
    departure: datetime
    fixes: int

    @property
    def duration(self) -> timedelta:
        return self.departure - self.arrival


@dataclass(slots=True)
class _Run:
    """Consecutive slow fixes near an anchor, by index into the track."""

    first_index: int
    first: Fix
    last_index: int = 0
    last: Fix | None = None
    count: int = 0
    latitude_sum: float = 0.0
    longitude_sum: float = 0.0

    def add(self, index: int, fix: Fix) -> None:
        self.last_index, self.last = index, fix
        self.count += 1
        self.latitude_sum += fix.latitude
        self.longitude_sum += fix.longitude


def stop_runs(fixes: Iterable[Fix], rule: StopRule) -> Iterator[_Run]:
    """Yield the runs of `fixes` that are stops, reading the fixes once."""
    run: _Run | None = None
    for index, fix in enumerate(fixes):
        if not fix.valid:
            continue
        slow = fix.speed_kmh < rule.max_speed_kmh
        if slow and run is not None and _distance_m(run.first, fix) <= rule.radius_m:
            run.add(index, fix)
            continue
        if run is not None and _is_stop(run, rule):
            yield run
        run = None
        if slow:
            run = _Run(index, fix)
            run.add(index, fix)
    if run is not None and _is_stop(run, rule):
        yield run


def _is_stop(run: _Run, rule: StopRule) -> bool:
    assert run.last is not None  # every run holds its first fix
    return run.last.time - run.first.time >= rule.min_duration


def find_stops(fixes: Iterable[Fix], rule: StopRule | None = None) -> list[Stop]:
    """Return the stops of one device's time-ordered fixes."""
    stops = []
    for run in stop_runs(fixes, rule or StopRule()):
        assert run.last is not None
        stops.append(
            Stop(
                device_id=run.first.device_id,
                latitude=run.latitude_sum / run.count,
                longitude=run.longitude_sum / run.count,
                arrival=run.first.time,
                departure=run.last.time,
                fixes=run.count,
            )
        )
    return stops


# --- simplification --------------------------------------------------------------


def simplify_track(
    fixes: Sequence[Fix], tolerance_m: float, rule: StopRule | None = None
) -> list[Fix]:
    """Thin a time-ordered track with Douglas-Peucker, `tolerance_m` in metres.

    The first and last fix, and the arrival and departure fix of every stop
    (see `StopRule`), are always kept, so the thinned track still shows
    where the car stood and when. Positions are projected onto a local
    equirectangular plane around the track's mean latitude, whose scale
    error stays under 1 % for tracks a few hundred kilometres tall.
    """
    if not tolerance_m >= 0:
        raise ValueError(f"tolerance must be a non-negative number, got {tolerance_m}")
    if len(fixes) <= 2:
        return list(fixes)
    latitudes = np.array([fix.latitude for fix in fixes])
    # Unwrapped, a track across the antimeridian stays one line.
    longitudes = np.rad2deg(np.unwrap(np.deg2rad([fix.longitude for fix in fixes])))
    scale = math.radians(1) * EARTH_RADIUS_M
    x = longitudes * scale * math.cos(math.radians(float(latitudes.mean())))
    y = latitudes * scale
    # The fix index rides along as the z coordinate, which GEOS keeps on the
    # vertices it retains, so kept vertices map back to fixes exactly.
    line = shapely.linestrings(np.column_stack([x, y, np.arange(len(fixes))]))
    kept = shapely.simplify(line, tolerance_m, preserve_topology=False)
    indexes = {int(z) for z in shapely.get_coordinates(kept, include_z=True)[:, 2]}
    indexes.update((0, len(fixes) - 1))
    for run in stop_runs(fixes, rule or StopRule()):
        indexes.update((run.first_index, run.last_index))
    return [fixes[index] for index in sorted(indexes)]


# --- daily mileage -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DailyMileage:
    """Distance one device covered in one local day, in kilometres."""

    device_id: str
    day: date
    distance_km: float
    fixes: int
    jumps_filtered: int


@dataclass(slots=True)
class _DayTotals:
    metres: float = 0.0
    fixes: int = 0
    jumps: int = 0


@dataclass(slots=True)
class _Candidate:
    """A fix that needs a later fix to agree with it before it counts.

    `repeats` are later fixes at exactly the same position, held with it.
    """

    first: Fix
    repeats: list[Fix] = field(default_factory=list)

    def fixes(self) -> Iterator[Fix]:
        yield self.first
        yield from self.repeats


@dataclass(slots=True)
class _Odometer:
    """Sums distances between consecutive plausible fixes, split by local day.

    A fix is plausible when it can be reached from the last counted fix at no
    more than `max_speed_kmh`. Trackers often resend their last position for
    a while (no new GPS solution yet) and then report the real one. So the
    time allowed for a leg runs from `moved_at`, the first report of the last
    counted position, not from its latest repeat. Such a leg, plausible only
    because of the repeats, is a `_Candidate`: it counts once the next fix at
    another position agrees with it (plausible from it). Without that check,
    a far outlier after a long stop would count. A fix that disagrees with
    both the candidate and the last counted fix is set aside as a jump and
    the candidate kept. A candidate still open when the fixes end counts.
    """

    zone: tzinfo
    max_speed_kmh: float
    days: dict[date, _DayTotals] = field(default_factory=dict)
    previous: Fix | None = None
    moved_at: datetime | None = None
    candidate: _Candidate | None = None
    rejected: Fix | None = None

    def feed(self, fix: Fix) -> None:
        if self.previous is None:
            self._accept(None, fix)
            return
        candidate = self.candidate
        if candidate is not None:
            if _same_place(candidate.first, fix):
                candidate.repeats.append(fix)
                return
            if self._agrees_with(candidate.first, fix):
                self._confirm(candidate)
            elif self._from_previous(fix) or self._agrees_with_rejected(fix):
                # The fix goes on from the counted track, or from the place
                # a rejected fix reported: the candidate was the outlier.
                self._discard(candidate)
            else:
                self._reject(fix)
                return
            self.candidate = None
        self._feed_after(self.previous, fix)

    def _feed_after(self, previous: Fix, fix: Fix) -> None:
        if _same_place(previous, fix) or self._plausible(previous, previous.time, fix):
            self._accept(previous, fix)
        elif self._from_previous(fix):
            self.candidate = _Candidate(fix)
        elif self.rejected is not None and self._agrees_with(self.rejected, fix):
            # Two fixes agree on the new place: the device really is there
            # (the previous fix was the bad one, or it moved unseen), so the
            # track resumes from the rejected fix without counting the jump.
            rejected = self.rejected
            self._accept(rejected, fix)
            if _same_place(rejected, fix):
                self.moved_at = rejected.time
        else:
            self._reject(fix)

    def finish(self) -> None:
        """Count a candidate left open by the last fix."""
        # NOTE: so a far outlier that is the very last fix after a long run of
        # one position counts, because no later fix can contradict it.
        if self.candidate is not None:
            self._confirm(self.candidate)
            self.candidate = None

    def _from_previous(self, fix: Fix) -> bool:
        """Report whether `fix` is plausible timed from the last change of position."""
        assert self.previous is not None and self.moved_at is not None
        return self._plausible(self.previous, self.moved_at, fix)

    def _agrees_with_rejected(self, fix: Fix) -> bool:
        return self.rejected is not None and self._agrees_with(self.rejected, fix)

    def _agrees_with(self, earlier: Fix, fix: Fix) -> bool:
        return self._plausible(earlier, earlier.time, fix)

    def _plausible(self, a: Fix, since: datetime, b: Fix) -> bool:
        seconds = (b.time - since).total_seconds()
        metres = _distance_m(a, b)
        if seconds <= 0:
            return metres == 0
        return metres / seconds * 3.6 <= self.max_speed_kmh

    def _confirm(self, candidate: _Candidate) -> None:
        self._accept(self.previous, candidate.first)
        for repeat in candidate.repeats:
            self._accept(candidate.first, repeat)

    def _discard(self, candidate: _Candidate) -> None:
        for fix in candidate.fixes():
            self._day(fix.time).jumps += 1

    def _reject(self, fix: Fix) -> None:
        self.rejected = fix
        self._day(fix.time).jumps += 1

    def _accept(self, start: Fix | None, fix: Fix) -> None:
        self._day(fix.time).fixes += 1
        if start is not None:
            for day, metres in self._split_by_day(start, fix):
                self._day_of(day).metres += metres
        if start is None or not _same_place(start, fix):
            self.moved_at = fix.time
        self.previous, self.rejected = fix, None

    def _split_by_day(self, a: Fix, b: Fix) -> Iterator[tuple[date, float]]:
        """Share the distance a->b among local days in proportion to time.

        After a gap longer than SHARED_GAP the time of the move is unknown,
        so the whole leg goes to the day of `b`, when the move was seen.
        Shared out, a tracker silent for months would put a few metres on
        every day in between.
        """
        total = _distance_m(a, b)
        if b.time - a.time > SHARED_GAP:
            yield b.time.astimezone(self.zone).date(), total
            return
        seconds = (b.time - a.time).total_seconds()
        start = a.time
        while True:
            local_day = start.astimezone(self.zone).date()
            midnight = datetime.combine(
                local_day + timedelta(days=1), time(0), tzinfo=self.zone
            ).astimezone(UTC)
            if midnight >= b.time or seconds <= 0:
                yield (
                    local_day,
                    total * (b.time - start).total_seconds() / (seconds or 1),
                )
                return
            yield local_day, total * (midnight - start).total_seconds() / seconds
            start = midnight

    def _day(self, moment: datetime) -> _DayTotals:
        return self._day_of(moment.astimezone(self.zone).date())

    def _day_of(self, day: date) -> _DayTotals:
        return self.days.setdefault(day, _DayTotals())


def _same_place(a: Fix, b: Fix) -> bool:
    return a.latitude == b.latitude and a.longitude == b.longitude


def daily_mileage(
    fixes: Iterable[Fix],
    *,
    zone: str | tzinfo = "UTC",
    max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH,
) -> list[DailyMileage]:
    """Return one device's distance per day of `zone`, in day order.

    Only valid fixes count. Speeds are timed from the first report of the
    last counted position, so a position a tracker repeated for a while and
    then left counts in full. A fix that could only be reached faster than
    `max_speed_kmh` is a jump and is skipped, unless the fix after it agrees
    with it; a single far fix that the next one contradicts adds nothing (see
    `_Odometer`). Each valid fix adds 1 to `fixes` or to `jumps_filtered` of
    its day. A leg that spans local midnight is shared between the days in
    proportion to time, unless the tracker was silent longer than SHARED_GAP:
    then the leg counts on the day it ends. Days are local calendar days, so a
    DST change
    gives a 23- or 25-hour day. Raises ``zoneinfo.ZoneInfoNotFoundError`` for
    an unknown zone name.
    """
    if max_speed_kmh <= 0:
        raise ValueError(f"max_speed_kmh must be positive, got {max_speed_kmh}")
    odometer = _Odometer(
        ZoneInfo(zone) if isinstance(zone, str) else zone, max_speed_kmh
    )
    device_id = ""
    for fix in fixes:
        if fix.valid:
            device_id = fix.device_id
            odometer.feed(fix)
    odometer.finish()
    return [
        DailyMileage(device_id, day, totals.metres / 1000, totals.fixes, totals.jumps)
        for day, totals in sorted(odometer.days.items())
    ]


# --- presence in an area ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sighting:
    """A device's fixes inside an area during a window, and its vehicles then."""

    device_id: str
    first_seen: datetime
    last_seen: datetime
    fixes: int
    vehicle_ids: tuple[str, ...] = ()


def check_area(area: BaseGeometry) -> None:
    """Raise ValueError unless `area` is a valid, non-empty (multi)polygon."""
    if area.geom_type not in {"Polygon", "MultiPolygon"}:
        raise ValueError(
            f"the area must be a Polygon or MultiPolygon, got {area.geom_type}"
        )
    if area.is_empty:
        raise ValueError("the area is empty")
    if not area.is_valid:
        reason = shapely.is_valid_reason(area)
        raise ValueError(f"the area is not a valid polygon: {reason}")


@dataclass(slots=True)
class _Presence:
    first: datetime
    last: datetime
    fixes: int = 1


def collect_sightings(
    chunks: Iterable[Sequence[AreaRow]], area: BaseGeometry
) -> list[Sighting]:
    """Return one sighting per device with a fix inside `area`, by device id.

    A fix on the area's boundary counts as inside (``intersects``, which for
    a point is ``covers``). `chunks` hold rows already limited to the area's
    bounding box, so only candidates reach the exact test.
    """
    shapely.prepare(area)
    seen: dict[str, _Presence] = {}
    for chunk in chunks:
        if not chunk:
            continue
        x = np.fromiter((row[2] for row in chunk), dtype=float, count=len(chunk))
        y = np.fromiter((row[3] for row in chunk), dtype=float, count=len(chunk))
        for index in np.flatnonzero(shapely.intersects_xy(area, x, y)):
            device_id, moment, _, _ = chunk[int(index)]
            presence = seen.get(device_id)
            if presence is None:
                seen[device_id] = _Presence(moment, moment)
            else:
                presence.first = min(presence.first, moment)
                presence.last = max(presence.last, moment)
                presence.fixes += 1
    return [
        Sighting(device_id, presence.first, presence.last, presence.fixes)
        for device_id, presence in sorted(seen.items())
    ]
