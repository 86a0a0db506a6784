"""Store commands: track exports and queries, and database maintenance.

``postloan tracks``, ``stops``, ``mileage``, ``latest`` and ``seen-inside``
read the store named by ``--store`` or ``[store] url``; all but ``tracks``
print one JSON object per line. They open the store without migrating it, so
a read-only database role can run them. ``postloan db migrate`` and
``postloan db maintain`` change the schema.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg

from postloan.cli import parse_time
from postloan.config import Config, load_config
from postloan.times import format_time

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

    from postloan.store import Store


def _settings(args: argparse.Namespace) -> tuple[Config, str]:
    config = load_config(args.config)
    return config, args.store or config.store.url


def _run_query(args: argparse.Namespace, query: Callable[[Store], int]) -> int:
    from postloan.store import open_store

    _, url = _settings(args)
    missing = _missing_sqlite_file(url)
    if missing is not None:
        print(
            f"postloan: store not found: {missing} does not exist; pass --store "
            "(sqlite:///var/demo.db after postloan demo) or run postloan db migrate",
            file=sys.stderr,
        )
        return 1
    store = open_store(url, migrate=False)
    try:
        return query(store)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return _no_schema(exc)
    except psycopg.errors.UndefinedTable as exc:
        return _no_schema(exc)
    finally:
        store.close()


def _missing_sqlite_file(url: str) -> Path | None:
    """Return the path of a missing SQLite store, so that reads never create one."""
    from postloan.store import sqlite_file_of

    path = sqlite_file_of(url)
    return path if path is not None and not path.exists() else None


def _no_schema(error: Exception) -> int:
    print(
        f"postloan: the store has no schema ({error}); run `postloan db migrate`",
        file=sys.stderr,
    )
    return 1


def _print_lines(records: Iterable[Mapping[str, Any]]) -> None:
    for record in records:
        print(json.dumps(record, ensure_ascii=False))


def cmd_tracks(args: argparse.Namespace) -> int:
    from postloan.store.export import write_csv, write_geojson, write_gpx

    writers = {"geojson": write_geojson, "csv": write_csv, "gpx": write_gpx}

    def query(store: Store) -> int:
        if args.device not in store.device_ids():
            print(
                f"postloan tracks: device {args.device!r} has no fixes in this store",
                file=sys.stderr,
            )
            return 1
        if args.simplify_m is None:
            fixes = store.iter_track(args.device, args.since, args.until)
            writers[args.format](fixes, sys.stdout)
        else:
            track = store.track(
                args.device, args.since, args.until, simplify_m=args.simplify_m
            )
            writers[args.format](track, sys.stdout)
        return 0

    return _run_query(args, query)


def cmd_stops(args: argparse.Namespace) -> int:
    from postloan.store import StopRule

    rule = StopRule(
        max_speed_kmh=args.max_speed_kmh,
        radius_m=args.radius_m,
        min_duration=timedelta(minutes=args.min_minutes),
    )

    def query(store: Store) -> int:
        stops = store.stops(args.device, args.since, args.until, rule=rule)
        _print_lines(
            {
                "device_id": stop.device_id,
                "latitude": stop.latitude,
                "longitude": stop.longitude,
                "arrival": format_time(stop.arrival),
                "departure": format_time(stop.departure),
                "duration_s": stop.duration.total_seconds(),
                "fixes": stop.fixes,
            }
            for stop in stops
        )
        return 0

    return _run_query(args, query)


def cmd_mileage(args: argparse.Namespace) -> int:
    def query(store: Store) -> int:
        days = store.daily_mileage(
            args.device,
            args.since,
            args.until,
            zone=args.zone,
            max_speed_kmh=args.max_speed_kmh,
        )
        _print_lines(
            {
                "device_id": day.device_id,
                "day": day.day.isoformat(),
                "zone": args.zone.key,
                "distance_km": round(day.distance_km, 3),
                "fixes": day.fixes,
                "jumps_filtered": day.jumps_filtered,
            }
            for day in days
        )
        return 0

    return _run_query(args, query)


def cmd_latest(args: argparse.Namespace) -> int:
    selected = set(args.devices)

    def query(store: Store) -> int:
        _print_lines(
            {
                "device_id": fix.device_id,
                "time": format_time(fix.time),
                "latitude": fix.latitude,
                "longitude": fix.longitude,
                "speed_kmh": fix.speed_kmh,
                "course": fix.course,
                "valid": fix.valid,
            }
            for fix in store.latest_positions()
            if not selected or fix.device_id in selected
        )
        return 0

    return _run_query(args, query)


def cmd_seen_inside(args: argparse.Namespace) -> int:
    try:
        area = load_area(args.polygon)
    except (OSError, ValueError) as exc:
        print(f"postloan: {exc}", file=sys.stderr)
        return 2

    def query(store: Store) -> int:
        sightings = store.seen_inside(
            area, args.since, args.until, valid_only=not args.include_invalid
        )
        _print_lines(
            {
                "device_id": sighting.device_id,
                "vehicle_ids": list(sighting.vehicle_ids),
                "first_seen": format_time(sighting.first_seen),
                "last_seen": format_time(sighting.last_seen),
                "fixes": sighting.fixes,
            }
            for sighting in sightings
        )
        return 0

    return _run_query(args, query)


def load_area(path: str | Path) -> BaseGeometry:
    """Read a (multi)polygon from a GeoJSON geometry, Feature or FeatureCollection.

    The polygons of a FeatureCollection are merged into one area. Raises
    ValueError for other geometry types and for invalid JSON.
    """
    import shapely
    from shapely.geometry import shape

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == "FeatureCollection":
        geometries = [f.get("geometry") for f in document.get("features", [])]
    elif kind == "Feature":
        geometries = [document.get("geometry")]
    else:
        geometries = [document]
    shapes = [shape(g) for g in geometries if g]
    bad = sorted({s.geom_type for s in shapes} - {"Polygon", "MultiPolygon"})
    if not shapes or bad:
        found = ", ".join(bad) or "no geometry"
        raise ValueError(
            f"{path} must hold Polygon or MultiPolygon geometries, got {found}"
        )
    return shapely.union_all(shapes)


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from postloan.store import open_store, storage_layout

    config, url = _settings(args)
    store = open_store(url, migrate=False, layout=storage_layout(config.store))
    try:
        store.migrate()
    finally:
        store.close()
    print("migrations applied")
    return 0


def cmd_db_maintain(args: argparse.Namespace) -> int:
    from postloan.store import StoreNotFoundError, open_existing_store, storage_layout

    config, url = _settings(args)
    layout = storage_layout(config.store)
    try:
        store = open_existing_store(url, migrate=False, layout=layout)
    except StoreNotFoundError as exc:
        print(f"postloan db maintain: {exc}", file=sys.stderr)
        return 2
    try:
        report = store.maintain()
    finally:
        store.close()
    for name in report.created:
        print(f"created partition {name}")
    for name in report.dropped:
        print(f"dropped partition {name}")
    for name in report.skipped:
        print(f"skipped {name}: locks busy, run again later", file=sys.stderr)
    print(f"maintenance done: {report.rows_moved} rows moved from default partitions")
    return 1 if report.skipped else 0


def _zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise argparse.ArgumentTypeError(
            f"unknown time zone {text!r}: use an IANA name such as Europe/Lisbon"
        ) from exc


def _window_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--since",
        type=parse_time,
        required=required,
        help="start, inclusive: ISO 8601 with Z or an offset",
    )
    parser.add_argument(
        "--until",
        type=parse_time,
        required=required,
        help="end, exclusive: ISO 8601 with Z or an offset",
    )
    parser.add_argument("--store", help="store URL (default: [store] url)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_tracks_parser(sub)
    _add_query_parsers(sub)
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply schema migrations")
    migrate.add_argument("--store", help="store URL (default: [store] url)")
    migrate.set_defaults(handler=cmd_db_migrate)
    maintain = db_sub.add_parser(
        "maintain",
        help="create time partitions ahead, adopt fixes from the default "
        "partition and drop expired ones (PostgreSQL without TimescaleDB)",
    )
    maintain.add_argument("--store", help="store URL (default: [store] url)")
    maintain.set_defaults(handler=cmd_db_maintain)


def _add_tracks_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    tracks = sub.add_parser("tracks", help="export one device's track")
    tracks.add_argument("device", help="device id (IMEI or JT808 phone number)")
    _window_arguments(tracks, required=False)
    tracks.add_argument(
        "--format", choices=["geojson", "csv", "gpx"], default="geojson"
    )
    tracks.add_argument(
        "--simplify-m",
        type=float,
        metavar="M",
        help="thin the track with Douglas-Peucker at this tolerance in metres, "
        "keeping stops (reads the whole window into memory)",
    )
    tracks.set_defaults(handler=cmd_tracks)


def _add_query_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    stops = sub.add_parser("stops", help="list where a device stopped")
    stops.add_argument("device", help="device id (IMEI or JT808 phone number)")
    _window_arguments(stops, required=True)
    stops.add_argument(
        "--max-speed-kmh", type=float, default=5.0, help="slower than this is stopped"
    )
    stops.add_argument(
        "--radius-m", type=float, default=100.0, help="radius of one stop, metres"
    )
    stops.add_argument(
        "--min-minutes", type=float, default=5.0, help="shortest stop, minutes"
    )
    stops.set_defaults(handler=cmd_stops)

    mileage = sub.add_parser("mileage", help="distance per day from a device's fixes")
    mileage.add_argument("device", help="device id (IMEI or JT808 phone number)")
    _window_arguments(mileage, required=True)
    mileage.add_argument(
        "--zone",
        type=_zone,
        default=ZoneInfo("UTC"),
        help="IANA time zone whose calendar days are summed (default: UTC)",
    )
    mileage.add_argument(
        "--max-speed-kmh",
        type=float,
        default=250.0,
        help="a fix implying a faster move from the last one is a jump, skipped",
    )
    mileage.set_defaults(handler=cmd_mileage)

    latest = sub.add_parser("latest", help="each device's latest position")
    latest.add_argument("devices", nargs="*", help="device ids (default: all)")
    latest.add_argument("--store", help="store URL (default: [store] url)")
    latest.set_defaults(handler=cmd_latest)

    seen = sub.add_parser(
        "seen-inside", help="devices and vehicles with a fix inside a polygon"
    )
    seen.add_argument("polygon", help="GeoJSON file with Polygon/MultiPolygon areas")
    _window_arguments(seen, required=True)
    seen.add_argument(
        "--include-invalid",
        action="store_true",
        help="also count fixes the device marked invalid (no GPS lock)",
    )
    seen.set_defaults(handler=cmd_seen_inside)
