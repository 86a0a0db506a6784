"""``postloan loans`` subcommands, run through the root ``postloan`` CLI."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from postloan.cli import main
from postloan.loans.contracts import Contract
from postloan.loans.history import LoanHistory
from postloan.loans.jsonledger import JsonLedger, LedgerFileError
from postloan.loans.payments import Payment

CONTRACTS = (
    "contract_id,borrower_name,borrower_phone,borrower_id_number,borrower_time_zone,"
    "vin,plate,devices,principal,annual_rate,term_months,method,first_due_date,dealer\n"
    "C-1,Wang Fang,13800138000,110101199003074514,Asia/Shanghai,1M8GDM9AXKP042788,"
    "粤B12345,358735070530281,100000.00,0.12,12,annuity,2026-01-31,Dealer North\n"
    "C-2,Li Lei,13900139000,110101199104051234,Asia/Shanghai,1M8GDM9AXKP04278I,"
    ",,50000.00,0.10,24,equal-principal,2026-02-15,Dealer North\n"
    "C-3,Zhao Min,13700137000,110101198801011111,Asia/Shanghai,11111111111111111,"
    ",,30000.00,0.08,6,balloon,2026-02-28,Dealer South\n"
)
BANK = (
    "date,amount,contract,bank_reference\n"
    "2026-01-31,8884.88,C-1,BK-001\n"
    "2026-02-01,abc,C-1,BK-002\n"
    "2026-02-01,100.00,C-2,BK-003\n"
    "2026-02-28,200.00,C-3,BK-004\n"
)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    contracts = tmp_path / "contracts.csv"
    contracts.write_text(CONTRACTS, encoding="utf-8")
    bank = tmp_path / "bank.csv"
    bank.write_text(BANK, encoding="utf-8")
    return contracts, bank, tmp_path / "ledger"


def test_cli_schedule_prints_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        [
            "loans",
            "schedule",
            "--principal",
            "100000.00",
            "--annual-rate",
            "0.12",
            "--months",
            "12",
            "--method",
            "annuity",
            "--first-due",
            "2026-01-31",
        ],
        capsys,
    )
    lines = [json.loads(line) for line in out.splitlines()]

    assert status == 0
    assert len(lines) == 12
    assert lines[0] == {
        "n": 1,
        "due_date": "2026-01-31",
        "payment": "8884.88",
        "principal": "7884.88",
        "interest": "1000.00",
        "balance": "92115.12",
    }
    assert lines[1]["due_date"] == "2026-02-28"
    assert lines[-1]["payment"] == "8884.85"


def test_cli_schedule_day_count_option(capsys: pytest.CaptureFixture[str]) -> None:
    argv = "loans schedule --principal 100000.00 --annual-rate 0.12 --months 3"
    argv += " --method balloon --first-due 2026-01-31 --day-count actual/365"

    status, out, _ = run(argv.split(), capsys)

    assert status == 0
    assert json.loads(out.splitlines()[0])["interest"] == "1019.18"


def test_cli_schedule_bad_amount_names_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = "loans schedule --principal 100000.001 --annual-rate 0.12 --months 12"
    argv += " --method annuity --first-due 2026-01-31"

    with pytest.raises(SystemExit) as caught:
        main(argv.split())

    assert caught.value.code == 2
    assert "invalid amount '100000.001'" in capsys.readouterr().err


def test_cli_import_bad_rows_good_kept(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    contracts, bank, ledger = files

    status, out, err = run(
        [
            "loans",
            "import",
            str(contracts),
            "--payments",
            str(bank),
            "--ledger",
            str(ledger),
            "--on",
            "2026-03-01",
        ],
        capsys,
    )

    assert status == 1
    assert json.loads(out) == {
        "contracts_added": 2,
        "contracts_already_known": 0,
        "payments_added": 2,
        "payments_already_known": 0,
        "rows_rejected": 3,
    }
    assert "contracts.csv row 3, field vin: VIN '1M8GDM9AXKP04278I'" in err
    assert "bank.csv row 3, field amount: invalid amount 'abc'" in err
    assert "bank.csv row 4, field contract_id: contract 'C-2' not found" in err
    assert JsonLedger(ledger).contract_ids() == ["C-1", "C-3"]


def test_cli_import_twice_adds_nothing(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    contracts, bank, ledger = files
    argv = [
        "loans",
        "import",
        str(contracts),
        "--payments",
        str(bank),
        "--ledger",
        str(ledger),
        "--on",
        "2026-03-01",
    ]
    run(argv, capsys)

    _, out, _ = run(argv, capsys)

    summary = json.loads(out)
    assert summary["contracts_added"] == 0
    assert summary["contracts_already_known"] == 2
    assert summary["payments_added"] == 0
    assert summary["payments_already_known"] == 2
    assert len(JsonLedger(ledger).load("C-1")[1].payments) == 1


def test_cli_import_bad_file_keeps_contracts(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    contracts, bank, ledger = files
    bank.write_text("date,amount\n2026-01-31,1.00\n")

    status, _, err = run(
        [
            "loans",
            "import",
            str(contracts),
            "--payments",
            str(bank),
            "--ledger",
            str(ledger),
        ],
        capsys,
    )

    assert status == 2
    assert "missing column(s) contract_id, bank_reference" in err
    assert JsonLedger(ledger).contract_ids() == ["C-1", "C-3"]


def test_cli_status_prints_one_json_object(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    contracts, bank, ledger = files
    run(
        [
            "loans",
            "import",
            str(contracts),
            "--payments",
            str(bank),
            "--ledger",
            str(ledger),
            "--on",
            "2026-03-01",
        ],
        capsys,
    )

    status, out, _ = run(
        ["loans", "status", "C-1", "--on", "2026-03-10", "--ledger", str(ledger)],
        capsys,
    )
    report = json.loads(out)

    # Installment 2 (Feb 28) is 10 days late: 10 * 4.44 penalty.
    assert status == 0
    assert report["dpd"] == 10
    assert report["bucket"] == "M1"
    assert report["state"] == "active"
    assert report["overdue"] == {
        "installments": [2],
        "principal": "7963.73",
        "interest": "921.15",
        "total": "8884.88",
    }
    assert report["penalty"]["outstanding"] == "44.40"
    assert report["settlement"]["principal"] == "92115.12"
    assert report["repurchase"]["payer"] == "Dealer North"
    assert report["unavailable"] == {}


def test_cli_status_current_no_repurchase(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    contracts, _, ledger = files
    run(["loans", "import", str(contracts), "--ledger", str(ledger)], capsys)

    _, out, _ = run(
        ["loans", "status", "C-3", "--on", "2026-02-01", "--ledger", str(ledger)],
        capsys,
    )
    report = json.loads(out)

    assert report["repurchase"] is None
    assert "repurchase needs at least 1" in report["unavailable"]["repurchase"]


def test_cli_status_unknown_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(
        ["loans", "status", "C-404", "--ledger", str(tmp_path)], capsys
    )

    assert status == 2
    assert "contract 'C-404' not found in the ledger" in err


def test_cli_status_reads_policy_file(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    contracts, _, ledger = files
    run(["loans", "import", str(contracts), "--ledger", str(ledger)], capsys)
    policy = ledger.parent / "config.toml"
    policy.write_text("[loans]\ngrace_days = 15\n")

    _, out, _ = run(
        [
            "loans",
            "status",
            "C-1",
            "--on",
            "2026-02-10",
            "--ledger",
            str(ledger),
            "--policy",
            str(policy),
        ],
        capsys,
    )

    assert json.loads(out)["dpd"] == 0


def test_cli_collections_prints_differences(
    files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    contracts, _, ledger = files
    run(["loans", "import", str(contracts), "--ledger", str(ledger)], capsys)
    listing = ledger.parent / "overdue.csv"
    listing.write_text("contract_id,dpd,collector\nC-1,9,collector.li\nC-7,1,x\n")

    status, out, err = run(
        [
            "loans",
            "collections",
            str(listing),
            "--on",
            "2026-02-10",
            "--ledger",
            str(ledger),
        ],
        capsys,
    )

    assert status == 1
    assert json.loads(out)["field"] == "dpd"
    assert json.loads(out)["ours"] == "10"
    assert "overdue.csv row 3, field contract_id: contract 'C-7' not found" in err
    assert JsonLedger(ledger).load("C-1")[0].collector == "collector.li"


def test_json_ledger_round_trip(tmp_path: Path, contract: Contract) -> None:
    ledger = JsonLedger(tmp_path)
    history = LoanHistory(
        payments=(Payment("B-1", "C-1", date(2026, 1, 31), Decimal("8884.88")),)
    )

    ledger.save(contract, history)

    assert ledger.load("C-1") == (contract, history)
    assert list(tmp_path.joinpath("contracts").iterdir()) == [
        tmp_path / "contracts" / "C-1.json"
    ]


def test_json_ledger_damaged_file_named(tmp_path: Path) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "C-1.json").write_text('{"format": "postloan.loans/1"}')

    with pytest.raises(LedgerFileError, match=r"C-1\.json is damaged"):
        JsonLedger(tmp_path).load("C-1")
