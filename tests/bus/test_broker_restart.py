"""A broker restart mid-replay loses and doubles no fix or event (private mosquitto).

The worker subscribes as configured by default, without a shared group:
Mosquitto 2.0.11 does not restore shared subscriptions from its persistence
file (docs/mqtt.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from postloan.bus import BusPublisher
from postloan.bus.worker import LastSeen, StoreConsumer, consume
from postloan.config import BusConfig, Config, GatewayConfig
from postloan.gateway import Gateway
from postloan.model import DeviceEvent, Fix
from postloan.simulators import load_trajectories, replay, vendored_trajectories
from postloan.store import Store, open_store

if TYPE_CHECKING:
    from tests.bus.conftest import PrivateBroker


class _Both:
    """Store every fix and event and keep each device's newest fix."""

    def __init__(self, store: Store) -> None:
        self.store = StoreConsumer(store)
        self.last_seen = LastSeen()
        self.latest: dict[str, Fix] = {}
        self.received = 0

    async def handle(self, fixes: list[Fix]) -> None:
        self.received += len(fixes)
        await self.store.handle(fixes)
        for fix in self.last_seen.fresh(fixes):
            self.latest[fix.device_id] = fix

    async def handle_events(self, events: list[DeviceEvent]) -> None:
        await self.store.handle_events(events)


async def _restart_when_busy(
    broker: PrivateBroker, publisher: BusPublisher, after: int
) -> None:
    while publisher.stats.fixes_published < after:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(broker.start)


async def _replay(
    config: Config, gateway_store: Store, consumer: _Both, broker: PrivateBroker
) -> tuple[list[str], BusPublisher]:
    stop = asyncio.Event()
    worker = asyncio.create_task(
        consume(config.bus, "store", consumer, stop, client_id="restart-worker")
    )
    await asyncio.sleep(0.5)
    publisher = BusPublisher(config.bus)
    await publisher.start()
    trajectories = [load_trajectories(p)[0] for p in vendored_trajectories()]
    restart = asyncio.create_task(_restart_when_busy(broker, publisher, 200))
    try:
        async with Gateway(config, gateway_store) as gateway:
            gateway.record_observers.append(publisher.publish_records)
            reports = await replay(
                trajectories,
                protocol="gt06",
                host="127.0.0.1",
                port=gateway.ports["gt06"],
            )
            await gateway.writer.flush()
        await asyncio.wait_for(restart, 30)
        assert await publisher.flush(30.0)
        expected = gateway_store.count_fixes()
        events = len(gateway_store.device_events())
        for _ in range(300):
            worker_store = consumer.store.store
            if (
                worker_store.count_fixes() >= expected
                and len(worker_store.device_events()) >= events
            ):
                break
            await asyncio.sleep(0.1)
    finally:
        restart.cancel()
        await publisher.close()
        stop.set()
        await asyncio.wait_for(worker, 10)
    return [r.device_id for r in reports], publisher


def test_broker_restart_loses_no_fix(
    tmp_path: Path, private_broker: PrivateBroker
) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=0, jt808_port=-1, nmea_port=-1
        ),
        bus=BusConfig(
            url=private_broker.url,
            client_id="restart-gateway",
            queue_dir=str(tmp_path / "queue"),
            retry_max_s=0.5,
        ),
    )
    gateway_store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    gateway_store.migrate()
    worker_store = open_store(f"sqlite:///{tmp_path / 'worker.db'}")
    worker_store.migrate()
    consumer = _Both(worker_store)

    devices, publisher = asyncio.run(
        _replay(config, gateway_store, consumer, private_broker)
    )

    assert publisher.stats.connects >= 2
    assert publisher.stats.fixes_dropped == 0
    assert publisher.stats.events_dropped == 0
    assert worker_store.count_fixes() == gateway_store.count_fixes()
    assert gateway_store.device_events()
    assert worker_store.device_events() == gateway_store.device_events()
    for device_id in devices:
        assert worker_store.track(device_id) == gateway_store.track(device_id)
        newest = gateway_store.track(device_id)[-1]
        assert consumer.latest[device_id] == newest
