"""Contracts, schedules, payments, status and imports, over the loans ledger.

NOTE: the ledger is still the JSON directory of `postloan.loans.jsonledger`;
when contracts move into the SQL store only `_ledger` needs to change.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, Field

from postloan.api.auth import Principal, mask_borrower
from postloan.api.context import (
    ID_PATTERN,
    Admin,
    AnyUser,
    ApiContext,
    ApiError,
    Context,
    not_found,
)
from postloan.loans import LoanHistory, Payment
from postloan.loans.contracts import Contract
from postloan.loans.history import HistoryError
from postloan.loans.importing import read_contracts
from postloan.loans.jsonledger import JsonLedger, LedgerFileError
from postloan.loans.money import parse_money
from postloan.loans.payments import read_statement
from postloan.loans.report import contract_status
from postloan.loans.rows import ImportFileError, RowIssue

router = APIRouter(tags=["loans"])

ContractId = Annotated[str, Path(pattern=ID_PATTERN, max_length=100)]
# Largest import body, in characters: about 50,000 rows of a contract CSV.
MAX_IMPORT_CHARS = 10_000_000


def _ledger(context: ApiContext) -> JsonLedger:
    if context.ledger is None:
        raise ApiError(503, "no loans ledger is configured for this API")
    return context.ledger


def load_visible(
    context: ApiContext, user: Principal, contract_id: str
) -> tuple[Contract, LoanHistory]:
    """Load a contract the user may see; 404 for one outside their cases.

    A collector or agency gets 404, not 403, for another party's contract, so
    the response does not reveal which contract ids exist.
    """
    case = context.risk.get_case(contract_id)
    collector, agency = (None, None) if case is None else (case.collector, case.agency)
    if not user.can_see_case(collector, agency):
        raise not_found("contract", "contract_id", contract_id)
    try:
        return _ledger(context).load(contract_id)
    except LedgerFileError as exc:
        raise not_found("contract", "contract_id", contract_id) from exc


def contract_view(contract: Contract, user: Principal) -> dict[str, Any]:
    record = contract.to_record()
    record["borrower"] = mask_borrower(record["borrower"], user.role)
    return record


@router.get("/contracts")
def list_contracts(context: Context, user: AnyUser) -> list[dict[str, Any]]:
    """Contracts the user may see, with borrower contact masked for the role."""
    ledger = _ledger(context)
    visible = []
    for contract_id in ledger.contract_ids():
        case = context.risk.get_case(contract_id)
        parties = (None, None) if case is None else (case.collector, case.agency)
        if user.can_see_case(*parties):
            contract, _ = ledger.load(contract_id)
            visible.append(contract_view(contract, user))
    return visible


@router.get("/contracts/{contract_id}")
def get_contract(
    contract_id: ContractId, context: Context, user: AnyUser
) -> dict[str, Any]:
    contract, _ = load_visible(context, user, contract_id)
    return contract_view(contract, user)


@router.get("/contracts/{contract_id}/schedule")
def get_schedule(
    contract_id: ContractId, context: Context, user: AnyUser
) -> list[dict[str, Any]]:
    """Scheduled installments; money as decimal strings."""
    contract, _ = load_visible(context, user, contract_id)
    return [
        {
            "number": i.number,
            "due_date": i.due_date.isoformat(),
            "payment": str(i.payment),
            "principal": str(i.principal),
            "interest": str(i.interest),
            "balance": str(i.balance),
        }
        for i in contract.schedule
    ]


@router.get("/contracts/{contract_id}/payments")
def get_payments(
    contract_id: ContractId, context: Context, user: AnyUser
) -> dict[str, Any]:
    """Payments, reversals and reductions of the contract as recorded."""
    _, history = load_visible(context, user, contract_id)
    return history.to_record()


@router.get("/contracts/{contract_id}/status")
def get_status(
    contract_id: ContractId,
    context: Context,
    user: AnyUser,
    on: Annotated[date | None, Query(description="business date")] = None,
) -> dict[str, Any]:
    """Days past due, bucket, overdue amounts, penalty and quotes on a date."""
    contract, history = load_visible(context, user, contract_id)
    day = on or contract.borrower.local_date(context.clock())
    return contract_status(contract, history, day)


class PaymentRequest(BaseModel):
    """One received payment; `amount` is a decimal string in whole cents."""

    payment_id: str = Field(pattern=ID_PATTERN, description="the bank reference")
    value_date: date
    amount: str = Field(pattern=r"^\d{1,12}(\.\d{1,2})?$", examples=["1250.00"])


@router.post("/contracts/{contract_id}/payments", status_code=201)
def add_payment(
    contract_id: ContractId, body: PaymentRequest, context: Context, user: Admin
) -> dict[str, Any]:
    contract, history = load_visible(context, user, contract_id)
    today = context.clock().date()
    if body.value_date > today:
        # The same rule as the bank-statement import: money not yet received.
        raise ApiError(
            422,
            f"value date {body.value_date} is in the future (today is {today})",
            field="value_date",
            value=str(body.value_date),
        )
    try:
        amount = parse_money(body.amount, "amount")
    except ValueError as exc:
        raise ApiError(422, str(exc), field="amount", value=body.amount) from exc
    try:
        payment = Payment(body.payment_id, contract_id, body.value_date, amount)
        history = history.with_payment(payment)
    except (ValueError, HistoryError) as exc:
        raise ApiError(
            422, str(exc), field="payment_id", value=body.payment_id
        ) from exc
    _ledger(context).save(contract, history)
    context.record(user, "payment.add", contract_id, **payment.to_record())
    return payment.to_record()


def _issues(issues: tuple[RowIssue, ...]) -> list[dict[str, Any]]:
    return [
        {"row": i.row, "field": i.field, "value": i.value, "message": i.message}
        for i in issues
    ]


@router.post("/imports/contracts")
def import_contracts(
    context: Context,
    user: Admin,
    text: Annotated[str, Body(media_type="text/csv", max_length=MAX_IMPORT_CHARS)],
    file_format: Annotated[str, Query(alias="format", pattern="^(csv|json)$")] = "csv",
) -> dict[str, Any]:
    """Import contracts from CSV or JSON; rejected rows are listed, not stored."""
    ledger = _ledger(context)
    existing = {cid: pair[0] for cid, pair in ledger.load_all().items()}
    with tempfile.TemporaryDirectory() as folder:
        path = FilePath(folder) / f"upload.{file_format}"
        path.write_text(text, encoding="utf-8")
        try:
            result = read_contracts(
                path, existing=existing, actor=user.user, at=context.clock()
            )
        except ImportFileError as exc:
            raise ApiError(422, str(exc), field="format", value=file_format) from exc
    # The ledger checks ids, VINs and devices again under its lock, because
    # another import may have stored a contract since `existing` was read.
    result = result.rejecting(ledger.insert(result.contracts))
    added = [c.contract_id for c in result.contracts]
    context.record(user, "contracts.import", ",".join(added) or "-", added=added)
    return {
        "added": added,
        "duplicates": list(result.duplicates),
        "issues": _issues(result.issues),
        "warnings": _issues(result.warnings),
    }


@router.post("/imports/payments")
def import_payments(
    context: Context,
    user: Admin,
    text: Annotated[str, Body(media_type="text/csv", max_length=MAX_IMPORT_CHARS)],
) -> dict[str, Any]:
    """Import a bank-statement CSV (value_date, amount, contract_id, bank_reference)."""
    ledger = _ledger(context)
    stored = ledger.load_all()
    known = {p.payment_id: p for _, h in stored.values() for p in h.payments}
    today = context.clock().date()
    try:
        result = read_statement(text, contracts=stored, today=today, known=known)
    except ImportFileError as exc:
        raise ApiError(422, str(exc), field="text", value=text[:80]) from exc
    for contract_id in dict.fromkeys(p.contract_id for p in result.payments):
        contract, history = stored[contract_id]
        for payment in result.payments:
            if payment.contract_id == contract_id:
                history = history.with_payment(payment)
        ledger.save(contract, history)
    added = [p.payment_id for p in result.payments]
    context.record(user, "payments.import", ",".join(added) or "-", added=added)
    return {
        "added": added,
        "duplicates": [p.payment_id for p in result.duplicates],
        "issues": _issues(result.issues),
    }
