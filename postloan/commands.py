"""``postloan command`` and ``postloan cancel-command``: downlink commands.

The store's commands table is the outbox: ``command`` adds a row, and the
running gateway sends it when the device is connected, then records the
device's response or a timeout on the same row. A queued command expires after
its time to live, so a fuel cut-off an operator gave up on is never sent
hours later when the car reconnects.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from postloan.config import load_config
from postloan.times import format_time, parse_time

KINDS_BY_PROTOCOL = {
    "gt06": ("fuel_cut", "fuel_restore", "report_interval", "text"),
    "jt808": (
        "fuel_cut",
        "fuel_restore",
        "position_query",
        "report_interval",
        "terminal_control",
    ),
}
KINDS = tuple(sorted({kind for kinds in KINDS_BY_PROTOCOL.values() for kind in kinds}))
FINAL = {"answered", "timeout", "failed"}
MAX_INTERVAL_S = 86_400
MAX_TTL_S = 86_400


class CommandError(ValueError):
    """A command request that cannot be queued as given."""


def build_payload(
    protocol: str,
    kind: str,
    *,
    text: str | None = None,
    seconds: int | None = None,
    command_word: int | None = None,
    ttl_s: float,
    now: datetime,
) -> dict[str, Any]:
    """Check a command against its protocol and return the payload to queue."""
    if kind not in KINDS_BY_PROTOCOL.get(protocol, ()):
        known = ", ".join(KINDS_BY_PROTOCOL.get(protocol, ()))
        raise CommandError(
            f"{protocol} devices take no {kind!r} command; known: {known}"
        )
    payload: dict[str, Any] = {}
    if kind == "text":
        if not text:
            raise CommandError("kind 'text' needs --text, e.g. --text 'STATUS#'")
        payload["text"] = text
    if kind == "report_interval":
        if seconds is None or not 1 <= seconds <= MAX_INTERVAL_S:
            raise CommandError(
                f"kind 'report_interval' needs --seconds from 1 to {MAX_INTERVAL_S}, "
                f"got {seconds}"
            )
        payload["seconds"] = seconds
    if kind == "terminal_control":
        if command_word is None or not 0 <= command_word <= 0xFF:
            raise CommandError(
                "kind 'terminal_control' needs --command-word from 0 to 255, "
                f"got {command_word}"
            )
        payload["command_word"] = command_word
    if not 0 < ttl_s <= MAX_TTL_S:
        # A fuel cut-off must not wait days for a car to reconnect; NaN fails too.
        raise CommandError(f"--ttl must be from 1 to {MAX_TTL_S} seconds, got {ttl_s}")
    payload["expires_at"] = format_time(now + timedelta(seconds=ttl_s))
    return payload


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def cmd_command(args: argparse.Namespace) -> int:
    from postloan.store import StoreNotFoundError, open_existing_store

    config = load_config(args.config)
    try:
        store = open_existing_store(args.store or config.store.url, migrate=True)
    except StoreNotFoundError as exc:
        print(f"postloan command: {exc}", file=sys.stderr)
        return 2
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
        now = datetime.now(UTC)
        ttl = args.ttl if args.ttl is not None else config.gateway.command_ttl_s
        try:
            payload = build_payload(
                protocol,
                args.kind,
                text=args.text,
                seconds=args.seconds,
                command_word=args.command_word,
                ttl_s=ttl,
                now=now,
            )
        except CommandError as exc:
            print(f"postloan command: {exc}", file=sys.stderr)
            return 2
        command_id = store.add_command(
            args.device, protocol, args.kind, payload, created_at=now
        )
        record = _wait(store, args.device, command_id, args.wait)
        result: dict[str, Any] = {
            "command_id": command_id,
            "device_id": args.device,
            "kind": args.kind,
            "status": record.status,
            "response": record.response,
        }
        if record.status == "queued":
            result["note"] = (
                f"still queued: it is sent if the device connects before "
                f"{payload['expires_at']}; cancel it with "
                f"'postloan cancel-command {command_id}'"
            )
        print(json.dumps(result, default=str))
        return 0 if args.wait == 0 or record.status == "answered" else 1
    finally:
        store.close()


def _wait(store: Any, device_id: str, command_id: int, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        record = next(
            c for c in store.commands(device_id) if c.command_id == command_id
        )
        if record.status in FINAL or time.monotonic() >= deadline:
            return record
        time.sleep(0.5)


def cmd_cancel(args: argparse.Namespace) -> int:
    from postloan.store import (
        CommandNotFoundError,
        StoreNotFoundError,
        open_existing_store,
    )

    config = load_config(args.config)
    try:
        store = open_existing_store(args.store or config.store.url, migrate=True)
    except StoreNotFoundError as exc:
        print(f"postloan cancel-command: {exc}", file=sys.stderr)
        return 2
    try:
        found = [c for c in store.commands() if c.command_id == args.command_id]
        if not found:
            raise CommandNotFoundError(args.command_id)
        if found[0].status != "queued":
            print(
                f"postloan cancel-command: command {args.command_id} is already "
                f"{found[0].status}; only a queued command can be cancelled",
                file=sys.stderr,
            )
            return 1
        store.update_command(
            args.command_id,
            "cancelled",
            at=datetime.now(UTC),
            response={"error": "cancelled by an operator before it was sent"},
        )
        print(json.dumps({"command_id": args.command_id, "status": "cancelled"}))
        return 0
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
        "--protocol", choices=sorted(KINDS_BY_PROTOCOL), help="default: from the store"
    )
    parser.add_argument("--text", help="command text for kind 'text' (GT06)")
    parser.add_argument(
        "--seconds", type=int, help="reporting interval for kind 'report_interval'"
    )
    parser.add_argument(
        "--command-word",
        type=lambda text: int(text, 0),
        help="JT808 0x8105 command word for kind 'terminal_control', e.g. 0x64",
    )
    parser.add_argument(
        "--ttl",
        type=float,
        help="seconds the command may wait for the device to connect "
        "(default: [gateway] command_ttl_s)",
    )
    parser.add_argument(
        "--wait",
        type=_non_negative,
        default=0.0,
        help="seconds to wait for the device's response (0 = queue and return)",
    )
    parser.add_argument("--store", help="store URL (default: [store] url)")
    parser.set_defaults(handler=cmd_command)

    cancel = sub.add_parser("cancel-command", help="cancel a queued downlink command")
    cancel.add_argument("command_id", type=int)
    cancel.add_argument("--store", help="store URL (default: [store] url)")
    cancel.set_defaults(handler=cmd_cancel)


def command_expired(payload: Mapping[str, Any], now: datetime) -> bool:
    """Return True if the payload's ``expires_at`` (the command's TTL) has passed.

    A payload without a readable ``expires_at`` does not expire by it.
    """
    expires_at = payload.get("expires_at")
    if not isinstance(expires_at, str):
        return False
    try:
        return parse_time(expires_at, "expires_at") <= now
    except ValueError:
        return False
