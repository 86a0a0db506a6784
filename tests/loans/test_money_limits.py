"""One money rule for payments and principals on every input path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from postloan.api import ApiContext, MemoryAuditLog, TokenTable, create_app, hash_token
from postloan.api.auth import Principal, Role
from postloan.cli import main
from postloan.loans import Borrower, Contract, LoanHistory, LoanTerms, Method, Vehicle
from postloan.loans.importing import read_contracts
from postloan.loans.jsonledger import JsonLedger
from postloan.loans.money import MAX_AMOUNT, check_money, parse_money
from postloan.loans.payments import read_statement
from postloan.notify import MemoryTaskRepository
from postloan.risk import MemoryRiskRepository
from postloan.store import SQLiteStore

NOW = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
TOO_LARGE = "99999999999999999999.99"
ALSO_TOO_LARGE = "999999999999999999.00"
CONTRACT_HEADER = (
    "contract_id,borrower_name,borrower_phone,borrower_id_number,borrower_time_zone,"
    "vin,plate,devices,principal,annual_rate,term_months,method,first_due_date,dealer\n"
)


def contract_row(contract_id: str, vin: str, principal: str) -> str:
    return (
        f"{contract_id},Wang Fang,+86 138 0013 8000,110101199003074514,"
        f"Asia/Shanghai,{vin},,,{principal},0.12,12,annuity,2024-01-31,"
        "Dealer North\n"
    )


def make_contract(contract_id: str = "C-1") -> Contract:
    return Contract(
        contract_id=contract_id,
        borrower=Borrower("Wang Fang", "+8613800138000", "110101199003074514", "UTC"),
        vehicle=Vehicle("LSVAU2180N2183294"),
        terms=LoanTerms(
            Decimal("90000.00"), Decimal("0.08"), 12, Method.ANNUITY, date(2024, 1, 15)
        ),
        dealer="dealer-1",
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1000000000000.00", "is too large: expected at most 999999999999.99"),
        (TOO_LARGE, "(12 digits before the decimal point)"),
        ("0.00", "expected a positive amount"),
        ("-5.00", "expected a positive amount"),
    ],
)
def test_parse_money_rejects_with_field_and_limit(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_money(text, "amount")

    assert f"amount {text!r}" in str(caught.value)
    assert problem in str(caught.value)


def test_parse_money_accepts_limit() -> None:
    assert parse_money("999,999,999,999.99", "amount") == MAX_AMOUNT
    assert parse_money("0.01", "amount") == Decimal("0.01")


def test_check_money_rejects_fraction_of_cent() -> None:
    with pytest.raises(ValueError, match=r"principal 0\.001 is invalid: expected at"):
        check_money(Decimal("0.001"), "principal")


def test_statement_import_rejects_too_large_amount() -> None:
    text = (
        "value_date,amount,contract_id,bank_reference\n"
        f"2024-02-01,{TOO_LARGE},C-1,BANK-1\n"
        "2024-02-01,999999999999.99,C-1,BANK-2\n"
    )

    result = read_statement(text, contracts={"C-1"}, today=date(2024, 3, 1), known={})

    assert [p.payment_id for p in result.payments] == ["BANK-2"]
    (issue,) = result.issues
    assert (issue.row, issue.field, issue.value) == (2, "amount", TOO_LARGE)
    assert "at most 999999999999.99" in issue.message


@pytest.mark.parametrize("name", ["contracts.csv", "contracts.json"])
def test_contract_import_rejects_too_large_principal(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        text = CONTRACT_HEADER + contract_row("C-1", "1M8GDM9AXKP042788", TOO_LARGE)
        text += contract_row("C-2", "1HGCM82633A004352", "100000.00")
    else:
        header = CONTRACT_HEADER.strip().split(",")
        rows = [
            contract_row("C-1", "1M8GDM9AXKP042788", TOO_LARGE),
            contract_row("C-2", "1HGCM82633A004352", "100000.00"),
        ]
        objects = [dict(zip(header, r.strip().split(","), strict=True)) for r in rows]
        text = json.dumps(objects)
    path.write_text(text, encoding="utf-8")

    result = read_contracts(path, existing={}, actor="ops", at=NOW)

    assert [c.contract_id for c in result.contracts] == ["C-2"]
    (issue,) = result.issues
    assert (issue.row, issue.field, issue.value) == (
        2 if name.endswith(".csv") else 1,
        "principal",
        TOO_LARGE,
    )
    assert "principal '99999999999999999999.99' is too large" in issue.message


def test_cli_payments_import_rejects_too_large(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "ledger"
    JsonLedger(ledger).save(make_contract(), LoanHistory())
    statement = tmp_path / "bank.csv"
    statement.write_text(
        "value_date,amount,contract_id,bank_reference\n"
        f"2024-02-01,{TOO_LARGE},C-1,BANK-1\n",
        encoding="utf-8",
    )

    status = main(
        ["loans", "import", "--payments", str(statement), "--ledger", str(ledger)]
    )
    err = capsys.readouterr().err

    assert status == 1
    assert "field amount: amount '99999999999999999999.99' is too large" in err
    assert JsonLedger(ledger).load("C-1")[1].payments == ()


def test_cli_schedule_rejects_too_large_principal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["loans", "schedule", "--principal", TOO_LARGE, "--annual-rate", "0.1"]
    argv += ["--months", "12", "--first-due", "2024-01-31"]

    with pytest.raises(SystemExit) as caught:
        main(argv)

    assert caught.value.code == 2
    assert "principal '99999999999999999999.99' is too large" in capsys.readouterr().err


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = SQLiteStore(tmp_path / "track.db")
    store.migrate()
    ledger = JsonLedger(tmp_path / "ledger")
    ledger.save(make_contract(), LoanHistory())
    tokens = TokenTable({hash_token("admin"): Principal("ana", Role.ADMIN)})
    context = ApiContext(
        store=store,
        tokens=tokens,
        ledger=ledger,
        risk=MemoryRiskRepository(),
        tasks=MemoryTaskRepository(),
        audit=MemoryAuditLog(),
        clock=lambda: NOW,
    )
    with TestClient(create_app(context), base_url="http://127.0.0.1") as test_client:
        yield test_client
    store.close()


ADMIN = {"Authorization": "Bearer admin"}


def test_api_payment_zero_names_field_and_value(client: TestClient) -> None:
    body = {"payment_id": "BANK-1", "value_date": "2024-02-01", "amount": "0.00"}

    response = client.post("/contracts/C-1/payments", json=body, headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["field"] == "amount"
    assert "amount '0.00' is invalid" in response.json()["error"]


def test_api_payment_at_limit_accepted(client: TestClient) -> None:
    amount = str(MAX_AMOUNT)
    body = {"payment_id": "BANK-1", "value_date": "2024-02-01", "amount": amount}

    response = client.post("/contracts/C-1/payments", json=body, headers=ADMIN)

    assert response.status_code == 201
    assert response.json()["amount"] == "999999999999.99"


def test_api_payment_import_rejects_too_large(client: TestClient) -> None:
    text = (
        "value_date,amount,contract_id,bank_reference\n"
        f"2024-02-01,{ALSO_TOO_LARGE},C-1,BANK-7\n"
        "2024-02-01,100.00,C-1,BANK-8\n"
    )

    response = client.post(
        "/imports/payments",
        content=text,
        headers={**ADMIN, "Content-Type": "text/csv"},
    )

    assert response.status_code == 200
    assert response.json()["added"] == ["BANK-8"]
    (issue,) = response.json()["issues"]
    assert issue["field"] == "amount"
    assert issue["value"] == ALSO_TOO_LARGE
    assert "at most 999999999999.99" in issue["message"]
