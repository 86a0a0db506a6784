"""The post-loan case of a contract: a state machine with an audited history.

A case moves only through `apply_case_event`, which looks the move up in
`TRANSITIONS` and appends a `CaseChange` (who, when, from, to, why). Rules
escalate a case with `escalate`, which walks `ESCALATION_PATH` one audited
step at a time; staff call `apply_case_event` directly. A payment that clears
the arrears closes an open case (`CLEAR_ARREARS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from postloan.model import EMPTY
from postloan.risk.evidence import stamp
from postloan.times import parse_time, require_utc


class CaseState(StrEnum):
    """Stage of a post-loan case."""

    NEW = "new"
    PRE_DUE = "pre_due"  # reminder before the due date
    OVERDUE = "overdue"  # overdue reminders
    COLLECTION = "collection"  # internal collectors
    OUTSOURCED = "outsourced"  # an outside agency
    REPOSSESSION = "repossession"  # the car is to be taken back
    CLOSED = "closed"  # the arrears were paid
    REPURCHASED = "repurchased"
    SETTLED = "settled"
    WRITTEN_OFF = "written_off"


class CaseEvent(StrEnum):
    """Event that moves a case; staff and rules send the same events."""

    REMIND_PRE_DUE = "remind_pre_due"
    MARK_OVERDUE = "mark_overdue"
    ASSIGN_COLLECTION = "assign_collection"
    OUTSOURCE = "outsource"
    RECALL = "recall"  # take a case back from the agency
    ORDER_REPOSSESSION = "order_repossession"
    CLEAR_ARREARS = "clear_arrears"
    REPURCHASE = "repurchase"
    SETTLE = "settle"
    WRITE_OFF = "write_off"


S = CaseState
E = CaseEvent
_ENDINGS = {
    E.CLEAR_ARREARS: S.CLOSED,
    E.REPURCHASE: S.REPURCHASED,
    E.SETTLE: S.SETTLED,
}

# Allowed moves: state -> {event: next state}. Write-off needs collection
# first, so no case is written off without a collector having worked it.
TRANSITIONS: Mapping[CaseState, Mapping[CaseEvent, CaseState]] = {
    S.NEW: {E.REMIND_PRE_DUE: S.PRE_DUE, E.MARK_OVERDUE: S.OVERDUE},
    S.PRE_DUE: {E.MARK_OVERDUE: S.OVERDUE, **_ENDINGS},
    S.OVERDUE: {E.ASSIGN_COLLECTION: S.COLLECTION, **_ENDINGS},
    S.COLLECTION: {
        E.OUTSOURCE: S.OUTSOURCED,
        E.ORDER_REPOSSESSION: S.REPOSSESSION,
        E.WRITE_OFF: S.WRITTEN_OFF,
        **_ENDINGS,
    },
    S.OUTSOURCED: {
        E.RECALL: S.COLLECTION,
        E.ORDER_REPOSSESSION: S.REPOSSESSION,
        E.WRITE_OFF: S.WRITTEN_OFF,
        **_ENDINGS,
    },
    S.REPOSSESSION: {E.WRITE_OFF: S.WRITTEN_OFF, **_ENDINGS},
    S.CLOSED: {},
    S.REPURCHASED: {},
    S.SETTLED: {},
    S.WRITTEN_OFF: {},
}
CLOSED_STATES = frozenset(state for state, moves in TRANSITIONS.items() if not moves)

#: The event that reaches each state of the escalation path from the one before.
ESCALATION_PATH: tuple[tuple[CaseState, CaseEvent], ...] = (
    (S.PRE_DUE, E.REMIND_PRE_DUE),
    (S.OVERDUE, E.MARK_OVERDUE),
    (S.COLLECTION, E.ASSIGN_COLLECTION),
    (S.OUTSOURCED, E.OUTSOURCE),
    (S.REPOSSESSION, E.ORDER_REPOSSESSION),
)
_RANK = {state: rank for rank, (state, _) in enumerate(ESCALATION_PATH, start=1)}


class CaseTransitionError(ValueError):
    """An event is not allowed in the case's current state."""

    def __init__(self, case_id: str, event: CaseEvent, state: CaseState) -> None:
        allowed = ", ".join(TRANSITIONS[state]) or "none, the case is closed"
        super().__init__(
            f"case {case_id}: event {event.value!r} is not allowed in state "
            f"{state.value!r} (allowed: {allowed})"
        )
        self.case_id = case_id
        self.event = event
        self.state = state


@dataclass(frozen=True, slots=True)
class CaseChange:
    """One audited move of a case."""

    at: datetime
    actor: str  # a staff user, or ``rule:<id>``
    event: CaseEvent
    from_state: CaseState
    to_state: CaseState
    reason: str

    def to_record(self) -> dict[str, Any]:
        return {
            "at": stamp(self.at),
            "actor": self.actor,
            "event": self.event.value,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "reason": self.reason,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CaseChange:
        return cls(
            parse_time(record["at"], "at"),
            record["actor"],
            CaseEvent(record["event"]),
            CaseState(record["from"]),
            CaseState(record["to"]),
            record["reason"],
        )


@dataclass(frozen=True, slots=True)
class Case:
    """The case of one contract; moves that assign staff also set their fields."""

    case_id: str
    contract_id: str
    state: CaseState = CaseState.NEW
    history: tuple[CaseChange, ...] = ()
    region: str | None = None
    collector: str | None = None
    agency: str | None = None
    commission_rate: Decimal | None = None
    # Set on ORDER_REPOSSESSION: last known position and recent stops.
    repossession: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    firings: tuple[str, ...] = ()  # ids of the rule firings behind the case

    @property
    def is_closed(self) -> bool:
        return self.state in CLOSED_STATES

    def to_record(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "contract_id": self.contract_id,
            "state": self.state.value,
            "history": [change.to_record() for change in self.history],
            "region": self.region,
            "collector": self.collector,
            "agency": self.agency,
            "commission_rate": (
                None if self.commission_rate is None else str(self.commission_rate)
            ),
            "repossession": dict(self.repossession),
            "firings": list(self.firings),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Case:
        rate = record.get("commission_rate")
        return cls(
            case_id=record["case_id"],
            contract_id=record["contract_id"],
            state=CaseState(record["state"]),
            history=tuple(CaseChange.from_record(r) for r in record["history"]),
            region=record.get("region"),
            collector=record.get("collector"),
            agency=record.get("agency"),
            commission_rate=None if rate is None else Decimal(rate),
            repossession=record.get("repossession") or EMPTY,
            firings=tuple(record.get("firings", ())),
        )


def apply_case_event(
    case: Case,
    event: CaseEvent,
    *,
    actor: str,
    at: datetime,
    reason: str,
    **assignment: Any,
) -> Case:
    """Move a case by `event` and record who, when, from, to and why.

    `assignment` sets case fields that come with the move (collector, agency,
    commission_rate, repossession). Raises CaseTransitionError for a move the
    table does not allow, ValueError for an empty actor or reason or a naive time.
    """
    target = TRANSITIONS[case.state].get(event)
    if target is None:
        raise CaseTransitionError(case.case_id, event, case.state)
    if not actor.strip() or not reason.strip():
        raise ValueError(f"event {event.value!r} needs an actor and a reason")
    change = CaseChange(require_utc(at, "at"), actor, event, case.state, target, reason)
    return replace(case, state=target, history=(*case.history, change), **assignment)


def escalation_steps(case: Case, target: CaseState) -> list[CaseEvent]:
    """Return the events that take an open case forward to `target`; [] if there."""
    if case.is_closed:
        return []
    current = _RANK.get(case.state, 0)
    if case.state is CaseState.NEW and target is not CaseState.PRE_DUE:
        current = _RANK[CaseState.PRE_DUE]  # a case may open straight as overdue
    return [
        event
        for state, event in ESCALATION_PATH
        if current < _RANK[state] <= _RANK[target]
    ]


def next_position(names: Sequence[str], last: Mapping[str, Any] | None) -> int:
    """Return the index in `names` that follows the `last` assignment.

    `last` is ``{"index": i, "name": n}`` as `Rotation` stores it, or None
    before the first assignment. When the list changed since, the rotation
    continues after `n` if it is still listed, else at the index `n` had
    (now its successor's), so an edit of the list neither restarts the
    rotation nor skips anyone.
    """
    if last is None:
        return 0
    index, name = last.get("index"), last.get("name")
    if not isinstance(index, int) or index < 0:
        return 0
    if index < len(names) and names[index] == name:
        return (index + 1) % len(names)
    if isinstance(name, str) and name in names:
        return (list(names).index(name) + 1) % len(names)
    return index % len(names)


class Rotation(Protocol):
    """Round-robin positions, one per list of collectors, kept between runs."""

    def advance(self, key: str, names: Sequence[str]) -> str:
        """Return the next name of list `key` and record it as the last one."""
        ...


class MemoryRotation:
    """Positions in a dict, for tests and one-shot runs."""

    def __init__(self) -> None:
        self._last: dict[str, dict[str, Any]] = {}

    def advance(self, key: str, names: Sequence[str]) -> str:
        index = next_position(names, self._last.get(key))
        self._last[key] = {"index": index, "name": names[index]}
        return names[index]


# Rotation key of the general collector list. Region keys are the borrowers'
# IANA zone names, which never contain "*".
GENERAL = "*"


@dataclass
class CollectorPool:
    """Assigns collectors by the case's region, round robin within each list.

    The position of each list lives in `rotation`; `JsonRiskRepository`
    keeps it in the state folder, so each ``postloan risk evaluate`` run
    continues where the last one stopped.
    """

    collectors: Sequence[str]
    regions: Mapping[str, Sequence[str]] = field(default_factory=dict)
    rotation: Rotation = field(default_factory=MemoryRotation)

    def assign(self, region: str | None) -> str:
        """Return the next collector for `region`, or of the general list."""
        if region is not None and region in self.regions:
            key, names = region, self.regions[region]
        else:
            key, names = GENERAL, self.collectors
        if not names:
            raise ValueError(
                f"no collector for region {region!r}; list [assignment] collectors"
            )
        return str(self.rotation.advance(key, [str(name) for name in names]))
