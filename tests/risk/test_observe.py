"""Observations of a vehicle from the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from postloan.model import Fix
from postloan.risk.observe import observe
from postloan.risk.signals import compute_signals
from postloan.store import open_store


def test_tracker_silent_for_months_is_offline(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    last = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    store.write_fixes([Fix("358735070530281", last, 41.15, -8.61)])
    now = datetime(2026, 4, 15, tzinfo=UTC)

    view = observe(
        store,
        "V1",
        ["358735070530281"],
        now - timedelta(days=14),
        now,
        fences={},
        time_zone="Europe/Lisbon",
    )
    signals = compute_signals(view, now)
    store.close()

    assert [fix.time for fix in view.fixes] == [last]
    assert "offline" in {signal.name for signal in signals}
