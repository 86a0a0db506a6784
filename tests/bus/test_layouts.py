"""The replay gives the same tracks and fence events in both process layouts.

Single process: one ``postloan run`` with ``[bus] url`` empty. Scaled out:
two ``postloan run`` gateways publish to the shared Mosquitto on
127.0.0.1:1883, and two ``postloan worker`` processes of each role consume
(store and fence workers write to SQLite files of their own). GT06 devices
go to the first gateway and JT808 devices to the second. The scaled layout
runs twice: workers subscribed to their own partitions (the default), and
the same through MQTT v5 shared subscriptions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from postloan.data import boundaries_file
from postloan.model import FenceEvent, Fix
from postloan.simulators import load_trajectories, replay, vendored_trajectories
from postloan.simulators.trajectories import Trajectory
from postloan.store import open_store

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(
    folder: Path, bus_url: str, roles: list[str], *, shared: bool = False
) -> Path:
    path = folder / "config.toml"
    roles_text = ", ".join(f'"{role}"' for role in roles)
    path.write_text(
        "[gateway]\n"
        'host = "127.0.0.1"\n'
        "nmea_port = -1\n"
        "[api]\n"
        "enabled = false\n"
        "[geofence]\n"
        f'file = "{boundaries_file()}"\n'
        'id_property = "Concelho"\n'
        "[bus]\n"
        f'url = "{bus_url}"\n'
        f"roles = [{roles_text}]\n"
        "worker_count = 2\n"
        f'shared_group = "test-{folder.name}"\n'
        "session_expiry_s = 0\n"
        f"shared_subscriptions = {'true' if shared else 'false'}\n"
    )
    return path


def _sample() -> list[Trajectory]:
    return [t for p in vendored_trajectories() for t in load_trajectories(p)[:2]]


@contextmanager
def _processes() -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        yield started
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _start(
    started: list[tuple[subprocess.Popen[bytes], Path]],
    folder: Path,
    name: str,
    args: list[str],
    env: dict[str, str],
) -> Path:
    log = folder / f"{name}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    started.append((process, log))
    return log


def _wait_for_line(log: Path, text: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{log.name} never logged {text!r}"
        time.sleep(0.05)


def _gateway(
    started: list[tuple[subprocess.Popen[bytes], Path]],
    folder: Path,
    config: Path,
    name: str,
) -> tuple[int, int]:
    ports = free_port(), free_port()
    log = _start(
        started,
        folder,
        name,
        ["postloan.cli", "--config", str(config), "run"],
        {
            "POSTLOAN_STORE_URL": f"sqlite:///{folder / name}.db",
            "POSTLOAN_STORE_SPOOL_DIR": str(folder / f"{name}-spool"),
            "POSTLOAN_GATEWAY_GT06_PORT": str(ports[0]),
            "POSTLOAN_GATEWAY_JT808_PORT": str(ports[1]),
            "POSTLOAN_BUS_CLIENT_ID": f"test-{folder.name}-{name}",
            "POSTLOAN_BUS_QUEUE_DIR": str(folder / f"{name}-queue"),
        },
    )
    _wait_for_line(log, "listening for jt808")
    return ports


def _worker(
    started: list[tuple[subprocess.Popen[bytes], Path]],
    folder: Path,
    config: Path,
    role: str,
    index: int,
) -> None:
    name = f"{role}{index}"
    log = _start(
        started,
        folder,
        name,
        ["postloan.bus.cli", "--config", str(config), "worker", role],
        {
            "POSTLOAN_STORE_URL": f"sqlite:///{folder / name}.db",
            "POSTLOAN_BUS_WORKER_INDEX": str(index),
            "POSTLOAN_BUS_CLIENT_ID": f"test-{folder.name}",
        },
    )
    _wait_for_line(log, "subscribed to partitions")


def _replay(
    trajectories: list[Trajectory], gt06_port: int, jt808_port: int
) -> list[str]:
    async def run() -> list[str]:
        results = await asyncio.gather(
            replay(trajectories, protocol="gt06", host="127.0.0.1", port=gt06_port),
            replay(trajectories, protocol="jt808", host="127.0.0.1", port=jt808_port),
        )
        return [r.device_id for reports in results for r in reports]

    return asyncio.run(run())


def _tracks(paths: list[Path], devices: list[str]) -> dict[str, list[Fix]]:
    tracks: dict[str, list[Fix]] = {device: [] for device in devices}
    for path in paths:
        store = open_store(f"sqlite:///{path}")
        for device in devices:
            tracks[device].extend(store.track(device))
        store.close()
    return {
        device: sorted(fixes, key=lambda f: f.time) for device, fixes in tracks.items()
    }


def _fence_events(paths: list[Path]) -> set[FenceEvent]:
    events: set[FenceEvent] = set()
    for path in paths:
        store = open_store(f"sqlite:///{path}")
        events.update(store.fence_events())
        store.close()
    return events


def _count(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        store = open_store(f"sqlite:///{path}")
        total += store.count_fixes()
        store.close()
    return total


def _wait_for_count(paths: list[Path], expected: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while _count(paths) < expected:
        assert time.monotonic() < deadline, f"workers stored < {expected} fixes"
        time.sleep(0.2)


def _single(folder: Path, trajectories: list[Trajectory]) -> list[str]:
    folder.mkdir()
    config = _config(folder, "", ["store", "fence", "risk"])
    with _processes() as started:
        ports = _gateway(started, folder, config, "gateway")
        devices = _replay(trajectories, *ports)
    return devices


def _scaled(
    folder: Path, trajectories: list[Trajectory], bus_url: str, *, shared: bool
) -> list[str]:
    folder.mkdir()
    config = _config(folder, bus_url, ["store", "risk"], shared=shared)
    with _processes() as started:
        for role in ("store", "fence", "risk"):
            for index in (0, 1):
                _worker(started, folder, config, role, index)
        gt06_port, _ = _gateway(started, folder, config, "gateway-a")
        _, jt808_port = _gateway(started, folder, config, "gateway-b")
        devices = _replay(trajectories, gt06_port, jt808_port)
        gateways = [folder / "gateway-a.db", folder / "gateway-b.db"]
        _wait_for_count(gateways, sum(len(t.points) for t in trajectories) * 2)
        workers = [folder / "store0.db", folder / "store1.db"]
        _wait_for_count(workers, _count(gateways))
        time.sleep(1.0)  # fence workers run behind the store workers
    return devices


@pytest.mark.parametrize("shared", [False, True], ids=["partitioned", "shared"])
def test_layouts_store_identical_tracks(
    tmp_path: Path, shared_broker_url: str, shared: bool
) -> None:
    trajectories = _sample()
    single = tmp_path / "single"
    scaled = tmp_path / "scaled"

    devices = _single(single, trajectories)
    scaled_devices = _scaled(scaled, trajectories, shared_broker_url, shared=shared)

    assert sorted(scaled_devices) == sorted(devices)
    expected = _tracks([single / "gateway.db"], devices)
    gateways = _tracks([scaled / "gateway-a.db", scaled / "gateway-b.db"], devices)
    workers = _tracks([scaled / "store0.db", scaled / "store1.db"], devices)
    assert gateways == expected
    assert workers == expected
    fences = _fence_events([scaled / "fence0.db", scaled / "fence1.db"])
    assert fences == _fence_events([single / "gateway.db"])
    assert fences
