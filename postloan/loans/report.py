"""The status of one contract on a business date, as one JSON-ready dict."""

from __future__ import annotations

from datetime import date
from typing import Any

from postloan.loans.contracts import Contract
from postloan.loans.history import LoanHistory
from postloan.loans.ledger import LedgerState, compute_ledger
from postloan.loans.money import ZERO, format_amount
from postloan.loans.policy import DEFAULT_POLICY, LoanPolicy
from postloan.loans.quotes import QuoteError, quote_repurchase, quote_settlement


def contract_status(
    contract: Contract,
    history: LoanHistory,
    on: date,
    policy: LoanPolicy = DEFAULT_POLICY,
) -> dict[str, Any]:
    """Return DPD, bucket, overdue amounts, penalty and both quotes on ``on``.

    A quote that cannot be given (a closed contract, or a DPD below the
    repurchase minimum) is null, with the reason under ``unavailable``.
    """
    ledger = compute_ledger(contract, history, on, policy)
    status: dict[str, Any] = {
        "contract_id": contract.contract_id,
        "on": on.isoformat(),
        "state": contract.state.value,
        "dpd": ledger.dpd,
        "bucket": ledger.bucket,
        "overdue": _overdue(ledger),
        "penalty": _penalty(ledger),
        "principal_outstanding": format_amount(ledger.principal_outstanding),
        "credit": format_amount(ledger.credit_total),
        "closure": ledger.closure.to_record() if ledger.closure else None,
    }
    unavailable: dict[str, str] = {}
    quoters = {"settlement": quote_settlement, "repurchase": quote_repurchase}
    for name, quote in quoters.items():
        try:
            status[name] = quote(contract, history, on, policy, ledger).to_record()
        except QuoteError as exc:
            status[name] = None
            unavailable[name] = str(exc)
    status["unavailable"] = unavailable
    return status


def _overdue(ledger: LedgerState) -> dict[str, Any]:
    overdue = ledger.overdue
    principal = sum((i.principal_unpaid for i in overdue), ZERO)
    interest = sum((i.interest_unpaid for i in overdue), ZERO)
    return {
        "installments": [i.number for i in overdue],
        "principal": format_amount(principal),
        "interest": format_amount(interest),
        "total": format_amount(principal + interest),
    }


def _penalty(ledger: LedgerState) -> dict[str, str]:
    rows = ledger.installments
    return {
        "accrued": format_amount(sum((i.penalty_accrued for i in rows), ZERO)),
        "paid": format_amount(sum((i.penalty_paid for i in rows), ZERO)),
        "waived": format_amount(sum((i.penalty_waived for i in rows), ZERO)),
        "outstanding": format_amount(ledger.penalty_outstanding),
    }
