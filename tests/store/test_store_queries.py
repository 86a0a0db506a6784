"""Track analytics: simplification, stops, daily mileage, presence in an area.

Tests named test_store_* run on SQLite and PostgreSQL; the others test the
algorithms on fixes built in memory.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest
from shapely.geometry import MultiPolygon, Point, Polygon, box

from postloan.model import Fix
from postloan.store import StopRule, Store
from postloan.store.queries import (
    EARTH_RADIUS_M,
    daily_mileage,
    find_stops,
    haversine_m,
    simplify_track,
)

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
DEVICE = "860000000000001"
# One metre of latitude, in degrees, on the sphere the queries use.
METRE = 1 / (math.radians(1) * EARTH_RADIUS_M)


def at(
    seconds: float,
    north_m: float = 0.0,
    east_m: float = 0.0,
    speed: float = 30.0,
    **fields: object,
) -> Fix:
    """A fix `north_m`/`east_m` metres from (38.7, -9.14) (Lisbon) at T0 + seconds."""
    latitude = 38.7 + north_m * METRE
    longitude = -9.14 + east_m * METRE / math.cos(math.radians(38.7))
    return Fix(
        DEVICE,
        T0 + timedelta(seconds=seconds),
        latitude,
        longitude,
        speed_kmh=speed,
        **fields,  # type: ignore[arg-type]
    )


def drive(start_s: float, count: int, step_m: float, every_s: float = 10) -> list[Fix]:
    """Fixes driving north in a straight line, `step_m` apart."""
    return [at(start_s + i * every_s, north_m=i * step_m) for i in range(count)]


def park(
    start_s: float, minutes: int, north_m: float, every_s: float = 60
) -> list[Fix]:
    count = int(minutes * 60 / every_s) + 1
    return [
        at(start_s + i * every_s, north_m=north_m + (i % 3), speed=0.0)
        for i in range(count)
    ]


# --- haversine -------------------------------------------------------------------


def test_haversine_one_degree_of_latitude() -> None:
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195, abs=1)


def test_haversine_across_antimeridian() -> None:
    assert haversine_m(0, 179.9995, 0, -179.9995) == pytest.approx(111.2, abs=0.1)


# --- stops -------------------------------------------------------------------------


def test_stops_finds_parked_period() -> None:
    track = [*drive(0, 10, 100), *park(100, 20, 900), *drive(1400, 10, 100)]

    stops = find_stops(track)

    assert len(stops) == 1
    assert stops[0].arrival == track[10].time
    assert stops[0].duration == timedelta(minutes=20)
    assert stops[0].fixes == 21


def test_stops_place_is_mean_position() -> None:
    parked = park(0, 10, 0)

    stops = find_stops(parked)

    mean_latitude = sum(fix.latitude for fix in parked) / len(parked)
    assert stops[0].latitude == pytest.approx(mean_latitude, abs=1e-12)
    assert stops[0].longitude == pytest.approx(-9.14)


def test_stops_shorter_than_minimum_ignored() -> None:
    track = [*drive(0, 5, 100), *park(50, 3, 500), *drive(300, 5, 100)]

    assert find_stops(track) == []


def test_stops_slow_crawl_not_stop() -> None:
    crawl = [at(60 * i, north_m=30 * i, speed=2) for i in range(20)]

    assert find_stops(crawl, StopRule(radius_m=100)) == []


def test_stops_gap_without_fixes_counts_as_stop() -> None:
    track = [at(0, speed=0), at(6 * 3600, north_m=5, speed=0)]

    stops = find_stops(track)

    assert stops[0].duration == timedelta(hours=6)


def test_stops_invalid_fix_does_not_break_stop() -> None:
    track = park(0, 10, 0)
    track.insert(5, at(290, north_m=5000, speed=80, valid=False))

    stops = find_stops(track)

    assert len(stops) == 1
    assert stops[0].fixes == 11


def test_stops_rule_rejects_zero_radius() -> None:
    with pytest.raises(ValueError, match="positive"):
        StopRule(radius_m=0)


# --- simplification -------------------------------------------------------------


def test_simplify_straight_line_keeps_ends() -> None:
    track = drive(0, 50, 100)

    simplified = simplify_track(track, 5)

    assert simplified == [track[0], track[-1]]


def test_simplify_keeps_corner() -> None:
    north = drive(0, 10, 100)
    east = [at(100 + 10 * i, north_m=900, east_m=100 * i) for i in range(1, 10)]

    simplified = simplify_track([*north, *east], 5)

    assert simplified == [north[0], north[-1], east[-1]]


def test_simplify_keeps_stop_arrival_and_departure() -> None:
    parked = park(100, 20, 1000)
    track = [*drive(0, 11, 100), *parked, *drive(1400, 10, 100)]

    simplified = simplify_track(track, 50)

    assert parked[0] in simplified
    assert parked[-1] in simplified


def test_simplify_tolerance_bounds_deviation() -> None:
    zigzag = [at(10 * i, north_m=100 * i, east_m=8 * (i % 2)) for i in range(40)]

    loose = simplify_track(zigzag, 10)
    tight = simplify_track(zigzag, 1)

    assert len(loose) == 2
    assert len(tight) == 40


def test_simplify_rejects_negative_tolerance() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        simplify_track(drive(0, 5, 10), -1)


def test_simplify_across_antimeridian_stays_one_line() -> None:
    track = [
        Fix(DEVICE, T0 + timedelta(seconds=i), 0.0, 179.999 + i * 0.0005)
        for i in range(5)
    ]
    track = [
        Fix(f.device_id, f.time, f.latitude, f.longitude - 360 * (f.longitude > 180))
        for f in track
    ]

    assert simplify_track(track, 1) == [track[0], track[-1]]


# --- daily mileage ------------------------------------------------------------------


def test_mileage_sums_legs_of_a_day() -> None:
    days = daily_mileage(drive(0, 11, 100))

    assert len(days) == 1
    assert days[0].distance_km == pytest.approx(1.0, rel=1e-6)
    assert days[0].fixes == 11


def test_mileage_skips_invalid_fixes() -> None:
    track = drive(0, 11, 100)
    track[5] = at(50, north_m=9000, valid=False)

    assert daily_mileage(track)[0].distance_km == pytest.approx(1.0, rel=1e-6)


def test_mileage_filters_single_jump() -> None:
    track = drive(0, 11, 100)
    track[5] = at(50, north_m=50_000)

    days = daily_mileage(track)

    assert days[0].distance_km == pytest.approx(1.0, rel=1e-6)
    assert days[0].jumps_filtered == 1


def test_mileage_follows_confirmed_relocation() -> None:
    before = drive(0, 6, 100)
    after = [at(60 + 10 * i, north_m=50_000 + 100 * i) for i in range(6)]

    days = daily_mileage([*before, *after])

    assert days[0].distance_km == pytest.approx(1.0, rel=1e-6)
    assert days[0].jumps_filtered == 1


def test_mileage_splits_leg_at_midnight() -> None:
    late = datetime(2024, 5, 1, 23, 50, tzinfo=UTC)
    track = [
        Fix(DEVICE, late, 38.7, -9.14),
        Fix(DEVICE, late + timedelta(minutes=20), 38.7 + 10_000 * METRE, -9.14),
    ]

    days = daily_mileage(track)

    assert [d.day for d in days] == [date(2024, 5, 1), date(2024, 5, 2)]
    assert days[0].distance_km == pytest.approx(5.0, rel=1e-6)
    assert days[1].distance_km == pytest.approx(5.0, rel=1e-6)


def test_mileage_after_long_silence_counts_on_arrival_day() -> None:
    # A tracker silent for 128 days: the move is seen on the day it reports.
    last = datetime(2014, 4, 10, 12, 0, tzinfo=UTC)
    back = last + timedelta(days=128, hours=2)
    track = [
        Fix(DEVICE, last, 38.7, -9.14),
        Fix(DEVICE, back, 38.7 + 3_000 * METRE, -9.14),
    ]

    days = daily_mileage(track)

    assert [d.day for d in days] == [last.date(), back.date()]
    assert days[0].distance_km == 0
    assert days[1].distance_km == pytest.approx(3.0, rel=1e-6)


def test_mileage_local_day_of_zone() -> None:
    # 23:30 UTC on 30 June is 00:30 on 1 July in Lisbon (UTC+1 in summer).
    start = datetime(2024, 6, 30, 23, 30, tzinfo=UTC)
    track = [
        Fix(DEVICE, start + timedelta(seconds=10 * i), 38.7 + i * 100 * METRE, -9.14)
        for i in range(6)
    ]

    utc_days = daily_mileage(track)
    lisbon_days = daily_mileage(track, zone="Europe/Lisbon")

    assert [d.day for d in utc_days] == [date(2024, 6, 30)]
    assert [d.day for d in lisbon_days] == [date(2024, 7, 1)]


def test_mileage_dst_day_has_23_hours() -> None:
    # Lisbon moved from UTC+0 to UTC+1 at 01:00 UTC on 31 March 2024, so
    # local 31 March ends at 23:00 UTC.
    before_midnight = datetime(2024, 3, 31, 22, 50, tzinfo=UTC)
    track = [
        Fix(DEVICE, before_midnight, 38.7, -9.14),
        Fix(
            DEVICE, before_midnight + timedelta(minutes=20), 38.7 + 2000 * METRE, -9.14
        ),
    ]

    days = daily_mileage(track, zone="Europe/Lisbon")

    assert [d.day for d in days] == [date(2024, 3, 31), date(2024, 4, 1)]
    assert days[0].distance_km == pytest.approx(1.0, rel=1e-6)


def test_mileage_unknown_zone_raises() -> None:
    with pytest.raises(KeyError):
        daily_mileage(drive(0, 3, 10), zone="Mars/Olympus")


def test_mileage_empty_track() -> None:
    assert daily_mileage([]) == []


# --- through the stores ---------------------------------------------------------------


def test_store_track_simplified(store: Store) -> None:
    track = drive(0, 50, 100)
    store.write_fixes(track)

    simplified = store.track(DEVICE, simplify_m=5)

    assert simplified == [track[0], track[-1]]


def test_store_stops_in_window(store: Store) -> None:
    track = [*drive(0, 10, 100), *park(100, 20, 900), *drive(1400, 10, 100)]
    store.write_fixes(track)

    stops = store.stops(DEVICE, T0, T0 + timedelta(hours=1))

    assert [(s.arrival, s.departure) for s in stops] == [
        (track[10].time, track[30].time)
    ]


def test_store_daily_mileage(store: Store) -> None:
    store.write_fixes(drive(0, 11, 100))

    days = store.daily_mileage(DEVICE, T0, T0 + timedelta(days=1))

    assert days[0].distance_km == pytest.approx(1.0, rel=1e-6)


LISBON_BLOCK = box(-9.15, 38.69, -9.13, 38.71)


def test_store_seen_inside_reports_first_and_last(store: Store) -> None:
    inside = drive(0, 5, 100)
    outside = [at(100, north_m=50_000)]
    other = [Fix("other", T0, 40.0, -8.0)]
    store.write_fixes([*inside, *outside, *other])

    sightings = store.seen_inside(LISBON_BLOCK, T0, T0 + timedelta(hours=1))

    assert len(sightings) == 1
    assert sightings[0].device_id == DEVICE
    assert sightings[0].first_seen == inside[0].time
    assert sightings[0].last_seen == inside[-1].time
    assert sightings[0].fixes == 5


def test_store_seen_inside_respects_window(store: Store) -> None:
    store.write_fixes(drive(0, 5, 100))

    sightings = store.seen_inside(
        LISBON_BLOCK, T0 + timedelta(seconds=15), T0 + timedelta(seconds=35)
    )

    assert sightings[0].fixes == 2


def test_store_seen_inside_boundary_counts(store: Store) -> None:
    on_edge = Fix(DEVICE, T0, 38.69, -9.14)
    store.write_fixes([on_edge])

    sightings = store.seen_inside(LISBON_BLOCK, T0, T0 + timedelta(minutes=1))

    assert [s.device_id for s in sightings] == [DEVICE]


def test_store_seen_inside_hole_excluded(store: Store) -> None:
    ring = Polygon(
        LISBON_BLOCK.exterior.coords,
        [Point(-9.14, 38.7).buffer(0.005).exterior.coords],
    )
    store.write_fixes([at(0)])

    assert store.seen_inside(ring, T0, T0 + timedelta(minutes=1)) == []


def test_store_seen_inside_multipolygon(store: Store) -> None:
    far = box(100.0, 10.0, 101.0, 11.0)
    store.write_fixes([at(0), Fix("far", T0, 10.5, 100.5)])

    sightings = store.seen_inside(
        MultiPolygon([LISBON_BLOCK, far]), T0, T0 + timedelta(minutes=1)
    )

    assert [s.device_id for s in sightings] == [DEVICE, "far"]


def test_store_seen_inside_skips_invalid_fixes(store: Store) -> None:
    store.write_fixes([at(0, valid=False)])

    window = (T0, T0 + timedelta(minutes=1))

    assert store.seen_inside(LISBON_BLOCK, *window) == []
    assert len(store.seen_inside(LISBON_BLOCK, *window, valid_only=False)) == 1


def test_store_seen_inside_names_vehicles(store: Store) -> None:
    store.upsert_vehicle("car-1")
    store.upsert_vehicle("car-2")
    store.bind_device(DEVICE, "car-1", valid_from=T0 - timedelta(days=1))
    store.unbind_device(DEVICE, at=T0 + timedelta(seconds=25))
    store.bind_device(DEVICE, "car-2", valid_from=T0 + timedelta(seconds=25))
    store.write_fixes(drive(0, 5, 100))

    sightings = store.seen_inside(LISBON_BLOCK, T0, T0 + timedelta(hours=1))

    assert sightings[0].vehicle_ids == ("car-1", "car-2")


def test_store_seen_inside_rejects_invalid_polygon(store: Store) -> None:
    bowtie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])

    with pytest.raises(ValueError, match="not a valid polygon"):
        store.seen_inside(bowtie, T0, T0 + timedelta(hours=1))


def test_store_seen_inside_rejects_point(store: Store) -> None:
    with pytest.raises(ValueError, match="Polygon or MultiPolygon"):
        store.seen_inside(Point(0, 0), T0, T0 + timedelta(hours=1))
