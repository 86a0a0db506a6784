"""Contract states: the transition table, errors and the audit trail."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from postloan.loans.contracts import (
    TRANSITIONS,
    Contract,
    ContractEvent,
    ContractState,
    TransitionError,
    apply_event,
    open_contract,
)

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def test_apply_event_moves_state_and_records_audit(contract: Contract) -> None:
    moved = apply_event(
        contract, ContractEvent.MARK_OVERDUE, actor="risk", at=AT, reason="DPD 1"
    )

    assert moved.state is ContractState.OVERDUE
    change = moved.history[-1]
    assert change.actor == "risk"
    assert change.at == AT
    assert change.from_state is ContractState.ACTIVE
    assert change.to_state is ContractState.OVERDUE
    assert change.reason == "DPD 1"


def test_apply_event_leaves_original_unchanged(contract: Contract) -> None:
    apply_event(contract, ContractEvent.SETTLE, actor="ops", at=AT, reason="paid off")

    assert contract.state is ContractState.ACTIVE
    assert contract.history == ()


def test_illegal_event_names_event_and_state(contract: Contract) -> None:
    with pytest.raises(TransitionError) as caught:
        apply_event(contract, ContractEvent.REPOSSESS, actor="ops", at=AT, reason="x")

    assert caught.value.event is ContractEvent.REPOSSESS
    assert caught.value.state is ContractState.ACTIVE
    assert "'repossess' is not allowed in state 'active'" in str(caught.value)


@pytest.mark.parametrize(
    "state",
    [ContractState.SETTLED, ContractState.REPURCHASED, ContractState.WRITTEN_OFF],
)
def test_closed_states_allow_no_event(contract: Contract, state: ContractState) -> None:
    closed = replace(contract, state=state)

    for event in ContractEvent:
        with pytest.raises(TransitionError, match="the contract is closed"):
            apply_event(closed, event, actor="ops", at=AT, reason="x")


def test_full_path_overdue_repossessed_written_off(contract: Contract) -> None:
    path = [
        ContractEvent.MARK_OVERDUE,
        ContractEvent.REPOSSESS,
        ContractEvent.RELEASE,
        ContractEvent.REPOSSESS,
        ContractEvent.WRITE_OFF,
    ]

    for event in path:
        contract = apply_event(contract, event, actor="ops", at=AT, reason="case")

    assert contract.state is ContractState.WRITTEN_OFF
    assert [c.event for c in contract.history] == path


def test_apply_event_needs_reason(contract: Contract) -> None:
    with pytest.raises(ValueError, match="needs an actor and a reason"):
        apply_event(contract, ContractEvent.SETTLE, actor="ops", at=AT, reason=" ")


def test_apply_event_rejects_naive_time(contract: Contract) -> None:
    with pytest.raises(ValueError, match="has no UTC offset"):
        apply_event(
            contract,
            ContractEvent.SETTLE,
            actor="ops",
            at=datetime(2026, 3, 1),
            reason="x",
        )


def test_transition_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(ContractState)


def test_open_contract_starts_history(contract: Contract) -> None:
    opened = open_contract(contract, "import", AT, "imported from c.csv row 2")

    assert opened.history[0].event is ContractEvent.OPEN
    assert opened.history[0].from_state is None


def test_contract_record_round_trip(contract: Contract) -> None:
    moved = apply_event(
        open_contract(contract, "import", AT, "row 2"),
        ContractEvent.MARK_OVERDUE,
        actor="risk",
        at=AT,
        reason="DPD 3",
    )

    record = moved.to_record()

    assert Contract.from_record(record) == moved
    assert record["terms"]["principal"] == "100000.00"
    assert record["terms"]["first_due_date"] == "2026-01-31"
    assert record["history"][1]["at"] == "2026-03-01T09:30:00Z"


def test_borrower_local_date_uses_time_zone(contract: Contract) -> None:
    late_evening_utc = datetime(2026, 3, 1, 17, 0, tzinfo=UTC)

    assert contract.borrower.local_date(late_evening_utc) == date(2026, 3, 2)
