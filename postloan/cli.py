"""The ``postloan`` command."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime

import psycopg

from postloan import __version__, times
from postloan.config import Config, ConfigError, load_config

log = logging.getLogger("postloan")

Handler = Callable[[argparse.Namespace], int]


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time option with `postloan.times.parse_time`.

    A time without a zone is rejected, as the HTTP API rejects it.
    """
    try:
        return times.parse_time(text)
    except times.TimeValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_decode(args: argparse.Namespace) -> int:
    from postloan.protocols.inspect import decode_hex

    # Arguments form one capture (``78 78 0d ...`` unquoted works too); on
    # standard input each line is its own capture, so a log may mix protocols.
    if args.hex:
        texts: Sequence[str] = [" ".join(args.hex)]
    else:
        texts = [line for line in sys.stdin if line.strip()]
    failed = False
    for text in texts:
        for record in decode_hex(text, utc_offset=args.utc_offset):
            failed = failed or "error" in record
            print(json.dumps(record, ensure_ascii=False))
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    from postloan.runner import run_gateway

    config = _config(args)
    _setup_logging(config.logging.level)
    return run_gateway(config)


def cmd_simulate(args: argparse.Namespace) -> int:
    from postloan.runner import run_simulation

    _setup_logging(args.log_level)
    return run_simulation(
        paths=args.trajectories,
        protocol=args.protocol,
        host=args.host,
        port=args.port,
        speedup=None if args.speedup == 0 else args.speedup,
        devices=args.devices,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from postloan.runner import run_demo

    config = _config(args)
    _setup_logging(args.log_level)
    return run_demo(config, store_url=args.store, paths=args.trajectories)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postloan",
        description="Post-loan risk control for auto finance: tracker gateway, "
        "track store and geofences.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--config", help="path to config.toml (default: built-in defaults)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    decode = sub.add_parser(
        "decode", help="decode hex packets a device sent (JSON Lines on stdout)"
    )
    decode.add_argument(
        "hex", nargs="*", help="hex bytes; spaces allowed; stdin if none"
    )
    decode.add_argument(
        "--utc-offset",
        default=None,
        help="device clock offset such as +08:00 "
        "(default: UTC for GT06, +08:00 for JT808)",
    )
    decode.set_defaults(handler=cmd_decode)

    run = sub.add_parser("run", help="run the gateway, store and fences from config")
    run.set_defaults(handler=cmd_run)

    simulate = sub.add_parser(
        "simulate", help="replay trajectories as trackers against a running gateway"
    )
    simulate.add_argument(
        "trajectories",
        nargs="*",
        help="trajectory files or folders (default: vendored)",
    )
    simulate.add_argument("--protocol", choices=["gt06", "jt808"], default="gt06")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument(
        "--port", type=_port, help="gateway port (default: protocol's)"
    )
    simulate.add_argument(
        "--speedup",
        type=_speedup,
        default=0,
        help="time compression factor; 1 = real time, 0 = as fast as acks allow",
    )
    simulate.add_argument(
        "--devices",
        type=_device_count,
        default=0,
        help="limit to the first N vehicles (0 = all)",
    )
    simulate.add_argument("--log-level", default="INFO")
    simulate.set_defaults(handler=cmd_simulate)

    demo = sub.add_parser(
        "demo",
        help="replay the vendored real trajectories through gateway and store in one "
        "process, as GT06 and JT808 devices, and print a summary",
    )
    demo.add_argument(
        "trajectories", nargs="*", help="trajectory files (default: vendored)"
    )
    demo.add_argument(
        "--store",
        help="store URL (default: sqlite:///var/demo.db, deleted and recreated "
        "on every run; another store is kept and added to)",
    )
    demo.add_argument("--log-level", default="WARNING")
    demo.set_defaults(handler=cmd_demo)

    _add_optional_parsers(sub)
    return parser


def _add_optional_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    from postloan.bus.cli import add_parser as add_worker_parser
    from postloan.commands import add_parser as add_command_parser
    from postloan.geofence.cli import add_parser as add_fences_parser
    from postloan.loans.cli import add_parser as add_loans_parser
    from postloan.risk.cli import add_parser as add_risk_parser
    from postloan.store.cli import add_parser as add_store_parser

    add_store_parser(sub)
    add_fences_parser(sub)
    add_command_parser(sub)
    add_loans_parser(sub)
    add_risk_parser(sub)
    add_worker_parser(sub)


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a TCP port from 1 to 65535, got {text}"
        )
    return port


def _device_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of vehicles, 0 or more (0 = all), got {text!r}"
        )
    return count


def _speedup(text: str) -> float:
    try:
        factor = float(text)
    except ValueError:
        factor = math.nan
    if not math.isfinite(factor) or factor < 0:
        raise argparse.ArgumentTypeError(
            f"expected a time compression factor of 0 or more (1 = real time, "
            f"0 = as fast as acks allow), got {text!r}"
        )
    return factor


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"postloan: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of our output went away (``postloan tracks ... | head``).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except (ValueError, LookupError, OSError, sqlite3.Error, psycopg.Error) as exc:
        # Bad input, a missing file, a busy port or an unreachable database:
        # the message names the value, a traceback would only hide it.
        log.debug("command failed", exc_info=True)
        print(f"postloan {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
