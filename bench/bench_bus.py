"""Benchmark the MQTT bus: fixes per second to 1, 2 and 4 worker processes.

One run starts a private mosquitto on a free port of 127.0.0.1 (stopped at
the end) and measures, with the same JSON fix payloads at QoS 1:

* the ceiling: a bare aiomqtt loop in this process publishes windows of 256
  messages (as BusPublisher does) to a bare aiomqtt subscriber in a child
  process that only counts. It runs before and after the worker rounds with
  paho-mqtt's default of 20 messages in flight, and once with 256 in flight,
  the limit BusPublisher sets. Then mosquitto_pub -l sends to mosquitto_sub -C
  when both are installed;
* store rounds: 1 or more ``BusPublisher`` instances in this process, each
  with its own devices and on-disk queue (as gateways have), get the fixes in
  batches of 500 and feed N ``python -m postloan.bus.cli worker store``
  processes (worker_count N, indexes 0..N-1). Each worker writes to its own
  SQLite file, or with --store-url to one PostgreSQL schema of the round;
* fence rounds (--fence): the same with ``worker fence`` processes, which
  check every fix against the Portuguese municipality fences and store the
  events. Every fix crosses the Douro, so every fix fires events.

A round's rate is fixes over the wall time from the first ``publish_fixes``
call until polling (every 50 ms) finds every expected row in the stores:
every fix, or every fence event that an in-process check of the same fixes
produced. Worker start-up and subscription happen before the clock starts.
Run from the repository root:

    .venv/bin/python bench/bench_bus.py [--fixes 20000] [--workers 1,2,4] [--fence]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import pstats
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest.mock
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiomqtt
import psycopg
from psycopg import sql

from postloan.bus import BusPublisher, encode_fix, position_topic
from postloan.config import BusConfig, Config, GeofenceConfig
from postloan.data import boundaries_file
from postloan.model import Fix
from postloan.runner import fence_checker, run_async
from postloan.store import open_store

REPO = Path(__file__).resolve().parents[1]
PUBLISH_WINDOW = 256  # as postloan.bus.publisher._PUBLISH_WINDOW
PUBLISH_BATCH = 500  # fixes per publish_fixes call, the gateway's store batch
POLL_S = 0.05  # store polling interval: the resolution of a round's end time
START_TIMEOUT_S = 60.0
# Two points 4 km apart on either side of the Douro, in the municipalities of
# Porto and Vila Nova de Gaia. Each device alternates between them.
SIDES = ((41.1579, -8.6291), (41.1239, -8.6118))
FENCE_ID_PROPERTY = "Concelho"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    """One measured path: its rate and where the CPU time went."""

    name: str
    fixes: int
    seconds: float
    complete: bool = True
    publish_seconds: float | None = None
    # CPU seconds during the round: consumer processes by name, then "broker"
    # and "this process" (the publishers).
    cpu_s: dict[str, float] = field(default_factory=dict)
    note: str = ""
    problems: list[str] = field(default_factory=list)
    # Busy cores of the whole machine (every process) during the round.
    machine_cores: float | None = None

    @property
    def rate(self) -> float:
        return self.fixes / self.seconds


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """Return user plus system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of proc(5), and the split starts at 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class MachineLoad:
    """Busy cores of the whole machine from creation to `cores()` (/proc/stat)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.busy = self.busy_seconds()

    @staticmethod
    def busy_seconds() -> float:
        """Return the CPU seconds that all cores have spent busy since boot."""
        first_line = Path("/proc/stat").read_text().split("\n", 1)[0]
        # Fields: user nice system idle iowait irq softirq steal. Guest time is in user.
        ticks = [int(n) for n in first_line.split()[1:9]]
        return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS

    def cores(self) -> float:
        wall = time.monotonic() - self.started
        return (self.busy_seconds() - self.busy) / wall


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def broker(folder: Path, limits: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run a private mosquitto on a free port of 127.0.0.1 with `limits` added."""
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n" + limits
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with (folder / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto on port {port} did not start")
            time.sleep(0.05)
        yield process, port
    finally:
        stop_process(process)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def event_loop() -> str:
    # run_async and `postloan worker` (event_loop = "auto") take uvloop if installed.
    try:
        return f"uvloop {version('uvloop')}"
    except PackageNotFoundError:
        return "asyncio event loop"


def git_state() -> str:
    """Return the commit and the uncommitted changes under postloan/bus."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changes = git("diff", "--stat", "--", "postloan/bus")
        status = git("status", "--porcelain", "--", "postloan/bus")
    except (OSError, subprocess.CalledProcessError):
        return "git state unknown"
    summary = changes.splitlines()[-1].strip() if changes else "no changes"
    untracked = sum(line.startswith("??") for line in status.splitlines())
    return (
        f"git {head}, uncommitted in postloan/bus: {summary}, "
        f"{untracked} untracked files"
    )


def mosquitto_version() -> str:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    output = subprocess.run(
        [binary, "-h"], capture_output=True, text=True, check=False
    ).stdout
    return output.splitlines()[0] if output else "mosquitto (version unknown)"


# -------------------------------------------------------------------- fixes


def make_fixes(count: int, devices: int) -> list[Fix]:
    """Return `count` fixes of `devices` devices, one second apart, in time order.

    The times end over an hour before now, so no store or check treats them as
    future fixes, and every (device, time) is distinct, so the store keeps all.
    """
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=1, seconds=count)
    fixes = []
    for i in range(count):
        latitude, longitude = SIDES[(i // devices) % 2]
        fixes.append(
            Fix(
                device_id=f"8613{i % devices:011d}",
                time=start + timedelta(seconds=i),
                latitude=latitude,
                longitude=longitude,
                speed_kmh=40.0,
                course=90.0,
                satellites=9,
            )
        )
    return fixes


def fence_config() -> GeofenceConfig:
    # confirm_fixes = 1: every fix across the river fires an exit and an
    # enter event, so the last fix of each device leaves a row to count.
    return GeofenceConfig(
        file=str(boundaries_file()), id_property=FENCE_ID_PROPERTY, confirm_fixes=1
    )


def expected_fence_events(fixes: Sequence[Fix]) -> int:
    check = fence_checker(Config(geofence=fence_config()))
    assert check is not None
    return sum(len(check(fix)) for fix in fixes)


# ------------------------------------------------------------------- stores


class Stores:
    """The stores of one round's workers, polled for their row counts."""

    def __init__(self, folder: Path, workers: int, pg_url: str | None) -> None:
        self.folder = folder
        self.workers = workers
        self.pg_url = pg_url
        self.schema = f"bench_bus_{uuid.uuid4().hex[:10]}"

    def url(self, index: int) -> str:
        if self.pg_url is None:
            return f"sqlite:///{self.folder / f'worker{index}.db'}"
        separator = "&" if "?" in self.pg_url else "?"
        option = quote(f"-csearch_path={self.schema}", safe="")
        return f"{self.pg_url}{separator}options={option}"

    def create(self) -> None:
        """Create the stores, so no worker migrates while others start."""
        if self.pg_url is not None:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema))
                )
        urls = {self.url(i) for i in range(self.workers)}
        for url in urls:
            open_store(url).close()

    def counts(self, table: str) -> list[int]:
        """Return the rows of `table` per store."""
        if self.pg_url is not None:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(self.schema), sql.Identifier(table)
                )
                row = conn.execute(query).fetchone()
                return [int(row[0]) if row else 0]
        counts = []
        for index in range(self.workers):
            path = self.folder / f"worker{index}.db"
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            ) as conn:
                counts.append(
                    int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                )
        return counts

    def drop(self) -> None:
        if self.pg_url is not None:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(self.schema)
                    )
                )


# ------------------------------------------------------------------ ceiling


def bare_subscriber(port: int, count: int, topic_filter: str) -> int:
    """Count `count` messages at QoS 1, then print the wall time of the last one.

    On SIGTERM before that, print how many messages arrived.
    """
    received = 0

    async def receive() -> None:
        nonlocal received
        identifier = f"bench-sub-{os.getpid()}"
        async with aiomqtt.Client("127.0.0.1", port, identifier=identifier) as client:
            await client.subscribe(topic_filter, qos=1)
            print("subscribed", flush=True)
            async for _ in client.messages:
                received += 1
                if received >= count:
                    print(f"done {time.time():.6f}", flush=True)
                    return

    async def run() -> None:
        task = asyncio.create_task(receive())
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            print(f"stopped {received}", flush=True)

    run_async(run())
    return 0


async def aiomqtt_ceiling(
    port: int,
    broker_pid: int,
    fixes: Sequence[Fix],
    partitions: int,
    deadline_s: float,
    inflight: int | None = None,
) -> Round:
    """Time a bare aiomqtt publish loop to a bare subscriber process.

    `inflight` None keeps paho-mqtt's limit of 20 unacknowledged QoS 1
    messages, which BusPublisher also keeps because it does not set one.
    """
    payloads = [
        ("bench/bare/" + position_topic(f.device_id, partitions), encode_fix(f))
        for f in fixes
    ]
    child = subprocess.Popen(
        [sys.executable, __file__, "--bare-subscriber", str(port), str(len(fixes))],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert child.stdout is not None
    try:
        line = await asyncio.to_thread(child.stdout.readline)
        if line.strip() != b"subscribed":
            raise RuntimeError(f"bare subscriber failed to subscribe: {line!r}")
        cpu_before = (
            cpu_seconds(child.pid),
            cpu_seconds(broker_pid),
            time.process_time(),
        )
        load = MachineLoad()
        async with aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier="bench-bare-pub",
            max_inflight_messages=inflight,
        ) as pub:
            pub.pending_calls_threshold = PUBLISH_WINDOW
            started = time.time()
            for first in range(0, len(payloads), PUBLISH_WINDOW):
                window = payloads[first : first + PUBLISH_WINDOW]
                await asyncio.gather(*(pub.publish(t, p, qos=1) for t, p in window))
            published = time.time()
            remaining = max(0.0, deadline_s - (time.time() - started))
            # One read, never cancelled: a cancelled to_thread read would still
            # consume the line that the subscriber prints on SIGTERM.
            reading = asyncio.ensure_future(asyncio.to_thread(child.stdout.readline))
            _, pending = await asyncio.wait({reading}, timeout=remaining)
            if pending:
                child.send_signal(signal.SIGTERM)
            line = await reading
        cpu = {
            "subscriber": cpu_seconds(child.pid) - cpu_before[0],
            "broker": cpu_seconds(broker_pid) - cpu_before[1],
            "this process": time.process_time() - cpu_before[2],
        }
        machine = load.cores()
        if line.startswith(b"done "):
            received, finished = len(fixes), float(line.split()[1])
        elif line.startswith(b"stopped "):
            received, finished = int(line.split()[1]), time.time()
        else:
            raise RuntimeError(f"bare subscriber failed: {line!r}")
    finally:
        stop_process(child)
    limit = "paho default 20" if inflight is None else str(inflight)
    return Round(
        f"aiomqtt publish ({limit} in flight) -> aiomqtt subscriber",
        received,
        finished - started,
        complete=received >= len(fixes),
        publish_seconds=published - started,
        cpu_s=cpu,
        note="" if received >= len(fixes) else f"{received} of {len(fixes)} received",
        machine_cores=machine,
    )


def mosquitto_ceiling(
    port: int, broker_pid: int, fixes: Sequence[Fix], folder: Path, deadline_s: float
) -> Round | None:
    pub_binary, sub_binary = (
        shutil.which("mosquitto_pub"),
        shutil.which("mosquitto_sub"),
    )
    if pub_binary is None or sub_binary is None or shutil.which("stdbuf") is None:
        return None
    lines = folder / "payloads.jsonl"
    lines.write_bytes(b"".join(encode_fix(f) + b"\n" for f in fixes))
    topic = "bench/clients/positions"
    address = ["-h", "127.0.0.1", "-p", str(port), "-q", "1"]
    # stdbuf makes mosquitto_sub flush each line, so the SUBACK shows at once.
    sub = subprocess.Popen(
        [
            "stdbuf",
            "-oL",
            sub_binary,
            *address,
            "-t",
            topic,
            "-C",
            str(len(fixes)),
            "-d",
        ],
        stdout=subprocess.PIPE,
    )
    assert sub.stdout is not None
    subscribed = threading.Event()
    received = 0
    last_at = 0.0

    def drain() -> None:
        # -d prints the SUBACK. Every payload line (a JSON object) is counted.
        nonlocal received, last_at
        assert sub.stdout is not None
        for line in sub.stdout:
            if line.startswith(b"{"):
                received += 1
                last_at = time.time()
            elif b"SUBACK" in line:
                subscribed.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        if not subscribed.wait(START_TIMEOUT_S):
            raise RuntimeError("mosquitto_sub did not subscribe")
        with lines.open("rb") as source:
            broker_before = cpu_seconds(broker_pid)
            load = MachineLoad()
            started = time.time()
            pub = subprocess.Popen(
                [pub_binary, *address, "-t", topic, "-l", "-M", str(PUBLISH_WINDOW)],
                stdin=source,
            )
            try:
                pub.wait(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                pass  # the round is then reported as incomplete
            finally:
                stop_process(pub)
            published = time.time()
        # mosquitto_sub exits after -C messages, which ends its output.
        reader.join(max(0.0, deadline_s - (time.time() - started)))
        broker = cpu_seconds(broker_pid) - broker_before
        machine = load.cores()
    finally:
        stop_process(sub)
        reader.join(5)
    complete = received >= len(fixes)
    return Round(
        "mosquitto_pub -l -> mosquitto_sub -C",
        received,
        (last_at if complete else time.time()) - started,
        complete=complete,
        publish_seconds=published - started,
        cpu_s={"broker": broker},
        machine_cores=machine,
        note="one topic for all payloads"
        + ("" if complete else f"; {received} of {len(fixes)} received"),
    )


# ------------------------------------------------------------------- rounds


def publisher_inflight(limit: int | None) -> contextlib.AbstractContextManager[object]:
    """Patch aiomqtt.Client so that clients built meanwhile allow `limit` in flight.

    Only for the --publisher-inflight comparison: BusPublisher builds its
    client in its own task with a fixed limit, which this replaces.
    """
    if limit is None:
        return contextlib.nullcontext()

    class Client(aiomqtt.Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["max_inflight_messages"] = limit
            super().__init__(*args, **kwargs)

    return unittest.mock.patch.object(aiomqtt, "Client", Client)


def write_config(folder: Path, port: int, workers: int, fence: bool) -> Path:
    path = folder / "config.toml"
    text = (
        "[api]\nenabled = false\n"
        '[logging]\nlevel = "INFO"\n'
        "[bus]\n"
        f'url = "mqtt://127.0.0.1:{port}"\n'
        f"worker_count = {workers}\n"
        f'shared_group = "bench-{folder.name}"\n'
        f'client_id = "bench-{folder.name}"\n'
        "session_expiry_s = 0\n"
    )
    if fence:
        geofence = fence_config()
        text += (
            "[geofence]\n"
            f'file = "{geofence.file}"\n'
            f'id_property = "{geofence.id_property}"\n'
            f"confirm_fixes = {geofence.confirm_fixes}\n"
        )
    path.write_text(text)
    return path


def start_worker(
    folder: Path,
    config: Path,
    role: str,
    index: int,
    store_url: str,
    profile_dir: Path | None,
) -> tuple[subprocess.Popen[bytes], Path]:
    log = folder / f"{role}{index}.log"
    command = [sys.executable]
    if profile_dir is not None and index == 0:
        profile = profile_dir / f"{role}-{folder.name}.prof"
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "postloan.bus.cli", "--config", str(config), "worker", role]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "POSTLOAN_STORE_URL": store_url,
        "POSTLOAN_BUS_WORKER_INDEX": str(index),
    }
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    return process, log


async def wait_for_line(process: subprocess.Popen[bytes], log: Path, text: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log.name} never logged {text!r}:\n{log.read_text()}")
        await asyncio.sleep(0.05)


async def worker_round(
    args: argparse.Namespace,
    port: int,
    broker_pid: int,
    run_folder: Path,
    fixes: Sequence[Fix],
    role: str,
    workers: int,
    publisher_count: int,
    expected: int,
) -> Round:
    folder = run_folder / f"{role}{workers}-p{publisher_count}"
    folder.mkdir()
    config = write_config(folder, port, workers, fence=role == "fence")
    stores = Stores(folder, workers, args.store_url)
    table = "positions" if role == "store" else "fence_events"
    await asyncio.to_thread(stores.create)
    started_workers = [
        start_worker(folder, config, role, i, stores.url(i), args.profile)
        for i in range(workers)
    ]
    publishers = [
        BusPublisher(
            BusConfig(
                url=f"mqtt://127.0.0.1:{port}",
                client_id=f"bench-gateway-{folder.name}-{i}",
                queue_dir=str(folder / f"bus-queue-{i}"),
            )
        )
        for i in range(publisher_count)
    ]
    # Each device goes to one publisher, as each tracker connects to one gateway.
    shares = [
        [f for f in fixes if int(f.device_id) % publisher_count == i]
        for i in range(publisher_count)
    ]
    # The patch must last as long as the publishers, which reconnect with new clients.
    with publisher_inflight(args.publisher_inflight):
        try:
            for process, log in started_workers:
                await wait_for_line(process, log, "subscribed to partitions")
            for publisher in publishers:
                await publisher.start()
            while any(p.stats.connects == 0 for p in publishers):
                await asyncio.sleep(0.01)

            cpu_before = [cpu_seconds(p.pid) for p, _ in started_workers]
            broker_before = cpu_seconds(broker_pid)
            bench_before = time.process_time()
            load = MachineLoad()
            started = time.time()
            for first in range(0, max(len(share) for share in shares), PUBLISH_BATCH):
                for publisher, share in zip(publishers, shares, strict=True):
                    publisher.publish_fixes(share[first : first + PUBLISH_BATCH])
            published: float | None = None
            stored = 0
            while stored < expected and time.time() - started < args.deadline:
                await asyncio.sleep(POLL_S)
                acknowledged = sum(p.stats.fixes_published for p in publishers)
                if published is None and acknowledged >= len(fixes):
                    published = time.time()
                stored = sum(await asyncio.to_thread(stores.counts, table))
            finished = time.time()
            cpu = {
                f"worker {i}": cpu_seconds(p.pid) - before
                for i, ((p, _), before) in enumerate(
                    zip(started_workers, cpu_before, strict=True)
                )
            }
            cpu["broker"] = cpu_seconds(broker_pid) - broker_before
            cpu["this process"] = time.process_time() - bench_before
            machine = load.cores()
        finally:
            for publisher in publishers:
                await publisher.close()
            for process, _ in started_workers:
                stop_process(process)
    per_store = await asyncio.to_thread(stores.counts, table)
    await asyncio.to_thread(stores.drop)
    problems = [
        f"{log.name} exited with {process.returncode}"
        for process, log in started_workers
        if process.returncode not in (0, -signal.SIGTERM)
    ]
    for _, log in started_workers:
        problems += [
            f"{log.name}: {line}"
            for line in log.read_text(errors="replace").splitlines()
            if " ERROR " in line or " WARNING " in line or "Traceback" in line
        ]
    if sum(per_store) != expected:
        problems.append(f"{sum(per_store)} {table} rows stored, expected {expected}")
    name = (
        f"{publisher_count} BusPublisher{'s' if publisher_count > 1 else ''}"
        + (f" ({args.publisher_inflight} in flight)" if args.publisher_inflight else "")
        + " -> "
        f"{workers} {role} worker process{'es' if workers > 1 else ''}"
    )
    done = stored >= expected
    return Round(
        name,
        len(fixes) if done else len(fixes) * stored // max(expected, 1),
        finished - started,
        complete=done,
        publish_seconds=None if published is None else published - started,
        cpu_s=cpu,
        note=f"{table} rows per store: {per_store}" if workers > 1 else "",
        problems=problems,
        machine_cores=machine,
    )


# --------------------------------------------------------------------- main


def describe(round_: Round, ceiling: float | None, tools_ceiling: float | None) -> str:
    text = f"{round_.name}: {round_.rate:,.0f} fixes/s in {round_.seconds:.2f} s"
    if not round_.complete:
        text += " (incomplete at the deadline: the rate counts what arrived)"
    ratios = []
    if ceiling:
        ratios.append(f"{round_.rate / ceiling:.0%} of the aiomqtt ceiling")
    if tools_ceiling:
        ratios.append(f"{round_.rate / tools_ceiling:.0%} of mosquitto_pub/sub")
    if ratios:
        text += " = " + ", ".join(ratios)
    if round_.publish_seconds is not None:
        text += f"; all PUBACKs after {round_.publish_seconds:.2f} s"
    if round_.cpu_s:
        spent = ", ".join(f"{k} {v:.2f}" for k, v in round_.cpu_s.items())
        if round_.machine_cores is not None:
            spent += f"; whole machine {round_.machine_cores:.2f} cores busy"
        text += f"\n    CPU seconds: {spent}"
    if round_.note:
        text += f"\n    note: {round_.note}"
    for problem in round_.problems[:5]:
        text += f"\n    PROBLEM: {problem}"
    return text


def print_summary(
    ceilings: Sequence[Round],
    others: Sequence[Round],
    rounds: Sequence[Round],
    tools: Round | None,
) -> None:
    """Print every round as a Markdown table row with its ratios to the ceilings."""
    complete = [c.rate for c in ceilings if c.complete]
    ceiling = sum(complete) / len(complete) if complete else None
    print(
        "\nRatios to the mean of the complete aiomqtt ceilings "
        + (f"({ceiling:,.0f} fixes/s)" if ceiling else "(none completed)")
        + (
            f" and to mosquitto_pub/sub ({tools.rate:,.0f} fixes/s)"
            if tools and tools.complete
            else ""
        )
    )
    print(
        "| path | fixes/s | seconds | / aiomqtt ceiling | / mosquitto_pub/sub "
        "| CPU µs per fix: consumers, broker, publishers "
        "| cores busy: round, machine |"
    )
    print("|---|---:|---:|---:|---:|---|---|")
    for round_ in [*ceilings, *others, *rounds]:
        mark = "" if round_.complete else " (incomplete)"
        ratio = f"{round_.rate / ceiling:.2f}" if ceiling else "-"
        tools_ratio = (
            f"{round_.rate / tools.rate:.2f}" if tools and tools.complete else "-"
        )
        print(
            f"| {round_.name}{mark} | {round_.rate:,.0f} | {round_.seconds:.2f} "
            f"| {ratio} | {tools_ratio} | {cpu_columns(round_)} |"
        )


def cpu_columns(round_: Round) -> str:
    """Return the CPU columns of a round: µs per fix by process group, cores busy.

    Cores busy is CPU seconds per wall second of the round's processes, then
    of the whole machine.
    """
    if "broker" not in round_.cpu_s:
        return " | "
    machine = ""
    if round_.machine_cores is not None:
        machine = f", {round_.machine_cores:.2f}"
    broker = round_.cpu_s["broker"]
    if "this process" not in round_.cpu_s:
        # The C clients exit before their CPU time can be read: broker only.
        return f"-, {1e6 * broker / round_.fixes:.0f}, - | -{machine}"
    publishers = round_.cpu_s["this process"]
    consumers = sum(round_.cpu_s.values()) - broker - publishers
    groups = (consumers, broker, publishers)
    per_fix = ", ".join(f"{1e6 * v / round_.fixes:.0f}" for v in groups)
    return f"{per_fix} | {sum(groups) / round_.seconds:.2f}{machine}"


def print_profiles(folder: Path, top: int = 25) -> None:
    for path in sorted(folder.glob("*.prof")):
        print(f"\n--- cProfile of worker 0, {path.stem}, by own time ---")
        pstats.Stats(str(path)).strip_dirs().sort_stats("tottime").print_stats(top)


async def run(
    args: argparse.Namespace, port: int, broker_pid: int, folder: Path
) -> int:
    fixes = make_fixes(args.fixes, args.devices)
    partitions = BusConfig().partitions
    first = await aiomqtt_ceiling(port, broker_pid, fixes, partitions, args.deadline)
    first.name += ", before the rounds"
    ceilings = [first]
    print(describe(first, None, None), flush=True)
    wide = await aiomqtt_ceiling(
        port, broker_pid, fixes, partitions, args.deadline, inflight=PUBLISH_WINDOW
    )
    print(describe(wide, None, None), flush=True)
    tools = await asyncio.to_thread(
        mosquitto_ceiling, port, broker_pid, fixes, folder, args.deadline
    )
    if tools is not None:
        print(describe(tools, None, None), flush=True)
    else:
        print("mosquitto_pub/mosquitto_sub not installed: that ceiling is skipped")

    rounds: list[Round] = []
    roles = ["store", "fence"] if args.fence else ["store"]
    expected = {"store": len(fixes)}
    if args.fence:
        expected["fence"] = expected_fence_events(fixes)
    for role in roles:
        for publisher_count in args.publishers:
            for workers in args.workers:
                result = await worker_round(
                    args,
                    port,
                    broker_pid,
                    folder,
                    fixes,
                    role,
                    workers,
                    publisher_count,
                    expected[role],
                )
                rounds.append(result)
                ceiling = first.rate if first.complete else None
                print(describe(result, ceiling, None), flush=True)

    last = await aiomqtt_ceiling(port, broker_pid, fixes, partitions, args.deadline)
    last.name += ", after the rounds"
    ceilings.append(last)
    print(describe(last, None, None), flush=True)
    print_summary(ceilings, [wide, *([tools] if tools else [])], rounds, tools)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if args.profile is not None:
        print_profiles(args.profile)
    failed = [r for r in rounds if not r.complete or r.problems]
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])

    # What each round sends and to how many processes.
    parser.add_argument(
        "--fixes", type=int, default=20_000, help="fixes per round (default 20000)"
    )
    parser.add_argument(
        "--devices", type=int, default=200, help="distinct devices (default 200)"
    )
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2, 4],
        help="comma-separated worker process counts, one round each (default 1,2,4)",
    )
    parser.add_argument(
        "--publishers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 4],
        help="comma-separated BusPublisher counts in this process, each taking "
        "its own devices, like gateways; every worker count runs with each "
        "(default 1,4)",
    )
    parser.add_argument(
        "--fence", action="store_true", help="also run rounds of fence workers"
    )

    # Where workers store, and how long and how closely a round is watched.
    parser.add_argument(
        "--store-url",
        help="PostgreSQL URL; the workers of a round share a new schema of it, "
        "dropped after the round (default: one SQLite file per worker)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="seconds after which a round stops waiting for its stores (default 120)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="write a cProfile file of worker 0 of every round to this folder "
        "and print its top functions (slows that worker down)",
    )

    # Client and broker limits, for comparisons.
    parser.add_argument(
        "--publisher-inflight",
        type=int,
        help="let every BusPublisher client have this many QoS 1 messages awaiting "
        "PUBACK instead of its own 256 (a comparison: it patches aiomqtt.Client "
        "for the publishers)",
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=0,
        help="mosquitto max_inflight_messages: QoS 1 messages sent to one MQTT "
        "3.1.1 client (the bare subscribers) and not yet acknowledged; 0 = no "
        "limit. MQTT v5 workers were held to their own Receive Maximum instead "
        "at any value (measured with mosquitto 2.0.11). Default 0; mosquitto's "
        "own default is 20",
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=0,
        help="mosquitto max_queued_messages: messages queued per client beyond "
        "those in flight, later ones are dropped; 0 = no limit "
        "(default 0; mosquitto's own default is 1000)",
    )

    # Internal: the bare subscriber's child process.
    parser.add_argument("--bare-subscriber", nargs=2, type=int, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (
        args.fixes < 1
        or args.devices < 1
        or any(n < 1 for n in args.workers + args.publishers)
    ):
        parser.error("--fixes, --devices, --workers and --publishers must be positive")
    if args.store_url and not args.store_url.startswith(
        ("postgresql://", "postgres://")
    ):
        parser.error(
            f"invalid --store-url {args.store_url!r}: expected postgresql://..."
        )
    if args.max_inflight < 0 or args.max_queued < 0:
        parser.error("--max-inflight and --max-queued must be 0 or more")
    args.broker_limits = (
        f"max_inflight_messages {args.max_inflight}\n"
        f"max_queued_messages {args.max_queued}\n"
    )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_subscriber:
        port, count = args.bare_subscriber
        return bare_subscriber(port, count, "bench/bare/#")
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    store = (
        "PostgreSQL schema shared by the workers"
        if args.store_url
        else "SQLite file per worker"
    )
    print(
        f"{cpu_model()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}, {git_state()}\n"
        f"Python {sys.version.split()[0]}, "
        f"aiomqtt {version('aiomqtt')}, paho-mqtt {version('paho-mqtt')}, "
        f"{event_loop()}, "
        f"{mosquitto_version()}\n"
        f"{args.fixes} fixes of {args.devices} devices per round, QoS 1, "
        f"store: {store}, deadline {args.deadline:g} s per round, broker limits: "
        f"{args.broker_limits.strip().replace(chr(10), ', ')}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-bus-") as temp,
        broker(Path(temp), args.broker_limits) as (process, port),
    ):
        return run_async(run(args, port, process.pid, Path(temp)))


if __name__ == "__main__":
    sys.exit(main())
