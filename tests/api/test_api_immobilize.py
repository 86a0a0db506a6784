"""Immobilize requests name a real contract and a tracker of its car."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from api_support import NOW, auth
from fastapi.testclient import TestClient

from postloan.api import ApiContext
from postloan.loans import LoanHistory


def _request(client: TestClient, **fields: str) -> tuple[int, dict[str, object]]:
    body = {"contract_id": "C-1", "device_id": "860000000000001", "reason": "M3"}
    body.update(fields)
    response = client.post("/immobilize", json=body, headers=auth("admin"))
    return response.status_code, response.json()


def test_immobilize_unknown_contract_404(client: TestClient, bound: ApiContext) -> None:
    status, body = _request(client, contract_id="NOPE")

    assert status == 404
    assert body["field"] == "contract_id"
    assert body["value"] == "NOPE"


def test_immobilize_unknown_device_404(client: TestClient, bound: ApiContext) -> None:
    status, body = _request(client, device_id="013260000000")

    assert status == 404
    assert body["field"] == "device_id"


def test_immobilize_device_of_other_car_422(
    client: TestClient, bound: ApiContext
) -> None:
    status, body = _request(client, device_id="860000000000009")

    assert status == 422
    assert body["field"] == "device_id"
    assert "device 860000000000009" in str(body["error"])
    assert "contract C-1" in str(body["error"])
    assert "LSVAU2180N2183294" in str(body["error"])


def test_immobilize_after_unbinding_422(client: TestClient, bound: ApiContext) -> None:
    bound.store.unbind_device("860000000000001", at=NOW - timedelta(days=1))

    status, body = _request(client)

    assert status == 422
    assert body["field"] == "device_id"


def test_immobilize_not_overdue_needs_override(
    client: TestClient, bound: ApiContext
) -> None:
    context = bound
    assert context.ledger is not None
    # First installment due after the API clock: DPD 0.
    contract, _ = context.ledger.load("C-1")
    terms = replace(contract.terms, first_due_date=NOW.date() + timedelta(days=10))
    context.ledger.save(replace(contract, terms=terms), LoanHistory())

    rejected_status, rejected = _request(client)
    accepted_status, accepted = _request(client, override_reason="stolen car report")

    assert rejected_status == 422
    assert rejected["field"] == "override_reason", rejected["error"]
    assert "not overdue (DPD 0" in str(rejected["error"])
    assert accepted_status == 201
    assert accepted["override_reason"] == "stolen car report"


def test_immobilize_overdue_contract_201(client: TestClient, bound: ApiContext) -> None:
    status, body = _request(client)

    assert status == 201
    assert body["status"] == "pending_approval"
    assert body["override_reason"] is None
