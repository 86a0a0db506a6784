"""One live contract per tracker: imports, the ledger's locked insert and the CLI."""

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
    DeviceInUseError,
    LiveCollateral,
    Vehicle,
)
from postloan.loans.history import LoanHistory
from postloan.loans.importing import read_contracts
from postloan.loans.jsonledger import JsonLedger
from postloan.loans.schedule import LoanTerms, Method

AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
IMEI = "356827900000031"
OTHER_IMEI = "356827900000049"
VINS = ("1M8GDM9AXKP042788", "1HGCM82633A004352", "WVWZZZ1JZXW000001")
HEADER = (
    "contract_id,borrower_name,borrower_phone,borrower_id_number,borrower_time_zone,"
    "vin,plate,devices,principal,annual_rate,term_months,method,first_due_date,dealer\n"
)


def build_contract(contract_id: str, vin: str, devices: tuple[str, ...]) -> Contract:
    return Contract(
        contract_id=contract_id,
        borrower=Borrower("Wang Fang", "+8613800138000", "110101199003074514", "UTC"),
        vehicle=Vehicle(vin),
        terms=LoanTerms(
            Decimal("100000.00"), Decimal("0.12"), 12, Method.ANNUITY, date(2026, 1, 31)
        ),
        dealer="Dealer North",
        devices=devices,
    )


def row(contract_id: str, vin: str, devices: str) -> str:
    return (
        f"{contract_id},Wang Fang,+86 138 0013 8000,110101199003074514,"
        f"Asia/Shanghai,{vin},,{devices},100000.00,0.12,12,annuity,2026-01-31,"
        "Dealer North\n"
    )


def write(tmp_path: Path, text: str, name: str = "contracts.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_same_device_twice_rejects_later_row(tmp_path: Path) -> None:
    text = (
        HEADER
        + row("C-1001", VINS[0], IMEI)
        + row("C-1012", VINS[1], f"{OTHER_IMEI};{IMEI}")
        + row("C-2004", VINS[2], OTHER_IMEI)
    )
    path = write(tmp_path, text)

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert [c.contract_id for c in result.contracts] == ["C-1001", "C-2004"]
    (issue,) = result.issues
    assert (issue.row, issue.field, issue.value) == (3, "devices", IMEI)
    assert (
        f"device {IMEI} of contract C-1012 already belongs to contract C-1001"
        in issue.message
    )
    assert "which is active" in issue.message


def test_import_json_same_device_rejected(tmp_path: Path) -> None:
    first = build_contract("C-1", VINS[0], (IMEI,)).to_record()
    second = build_contract("C-2", VINS[1], (IMEI,)).to_record()
    for record in (first, second):
        del record["history"], record["state"]
    path = write(tmp_path, json.dumps([first, second]), "contracts.json")

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert [c.contract_id for c in result.contracts] == ["C-1"]
    (issue,) = result.issues
    assert (issue.row, issue.field, issue.value) == (2, "devices", IMEI)


def test_import_device_listed_twice_in_row(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + row("C-1", VINS[0], f"{IMEI}; {IMEI}"))

    result = read_contracts(path, existing={}, actor="ops", at=AT)

    assert result.contracts == ()
    (issue,) = result.issues
    assert issue.field == "devices"
    assert f"{IMEI} listed more than once" in issue.message


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
def test_import_device_of_stored_contract(
    tmp_path: Path, state: ContractState, accepted: bool
) -> None:
    stored = replace(build_contract("OLD-1", VINS[0], (IMEI,)), state=state)
    path = write(tmp_path, HEADER + row("C-1", VINS[1], IMEI))

    result = read_contracts(path, existing={"OLD-1": stored}, actor="ops", at=AT)

    assert [c.contract_id for c in result.contracts] == (["C-1"] if accepted else [])
    assert [i.field for i in result.issues] == ([] if accepted else ["devices"])


def test_live_collateral_device_owner() -> None:
    contract = build_contract("C-1", VINS[0], (IMEI,))
    live = LiveCollateral([contract])

    live.check(contract)  # the contract itself is no conflict

    assert live.device_owner(IMEI) is contract
    assert live.device_owner(OTHER_IMEI) is None
    with pytest.raises(DeviceInUseError, match=f"device {IMEI} of contract C-2"):
        live.check(build_contract("C-2", VINS[1], (OTHER_IMEI, IMEI)))


def test_ledger_insert_rejects_live_device(tmp_path: Path) -> None:
    ledger = JsonLedger(tmp_path / "ledger")
    ledger.save(build_contract("C-1", VINS[0], (IMEI,)), LoanHistory())

    rejected = ledger.insert(
        [
            build_contract("C-2", VINS[1], (IMEI,)),
            build_contract("C-3", VINS[2], (OTHER_IMEI,)),
        ]
    )

    assert sorted(rejected) == ["C-2"]
    error = rejected["C-2"]
    assert isinstance(error, DeviceInUseError)
    assert error.device_id == IMEI
    assert error.other_id == "C-1"
    assert ledger.contract_ids() == ["C-1", "C-3"]


def test_ledger_insert_after_settlement_frees_device(tmp_path: Path) -> None:
    ledger = JsonLedger(tmp_path / "ledger")
    settled = replace(
        build_contract("C-1", VINS[0], (IMEI,)), state=ContractState.SETTLED
    )
    ledger.save(settled, LoanHistory())

    rejected = ledger.insert([build_contract("C-2", VINS[1], (IMEI,))])

    assert rejected == {}
    assert ledger.contract_ids() == ["C-1", "C-2"]


def _insert_one(root: str, number: int, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    contract = build_contract(f"C-{number}", VINS[number], (IMEI,))
    JsonLedger(Path(root)).insert([contract])


def test_ledger_insert_concurrent_same_device_keeps_one(tmp_path: Path) -> None:
    """Processes that insert contracts with one tracker at once store exactly one."""
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        folder = tmp_path / str(attempt)
        start = context.Barrier(len(VINS))
        workers = [
            context.Process(target=_insert_one, args=(str(folder), n, start))
            for n in range(len(VINS))
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)

        assert [worker.exitcode for worker in workers] == [0] * len(VINS)
        assert len(JsonLedger(folder).contract_ids()) == 1


def test_cli_import_rejects_device_of_stored_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "ledger"
    first = write(tmp_path, HEADER + row("C-1001", VINS[0], IMEI), "first.csv")
    second = write(
        tmp_path,
        HEADER + row("C-1012", VINS[1], IMEI) + row("C-2004", VINS[2], OTHER_IMEI),
        "second.csv",
    )
    assert main(["loans", "import", str(first), "--ledger", str(ledger)]) == 0
    capsys.readouterr()

    status = main(["loans", "import", str(second), "--ledger", str(ledger)])
    captured = capsys.readouterr()

    assert status == 1
    summary = json.loads(captured.out)
    assert summary["contracts_added"] == 1
    assert summary["rows_rejected"] == 1
    assert (
        f"second.csv row 2, field devices: device {IMEI} of contract C-1012 "
        "already belongs to contract C-1001" in captured.err
    )
    assert JsonLedger(ledger).contract_ids() == ["C-1001", "C-2004"]
