"""Real trajectories with loans in good standing raise nothing above low."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "risk_alert_rate.py"


@pytest.mark.timeout(120)
def test_alert_rate_good_standing_stays_low() -> None:
    spec = importlib.util.spec_from_file_location("risk_alert_rate", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    vehicle_days, levels = bench.alert_rate()
    above_low = sum(n for name, n in levels.items() if name != "low")
    print(f"alerts above low per 1,000 vehicle-days: {1000 * above_low / vehicle_days}")

    assert vehicle_days > 300
    assert above_low == 0
