"""The ``postloan fences`` command: check a track against fences.

``postloan fences check FENCES.geojson TRACK.csv`` prints one JSON object per
event (JSON Lines): ``device_id``, ``fence_id``, ``event`` and ``time``
(ISO-8601 UTC with ``Z``). The track comes from a CSV file or, with
``--device/--since/--until/--store``, from the track store. Fixes go through
`FenceEngine` in file order, exactly as the gateway would feed them, so late
rows are ignored the same way. Invalid input exits with status 2 and a
message on stderr naming the line or feature.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from postloan.geofence.engine import (
    DEFAULT_SETTINGS,
    RAW,
    FenceEngine,
    HysteresisSettings,
)
from postloan.geofence.fences import FenceError, load_fences
from postloan.geofence.index import FenceIndex
from postloan.model import FenceEvent, Fix
from postloan.times import TimeValueError, format_time, parse_time

REQUIRED_COLUMNS = ("device_id", "time", "latitude", "longitude")
_BOOLEANS = {
    "true": True,
    "1": True,
    "yes": True,
    "false": False,
    "0": False,
    "no": False,
}


class TrackError(ValueError):
    """A track row or option is invalid."""


def add_parser(subparsers: Any) -> None:
    """Register ``fences check`` on the ``postloan`` command's subparsers."""
    fences = subparsers.add_parser("fences", help="check tracks against geofences")
    commands = fences.add_subparsers(dest="fences_command", required=True)
    check = commands.add_parser(
        "check",
        help="print the fence events of a track as JSON Lines",
        description=(
            "Print enter, exit and dwell events of a track against a GeoJSON "
            "fence file, one JSON object per line."
        ),
    )
    check.add_argument("fences", type=Path, help="GeoJSON file of fences")
    check.add_argument(
        "track",
        type=Path,
        nargs="?",
        help="CSV with device_id,time,latitude,longitude[,speed_kmh,valid]",
    )
    check.add_argument("--device", help="device id to read from the store")
    check.add_argument("--since", help="start of the stored window, ISO-8601")
    check.add_argument("--until", help="end of the stored window (exclusive), ISO-8601")
    check.add_argument("--store", help="store URL, e.g. sqlite:///var/postloan.db")
    check.add_argument(
        "--raw",
        action="store_true",
        help="report every change of containment: no margin, no confirmation, no dwell",
    )
    check.add_argument(
        "--margin-m",
        type=float,
        help=f"hysteresis margin in metres (default {DEFAULT_SETTINGS.margin_m:g})",
    )
    check.add_argument(
        "--confirm-fixes",
        type=int,
        help=f"fixes that confirm a change (default {DEFAULT_SETTINGS.confirm_fixes})",
    )
    check.add_argument(
        "--dwell-s",
        type=float,
        help="seconds inside a risk/home/work fence before a dwell event "
        f"(default {DEFAULT_SETTINGS.dwell_s:g})",
    )
    check.add_argument(
        "--id-property",
        default="id",
        help="feature property that contains the fence id when a feature has no id "
        "(default id)",
    )
    check.add_argument("--repair", action="store_true", help="repair invalid polygons")
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``fences check``; return the exit status."""
    out = out or sys.stdout
    try:
        settings = _settings(args)
        fences = load_fences(
            args.fences, repair=args.repair, id_property=args.id_property
        )
        engine = FenceEngine(FenceIndex(fences), settings)
        for fix in _fixes(args):
            for event in engine.process(fix):
                out.write(json.dumps(_record(event)) + "\n")
    except (FenceError, TrackError) as error:
        print(f"postloan fences check: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"postloan fences check: {error}", file=sys.stderr)
        return 2
    return 0


def _settings(args: argparse.Namespace) -> HysteresisSettings:
    base = RAW if args.raw else DEFAULT_SETTINGS
    try:
        return HysteresisSettings(
            margin_m=base.margin_m if args.margin_m is None else args.margin_m,
            confirm_fixes=(
                base.confirm_fixes if args.confirm_fixes is None else args.confirm_fixes
            ),
            dwell_s=base.dwell_s if args.dwell_s is None else args.dwell_s,
        )
    except ValueError as error:
        raise TrackError(f"invalid option: {error}") from None


def _fixes(args: argparse.Namespace) -> Iterator[Fix]:
    stored = (args.device, args.since, args.until, args.store)
    if args.track is not None:
        if any(value is not None for value in stored):
            raise TrackError(
                "give either TRACK.csv or --device/--since/--until/--store"
            )
        return _read_csv(args.track)
    if any(value is None for value in stored):
        raise TrackError(
            "give TRACK.csv, or all of --device, --since, --until and --store"
        )
    return _read_store(args.store, args.device, args.since, args.until)


def _read_store(url: str, device_id: str, since: str, until: str) -> Iterator[Fix]:
    from postloan.store import StoreNotFoundError, open_existing_store

    start = _parse_time(since, "--since")
    end = _parse_time(until, "--until")
    try:
        store = open_existing_store(url, migrate=False)
    except (StoreNotFoundError, ValueError) as error:
        raise TrackError(f"--store {url!r}: {error}") from None
    with store:
        fixes = store.track(device_id, start, end)
    return iter(fixes)


def _read_csv(path: Path) -> Iterator[Fix]:
    """Read and check every row first, so a bad row prints no partial output."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        try:
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise TrackError(
                    f"{path}: line 1: missing column(s) {', '.join(missing)}"
                )
            fixes = [_fix_from_row(path, reader.line_num, row) for row in reader]
        except (UnicodeDecodeError, csv.Error) as error:
            raise TrackError(f"{path}: line {reader.line_num}: {error}") from None
    # A CSV is history, not a live feed: replay each device in fix-time order
    # (a stable sort, so equal times keep file order), or the engine would
    # skip every fix older than one it has seen as late.
    fixes.sort(key=lambda fix: (fix.device_id, fix.time))
    return iter(fixes)


def _fix_from_row(path: Path, line: int, row: dict[str, str]) -> Fix:
    def fail(column: str, problem: str) -> TrackError:
        return TrackError(
            f"{path}: line {line}: {column} {row.get(column)!r}: {problem}"
        )

    device_id = (row.get("device_id") or "").strip()
    if not device_id:
        raise fail("device_id", "missing device id")
    try:
        time = parse_time(row["time"] or "", "time")
    except TimeValueError as error:
        raise fail("time", error.problem) from None
    latitude = _number(row, "latitude", -90.0, 90.0, fail)
    longitude = _number(row, "longitude", -180.0, 180.0, fail)
    speed = (
        _number(row, "speed_kmh", 0.0, 2000.0, fail) if row.get("speed_kmh") else 0.0
    )
    valid = True
    if row.get("valid"):
        flag = _BOOLEANS.get(row["valid"].strip().lower())
        if flag is None:
            raise fail("valid", "expected true/false, 1/0 or yes/no")
        valid = flag
    return Fix(device_id, time, latitude, longitude, speed_kmh=speed, valid=valid)


def _number(
    row: dict[str, str],
    column: str,
    low: float,
    high: float,
    fail: Callable[[str, str], TrackError],
) -> float:
    try:
        value = float(row.get(column) or "")
    except ValueError:
        raise fail(column, "not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise fail(column, f"out of range [{low:g}, {high:g}]")
    return value


def _parse_time(text: str, name: str) -> datetime:
    try:
        return parse_time(text, name)
    except TimeValueError as error:
        raise TrackError(str(error)) from None


def _record(event: FenceEvent) -> dict[str, str]:
    return {
        "device_id": event.device_id,
        "fence_id": event.fence_id,
        "event": event.event,
        "time": format_time(event.time),
    }


def main(argv: list[str] | None = None) -> int:
    """Run ``fences`` on its own, as ``python -m postloan.geofence.cli``."""
    parser = argparse.ArgumentParser(prog="postloan")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
