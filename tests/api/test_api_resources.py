"""Each API resource through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET

from api_support import auth
from fastapi.testclient import TestClient

from postloan.api import ApiContext


def test_devices_list_seen_device(client: TestClient) -> None:
    response = client.get("/devices", headers=auth("analyst"))

    assert response.status_code == 200
    assert [d["device_id"] for d in response.json()] == ["860000000000001"]


def test_vehicles_list_bound_devices(client: TestClient, context: ApiContext) -> None:
    context.store.upsert_vehicle("V-1", plate="京A12345")
    context.store.bind_device(
        "860000000000001", "V-1", valid_from=context.clock().replace(hour=0)
    )

    response = client.get("/vehicles", headers=auth("analyst"))

    assert response.status_code == 200
    assert response.json()[0]["devices"] == ["860000000000001"]


def test_positions_latest_is_last_fix(client: TestClient) -> None:
    response = client.get("/positions/latest", headers=auth("analyst"))

    assert response.status_code == 200
    [position] = response.json()
    assert position["time"] == "2024-03-01T09:04:00Z"


def test_track_page_continues_after_cursor(client: TestClient) -> None:
    first = client.get(
        "/devices/860000000000001/track", params={"limit": 3}, headers=auth("admin")
    ).json()

    rest = client.get(
        "/devices/860000000000001/track",
        params={"since": first["next_since"], "limit": 3},
        headers=auth("admin"),
    ).json()

    times = [f["properties"]["time"] for f in rest["features"]]
    assert len(first["features"]) == 3
    assert first["next_since"] == "2024-03-01T09:03:00Z"
    assert times == ["2024-03-01T09:03:00Z", "2024-03-01T09:04:00Z"]
    assert rest["next_since"] is None


def test_track_page_coordinates_lon_lat(client: TestClient) -> None:
    page = client.get("/devices/860000000000001/track", headers=auth("admin")).json()

    coordinates = page["features"][0]["geometry"]["coordinates"]

    assert coordinates == [121.4, 31.2]


def test_track_export_csv_streams_every_fix(client: TestClient) -> None:
    response = client.get("/devices/860000000000001/track.csv", headers=auth("admin"))

    rows = list(csv.DictReader(io.StringIO(response.text)))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert len(rows) == 5


def test_track_export_gpx_is_xml(client: TestClient) -> None:
    response = client.get("/devices/860000000000001/track.gpx", headers=auth("admin"))

    root = ET.fromstring(response.text)

    assert root.tag.endswith("gpx")
    assert len(root.findall(".//{http://www.topografix.com/GPX/1/1}trkpt")) == 5


def test_track_export_geojson_is_line(client: TestClient) -> None:
    response = client.get(
        "/devices/860000000000001/track.geojson", headers=auth("admin")
    )

    assert response.json()["geometry"]["type"] == "LineString"


def test_track_naive_time_names_value(client: TestClient) -> None:
    response = client.get(
        "/devices/860000000000001/track",
        params={"since": "2024-03-01T09:00:00"},
        headers=auth("admin"),
    )

    assert response.status_code == 422
    assert response.json()["field"] == "since"
    assert response.json()["value"] == "2024-03-01T09:00:00"


def test_track_invalid_device_id_is_422(client: TestClient) -> None:
    response = client.get("/devices/..%2Fx/track", headers=auth("admin"))

    assert response.status_code in {404, 422}


def test_contract_unknown_is_404_naming_id(client: TestClient) -> None:
    response = client.get("/contracts/C-404", headers=auth("admin"))

    assert response.status_code == 404
    assert response.json()["value"] == "C-404"


def test_contract_schedule_has_twelve_installments(client: TestClient) -> None:
    response = client.get("/contracts/C-1/schedule", headers=auth("analyst"))

    assert response.status_code == 200
    assert len(response.json()) == 12
    assert response.json()[0]["due_date"] == "2024-01-15"


def test_contract_status_reports_dpd(client: TestClient) -> None:
    response = client.get(
        "/contracts/C-1/status", params={"on": "2024-03-01"}, headers=auth("analyst")
    )

    assert response.status_code == 200
    assert response.json()["dpd"] > 0


def test_payment_add_then_listed(client: TestClient) -> None:
    body = {"payment_id": "BANK-1", "value_date": "2024-02-01", "amount": "100.00"}

    created = client.post("/contracts/C-1/payments", json=body, headers=auth("admin"))
    listed = client.get("/contracts/C-1/payments", headers=auth("admin"))

    assert created.status_code == 201
    assert [p["payment_id"] for p in listed.json()["payments"]] == ["BANK-1"]


def test_payment_reused_reference_is_422(client: TestClient) -> None:
    body = {"payment_id": "BANK-1", "value_date": "2024-02-01", "amount": "100.00"}
    client.post("/contracts/C-1/payments", json=body, headers=auth("admin"))

    again = client.post("/contracts/C-1/payments", json=body, headers=auth("admin"))

    assert again.status_code == 422
    assert again.json()["value"] == "BANK-1"


def test_payment_future_value_date_is_422(client: TestClient) -> None:
    body = {"payment_id": "BANK-F", "value_date": "2099-03-31", "amount": "1.00"}

    response = client.post("/contracts/C-1/payments", json=body, headers=auth("admin"))

    assert response.status_code == 422
    assert response.json()["field"] == "value_date"


def test_payment_import_reports_bad_row(client: TestClient) -> None:
    text = (
        "value_date,amount,contract_id,bank_reference\n"
        "2024-02-01,100.00,C-1,BANK-7\n"
        "2024-02-01,100.00,C-404,BANK-8\n"
    )

    response = client.post(
        "/imports/payments",
        content=text,
        headers={**auth("admin"), "Content-Type": "text/csv"},
    )

    assert response.status_code == 200
    assert response.json()["added"] == ["BANK-7"]
    assert response.json()["issues"][0]["value"] == "C-404"


def test_case_transition_recorded(client: TestClient) -> None:
    body = {"event": "order_repossession", "reason": "car moved to another province"}

    response = client.post(
        "/cases/C-1/transitions", json=body, headers=auth("supervisor")
    )

    assert response.status_code == 200
    assert response.json()["state"] == "repossession"
    assert response.json()["history"][-1]["actor"] == "gao"


def test_case_illegal_transition_is_409(client: TestClient) -> None:
    body = {"event": "remind_pre_due", "reason": "test"}

    response = client.post("/cases/C-1/transitions", json=body, headers=auth("admin"))

    assert response.status_code == 409
    assert response.json()["value"] == "remind_pre_due"


def test_command_queued_for_known_device(
    client: TestClient, context: ApiContext
) -> None:
    body = {"kind": "fuel_restore", "reason": "arrears paid"}

    response = client.post(
        "/devices/860000000000001/commands", json=body, headers=auth("admin")
    )

    assert response.status_code == 201
    [command] = context.store.commands("860000000000001")
    assert command.kind == "fuel_restore"
    assert command.payload["requested_by"] == "ana"


def test_command_unknown_kind_is_422(client: TestClient) -> None:
    body = {"kind": "self_destruct", "reason": "test"}

    response = client.post(
        "/devices/860000000000001/commands", json=body, headers=auth("admin")
    )

    assert response.status_code == 422
    assert response.json()["value"] == "self_destruct"


def test_immobilize_needs_second_admin(client: TestClient, bound: ApiContext) -> None:
    body = {"contract_id": "C-1", "device_id": "860000000000001", "reason": "M3"}
    created = client.post("/immobilize", json=body, headers=auth("admin")).json()
    path = f"/immobilize/{created['request_id']}/approve"

    own = client.post(path, headers=auth("admin"))
    other = client.post(path, headers=auth("admin2"))

    assert own.status_code == 409
    assert other.status_code == 200
    assert other.json()["status"] == "held"


def test_openapi_schema_served(client: TestClient) -> None:
    response = client.get("/openapi.json")

    assert response.status_code == 200
    assert "/cases/{contract_id}/transitions" in response.json()["paths"]
