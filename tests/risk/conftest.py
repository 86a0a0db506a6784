"""Shared builders for risk tests: a contract, a real trajectory, fixes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from postloan.loans import Borrower, Contract, LoanTerms, Method, Vehicle
from postloan.simulators import Trajectory, load_trajectories

PORTO = (
    Path(__file__).resolve().parents[2]
    / "postloan/data/trajectories/porto_taxi/test_partial_trajectories.csv"
)


def make_contract(
    devices: tuple[str, ...] = ("TRK1",), first_due: date = date(2014, 9, 23)
) -> Contract:
    return Contract(
        contract_id="C-1",
        borrower=Borrower("Ana Silva", "+351912345678", "BI-1", "Europe/Lisbon"),
        vehicle=Vehicle("WVWZZZ1JZXW000001", "AA-00-01"),
        terms=LoanTerms(
            principal=Decimal("12000.00"),
            annual_rate=Decimal("0.12"),
            term_months=12,
            method=Method.ANNUITY,
            first_due_date=first_due,
        ),
        dealer="dealer-1",
        devices=devices,
    )


@pytest.fixture
def contract() -> Contract:
    return make_contract()


@pytest.fixture(scope="session")
def porto() -> list[Trajectory]:
    return load_trajectories(PORTO)


@pytest.fixture(scope="session")
def taxi_trip(porto: list[Trajectory]) -> Trajectory:
    """Taxi 20000434's 361-point trip of 2014-10-06, 16:14-17:44 UTC."""
    taxi = next(t for t in porto if t.vehicle_id == "20000434")
    points = [p for p in taxi.points if p.time.date() == date(2014, 10, 6)]
    return Trajectory.from_points(taxi.vehicle_id, taxi.source, points)
