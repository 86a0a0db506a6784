"""``postloan worker ROLE``: a store, fence or risk consumer of the MQTT bus."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from postloan.config import Config, ConfigError, load_config

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker",
        help="consume stored fixes and device events from the MQTT bus "
        "([bus] url) as a store, fence or risk worker",
    )
    worker.add_argument("role", choices=["store", "fence", "risk"])
    worker.add_argument(
        "--index",
        type=int,
        help="this worker's index, 0 to [bus] worker_count - 1 "
        "(default: [bus] worker_index)",
    )
    worker.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from dataclasses import replace

    config = load_config(args.config)
    if args.index is not None:
        config = replace(config, bus=replace(config.bus, worker_index=args.index))
    logging.basicConfig(
        level=config.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run_worker(config, args.role)


def run_worker(config: Config, role: str) -> int:
    """Consume the bus as `role` until SIGINT or SIGTERM.

    A worker started while its database is down waits for it, retrying the
    schema migration with back-off, and consumes once it is migrated.
    """
    from postloan.bus.worker import consume
    from postloan.runner import migrate_when_available, run_async
    from postloan.store import open_store, storage_layout

    if not config.bus.url:
        raise ConfigError(
            "[bus] url is missing: set it to the MQTT broker, e.g. mqtt://127.0.0.1:1883"
        )
    store = open_store(
        config.store.url, migrate=False, layout=storage_layout(config.store)
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if not await migrate_when_available(store, stop):
            return
        await consume(config.bus, role, build_consumer(config, role, store), stop)
        log.info("%s worker stopped", role)

    try:
        run_async(serve(), config.gateway.event_loop)
    finally:
        store.close()
    return 0


def build_consumer(config: Config, role: str, store: Any) -> Any:
    """Return the consumer of one role."""
    from postloan.bus.risk import build_risk_consumer
    from postloan.bus.worker import FenceConsumer, StoreConsumer
    from postloan.runner import fence_checker

    if role == "store":
        return StoreConsumer(store)
    if role == "fence":
        check = fence_checker(config)
        if check is None:
            raise ConfigError(
                "[geofence] file is missing: a fence worker needs a GeoJSON fence file"
            )
        return FenceConsumer(store, check)
    return build_risk_consumer(config, store)


def main(argv: list[str] | None = None) -> int:
    """Run ``worker ROLE`` alone, as ``python -m postloan.bus.cli worker ROLE``."""
    parser = argparse.ArgumentParser(prog="postloan")
    parser.add_argument("--config", help="path to config.toml")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except ConfigError as exc:
        print(f"postloan worker: configuration error: {exc}")
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
