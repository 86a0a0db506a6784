"""Request errors name the body, field or value at fault."""

from __future__ import annotations

from api_support import auth
from fastapi.testclient import TestClient

COMMANDS = "/devices/860000000000001/commands"


def test_commands_unknown_status_422(client: TestClient) -> None:
    response = client.get("/commands?status=bogus", headers=auth("admin"))

    assert response.status_code == 422
    assert response.json()["field"] == "status"
    assert response.json()["value"] == "bogus"
    allowed = "answered, cancelled, failed, queued, sent, timeout"
    assert allowed in response.json()["error"]


def test_commands_known_status_filters(client: TestClient) -> None:
    body = {"kind": "fuel_restore", "reason": "paid"}
    client.post(COMMANDS, json=body, headers=auth("admin"))

    queued = client.get("/commands?status=queued", headers=auth("admin"))
    sent = client.get("/commands?status=sent", headers=auth("admin"))

    assert [c["status"] for c in queued.json()] == ["queued"]
    assert sent.json() == []


def test_body_not_json_named(client: TestClient) -> None:
    headers = {**auth("admin"), "content-type": "application/json"}

    response = client.post(COMMANDS, content=b"{kind: fuel_cut", headers=headers)

    assert response.status_code == 422
    assert response.json()["field"] == "body"
    assert response.json()["error"].startswith("request body is not valid JSON: ")
    assert "{}" not in response.json()["error"]


def test_body_not_object_named(client: TestClient) -> None:
    response = client.post(COMMANDS, json=["fuel_cut"], headers=auth("admin"))

    assert response.status_code == 422
    assert response.json()["error"] == "request body must be a JSON object"


def test_missing_body_named(client: TestClient) -> None:
    response = client.post(COMMANDS, headers=auth("admin"))

    assert response.status_code == 422
    assert response.json()["error"] == "missing request body; send a JSON object"


def test_missing_field_named_not_echoed(client: TestClient) -> None:
    body = {"kind": "fuel_cut", "text": "secret borrower note"}

    response = client.post(COMMANDS, json=body, headers=auth("admin"))

    assert response.status_code == 422
    assert response.json()["error"] == "missing required field 'reason'"
    assert response.json()["field"] == "reason"
    assert response.json()["value"] is None
    assert "secret borrower note" not in response.text
