"""Contract imports through the API: a VIN backs one live contract."""

from __future__ import annotations

from api_support import auth
from fastapi.testclient import TestClient

from postloan.api import ApiContext

HEADER = (
    "contract_id,borrower_name,borrower_phone,borrower_id_number,borrower_time_zone,"
    "vin,plate,devices,principal,annual_rate,term_months,method,first_due_date,dealer\n"
)
# The VIN of the stored contracts C-1 to C-3 (see conftest).
STORED_VIN = "LSVAU2180N2183294"


def row(contract_id: str, vin: str) -> str:
    return (
        f"{contract_id},Li Lei,13900139000,110101199104051234,Asia/Shanghai,{vin},"
        ",,50000.00,0.10,24,annuity,2026-02-15,Dealer North\n"
    )


def test_import_rejects_vin_of_live_contract(
    client: TestClient, context: ApiContext
) -> None:
    text = HEADER + row("C-10", "1HGCM82633A004352") + row("C-11", STORED_VIN)

    response = client.post(
        "/imports/contracts",
        content=text,
        headers={**auth("admin"), "Content-Type": "text/csv"},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["added"] == ["C-10"]
    (issue,) = body["issues"]
    assert issue["row"] == 3
    assert issue["field"] == "vin"
    assert issue["value"] == STORED_VIN
    assert "already belongs to contract C-1" in issue["message"]
    assert context.ledger is not None
    assert "C-11" not in context.ledger.contract_ids()


def test_import_rejects_north_american_check_digit(client: TestClient) -> None:
    response = client.post(
        "/imports/contracts",
        content=HEADER + row("C-12", "1M8GDM9A1KP042788"),
        headers={**auth("admin"), "Content-Type": "text/csv"},
    )

    body = response.json()
    assert body["added"] == []
    assert body["issues"][0]["field"] == "vin"
    assert "expected 'X'" in body["issues"][0]["message"]
