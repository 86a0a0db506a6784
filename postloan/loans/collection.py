"""A lender's overdue list, merged into our contracts and checked against them.

The list is a CSV with the columns ``contract_id``, ``dpd``,
``overdue_amount``, ``collector`` and ``notes``; each row needs ``dpd``,
``overdue_amount`` or both. The collector and notes are copied onto the
contract. The lender's DPD and overdue amount are compared with our ledger on
the business date, and every disagreement is reported, because a lender that
computes DPD differently sends cars to repossession on the wrong day.

Our overdue amount is the unpaid principal and interest of installments past
due (more than the grace days), without penalty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from postloan.loans.contracts import Contract
from postloan.loans.history import LoanHistory
from postloan.loans.ledger import LedgerState, compute_ledger
from postloan.loans.money import ZERO, format_amount, parse_amount
from postloan.loans.policy import DEFAULT_POLICY, LoanPolicy
from postloan.loans.rows import FieldReader, RowIssue, read_csv

COLLECTION_COLUMNS = ("contract_id",)
COLLECTION_ALIASES = {
    "contract": "contract_id",
    "days_past_due": "dpd",
    "overdue": "overdue_amount",
    "amount": "overdue_amount",
    "note": "notes",
}


@dataclass(frozen=True, slots=True)
class CollectionRow:
    """One contract on the lender's overdue list."""

    row: int
    contract_id: str
    dpd: int | None
    overdue_amount: Decimal | None
    collector: str | None
    notes: str


@dataclass(frozen=True, slots=True)
class Difference:
    """A value on which the lender's list and our ledger disagree."""

    row: int
    contract_id: str
    field: str  # "dpd" or "overdue_amount"
    lender: str
    ours: str
    note: str = ""

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "row": self.row,
            "contract_id": self.contract_id,
            "field": self.field,
            "lender": self.lender,
            "ours": self.ours,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class CollectionMerge:
    """Result of merging an overdue list."""

    contracts: tuple[Contract, ...]  # contracts whose collector or notes changed
    differences: tuple[Difference, ...]
    matched: int  # rows that agreed with our ledger on every value given


def _dpd(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"DPD {text!r} is invalid: expected a whole number of days")
    return int(text)


def _overdue_amount(text: str) -> Decimal:
    value = parse_amount(text)
    if value < 0:
        raise ValueError(f"overdue amount {text!r} must not be negative")
    return value


def read_collection_list(
    text: str, contracts: Mapping[str, Contract]
) -> tuple[list[CollectionRow], list[RowIssue]]:
    """Parse an overdue list; rows for unknown or repeated contracts are issues."""
    rows: list[CollectionRow] = []
    issues: list[RowIssue] = []
    seen: dict[str, int] = {}
    for number, values in read_csv(text, COLLECTION_ALIASES, COLLECTION_COLUMNS):
        fields = FieldReader(number, values)
        contract_id = fields.required("contract_id", str)
        dpd = fields.optional("dpd", _dpd)
        amount = fields.optional("overdue_amount", _overdue_amount)
        if contract_id is not None and contract_id not in contracts:
            fields.fail(
                "contract_id", contract_id, f"contract {contract_id!r} not found"
            )
        elif contract_id in seen:
            fields.fail(
                "contract_id",
                contract_id,
                f"contract {contract_id!r} is already in row {seen[contract_id]}",
            )
        if not fields.text("dpd") and not fields.text("overdue_amount"):
            fields.fail("dpd", "", "give dpd, overdue_amount or both")
        if not fields.issues and contract_id is not None:
            seen[contract_id] = number
            collector = fields.text("collector") or None
            notes = fields.text("notes")
            rows.append(
                CollectionRow(number, contract_id, dpd, amount, collector, notes)
            )
        issues.extend(fields.issues)
    return rows, issues


def _differences(row: CollectionRow, ledger: LedgerState) -> list[Difference]:
    found = []
    if row.dpd is not None and row.dpd != ledger.dpd:
        found.append(
            Difference(row.row, row.contract_id, "dpd", str(row.dpd), str(ledger.dpd))
        )
    ours = sum((i.amount_unpaid for i in ledger.overdue), ZERO)
    if row.overdue_amount is not None and row.overdue_amount != ours:
        with_penalty = ours + ledger.penalty_outstanding
        note = (
            "the lender's amount matches ours plus penalty"
            if row.overdue_amount == with_penalty
            else ""
        )
        found.append(
            Difference(
                row.row,
                row.contract_id,
                "overdue_amount",
                format_amount(row.overdue_amount),
                format_amount(ours),
                note,
            )
        )
    return found


def merge_collection_list(
    rows: list[CollectionRow],
    contracts: Mapping[str, Contract],
    histories: Mapping[str, LoanHistory],
    on: date,
    policy: LoanPolicy = DEFAULT_POLICY,
) -> CollectionMerge:
    """Copy collectors and notes onto contracts and compare DPD and amounts."""
    updated: list[Contract] = []
    differences: list[Difference] = []
    matched = 0
    for row in rows:
        contract = contracts[row.contract_id]
        history = histories.get(row.contract_id, LoanHistory())
        found = _differences(row, compute_ledger(contract, history, on, policy))
        differences.extend(found)
        matched += not found
        merged = replace(
            contract,
            collector=row.collector or contract.collector,
            collection_notes=row.notes or contract.collection_notes,
        )
        if merged != contract:
            updated.append(merged)
    return CollectionMerge(tuple(updated), tuple(differences), matched)
