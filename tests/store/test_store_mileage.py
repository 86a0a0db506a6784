"""Daily mileage on real 1 Hz tracks whose trackers repeat a position, then jump.

A tracker without a new GPS solution resends its last position, so a 1 Hz
track contains runs of one position followed by a jump to the real one. The
jump covers the whole run's time, not one second. These tests replay the
vendored 1 Hz trajectories (the Munich car and the Rabat-Salé Twizy) with
such runs, with injected outliers, and against an independent geodesic sum.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from geographiclib.geodesic import Geodesic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postloan.model import Fix
from postloan.simulators import load_trajectories, vendored_trajectories
from postloan.store.queries import EARTH_RADIUS_M, daily_mileage, haversine_m

ONE_HZ_FILES = ("x0001-001.json", "T3_04_22_2021_1.csv", "T3_05_25_2021_04.csv")
DEVICE = "860000000000009"


@cache
def one_hz_track(name: str) -> tuple[Fix, ...]:
    """The valid fixes of one vendored 1 Hz trajectory, as stored fixes."""
    path = next(p for p in vendored_trajectories() if p.name == name)
    (trajectory,) = load_trajectories(path)
    return tuple(
        Fix(DEVICE, point.time, point.latitude, point.longitude)
        for point in trajectory.points
        if point.valid
    )


def path_m(fixes: Sequence[Fix]) -> float:
    """Haversine length of the polyline through the fixes, in metres."""
    return sum(
        haversine_m(a.latitude, a.longitude, b.latitude, b.longitude)
        for a, b in itertools.pairwise(fixes)
    )


def km(fixes: Sequence[Fix]) -> float:
    """Total mileage; a track stretched by `repeated` may run past midnight."""
    return sum(day.distance_km for day in daily_mileage(fixes))


def jumps(fixes: Sequence[Fix]) -> int:
    return sum(day.jumps_filtered for day in daily_mileage(fixes))


def held(fixes: Sequence[Fix], k: int) -> list[Fix]:
    """The track of a tracker whose position updates every `k` fixes.

    Fix times stay 1 s apart; in between updates the last position is sent
    again.
    """
    return [
        Fix(f.device_id, f.time, fixes[i - i % k].latitude, fixes[i - i % k].longitude)
        for i, f in enumerate(fixes)
    ]


def repeated(fixes: Sequence[Fix], k: int) -> list[Fix]:
    """Every fix sent `k` times, one second apart, so the track lasts k times longer."""
    start = fixes[0].time
    return [
        Fix(f.device_id, start + timedelta(seconds=i * k + j), f.latitude, f.longitude)
        for i, f in enumerate(fixes)
        for j in range(k)
    ]


def distinct_positions(fixes: Sequence[Fix]) -> list[Fix]:
    """The first fix of each run of one position."""
    return [f for i, f in enumerate(fixes) if i == 0 or not same_place(fixes[i - 1], f)]


def same_place(a: Fix, b: Fix) -> bool:
    return (a.latitude, a.longitude) == (b.latitude, b.longitude)


def offset(fix: Fix, distance_m: float, bearing_deg: float) -> Fix:
    """The fix moved `distance_m` along `bearing_deg` on the queries' sphere."""
    delta = distance_m / EARTH_RADIUS_M
    theta = math.radians(bearing_deg)
    phi1, lambda1 = math.radians(fix.latitude), math.radians(fix.longitude)
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta)
        + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    )
    lambda2 = lambda1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    return Fix(fix.device_id, fix.time, math.degrees(phi2), math.degrees(lambda2))


tracks = st.sampled_from(ONE_HZ_FILES)


@st.composite
def windows(draw: st.DrawFn, min_size: int = 60) -> list[Fix]:
    """A stretch of at least `min_size` consecutive fixes of a 1 Hz track.

    It starts at the first fix of a run of one position: cut inside a run,
    the leg after the run would be timed from the cut, not from its start.
    """
    track = one_hz_track(draw(tracks))
    start = draw(st.integers(0, len(track) - min_size))
    while start > 0 and same_place(track[start - 1], track[start]):
        start -= 1
    stop = draw(st.integers(start + min_size, len(track)))
    return list(track[start:stop])


# --- the vendored tracks as recorded ---------------------------------------------


@pytest.mark.parametrize("name", ONE_HZ_FILES)
def test_mileage_of_recorded_track_counts_every_leg(name: str) -> None:
    track = one_hz_track(name)
    geodesic_m = sum(
        Geodesic.WGS84.Inverse(a.latitude, a.longitude, b.latitude, b.longitude)["s12"]
        for a, b in itertools.pairwise(track)
    )

    (day,) = daily_mileage(track)

    # Every leg is a real move, some after the position repeated for a while.
    assert day.jumps_filtered == 0
    assert day.fixes == len(track)
    assert day.distance_km * 1000 == pytest.approx(path_m(track), rel=1e-12)
    # The sphere the queries use is within 0.5 % of the WGS-84 ellipsoid.
    assert day.distance_km * 1000 == pytest.approx(geodesic_m, rel=0.005)


def test_munich_position_held_34_s_then_jump_counts() -> None:
    track = one_hz_track("x0001-001.json")
    # Fixes 585 to 618 repeat one position. Fix 619 is 470 m away, 1 s after
    # the last repeat and 34 s after the first, so 50 km/h, not 1,693 km/h.
    assert len({(f.latitude, f.longitude) for f in track[585:619]}) == 1
    jump = track[618:620]
    assert path_m(jump) == pytest.approx(470.4, abs=0.1)

    assert km(track[560:640]) * 1000 == pytest.approx(path_m(track[560:640]))


# --- properties ------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(track=windows(), k=st.integers(2, 12))
def test_repeating_each_fix_k_times_keeps_mileage(track: list[Fix], k: int) -> None:
    assert km(repeated(track, k)) == pytest.approx(km(track), rel=1e-9, abs=1e-9)
    assert jumps(repeated(track, k)) == jumps(track) * k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(track=windows(), k=st.integers(2, 30))
def test_position_updated_every_k_fixes_counts_every_update(
    track: list[Fix], k: int
) -> None:
    cached = held(track, k)

    # The distance between the positions the tracker reported, in order.
    assert km(cached) * 1000 == pytest.approx(
        path_m(distinct_positions(cached)), rel=1e-9, abs=1e-6
    )
    assert jumps(cached) == 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    track=windows(),
    k=st.integers(1, 12),
    where=st.floats(0.0, 1.0),
    distance_m=st.floats(2_000, 200_000),
    bearing=st.floats(0, 360),
)
def test_single_outlier_adds_no_distance(
    track: list[Fix], k: int, where: float, distance_m: float, bearing: float
) -> None:
    clean = held(track, k)
    index = 1 + round(where * (len(clean) - 3))
    dirty = list(clean)
    dirty[index] = offset(clean[index], distance_m, bearing)

    clean_km, dirty_km = km(clean), km(dirty)

    assert dirty_km <= clean_km + 1e-9
    assert jumps(dirty) >= 1
    # At most the legs between the two positions before the outlier and the
    # two after it are lost.
    assert (clean_km - dirty_km) * 1000 <= nearby_path_m(clean, index) + 1e-6


def nearby_path_m(fixes: Sequence[Fix], index: int) -> float:
    """Length of the path through the two positions either side of `index`."""
    runs = [
        i for i in range(len(fixes)) if i == 0 or not same_place(fixes[i - 1], fixes[i])
    ]
    run = max(r for r, start in enumerate(runs) if start <= index)
    first, last = max(0, run - 2), min(len(runs) - 1, run + 2)
    return path_m([fixes[runs[r]] for r in range(first, last + 1)])


@st.composite
def noisy_tracks(draw: st.DrawFn) -> list[Fix]:
    """Random walks with repeated positions, far outliers and equal times."""
    start = datetime(2024, 5, 1, 22, 0, tzinfo=UTC)
    latitude, longitude, seconds = 48.1, 11.5, 0.0
    fixes = []
    for _ in range(draw(st.integers(1, 80))):
        step = draw(st.sampled_from(["repeat", "move", "outlier", "same_time"]))
        if step == "move":
            latitude += draw(st.floats(-0.002, 0.002))
            longitude += draw(st.floats(-0.002, 0.002))
        seconds += 0 if step == "same_time" else draw(st.floats(0.5, 120))
        fix = Fix(DEVICE, start + timedelta(seconds=seconds), latitude, longitude)
        if step == "outlier":
            fix = offset(fix, draw(st.floats(1_000, 500_000)), draw(st.floats(0, 360)))
        fixes.append(fix)
    return fixes


@settings(max_examples=300, deadline=None)
@given(track=noisy_tracks())
def test_every_valid_fix_is_counted_or_filtered(track: list[Fix]) -> None:
    days = daily_mileage(track, zone="Europe/Berlin")

    assert sum(d.fixes + d.jumps_filtered for d in days) == len(track)
    assert all(d.distance_km >= 0 for d in days)
    # Counted legs join fixes in order, so they never exceed the whole path.
    assert sum(d.distance_km for d in days) * 1000 <= path_m(track) + 1e-6


# --- examples --------------------------------------------------------------------


def _at(seconds: float, north_m: float) -> Fix:
    start = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    latitude = 48.1 + north_m / (math.radians(1) * EARTH_RADIUS_M)
    return Fix(DEVICE, start + timedelta(seconds=seconds), latitude, 11.5)


def test_far_outlier_after_long_stop_is_filtered() -> None:
    # Parked for an hour, one fix 20 km away (plausible over the hour, not
    # over the second since the last report), then parked again.
    parked = [_at(s, 0) for s in range(0, 3600, 60)]
    track = [*parked, _at(3601, 20_000), _at(3602, 0), _at(3662, 100)]

    (day,) = daily_mileage(track)

    assert day.distance_km == pytest.approx(0.1)
    assert day.jumps_filtered == 1


def test_repeated_far_outlier_after_stop_is_filtered() -> None:
    parked = [_at(s, 0) for s in range(0, 600, 10)]
    outlier = [_at(s, 20_000) for s in (601, 602, 603)]
    track = [*parked, *outlier, _at(604, 0), _at(610, 50)]

    (day,) = daily_mileage(track)

    assert day.distance_km == pytest.approx(0.05)
    assert day.jumps_filtered == 3


def test_outlier_while_a_held_position_waits_for_confirmation() -> None:
    # 30 s at one position, a move of 400 m (48 km/h since the position last
    # changed), an outlier, then the drive goes on from the new position.
    held_fixes = [_at(s, 0) for s in range(30)]
    track = [*held_fixes, _at(30, 400), _at(31, 90_000), _at(32, 415), _at(33, 430)]

    (day,) = daily_mileage(track)

    assert day.distance_km == pytest.approx(0.43)
    assert day.jumps_filtered == 1


def test_held_position_then_move_at_the_end_counts() -> None:
    track = [*(_at(s, 0) for s in range(30)), _at(30, 400)]

    assert km(track) == pytest.approx(0.4)
