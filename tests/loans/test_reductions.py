"""Penalty reductions: reasons, role limits, self-approval and decisions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from postloan.loans.contracts import Contract
from postloan.loans.history import LoanHistory
from postloan.loans.ledger import compute_ledger
from postloan.loans.policy import LoanPolicy
from postloan.loans.reductions import (
    Decision,
    Reduction,
    ReductionError,
    ReductionStatus,
    decide,
)
from postloan.loans.workflow import decide_reduction

D = Decimal
POLICY = LoanPolicy()
REQUESTED_AT = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
DECIDED_AT = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


def request(amount: str, reduction_id: str = "R-1") -> Reduction:
    return Reduction(
        reduction_id, "C-1", D(amount), "hospital stay", "agent.wu", REQUESTED_AT
    )


def test_decide_collector_approves_within_limit() -> None:
    decided = decide(
        request("500.00"),
        Decision.APPROVE,
        approver="collector.li",
        role="collector",
        at=DECIDED_AT,
        policy=POLICY,
    )

    assert decided.status is ReductionStatus.APPROVED
    assert decided.decided_by == "collector.li"
    assert decided.decided_role == "collector"
    assert decided.decided_at == DECIDED_AT


def test_decide_collector_above_limit_raises() -> None:
    with pytest.raises(ReductionError, match=r"above the collector limit of 500\.00"):
        decide(
            request("500.01"),
            Decision.APPROVE,
            approver="collector.li",
            role="collector",
            at=DECIDED_AT,
            policy=POLICY,
        )


def test_decide_supervisor_approves_above_collector_limit() -> None:
    decided = decide(
        request("4000.00"),
        Decision.APPROVE,
        approver="supervisor.zhao",
        role="supervisor",
        at=DECIDED_AT,
        policy=POLICY,
    )

    assert decided.status is ReductionStatus.APPROVED


def test_decide_limit_counts_earlier_approvals() -> None:
    earlier = decide(
        request("300.00", "R-0"),
        Decision.APPROVE,
        approver="collector.li",
        role="collector",
        at=DECIDED_AT,
        policy=POLICY,
    )

    with pytest.raises(ReductionError, match=r"to 600\.00, above the collector limit"):
        decide(
            request("300.00"),
            Decision.APPROVE,
            approver="collector.li",
            role="collector",
            at=DECIDED_AT,
            policy=POLICY,
            others=[earlier],
        )


def test_decide_unknown_role_raises() -> None:
    with pytest.raises(ReductionError, match="role 'intern' may not decide"):
        decide(
            request("1.00"),
            Decision.REJECT,
            approver="x",
            role="intern",
            at=DECIDED_AT,
            policy=POLICY,
        )


def test_decide_own_request_raises() -> None:
    with pytest.raises(ReductionError, match="may not also decide it"):
        decide(
            request("1.00"),
            Decision.APPROVE,
            approver="agent.wu",
            role="supervisor",
            at=DECIDED_AT,
            policy=POLICY,
        )


def test_decide_twice_raises() -> None:
    rejected = decide(
        request("100.00"),
        Decision.REJECT,
        approver="collector.li",
        role="collector",
        at=DECIDED_AT,
        policy=POLICY,
        note="no evidence",
    )

    with pytest.raises(ReductionError, match="already rejected"):
        decide(
            rejected,
            Decision.APPROVE,
            approver="supervisor.zhao",
            role="supervisor",
            at=DECIDED_AT,
            policy=POLICY,
        )


def test_decide_reject_above_limit_is_allowed() -> None:
    rejected = decide(
        request("4000.00"),
        Decision.REJECT,
        approver="collector.li",
        role="collector",
        at=DECIDED_AT,
        policy=POLICY,
    )

    assert rejected.status is ReductionStatus.REJECTED


def test_reduction_needs_reason() -> None:
    with pytest.raises(ReductionError, match="a reason is required"):
        Reduction("R-1", "C-1", D("10.00"), " ", "agent.wu", REQUESTED_AT)


def test_decide_reduction_above_penalty_raises(contract: Contract) -> None:
    # On Mar 2 (Shanghai) installments 1 and 2 are 30 and 2 days late:
    # 30 * 4.44 + 2 * 4.44 = 142.08 of penalty.
    history = LoanHistory(reductions=(request("150.00"),))

    with pytest.raises(
        ReductionError, match=r"more than the outstanding penalty 142\.08"
    ):
        decide_reduction(
            contract,
            history,
            "R-1",
            Decision.APPROVE,
            approver="collector.li",
            role="collector",
            at=DECIDED_AT,
        )


def test_decide_reduction_recorded_and_applied(contract: Contract) -> None:
    history = LoanHistory(reductions=(request("100.00"),))

    decided = decide_reduction(
        contract,
        history,
        "R-1",
        Decision.APPROVE,
        approver="collector.li",
        role="collector",
        at=DECIDED_AT,
    )
    ledger = compute_ledger(contract, decided, date(2026, 3, 2))

    assert decided.reductions[0].status is ReductionStatus.APPROVED
    assert ledger.penalty_outstanding == D("42.08")


def test_reduction_record_round_trip() -> None:
    decided = decide(
        request("100.00"),
        Decision.APPROVE,
        approver="collector.li",
        role="collector",
        at=DECIDED_AT,
        policy=POLICY,
    )

    assert Reduction.from_record(decided.to_record()) == decided
