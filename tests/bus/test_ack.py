"""Workers acknowledge a message only after handling it (private mosquitto).

A message the worker received but did not handle stays unacknowledged in its
persistent session, and the broker sends it again when the worker's session
reconnects. So a worker killed mid-stream and restarted with the same index
stores every fix once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from postloan.bus import BusPublisher
from postloan.bus.worker import StoreConsumer, consume
from postloan.config import BusConfig
from postloan.model import Fix
from postloan.store import Store, open_store

if TYPE_CHECKING:
    from tests.bus.conftest import PrivateBroker

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


def _fixes(count: int, devices: int) -> list[Fix]:
    return [
        Fix(
            f"86100{i % devices:010d}",
            START + timedelta(seconds=i),
            41.15 + i * 1e-6,
            -8.61,
            speed_kmh=30.0,
        )
        for i in range(count)
    ]


def _sqlite(path: Path) -> Store:
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    return store


class _Failing:
    """A consumer whose store is down: it counts calls and raises."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle(self, fixes: Sequence[Fix]) -> None:
        self.calls += 1
        raise OSError("store unavailable")


async def _until(check: object, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _redeliver(config: BusConfig, fixes: list[Fix], store: Store) -> int:
    publisher = BusPublisher(config)
    stop = asyncio.Event()
    failing = _Failing()
    first = asyncio.create_task(consume(config, "store", failing, stop))
    await asyncio.sleep(0.5)
    await publisher.start()
    try:
        publisher.publish_fixes(fixes)
        assert await publisher.flush(30.0)
        await _until(lambda: failing.calls >= 2, 30.0, "a retried batch")
        # The first worker dies while the batch is unacknowledged.
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        second = StoreConsumer(store)
        worker = asyncio.create_task(consume(config, "store", second, stop))
        try:
            await _until(lambda: store.count_fixes() >= len(fixes), 30.0, "redelivery")
        finally:
            stop.set()
            await asyncio.wait_for(worker, 10)
    finally:
        await publisher.close()
    return failing.calls


def test_unhandled_messages_redelivered_on_reconnect(
    tmp_path: Path, private_broker: PrivateBroker
) -> None:
    config = BusConfig(
        url=private_broker.url,
        client_id="ack-test",
        queue_dir=str(tmp_path / "queue"),
        retry_max_s=0.2,
    )
    fixes = _fixes(300, 7)
    store = _sqlite(tmp_path / "worker.db")

    calls = asyncio.run(_redeliver(config, fixes, store))

    assert calls >= 2
    assert store.count_fixes() == len(fixes)
    for device_id in {fix.device_id for fix in fixes}:
        expected = [fix.time for fix in fixes if fix.device_id == device_id]
        assert [fix.time for fix in store.track(device_id)] == expected


def _worker_config(folder: Path, broker_url: str) -> Path:
    path = folder / "worker.toml"
    path.write_text(
        "[store]\n"
        f'url = "sqlite:///{folder / "worker.db"}"\n'
        f'spool_dir = "{folder / "spool"}"\n'
        "[bus]\n"
        f'url = "{broker_url}"\n'
        'client_id = "kill-test"\n'
        'shared_group = "kill-test"\n'
        "session_expiry_s = 3600\n"
        "retry_max_s = 0.5\n"
    )
    return path


class _Worker:
    """A ``postloan worker store`` process with its log file."""

    def __init__(self, folder: Path, config: Path, name: str) -> None:
        self.log = folder / f"{name}.log"
        with self.log.open("wb") as handle:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "postloan.bus.cli",
                    "--config",
                    str(config),
                    "worker",
                    "store",
                    "--index",
                    "0",
                ],
                cwd=folder,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    def wait_subscribed(self) -> None:
        deadline = time.monotonic() + 60
        while "subscribed to partitions" not in self.log.read_text(errors="replace"):
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"{self.log.name} never subscribed"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@pytest.fixture
def workers() -> Iterator[list[_Worker]]:
    started: list[_Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def _count(path: Path) -> int:
    store = open_store(f"sqlite:///{path}")
    try:
        return store.count_fixes()
    finally:
        store.close()


async def _publish_paced(
    config: BusConfig, fixes: list[Fix], on_progress: object
) -> BusPublisher:
    publisher = BusPublisher(config)
    await publisher.start()
    for first in range(0, len(fixes), 250):
        publisher.publish_fixes(fixes[first : first + 250])
        await asyncio.sleep(0.05)
        await asyncio.to_thread(on_progress)  # type: ignore[arg-type]
    assert await publisher.flush(60.0)
    await publisher.close()
    return publisher


def test_killed_worker_loses_no_fix(
    tmp_path: Path, private_broker: PrivateBroker, workers: list[_Worker]
) -> None:
    config_path = _worker_config(tmp_path, private_broker.url)
    database = tmp_path / "worker.db"
    _sqlite(database).close()
    first = _Worker(tmp_path, config_path, "worker-1")
    workers.append(first)
    first.wait_subscribed()
    fixes = _fixes(12_000, 40)
    killed_at: list[int] = []

    def kill_once_busy() -> None:
        if killed_at:
            return
        stored = _count(database)
        if stored >= 1_000:
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait(timeout=10)
            killed_at.append(stored)

    config = BusConfig(
        url=private_broker.url,
        client_id="kill-test-gateway",
        queue_dir=str(tmp_path / "queue"),
    )
    publisher = asyncio.run(_publish_paced(config, fixes, kill_once_busy))
    assert killed_at, "the worker stored under 1000 fixes during the whole stream"
    assert killed_at[0] < len(fixes)
    second = _Worker(tmp_path, config_path, "worker-2")
    workers.append(second)
    second.wait_subscribed()
    deadline = time.monotonic() + 60
    while _count(database) < len(fixes) and time.monotonic() < deadline:
        time.sleep(0.2)
    second.stop()

    assert publisher.stats.fixes_published == len(fixes)
    store = open_store(f"sqlite:///{database}")
    assert store.count_fixes() == len(fixes)
    for device_id in sorted({fix.device_id for fix in fixes}):
        expected = [fix.time for fix in fixes if fix.device_id == device_id]
        assert [fix.time for fix in store.track(device_id)] == expected
    store.close()
