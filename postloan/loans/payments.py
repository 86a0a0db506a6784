"""Payments, reversals and the bank-statement CSV import.

A payment is identified by its bank reference, unique across the ledger, so
importing the same statement twice records each payment once. A reversal
cancels a payment entirely: the ledger is recomputed as if the payment had
never arrived.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from postloan.loans.dates import parse_date
from postloan.loans.money import (
    check_money,
    format_amount,
    parse_amount,
    require_decimal,
    round_cent,
)
from postloan.loans.rows import FieldReader, RowIssue, read_csv
from postloan.times import format_time, parse_time


@dataclass(frozen=True, slots=True)
class Payment:
    """Money received for a contract on a value date."""

    payment_id: str  # the bank reference
    contract_id: str
    value_date: date
    amount: Decimal

    def __post_init__(self) -> None:
        require_decimal(self.amount, "amount")
        if self.amount <= 0 or self.amount != round_cent(self.amount):
            raise ValueError(
                f"payment {self.payment_id}: amount {self.amount} is invalid: "
                "expected a positive amount in whole cents"
            )

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "payment_id": self.payment_id,
            "contract_id": self.contract_id,
            "value_date": self.value_date.isoformat(),
            "amount": format_amount(self.amount),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Payment:
        """Rebuild a payment from `to_record` output."""
        return cls(
            payment_id=record["payment_id"],
            contract_id=record["contract_id"],
            value_date=date.fromisoformat(record["value_date"]),
            amount=Decimal(record["amount"]),
        )


@dataclass(frozen=True, slots=True)
class Reversal:
    """Cancellation of a payment, e.g. a returned direct debit."""

    payment_id: str
    at: datetime  # aware, UTC
    actor: str
    reason: str

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "payment_id": self.payment_id,
            "at": format_time(self.at),
            "actor": self.actor,
            "reason": self.reason,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Reversal:
        """Rebuild a reversal from `to_record` output."""
        return cls(
            payment_id=record["payment_id"],
            at=parse_time(record["at"]),
            actor=record["actor"],
            reason=record["reason"],
        )


@dataclass(frozen=True, slots=True)
class StatementImport:
    """Result of reading a bank statement: new payments, repeats and issues."""

    payments: tuple[Payment, ...]
    duplicates: tuple[Payment, ...]  # already known with the same content
    issues: tuple[RowIssue, ...]


STATEMENT_COLUMNS = ("value_date", "amount", "contract_id", "bank_reference")
STATEMENT_ALIASES = {
    "date": "value_date",
    "booking_date": "value_date",
    "contract": "contract_id",
    "contract_ref": "contract_id",
    "contract_reference": "contract_id",
    "bank_ref": "bank_reference",
    "reference": "bank_reference",
    "transaction_id": "bank_reference",
}


def read_statement(
    text: str,
    *,
    contracts: Collection[str],
    today: date,
    known: Mapping[str, Payment],
) -> StatementImport:
    """Read a bank-statement CSV (date, amount, contract, bank reference).

    ``contracts`` are the contract ids payments may refer to, ``today`` is the
    business date (later value dates are rejected) and ``known`` maps the bank
    references already in the ledger to their payments. A row whose reference
    is known with the same date, amount and contract is a duplicate and is
    skipped. A known reference with other content is an issue. Raises
    ImportFileError when a column is missing.
    """
    seen = dict(known)
    new: list[Payment] = []
    duplicates: list[Payment] = []
    issues: list[RowIssue] = []
    for row, values in read_csv(text, STATEMENT_ALIASES, STATEMENT_COLUMNS):
        fields = FieldReader(row, values)
        payment = _read_payment(fields, contracts, today)
        if payment is not None:
            earlier = seen.get(payment.payment_id)
            if earlier is None:
                seen[payment.payment_id] = payment
                new.append(payment)
            elif earlier == payment:
                duplicates.append(payment)
            else:
                fields.fail(
                    "bank_reference",
                    payment.payment_id,
                    f"bank reference {payment.payment_id!r} is already recorded "
                    f"for contract {earlier.contract_id}, {earlier.value_date}, "
                    f"amount {earlier.amount}; each bank transaction needs its "
                    "own reference",
                )
        issues.extend(fields.issues)
    return StatementImport(tuple(new), tuple(duplicates), tuple(issues))


def _read_payment(
    fields: FieldReader, contracts: Collection[str], today: date
) -> Payment | None:
    def value_date(text: str) -> date:
        parsed = parse_date(text)
        if parsed > today:
            raise ValueError(f"date {parsed} is in the future (business date {today})")
        return parsed

    def amount(text: str) -> Decimal:
        parsed = parse_amount(text)
        if parsed <= 0:
            raise ValueError(
                f"amount {text!r} must be positive; record a reversal to cancel "
                "a payment"
            )
        return check_money(parsed, "amount", text)

    def contract_id(text: str) -> str:
        if text not in contracts:
            raise ValueError(f"contract {text!r} not found in the ledger")
        return text

    parsed_date = fields.required("value_date", value_date)
    parsed_amount = fields.required("amount", amount)
    parsed_contract = fields.required("contract_id", contract_id)
    reference = fields.required("bank_reference", str)
    if (
        parsed_date is None
        or parsed_amount is None
        or parsed_contract is None
        or reference is None
    ):
        return None
    return Payment(reference, parsed_contract, parsed_date, parsed_amount)
