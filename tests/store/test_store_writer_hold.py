"""The batch writer kept from its store: spooled acknowledgements, then drain.

`postloan run` calls `hold_store` when the database is down at start, and
`release_store` once the schema is migrated. These tests do the same with a
real SQLite store.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from postloan.gateway.writer import BatchWriter
from postloan.model import Fix
from postloan.store import SQLiteStore
from postloan.store.spool import Spool

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def fixes_of(device_id: str, count: int, start: int = 0) -> list[Fix]:
    return [
        Fix(device_id, T0 + timedelta(seconds=i), 48.1 + i * 1e-5, 11.5)
        for i in range(start, start + count)
    ]


def test_held_writer_spools_then_drains_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tracks.db")
    store.migrate()
    writer = BatchWriter(
        store, spool=Spool(tmp_path / "spool"), batch_size=20, flush_interval=0.005
    )
    first, second = fixes_of("dev-1", 100), fixes_of("dev-1", 50, start=100)

    async def body() -> tuple[int, int, int, int]:
        writer.hold_store()
        writer.start()
        futures = [writer.submit([fix]) for fix in first]
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        stored_while_held = store.count_fixes()
        spooled_while_held = writer.stats.fixes_spooled
        writer.release_store()
        futures = [writer.submit([fix]) for fix in second]
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert await writer.wait_spool_drained(10)
        await writer.close()
        stats = writer.stats
        return (
            stored_while_held,
            spooled_while_held,
            stats.fixes_spooled,
            stats.fixes_drained,
        )

    try:
        stored_while_held, spooled_while_held, spooled, drained = asyncio.run(body())
        track = store.track("dev-1")
    finally:
        store.close()

    assert stored_while_held == 0
    assert spooled_while_held == len(first)
    # Batches that come while the spool drains are spooled behind it.
    assert drained == spooled
    assert track == [*first, *second]
    assert writer.store_held is False


def test_held_writer_without_spool_keeps_batches_in_memory(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tracks.db")
    store.migrate()
    writer = BatchWriter(store, batch_size=20, flush_interval=0.005)
    fixes = fixes_of("dev-2", 30)

    async def body() -> tuple[bool, int]:
        writer.hold_store()
        writer.start()
        future = writer.submit(fixes)
        assert future is not None
        await asyncio.sleep(0.5)
        acknowledged_while_held = future.done()
        stored_while_held = store.count_fixes()
        writer.release_store()
        await asyncio.wait_for(future, 15)
        await writer.close()
        return acknowledged_while_held, stored_while_held

    try:
        acknowledged_while_held, stored_while_held = asyncio.run(body())
        count = store.count_fixes()
    finally:
        store.close()

    assert acknowledged_while_held is False
    assert stored_while_held == 0
    assert count == len(fixes)
