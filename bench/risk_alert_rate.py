"""Alert rate of the default rules on the vendored real trajectories.

Every vehicle gets a loan in good standing (nothing due yet) and one tracker;
its fixes are evaluated at the end of every UTC day with data. Prints the
number of vehicle-days, firings by level, and the alerts above low per 1,000
vehicle-days.

Run: .venv/bin/python bench/risk_alert_rate.py
"""

from __future__ import annotations

import collections
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from postloan.loans import Borrower, Contract, LoanHistory, LoanTerms, Method, Vehicle
from postloan.model import Fix
from postloan.notify import MemoryTaskRepository, MessageCenter
from postloan.risk import (
    DEFAULT_RULES,
    Level,
    MemoryRiskRepository,
    Observations,
    RiskEngine,
    load_rules,
)
from postloan.simulators import load_trajectories, vendored_trajectories


def good_contract(vehicle_id: str, first_due: date) -> Contract:
    return Contract(
        contract_id=f"C-{vehicle_id}",
        borrower=Borrower("Borrower", "+351910000000", f"ID-{vehicle_id}", "UTC"),
        vehicle=Vehicle(vin=vehicle_id),
        terms=LoanTerms(
            Decimal("10000.00"), Decimal("0.10"), 36, Method.ANNUITY, first_due
        ),
        dealer="dealer",
        devices=(vehicle_id,),
    )


def alert_rate() -> tuple[int, collections.Counter[str]]:
    """Return the vehicle-days evaluated and the firings counted by level."""
    rules = load_rules(DEFAULT_RULES)
    levels: collections.Counter[str] = collections.Counter()
    vehicle_days = 0
    for path in vendored_trajectories():
        for trajectory in load_trajectories(path):
            fixes = [
                Fix(
                    trajectory.vehicle_id,
                    p.time,
                    p.latitude,
                    p.longitude,
                    speed_kmh=p.speed_kmh or 0.0,
                    valid=p.valid,
                )
                for p in trajectory.points
            ]
            days = sorted({fix.time.date() for fix in fixes})
            contract = good_contract(
                trajectory.vehicle_id, days[-1] + timedelta(days=20)
            )
            engine = RiskEngine(
                MemoryRiskRepository(),
                MessageCenter(MemoryTaskRepository(), {}),
                rules,
            )
            for day in days:
                now = datetime.combine(day + timedelta(days=1), time(0), UTC)
                view = Observations(
                    trajectory.vehicle_id, fixes, devices=(trajectory.vehicle_id,)
                )
                for firing in engine.run(contract, LoanHistory(), view, now):
                    levels[firing.level.value] += 1
                vehicle_days += 1
    return vehicle_days, levels


def main() -> None:
    vehicle_days, levels = alert_rate()
    # Level is a StrEnum, so compare by rank rather than by text.
    above_low = sum(n for name, n in levels.items() if Level(name).rank > 0)
    print(f"vehicle-days: {vehicle_days}")
    print(f"firings by level: {dict(sorted(levels.items()))}")
    print(
        f"alerts above low per 1,000 vehicle-days: "
        f"{1000 * above_low / vehicle_days:.1f}"
    )


if __name__ == "__main__":
    main()
