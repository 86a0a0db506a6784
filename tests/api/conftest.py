"""An API app over a real store, a JSON ledger and risk state, one token a role."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from api_support import ID_NUMBER, NOW, PHONE, PRINCIPALS
from fastapi.testclient import TestClient

from postloan.api import ApiContext, MemoryAuditLog, TokenTable, create_app, hash_token
from postloan.loans import Borrower, Contract, LoanHistory, LoanTerms, Method, Vehicle
from postloan.loans.jsonledger import JsonLedger
from postloan.model import Fix
from postloan.notify import MemoryTaskRepository
from postloan.risk import Case, CaseState, MemoryRiskRepository
from postloan.store import Store


def make_contract(contract_id: str, device_id: str) -> Contract:
    return Contract(
        contract_id=contract_id,
        borrower=Borrower("Wang Fang", PHONE, ID_NUMBER, "Asia/Shanghai"),
        vehicle=Vehicle("LSVAU2180N2183294", "京A12345"),
        terms=LoanTerms(
            principal=Decimal("90000.00"),
            annual_rate=Decimal("0.08"),
            term_months=12,
            method=Method.ANNUITY,
            first_due_date=date(2024, 1, 15),
        ),
        dealer="dealer-1",
        devices=(device_id,),
    )


@pytest.fixture
def context(store: Store, tmp_path: Path) -> ApiContext:
    ledger = JsonLedger(tmp_path / "ledger")
    risk = MemoryRiskRepository()
    # C-1 is worked by collector c1, C-2 is outsourced to agency a1, C-3 has
    # no case.
    cases = {
        "C-1": Case("case-1", "C-1", CaseState.COLLECTION, collector="c1"),
        "C-2": Case("case-2", "C-2", CaseState.OUTSOURCED, collector="c2", agency="a1"),
    }
    for number, contract_id in enumerate(("C-1", "C-2", "C-3"), start=1):
        ledger.save(
            make_contract(contract_id, f"86000000000000{number}"), LoanHistory()
        )
        if contract_id in cases:
            risk.save_case(cases[contract_id])
    store.touch_device("860000000000001", "gt06", seen_at=NOW)
    store.write_fixes(
        [
            Fix("860000000000001", NOW.replace(minute=m), 31.2 + m / 1000, 121.4)
            for m in range(5)
        ]
    )
    tokens = TokenTable({hash_token(t): p for t, p in PRINCIPALS.items()})
    return ApiContext(
        store=store,
        tokens=tokens,
        ledger=ledger,
        risk=risk,
        tasks=MemoryTaskRepository(),
        audit=MemoryAuditLog(),
        clock=lambda: NOW,
    )


@pytest.fixture
def bound(context: ApiContext) -> ApiContext:
    """The context with tracker 1 fitted to the contracts' car and tracker 9
    fitted to another car, for 90 days up to the API clock."""
    store = context.store
    store.upsert_vehicle("car-1", vin="LSVAU2180N2183294")
    store.upsert_vehicle("car-9", vin="LFV2A21K5G4000009")
    store.bind_device("860000000000001", "car-1", valid_from=NOW - timedelta(days=90))
    store.touch_device("860000000000009", "gt06", seen_at=NOW)
    store.bind_device("860000000000009", "car-9", valid_from=NOW - timedelta(days=90))
    return context


@pytest.fixture
def client(context: ApiContext) -> Iterator[TestClient]:
    with TestClient(create_app(context), base_url="http://127.0.0.1") as test_client:
        yield test_client
