"""Vehicle affairs through the API: visits, work orders, violations, monitoring."""

from __future__ import annotations

from api_support import NOW, auth
from fastapi.testclient import TestClient

from postloan.api import ApiContext


def test_visit_scheduled_by_own_collector(client: TestClient) -> None:
    body = {
        "visit_id": "V-1",
        "contract_id": "C-1",
        "scheduled_for": "2024-03-02T02:00:00Z",
        "visitor": "dina",
    }

    created = client.post("/visits", json=body, headers=auth("collector-c1"))
    done = client.post(
        "/visits/V-1/complete",
        json={"outcome": "car parked at home"},
        headers=auth("collector-c1"),
    )

    assert created.status_code == 201
    assert done.json()["status"] == "done"


def test_visit_on_other_case_is_404(client: TestClient) -> None:
    body = {
        "visit_id": "V-2",
        "contract_id": "C-2",
        "scheduled_for": "2024-03-02T02:00:00Z",
        "visitor": "dina",
    }

    response = client.post("/visits", json=body, headers=auth("collector-c1"))

    assert response.status_code == 404


def test_visits_listed_per_role(client: TestClient) -> None:
    body = {
        "visit_id": "V-3",
        "contract_id": "C-1",
        "scheduled_for": "2024-03-02T02:00:00Z",
        "visitor": "dina",
    }
    client.post("/visits", json=body, headers=auth("admin"))

    own = client.get("/visits", headers=auth("collector-c1"))
    other = client.get("/visits", headers=auth("collector-c2"))

    assert [v["visit_id"] for v in own.json()] == ["V-3"]
    assert other.json() == []


def test_work_order_install_then_monitor(
    client: TestClient, context: ApiContext
) -> None:
    context.store.upsert_vehicle("CAR-1", plate="京A12345")
    order = {
        "order_id": "W-1",
        "kind": "install",
        "vehicle_id": "CAR-1",
        "device_id": "860000000000001",
        "technician": "wu",
    }
    client.post("/work-orders", json=order, headers=auth("admin"))

    done = client.post("/work-orders/W-1/complete", json={}, headers=auth("admin"))
    vehicles = client.get("/monitoring/vehicles", headers=auth("analyst"))

    assert done.status_code == 200
    assert context.store.vehicle_at("860000000000001", NOW) == "CAR-1"
    # The API clock is at 09:00, so the 09:04 fix is after the install.
    assert vehicles.json()["CAR-1"]["time"] == "2024-03-01T09:04:00Z"


def test_work_order_unknown_vehicle_is_404(client: TestClient) -> None:
    order = {
        "order_id": "W-2",
        "kind": "install",
        "vehicle_id": "CAR-404",
        "device_id": "860000000000001",
        "technician": "wu",
    }
    client.post("/work-orders", json=order, headers=auth("admin"))

    response = client.post("/work-orders/W-2/complete", json={}, headers=auth("admin"))

    assert response.status_code == 404
    assert response.json()["value"] == "CAR-404"


def test_violations_import_links_contract(
    client: TestClient, context: ApiContext
) -> None:
    context.store.upsert_vehicle("CAR-1", plate="京A12345")
    text = (
        "violation_id,plate,occurred_at,code,fine\n"
        "T-1,京A12345,2024-02-10T08:30:00+08:00,1208,200.00\n"
        "T-2,沪B00000,2024-02-10T08:30:00+08:00,1208,200.00\n"
    )

    response = client.post(
        "/imports/violations",
        content=text.encode(),
        headers={**auth("admin"), "Content-Type": "text/csv"},
    )
    listed = client.get("/violations", headers=auth("analyst"))

    assert response.json()["added"] == ["T-1"]
    assert response.json()["issues"][0]["value"] == "沪B00000"
    # Every contract of the fixture finances a car with plate 京A12345.
    assert listed.json()[0]["contract_id"] in {"C-1", "C-2", "C-3"}


def test_monitoring_offline_lists_silent_device(client: TestClient) -> None:
    response = client.get(
        "/monitoring/offline", params={"hours": 0.001}, headers=auth("analyst")
    )

    assert response.status_code == 200


def test_monitoring_closed_to_collectors(client: TestClient) -> None:
    response = client.get("/monitoring/alarms", headers=auth("collector-c1"))

    assert response.status_code == 403
