"""Early-settlement and repurchase quotes.

A quote is the amount that pays a contract off on a date. Its lines are
chosen by the policy (`LoanPolicy.settlement_parts`, `repurchase_parts`):

- principal: all principal not yet paid, due or not;
- interest: unpaid interest of installments due by the date, plus the current
  period's interest accrued to the date under the contract's day count;
- penalty: penalty accrued and neither paid nor waived;
- fees: the policy's fee rate times the outstanding principal.

Credit carried forward from earlier payments is deducted from the total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from postloan.loans.contracts import Contract
from postloan.loans.history import ClosureKind, LoanHistory
from postloan.loans.ledger import LedgerState, compute_ledger
from postloan.loans.money import ZERO, format_amount, round_cent
from postloan.loans.policy import DEFAULT_POLICY, LoanPolicy, QuotePart
from postloan.loans.schedule import accrued_interest


class QuoteError(ValueError):
    """A quote cannot be given or executed."""


@dataclass(frozen=True)
class Quote:
    """Amount that pays a contract off on ``on``, line by line."""

    kind: ClosureKind
    contract_id: str
    on: date
    payer: str  # the borrower for a settlement, the dealer for a repurchase
    lines: Mapping[QuotePart, Decimal]  # only the parts the policy includes
    credit: Decimal  # carried-forward money deducted from the total

    @property
    def total(self) -> Decimal:
        """Amount to pay: the lines less the credit, never below zero."""
        return max(sum(self.lines.values(), ZERO) - self.credit, ZERO)

    @property
    def fee(self) -> Decimal:
        return self.lines.get(QuotePart.FEES, ZERO)

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict with amounts as two-decimal strings."""
        return {
            "kind": self.kind.value,
            "contract_id": self.contract_id,
            "on": self.on.isoformat(),
            "payer": self.payer,
            **{part.value: format_amount(v) for part, v in self.lines.items()},
            "credit": format_amount(self.credit),
            "total": format_amount(self.total),
        }


def interest_to_date(contract: Contract, ledger: LedgerState) -> Decimal:
    """Return unpaid interest due by the ledger's date plus interest accrued since."""
    unpaid = sum(
        (i.interest_unpaid for i in ledger.installments if i.due_date <= ledger.on),
        ZERO,
    )
    current = next((i for i in contract.schedule if i.due_date > ledger.on), None)
    if current is None:
        return unpaid
    return unpaid + accrued_interest(contract.terms, current, ledger.on)


def _lines(
    contract: Contract,
    ledger: LedgerState,
    parts: tuple[QuotePart, ...],
    fee_rate: Decimal,
) -> Mapping[QuotePart, Decimal]:
    values = {
        QuotePart.PRINCIPAL: ledger.principal_outstanding,
        QuotePart.INTEREST: interest_to_date(contract, ledger),
        QuotePart.PENALTY: ledger.penalty_outstanding,
        QuotePart.FEES: round_cent(ledger.principal_outstanding * fee_rate),
    }
    return MappingProxyType({part: values[part] for part in parts})


def _check_open(contract: Contract, ledger: LedgerState) -> None:
    if contract.is_closed or ledger.closure is not None:
        raise QuoteError(
            f"contract {contract.contract_id} is {contract.state.value}; "
            "a closed contract has nothing to quote"
        )


def quote_settlement(
    contract: Contract,
    history: LoanHistory,
    on: date,
    policy: LoanPolicy = DEFAULT_POLICY,
    ledger: LedgerState | None = None,
) -> Quote:
    """Quote the early settlement of a contract by its borrower on ``on``.

    ``ledger``, when given, is `compute_ledger` of the same arguments, passed
    to save a replay.
    """
    ledger = ledger or compute_ledger(contract, history, on, policy)
    _check_open(contract, ledger)
    lines = _lines(
        contract, ledger, policy.settlement_parts, policy.settlement_fee_rate
    )
    return Quote(
        ClosureKind.SETTLEMENT,
        contract.contract_id,
        on,
        contract.borrower.name,
        lines,
        ledger.credit_total,
    )


def quote_repurchase(
    contract: Contract,
    history: LoanHistory,
    on: date,
    policy: LoanPolicy = DEFAULT_POLICY,
    ledger: LedgerState | None = None,
) -> Quote:
    """Quote the repurchase of an overdue contract by its dealer on ``on``.

    ``ledger`` is as for `quote_settlement`. Raises QuoteError when the
    contract is closed or its DPD is below `LoanPolicy.repurchase_min_dpd`.
    """
    ledger = ledger or compute_ledger(contract, history, on, policy)
    _check_open(contract, ledger)
    if ledger.dpd < policy.repurchase_min_dpd:
        raise QuoteError(
            f"contract {contract.contract_id} is {ledger.dpd} days past due on "
            f"{on}; repurchase needs at least {policy.repurchase_min_dpd}"
        )
    lines = _lines(
        contract, ledger, policy.repurchase_parts, policy.repurchase_fee_rate
    )
    return Quote(
        ClosureKind.REPURCHASE,
        contract.contract_id,
        on,
        contract.dealer,
        lines,
        ledger.credit_total,
    )
