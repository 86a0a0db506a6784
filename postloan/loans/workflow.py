"""Commands that change a contract or its history, checked against the ledger.

Each command returns new values (contract, history or both) and changes
nothing when it raises, so a caller stores all of them or none.
"""

from __future__ import annotations

from datetime import date, datetime

from postloan.loans.contracts import (
    Contract,
    ContractEvent,
    ContractState,
    apply_event,
)
from postloan.loans.history import Closure, ClosureKind, LoanHistory
from postloan.loans.ledger import compute_ledger
from postloan.loans.money import require_decimal
from postloan.loans.payments import Payment, Reversal
from postloan.loans.policy import DEFAULT_POLICY, LoanPolicy
from postloan.loans.quotes import Quote, QuoteError, quote_repurchase, quote_settlement
from postloan.loans.reductions import Decision, Reduction, decide
from postloan.times import require_utc

SYSTEM_ACTOR = "postloan"


def reconcile_state(
    contract: Contract,
    history: LoanHistory,
    on: date,
    *,
    at: datetime,
    policy: LoanPolicy = DEFAULT_POLICY,
) -> Contract:
    """Mark an active contract overdue when DPD > 0, or cure an overdue one at 0.

    Other states are left as they are: repossession and closure are decisions
    of staff, not of the ledger.
    """
    dpd = compute_ledger(contract, history, on, policy).dpd
    event = None
    if contract.state is ContractState.ACTIVE and dpd > 0:
        event = ContractEvent.MARK_OVERDUE
    elif contract.state is ContractState.OVERDUE and dpd == 0:
        event = ContractEvent.CURE
    if event is None:
        return contract
    return apply_event(
        contract, event, actor=SYSTEM_ACTOR, at=at, reason=f"DPD {dpd} on {on}"
    )


def reverse_payment(
    contract: Contract, history: LoanHistory, reversal: Reversal
) -> LoanHistory:
    """Record a reversal, after which the ledger replays without the payment."""
    if reversal.payment_id not in {p.payment_id for p in history.payments}:
        raise ValueError(
            f"payment {reversal.payment_id!r} not found on contract "
            f"{contract.contract_id}"
        )
    return history.with_reversal(reversal)


def decide_reduction(
    contract: Contract,
    history: LoanHistory,
    reduction_id: str,
    decision: Decision,
    *,
    approver: str,
    role: str,
    at: datetime,
    policy: LoanPolicy = DEFAULT_POLICY,
    note: str = "",
) -> LoanHistory:
    """Approve or reject a recorded reduction request.

    An approval may not exceed the penalty outstanding on the borrower's local
    date of the decision, nor the role's limit (see `reductions.decide`).
    """
    request = _find_reduction(history, reduction_id)
    on = contract.borrower.local_date(at)
    ledger = compute_ledger(contract, history, on, policy)
    decided = decide(
        request,
        decision,
        approver=approver,
        role=role,
        at=at,
        policy=policy,
        others=history.reductions,
        outstanding_penalty=ledger.penalty_outstanding,
        note=note,
    )
    return history.with_reduction(decided)


def _find_reduction(history: LoanHistory, reduction_id: str) -> Reduction:
    for reduction in history.reductions:
        if reduction.reduction_id == reduction_id:
            return reduction
    raise ValueError(f"reduction {reduction_id!r} not found")


def execute_settlement(
    contract: Contract,
    history: LoanHistory,
    quote: Quote,
    *,
    payment_id: str,
    actor: str,
    at: datetime,
    policy: LoanPolicy = DEFAULT_POLICY,
) -> tuple[Contract, LoanHistory]:
    """Record the borrower's payment of a settlement quote and settle the contract."""
    fresh = quote_settlement(contract, history, quote.on, policy)
    return _execute(contract, history, quote, fresh, payment_id, actor, at)


def execute_repurchase(
    contract: Contract,
    history: LoanHistory,
    quote: Quote,
    *,
    payment_id: str,
    actor: str,
    at: datetime,
    policy: LoanPolicy = DEFAULT_POLICY,
) -> tuple[Contract, LoanHistory]:
    """Record the dealer's payment of a repurchase quote and close the contract.

    An active contract is first marked overdue (the quote proves DPD > 0).
    Raises QuoteError when the quote no longer matches the ledger, e.g. after
    a later payment, and TransitionError when the state does not allow it.
    """
    fresh = quote_repurchase(contract, history, quote.on, policy)
    if contract.state is ContractState.ACTIVE:
        contract = apply_event(
            contract,
            ContractEvent.MARK_OVERDUE,
            actor=SYSTEM_ACTOR,
            at=at,
            reason=f"past due on {quote.on}, before repurchase",
        )
    return _execute(contract, history, quote, fresh, payment_id, actor, at)


_CLOSING_EVENT = {
    ClosureKind.SETTLEMENT: ContractEvent.SETTLE,
    ClosureKind.REPURCHASE: ContractEvent.REPURCHASE,
}


def _execute(
    contract: Contract,
    history: LoanHistory,
    quote: Quote,
    fresh: Quote,
    payment_id: str,
    actor: str,
    at: datetime,
) -> tuple[Contract, LoanHistory]:
    if fresh != quote:
        raise QuoteError(
            f"the {quote.kind.value} quote of contract {contract.contract_id} for "
            f"{quote.on} ({quote.total}) no longer matches the ledger "
            f"({fresh.total}); request a new quote"
        )
    at = require_utc(at, "at")
    if quote.on > contract.borrower.local_date(at):
        raise QuoteError(f"quote date {quote.on} is in the future; execute it then")
    closed = apply_event(
        contract,
        _CLOSING_EVENT[quote.kind],
        actor=actor,
        at=at,
        reason=f"{quote.kind.value} of {quote.total} paid by {quote.payer}",
    )
    if quote.total > 0:
        payment = Payment(payment_id, contract.contract_id, quote.on, quote.total)
        history = history.with_payment(payment)
    closure = Closure(
        kind=quote.kind,
        on=quote.on,
        payment_id=payment_id if quote.total > 0 else None,
        amount=require_decimal(quote.total, "total"),
        fee=quote.fee,
        parts=tuple(quote.lines),
        payer=quote.payer,
        actor=actor,
        at=at,
    )
    return closed, history.with_closure(closure)
