"""Decode throughput per protocol against a struct.unpack_from baseline.

For GT06 (0x22 GPS packets) and JT/T 808 (0x0200 location reports with
mileage, signal and satellite items) the script builds the same set of frames
once and then measures, in one process:

- decode: frames per second through ``gt06.decode`` / ``jt808.decode``
  (envelope and checksum checks, field conversion, additional items, message
  objects);
- baseline: frames per second for one ``struct.unpack_from`` per frame that
  slices the header and position fields out at fixed offsets, without
  validation, un-escaping or conversion.

The ratio baseline / decode is how many times more a full decode costs than
reading the raw fields. Each figure is the best of `--rounds` rounds of
`--seconds` seconds, baseline and decode alternating, which damps noise from
other processes on a shared machine. Usage:

    python bench/bench_decode.py [--frames 1000] [--seconds 1.0] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from postloan.protocols import gt06, jt808
from postloan.protocols.base import Location

# GT06 0x22 after the 78 78 start: length, protocol, time[6], satellites,
# latitude, longitude, speed, course/status (Concox JM-VL03 v1.1.2).
GT06_FIELDS = struct.Struct(">BB6sBIIBH")
# JT808 after the 7E flag: message id, attributes, phone BCD[6], serial, then
# the 0x0200 body: alarm, status, latitude, longitude, altitude, speed, course,
# BCD time (JT/T 808-2013 header and location report).
JT808_FIELDS = struct.Struct(">HH6sHIIIIhHH6s")
JT808_ITEMS = {0x01: (123_456).to_bytes(4, "big"), 0x30: b"\x1c"}


@dataclass(frozen=True, slots=True)
class Result:
    protocol: str
    decode_rate: float
    baseline_rate: float

    @property
    def ratio(self) -> float:
        return self.baseline_rate / self.decode_rate


def _track(count: int) -> list[Location]:
    """Return a deterministic drive around Shenzhen, one fix every 10 s."""
    rng = random.Random(808)
    start = datetime(2024, 5, 6, 1, 0, tzinfo=UTC)
    latitude, longitude = 22.5431, 114.0579
    fixes = []
    for number in range(count):
        latitude += rng.uniform(-0.0005, 0.0005)
        longitude += rng.uniform(-0.0005, 0.0005)
        fixes.append(
            Location(
                time=start + timedelta(seconds=10 * number),
                latitude=round(latitude, 6),
                longitude=round(longitude, 6),
                speed_kmh=rng.randint(0, 90),
                course=rng.randint(0, 359),
                altitude_m=rng.randint(0, 120),
                satellites=rng.randint(4, 14),
            )
        )
    return fixes


def _gt06_frames(fixes: Sequence[Location]) -> list[bytes]:
    return [
        gt06.encode_location(fix, serial & 0xFFFF, msg_type=0x22)
        for serial, fix in enumerate(fixes)
    ]


def _jt808_frames(fixes: Sequence[Location]) -> list[bytes]:
    return [
        jt808.encode_location("013800138000", serial & 0xFFFF, fix, items=JT808_ITEMS)
        for serial, fix in enumerate(fixes)
    ]


def _rate(
    work: Callable[[bytes], object], frames: Sequence[bytes], seconds: float
) -> float:
    """Return frames per second of `work` over `frames`, repeated for `seconds`."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for frame in frames:
            work(frame)
        done += len(frames)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - started)


def _measure(
    protocol: str,
    decode: Callable[[bytes], object],
    baseline: Callable[[bytes], object],
    frames: Sequence[bytes],
    args: argparse.Namespace,
) -> Result:
    """Time baseline and decode in alternating rounds and keep the best of each.

    Alternating exposes both to the same background load on a shared machine.
    """
    for frame in frames:
        decode(frame)  # every frame must decode before it is timed
    baseline_rates, decode_rates = [], []
    for _ in range(args.rounds):
        baseline_rates.append(_rate(baseline, frames, args.seconds))
        decode_rates.append(_rate(decode, frames, args.seconds))
    return Result(protocol, max(decode_rates), max(baseline_rates))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--frames", type=int, default=1000, help="distinct frames per protocol"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="length of one timed round, in seconds",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed rounds; the best one counts"
    )
    args = parser.parse_args(argv)
    fixes = _track(args.frames)

    results = [
        _measure(
            "gt06",
            gt06.decode,
            lambda frame: GT06_FIELDS.unpack_from(frame, 2),
            _gt06_frames(fixes),
            args,
        ),
        _measure(
            "jt808",
            jt808.decode,
            lambda frame: JT808_FIELDS.unpack_from(frame, 1),
            _jt808_frames(fixes),
            args,
        ),
    ]

    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"machine: {_cpu_model()}, {os.cpu_count()} logical cores")
    print(f"python: {platform.python_implementation()} {platform.python_version()}")
    print(
        f"frames: {args.frames} per protocol, best of {args.rounds} x {args.seconds} s"
    )
    print()
    print("| protocol | decode (frames/s) | baseline (frames/s) | baseline / decode |")
    print("| --- | ---: | ---: | ---: |")
    for result in results:
        print(
            f"| {result.protocol} | {result.decode_rate:,.0f} | "
            f"{result.baseline_rate:,.0f} | {result.ratio:.1f}x |"
        )


if __name__ == "__main__":
    main()
