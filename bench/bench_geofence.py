"""Benchmark the fence engine: per-fix cost against a bare index query and
brute force, the batch path, and memory.

Synthetic, seeded data: `--fences` fences, half province-scale polygons
(star-shaped, 30-80 km radius, 24-48 vertices, between 60°S and 70°N) and
half 200 m circles, of which half lie near the devices' routes. `--fixes`
fixes from `--devices` vehicles that alternate parking (10 m jitter) and
driving (30-110 km/h) with a fix every 30 s, fed in time order as a gateway
would. Every loop is bounded by its count and by `--time-limit` seconds.

Run: ``python bench/bench_geofence.py`` (defaults: 100,000 fences,
1,000,000 fixes); ``--fences 2000 --fixes 20000`` for a quick look.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import rtree
import shapely
from shapely.geometry import Polygon
from shapely.strtree import STRtree

from postloan.geofence import (
    Fence,
    FenceEngine,
    FenceIndex,
    TrackArrays,
    circle_fence,
    evaluate_batch,
    polygon_fence,
)
from postloan.model import Fix

START = datetime(2024, 5, 1, tzinfo=UTC)
KM_PER_DEG = 111.2


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def star_polygon(rng: np.random.Generator, lon: float, lat: float) -> Polygon:
    count = int(rng.integers(24, 49))
    radius_km = rng.uniform(30.0, 80.0)
    angles = np.sort(rng.uniform(0.0, 2 * math.pi, count))
    radii = radius_km * rng.uniform(0.6, 1.0, count) / KM_PER_DEG
    xs = lon + radii * np.cos(angles) / math.cos(math.radians(lat))
    ys = lat + radii * np.sin(angles)
    return Polygon(np.column_stack([xs, ys]))


def make_tracks(
    rng: np.random.Generator, devices: int, per_device: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (device, time_s, lon, lat), one row per fix, device-major."""
    lon0 = rng.uniform(-170.0, 170.0, devices)
    lat0 = rng.uniform(-55.0, 65.0, devices)
    steps = np.zeros((devices, per_device, 2))
    driving = rng.random((devices, per_device)) < 0.6
    # Runs of driving and parking: keep a state for ~20 fixes on average.
    driving = np.repeat(driving[:, ::20], 20, axis=1)[:, :per_device]
    speed_kmh = rng.uniform(30.0, 110.0, (devices, per_device)) * driving
    heading = np.cumsum(rng.normal(0.0, 0.3, (devices, per_device)), axis=1)
    step_km = speed_kmh * 30.0 / 3600.0
    steps[:, :, 0] = step_km * np.cos(heading)
    steps[:, :, 1] = step_km * np.sin(heading)
    lat = lat0[:, None] + np.cumsum(steps[:, :, 1], axis=1) / KM_PER_DEG
    lon = lon0[:, None] + np.cumsum(steps[:, :, 0], axis=1) / (
        KM_PER_DEG * np.cos(np.radians(lat))
    )
    jitter = rng.normal(0.0, 0.01 / KM_PER_DEG, (2, devices, per_device))
    lon = (lon + jitter[0] + 180.0) % 360.0 - 180.0
    lat = np.clip(lat + jitter[1], -89.0, 89.0)
    device = np.repeat(np.arange(devices), per_device)
    time_s = np.tile(np.arange(per_device) * 30.0, devices) + rng.uniform(
        0, 30, devices
    ).repeat(per_device)
    return device, time_s, lon.ravel(), lat.ravel()


def make_fences(
    rng: np.random.Generator, count: int, track_lon: np.ndarray, track_lat: np.ndarray
) -> list[Fence]:
    fences: list[Fence] = []
    polygons = count // 2
    for n in range(polygons):
        lat = rng.uniform(-60.0, 70.0)
        lon = rng.uniform(-178.0, 178.0)
        fences.append(polygon_fence(f"p{n}", star_polygon(rng, lon, lat)))
    near = rng.choice(len(track_lon), (count - polygons) // 2)
    for n in range(count - polygons):
        if n < len(near):
            offset = rng.normal(0.0, 0.5 / KM_PER_DEG, 2)
            lon = float(np.clip(track_lon[near[n]] + offset[0], -179.99, 179.99))
            lat = float(np.clip(track_lat[near[n]] + offset[1], -89.0, 89.0))
        else:
            lon, lat = rng.uniform(-179.0, 179.0), rng.uniform(-60.0, 70.0)
        fences.append(circle_fence(f"c{n}", lon, lat, 200.0))
    return fences


def time_per_fix(
    engine: FenceEngine, fixes: list[Fix], limit_s: float
) -> tuple[list[int], int, float]:
    """Return per-call nanoseconds, the event count and the wall time."""
    costs = []
    events = 0
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for n, fix in enumerate(fixes):
        before = clock()
        found = engine.process(fix)
        costs.append(clock() - before)
        events += len(found)
        if n % 10_000 == 0 and time.perf_counter() - started > limit_s:
            break
    return costs, events, time.perf_counter() - started


def bare_queries(
    fences: list[Fence], lon: np.ndarray, lat: np.ndarray
) -> dict[str, float]:
    """Return median µs of bare candidate queries from Python."""
    boxes = [box for fence in fences for box in fence.shape.boxes]
    coords = np.array(boxes)
    tree = STRtree(shapely.box(coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]))
    stream = ((n, box, None) for n, box in enumerate(boxes))
    rtree_index = rtree.index.Index(stream)
    points = shapely.points(lon, lat)
    results: dict[str, list[int]] = {
        "strtree_point": [],
        "strtree_make_point": [],
        "rtree": [],
    }
    clock = time.perf_counter_ns
    for x, y, point in zip(lon.tolist(), lat.tolist(), points, strict=True):
        before = clock()
        tree.query(point)
        middle = clock()
        tree.query(shapely.Point(x, y))
        after = clock()
        list(rtree_index.intersection((x, y, x, y)))
        done = clock()
        results["strtree_point"].append(middle - before)
        results["strtree_make_point"].append(after - middle)
        results["rtree"].append(done - after)
    return {name: statistics.median(values) / 1000 for name, values in results.items()}


def brute_force(fences: list[Fence], lon: np.ndarray, lat: np.ndarray) -> float:
    """Return median µs per fix of checking every fence with shapely
    (polygons vectorized) and numpy (circle distances)."""
    polygons = np.array([f.shape.geometry for f in fences if f.shape.kind == "polygon"])
    shapely.prepare(polygons)
    circles = [f.shape for f in fences if f.shape.kind == "circle"]
    centre_lon = np.array([c.lon for c in circles])  # type: ignore[union-attr]
    centre_lat = np.array([c.lat for c in circles])  # type: ignore[union-attr]
    rho = np.array([c.curvature_m for c in circles])  # type: ignore[union-attr]
    from postloan.geofence.fences import circle_distances_m

    costs = []
    for x, y in zip(lon.tolist(), lat.tolist(), strict=True):
        before = time.perf_counter_ns()
        shapely.intersects_xy(polygons, x, y)
        circle_distances_m(
            centre_lon,
            centre_lat,
            rho,
            np.full(len(circles), x),
            np.full(len(circles), y),
        )
        costs.append(time.perf_counter_ns() - before)
    return statistics.median(costs) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fences", type=int, default=100_000, help="number of fences")
    parser.add_argument("--fixes", type=int, default=1_000_000, help="number of fixes")
    parser.add_argument(
        "--devices", type=int, default=10_000, help="number of vehicles"
    )
    parser.add_argument(
        "--brute-sample", type=int, default=300, help="fixes for brute force"
    )
    parser.add_argument(
        "--query-sample", type=int, default=20_000, help="fixes for bare queries"
    )
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds per timed loop"
    )
    parser.add_argument("--seed", type=int, default=20241204, help="random seed")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    per_device = max(args.fixes // args.devices, 1)

    rss_start = rss_mb()
    device, time_s, lon, lat = make_tracks(rng, args.devices, per_device)
    order = np.argsort(time_s, kind="stable")  # arrival order: by fix time
    device, time_s, lon, lat = device[order], time_s[order], lon[order], lat[order]
    built = time.perf_counter()
    fences = make_fences(rng, args.fences, lon, lat)
    index = FenceIndex(fences)
    build_s = time.perf_counter() - built
    rss_index = rss_mb()
    names = [f"dev{n}" for n in range(args.devices)]
    fixes = [
        Fix(names[d], START + timedelta(seconds=t), y, x)
        for d, t, x, y in zip(
            device.tolist(), time_s.tolist(), lon.tolist(), lat.tolist(), strict=True
        )
    ]
    rss_fixes = rss_mb()

    engine = FenceEngine(index)
    costs, events, wall = time_per_fix(engine, fixes, args.time_limit)
    rss_engine = rss_mb()
    median_fix = statistics.median(costs) / 1000
    mean_fix = sum(costs) / len(costs) / 1000
    slow = sorted(costs)[int(len(costs) * 0.99)] / 1000

    sample = rng.choice(len(fixes), min(args.query_sample, len(fixes)), replace=False)
    bare = bare_queries(fences, lon[sample], lat[sample])
    brute_rows = sample[: args.brute_sample]
    brute = brute_force(fences, lon[brute_rows], lat[brute_rows])

    track = TrackArrays(
        tuple(names),
        device.astype(np.int64),
        ((time_s + START.timestamp()) * 1e6).astype(np.int64),
        lon,
        lat,
        np.ones(len(lon), dtype=bool),
    )
    batch_times = []
    for _ in range(2):
        before = time.perf_counter()
        batch_events = evaluate_batch(index, track)
        batch_times.append(time.perf_counter() - before)
    batch_first, batch_second = (t / len(lon) * 1e6 for t in batch_times)

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}")
    print(
        f"python {sys.version.split()[0]}, shapely {shapely.__version__} "
        f"(GEOS {'.'.join(map(str, shapely.geos_version))}), numpy {np.__version__}, "
        f"rtree {rtree.__version__}"
    )
    print(
        f"fences: {len(fences)} (build + index {build_s:.1f} s); fixes: {len(fixes)} "
        f"from {args.devices} devices; timed per fix: {len(costs)} in {wall:.1f} s"
    )
    print(
        f"per fix process(): median {median_fix:.2f} µs, mean {mean_fix:.2f} µs, "
        f"p99 {slow:.1f} µs; events {events}; evaluations {engine.stats.evaluations}; "
        f"index queries {engine.stats.index_queries}"
    )
    print(
        f"bare STRtree query, point given: {bare['strtree_point']:.2f} µs; "
        f"building the point too: {bare['strtree_make_point']:.2f} µs; "
        f"rtree intersection: {bare['rtree']:.2f} µs (medians of {len(sample)})"
    )
    sampled = len(brute_rows)
    print(f"brute force over all fences: {brute:.0f} µs per fix, median of {sampled}")
    ratio = median_fix / bare["strtree_point"]
    print(f"ratio per-fix / bare STRtree query (point given): {ratio:.2f}")
    print(f"ratio brute force / per-fix: {brute / median_fix:.0f}x")
    print(
        f"batch: {batch_first:.2f} µs per fix first run (builds sure geometries), "
        f"{batch_second:.2f} µs second run; events {len(batch_events)}"
    )
    print(
        f"memory (RSS MB): start {rss_start:.0f}, fences+index {rss_index:.0f}, "
        f"fix objects {rss_fixes:.0f}, after engine {rss_engine:.0f}, "
        f"max {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
