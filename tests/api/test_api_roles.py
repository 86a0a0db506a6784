"""What each role may read and write, masking of borrower data, and the audit log."""

from __future__ import annotations

import pytest
from api_support import ID_NUMBER, PHONE, auth
from fastapi.testclient import TestClient

from postloan.api import ApiContext


def test_request_without_token_is_401(client: TestClient) -> None:
    response = client.get("/cases")

    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]


def test_request_unknown_token_is_401(client: TestClient) -> None:
    response = client.get("/cases", headers=auth("not-a-token"))

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("admin", ["C-1", "C-2"]),
        ("analyst", ["C-1", "C-2"]),
        ("collector-c1", ["C-1"]),
        ("collector-c2", ["C-2"]),
        ("agency-a1", ["C-2"]),
    ],
)
def test_cases_listed_per_role(
    client: TestClient, token: str, expected: list[str]
) -> None:
    response = client.get("/cases", headers=auth(token))

    assert [case["contract_id"] for case in response.json()] == expected


def test_collector_reads_other_collectors_case_404(client: TestClient) -> None:
    response = client.get("/cases/C-2", headers=auth("collector-c1"))

    assert response.status_code == 404


def test_collector_moves_other_collectors_case_404(client: TestClient) -> None:
    body = {"event": "assign_collection", "reason": "test"}

    response = client.post(
        "/cases/C-2/transitions", json=body, headers=auth("collector-c1")
    )

    assert response.status_code == 404


def test_agency_sees_no_unassigned_contract(client: TestClient) -> None:
    listed = client.get("/contracts", headers=auth("agency-a1"))
    unassigned = client.get("/contracts/C-3", headers=auth("agency-a1"))

    assert [c["contract_id"] for c in listed.json()] == ["C-2"]
    assert unassigned.status_code == 404


def test_analyst_cannot_move_case(client: TestClient) -> None:
    body = {"event": "order_repossession", "reason": "test"}

    response = client.post("/cases/C-1/transitions", json=body, headers=auth("analyst"))

    assert response.status_code == 403


def test_collector_cannot_assign_agency(client: TestClient) -> None:
    body = {"event": "assign_collection", "reason": "no answer", "agency": "a1"}

    response = client.post(
        "/cases/C-1/transitions", json=body, headers=auth("collector-c1")
    )

    assert response.status_code == 403
    assert response.json()["field"] == "agency"


@pytest.mark.parametrize("token", ["collector-c1", "agency-a1"])
def test_tracking_reads_closed_to_case_staff(client: TestClient, token: str) -> None:
    response = client.get("/positions/latest", headers=auth(token))

    assert response.status_code == 403


@pytest.mark.parametrize("token", ["analyst", "collector-c1"])
def test_commands_only_for_admin(client: TestClient, token: str) -> None:
    body = {"kind": "fuel_cut", "reason": "test"}

    response = client.post(
        "/devices/860000000000001/commands", json=body, headers=auth(token)
    )

    assert response.status_code == 403


@pytest.mark.parametrize(
    ("token", "contract_id", "phone_visible", "id_visible"),
    [
        ("admin", "C-1", True, True),
        ("analyst", "C-1", False, False),
        ("collector-c1", "C-1", True, False),
        ("agency-a1", "C-2", False, False),
    ],
)
def test_borrower_masked_per_role(
    client: TestClient,
    token: str,
    contract_id: str,
    phone_visible: bool,
    id_visible: bool,
) -> None:
    response = client.get(f"/contracts/{contract_id}", headers=auth(token))

    borrower = response.json()["borrower"]
    assert (borrower["phone"] == PHONE) is phone_visible
    assert (borrower["id_number"] == ID_NUMBER) is id_visible
    assert borrower["phone"].endswith("8000")


def test_masked_id_number_keeps_ends(client: TestClient) -> None:
    response = client.get("/contracts/C-1", headers=auth("analyst"))

    assert response.json()["borrower"]["id_number"] == "11" + "*" * 14 + "18"


def test_case_transition_audited(client: TestClient, context: ApiContext) -> None:
    body = {"event": "order_repossession", "reason": "car left the province"}

    client.post("/cases/C-1/transitions", json=body, headers=auth("supervisor"))

    [entry] = context.audit.entries()
    assert entry.user == "gao"
    assert entry.role == "supervisor"
    assert entry.action == "case.transition"
    assert entry.target == "C-1"
    assert entry.at == context.clock()
    assert entry.detail["to_state"] == "repossession"


def test_rejected_write_not_audited(client: TestClient, context: ApiContext) -> None:
    body = {"event": "remind_pre_due", "reason": "test"}

    client.post("/cases/C-1/transitions", json=body, headers=auth("admin"))

    assert context.audit.entries() == []


def test_every_write_audited(client: TestClient, bound: ApiContext) -> None:
    context = bound
    payment = {"payment_id": "BANK-1", "value_date": "2024-02-01", "amount": "9.99"}
    command = {"kind": "fuel_restore", "reason": "paid"}
    immobilize = {"contract_id": "C-1", "device_id": "860000000000001", "reason": "x"}

    client.post("/contracts/C-1/payments", json=payment, headers=auth("admin"))
    client.post(
        "/devices/860000000000001/commands", json=command, headers=auth("admin")
    )
    client.post("/immobilize", json=immobilize, headers=auth("admin"))

    actions = [entry.action for entry in context.audit.entries()]
    assert actions == ["payment.add", "command.fuel_restore", "immobilize.request"]


def test_audit_log_readable_by_admin_only(client: TestClient) -> None:
    admin = client.get("/audit", headers=auth("admin"))
    analyst = client.get("/audit", headers=auth("analyst"))

    assert admin.status_code == 200
    assert analyst.status_code == 403
