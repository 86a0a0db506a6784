"""End-to-end throughput: simulated trackers -> gateway -> store.

Replays real Porto taxi trajectories as N concurrent GT06 devices (default
1,000; the 244 vendored taxis are reused with distinct IMEIs) from a child
process against, in turn:

1. a bare asyncio server that only splits GT06 frames by their length byte
   and sends the generic ack, the ceiling for this machine's sockets and this
   simulator;
2. the postloan gateway with its store (SQLite by default, or --store URL),
   which decodes, checks CRCs, stores in batches and acks after the store.

Both runs use the same devices and frames in the same invocation, so their
ratio is comparable across machines. Usage:

    python bench/bench_e2e.py [--devices 1000] [--points 30] [--store URL]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import tempfile
import time
from dataclasses import replace
from typing import Any, cast

from postloan.config import Config, GatewayConfig
from postloan.gateway import Gateway
from postloan.protocols import gt06
from postloan.runner import run_async
from postloan.simulators import load_trajectories, replay, vendored_trajectories
from postloan.simulators.trajectories import Trajectory
from postloan.store import open_store


def _trajectories(devices: int, points: int) -> list[Trajectory]:
    porto = next(p for p in vendored_trajectories() if "porto" in str(p))
    source = [t for t in load_trajectories(porto) if len(t.points) >= 2]
    chosen: list[Trajectory] = []
    while len(chosen) < devices:
        for trajectory in source:
            if len(chosen) == devices:
                break
            copy = f"{trajectory.vehicle_id}-{len(chosen) // len(source)}"
            chosen.append(
                replace(trajectory, vehicle_id=copy, points=trajectory.points[:points])
            )
    return chosen


def _client(port: int, devices: int, points: int, result: Any) -> None:
    trajectories = _trajectories(devices, points)

    async def main() -> tuple[int, float]:
        started = time.perf_counter()
        reports = await replay(
            trajectories,
            protocol="gt06",
            host="127.0.0.1",
            port=port,
            concurrency=devices,
            ack_timeout=60.0,
        )
        return sum(r.acked for r in reports), time.perf_counter() - started

    result.put(run_async(main()))


def _drive(port: int, devices: int, points: int) -> tuple[int, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_client, args=(port, devices, points, queue))
    child.start()
    acked, elapsed = queue.get(timeout=900)
    child.join(timeout=60)
    return int(acked), float(elapsed)


class _BareGt06(asyncio.Protocol):
    """Split frames by the length byte and ack each; nothing else."""

    frames = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 5:
            size = self.buffer[2] + 5
            if len(self.buffer) < size:
                return
            frame = bytes(self.buffer[:size])
            del self.buffer[:size]
            _BareGt06.frames += 1
            serial = int.from_bytes(frame[-6:-4], "big")
            self.transport.write(gt06.ack(frame[3], serial))


async def _bare(devices: int, points: int) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_BareGt06, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    acked, elapsed = await asyncio.to_thread(_drive, port, devices, points)
    server.close()
    return acked, elapsed


async def _gateway(store_url: str, devices: int, points: int) -> tuple[int, float, int]:
    store = open_store(store_url)
    store.migrate()
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=0, jt808_port=-1, nmea_port=-1
        )
    )
    async with Gateway(config, store) as gateway:
        acked, elapsed = await asyncio.to_thread(
            _drive, gateway.ports["gt06"], devices, points
        )
        await gateway.writer.flush()
    stored = store.count_fixes()
    store.close()
    return acked, elapsed, stored


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--points", type=int, default=30, help="fixes per device")
    parser.add_argument("--store", help="store URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store_url = args.store or f"sqlite:///{os.path.join(folder, 'bench.db')}"
        bare_acked, bare_seconds = run_async(_bare(args.devices, args.points))
        acked, seconds, stored = run_async(
            _gateway(store_url, args.devices, args.points)
        )
    bare_rate = bare_acked / bare_seconds
    rate = acked / seconds
    python = platform.python_version()
    backend = store_url.split(":")[0]
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores, Python {python}")
    print(f"devices: {args.devices}, fixes per device: {args.points}, store: {backend}")
    print(
        f"bare asyncio server: {bare_acked} frames acked in {bare_seconds:.2f} s"
        f" = {bare_rate:.0f}/s"
    )
    print(
        f"gateway + store:     {acked} fixes acked in {seconds:.2f} s"
        f" = {rate:.0f}/s ({stored} stored)"
    )
    print(f"ratio gateway / bare: {rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
