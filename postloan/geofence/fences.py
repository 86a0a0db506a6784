"""Fence model, GeoJSON import and validation, and the metric behind containment.

Coordinates are WGS-84 degrees in (lon, lat) order everywhere. The boundary
counts as inside (shapely's `covers`, not `contains`).

A shape classifies a point into one of three zones for a hysteresis margin of
``m`` metres. `INSIDE` is covered and at least ``m`` from the boundary,
`OUTSIDE` is not covered and at least ``m`` from the boundary, and `MARGIN`
is closer than ``m`` to the boundary. Distances near a point are measured in a
local plane at that point, scaled by the WGS-84 radii of curvature, so a
metre is a metre at every latitude. Circles use the ellipsoidal chord
distance, which is within 1 cm of the geodesic for radii up to 100 km.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import shapely
from shapely.geometry import LineString, MultiLineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from postloan.model import EMPTY

# WGS-84 ellipsoid (NIMA TR8350.2, table 3.1).
WGS84_A = 6_378_137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)
_RAD = math.pi / 180

#: Upper bound of the metres per degree of latitude or longitude anywhere on
#: WGS-84: a degree of latitude at a pole is 111,694 m.
K_MAX = 111_700.0
#: A degree of latitude at the equator (the smallest north-south scale).
_K_NORTH_MIN = 110_574.0
#: Safety factor on degree bounds derived from metres: room for rounding and
#: for the chord-to-ground step of circle distances (under 0.01 % within
#: MAX_RADIUS_M).
SAFETY = 1.02
#: Largest circle radius: the chord distance stays within 1 cm of the geodesic.
MAX_RADIUS_M = 100_000.0

INSIDE = 1
MARGIN = 0
OUTSIDE = -1

Box = tuple[float, float, float, float]
_ORIGIN = Point(0.0, 0.0)


def radii_of_curvature(lat: float) -> tuple[float, float]:
    """Return the meridional (M) and prime-vertical (N) radii in metres."""
    sin_phi = math.sin(lat * _RAD)
    w2 = 1.0 - WGS84_E2 * sin_phi * sin_phi
    return WGS84_A * (1.0 - WGS84_E2) / (w2 * math.sqrt(w2)), WGS84_A / math.sqrt(w2)


def metres_per_degree(lat: float) -> tuple[float, float]:
    """Return metres per degree eastward and northward at latitude `lat`."""
    meridional, prime_vertical = radii_of_curvature(lat)
    east = _RAD * prime_vertical * math.cos(lat * _RAD)
    return max(east, 0.0), _RAD * meridional


def metres_per_degree_array(lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return `metres_per_degree` for each latitude of an array."""
    sin_phi = np.sin(lat * _RAD)
    w2 = 1.0 - WGS84_E2 * sin_phi * sin_phi
    meridional = WGS84_A * (1.0 - WGS84_E2) / (w2 * np.sqrt(w2))
    prime_vertical = WGS84_A / np.sqrt(w2)
    east = _RAD * prime_vertical * np.cos(lat * _RAD)
    return np.maximum(east, 0.0), _RAD * meridional


def min_metres_per_degree_array(abs_lat: np.ndarray) -> np.ndarray:
    """Return `min_metres_per_degree` for each latitude of an array."""
    east, _ = metres_per_degree_array(np.minimum(abs_lat, 90.0))
    result: np.ndarray = np.minimum(east, _K_NORTH_MIN)
    return result


def pad_degrees(reach_m: float, max_abs_lat: float) -> float:
    """Return a distance in degrees that every point closer than `reach_m`
    metres to a set within latitudes ±`max_abs_lat` lies within."""
    first = reach_m * SAFETY / scale_floor(max_abs_lat)
    scale = scale_floor(max_abs_lat + 2.0 * first)
    second = reach_m * SAFETY / scale if scale > 0.0 else math.inf
    # Near a pole the scale collapses and no finite pad is safe.
    return second if second <= 2.0 * first else 360.0


def min_metres_per_degree(abs_lat: float) -> float:
    """Return a lower bound of the metres per degree, in any direction, at
    every latitude from 0 up to `abs_lat`."""
    east, _ = metres_per_degree(min(abs_lat, 90.0))
    return min(east, _K_NORTH_MIN)


#: `min_metres_per_degree` at whole degrees 0-90.
_SCALE_BY_DEGREE = tuple(min_metres_per_degree(float(lat)) for lat in range(91))


def scale_floor(abs_lat: float) -> float:
    """Return a lower bound of `min_metres_per_degree(abs_lat)`.

    The bound is the table value at the next whole degree, which is valid
    because the scale only falls towards the poles. The per-fix path calls
    this often, and a table look-up is much cheaper than the trigonometry.
    """
    if not abs_lat < 90.0:
        return _SCALE_BY_DEGREE[90]
    return _SCALE_BY_DEGREE[math.ceil(abs_lat)]


def wrap_boxes(min_x: float, min_y: float, max_x: float, max_y: float) -> list[Box]:
    """Split a box whose longitudes leave [-180, 180] into boxes inside it."""
    if max_x - min_x >= 360.0:
        return [(-180.0, min_y, 180.0, max_y)]
    turns = math.floor((min_x + 180.0) / 360.0)
    min_x -= 360.0 * turns
    max_x -= 360.0 * turns
    if max_x <= 180.0:
        return [(min_x, min_y, max_x, max_y)]
    return [(min_x, min_y, 180.0, max_y), (-180.0, min_y, max_x - 360.0, max_y)]


class FenceError(ValueError):
    """A fence definition is invalid; names the feature and the problem."""

    def __init__(self, index: int | None, fence_id: str | None, problem: str) -> None:
        where = "fence" if index is None else f"feature {index}"
        identity = f"id {fence_id!r}" if fence_id is not None else "no id"
        super().__init__(f"{where} ({identity}): {problem}")
        self.index = index
        self.fence_id = fence_id
        self.problem = problem


class Role(StrEnum):
    """Purpose of a fence for the risk engine (GeoJSON `properties.role`)."""

    PERMITTED = "permitted"  # leaving it is the alarm
    RISK = "risk"  # entering and dwelling are the alarms
    HOME = "home"  # arrivals and stays feed risk signals
    WORK = "work"


class Shape(Protocol):
    """Geometry of one fence, with the zone tests the engine needs."""

    kind: str

    @property
    def geometry(self) -> BaseGeometry: ...

    @property
    def boxes(self) -> tuple[Box, ...]: ...

    def zone(self, lon: float, lat: float, margin_m: float) -> int: ...

    def evaluate(
        self, lon: float, lat: float, margin_m: float, point: Point | None = None
    ) -> tuple[int, float]:
        """Return the zone and a radius in degrees around the point within
        which the zone cannot change (0 when unknown). `point` is
        Point(lon, lat) when the caller has already built it."""
        ...

    def effective_margin(self, margin_m: float) -> float: ...


def shift_lon(geometry: BaseGeometry, degrees: float) -> BaseGeometry:
    """Return `geometry` moved east by `degrees` of longitude."""
    offset = np.array([degrees, 0.0])
    return shapely.transform(geometry, lambda xy: xy + offset)


def to_local_metres(geometry: BaseGeometry, lon: float, lat: float) -> BaseGeometry:
    """Return `geometry` in metres east and north of (lon, lat), scaled by the
    radii of curvature at that point."""
    east, north = metres_per_degree(lat)
    scale = np.array([east, north])
    origin = np.array([lon, lat])
    return shapely.transform(geometry, lambda xy: (xy - origin) * scale)


def _local_distance(piece: BaseGeometry, lon: float, lat: float) -> float:
    """Return the distance in metres from (lon, lat) to `piece` in the local
    plane at that point."""
    return float(shapely.distance(to_local_metres(piece, lon, lat), _ORIGIN))


def _near_piece(
    lines: BaseGeometry, lon: float, lat: float, reach_m: float
) -> BaseGeometry | None:
    """Return the part of `lines` within a box that contains every point closer
    than `reach_m` metres to (lon, lat), or None when that part is empty."""
    east, north = metres_per_degree(lat)
    half_x = min(reach_m * SAFETY / max(east, 1e-9), 360.0)
    half_y = reach_m * SAFETY / north
    piece = shapely.clip_by_rect(
        lines, lon - half_x, lat - half_y, lon + half_x, lat + half_y
    )
    return None if piece.is_empty else piece


class _OffsetShape:
    """Shapes whose zone depends on the distance to a set of lines (the
    polygon's edges, the corridor's route)."""

    def _max_abs_lat(self) -> float:
        _, min_y, _, max_y = self.geometry.bounds
        return float(max(abs(min_y), abs(max_y)))

    @property
    def geometry(self) -> BaseGeometry:
        raise NotImplementedError

    @property
    def lines(self) -> BaseGeometry:
        """Lines whose distance decides the zone, with copies shifted by
        ±360 where the shape passes ±180."""
        raise NotImplementedError

    def reach_m(self, margin_m: float) -> float:
        """Return the distance in metres from `lines` beyond which a point
        is OUTSIDE, or INSIDE for a polygon that covers it."""
        raise NotImplementedError

    def reach_bounds(self, margin_m: float) -> Box:
        """Return a box outside which every point is OUTSIDE."""
        min_x, min_y, max_x, max_y = self.lines.bounds
        pad = pad_degrees(self.reach_m(margin_m), self._max_abs_lat())
        return (min_x - pad, min_y - pad, max_x + pad, max_y + pad)


@dataclass(frozen=True, eq=False)
class PolygonShape(_OffsetShape):
    """A polygon or multipolygon, holes allowed, split at the antimeridian."""

    polygons: Polygon | MultiPolygon
    kind: str = field(default="polygon", init=False)

    def __post_init__(self) -> None:
        shapely.prepare(self.polygons)

    @property
    def geometry(self) -> BaseGeometry:
        return self.polygons

    @cached_property
    def boxes(self) -> tuple[Box, ...]:
        parts = shapely.get_parts(self.polygons)
        return tuple(tuple(float(v) for v in part.bounds) for part in parts)  # type: ignore[misc]

    @cached_property
    def edges(self) -> BaseGeometry:
        """Boundary without the seam at ±180, with copies shifted by ±360 when
        the polygon reaches the seam, so distances wrap around it."""
        boundary = self.polygons.boundary
        if not self._on_seam:
            shapely.prepare(boundary)
            return boundary
        seam = MultiLineString(
            [[(180.0, -90.0), (180.0, 90.0)], [(-180.0, -90.0), (-180.0, 90.0)]]
        )
        real = boundary.difference(seam)
        edges = shapely.union_all(
            [real, shift_lon(real, 360.0), shift_lon(real, -360.0)]
        )
        shapely.prepare(edges)
        return edges

    @property
    def _on_seam(self) -> bool:
        """Whether the polygon reaches both -180 and 180 (it was split)."""
        min_x, _, max_x, _ = self.polygons.bounds
        return bool(min_x <= -180.0 and max_x >= 180.0)

    @cached_property
    def near_boxes(self) -> tuple[Box, ...]:
        """`boxes` plus, for a polygon on the seam, their copies shifted by
        ±360 like those of `edges`: a point outside all of them grown by the
        margin is OUTSIDE."""
        if not self._on_seam:
            return self.boxes
        shifted = [
            (min_x + turn, min_y, max_x + turn, max_y)
            for min_x, min_y, max_x, max_y in self.boxes
            for turn in (-360.0, 360.0)
        ]
        return self.boxes + tuple(shifted)

    @cached_property
    def _half_inradius_m(self) -> float:
        """Half the radius of the largest circle inside the fence, in metres.

        Infinity when area / perimeter exceeds 10 km, twice the largest
        margin: a convex fence's inradius is at least area / perimeter.
        """
        best = 0.0
        for part in shapely.get_parts(self.polygons):
            x, y = part.representative_point().coords[0]
            local = to_local_metres(part, x, y)
            best = max(best, local.area / max(local.length, 1e-9))
            if best > 1e4:
                return math.inf
            circle = shapely.maximum_inscribed_circle(local, tolerance=0.5)
            best = max(best, circle.length)
        return best / 2.0

    def effective_margin(self, margin_m: float) -> float:
        if margin_m <= 0.0:
            return 0.0
        # A fence narrower than twice the margin could never be entered.
        return min(margin_m, self._half_inradius_m)

    def zone(self, lon: float, lat: float, margin_m: float) -> int:
        point = shapely.points((lon, lat))
        firm = INSIDE if self.polygons.intersects(point) else OUTSIDE
        if margin_m <= 0.0:
            return firm
        return self._zone_near(lon, lat, margin_m, firm, self.edges.distance(point))

    def _zone_near(
        self, lon: float, lat: float, margin_m: float, firm: int, distance_deg: float
    ) -> int:
        """Return MARGIN if the point lies closer than `margin_m` metres to
        the edges in the local plane at the point, else `firm`.

        The local plane scales degrees by `east` and `north`, so the local
        distance lies between min(east, north) and max(east, north) times
        the distance in degrees. Only a point between the two bounds needs
        the exact local distance. The bounds keep 1e-9 of slack for
        rounding.
        """
        east, north = metres_per_degree(lat)
        if distance_deg * max(east, north) < margin_m * (1.0 - 1e-9):
            return MARGIN
        if distance_deg * min(east, north) >= margin_m * (1.0 + 1e-9):
            return firm
        piece = _near_piece(self.edges, lon, lat, margin_m)
        if piece is None or _local_distance(piece, lon, lat) >= margin_m:
            return firm
        return MARGIN

    def evaluate(
        self, lon: float, lat: float, margin_m: float, point: Point | None = None
    ) -> tuple[int, float]:
        if point is None:
            point = shapely.points((lon, lat))
        # The geometry methods take shapely's scalar path, several times
        # cheaper than the array functions for one point.
        firm = INSIDE if self.polygons.intersects(point) else OUTSIDE
        # NOTE: shapely 2.2 computes distance without the prepared index,
        # so this costs time linear in the vertex count of the fence.
        distance_deg = float(self.edges.distance(point))
        scale = scale_floor(abs(lat) + distance_deg)
        reach_deg = margin_m * SAFETY / scale if scale > 0.0 else math.inf
        if distance_deg >= reach_deg:
            return firm, distance_deg - reach_deg
        return self._zone_near(lon, lat, margin_m, firm, distance_deg), 0.0

    @property
    def lines(self) -> BaseGeometry:
        return self.edges

    def reach_m(self, margin_m: float) -> float:
        return margin_m


def _ecef(lon: float, lat: float) -> tuple[float, float, float]:
    phi = lat * _RAD
    lam = lon * _RAD
    sin_phi = math.sin(phi)
    n = WGS84_A / math.sqrt(1.0 - WGS84_E2 * sin_phi * sin_phi)
    cos_phi = math.cos(phi)
    return (
        n * cos_phi * math.cos(lam),
        n * cos_phi * math.sin(lam),
        n * (1.0 - WGS84_E2) * sin_phi,
    )


@dataclass(frozen=True, eq=False)
class CircleShape:
    """All points within `radius_m` metres on the ground of a centre."""

    lon: float
    lat: float
    radius_m: float
    kind: str = field(default="circle", init=False)

    @cached_property
    def _centre(self) -> tuple[float, float, float]:
        return _ecef(self.lon, self.lat)

    @cached_property
    def curvature_m(self) -> float:
        """Gaussian radius of curvature sqrt(M N) at the centre, in metres."""
        meridional, prime_vertical = radii_of_curvature(self.lat)
        return math.sqrt(meridional * prime_vertical)

    def distance_m(self, lon: float, lat: float) -> float:
        """Return the ground distance in metres from the centre to (lon, lat)."""
        x, y, z = _ecef(lon, lat)
        cx, cy, cz = self._centre
        chord = math.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
        rho = self.curvature_m
        return 2.0 * rho * math.asin(min(chord / (2.0 * rho), 1.0))

    @property
    def geometry(self) -> BaseGeometry:
        """Polygon with 64 vertices on the circle, for display only."""
        east, north = metres_per_degree(self.lat)
        angles = np.linspace(0.0, 2.0 * math.pi, 65)
        xs = self.lon + self.radius_m * np.cos(angles) / max(east, 1e-9)
        ys = self.lat + self.radius_m * np.sin(angles) / north
        return Polygon(np.column_stack([xs, ys]))

    @cached_property
    def boxes(self) -> tuple[Box, ...]:
        half_y = self.radius_m * SAFETY / _K_NORTH_MIN
        min_y, max_y = self.lat - half_y, self.lat + half_y
        if min_y <= -90.0 or max_y >= 90.0:
            return ((-180.0, max(min_y, -90.0), 180.0, min(max_y, 90.0)),)
        scale = min_metres_per_degree(max(abs(min_y), abs(max_y)))
        half_x = self.radius_m * SAFETY / scale
        return tuple(wrap_boxes(self.lon - half_x, min_y, self.lon + half_x, max_y))

    def reach_box(self, margin_m: float) -> Box | None:
        """Return a box that contains every point closer than radius_m +
        margin_m, or None when such a box would cross ±180 or reach a pole.
        The bounds are those of `boxes`, for the larger radius."""
        reach_m = self.radius_m + margin_m
        half_y = reach_m * SAFETY / _K_NORTH_MIN
        min_y, max_y = self.lat - half_y, self.lat + half_y
        if min_y <= -90.0 or max_y >= 90.0:
            return None
        scale = min_metres_per_degree(max(abs(min_y), abs(max_y)))
        half_x = reach_m * SAFETY / scale
        if self.lon - half_x < -180.0 or self.lon + half_x > 180.0:
            return None
        return (self.lon - half_x, min_y, self.lon + half_x, max_y)

    def effective_margin(self, margin_m: float) -> float:
        return min(max(margin_m, 0.0), self.radius_m / 2.0)

    def zone(self, lon: float, lat: float, margin_m: float) -> int:
        distance = self.distance_m(lon, lat)
        if distance <= self.radius_m - margin_m:
            return INSIDE
        if distance >= self.radius_m + margin_m:
            return OUTSIDE
        return MARGIN

    def evaluate(
        self, lon: float, lat: float, margin_m: float, point: Point | None = None
    ) -> tuple[int, float]:
        # A step of r degrees moves at most r * K_MAX metres on the ground,
        # and the chord distance follows within the SAFETY factor.
        distance = self.distance_m(lon, lat)
        low = self.radius_m - margin_m
        high = self.radius_m + margin_m
        if distance <= low:
            return INSIDE, (low - distance) / (K_MAX * SAFETY)
        if distance >= high:
            return OUTSIDE, (distance - high) / (K_MAX * SAFETY)
        # The zone stays MARGIN while the distance is within (low, high), so
        # a car parked in the band needs no test per fix.
        return MARGIN, min(distance - low, high - distance) / (K_MAX * SAFETY)


def circle_distances_m(
    lon0: np.ndarray,
    lat0: np.ndarray,
    rho: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
) -> np.ndarray:
    """Vectorized ground distance between (lon0, lat0) and (lon, lat) with the
    radius of curvature `rho`, the same formula as `CircleShape.distance_m`."""

    def ecef(lo: np.ndarray, la: np.ndarray) -> tuple[np.ndarray, ...]:
        phi = la * _RAD
        lam = lo * _RAD
        sin_phi = np.sin(phi)
        n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_phi * sin_phi)
        cos_phi = np.cos(phi)
        return (
            n * cos_phi * np.cos(lam),
            n * cos_phi * np.sin(lam),
            n * (1.0 - WGS84_E2) * sin_phi,
        )

    x0, y0, z0 = ecef(lon0, lat0)
    x, y, z = ecef(lon, lat)
    chord = np.sqrt((x - x0) ** 2 + (y - y0) ** 2 + (z - z0) ** 2)
    result: np.ndarray = 2.0 * rho * np.arcsin(np.minimum(chord / (2.0 * rho), 1.0))
    return result


@dataclass(frozen=True, eq=False)
class CorridorShape(_OffsetShape):
    """Points within `width_m / 2` metres of a route line (round ends)."""

    line: LineString  # longitudes unwrapped: continuous, may pass ±180
    width_m: float
    kind: str = field(default="corridor", init=False)

    @property
    def geometry(self) -> BaseGeometry:
        return self.line

    @cached_property
    def _lines(self) -> BaseGeometry:
        """The line plus copies shifted by ±360 where it passes ±180."""
        min_x, _, max_x, _ = self.line.bounds
        parts = [self.line]
        if max_x > 180.0:
            parts.append(shift_lon(self.line, -360.0))
        if min_x < -180.0:
            parts.append(shift_lon(self.line, 360.0))
        lines = shapely.union_all(parts) if len(parts) > 1 else self.line
        shapely.prepare(lines)
        return lines

    @cached_property
    def boxes(self) -> tuple[Box, ...]:
        half = self.width_m / 2.0
        pad_y = half * SAFETY / _K_NORTH_MIN
        min_x, min_y, max_x, max_y = self.line.bounds
        pad_x = half * SAFETY / min_metres_per_degree(self._max_abs_lat() + pad_y)
        box = (
            min_x - pad_x,
            max(min_y - pad_y, -90.0),
            max_x + pad_x,
            min(max_y + pad_y, 90.0),
        )
        return tuple(wrap_boxes(*box))

    def effective_margin(self, margin_m: float) -> float:
        return min(max(margin_m, 0.0), self.width_m / 4.0)

    def distance_m(self, lon: float, lat: float) -> float:
        """Return the distance in metres from (lon, lat) to the route, or
        infinity when it is farther than the corridor's width."""
        piece = _near_piece(self._lines, lon, lat, self.width_m)
        return math.inf if piece is None else _local_distance(piece, lon, lat)

    def zone(self, lon: float, lat: float, margin_m: float) -> int:
        half = self.width_m / 2.0
        piece = _near_piece(self._lines, lon, lat, half + margin_m)
        distance = math.inf if piece is None else _local_distance(piece, lon, lat)
        if distance <= half - margin_m:
            return INSIDE
        if distance >= half + margin_m:
            return OUTSIDE
        return MARGIN

    def evaluate(
        self, lon: float, lat: float, margin_m: float, point: Point | None = None
    ) -> tuple[int, float]:
        half = self.width_m / 2.0
        if point is None:
            point = shapely.points((lon, lat))
        distance_deg = float(self._lines.distance(point))
        scale = scale_floor(abs(lat) + distance_deg)
        out_deg = (half + margin_m) * SAFETY / scale if scale > 0.0 else math.inf
        if distance_deg >= out_deg:
            return OUTSIDE, distance_deg - out_deg
        in_deg = (half - margin_m) / (K_MAX * SAFETY)
        if distance_deg <= in_deg:
            return INSIDE, in_deg - distance_deg
        return self.zone(lon, lat, margin_m), 0.0

    @property
    def lines(self) -> BaseGeometry:
        return self._lines

    def reach_m(self, margin_m: float) -> float:
        return self.width_m / 2.0 + margin_m


AnyShape = PolygonShape | CircleShape | CorridorShape


def prepare_shapes(shapes: Iterable[AnyShape]) -> None:
    """Build what the zone tests of `shapes` would otherwise build at first
    use: circle constants, polygon edges and inradius, corridor lines, and
    the point index of each prepared polygon.

    GEOS builds that index lazily, at the second point test on a geometry,
    so two probe calls build it here. Prepared shapes are skipped.
    """
    polygons: list[BaseGeometry] = []
    for shape in shapes:
        if shape.__dict__.get("_prepared"):
            continue
        if isinstance(shape, CircleShape):
            _ = shape.curvature_m, shape._centre
        elif isinstance(shape, PolygonShape):
            _ = shape.edges, shape._half_inradius_m
            polygons.append(shape.polygons)
        else:
            _ = shape.lines
        # The dataclasses are frozen: the flag goes straight into __dict__.
        shape.__dict__["_prepared"] = True
    if polygons:
        array = np.empty(len(polygons), dtype=object)
        array[:] = polygons
        min_x, min_y, max_x, max_y = shapely.bounds(array).T
        for _ in range(2):
            shapely.intersects_xy(array, (min_x + max_x) / 2, (min_y + max_y) / 2)


@dataclass(frozen=True, eq=False)
class Fence:
    """One fence: an id, a shape, a role and the devices it applies to.

    `applies_to` contains selectors ``group:<name>``, ``vehicle:<id>`` and
    ``device:<id>``; None applies the fence to every device.
    """

    id: str
    shape: AnyShape
    role: Role = Role.PERMITTED
    applies_to: frozenset[str] | None = None
    properties: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def covers(self, lon: float, lat: float) -> bool:
        """Return True when (lon, lat) lies inside or on the boundary."""
        return self.shape.zone(lon, lat, 0.0) == INSIDE

    def applies(self, labels: frozenset[str]) -> bool:
        """Return True when the fence applies to a device with `labels`."""
        return self.applies_to is None or not self.applies_to.isdisjoint(labels)


# --- construction ---------------------------------------------------------

_SELECTOR = re.compile(r"^(group|vehicle|device):.+$")


def polygon_fence(
    fence_id: str,
    geometry: Polygon | MultiPolygon,
    *,
    role: Role = Role.PERMITTED,
    applies_to: Iterable[str] | None = None,
) -> Fence:
    """Build a polygon fence from a valid shapely geometry in (lon, lat)."""
    selectors = _parse_applies_to(None, fence_id, applies_to)
    return Fence(fence_id, PolygonShape(geometry), role, selectors)


def circle_fence(
    fence_id: str,
    lon: float,
    lat: float,
    radius_m: float,
    *,
    role: Role = Role.PERMITTED,
    applies_to: Iterable[str] | None = None,
) -> Fence:
    """Build a circle fence; `radius_m` is measured on the ground."""
    _check_position(None, fence_id, [lon, lat], "centre")
    _check_positive(None, fence_id, "radius_m", radius_m, MAX_RADIUS_M)
    selectors = _parse_applies_to(None, fence_id, applies_to)
    return Fence(fence_id, CircleShape(lon, lat, float(radius_m)), role, selectors)


def corridor_fence(
    fence_id: str,
    route: Sequence[Sequence[float]],
    width_m: float,
    *,
    role: Role = Role.PERMITTED,
    applies_to: Iterable[str] | None = None,
) -> Fence:
    """Build a corridor fence: every point within `width_m / 2` of `route`."""
    shape = _corridor_shape(None, fence_id, route, width_m)
    selectors = _parse_applies_to(None, fence_id, applies_to)
    return Fence(fence_id, shape, role, selectors)


def load_fences(
    path_or_geojson: str | Path | Mapping[str, Any],
    *,
    repair: bool = False,
    id_property: str = "id",
) -> list[Fence]:
    """Load fences from a GeoJSON file, JSON text or parsed mapping.

    Accepts a FeatureCollection, a Feature or a bare geometry (whose id is the
    file name without suffix). A Point with `properties.radius_m` is a circle,
    a LineString with `properties.width_m` a corridor. The fence id is the
    feature's `id`, else `properties[id_property]`. Raises `FenceError` naming
    the feature for invalid input; `repair=True` closes open rings and
    repairs self-intersections with shapely's `make_valid` instead.
    """
    document, default_id = _read_document(path_or_geojson)
    features = _features_of(document, default_id)
    fences: list[Fence] = []
    seen: dict[str, int] = {}
    for index, feature in enumerate(features):
        fence = _fence_from_feature(index, feature, repair, id_property)
        if fence.id in seen:
            problem = f"duplicate id, also used by feature {seen[fence.id]}"
            raise FenceError(index, fence.id, problem)
        seen[fence.id] = index
        fences.append(fence)
    return fences


def _read_document(source: str | Path | Mapping[str, Any]) -> tuple[Any, str | None]:
    if isinstance(source, Mapping):
        return source, None
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return json.loads(source), None
    path = Path(source)
    try:
        return json.loads(path.read_text(encoding="utf-8")), path.stem
    except json.JSONDecodeError as error:
        raise FenceError(None, None, f"{path}: invalid JSON: {error}") from error


_CRS84 = {"urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84", "EPSG:4326"}


def _features_of(document: Any, default_id: str | None) -> list[Mapping[str, Any]]:
    if not isinstance(document, Mapping):
        raise FenceError(None, None, "GeoJSON must be a JSON object")
    crs = document.get("crs")
    if crs is not None:
        name = (
            str(crs.get("properties", {}).get("name", ""))
            if isinstance(crs, Mapping)
            else ""
        )
        if name not in _CRS84 and not name.endswith("EPSG::4326"):
            raise FenceError(
                None, None, f"crs {name!r} is not WGS-84 lon/lat (RFC 7946 §4)"
            )
    kind = document.get("type")
    if kind == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list):
            raise FenceError(None, None, "FeatureCollection has no 'features' array")
        return features
    if kind == "Feature":
        return [document]
    if kind in _BUILDERS or kind in (
        "MultiPoint",
        "MultiLineString",
        "GeometryCollection",
    ):
        return [
            {
                "type": "Feature",
                "id": default_id,
                "geometry": document,
                "properties": {},
            }
        ]
    raise FenceError(None, None, f"unknown GeoJSON type {kind!r}")


def _fence_from_feature(
    index: int, feature: Any, repair: bool, id_property: str
) -> Fence:
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise FenceError(index, None, "not a GeoJSON Feature object")
    properties = feature.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise FenceError(index, None, "properties must be an object")
    fence_id = _fence_id(index, feature, properties, id_property)
    geometry = feature.get("geometry")
    if geometry is None:
        raise FenceError(index, fence_id, "geometry is null")
    if not isinstance(geometry, Mapping):
        raise FenceError(index, fence_id, "geometry must be an object")
    builder = _BUILDERS.get(str(geometry.get("type")))
    if builder is None:
        supported = ", ".join(_BUILDERS)
        problem = (
            f"geometry type {geometry.get('type')!r} is not supported ({supported})"
        )
        raise FenceError(index, fence_id, problem)
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list):
        raise FenceError(index, fence_id, "geometry has no coordinates array")
    shape = builder(index, fence_id, coordinates, properties, repair)
    return Fence(
        fence_id,
        shape,
        _parse_role(index, fence_id, properties.get("role")),
        _parse_applies_to(index, fence_id, properties.get("applies_to")),
        MappingProxyType(dict(properties)),
    )


def _fence_id(
    index: int,
    feature: Mapping[str, Any],
    properties: Mapping[str, Any],
    id_property: str,
) -> str:
    for value in (feature.get("id"), properties.get(id_property)):
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    problem = f"missing id: set the Feature's 'id' or properties.{id_property}"
    raise FenceError(index, None, problem)


def _parse_role(index: int | None, fence_id: str, value: Any) -> Role:
    if value is None:
        return Role.PERMITTED
    try:
        return Role(value)
    except ValueError:
        allowed = ", ".join(role.value for role in Role)
        raise FenceError(
            index, fence_id, f"role {value!r} is not one of {allowed}"
        ) from None


def _parse_applies_to(
    index: int | None, fence_id: str, value: Any
) -> frozenset[str] | None:
    if value is None or value == "all":
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable) or not items:
        raise FenceError(
            index, fence_id, f"applies_to {value!r} is not a selector list"
        )
    selectors = []
    for item in items:
        if not isinstance(item, str) or not _SELECTOR.match(item):
            problem = (
                f"applies_to entry {item!r} is not 'all', 'group:<name>', "
                "'vehicle:<id>' or 'device:<id>'"
            )
            raise FenceError(index, fence_id, problem)
        selectors.append(item)
    return frozenset(selectors)


# --- geometry validation ---------------------------------------------------


def _check_position(
    index: int | None, fence_id: str, position: Any, where: str
) -> None:
    if not isinstance(position, list | tuple) or len(position) not in (2, 3):
        raise FenceError(
            index, fence_id, f"{where}: position {position!r} is not [lon, lat]"
        )
    lon, lat = position[0], position[1]
    for value in (lon, lat):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise FenceError(
                index, fence_id, f"{where}: position {position!r} is not numeric"
            )
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        problem = f"{where}: position {position!r} is out of range (lon ±180, lat ±90)"
        raise FenceError(index, fence_id, problem)


def _check_positive(
    index: int | None, fence_id: str, name: str, value: Any, maximum: float
) -> None:
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or not 0.0 < value <= maximum:
        problem = f"{name} {value!r} must be a number of metres in (0, {maximum:g}]"
        raise FenceError(index, fence_id, problem)


def _ring_coordinates(
    index: int, fence_id: str, ring: Any, where: str, repair: bool
) -> list[tuple[float, float]]:
    if not isinstance(ring, list):
        raise FenceError(index, fence_id, f"{where} is not an array of positions")
    for position_index, position in enumerate(ring):
        _check_position(index, fence_id, position, f"{where} position {position_index}")
    points = [(float(p[0]), float(p[1])) for p in ring]
    if points and points[0] != points[-1]:
        if not repair:
            first, last = list(points[0]), list(points[-1])
            problem = f"{where} is not closed: first {first} != last {last}"
            raise FenceError(index, fence_id, problem)
        points.append(points[0])
    if len(points) < 4:
        problem = f"{where} has {len(points)} positions, a closed ring needs at least 4"
        raise FenceError(index, fence_id, problem)
    return points


def _unwrap(points: list[tuple[float, float]]) -> tuple[list[tuple[float, float]], int]:
    """Make longitudes continuous across ±180; return them and the number of
    jumps of more than 180 degrees between neighbours.

    An edge between two vertices on ±180 is not a jump: RFC 7946 splits
    leave such edges, e.g. along the bottom of Antarctica.
    """
    unwrapped = [points[0]]
    shift = 0.0
    jumps = 0
    for (prev_x, _), (x, y) in itertools.pairwise(points):
        step = x - prev_x
        on_seam = abs(prev_x) == 180.0 and abs(x) == 180.0
        if abs(step) > 180.0 and not on_seam:
            jumps += 1
            shift -= math.copysign(360.0, step)
        unwrapped.append((x + shift, y))
    return unwrapped, jumps


def _polygon_from_rings(
    index: int, fence_id: str, rings: Any, where: str, repair: bool
) -> Polygon:
    if not isinstance(rings, list) or not rings:
        raise FenceError(index, fence_id, f"{where} has no rings")
    shell: list[tuple[float, float]] = []
    holes: list[list[tuple[float, float]]] = []
    for ring_index, ring in enumerate(rings):
        ring_where = f"{where} ring {ring_index}"
        points = _ring_coordinates(index, fence_id, ring, ring_where, repair)
        unwrapped, jumps = _unwrap(points)
        if abs(unwrapped[-1][0] - unwrapped[0][0]) > 1e-9:
            problem = (
                f"{ring_where} crosses the antimeridian {jumps} times and so encloses "
                "a pole; split it at ±180 as RFC 7946 §3.1.9 asks"
            )
            raise FenceError(index, fence_id, problem)
        if ring_index == 0:
            shell = unwrapped
        else:
            holes.append(_align_hole(shell, unwrapped))
    return Polygon(shell, holes)


def _align_hole(
    shell: list[tuple[float, float]], hole: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    centre = sum(x for x, _ in shell) / len(shell)
    turns = round((centre - hole[0][0]) / 360.0)
    return [(x + 360.0 * turns, y) for x, y in hole]


def _finish_polygonal(
    index: int, fence_id: str, geometry: Polygon | MultiPolygon, repair: bool
) -> PolygonShape:
    if not geometry.is_valid:
        if not repair:
            reason = shapely.is_valid_reason(geometry)
            problem = (
                f"invalid geometry: {reason}. Load with repair=True "
                "(postloan fences check --repair) to repair it with make_valid"
            )
            raise FenceError(index, fence_id, problem)
        geometry = _polygonal_part(shapely.make_valid(geometry))
    if geometry.is_empty:
        raise FenceError(index, fence_id, "geometry is empty")
    return PolygonShape(_split_at_antimeridian(geometry))


def _polygonal_part(geometry: BaseGeometry) -> Polygon | MultiPolygon:
    parts = [
        p for p in shapely.get_parts(geometry) if isinstance(p, Polygon | MultiPolygon)
    ]
    merged = shapely.union_all(parts) if parts else Polygon()
    return merged if isinstance(merged, Polygon | MultiPolygon) else Polygon()


def _split_at_antimeridian(geometry: Polygon | MultiPolygon) -> Polygon | MultiPolygon:
    """Cut a polygon with unwrapped longitudes into parts within ±180."""
    min_x, _, max_x, _ = geometry.bounds
    if min_x >= -180.0 and max_x <= 180.0:
        return geometry
    pieces = []
    for turns in (-1, 0, 1):
        offset = 360.0 * turns
        window = shapely.box(-180.0 + offset, -90.0, 180.0 + offset, 90.0)
        piece = geometry.intersection(window)
        if not piece.is_empty:
            pieces.append(shift_lon(piece, -offset))
    return _polygonal_part(shapely.union_all(pieces))


def _build_polygon(
    index: int,
    fence_id: str,
    coordinates: Any,
    _properties: Mapping[str, Any],
    repair: bool,
) -> AnyShape:
    polygon = _polygon_from_rings(index, fence_id, coordinates, "polygon", repair)
    return _finish_polygonal(index, fence_id, polygon, repair)


def _build_multipolygon(
    index: int,
    fence_id: str,
    coordinates: Any,
    _properties: Mapping[str, Any],
    repair: bool,
) -> AnyShape:
    if not coordinates:
        raise FenceError(index, fence_id, "MultiPolygon has no polygons")
    polygons = [
        _polygon_from_rings(index, fence_id, rings, f"polygon {n}", repair)
        for n, rings in enumerate(coordinates)
    ]
    return _finish_polygonal(index, fence_id, MultiPolygon(polygons), repair)


def _build_circle(
    index: int,
    fence_id: str,
    coordinates: Any,
    properties: Mapping[str, Any],
    _repair: bool,
) -> AnyShape:
    _check_position(index, fence_id, coordinates, "centre")
    radius = properties.get("radius_m")
    if radius is None:
        raise FenceError(index, fence_id, "a Point fence needs properties.radius_m")
    _check_positive(index, fence_id, "radius_m", radius, MAX_RADIUS_M)
    return CircleShape(float(coordinates[0]), float(coordinates[1]), float(radius))


def _build_corridor(
    index: int,
    fence_id: str,
    coordinates: Any,
    properties: Mapping[str, Any],
    _repair: bool,
) -> AnyShape:
    width = properties.get("width_m")
    if width is None:
        raise FenceError(index, fence_id, "a LineString fence needs properties.width_m")
    return _corridor_shape(index, fence_id, coordinates, width)


def _corridor_shape(
    index: int | None, fence_id: str, route: Any, width_m: Any
) -> CorridorShape:
    _check_positive(index, fence_id, "width_m", width_m, 2 * MAX_RADIUS_M)
    if not isinstance(route, list | tuple):
        raise FenceError(index, fence_id, "route is not an array of positions")
    for position_index, position in enumerate(route):
        _check_position(
            index, fence_id, list(position), f"route position {position_index}"
        )
    points = [(float(p[0]), float(p[1])) for p in route]
    if len(set(points)) < 2:
        problem = (
            f"route has {len(set(points))} distinct positions, a line needs at least 2"
        )
        raise FenceError(index, fence_id, problem)
    unwrapped, _ = _unwrap(points)
    return CorridorShape(LineString(unwrapped), float(width_m))


_Builder = Callable[[int, str, Any, Mapping[str, Any], bool], AnyShape]
_BUILDERS: dict[str, _Builder] = {
    "Polygon": _build_polygon,
    "MultiPolygon": _build_multipolygon,
    "Point": _build_circle,
    "LineString": _build_corridor,
}
