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
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import pytest

from postloan.api import hash_token
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
API_TOKEN = "crash-recovery-analyst"


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
    """``postloan run`` in a subprocess, on fixed ports so devices can reconnect.

    The API listens on a free port of 127.0.0.1 and accepts `API_TOKEN`.
    """

    def __init__(self, tmp_path: Path, store_url: str, extra_config: str = "") -> None:
        self.gt06_port, self.jt808_port = free_port(), free_port()
        self.api_port = free_port()
        self.spool_dir = tmp_path / "spool"
        self.log_path = tmp_path / "gateway.log"
        self.config_path = tmp_path / "config.toml"
        tokens = tmp_path / "tokens.toml"
        tokens.write_text(
            f'[[token]]\nsha256 = "{hash_token(API_TOKEN)}"\n'
            'user = "tester"\nrole = "analyst"\n'
        )
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

[api]
host = "127.0.0.1"
port = {self.api_port}
tokens_file = "{tokens}"
ledger_dir = "{tmp_path / "ledger"}"
state_dir = "{tmp_path / "risk"}"
audit_file = "{tmp_path / "audit.jsonl"}"

[logging]
level = "INFO"
{extra_config}
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

    async def api_get(self, path: str) -> tuple[int, str]:
        """GET `path` from the gateway's API; return the status and the body."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.api_port)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {API_TOKEN}\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        response = await reader.read()
        writer.close()
        head, _, body = response.decode(errors="replace").partition("\r\n\r\n")
        return int(head.split()[1]), body

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


@pytest.mark.postgres
@pytest.mark.timeout(150)
def test_gateway_started_during_postgres_outage(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    pg_cluster.stop()
    gateway = GatewayProcess(tmp_path, pg_cluster.dsn)
    sample = trajectories()
    while_down, after = sample[::2], sample[1::2]
    expected = 2 * sum(len(t.points) for t in sample)

    async def scenario() -> tuple[list[DeviceReport], list[DeviceReport], int]:
        gateway.start()
        await gateway.wait_listening()
        # Every fix of these devices is acknowledged before the database runs.
        first = await asyncio.wait_for(replay_all(gateway, while_down), 60)
        spooled.append(sum(p.stat().st_size for p in gateway.spool_dir.glob("*.seg")))
        api_while_down.append(await gateway.api_get("/devices"))
        await asyncio.to_thread(pg_cluster.start)
        # These arrive while the gateway migrates and drains the spool.
        second = await asyncio.wait_for(replay_all(gateway, after), 60)
        count = await wait_for_count(_postgres_reader(pg_cluster.dsn), expected, 60)
        api_after.append(await gateway.api_get("/devices"))
        return first, second, count

    spooled: list[int] = []
    api_while_down: list[tuple[int, str]] = []
    api_after: list[tuple[int, str]] = []
    try:
        first, second, count = asyncio.run(scenario())
        # The command poll writes the logins kept during the outage each second.
        devices = asyncio.run(
            wait_for_devices(pg_cluster.dsn, {r.device_id for r in first}, 30)
        )
    finally:
        gateway.stop()

    log = gateway.log()
    for report in first:
        points = len(
            next(t for t in while_down if t.vehicle_id == report.vehicle_id).points
        )
        assert report.acked == points, (
            report.device_id,
            report.errors[:5],
            log[-3000:],
        )
    assert spooled[0] > 0, gateway.log_tail()
    assert api_while_down[0][0] == 503, api_while_down
    assert "unavailable" in api_while_down[0][1]
    assert api_after[0][0] == 200, api_after
    assert count == expected, gateway.log_tail()
    assert "store unavailable at start" in log
    assert "schema migrated after" in log
    assert "spool drained into the store" in log
    assert "Traceback" not in log, log
    assert {r.device_id for r in first} <= devices
    assert list(gateway.spool_dir.glob("*.seg")) == []
    store = open_store(pg_cluster.dsn, migrate=False)
    try:
        check_every_point_stored_once([*first, *second], sample, store, log[-3000:])
    finally:
        store.close()


async def wait_for_devices(dsn: str, expected: set[str], timeout: float) -> set[str]:
    """Poll the devices table until it lists `expected`; return what it lists last."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        store = open_store(dsn, migrate=False)
        try:
            seen = {d.device_id for d in await asyncio.to_thread(store.devices)}
        finally:
            store.close()
        if expected <= seen:
            break
        await asyncio.sleep(0.2)
    return seen


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start a mosquitto of this test alone on a free port; return it and the port."""
    folder.mkdir()
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return broker, port
        time.sleep(0.05)
    broker.kill()
    raise AssertionError(f"mosquitto did not listen on port {port} in 10 s")


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_mqtt_devices_served_during_postgres_outage(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    pg_cluster.stop()
    broker, broker_port = start_mosquitto(tmp_path / "broker")
    gateway = GatewayProcess(
        tmp_path,
        pg_cluster.dsn,
        f"""
[bus]
url = "mqtt://127.0.0.1:{broker_port}"
client_id = "crash-recovery-{free_port()}"
queue_dir = "{tmp_path / "bus-queue"}"
""",
    )
    device_id = "mqtt-outage-1"
    start = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    positions = [
        {
            "time": (start + timedelta(seconds=10 * i)).isoformat(),
            "lat": 41.15,
            "lon": -8.61 + i * 1e-4,
            "speed_kmh": 30.0,
        }
        for i in range(20)
    ]

    async def scenario() -> tuple[int, int]:
        gateway.start()
        await gateway.wait_listening()
        async with aiomqtt.Client("127.0.0.1", broker_port) as tracker:
            await asyncio.sleep(1.0)  # the gateway subscribes after it listens
            for position in positions:
                await tracker.publish(
                    f"postloan/v1/uplink/{device_id}", json.dumps(position), qos=1
                )
        spool_deadline = time.monotonic() + 20
        spooled = 0
        while spooled == 0 and time.monotonic() < spool_deadline:
            await asyncio.sleep(0.2)
            spooled = sum(p.stat().st_size for p in gateway.spool_dir.glob("*.seg"))
        await asyncio.to_thread(pg_cluster.start)
        count = await wait_for_device_count(pg_cluster.dsn, device_id, len(positions))
        return spooled, count

    try:
        spooled, count = asyncio.run(scenario())
        devices = asyncio.run(wait_for_devices(pg_cluster.dsn, {device_id}, 30))
    finally:
        gateway.stop()
        broker.terminate()
        broker.wait(timeout=10)

    log = gateway.log()
    assert spooled > 0, gateway.log_tail()
    assert count == len(positions), gateway.log_tail()
    assert device_id in devices, gateway.log_tail()
    assert "MQTT device service" not in log, log
    assert "Traceback" not in log, log


async def wait_for_device_count(dsn: str, device_id: str, expected: int) -> int:
    """Poll until the device has `expected` fixes stored, for up to 60 s."""
    deadline = time.monotonic() + 60
    count = -1
    while time.monotonic() < deadline:
        store = open_store(dsn, migrate=False)
        try:
            count = await asyncio.to_thread(store.count_fixes, device_id)
        except Exception:  # the database may still be starting
            count = -1
        finally:
            store.close()
        if count >= expected:
            break
        await asyncio.sleep(0.2)
    return count


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_worker_started_during_postgres_outage(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    pg_cluster.stop()
    broker, broker_port = start_mosquitto(tmp_path / "broker")
    config_path = tmp_path / "worker.toml"
    config_path.write_text(
        f"""
[store]
url = "{pg_cluster.dsn}"

[bus]
url = "mqtt://127.0.0.1:{broker_port}"
client_id = "crash-recovery-worker-{free_port()}"
queue_dir = "{tmp_path / "bus-queue"}"

[logging]
level = "INFO"
"""
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "postloan.cli",
                "--config",
                str(config_path),
                "worker",
                "store",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        waiting = wait_for_log(log_path, "waiting for it to migrate", 30)
        alive_while_down = worker.poll() is None
        pg_cluster.start()
        migrated = wait_for_log(log_path, "schema migrated after", 60)
        worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        broker.terminate()
        broker.wait(timeout=10)

    log = log_path.read_text(errors="replace")
    assert waiting, log
    assert alive_while_down, log
    assert migrated, log
    assert exit_code == 0, log
    assert "Traceback" not in log, log
    store = open_store(pg_cluster.dsn, migrate=False)
    try:
        assert store.count_fixes() == 0
    finally:
        store.close()


def wait_for_log(path: Path, text: str, timeout: float) -> bool:
    """Wait until the log file at `path` contains `text`; False after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False
