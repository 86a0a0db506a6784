"""Benchmark the MQTT bus: fixes per second from BusPublisher to 1, 2, 4 workers.

Each round starts with the ceiling: a bare aiomqtt loop publishes the same
number of JSON fix payloads at QoS 1 (256 awaiting PUBACK at once, as
BusPublisher does) while one bare subscriber counts them. Then
``BusPublisher.publish_fixes`` takes the fixes in batches of 500 (through
its on-disk queue) and 1, 2 or 4 worker tasks, each with its own partition
set, count what they receive. A rate is fixes over the time from the first
publish until the last fix has arrived.

Everything runs in this process against a private mosquitto started on a
free port of 127.0.0.1 and stopped at the end. Run from the repository root:

    .venv/bin/python bench/bench_bus.py [--fixes 20000] [--devices 200]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import aiomqtt

from postloan.bus import BusPublisher, encode_fix, position_topic
from postloan.bus.worker import consume
from postloan.config import BusConfig
from postloan.model import Fix


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.done = asyncio.Event()
        self.expected = 0

    async def handle(self, fixes: Sequence[Fix]) -> None:
        self.count += len(fixes)
        if self.count >= self.expected:
            self.done.set()


def make_fixes(count: int, devices: int) -> list[Fix]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Fix(
            device_id=f"8613{i % devices:011d}",
            time=start + timedelta(seconds=i),
            latitude=41.15 + i * 1e-6,
            longitude=-8.61,
            speed_kmh=40.0,
            course=90.0,
        )
        for i in range(count)
    ]


async def bare_rate(url_port: int, fixes: list[Fix], partitions: int) -> float:
    received = 0
    done = asyncio.Event()
    async with aiomqtt.Client("127.0.0.1", url_port, identifier="bench-sub") as sub:
        await sub.subscribe("bench/bare/#", qos=1)

        async def count() -> None:
            nonlocal received
            async for _ in sub.messages:
                received += 1
                if received >= len(fixes):
                    done.set()
                    return

        counter = asyncio.create_task(count())
        async with aiomqtt.Client("127.0.0.1", url_port, identifier="bench-pub") as pub:
            pub.pending_calls_threshold = 256
            started = time.perf_counter()
            for first in range(0, len(fixes), 256):
                window = fixes[first : first + 256]
                await asyncio.gather(
                    *(
                        pub.publish(
                            "bench/bare/" + position_topic(f.device_id, partitions),
                            encode_fix(f),
                            qos=1,
                        )
                        for f in window
                    )
                )
            await asyncio.wait_for(done.wait(), 120)
            elapsed = time.perf_counter() - started
        counter.cancel()
    return len(fixes) / elapsed


async def bus_rate(config: BusConfig, fixes: list[Fix], workers: int) -> float:
    stop = asyncio.Event()
    counters = [Counter() for _ in range(workers)]
    total = Counter()
    total.expected = len(fixes)

    class Shared:
        def __init__(self, own: Counter) -> None:
            self.own = own

        async def handle(self, batch: Sequence[Fix]) -> None:
            await self.own.handle(batch)
            await total.handle(batch)

    tasks = [
        asyncio.create_task(
            consume(
                replace(config, worker_index=i, worker_count=workers),
                "bench",
                Shared(counters[i]),
                stop,
                client_id=f"bench-{workers}-{i}",
                group=f"bench{workers}",
                session_expiry_s=0,
            )
        )
        for i in range(workers)
    ]
    await asyncio.sleep(0.5)
    publisher = BusPublisher(config)
    await publisher.start()
    started = time.perf_counter()
    for first in range(0, len(fixes), 500):
        publisher.publish_fixes(fixes[first : first + 500])
    await asyncio.wait_for(total.done.wait(), 300)
    elapsed = time.perf_counter() - started
    await publisher.close()
    stop.set()
    await asyncio.gather(*tasks)
    return len(fixes) / elapsed


def start_broker(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        "max_queued_messages 1000000\nmax_inflight_messages 256\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    process.terminate()
    raise RuntimeError(f"mosquitto on port {port} did not start")


async def main_async(args: argparse.Namespace, port: int, folder: Path) -> None:
    fixes = make_fixes(args.fixes, args.devices)
    config = BusConfig(
        url=f"mqtt://127.0.0.1:{port}",
        client_id="bench-gateway",
        queue_dir=str(folder / "queue"),
    )
    ceiling = await bare_rate(port, fixes, config.partitions)
    print(f"bare aiomqtt publish -> subscribe: {ceiling:,.0f} fixes/s")
    for workers in (1, 2, 4):
        rate = await bus_rate(config, fixes, workers)
        print(
            f"BusPublisher -> {workers} worker(s): {rate:,.0f} fixes/s "
            f"({rate / ceiling:.0%} of the bare rate)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixes", type=int, default=20_000, help="fixes per round")
    parser.add_argument("--devices", type=int, default=200, help="distinct devices")
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, Python "
        f"{sys.version.split()[0]}, aiomqtt {version('aiomqtt')}, "
        f"{args.fixes} fixes of {args.devices} devices"
    )
    with tempfile.TemporaryDirectory() as temp:
        process, port = start_broker(Path(temp))
        try:
            asyncio.run(main_async(args, port, Path(temp)))
        finally:
            process.terminate()
            process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
