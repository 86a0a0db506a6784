"""Acknowledged fixes survive a killed gateway and a stopped database.

Simulated GT06 and JT808 trackers replay real trajectories against
``python -m postloan.cli --config X run`` started as a subprocess. While they
send, the test kills the gateway with SIGKILL and restarts it, or stops
PostgreSQL (a throwaway cluster, see `pg_cluster`) and starts it again. The
devices resend whatever was not acknowledged. Afterwards every device must
have seen every point acknowledged, and the store must hold each point once
with the coordinates and time that were sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from postloan.simulators import load_trajectories, replay, vendored_trajectories
from postloan.simulators.replay import DeviceReport
from postloan.simulators.trajectories import Trajectory
from postloan.store import Store, open_store
from postloan.verify import compare_track

if TYPE_CHECKING:
    from conftest import PostgresCluster

REPO = Path(__file__).resolve().parents[1]
# Recorded time runs this much faster than real time: the longest trajectory
# used (42 minutes) takes about 13 s.
SPEEDUP = 200.0
MAX_SPAN_S = 3000


def trajectories() -> list[Trajectory]:
    """Every vendored trajectory that spans under MAX_SPAN_S seconds."""
    found = []
    for path in vendored_trajectories():
        for trajectory in load_trajectories(path):
            span = trajectory.points[-1].time - trajectory.points[0].time
            if span.total_seconds() <= MAX_SPAN_S:
                found.append(trajectory)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class GatewayProcess:
    """``postloan run`` in a subprocess, on fixed ports so devices can reconnect."""

    def __init__(self, tmp_path: Path, store_url: str) -> None:
        self.gt06_port, self.jt808_port = free_port(), free_port()
        self.spool_dir = tmp_path / "spool"
        self.log_path = tmp_path / "gateway.log"
        self.config_path = tmp_path / "config.toml"
        self.config_path.write_text(
            f"""
[gateway]
host = "127.0.0.1"
gt06_port = {self.gt06_port}
jt808_port = {self.jt808_port}
nmea_port = -1

[store]
url = "{store_url}"
batch_size = 100
flush_interval_ms = 10.0
spool_dir = "{self.spool_dir}"
maintenance_interval_s = 0

[logging]
level = "INFO"
"""
        )
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "postloan.cli",
                    "--config",
                    str(self.config_path),
                    "run",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    async def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(f"gateway exited early:\n{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.jt808_port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise AssertionError(
            f"gateway did not listen in {timeout} s:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
            raise AssertionError(
                f"gateway ignored SIGTERM:\n{self.log_tail()}"
            ) from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


async def replay_all(
    gateway: GatewayProcess, sample: list[Trajectory]
) -> list[DeviceReport]:
    settings = {
        "host": "127.0.0.1",
        "speedup": SPEEDUP,
        "ack_timeout": 5.0,
        # Enough retries to outlast a restart; back-off caps at 2 s each.
        "max_reconnects": 60,
    }
    runs = [
        replay(sample, protocol="gt06", port=gateway.gt06_port, **settings),  # type: ignore[arg-type]
        replay(sample, protocol="jt808", port=gateway.jt808_port, **settings),  # type: ignore[arg-type]
    ]
    results = await asyncio.gather(*runs)
    return [report for reports in results for report in reports]


async def wait_for_count(
    read_store: Callable[[], Store], expected: int, timeout: float = 30
) -> int:
    """Poll the store until it contains `expected` fixes; return the last count."""
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        count = await asyncio.to_thread(_count, read_store)
        if count >= expected:
            return count
        await asyncio.sleep(0.2)
    return count


def _count(read_store: Callable[[], Store]) -> int:
    try:
        store = read_store()
    except Exception:  # the database may still be starting
        return -1
    try:
        return store.count_fixes()
    finally:
        store.close()


def check_every_point_stored_once(
    reports: list[DeviceReport], sample: list[Trajectory], store: Store, log: str
) -> None:
    by_vehicle = {trajectory.vehicle_id: trajectory for trajectory in sample}
    expected = 2 * sum(len(t.points) for t in sample)
    assert store.count_fixes() == expected, log
    for report in reports:
        points = by_vehicle[report.vehicle_id].points
        assert report.acked == len(points), (report.device_id, report.errors[:5])
        stored = store.track(report.device_id)
        comparison = compare_track(report.device_id, report.protocol, points, stored)
        assert comparison.ok, comparison.mismatches


async def run_scenario(
    gateway: GatewayProcess,
    sample: list[Trajectory],
    disrupt: Callable[[], Awaitable[None]],
) -> list[DeviceReport]:
    gateway.start()
    await gateway.wait_listening()
    replaying = asyncio.create_task(replay_all(gateway, sample))
    await disrupt()
    return await asyncio.wait_for(replaying, 60)


@pytest.mark.timeout(120)
def test_gateway_killed_and_restarted_loses_no_acked_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tracks.db'}"
    gateway = GatewayProcess(tmp_path, url)
    sample = trajectories()

    async def disrupt() -> None:
        await asyncio.sleep(4)
        gateway.kill()
        await asyncio.sleep(0.5)
        gateway.start()
        await gateway.wait_listening()

    try:
        reports = asyncio.run(run_scenario(gateway, sample, disrupt))
    finally:
        gateway.stop()

    store = open_store(url, migrate=False)
    try:
        check_every_point_stored_once(reports, sample, store, gateway.log_tail())
    finally:
        store.close()
    assert sum(report.reconnects for report in reports) > 0


def _postgres_reader(dsn: str) -> Callable[[], Store]:
    return lambda: open_store(dsn, migrate=False)


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_postgres_outage_loses_no_acked_fix(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    gateway = GatewayProcess(tmp_path, pg_cluster.dsn)
    sample = trajectories()
    expected = 2 * sum(len(t.points) for t in sample)

    async def disrupt() -> None:
        await asyncio.sleep(3)
        await asyncio.to_thread(pg_cluster.stop)
        await asyncio.sleep(4)
        await asyncio.to_thread(pg_cluster.start)

    try:
        reports = asyncio.run(run_scenario(gateway, sample, disrupt))
        count = asyncio.run(wait_for_count(_postgres_reader(pg_cluster.dsn), expected))
    finally:
        gateway.stop()

    log = gateway.log()
    assert count == expected, gateway.log_tail()
    assert "batches go to the spool" in log
    assert "spool drained into the store" in log
    assert list(gateway.spool_dir.glob("*.seg")) == []
    store = open_store(pg_cluster.dsn, migrate=False)
    try:
        check_every_point_stored_once(reports, sample, store, gateway.log_tail())
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_gateway_killed_during_outage_keeps_spooled_fixes(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    gateway = GatewayProcess(tmp_path, pg_cluster.dsn)
    sample = trajectories()
    expected = 2 * sum(len(t.points) for t in sample)
    spooled_at_kill: list[int] = []

    async def disrupt() -> None:
        await asyncio.sleep(3)
        await asyncio.to_thread(pg_cluster.stop)
        await asyncio.sleep(3)
        spooled_at_kill.append(
            sum(p.stat().st_size for p in gateway.spool_dir.glob("*.seg"))
        )
        gateway.kill()
        await asyncio.to_thread(pg_cluster.start)
        gateway.start()
        await gateway.wait_listening()

    try:
        reports = asyncio.run(run_scenario(gateway, sample, disrupt))
        count = asyncio.run(wait_for_count(_postgres_reader(pg_cluster.dsn), expected))
    finally:
        gateway.stop()

    log = gateway.log()
    assert spooled_at_kill[0] > 0, gateway.log_tail()
    assert "from an earlier run" in log
    assert sum(report.reconnects for report in reports) > 0
    assert count == expected, gateway.log_tail()
    store = open_store(pg_cluster.dsn, migrate=False)
    try:
        check_every_point_stored_once(reports, sample, store, gateway.log_tail())
    finally:
        store.close()
    assert os.listdir(gateway.spool_dir) == ["LOCK"]
