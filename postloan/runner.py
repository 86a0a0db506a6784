"""Process entry points: the gateway service, the simulator and the demo."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast

from postloan.config import Config
from postloan.model import FenceEvent, Fix
from postloan.store import Store, open_store, storage_layout

log = logging.getLogger(__name__)

T = TypeVar("T")

DEMO_STORE_URL = "sqlite:///var/demo.db"
# Maximum wait between two tries at migrating a store whose database is down.
MIGRATE_RETRY_MAX_S = 30.0
_UNAVAILABLE_LOG_INTERVAL_S = 30.0


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
    """Serve trackers until SIGINT or SIGTERM, then drain the writer and exit.

    When the database cannot be reached at start, the gateway serves anyway:
    fixes go to the spool and are acknowledged from there, the migration is
    retried in the background, and the spool is drained once it succeeds.
    """
    from postloan.gateway import Gateway

    store = open_store(
        config.store.url, migrate=False, layout=storage_layout(config.store)
    )
    try:
        migrated = _migrate_at_start(store)
    except BaseException:
        store.close()
        raise

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        fence_check = fence_checker(config) if "fence" in config.bus.roles else None
        gateway = Gateway(config, store, fence_check=fence_check)
        migrating: asyncio.Task[None] | None = None
        if not migrated:
            gateway.writer.hold_store()
            migrating = asyncio.create_task(
                _release_when_migrated(store, gateway.writer, stop),
                name="gateway[store].migrate",
            )
        async with (
            _local_roles(config, store) as roles,
            _bus_publisher(config) as publisher,
            gateway,
        ):
            for role in roles:
                gateway.record_observers.append(role.observe)
            devices: asyncio.Task[None] | None = None
            if publisher is not None:
                gateway.record_observers.append(publisher.publish_records)
                gateway.answer_observers.append(publisher.publish_command_response)
                devices = _start_mqtt_devices(config, store, gateway, stop)
            await _serve_api(config, store, gateway, stop)
            log.info("shutting down")
            if migrating is not None:
                migrating.cancel()
                await asyncio.gather(migrating, return_exceptions=True)
            if devices is not None:
                await devices

    try:
        run_async(serve(), config.gateway.event_loop)
    finally:
        store.close()
    return 0


def _migrate_at_start(store: Store) -> bool:
    """Migrate the store; return False if its database cannot be reached now.

    Any other failure (a role without the right to create tables, say)
    raises, as a misconfiguration should stop the process at once.
    """
    try:
        store.migrate()
    except Exception as exc:
        if not store.is_unavailable(exc):
            raise
        log.warning(
            "store unavailable at start (%s); serving trackers anyway, with "
            "their fixes spooled and acknowledged, until the schema migration "
            "succeeds (retried with back-off up to %.0f s)",
            _one_line(exc),
            MIGRATE_RETRY_MAX_S,
        )
        return False
    return True


async def migrate_when_available(
    store: Store, stop: asyncio.Event, *, failed_before: int = 0
) -> bool:
    """Retry `store.migrate()` with capped back-off until it succeeds or `stop`.

    Return True once migrated, False if `stop` was set first. `failed_before`
    counts tries the caller already made and logged; the first retry then
    waits. An unavailable database is logged once, when the first try fails,
    and its return once. Any other error of the very first try raises,
    because it means a misconfiguration. Later such errors are logged at each
    try, which is at most every ``MIGRATE_RETRY_MAX_S`` seconds once the
    back-off is capped.
    """
    failures = failed_before
    while not stop.is_set():
        if failures:
            delay = min(MIGRATE_RETRY_MAX_S, 0.25 * 2.0**failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * (0.5 + random.random() / 2))
            if stop.is_set():
                break
        try:
            await asyncio.to_thread(store.migrate)
        except Exception as exc:
            if not failures and not store.is_unavailable(exc):
                raise
            failures += 1
            if not store.is_unavailable(exc):
                log.error("schema migration failed (try %d): %s", failures, exc)
            elif failures == 1:
                log.warning(
                    "store unavailable, waiting for it to migrate the schema: %s",
                    _one_line(exc),
                )
            else:
                log.debug("store still unavailable (try %d): %s", failures, exc)
            continue
        if failures:
            log.info("store reachable again: schema migrated after %d tries", failures)
        return True
    return False


async def _release_when_migrated(
    store: Store, writer: Any, stop: asyncio.Event
) -> None:
    if await migrate_when_available(store, stop, failed_before=1):
        log.info("writing fixes to the store again; spooled ones are drained first")
        writer.release_store()


def _one_line(error: BaseException) -> str:
    """Return the first line of an error's text (libpq puts hints below it)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.asynccontextmanager
async def _local_roles(config: Config, store: Store) -> AsyncIterator[list[Any]]:
    """Yield the started `LocalRole` of each ``[bus] roles`` entry run here.

    Only "risk" needs one: the gateway's writer is the store role, and its
    fence check is the fence role. They stop after the gateway has flushed.
    """
    roles: list[Any] = []
    if "risk" in config.bus.roles:
        from postloan.bus.local import LocalRole
        from postloan.bus.risk import build_risk_consumer

        roles.append(LocalRole("risk", build_risk_consumer(config, store)))
    for role in roles:
        role.start()
    try:
        yield roles
    finally:
        for role in roles:
            await role.close()


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
    server = ApiServer(context, config.api.host, config.api.port)
    _answer_503_while_store_unavailable(server.server.config.app, store)
    async with server:
        await stop.wait()


def _answer_503_while_store_unavailable(app: Any, store: Store) -> None:
    """Make requests that need an unreachable database return 503, not 500.

    The client may retry after ``Retry-After`` seconds. A warning is logged
    at most once per ``_UNAVAILABLE_LOG_INTERVAL_S``, not once per request.
    """
    import psycopg
    from fastapi import Request
    from fastapi.responses import JSONResponse

    last_logged = [-_UNAVAILABLE_LOG_INTERVAL_S]

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        if not store.is_unavailable(exc):
            raise exc
        now = time.monotonic()
        if now - last_logged[0] >= _UNAVAILABLE_LOG_INTERVAL_S:
            last_logged[0] = now
            log.warning(
                "%s %s returned 503 because the store is unavailable: %s",
                request.method,
                request.url.path,
                _one_line(exc),
            )
        return JSONResponse(
            {"error": "the store is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(psycopg.OperationalError, unavailable)


def _start_mqtt_devices(
    config: Config, store: Store, gateway: Any, stop: asyncio.Event
) -> asyncio.Task[None]:
    """Serve MQTT trackers beside the TCP listeners until `stop` is set."""
    from postloan.bus.uplink import MqttDevices

    deferring = _DeferringDeviceStore(store, gateway, asyncio.get_running_loop())
    devices = MqttDevices(
        config,
        cast(Store, deferring),
        gateway.writer.submit,
        dropped=gateway.stats.dropped,
    )
    return asyncio.create_task(
        _run_until_stopped(devices.run, store, stop), name="bus.devices"
    )


class _DeferringDeviceStore:
    """The store as the MQTT device service uses it, with outage-proof writes.

    A device touch or command update that fails because the database is
    unavailable, or that comes while the schema is not migrated, is handed to
    `Gateway.defer_store_write` and retried with those of TCP devices.
    Raising instead would end the MQTT session, and with it the messages the
    client library already acknowledged but the service had not handled yet.
    Every other attribute is the store's own.
    """

    def __init__(
        self, store: Store, gateway: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def touch_device(self, device_id: str, protocol: str, *, seen_at: Any) -> None:
        touch = functools.partial(
            self._store.touch_device, device_id, protocol, seen_at=seen_at
        )
        self._write(("touch", protocol, device_id), touch, keep_first=True)

    def update_command(
        self, command_id: int, status: str, *, at: Any, response: Any = None
    ) -> None:
        update = functools.partial(
            self._store.update_command, command_id, status, at=at, response=response
        )
        self._write(("command", command_id), update)

    def _write(
        self, key: Any, write: Callable[[], object], *, keep_first: bool = False
    ) -> None:
        """Run `write` here (a worker thread) or defer it to the gateway."""
        if self._gateway.writer.store_held:
            reason = "its schema is not migrated yet"
        else:
            try:
                write()
                return
            except Exception as exc:
                if not self._store.is_unavailable(exc):
                    raise
                reason = _one_line(exc)
        self._loop.call_soon_threadsafe(
            functools.partial(
                self._gateway.defer_store_write,
                key,
                write,
                reason,
                keep_first=keep_first,
            )
        )


async def _run_until_stopped(
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    store: Store,
    stop: asyncio.Event,
) -> None:
    """Run `run(stop)` again, after a capped back-off, whenever it raises.

    `MqttDevices.run` reconnects to the broker itself, but a store error
    raised while it handles a received message (the database down) escapes
    it. Such errors must not end the MQTT device service. A store outage is
    logged once, other errors at each restart.
    """
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await run(stop)
        except Exception as exc:
            if time.monotonic() - started > MIGRATE_RETRY_MAX_S:
                failures = 0  # it ran for a while: a new outage
            failures += 1
            if not store.is_unavailable(exc):
                log.error("MQTT device service failed (%d in a row): %r", failures, exc)
            elif failures == 1:
                log.warning(
                    "MQTT device service paused, store unavailable: %s", _one_line(exc)
                )
            delay = min(MIGRATE_RETRY_MAX_S, 0.25 * 2.0**failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * (0.5 + random.random() / 2))
        else:
            return


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
