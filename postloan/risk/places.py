"""Stops, and the home and work places learned from them.

A stop is a run of consecutive valid fixes that stay within `stop_radius_m`
of the run's first fix for at least `min_stop_s`. Stops are clustered
greedily in time order: a stop joins the first cluster whose centre is
within `stop_radius_m`, else it starts a new one.

Rule for home: the cluster with stops on the most distinct local nights, a
night being 22:00-06:00 in the borrower's time zone and dated by the evening
it starts, provided it has at least `min_nights` nights. Rule for work: of
the other clusters, the one with stops on the most distinct local weekdays
during 09:00-18:00, with at least `min_days` days.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from postloan.model import Fix

# Mean Earth radius (IUGG), metres; a spherical Earth is within 0.5 % here.
EARTH_RADIUS_M = 6_371_008.8

NIGHT_START = time(22, 0)
NIGHT_END = time(6, 0)
DAY_START = time(9, 0)
DAY_END = time(18, 0)


@dataclass(frozen=True, slots=True)
class PlaceSettings:
    """Thresholds of stop detection and place learning."""

    stop_radius_m: float = 200.0
    min_stop_s: float = 1200.0  # 20 minutes
    min_nights: int = 3
    min_days: int = 3


@dataclass(frozen=True, slots=True)
class Stop:
    """A stay within `PlaceSettings.stop_radius_m`, with the fixes behind it."""

    longitude: float
    latitude: float
    start: datetime
    end: datetime
    fixes: tuple[Fix, ...]


@dataclass(frozen=True, slots=True)
class Place:
    """A learned place: its centre and the stops that made it."""

    name: str  # home or work
    longitude: float
    latitude: float
    stops: tuple[Stop, ...]
    count: int  # distinct nights (home) or days (work)


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Return the great-circle distance in metres on a spherical Earth."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    a = (
        math.sin(half_dphi) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def find_stops(fixes: Sequence[Fix], settings: PlaceSettings) -> list[Stop]:
    """Return the stops of one time-ordered track."""
    stops: list[Stop] = []
    run: list[Fix] = []
    for fix in (fix for fix in fixes if fix.valid):
        anchor = run[0] if run else fix
        distance = haversine_m(
            anchor.longitude, anchor.latitude, fix.longitude, fix.latitude
        )
        if run and distance > settings.stop_radius_m:
            _close_run(run, settings, stops)
            run = []
        run.append(fix)
    _close_run(run, settings, stops)
    return stops


def _close_run(run: list[Fix], settings: PlaceSettings, stops: list[Stop]) -> None:
    if not run or (run[-1].time - run[0].time).total_seconds() < settings.min_stop_s:
        return
    stops.append(
        Stop(
            sum(fix.longitude for fix in run) / len(run),
            sum(fix.latitude for fix in run) / len(run),
            run[0].time,
            run[-1].time,
            tuple(run),
        )
    )


def nights_of(stop: Stop, zone: ZoneInfo) -> list[date]:
    """Return the evening dates of the local nights (22:00-06:00) the stop overlaps."""
    start = stop.start.astimezone(zone)
    end = stop.end.astimezone(zone)
    nights = []
    day = start.date() - timedelta(days=1)
    while day <= end.date():
        night_start = datetime.combine(day, NIGHT_START, zone)
        night_end = datetime.combine(day + timedelta(days=1), NIGHT_END, zone)
        if start < night_end and end > night_start:
            nights.append(day)
        day += timedelta(days=1)
    return nights


def days_of(stop: Stop, zone: ZoneInfo) -> list[date]:
    """Return the local weekdays whose 09:00-18:00 the stop overlaps."""
    start = stop.start.astimezone(zone)
    end = stop.end.astimezone(zone)
    days = []
    day = start.date()
    while day <= end.date():
        day_start = datetime.combine(day, DAY_START, zone)
        day_end = datetime.combine(day, DAY_END, zone)
        if day.weekday() < 5 and start < day_end and end > day_start:
            days.append(day)
        day += timedelta(days=1)
    return days


def cluster_stops(stops: Sequence[Stop], radius_m: float) -> list[list[Stop]]:
    clusters: list[list[Stop]] = []
    for stop in stops:
        for cluster in clusters:
            centre = cluster[0]
            gap = haversine_m(
                centre.longitude, centre.latitude, stop.longitude, stop.latitude
            )
            if gap <= radius_m:
                cluster.append(stop)
                break
        else:
            clusters.append([stop])
    return clusters


def learn_places(
    stops: Sequence[Stop], zone: ZoneInfo, settings: PlaceSettings
) -> dict[str, Place]:
    """Return the home and work places that the stops support (either may be absent)."""
    clusters = cluster_stops(stops, settings.stop_radius_m)
    places: dict[str, Place] = {}
    home = _best(clusters, lambda stop: nights_of(stop, zone), settings.min_nights)
    if home is not None:
        places["home"] = _place("home", *home)
        clusters = [cluster for cluster in clusters if cluster is not home[0]]
    work = _best(clusters, lambda stop: days_of(stop, zone), settings.min_days)
    if work is not None:
        places["work"] = _place("work", *work)
    return places


def _best(
    clusters: list[list[Stop]], dated: Callable[[Stop], list[date]], minimum: int
) -> tuple[list[Stop], int] | None:
    scored = [
        (cluster, len({d for stop in cluster for d in dated(stop)}))
        for cluster in clusters
    ]
    scored = [item for item in scored if item[1] >= minimum]
    if not scored:
        return None
    return max(scored, key=lambda item: item[1])


def _place(name: str, cluster: list[Stop], count: int) -> Place:
    return Place(
        name,
        sum(stop.longitude for stop in cluster) / len(cluster),
        sum(stop.latitude for stop in cluster) / len(cluster),
        tuple(cluster),
        count,
    )
