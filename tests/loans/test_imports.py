"""Imports of contracts, bank statements and overdue lists, row by row."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from postloan.loans.collection import merge_collection_list, read_collection_list
from postloan.loans.contracts import Contract, ContractEvent, ContractState
from postloan.loans.history import LoanHistory
from postloan.loans.importing import read_contracts
from postloan.loans.payments import Payment, read_statement
from postloan.loans.rows import ImportFileError, RowIssue
from postloan.loans.schedule import Method

D = Decimal
AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
HEADER = (
    "contract_id,borrower_name,borrower_phone,borrower_id_number,borrower_time_zone,"
    "vin,plate,devices,principal,annual_rate,term_months,method,first_due_date,dealer\n"
)
GOOD = (
    "C-1,Wang Fang,+86 138 0013 8000,110101199003074514,Asia/Shanghai,"
    "1M8GDM9AXKP042788,粤B12345,358735070530281;013912345678,100000.00,0.12,12,"
    "annuity,2026-01-31,Dealer North\n"
)


OTHER_VIN = "1HGCM82633A004352"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def fields_of(issues: tuple[RowIssue, ...]) -> list[tuple[int, str, str]]:
    return [(issue.row, issue.field, issue.value) for issue in issues]


def test_read_contracts_csv_good_row(tmp_path: Path) -> None:
    path = write(tmp_path, "contracts.csv", HEADER + GOOD)

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    contract = result.contracts[0]
    assert contract.borrower.phone == "+8613800138000"
    assert contract.devices == ("358735070530281", "013912345678")
    assert contract.terms.principal == D("100000.00")
    assert contract.terms.method is Method.ANNUITY
    assert contract.state is ContractState.ACTIVE
    assert contract.history[0].event is ContractEvent.OPEN
    assert contract.history[0].reason == "imported from contracts.csv row 2"


def test_read_contracts_bad_rows_good_kept(tmp_path: Path) -> None:
    rows = [
        GOOD,
        GOOD.replace("C-1,", "C-2,").replace("1M8GDM9AXKP042788", "1M8GDM9AXKP04278O"),
        GOOD.replace("C-1,", "C-3,").replace("+86 138 0013 8000", "call me"),
        GOOD.replace("C-1,", "C-4,").replace("Asia/Shanghai", "China"),
        GOOD.replace("C-1,", "C-5,").replace("100000.00,0.12", "lots,12"),
        GOOD.replace("C-1,", "C-6,").replace(",annuity,", ",bullet,"),
        GOOD.replace("C-1,", "C-7,").replace("2026-01-31", "31/01/2026"),
        GOOD.replace("C-1,", "C-8,")
        .replace("1M8GDM9AXKP042788", OTHER_VIN)
        .replace("358735070530281;013912345678", "358735070530299"),
    ]
    path = write(tmp_path, "contracts.csv", HEADER + "".join(rows))

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert [c.contract_id for c in result.contracts] == ["C-1", "C-8"]
    assert fields_of(result.issues) == [
        (3, "vin", "1M8GDM9AXKP04278O"),
        (4, "borrower_phone", "call me"),
        (5, "borrower_time_zone", "China"),
        (6, "principal", "lots"),
        (6, "annual_rate", "12"),
        (7, "method", "bullet"),
        (8, "first_due_date", "31/01/2026"),
    ]


def test_read_contracts_issue_message_names_value(tmp_path: Path) -> None:
    text = HEADER + GOOD.replace("100000.00", "1O0000.00")
    path = write(tmp_path, "contracts.csv", text)

    issue = read_contracts(path, existing={}, actor="ops", at=AT).issues[0]

    assert str(issue) == (
        "row 2, field principal: invalid amount '1O0000.00': expected digits "
        "with at most two decimal places, e.g. 1234.56 or 1,234.56"
    )


def test_read_contracts_percentage_rate_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "contracts.csv", HEADER + GOOD.replace(",0.12,", ",12%,"))

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert result.contracts[0].terms.annual_rate == D("0.12")


def test_read_contracts_vin_mismatch_warns(tmp_path: Path) -> None:
    text = HEADER + GOOD.replace("1M8GDM9AXKP042788", "LSVAU2180N2183294")
    path = write(tmp_path, "contracts.csv", text)

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert len(result.contracts) == 1
    assert fields_of(result.warnings) == [(2, "vin", "LSVAU2180N2183294")]
    assert "check digit 0 does not match" in result.warnings[0].message


def test_read_contracts_missing_field_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "contracts.csv", HEADER + GOOD.replace("Dealer North", ""))

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert fields_of(result.issues) == [(2, "dealer", "")]
    assert result.issues[0].message == "dealer is missing"


def test_read_contracts_settled_state_rejected(tmp_path: Path) -> None:
    header = HEADER.replace(",dealer\n", ",dealer,state\n")
    rows = GOOD.replace("\n", ",settled\n") + GOOD.replace("C-1,", "C-2,").replace(
        "\n", ",overdue\n"
    )
    path = write(tmp_path, "contracts.csv", header + rows)

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert [c.state for c in result.contracts] == [ContractState.OVERDUE]
    assert fields_of(result.issues) == [(2, "state", "settled")]
    assert "cannot be imported" in result.issues[0].message


def test_read_contracts_missing_column_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "contracts.csv", "contract_id,vin\nC-1,x\n")

    with pytest.raises(ImportFileError, match="missing column\\(s\\) borrower_name"):
        read_contracts(path, existing={}, actor="ops", at=AT)


def test_read_contracts_repeat_is_duplicate(tmp_path: Path) -> None:
    path = write(tmp_path, "contracts.csv", HEADER + GOOD)
    first = read_contracts(path, existing={}, actor="ops", at=AT).contracts[0]

    again = read_contracts(path, existing={"C-1": first}, actor="ops", at=AT)

    assert again.contracts == ()
    assert again.duplicates == ("C-1",)
    assert again.issues == ()


def test_read_contracts_changed_repeat_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "contracts.csv", HEADER + GOOD)
    first = read_contracts(path, existing={}, actor="ops", at=AT).contracts[0]
    changed = write(tmp_path, "changed.csv", HEADER + GOOD.replace(",12,", ",24,"))

    result = read_contracts(changed, existing={"C-1": first}, actor="ops", at=AT)

    assert result.contracts == ()
    assert "already exists with other data" in result.issues[0].message


def test_read_contracts_json_flat_objects(tmp_path: Path) -> None:
    record = {
        "contract_id": "C-1",
        "borrower_name": "Wang Fang",
        "borrower_phone": "13800138000",
        "borrower_id_number": "110101199003074514",
        "borrower_time_zone": "Asia/Shanghai",
        "vin": "1M8GDM9AXKP042788",
        "devices": ["358735070530281"],
        "principal": 100000.10,
        "annual_rate": 0.12,
        "term_months": 12,
        "method": "balloon",
        "first_due_date": "2026-01-31",
        "dealer": "Dealer North",
    }
    bad = {**record, "contract_id": "C-2", "term_months": 0}
    path = write(tmp_path, "contracts.json", json.dumps([record, bad]))

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert result.contracts[0].terms.principal == D("100000.10")
    assert result.contracts[0].devices == ("358735070530281",)
    assert fields_of(result.issues) == [(2, "term_months", "0")]


def test_read_contracts_json_nested_records_round_trip(
    tmp_path: Path, contract: Contract
) -> None:
    path = write(tmp_path, "contracts.json", json.dumps([contract.to_record()]))

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    imported = result.contracts[0]
    assert imported.terms == contract.terms
    assert imported.borrower == contract.borrower
    assert imported.vehicle == contract.vehicle


def test_read_contracts_json_not_array_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "contracts.json", '{"contract_id": "C-1"}')

    with pytest.raises(ImportFileError, match="expected a JSON array"):
        read_contracts(path, existing={}, actor="ops", at=AT)


STATEMENT = (
    "date,amount,contract,bank_reference\n"
    "2026-01-31,8884.88,C-1,BK-001\n"
    "2026-02-02,12.34.5,C-1,BK-002\n"
    "2026-02-03,500.00,C-404,BK-003\n"
    "2027-01-01,100.00,C-1,BK-004\n"
    '2026-02-28,"8,884.88",C-1,BK-005\n'
    "2026-02-28,0.00,C-1,BK-006\n"
)


def test_read_statement_bad_rows_good_kept() -> None:
    result = read_statement(
        STATEMENT, contracts={"C-1"}, today=date(2026, 3, 1), known={}
    )

    assert [p.payment_id for p in result.payments] == ["BK-001", "BK-005"]
    assert result.payments[1].amount == D("8884.88")
    assert fields_of(result.issues) == [
        (3, "amount", "12.34.5"),
        (4, "contract_id", "C-404"),
        (5, "value_date", "2027-01-01"),
        (7, "amount", "0.00"),
    ]


def test_read_statement_future_date_message() -> None:
    result = read_statement(
        STATEMENT, contracts={"C-1"}, today=date(2026, 3, 1), known={}
    )

    future = result.issues[2]
    assert (
        future.message == "date 2027-01-01 is in the future (business date 2026-03-01)"
    )


def test_read_statement_known_reference_is_duplicate() -> None:
    known = {"BK-001": Payment("BK-001", "C-1", date(2026, 1, 31), D("8884.88"))}

    result = read_statement(
        STATEMENT, contracts={"C-1"}, today=date(2026, 3, 1), known=known
    )

    assert [p.payment_id for p in result.payments] == ["BK-005"]
    assert [p.payment_id for p in result.duplicates] == ["BK-001"]


def test_read_statement_reused_reference_rejected() -> None:
    text = (
        "value_date,amount,contract_id,bank_reference\n"
        "2026-01-31,8884.88,C-1,BK-001\n"
        "2026-01-31,9999.99,C-1,BK-001\n"
    )

    result = read_statement(text, contracts={"C-1"}, today=date(2026, 3, 1), known={})

    assert len(result.payments) == 1
    assert fields_of(result.issues) == [(3, "bank_reference", "BK-001")]


def test_read_statement_missing_column_raises() -> None:
    with pytest.raises(ImportFileError, match="bank_reference"):
        read_statement(
            "date,amount,contract\n",
            contracts={"C-1"},
            today=date(2026, 3, 1),
            known={},
        )


def test_collection_list_differences_reported(contract: Contract) -> None:
    other = replace(contract, contract_id="C-2")
    contracts = {"C-1": contract, "C-2": other}
    histories = {
        "C-2": LoanHistory(
            payments=(Payment("B-1", "C-2", date(2026, 1, 31), D("8884.88")),)
        )
    }
    text = (
        "contract_id,dpd,overdue_amount,collector,notes\n"
        "C-1,10,8929.28,collector.li,promised to pay Friday\n"
        "C-2,0,,collector.li,\n"
        "C-9,3,,collector.li,\n"
        "C-1,5,,,\n"
    )
    rows, issues = read_collection_list(text, contracts)

    merge = merge_collection_list(rows, contracts, histories, date(2026, 2, 10))

    # C-1 is 10 days late: 8,884.88 unpaid plus 44.40 penalty = 8,929.28.
    assert [d.to_record() for d in merge.differences] == [
        {
            "row": 2,
            "contract_id": "C-1",
            "field": "overdue_amount",
            "lender": "8929.28",
            "ours": "8884.88",
            "note": "the lender's amount matches ours plus penalty",
        }
    ]
    assert merge.matched == 1
    assert fields_of(tuple(issues)) == [
        (4, "contract_id", "C-9"),
        (5, "contract_id", "C-1"),
    ]
    assert merge.contracts[0].collector == "collector.li"
    assert merge.contracts[0].collection_notes == "promised to pay Friday"


def test_collection_list_dpd_difference(contract: Contract) -> None:
    rows, _ = read_collection_list("contract_id,dpd\nC-1,7\n", {"C-1": contract})

    merge = merge_collection_list(rows, {"C-1": contract}, {}, date(2026, 2, 10))

    assert [(d.field, d.lender, d.ours) for d in merge.differences] == [
        ("dpd", "7", "10")
    ]


def test_collection_list_row_without_values_rejected(contract: Contract) -> None:
    rows, issues = read_collection_list(
        "contract_id,dpd,overdue_amount\nC-1,,\n", {"C-1": contract}
    )

    assert rows == []
    assert issues[0].message == "give dpd, overdue_amount or both"
