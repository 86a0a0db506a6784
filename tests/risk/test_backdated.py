"""Back-dated evaluations and which payments close a case."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from postloan.cli import main
from postloan.loans import Contract, LoanHistory, Payment
from postloan.loans.jsonledger import JsonLedger
from postloan.notify import MemoryTaskRepository, MessageCenter
from postloan.risk import (
    DEFAULT_RULES,
    Case,
    CaseChange,
    CaseEvent,
    CaseState,
    MemoryRiskRepository,
    RiskEngine,
    load_rules,
)
from postloan.risk.repository import JsonRiskRepository
from postloan.risk.signals import Observations
from postloan.store import open_store


def _evaluate(tmp_path: Path, on: str) -> int:
    return main(
        [
            "risk",
            "evaluate",
            "--on",
            on,
            "--store",
            str(tmp_path / "track.db"),
            "--ledger",
            str(tmp_path / "ledger"),
            "--state",
            str(tmp_path / "state"),
        ]
    )


def _case_record(tmp_path: Path) -> dict[str, object]:
    case = JsonRiskRepository(tmp_path / "state").get_case("C-1")
    assert case is not None
    return case.to_record()


@pytest.fixture
def overdue_case(tmp_path: Path, contract: Contract) -> dict[str, object]:
    """A contract whose 2014-09-23 installment is unpaid, evaluated on 2014-12-04."""
    open_store(str(tmp_path / "track.db")).close()
    JsonLedger(tmp_path / "ledger").save(contract, LoanHistory())

    assert _evaluate(tmp_path, "2014-12-04") == 0
    return _case_record(tmp_path)


def test_backdated_evaluate_rejected_unchanged(
    tmp_path: Path,
    overdue_case: dict[str, object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    firings_before = (tmp_path / "state" / "firings.jsonl").read_text()

    code = _evaluate(tmp_path, "2014-01-01")
    error = capsys.readouterr().err

    assert overdue_case["state"] != CaseState.CLOSED.value
    assert code == 2
    assert "2014-01-02T00:00:00Z" in error
    assert "2014-12-05T00:00:00Z" in error
    assert "contract C-1" in error
    assert "nothing was changed" in error
    assert _case_record(tmp_path) == overdue_case
    assert (tmp_path / "state" / "firings.jsonl").read_text() == firings_before


def test_same_date_rerun_accepted(
    tmp_path: Path, overdue_case: dict[str, object]
) -> None:
    assert _evaluate(tmp_path, "2014-12-04") == 0
    assert _case_record(tmp_path)["state"] == overdue_case["state"]


def test_payment_clearing_arrears_closes_case(
    tmp_path: Path, overdue_case: dict[str, object], contract: Contract
) -> None:
    payment = Payment("BANK-7", "C-1", date(2014, 12, 10), Decimal("12000.00"))
    JsonLedger(tmp_path / "ledger").save(contract, LoanHistory(payments=(payment,)))

    assert _evaluate(tmp_path, "2014-12-11") == 0
    record = _case_record(tmp_path)
    history = record["history"]

    assert record["state"] == CaseState.CLOSED.value
    assert isinstance(history, list)
    assert history[-1]["reason"] == "arrears cleared by payments BANK-7"
    assert history[-1]["at"] == "2014-12-12T00:00:00Z"


def test_case_without_payments_stays_open(contract: Contract) -> None:
    # A case marked overdue by staff before the first due date. The
    # ledger has zero arrears only because nothing fell due yet.
    opened = datetime(2014, 8, 1, tzinfo=UTC)
    change = CaseChange(
        opened,
        "staff:ana",
        CaseEvent.MARK_OVERDUE,
        CaseState.NEW,
        CaseState.OVERDUE,
        "fraud report",
    )
    case = Case("C-1@x", "C-1", CaseState.OVERDUE, history=(change,))
    repository = MemoryRiskRepository()
    repository.save_case(case)
    center = MessageCenter(MemoryTaskRepository(), {})
    engine = RiskEngine(repository, center, load_rules(DEFAULT_RULES))
    view = Observations("V1")

    engine.run(contract, LoanHistory(), view, datetime(2014, 9, 1, tzinfo=UTC))

    assert repository.get_case("C-1") == case
