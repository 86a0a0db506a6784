"""Process entry points: the gateway service, the simulator and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from postloan.config import Config
from postloan.model import FenceEvent, Fix
from postloan.store import Store, open_store, storage_layout

log = logging.getLogger(__name__)

T = TypeVar("T")

DEMO_STORE_URL = "sqlite:///var/demo.db"


def run_async(main: Coroutine[Any, Any, T], event_loop: str = "auto") -> T:
    """Run a coroutine on uvloop when available (and not disabled), else asyncio."""
    if event_loop in {"auto", "uvloop"}:
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise
        else:
            result: T = uvloop.run(main)
            return result
    return asyncio.run(main)


def fence_checker(config: Config) -> Callable[[Fix], Sequence[FenceEvent]] | None:
    """Build the per-fix fence check from ``[geofence]``, or None without a file."""
    if not config.geofence.file:
        return None
    from postloan.geofence import (
        FenceEngine,
        FenceIndex,
        HysteresisSettings,
        load_fences,
    )

    fences = load_fences(
        Path(config.geofence.file), id_property=config.geofence.id_property
    )
    settings = HysteresisSettings(
        margin_m=config.geofence.margin_m,
        confirm_fixes=config.geofence.confirm_fixes,
        dwell_s=config.geofence.dwell_s,
    )
    index = FenceIndex(fences)
    # Build the fence-only data now, so the first fixes near a fence pay nothing.
    index.prepare(settings.margin_m)
    engine = FenceEngine(index, settings)
    log.info("loaded %d fences from %s", len(fences), config.geofence.file)
    return engine.process


def run_gateway(config: Config) -> int:
    """Serve trackers until SIGINT or SIGTERM, then drain the writer and exit."""
    from postloan.gateway import Gateway

    store = open_store(config.store.url, layout=storage_layout(config.store))
    store.migrate()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        fence_check = fence_checker(config) if "fence" in config.bus.roles else None
        async with (
            _bus_publisher(config) as publisher,
            Gateway(config, store, fence_check=fence_check) as gateway,
        ):
            devices: asyncio.Task[None] | None = None
            if publisher is not None:
                gateway.stored_observers.append(publisher.publish_fixes)
                gateway.answer_observers.append(publisher.publish_command_response)
                devices = _start_mqtt_devices(config, store, gateway, stop)
            await _serve_api(config, store, gateway, stop)
            log.info("shutting down")
            if devices is not None:
                await devices

    try:
        run_async(serve(), config.gateway.event_loop)
    finally:
        store.close()
    return 0


@contextlib.asynccontextmanager
async def _bus_publisher(config: Config) -> AsyncIterator[Any]:
    """Yield a started `BusPublisher` when ``[bus] url`` is set, else None."""
    if not config.bus.url:
        yield None
        return
    from postloan.bus import BusPublisher

    publisher = BusPublisher(config.bus)
    await publisher.start()
    try:
        yield publisher
    finally:
        await publisher.close()


async def _serve_api(
    config: Config, store: Store, gateway: Any, stop: asyncio.Event
) -> None:
    """Serve the HTTP API, when enabled, until `stop` is set."""
    if not config.api.enabled:
        await stop.wait()
        return
    from postloan.api.serve import ApiServer, build_context

    context = build_context(config, store, gateway)
    async with ApiServer(context, config.api.host, config.api.port):
        await stop.wait()


def _start_mqtt_devices(
    config: Config, store: Store, gateway: Any, stop: asyncio.Event
) -> asyncio.Task[None]:
    """Serve MQTT trackers beside the TCP listeners until `stop` is set."""
    from postloan.bus.uplink import MqttDevices

    devices = MqttDevices(config, store, gateway.writer.submit)
    return asyncio.create_task(devices.run(stop), name="bus.devices")


def run_simulation(
    *,
    paths: Sequence[str],
    protocol: str,
    host: str,
    port: int | None,
    speedup: float | None,
    devices: int,
) -> int:
    """Replay trajectories against a running gateway and print one JSON line each."""
    from postloan.simulators import load_trajectories, replay, vendored_trajectories

    files = [Path(p) for p in paths] or vendored_trajectories()
    trajectories = [t for path in files for t in load_trajectories(path)]
    if devices:
        trajectories = trajectories[:devices]
    default_ports = {"gt06": 5023, "jt808": 5015}
    reports = run_async(
        replay(
            trajectories,
            protocol=protocol,
            host=host,
            port=port or default_ports[protocol],
            speedup=speedup,
        )
    )
    failed = False
    for report in reports:
        failed = (
            failed or report.acked != len(report.acked_points) or bool(report.errors)
        )
        print(
            json.dumps(
                {
                    "device_id": report.device_id,
                    "vehicle_id": report.vehicle_id,
                    "protocol": report.protocol,
                    "sent": report.sent,
                    "acked": report.acked,
                    "errors": report.errors[:3],
                }
            )
        )
    return 1 if failed else 0


def _fresh_demo_store(url: str) -> Store:
    if url == DEMO_STORE_URL:
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
    store = open_store(url)
    store.migrate()
    return store


def run_demo(config: Config, *, store_url: str | None, paths: Sequence[str]) -> int:
    """Replay real trajectories as GT06 and JT808 devices through one gateway.

    The gateway listens on free ports of 127.0.0.1, each trajectory is replayed
    once per protocol, and every stored track is compared with the points that
    were sent. Exit status 0 means every track matched.
    """
    from postloan.data import boundaries_file
    from postloan.simulators import load_trajectories, vendored_trajectories

    files = [Path(p) for p in paths] or vendored_trajectories()
    trajectories = [t for path in files for t in load_trajectories(path)]
    fence_file = config.geofence.file or str(boundaries_file())
    # The vendored municipality polygons are named by their "Concelho" property.
    id_property = config.geofence.id_property if config.geofence.file else "Concelho"
    demo_config = replace(
        config,
        gateway=replace(
            config.gateway, host="127.0.0.1", gt06_port=0, jt808_port=0, nmea_port=-1
        ),
        geofence=replace(config.geofence, file=fence_file, id_property=id_property),
    )
    store = _fresh_demo_store(store_url or DEMO_STORE_URL)
    try:
        return run_async(
            _demo(demo_config, store, trajectories), config.gateway.event_loop
        )
    finally:
        store.close()


async def _demo(config: Config, store: Store, trajectories: Sequence[Any]) -> int:
    from postloan.gateway import Gateway
    from postloan.simulators import replay
    from postloan.verify import compare_track

    points = sum(len(t.points) for t in trajectories)
    print(
        f"replaying {len(trajectories)} real trajectories ({points} points) "
        "as GT06 and as JT808 devices",
        file=sys.stderr,
    )
    started = time.perf_counter()
    async with Gateway(config, store, fence_check=fence_checker(config)) as gateway:
        runs = [
            replay(trajectories, protocol=protocol, host="127.0.0.1", port=port)
            for protocol, port in (
                ("gt06", gateway.ports["gt06"]),
                ("jt808", gateway.ports["jt808"]),
            )
        ]
        results = await asyncio.gather(*runs)
        await gateway.writer.flush()
        stats = gateway.stats
    elapsed = time.perf_counter() - started
    by_vehicle = {t.vehicle_id: t for t in trajectories}
    comparisons = []
    for report in (r for reports in results for r in reports):
        stored = await asyncio.to_thread(store.track, report.device_id)
        trajectory = by_vehicle[report.vehicle_id]
        comparisons.append(
            compare_track(report.device_id, report.protocol, trajectory.points, stored)
        )
    return _print_summary(store, comparisons, stats.fence_events, elapsed)


def _print_summary(
    store: Store, comparisons: Sequence[Any], fence_events: int, elapsed: float
) -> int:
    bad = [c for c in comparisons if not c.ok]
    total = store.count_fixes()
    events = store.fence_events()
    devices = len(store.device_ids())
    for protocol in ("gt06", "jt808"):
        mine = [c for c in comparisons if c.protocol == protocol]
        matched = sum(1 for c in mine if c.ok)
        stored = sum(c.stored for c in mine)
        print(
            f"{protocol:5}: {len(mine)} devices, {stored} fixes stored, "
            f"{matched}/{len(mine)} tracks equal to their trajectory"
        )
    print(
        f"total: {devices} devices, {total} fixes stored, {len(events)} fence events, "
        f"{total / elapsed:.0f} fixes/s over {elapsed:.1f} s"
    )
    for comparison in bad[:10]:
        print(
            f"MISMATCH {comparison.device_id} ({comparison.protocol}):", file=sys.stderr
        )
        for line in comparison.mismatches[:5]:
            print(f"  {line}", file=sys.stderr)
    return 1 if bad else 0
