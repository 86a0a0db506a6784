"""Track points, trajectories and the motion derived from consecutive fixes.

A `Trajectory` contains the points of one vehicle sorted by time with unique
times. `Trajectory.from_points` sorts, drops later duplicate times and
derives missing speed and course from consecutive valid points.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

# GT06 carries speed in one unsigned byte of km/h (Concox JM-VL03 protocol
# v1.1.2, GPS information block), so every speed is clamped to this range.
MAX_SPEED_KMH = 255.0

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean Earth radius

# Below this distance two fixes count as the same place: no course is derived
# from a step shorter than GPS noise.
_MIN_COURSE_STEP_M = 1.0


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """One recorded fix: UTC time in whole seconds, WGS-84 degrees, km/h."""

    time: datetime
    latitude: float
    longitude: float
    speed_kmh: float | None = None
    course: float | None = None
    altitude_m: float | None = None
    valid: bool = True

    def __post_init__(self) -> None:
        if self.time.tzinfo is not UTC or self.time.microsecond:
            raise ValueError(f"time {self.time!r} is not UTC in whole seconds")
        if not (-90.0 <= self.latitude <= 90.0 and -180.0 <= self.longitude <= 180.0):
            raise ValueError(
                f"position lat {self.latitude}, lon {self.longitude} is out of range"
            )


@dataclass(frozen=True, slots=True)
class Trajectory:
    """The track of one vehicle from one source, sorted by time, unique times."""

    vehicle_id: str
    source: str
    points: tuple[TrackPoint, ...]

    def __post_init__(self) -> None:
        for before, after in itertools.pairwise(self.points):
            if after.time <= before.time:
                raise ValueError(
                    f"points of {self.vehicle_id} are not in strictly increasing "
                    f"time order at {after.time.isoformat()}; use from_points"
                )

    @classmethod
    def from_points(
        cls, vehicle_id: str, source: str, points: Iterable[TrackPoint]
    ) -> Trajectory:
        """Sort points by time, drop later duplicate times, derive motion.

        Sorting is stable, so of two points with the same time the one earlier
        in `points` is kept.
        """
        ordered = sorted(points, key=lambda point: point.time)
        unique = [
            point
            for index, point in enumerate(ordered)
            if index == 0 or point.time != ordered[index - 1].time
        ]
        return cls(vehicle_id, source, tuple(derive_motion(unique)))


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Return the great-circle distance in metres on a spherical Earth."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = (
        math.sin(dphi / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Return the initial great-circle bearing, degrees clockwise from north."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dlambda = math.radians(lon2 - lon1)
    y = math.sin(dlambda) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(
        dlambda
    )
    return math.degrees(math.atan2(y, x)) % 360.0


def clamp_speed(speed_kmh: float) -> float:
    return min(max(speed_kmh, 0.0), MAX_SPEED_KMH)


def derive_motion(points: Sequence[TrackPoint]) -> list[TrackPoint]:
    """Fill missing speed and course from the step to the previous valid point.

    The first valid point takes the step to the next valid point. A step
    shorter than 1 m keeps the previous course, so a parked vehicle keeps its
    heading. Invalid points are neither used nor filled. Every speed, given or
    derived, is clamped to 0..255 km/h.
    """
    valid = [index for index, point in enumerate(points) if point.valid]
    result = list(points)
    course: float | None = None
    for order, index in enumerate(valid):
        point = points[index]
        if order > 0:
            step = (points[valid[order - 1]], point)
        elif len(valid) > 1:
            step = (point, points[valid[1]])
        else:
            step = (point, point)
        speed, step_course = _step_motion(*step)
        course = step_course if step_course is not None else course
        result[index] = dataclasses.replace(
            point,
            speed_kmh=clamp_speed(
                speed if point.speed_kmh is None else point.speed_kmh
            ),
            course=course if point.course is None else point.course,
        )
    return result


def _step_motion(start: TrackPoint, end: TrackPoint) -> tuple[float, float | None]:
    """Return (speed km/h, course or None) of the straight step start -> end."""
    distance = haversine_m(start.longitude, start.latitude, end.longitude, end.latitude)
    seconds = (end.time - start.time).total_seconds()
    speed = distance / seconds * 3.6 if seconds > 0 else 0.0
    if distance < _MIN_COURSE_STEP_M:
        return speed, None
    return speed, bearing_deg(
        start.longitude, start.latitude, end.longitude, end.latitude
    )


def whole_seconds_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


def merge_by_vehicle(trajectories: Iterable[Trajectory]) -> list[Trajectory]:
    """Join trajectories with the same vehicle id, in order of first appearance."""
    grouped: dict[str, list[Trajectory]] = {}
    for trajectory in trajectories:
        grouped.setdefault(trajectory.vehicle_id, []).append(trajectory)
    return [
        Trajectory.from_points(
            vehicle_id,
            ";".join(part.source for part in parts),
            (point for part in parts for point in part.points),
        )
        for vehicle_id, parts in grouped.items()
    ]
