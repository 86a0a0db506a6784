"""The gateway's batch writer against real stores: spool, outages, back-pressure."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from postloan.config import Config, GatewayConfig, StoreConfig
from postloan.gateway import Gateway
from postloan.gateway.writer import REJECTED_FILE, BatchWriter
from postloan.model import Fix
from postloan.protocols.base import Location
from postloan.protocols.gt06_encode import encode_location
from postloan.store import PostgresStore, Store
from postloan.store.spool import Spool

if TYPE_CHECKING:
    from conftest import PostgresCluster

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def fixes_of(device_id: str, count: int, start: int = 0) -> list[Fix]:
    return [
        Fix(device_id, T0 + timedelta(seconds=10 * i), 22.5 + i * 1e-4, 114.05)
        for i in range(start, start + count)
    ]


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=60))


async def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


def writer_for(store: Store, spool_dir: Path | None, **options: Any) -> BatchWriter:
    spool = None if spool_dir is None else Spool(spool_dir)
    settings: dict[str, Any] = {"batch_size": 50, "flush_interval": 0.005}
    settings.update(options)
    return BatchWriter(store, spool=spool, retry_max_delay=0.3, **settings)


def test_writer_spools_during_outage_and_drains_after(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    store = PostgresStore(pg_cluster.dsn, connect_timeout_s=2)
    store.migrate()
    before, during = fixes_of("a", 20), fixes_of("a", 30, start=20)

    async def body() -> None:
        writer = writer_for(store, tmp_path / "spool")
        writer.start()
        await writer.submit(before)
        pg_cluster.stop()

        await asyncio.wait_for(writer.submit(during), 10)
        spooled = writer.stats.spool_records
        pg_cluster.start()
        drained = await writer.wait_spool_drained(20)
        await writer.close()

        assert spooled >= 1
        assert drained
        assert writer.stats.fixes_spooled == 30
        assert writer.stats.spool_records == 0

    try:
        run(body)
        assert store.track("a") == before + during
    finally:
        store.close()
    assert list((tmp_path / "spool").glob("*.seg")) == []


def test_writer_drains_spool_left_by_earlier_writer(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    store = PostgresStore(pg_cluster.dsn, connect_timeout_s=2)
    store.migrate()
    spooled = fixes_of("b", 40)

    async def outage() -> None:
        writer = writer_for(store, tmp_path / "spool")
        writer.start()
        pg_cluster.stop()
        await asyncio.wait_for(writer.submit(spooled), 10)
        await writer.close()

    async def restart() -> None:
        writer = writer_for(store, tmp_path / "spool")
        writer.start()
        drained = await writer.wait_spool_drained(20)
        await writer.close()
        assert drained

    try:
        run(outage)
        pg_cluster.start()
        run(restart)
        assert store.track("b") == spooled
    finally:
        store.close()


def test_writer_without_spool_holds_ack_until_store_returns(
    pg_cluster: PostgresCluster,
) -> None:
    store = PostgresStore(pg_cluster.dsn, connect_timeout_s=2)
    store.migrate()
    fixes = fixes_of("c", 10)

    async def body() -> None:
        writer = writer_for(store, None)
        writer.start()
        pg_cluster.stop()

        future = writer.submit(fixes)
        assert future is not None
        await asyncio.sleep(1.0)
        acked_during_outage = future.done()
        await asyncio.to_thread(pg_cluster.start)
        await asyncio.wait_for(future, 20)
        await writer.close()

        assert not acked_during_outage
        assert writer.stats.write_failures >= 1

    try:
        run(body)
        assert store.count_fixes("c") == 10
    finally:
        store.close()


def test_writer_sets_invalid_fix_aside(store: Store, tmp_path: Path) -> None:
    good = fixes_of("d", 9)
    bad = Fix("d", T0 + timedelta(hours=1), 1.0, 2.0, attributes={"x": math.nan})

    async def body() -> None:
        writer = writer_for(store, tmp_path / "spool")
        writer.start()
        await asyncio.wait_for(writer.submit([*good[:4], bad, *good[4:]]), 10)
        await writer.close()

        assert writer.stats.records_rejected == 1

    run(body)

    assert store.track("d") == good
    lines = (tmp_path / "spool" / REJECTED_FILE).read_text().splitlines()
    assert len(lines) == 1
    rejected = json.loads(lines[0])["batch"]["fixes"]
    assert [(device, latitude) for device, _, latitude, *_ in rejected] == [("d", 1.0)]


@pytest.mark.postgres
def test_writer_sets_aside_fix_postgres_cannot_store(
    postgres_store: PostgresStore, tmp_path: Path
) -> None:
    good = fixes_of("e", 5)
    # jsonb has no representation for the NUL character.
    bad = Fix("e", T0 + timedelta(hours=1), 1.0, 2.0, attributes={"x": "a\x00b"})

    async def body() -> None:
        writer = writer_for(postgres_store, tmp_path / "spool")
        writer.start()
        await asyncio.wait_for(writer.submit([bad, *good]), 10)
        await writer.close()

    run(body)

    assert postgres_store.track("e") == good
    assert (tmp_path / "spool" / REJECTED_FILE).exists()


def test_writer_spools_batch_with_unencodable_fix(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    store = PostgresStore(pg_cluster.dsn, connect_timeout_s=2)
    store.migrate()
    good = fixes_of("f", 6)
    naive = Fix("f", datetime(2024, 5, 1, 9, 0), 1.0, 2.0)

    async def body() -> None:
        writer = writer_for(store, tmp_path / "spool")
        writer.start()
        pg_cluster.stop()
        await asyncio.wait_for(writer.submit([*good[:3], naive, *good[3:]]), 10)
        await asyncio.to_thread(pg_cluster.start)
        drained = await writer.wait_spool_drained(20)
        await writer.close()

        assert drained
        assert writer.stats.records_rejected == 1

    try:
        run(body)
        assert store.track("f") == good
    finally:
        store.close()


# --- back-pressure ---------------------------------------------------------------

GT06_LOGIN = bytes.fromhex("78780d010358735070530281007718630d0a")


def gt06_location(serial: int) -> bytes:
    """Build a GT06 0x12 location packet; its time advances a second per serial."""
    location = Location(T0 + timedelta(seconds=serial), 22.5, 114.05)
    return encode_location(location, serial, msg_type=0x12)


@pytest.mark.postgres
def test_gateway_stops_reading_while_database_is_slow(
    postgres_store: PostgresStore, pg_dsn: str, pg_schema: str
) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=0, jt808_port=-1, nmea_port=-1
        ),
        store=StoreConfig(batch_size=10, max_pending=40, spool_dir=""),
    )
    frames = [gt06_location(serial) for serial in range(1, 501)]

    async def body() -> None:
        blocker = await psycopg.AsyncConnection.connect(pg_dsn)
        await blocker.execute(
            f'LOCK TABLE "{pg_schema}".positions IN ACCESS EXCLUSIVE MODE'
        )
        async with Gateway(config, postgres_store) as gateway:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", gateway.ports["gt06"]
            )
            writer.write(GT06_LOGIN)
            await reader.readexactly(10)
            for start in range(0, len(frames), 10):
                writer.write(b"".join(frames[start : start + 10]))
                await asyncio.sleep(0.005)
            await asyncio.sleep(1.0)
            read_while_blocked = gateway.writer.stats.fixes_submitted
            pending_while_blocked = gateway.writer.pending_fixes

            await blocker.rollback()
            await wait_until(lambda: gateway.writer.stats.fixes_stored == 500)
            writer.close()

        await blocker.close()
        # The session stops reading once max_pending fixes wait; what it
        # read before pausing is at most one 10-frame write beyond that.
        assert read_while_blocked < len(frames)
        assert pending_while_blocked <= 40 + 10 + 10

    run(body)

    assert postgres_store.count_fixes() == 500
