"""Which roles may fire which case events."""

from __future__ import annotations

import pytest
from api_support import auth
from fastapi.testclient import TestClient

from postloan.api import ApiContext
from postloan.api.auth import Role
from postloan.api.risk import EVENT_ROLES
from postloan.risk import Case, CaseEvent, CaseState

DECISIONS = ["write_off", "outsource", "order_repossession", "settle", "recall"]


@pytest.mark.parametrize("event", DECISIONS)
@pytest.mark.parametrize("token", ["collector-c1", "agency-a1", "analyst"])
def test_decision_events_forbidden_to_staff(
    client: TestClient, context: ApiContext, token: str, event: str
) -> None:
    before = context.risk.get_case("C-1")
    body = {"event": event, "reason": "no contact for 60 days"}

    response = client.post("/cases/C-1/transitions", json=body, headers=auth(token))

    assert response.status_code == 403
    assert response.json()["field"] == "event"
    assert response.json()["value"] == event
    role = token.split("-")[0]
    assert f"role {role} may not fire case event '{event}'" in response.json()["error"]
    assert "allowed roles: admin, supervisor" in response.json()["error"]
    assert context.risk.get_case("C-1") == before
    assert context.audit.entries() == []


@pytest.mark.parametrize("token", ["admin", "supervisor"])
def test_write_off_by_decider(client: TestClient, token: str) -> None:
    body = {"event": "write_off", "reason": "borrower deceased, no estate"}

    response = client.post("/cases/C-1/transitions", json=body, headers=auth(token))

    assert response.status_code == 200
    assert response.json()["state"] == "written_off"


def test_collector_assigns_collection(client: TestClient, context: ApiContext) -> None:
    context.risk.save_case(Case("case-1", "C-1", CaseState.OVERDUE, collector="c1"))
    body = {"event": "assign_collection", "reason": "borrower reached, no promise"}

    response = client.post(
        "/cases/C-1/transitions", json=body, headers=auth("collector-c1")
    )

    assert response.status_code == 200
    assert response.json()["state"] == "collection"


def test_supervisor_assigns_agency(client: TestClient) -> None:
    body = {"event": "outsource", "reason": "no answer", "agency": "a1"}

    response = client.post(
        "/cases/C-1/transitions", json=body, headers=auth("supervisor")
    )

    assert response.status_code == 200
    assert response.json()["agency"] == "a1"


def test_event_roles_cover_every_event() -> None:
    assert set(EVENT_ROLES) == set(CaseEvent)
    for event in CaseEvent:
        assert Role.ADMIN in EVENT_ROLES[event]
        assert Role.ANALYST not in EVENT_ROLES[event]
        assert Role.AGENCY not in EVENT_ROLES[event]
