"""Gateway to bus to workers, against the shared Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from postloan.bus import BusPublisher
from postloan.bus.worker import StoreConsumer, consume
from postloan.config import BusConfig, Config, GatewayConfig
from postloan.gateway import Gateway
from postloan.model import DeviceEvent
from postloan.simulators import load_trajectories, replay, vendored_trajectories
from postloan.simulators.trajectories import Trajectory
from postloan.store import Store, open_store


def _sample_trajectories() -> list[Trajectory]:
    sample: list[Trajectory] = []
    for path in vendored_trajectories():
        sample.extend(load_trajectories(path)[:2])
    return sample


def _sqlite(path: Path) -> Store:
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    return store


async def _replay_with_workers(
    config: Config, gateway_store: Store, worker_stores: list[Store], run_id: str
) -> list[str]:
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(
            consume(
                replace(config.bus, worker_index=index),
                "store",
                StoreConsumer(store),
                stop,
                client_id=f"test-{run_id}-store-{index}",
                group=f"test-{run_id}",
                session_expiry_s=0,
            )
        )
        for index, store in enumerate(worker_stores)
    ]
    await asyncio.sleep(0.5)  # subscriptions are in place before publishing
    publisher = BusPublisher(config.bus)
    await publisher.start()
    try:
        async with Gateway(config, gateway_store) as gateway:
            gateway.record_observers.append(publisher.publish_records)
            runs = [
                replay(
                    _sample_trajectories(),
                    protocol=protocol,
                    host="127.0.0.1",
                    port=gateway.ports[protocol],
                )
                for protocol in ("gt06", "jt808")
            ]
            reports = await asyncio.gather(*runs)
            await gateway.writer.flush()
        assert await publisher.flush(30.0)
        await _wait_for_count(worker_stores, gateway_store.count_fixes(), 30.0)
        await _wait_for_events(worker_stores, len(gateway_store.device_events()), 30.0)
    finally:
        await publisher.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 10)
    return [r.device_id for rs in reports for r in rs]


async def _wait_for_count(stores: list[Store], expected: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(s.count_fixes() for s in stores) < expected:
        if loop.time() > deadline:
            return
        await asyncio.sleep(0.1)


async def _wait_for_events(stores: list[Store], expected: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(len(s.device_events()) for s in stores) < expected:
        if loop.time() > deadline:
            return
        await asyncio.sleep(0.1)


def test_workers_store_same_tracks_as_gateway(
    tmp_path: Path, shared_broker_url: str, run_id: str
) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=0, jt808_port=0, nmea_port=-1
        ),
        bus=BusConfig(
            url=shared_broker_url,
            client_id=f"test-{run_id}-gateway",
            queue_dir=str(tmp_path / "queue"),
            worker_count=2,
        ),
    )
    gateway_store = _sqlite(tmp_path / "gateway.db")
    worker_stores = [_sqlite(tmp_path / f"worker{i}.db") for i in range(2)]

    devices = asyncio.run(
        _replay_with_workers(config, gateway_store, worker_stores, run_id)
    )

    assert devices
    for device_id in devices:
        expected = gateway_store.track(device_id)
        stored = [s.track(device_id) for s in worker_stores]
        holders = [track for track in stored if track]
        assert len(holders) == 1, f"{device_id} stored by {len(holders)} workers"
        assert holders[0] == expected
    gateway_events = gateway_store.device_events()
    worker_events = [e for s in worker_stores for e in s.device_events()]
    assert gateway_events
    assert sorted(worker_events, key=_event_key) == sorted(
        gateway_events, key=_event_key
    )


def _event_key(event: DeviceEvent) -> tuple[str, datetime, str]:
    return event.device_id, event.time, event.kind
