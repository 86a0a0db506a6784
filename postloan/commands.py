"""``postloan command``: queue a downlink command such as a fuel cut-off.

The store's commands table is the outbox: this command adds a row, and the
running gateway sends it when the device is connected, then records the
device's answer or a timeout on the same row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from postloan.config import load_config

KINDS = ("fuel_cut", "fuel_restore", "position_query", "report_interval", "text")
FINAL = {"answered", "timeout", "failed"}


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if args.text is not None:
        payload["text"] = args.text
    if args.seconds is not None:
        payload["seconds"] = args.seconds
    if args.kind == "text" and "text" not in payload:
        raise SystemExit(
            "postloan command: kind 'text' needs --text, e.g. --text 'STATUS#'"
        )
    if args.kind == "report_interval" and "seconds" not in payload:
        raise SystemExit("postloan command: kind 'report_interval' needs --seconds")
    return payload


def cmd_command(args: argparse.Namespace) -> int:
    from postloan.store import open_store

    config = load_config(args.config)
    store = open_store(args.store or config.store.url)
    try:
        protocol = args.protocol
        if protocol is None:
            known = {d.device_id: d.protocol for d in store.devices()}
            if args.device not in known:
                print(
                    f"postloan command: device {args.device!r} not found in the store; "
                    "pass --protocol gt06|jt808 to queue it anyway",
                    file=sys.stderr,
                )
                return 2
            protocol = known[args.device]
        command_id = store.add_command(
            args.device,
            protocol,
            args.kind,
            _payload(args),
            created_at=datetime.now(UTC),
        )
        deadline = time.monotonic() + args.wait
        record = None
        while True:
            record = next(
                c for c in store.commands(args.device) if c.command_id == command_id
            )
            if record.status in FINAL or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        print(
            json.dumps(
                {
                    "command_id": command_id,
                    "device_id": args.device,
                    "kind": args.kind,
                    "status": record.status,
                    "response": record.response,
                },
                default=str,
            )
        )
        return 0 if args.wait == 0 or record.status == "answered" else 1
    finally:
        store.close()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "command",
        help="queue a downlink command (fuel cut-off, restore, ...) for a device",
    )
    parser.add_argument("device", help="device id (IMEI or JT808 phone number)")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument(
        "--protocol", choices=["gt06", "jt808"], help="default: from the store"
    )
    parser.add_argument(
        "--text", help="command text for kind 'text' (GT06), e.g. 'STATUS#'"
    )
    parser.add_argument(
        "--seconds", type=int, help="interval for kind 'report_interval'"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to wait for the device's answer (0 = queue and return)",
    )
    parser.add_argument("--store", help="store URL (default: [store] url)")
    parser.set_defaults(handler=cmd_command)
