"""Settlement and repurchase quotes, and the repurchase that closes a contract.

Contract: 100,000.00 at 12 % over 12 months from 2026-01-31, 30/360.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from postloan.loans.contracts import Contract, ContractEvent, ContractState, apply_event
from postloan.loans.history import ClosureKind, LoanHistory
from postloan.loans.ledger import compute_ledger
from postloan.loans.payments import Payment
from postloan.loans.policy import LoanPolicy, QuotePart
from postloan.loans.quotes import QuoteError, quote_repurchase, quote_settlement
from postloan.loans.workflow import (
    execute_repurchase,
    execute_settlement,
    reconcile_state,
)

D = Decimal
MAR_10 = date(2026, 3, 10)
EXECUTED_AT = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)
ON_TIME = LoanHistory(
    payments=(Payment("B-1", "C-1", date(2026, 1, 31), D("8884.88")),)
)


def test_settlement_quote_by_hand(contract: Contract) -> None:
    quote = quote_settlement(contract, ON_TIME, date(2026, 2, 15))

    # Principal left after installment 1: 92,115.12. Interest from Jan 31 to
    # Feb 15, 30E/360 (day 31 counts as 30): 15 days,
    # 92,115.12 * 0.12 * 15 / 360 = 460.5756 -> 460.58.
    assert quote.lines[QuotePart.PRINCIPAL] == D("92115.12")
    assert quote.lines[QuotePart.INTEREST] == D("460.58")
    assert quote.lines[QuotePart.PENALTY] == D("0.00")
    assert quote.total == D("92575.70")


def test_settlement_quote_fee_rate(contract: Contract) -> None:
    policy = LoanPolicy(settlement_fee_rate=D("0.02"))

    quote = quote_settlement(contract, ON_TIME, date(2026, 2, 15), policy)

    # 92,115.12 * 0.02 = 1,842.3024 -> 1,842.30.
    assert quote.lines[QuotePart.FEES] == D("1842.30")
    assert quote.total == D("94418.00")


def test_settlement_quote_deducts_credit(contract: Contract) -> None:
    overpaid = LoanHistory(
        payments=(Payment("B-1", "C-1", date(2026, 1, 31), D("10000.00")),)
    )

    quote = quote_settlement(contract, overpaid, date(2026, 2, 15))

    assert quote.credit == D("1115.12")
    assert quote.total == D("91460.58")


def test_repurchase_quote_by_hand(contract: Contract) -> None:
    quote = quote_repurchase(contract, LoanHistory(), MAR_10)

    # Interest: installments 1 and 2 (1,000.00 + 921.15) plus Feb 28 -> Mar 10,
    # 12 days in 30E/360: 84,151.39 * 0.12 * 12 / 360 = 336.6056 -> 336.61.
    # Penalty: 38 days * 4.44 + 10 days * 4.44 = 213.12.
    assert quote.payer == "Dealer Guangzhou North"
    assert quote.lines[QuotePart.PRINCIPAL] == D("100000.00")
    assert quote.lines[QuotePart.INTEREST] == D("2257.76")
    assert quote.lines[QuotePart.PENALTY] == D("213.12")
    assert quote.total == D("102470.88")


def test_repurchase_quote_current_contract_raises(contract: Contract) -> None:
    with pytest.raises(QuoteError, match="0 days past due on 2026-02-15"):
        quote_repurchase(contract, ON_TIME, date(2026, 2, 15))


def test_repurchase_quote_min_dpd_configurable(contract: Contract) -> None:
    policy = LoanPolicy(repurchase_min_dpd=90)

    with pytest.raises(QuoteError, match="repurchase needs at least 90"):
        quote_repurchase(contract, LoanHistory(), MAR_10, policy)


def test_execute_repurchase_moves_to_repurchased(contract: Contract) -> None:
    quote = quote_repurchase(contract, LoanHistory(), MAR_10)

    closed, history = execute_repurchase(
        contract,
        LoanHistory(),
        quote,
        payment_id="DEALER-77",
        actor="ops.chen",
        at=EXECUTED_AT,
    )

    assert closed.state is ContractState.REPURCHASED
    assert [c.event for c in closed.history] == [
        ContractEvent.MARK_OVERDUE,
        ContractEvent.REPURCHASE,
    ]
    assert closed.history[-1].actor == "ops.chen"
    assert history.closure is not None
    assert history.closure.kind is ClosureKind.REPURCHASE
    assert history.payments[-1].amount == D("102470.88")


def test_ledger_after_repurchase_is_paid_off(contract: Contract) -> None:
    quote = quote_repurchase(contract, LoanHistory(), MAR_10)
    _, history = execute_repurchase(
        contract,
        LoanHistory(),
        quote,
        payment_id="DEALER-77",
        actor="ops.chen",
        at=EXECUTED_AT,
    )

    ledger = compute_ledger(contract, history, date(2026, 6, 30))

    assert ledger.dpd == 0
    assert ledger.principal_outstanding == D("0.00")
    assert ledger.penalty_outstanding == D("0.00")
    assert ledger.written_off == D("0.00")
    assert ledger.allocated_from("DEALER-77") == D("102470.88")
    assert ledger.credit_total == D("0.00")


def test_repurchase_without_penalty_writes_off(contract: Contract) -> None:
    policy = LoanPolicy(repurchase_parts=(QuotePart.PRINCIPAL, QuotePart.INTEREST))
    quote = quote_repurchase(contract, LoanHistory(), MAR_10, policy)
    _, history = execute_repurchase(
        contract,
        LoanHistory(),
        quote,
        payment_id="DEALER-77",
        actor="ops.chen",
        at=EXECUTED_AT,
        policy=policy,
    )

    ledger = compute_ledger(contract, history, date(2026, 6, 30), policy)

    assert quote.total == D("102257.76")
    assert ledger.written_off == D("213.12")
    assert ledger.penalty_outstanding == D("0.00")


def test_repurchase_fee_paid_as_fee_allocation(contract: Contract) -> None:
    policy = LoanPolicy(repurchase_fee_rate=D("0.01"))
    quote = quote_repurchase(contract, LoanHistory(), MAR_10, policy)
    _, history = execute_repurchase(
        contract,
        LoanHistory(),
        quote,
        payment_id="DEALER-77",
        actor="ops.chen",
        at=EXECUTED_AT,
        policy=policy,
    )

    ledger = compute_ledger(contract, history, MAR_10, policy)

    fees = [a for a in ledger.allocations if a.installment is None]
    assert quote.fee == D("1000.00")
    assert [a.amount for a in fees] == [D("1000.00")]
    assert ledger.written_off == D("0.00")


def test_execute_repurchase_stale_quote_raises(contract: Contract) -> None:
    quote = quote_repurchase(contract, LoanHistory(), MAR_10)
    paid = LoanHistory(payments=(Payment("B-9", "C-1", MAR_10, D("500.00")),))

    with pytest.raises(QuoteError, match="no longer matches the ledger"):
        execute_repurchase(
            contract, paid, quote, payment_id="D-1", actor="ops", at=EXECUTED_AT
        )


def test_execute_repurchase_future_quote_raises(contract: Contract) -> None:
    quote = quote_repurchase(contract, LoanHistory(), date(2026, 3, 20))

    with pytest.raises(QuoteError, match="is in the future"):
        execute_repurchase(
            contract,
            LoanHistory(),
            quote,
            payment_id="D-1",
            actor="ops",
            at=EXECUTED_AT,
        )


def test_quote_closed_contract_raises(contract: Contract) -> None:
    quote = quote_repurchase(contract, LoanHistory(), MAR_10)
    closed, history = execute_repurchase(
        contract, LoanHistory(), quote, payment_id="D-1", actor="ops", at=EXECUTED_AT
    )

    with pytest.raises(QuoteError, match="is repurchased"):
        quote_settlement(closed, history, date(2026, 4, 1))


def test_execute_settlement_settles(contract: Contract) -> None:
    on = date(2026, 2, 15)
    quote = quote_settlement(contract, ON_TIME, on)

    settled, history = execute_settlement(
        contract,
        ON_TIME,
        quote,
        payment_id="B-2",
        actor="ops.chen",
        at=datetime(2026, 2, 15, 4, tzinfo=UTC),
    )
    ledger = compute_ledger(settled, history, date(2026, 12, 31))

    assert settled.state is ContractState.SETTLED
    assert ledger.principal_outstanding == D("0.00")
    assert ledger.dpd == 0
    assert ledger.installments[1].interest == D("460.58")
    assert ledger.installments[2].interest == D("0.00")


def test_reconcile_state_marks_overdue_then_cures(contract: Contract) -> None:
    overdue = reconcile_state(contract, LoanHistory(), date(2026, 2, 2), at=EXECUTED_AT)
    # 8,884.88 plus three days of penalty at 4.44 clears installment 1.
    paid = LoanHistory(
        payments=(Payment("B-1", "C-1", date(2026, 2, 3), D("8898.20")),)
    )

    cured = reconcile_state(overdue, paid, date(2026, 2, 3), at=EXECUTED_AT)

    assert overdue.state is ContractState.OVERDUE
    assert overdue.history[-1].reason == "DPD 2 on 2026-02-02"
    assert cured.state is ContractState.ACTIVE


def test_reconcile_state_leaves_repossessed_alone(contract: Contract) -> None:
    repossessed = apply_event(
        apply_event(
            contract, ContractEvent.MARK_OVERDUE, actor="a", at=EXECUTED_AT, reason="r"
        ),
        ContractEvent.REPOSSESS,
        actor="a",
        at=EXECUTED_AT,
        reason="car recovered",
    )

    after = reconcile_state(repossessed, LoanHistory(), MAR_10, at=EXECUTED_AT)

    assert after is repossessed
