"""Case workflow: the transition table, audit and illegal moves."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postloan.risk import (
    Case,
    CaseEvent,
    CaseState,
    CaseTransitionError,
    CollectorPool,
    apply_case_event,
    escalation_steps,
)

AT = datetime(2024, 5, 1, tzinfo=UTC)


def test_case_event_audited() -> None:
    case = apply_case_event(
        Case("K", "C"),
        CaseEvent.MARK_OVERDUE,
        actor="ana",
        at=AT,
        reason="missed installment 3",
    )

    assert case.state is CaseState.OVERDUE
    assert case.history[0].to_record() == {
        "at": "2024-05-01T00:00:00Z",
        "actor": "ana",
        "event": "mark_overdue",
        "from": "new",
        "to": "overdue",
        "reason": "missed installment 3",
    }


def test_case_event_illegal_names_event_and_state() -> None:
    with pytest.raises(
        CaseTransitionError, match="'outsource' is not allowed in state 'overdue'"
    ):
        apply_case_event(
            Case("K", "C", CaseState.OVERDUE),
            CaseEvent.OUTSOURCE,
            actor="ana",
            at=AT,
            reason="r",
        )


def test_case_event_closed_case_rejects_everything() -> None:
    closed = Case("K", "C", CaseState.CLOSED)

    with pytest.raises(CaseTransitionError, match="the case is closed"):
        apply_case_event(closed, CaseEvent.MARK_OVERDUE, actor="a", at=AT, reason="r")


def test_case_event_without_reason_rejected() -> None:
    with pytest.raises(ValueError, match="needs an actor and a reason"):
        apply_case_event(
            Case("K", "C"), CaseEvent.MARK_OVERDUE, actor="a", at=AT, reason=" "
        )


def test_escalation_steps_skip_reached_states() -> None:
    case = Case("K", "C", CaseState.OVERDUE)

    steps = escalation_steps(case, CaseState.OUTSOURCED)

    assert steps == [CaseEvent.ASSIGN_COLLECTION, CaseEvent.OUTSOURCE]
    assert escalation_steps(case, CaseState.PRE_DUE) == []


def test_escalation_steps_new_case_opens_overdue() -> None:
    steps = escalation_steps(Case("K", "C"), CaseState.COLLECTION)

    assert steps == [CaseEvent.MARK_OVERDUE, CaseEvent.ASSIGN_COLLECTION]


def test_collector_pool_region_then_round_robin() -> None:
    pool = CollectorPool(["x", "y"], {"Europe/Lisbon": ["l1", "l2"]})

    picks = [
        pool.assign("Europe/Lisbon"),
        pool.assign(None),
        pool.assign(None),
        pool.assign("Europe/Lisbon"),
        pool.assign(None),
    ]

    assert picks == ["l1", "x", "y", "l2", "x"]
