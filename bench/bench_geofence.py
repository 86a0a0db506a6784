"""Benchmark the fence engine: per-fix cost against a bare index query and
brute force, the batch path, and memory.

Synthetic, seeded data: `--fences` fences, half province-scale polygons
(star-shaped, 30-80 km radius, 24-48 vertices, between 60°S and 70°N) and
half 200 m circles, of which half lie near the devices' routes. `--fixes`
fixes from `--devices` vehicles that alternate parking (10 m jitter) and
driving (30-110 km/h) with a fix every 30 s, fed in time order as a gateway
would. Every loop is bounded by its count; the per-fix loop also by
`--time-limit` seconds.

The index is prepared (`FenceIndex.prepare`) before any fix, and that time
is printed with the index build. The per-fix loop alternates blocks of
10,000 fixes through the engine with bare index queries at the same fixes,
so that both see the same load on a shared machine and their ratio holds
even when the absolute times drift.

Run: ``python bench/bench_geofence.py`` (defaults: 100,000 fences,
1,000,000 fixes); ``--fences 4000 --fixes 40000 --devices 400`` for a quick
look; ``--profile 300000`` to profile the engine instead.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import math
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import rtree
import shapely
from shapely.geometry import Polygon
from shapely.strtree import STRtree

from postloan.geofence import (
    DEFAULT_SETTINGS,
    Fence,
    FenceEngine,
    FenceIndex,
    TrackArrays,
    circle_fence,
    evaluate_batch,
    polygon_fence,
)
from postloan.geofence.fences import CircleShape, circle_distances_m
from postloan.model import FenceEvent, Fix

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


class FullCollections:
    """Number and seconds of full (generation 2) garbage collections since
    the last `reset`. With a million Fix objects alive one costs 0.2-0.4 s,
    and it lands in whichever call allocates at the time."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.seconds += time.perf_counter() - self._started

    def reset(self) -> tuple[int, float]:
        """Collect garbage now, so that a timed section starts with none
        pending; return the count and seconds so far and start from zero."""
        gc.collect()
        before = (self.count, self.seconds)
        self.count, self.seconds = 0, 0.0
        return before


class Timings:
    """Per-call nanoseconds of the engine and of the bare queries, measured
    block by block so that both see the same load on a shared machine."""

    def __init__(self) -> None:
        self.engine: list[int] = []
        self.strtree: list[int] = []  # scalar STRtree.query, point built
        self.strtree_make_point: list[int] = []  # scalar, building the point
        self.strtree_array: list[int] = []  # one-element array, point built
        self.rtree: list[int] = []  # every tenth fix
        self.events: list[FenceEvent] = []
        self.wall_s = 0.0
        self.collections = (0, 0.0)  # full garbage collections, seconds


def bare_indexes(fences: list[Fence]) -> tuple[STRtree, rtree.index.Index]:
    """Return an STRtree and an rtree over the same boxes as the FenceIndex."""
    boxes = [box for fence in fences for box in fence.shape.boxes]
    coords = np.array(boxes)
    tree = STRtree(shapely.box(coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]))
    stream = ((n, box, None) for n, box in enumerate(boxes))
    return tree, rtree.index.Index(stream)


def time_engine_block(engine: FenceEngine, fixes: list[Fix], into: Timings) -> None:
    clock = time.perf_counter_ns
    costs = into.engine
    for fix in fixes:
        before = clock()
        found = engine.process(fix)
        costs.append(clock() - before)
        if found:
            into.events.extend(found)


def time_bare_block(
    tree: STRtree,
    rtree_index: rtree.index.Index,
    lon: np.ndarray,
    lat: np.ndarray,
    into: Timings,
) -> None:
    clock = time.perf_counter_ns
    points = shapely.points(lon, lat)
    singles = [points[n : n + 1] for n in range(len(points))]
    xs, ys = lon.tolist(), lat.tolist()
    for n, (x, y, point, single) in enumerate(
        zip(xs, ys, points, singles, strict=True)
    ):
        before = clock()
        tree.query(point)
        middle = clock()
        tree.query(shapely.Point(x, y))
        after = clock()
        tree.query(single)
        done = clock()
        into.strtree.append(middle - before)
        into.strtree_make_point.append(after - middle)
        into.strtree_array.append(done - after)
        if n % 10 == 0:
            before = clock()
            list(rtree_index.intersection((x, y, x, y)))
            into.rtree.append(clock() - before)


def time_per_fix(
    engine: FenceEngine,
    fences: list[Fence],
    fixes: list[Fix],
    coords: tuple[np.ndarray, np.ndarray],
    limit_s: float,
) -> Timings:
    """Time `engine.process` per fix and the bare queries at the same fixes,
    alternating blocks of 10,000 fixes, until the fixes or `limit_s` run out.
    Odd blocks run the bare queries first, so neither side always follows
    the other."""
    tree, rtree_index = bare_indexes(fences)
    timings = Timings()
    collections = FullCollections()
    collections.reset()
    started = time.perf_counter()
    block = 10_000
    lon, lat = coords
    for start in range(0, len(fixes), block):
        rows = slice(start, start + block)
        bare_first = (start // block) % 2 == 1
        if bare_first:
            time_bare_block(tree, rtree_index, lon[rows], lat[rows], timings)
        time_engine_block(engine, fixes[rows], timings)
        if not bare_first:
            time_bare_block(tree, rtree_index, lon[rows], lat[rows], timings)
        if time.perf_counter() - started > limit_s:
            break
    timings.wall_s = time.perf_counter() - started
    timings.collections = collections.reset()
    return timings


def brute_force(
    fences: list[Fence], lon: np.ndarray, lat: np.ndarray
) -> tuple[float, float]:
    """Return the median and mean µs per fix of checking every fence with
    shapely (polygons vectorized) and numpy (circle distances)."""
    polygons = np.array([f.shape.geometry for f in fences if f.shape.kind == "polygon"])
    shapely.prepare(polygons)
    circles = [f.shape for f in fences if isinstance(f.shape, CircleShape)]
    centre_lon = np.array([c.lon for c in circles])
    centre_lat = np.array([c.lat for c in circles])
    rho = np.array([c.curvature_m for c in circles])
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
    return statistics.median(costs) / 1000, sum(costs) / len(costs) / 1000


def parse_args() -> argparse.Namespace:
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
        "--time-limit",
        type=float,
        default=300.0,
        help="seconds for the per-fix loop (it stops after the current block)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="instead of the benchmark, profile process() over the first N fixes "
        "with cProfile and print the 25 most expensive functions",
    )
    parser.add_argument("--seed", type=int, default=20241204, help="random seed")
    return parser.parse_args()


def summary(values: list[int]) -> tuple[float, float, float]:
    """Return (median, mean, 99th percentile) in µs of nanosecond values."""
    ordered = sorted(values)
    return (
        statistics.median(ordered) / 1000,
        sum(ordered) / len(ordered) / 1000,
        ordered[int(len(ordered) * 0.99)] / 1000,
    )


def profile_engine(engine: FenceEngine, fixes: list[Fix]) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(engine.process_many, fixes)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def time_batch(
    index: FenceIndex, track: TrackArrays
) -> tuple[list[tuple[float, int, float]], list[FenceEvent]]:
    """Run the batch path twice over `track`; return for each run the µs per
    fix and its full garbage collections (count, seconds), and the events
    of the first run. The first run is the cold one: nothing in the batch
    path depends on fixes it evaluated before."""
    runs = []
    first: list[FenceEvent] = []
    collections = FullCollections()
    for run in range(2):
        collections.reset()
        before = time.perf_counter()
        events = evaluate_batch(index, track)
        cost = (time.perf_counter() - before) / len(track.lon) * 1e6
        runs.append((cost, *collections.reset()))
        first = events if run == 0 else first
    return runs, first


@dataclass
class Run:
    """Everything one benchmark run measured."""

    args: argparse.Namespace
    load_before: tuple[float, float, float]
    fence_count: int
    fix_count: int
    fences_s: float
    build_s: float
    prepare_s: float
    engine: FenceEngine
    timings: Timings
    brute: tuple[float, float]
    brute_sample: int
    batch: list[tuple[float, int, float]]
    batch_events: list[FenceEvent]
    rss: dict[str, float]


def main() -> int:
    args = parse_args()
    load_before = os.getloadavg()
    rng = np.random.default_rng(args.seed)
    per_device = max(args.fixes // args.devices, 1)

    rss = {"start": rss_mb()}
    device, time_s, lon, lat = make_tracks(rng, args.devices, per_device)
    order = np.argsort(time_s, kind="stable")  # arrival order: by fix time
    device, time_s, lon, lat = device[order], time_s[order], lon[order], lat[order]
    before = time.perf_counter()
    fences = make_fences(rng, args.fences, lon, lat)
    fences_s = time.perf_counter() - before
    before = time.perf_counter()
    index = FenceIndex(fences)
    build_s = time.perf_counter() - before
    before = time.perf_counter()
    index.prepare(DEFAULT_SETTINGS.margin_m)
    prepare_s = time.perf_counter() - before
    rss["fences + index + prepare"] = rss_mb()
    names = [f"dev{n}" for n in range(args.devices)]
    fixes = [
        Fix(names[d], START + timedelta(seconds=t), y, x)
        for d, t, x, y in zip(
            device.tolist(), time_s.tolist(), lon.tolist(), lat.tolist(), strict=True
        )
    ]
    rss["+ fix objects"] = rss_mb()
    engine = FenceEngine(index)
    if args.profile:
        profile_engine(engine, fixes[: args.profile])
        return 0

    timings = time_per_fix(engine, fences, fixes, (lon, lat), args.time_limit)
    rss["+ engine state"] = rss_mb()
    sample = rng.choice(len(fixes), min(args.brute_sample, len(fixes)), replace=False)
    brute = brute_force(fences, lon[sample], lat[sample])
    # From the Fix objects, so that times round to microseconds exactly as in
    # the engine's input.
    track = TrackArrays.from_fixes(fixes)
    batch, batch_events = time_batch(index, track)
    run = Run(
        args,
        load_before,
        len(fences),
        len(fixes),
        fences_s,
        build_s,
        prepare_s,
        engine,
        timings,
        brute,
        len(sample),
        batch,
        batch_events,
        rss,
    )
    report(run)
    return 0


def report(run: Run) -> None:
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.platform()}")
    load_after = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    load_before = ", ".join(f"{x:.2f}" for x in run.load_before)
    print(f"load average: before {load_before}; after {load_after}")
    print(
        f"python {sys.version.split()[0]}, shapely {shapely.__version__} "
        f"(GEOS {'.'.join(map(str, shapely.geos_version))}), numpy {np.__version__}, "
        f"rtree {rtree.__version__}"
    )
    print(
        f"fences: {run.fence_count} built in {run.fences_s:.1f} s; index build "
        f"{run.build_s:.1f} s, prepare {run.prepare_s:.1f} s; fixes: "
        f"{run.fix_count} from {run.args.devices} devices; timed per fix: "
        f"{len(run.timings.engine)} in {run.timings.wall_s:.1f} s"
    )
    report_per_fix(run)
    (cold, cold_gcs, cold_gc_s), (warm, warm_gcs, warm_gc_s) = run.batch
    timed_all = len(run.timings.engine) == run.fix_count
    same = run.batch_events == run.timings.events if timed_all else "n/a"
    print(
        f"batch per fix after prepare: {cold:.2f} µs cold (target < 1), {warm:.2f} "
        f"µs on a second run; full garbage collections {cold_gcs} ({cold_gc_s:.2f} "
        f"s) and {warm_gcs} ({warm_gc_s:.2f} s); events {len(run.batch_events)}, "
        f"equal to the engine's: {same}"
    )
    sizes = ", ".join(f"{name} {mb:.0f}" for name, mb in run.rss.items())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory (RSS MB): {sizes}; peak {peak:.0f}")


def report_per_fix(run: Run) -> None:
    """Print the per-fix costs, the bare queries and the ratios."""
    timings = run.timings
    fix_median, fix_mean, fix_p99 = summary(timings.engine)
    bare = {
        "STRtree.query(point), point built": summary(timings.strtree),
        "STRtree.query(Point(x, y))": summary(timings.strtree_make_point),
        "STRtree.query(one-element array)": summary(timings.strtree_array),
        "rtree intersection (every 10th fix)": summary(timings.rtree),
    }
    timed = len(timings.engine)
    stats = run.engine.stats
    print(
        f"process() per fix: median {fix_median:.2f} µs, mean {fix_mean:.2f} µs, "
        f"p99 {fix_p99:.1f} µs; events {len(timings.events)}; evaluations "
        f"{stats.evaluations / timed:.1%} and index queries "
        f"{stats.index_queries / timed:.1%} of fixes"
    )
    count, seconds = timings.collections
    print(
        f"full garbage collections in the per-fix loop (included above): {count}, "
        f"{seconds:.2f} s"
    )
    for name, (median, mean, p99) in bare.items():
        print(
            f"bare {name}: median {median:.2f} µs, mean {mean:.2f} µs, p99 {p99:.1f} µs"
        )
    base_median, base_mean, _ = bare["STRtree.query(point), point built"]
    print(
        f"per fix / bare STRtree.query(point) (target <= 1.5): median/median "
        f"{fix_median / base_median:.2f}, mean/mean {fix_mean / base_mean:.2f}, "
        f"mean/median {fix_mean / base_median:.2f}"
    )
    fast_median, fast_mean, _ = bare["STRtree.query(one-element array)"]
    print(
        f"per fix / bare one-element-array query: median/median "
        f"{fix_median / fast_median:.2f}, mean/mean {fix_mean / fast_mean:.2f}"
    )
    brute_median, brute_mean = run.brute
    print(
        f"brute force over all fences ({run.brute_sample} fixes): median "
        f"{brute_median:.0f} µs, mean {brute_mean:.0f} µs; brute mean / per-fix "
        f"mean {brute_mean / fix_mean:.0f}x (target >= 100)"
    )


if __name__ == "__main__":
    sys.exit(main())
