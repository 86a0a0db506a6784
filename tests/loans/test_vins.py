"""One live contract per VIN: imports, the ledger's locked insert and the CLI."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from postloan.cli import main
from postloan.loans.contracts import (
    Borrower,
    Contract,
    ContractState,
    LiveCollateral,
    Vehicle,
    VinInUseError,
)
from postloan.loans.history import LoanHistory
from postloan.loans.identity import check_vin
from postloan.loans.importing import read_contracts
from postloan.loans.jsonledger import JsonLedger
from postloan.loans.schedule import LoanTerms, Method

AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
VIN = "1M8GDM9AXKP042788"
OTHER_VIN = "1HGCM82633A004352"
HEADER = (
    "contract_id,borrower_name,borrower_phone,borrower_id_number,borrower_time_zone,"
    "vin,plate,devices,principal,annual_rate,term_months,method,first_due_date,dealer\n"
)


def build_contract(contract_id: str, vin: str = VIN) -> Contract:
    return Contract(
        contract_id=contract_id,
        borrower=Borrower("Wang Fang", "+8613800138000", "110101199003074514", "UTC"),
        vehicle=Vehicle(vin),
        terms=LoanTerms(
            Decimal("100000.00"), Decimal("0.12"), 12, Method.ANNUITY, date(2026, 1, 31)
        ),
        dealer="Dealer North",
    )


def row(contract_id: str, vin: str) -> str:
    return (
        f"{contract_id},Wang Fang,+86 138 0013 8000,110101199003074514,"
        f"Asia/Shanghai,{vin},,,100000.00,0.12,12,annuity,2026-01-31,Dealer North\n"
    )


def write(tmp_path: Path, text: str, name: str = "contracts.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_same_vin_twice_rejects_later_row(tmp_path: Path) -> None:
    text = HEADER + row("C-1", VIN) + row("C-2", OTHER_VIN) + row("C-3", VIN.lower())
    path = write(tmp_path, text)

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert [c.contract_id for c in result.contracts] == ["C-1", "C-2"]
    (issue,) = result.issues
    assert (issue.row, issue.field, issue.value) == (4, "vin", VIN)
    assert f"VIN {VIN} of contract C-3 already belongs to contract C-1" in str(issue)
    assert "which is active" in issue.message


@pytest.mark.parametrize(
    ("state", "accepted"),
    [
        (ContractState.ACTIVE, False),
        (ContractState.OVERDUE, False),
        (ContractState.REPOSSESSED, False),
        (ContractState.SETTLED, True),
        (ContractState.REPURCHASED, True),
        (ContractState.WRITTEN_OFF, True),
    ],
)
def test_import_vin_of_stored_contract(
    tmp_path: Path, state: ContractState, accepted: bool
) -> None:
    stored = replace(build_contract("OLD-1"), state=state)
    path = write(tmp_path, HEADER + row("C-1", VIN))

    result = read_contracts(path, existing={"OLD-1": stored}, actor="ops", at=AT)

    assert [c.contract_id for c in result.contracts] == (["C-1"] if accepted else [])
    assert [i.field for i in result.issues] == ([] if accepted else ["vin"])


def test_import_written_off_row_may_share_vin(tmp_path: Path) -> None:
    header = HEADER.replace(",dealer\n", ",dealer,state\n")
    text = header + row("C-1", VIN).replace("\n", ",active\n")
    text += row("C-2", VIN).replace("\n", ",written_off\n")
    path = write(tmp_path, text)

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert [c.contract_id for c in result.contracts] == ["C-1", "C-2"]
    assert result.issues == ()


def test_north_american_check_digit_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match=r"check digit .* is '1', expected 'X'"):
        check_vin("1M8GDM9A1KP042788")


def test_live_collateral_repeats_same_contract() -> None:
    contract = build_contract("C-1")
    live = LiveCollateral([contract])

    live.check(contract)  # the contract itself is no conflict

    with pytest.raises(VinInUseError, match="contract C-2 already belongs"):
        live.check(replace(contract, contract_id="C-2"))


def test_ledger_insert_rejects_live_vin(tmp_path: Path) -> None:
    ledger = JsonLedger(tmp_path / "ledger")
    ledger.save(build_contract("C-1"), LoanHistory())

    rejected = ledger.insert([build_contract("C-2"), build_contract("C-1")])

    assert sorted(rejected) == ["C-1", "C-2"]
    assert isinstance(rejected["C-2"], VinInUseError)
    assert "already in the ledger" in str(rejected["C-1"])
    assert ledger.contract_ids() == ["C-1"]


def _insert_one(root: str, contract_id: str, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    JsonLedger(Path(root)).insert([build_contract(contract_id)])


def test_ledger_insert_concurrent_same_vin_keeps_one(tmp_path: Path) -> None:
    """Processes that insert contracts on one VIN at once store exactly one."""
    root = tmp_path / "ledger"
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        folder = root / str(attempt)
        start = context.Barrier(6)
        workers = [
            context.Process(target=_insert_one, args=(str(folder), f"C-{n}", start))
            for n in range(6)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)

        assert [worker.exitcode for worker in workers] == [0] * 6
        assert len(JsonLedger(folder).contract_ids()) == 1


def test_cli_import_rejects_vin_of_stored_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "ledger"
    first = write(tmp_path, HEADER + row("C-1", VIN), "first.csv")
    second = write(
        tmp_path, HEADER + row("C-2", OTHER_VIN) + row("C-3", VIN), "second.csv"
    )
    assert main(["loans", "import", str(first), "--ledger", str(ledger)]) == 0
    capsys.readouterr()

    status = main(["loans", "import", str(second), "--ledger", str(ledger)])
    captured = capsys.readouterr()

    assert status == 1
    assert json.loads(captured.out)["contracts_added"] == 1
    assert json.loads(captured.out)["rows_rejected"] == 1
    assert (
        f"second.csv row 3, field vin: VIN {VIN} of contract C-3 already belongs "
        "to contract C-1" in captured.err
    )
    assert JsonLedger(ledger).contract_ids() == ["C-1", "C-2"]
