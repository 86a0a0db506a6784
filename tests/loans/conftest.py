"""Contracts for the ledger tests: a 100,000.00 loan at 12 % over 12 months."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from postloan.loans.contracts import Borrower, Contract, Vehicle
from postloan.loans.dates import DayCount
from postloan.loans.schedule import LoanTerms, Method

ContractFactory = Callable[..., Contract]


def build_contract(
    contract_id: str = "C-1",
    principal: str = "100000.00",
    annual_rate: str = "0.12",
    months: int = 12,
    method: Method = Method.ANNUITY,
    first_due: date = date(2026, 1, 31),
    day_count: DayCount = DayCount.THIRTY_360,
    **fields: Any,
) -> Contract:
    """Return an active contract; keyword fields override Contract fields."""
    terms = LoanTerms(
        Decimal(principal), Decimal(annual_rate), months, method, first_due, day_count
    )
    values: dict[str, Any] = {
        "contract_id": contract_id,
        "borrower": Borrower(
            "Wang Fang", "+8613800138000", "110101199003074514", "Asia/Shanghai"
        ),
        "vehicle": Vehicle("LSVAU2180N2183294", "粤B12345"),
        "terms": terms,
        "dealer": "Dealer Guangzhou North",
        "devices": ("358735070530281",),
    }
    values.update(fields)
    return Contract(**values)


@pytest.fixture
def make_contract() -> ContractFactory:
    return build_contract


@pytest.fixture
def contract() -> Contract:
    return build_contract()
