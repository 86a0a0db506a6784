"""The event history of one contract: payments, reversals, reductions, closure.

The ledger is a pure function of a contract, its history and a business date
(`postloan.loans.ledger.compute_ledger`). Events are only ever added: a
payment is cancelled by a reversal, never deleted, so the history is also the
audit trail of the money.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from postloan.loans.money import format_amount, require_decimal
from postloan.loans.payments import Payment, Reversal
from postloan.loans.policy import QuotePart
from postloan.loans.reductions import Reduction
from postloan.times import format_time, parse_time


class HistoryError(ValueError):
    """An event does not fit the contract's history."""


class ClosureKind(StrEnum):
    """Way a contract was paid off before or at maturity."""

    SETTLEMENT = "settlement"  # the borrower paid the settlement quote
    REPURCHASE = "repurchase"  # the dealer paid the repurchase quote


@dataclass(frozen=True, slots=True)
class Closure:
    """Payoff of a contract on a date, by the payment ``payment_id`` and credit.

    On ``on`` the remaining principal falls due, interest stops at the interest
    accrued to ``on`` and penalty stops accruing. Debt in quote lines left out
    of ``parts``, and whatever the money received does not cover, is written
    off.
    """

    kind: ClosureKind
    on: date
    payment_id: str | None  # None when credit already covered the quote
    amount: Decimal  # the quote total that was paid
    fee: Decimal  # the quote's fee line, paid before the debt
    parts: tuple[QuotePart, ...]  # quote lines; debt outside them is written off
    payer: str  # the borrower's name, or the dealer for a repurchase
    actor: str
    at: datetime

    def __post_init__(self) -> None:
        require_decimal(self.amount, "amount")
        require_decimal(self.fee, "fee")

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "kind": self.kind.value,
            "on": self.on.isoformat(),
            "payment_id": self.payment_id,
            "amount": format_amount(self.amount),
            "fee": format_amount(self.fee),
            "parts": [part.value for part in self.parts],
            "payer": self.payer,
            "actor": self.actor,
            "at": format_time(self.at),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Closure:
        """Rebuild a closure from `to_record` output."""
        return cls(
            kind=ClosureKind(record["kind"]),
            on=date.fromisoformat(record["on"]),
            payment_id=record.get("payment_id"),
            amount=Decimal(record["amount"]),
            fee=Decimal(record["fee"]),
            parts=tuple(QuotePart(part) for part in record["parts"]),
            payer=record["payer"],
            actor=record["actor"],
            at=parse_time(record["at"]),
        )


@dataclass(frozen=True, slots=True)
class LoanHistory:
    """Every money event of one contract, in the order it was recorded."""

    payments: tuple[Payment, ...] = ()
    reversals: tuple[Reversal, ...] = ()
    reductions: tuple[Reduction, ...] = ()
    closure: Closure | None = None

    @property
    def reversed_ids(self) -> frozenset[str]:
        """Bank references of the reversed payments."""
        return frozenset(reversal.payment_id for reversal in self.reversals)

    def with_payment(self, payment: Payment) -> LoanHistory:
        """Return the history with one more payment; raise on a reused reference."""
        if any(p.payment_id == payment.payment_id for p in self.payments):
            raise HistoryError(
                f"payment {payment.payment_id!r} is already recorded; bank "
                "references must be unique"
            )
        return replace(self, payments=(*self.payments, payment))

    def with_reversal(self, reversal: Reversal) -> LoanHistory:
        """Return the history with a payment reversed.

        Raises HistoryError for an unknown or already reversed payment, and for
        the payment that closed the contract.
        """
        known = {p.payment_id for p in self.payments}
        if reversal.payment_id not in known:
            raise HistoryError(f"payment {reversal.payment_id!r} not found")
        if reversal.payment_id in self.reversed_ids:
            raise HistoryError(f"payment {reversal.payment_id!r} is already reversed")
        if self.closure is not None and self.closure.payment_id == reversal.payment_id:
            raise HistoryError(
                f"payment {reversal.payment_id!r} closed the contract by "
                f"{self.closure.kind.value} and cannot be reversed"
            )
        return replace(self, reversals=(*self.reversals, reversal))

    def with_reduction(self, reduction: Reduction) -> LoanHistory:
        """Return the history with a reduction added or its decision updated."""
        others = tuple(
            r for r in self.reductions if r.reduction_id != reduction.reduction_id
        )
        return replace(self, reductions=(*others, reduction))

    def with_closure(self, closure: Closure) -> LoanHistory:
        """Return the history closed by ``closure``; raise if already closed."""
        if self.closure is not None:
            raise HistoryError(
                f"the contract was already closed by {self.closure.kind.value} "
                f"on {self.closure.on}"
            )
        return replace(self, closure=closure)

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "payments": [p.to_record() for p in self.payments],
            "reversals": [r.to_record() for r in self.reversals],
            "reductions": [r.to_record() for r in self.reductions],
            "closure": self.closure.to_record() if self.closure else None,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LoanHistory:
        """Rebuild a history from `to_record` output."""
        closure = record.get("closure")
        return cls(
            payments=tuple(Payment.from_record(r) for r in record["payments"]),
            reversals=tuple(Reversal.from_record(r) for r in record["reversals"]),
            reductions=tuple(Reduction.from_record(r) for r in record["reductions"]),
            closure=Closure.from_record(closure) if closure else None,
        )
