"""``postloan tracks`` and ``postloan db``: exports and maintenance of the store."""

from __future__ import annotations

import argparse
import sys

from postloan.cli import parse_time
from postloan.config import load_config


def cmd_tracks(args: argparse.Namespace) -> int:
    from postloan.store import open_store
    from postloan.store.export import write_csv, write_geojson, write_gpx

    config = load_config(args.config)
    store = open_store(args.store or config.store.url)
    try:
        fixes = store.iter_track(args.device, args.since, args.until)
        writers = {"geojson": write_geojson, "csv": write_csv, "gpx": write_gpx}
        writers[args.format](fixes, sys.stdout)
    finally:
        store.close()
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from postloan.store import open_store

    config = load_config(args.config)
    store = open_store(args.store or config.store.url)
    try:
        store.migrate()
    finally:
        store.close()
    print("migrations applied")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tracks = sub.add_parser("tracks", help="export one device's track")
    tracks.add_argument("device", help="device id (IMEI or JT808 phone number)")
    tracks.add_argument("--since", type=parse_time, help="start, ISO-8601, inclusive")
    tracks.add_argument("--until", type=parse_time, help="end, ISO-8601, exclusive")
    tracks.add_argument(
        "--format", choices=["geojson", "csv", "gpx"], default="geojson"
    )
    tracks.add_argument("--store", help="store URL (default: [store] url)")
    tracks.set_defaults(handler=cmd_tracks)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply schema migrations")
    migrate.add_argument("--store", help="store URL (default: [store] url)")
    migrate.set_defaults(handler=cmd_db_migrate)
