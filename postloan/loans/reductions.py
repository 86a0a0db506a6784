"""Penalty reductions: requested with a reason, decided by a role with a limit.

A reduction waives part of a contract's accrued penalty from the borrower's
local date of its approval. Approval limits come from
`LoanPolicy.reduction_limits`, and apply to the contract's total of approved
reductions including the new one, so splitting a request does not get around
a limit. An approver may not decide their own request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from postloan.loans.money import format_amount, require_decimal, round_cent
from postloan.loans.policy import LoanPolicy
from postloan.times import format_time, parse_time, require_utc


class ReductionError(ValueError):
    """A reduction request or decision is not allowed."""


class ReductionStatus(StrEnum):
    """Stage of a reduction request."""

    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"


class Decision(StrEnum):
    """Approver's choice on a request."""

    APPROVE = "approve"
    REJECT = "reject"


_DECISIONS: Mapping[ReductionStatus, Mapping[Decision, ReductionStatus]] = {
    ReductionStatus.REQUESTED: {
        Decision.APPROVE: ReductionStatus.APPROVED,
        Decision.REJECT: ReductionStatus.REJECTED,
    },
    ReductionStatus.APPROVED: {},
    ReductionStatus.REJECTED: {},
}


@dataclass(frozen=True, slots=True)
class Reduction:
    """A request to waive penalty on one contract, and its decision."""

    reduction_id: str
    contract_id: str
    amount: Decimal
    reason: str
    requested_by: str
    requested_at: datetime
    status: ReductionStatus = ReductionStatus.REQUESTED
    decided_by: str | None = None
    decided_role: str | None = None
    decided_at: datetime | None = None
    decision_note: str = ""

    def __post_init__(self) -> None:
        require_decimal(self.amount, "amount")
        if self.amount <= 0 or self.amount != round_cent(self.amount):
            raise ReductionError(
                f"reduction {self.reduction_id}: amount {self.amount} is invalid: "
                "expected a positive amount in whole cents"
            )
        if not self.reason.strip():
            raise ReductionError(f"reduction {self.reduction_id}: a reason is required")

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "reduction_id": self.reduction_id,
            "contract_id": self.contract_id,
            "amount": format_amount(self.amount),
            "reason": self.reason,
            "requested_by": self.requested_by,
            "requested_at": format_time(self.requested_at),
            "status": self.status.value,
            "decided_by": self.decided_by,
            "decided_role": self.decided_role,
            "decided_at": format_time(self.decided_at) if self.decided_at else None,
            "decision_note": self.decision_note,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Reduction:
        """Rebuild a reduction from `to_record` output."""
        decided_at = record.get("decided_at")
        return cls(
            reduction_id=record["reduction_id"],
            contract_id=record["contract_id"],
            amount=Decimal(record["amount"]),
            reason=record["reason"],
            requested_by=record["requested_by"],
            requested_at=parse_time(record["requested_at"]),
            status=ReductionStatus(record["status"]),
            decided_by=record.get("decided_by"),
            decided_role=record.get("decided_role"),
            decided_at=parse_time(decided_at) if decided_at else None,
            decision_note=record.get("decision_note", ""),
        )


def approved_total(reductions: Iterable[Reduction]) -> Decimal:
    """Return the sum of approved reductions."""
    return sum(
        (r.amount for r in reductions if r.status is ReductionStatus.APPROVED),
        Decimal("0.00"),
    )


def decide(
    reduction: Reduction,
    decision: Decision,
    *,
    approver: str,
    role: str,
    at: datetime,
    policy: LoanPolicy,
    others: Iterable[Reduction] = (),
    outstanding_penalty: Decimal | None = None,
    note: str = "",
) -> Reduction:
    """Approve or reject a request and record who decided, in which role, when.

    ``others`` are the contract's other reductions, whose approved total counts
    against the role's limit. ``outstanding_penalty``, when given, is the
    penalty owed on the decision date; an approval above it is rejected.
    Raises ReductionError when the decision is not allowed.
    """
    target = _DECISIONS[reduction.status].get(decision)
    if target is None:
        raise ReductionError(
            f"reduction {reduction.reduction_id}: cannot {decision.value} a "
            f"request that is already {reduction.status.value}"
        )
    limit = policy.reduction_limits.get(role)
    if limit is None:
        roles = ", ".join(sorted(policy.reduction_limits)) or "none configured"
        raise ReductionError(
            f"role {role!r} may not decide penalty reductions (roles: {roles})"
        )
    if approver == reduction.requested_by:
        raise ReductionError(
            f"reduction {reduction.reduction_id}: {approver} requested it and "
            "may not also decide it"
        )
    if decision is Decision.APPROVE:
        _check_approval(reduction, role, limit, others, outstanding_penalty)
    return replace(
        reduction,
        status=target,
        decided_by=approver,
        decided_role=role,
        decided_at=require_utc(at, "decided_at"),
        decision_note=note,
    )


def _check_approval(
    reduction: Reduction,
    role: str,
    limit: Decimal,
    others: Iterable[Reduction],
    outstanding_penalty: Decimal | None,
) -> None:
    total = (
        approved_total(r for r in others if r.reduction_id != reduction.reduction_id)
        + reduction.amount
    )
    if total > limit:
        raise ReductionError(
            f"reduction {reduction.reduction_id}: approving {reduction.amount} "
            f"brings the approved reductions on contract {reduction.contract_id} "
            f"to {total}, above the {role} limit of {limit}; a role with a "
            "higher limit must approve it"
        )
    if outstanding_penalty is not None and reduction.amount > outstanding_penalty:
        raise ReductionError(
            f"reduction {reduction.reduction_id}: amount {reduction.amount} is "
            f"more than the outstanding penalty {outstanding_penalty}"
        )
