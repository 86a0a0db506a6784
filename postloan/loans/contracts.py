"""Loan contracts, their states and the audited transitions between them.

A contract moves between states only through `apply_event`, which looks the
move up in `TRANSITIONS` and appends a `StateChange` (who, when, from, to,
why) to the contract's history. Contracts are immutable: every change returns
a new contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from postloan.loans.identity import normalize_vin
from postloan.loans.schedule import LoanTerms, Schedule, build_schedule
from postloan.times import format_time, parse_time, require_utc


class ContractState(StrEnum):
    """Stage of a contract's life."""

    ACTIVE = "active"
    OVERDUE = "overdue"
    SETTLED = "settled"
    REPURCHASED = "repurchased"
    REPOSSESSED = "repossessed"
    WRITTEN_OFF = "written_off"


class ContractEvent(StrEnum):
    """Event that moves a contract from one state to another."""

    OPEN = "open"  # the contract enters the ledger; only in history
    MARK_OVERDUE = "mark_overdue"
    CURE = "cure"  # all past-due installments paid
    SETTLE = "settle"  # paid off, early or at maturity
    REPURCHASE = "repurchase"  # the dealer bought the loan back
    REPOSSESS = "repossess"  # the car was taken back
    RELEASE = "release"  # a repossessed car returned to the borrower
    WRITE_OFF = "write_off"


S = ContractState
E = ContractEvent

# Allowed moves: state -> {event: next state}. Settled, repurchased and
# written-off contracts are closed, so nothing leaves those states.
TRANSITIONS: Mapping[ContractState, Mapping[ContractEvent, ContractState]] = {
    S.ACTIVE: {E.MARK_OVERDUE: S.OVERDUE, E.SETTLE: S.SETTLED},
    S.OVERDUE: {
        E.CURE: S.ACTIVE,
        E.SETTLE: S.SETTLED,
        E.REPURCHASE: S.REPURCHASED,
        E.REPOSSESS: S.REPOSSESSED,
        E.WRITE_OFF: S.WRITTEN_OFF,
    },
    S.REPOSSESSED: {
        E.RELEASE: S.OVERDUE,
        E.SETTLE: S.SETTLED,
        E.REPURCHASE: S.REPURCHASED,
        E.WRITE_OFF: S.WRITTEN_OFF,
    },
    S.SETTLED: {},
    S.REPURCHASED: {},
    S.WRITTEN_OFF: {},
}

CLOSED_STATES = frozenset(state for state, moves in TRANSITIONS.items() if not moves)


class TransitionError(ValueError):
    """An event is not allowed in the contract's current state."""

    def __init__(self, contract_id: str, event: ContractEvent, state: ContractState):
        allowed = ", ".join(TRANSITIONS[state]) or "none, the contract is closed"
        super().__init__(
            f"contract {contract_id}: event {event.value!r} is not allowed in "
            f"state {state.value!r} (allowed: {allowed})"
        )
        self.contract_id = contract_id
        self.event = event
        self.state = state


@dataclass(frozen=True, slots=True)
class StateChange:
    """One audited change of state."""

    at: datetime  # aware, UTC
    actor: str
    event: ContractEvent
    from_state: ContractState | None  # None for OPEN
    to_state: ContractState
    reason: str

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "at": format_time(self.at),
            "actor": self.actor,
            "event": self.event.value,
            "from": self.from_state.value if self.from_state else None,
            "to": self.to_state.value,
            "reason": self.reason,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StateChange:
        """Rebuild a change from `to_record` output."""
        source = record["from"]
        return cls(
            at=parse_time(record["at"]),
            actor=record["actor"],
            event=ContractEvent(record["event"]),
            from_state=ContractState(source) if source else None,
            to_state=ContractState(record["to"]),
            reason=record["reason"],
        )


@dataclass(frozen=True, slots=True)
class Borrower:
    """The person or company that owes the loan."""

    name: str
    phone: str
    id_number: str
    time_zone: str  # IANA name, e.g. Asia/Shanghai

    def local_date(self, instant: datetime) -> date:
        """Return the calendar date at the borrower's location at ``instant``."""
        return instant.astimezone(ZoneInfo(self.time_zone)).date()


@dataclass(frozen=True, slots=True)
class Vehicle:
    """The financed car, the loan's collateral."""

    vin: str
    plate: str | None = None


@dataclass(frozen=True, slots=True)
class Contract:
    """A loan contract with its current state and the history of its states."""

    contract_id: str
    borrower: Borrower
    vehicle: Vehicle
    terms: LoanTerms
    dealer: str  # the dealer or service provider that sold the loan
    devices: tuple[str, ...] = ()  # tracker ids fitted to the vehicle
    state: ContractState = ContractState.ACTIVE
    history: tuple[StateChange, ...] = ()
    collector: str | None = None
    collection_notes: str = ""

    @property
    def schedule(self) -> Schedule:
        """Installments of the loan, built from its terms."""
        return build_schedule(self.terms)

    @property
    def is_closed(self) -> bool:
        """Whether the contract is settled, repurchased or written off."""
        return self.state in CLOSED_STATES

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict: Decimals as strings, dates ISO-8601."""
        return {
            "contract_id": self.contract_id,
            "borrower": {
                "name": self.borrower.name,
                "phone": self.borrower.phone,
                "id_number": self.borrower.id_number,
                "time_zone": self.borrower.time_zone,
            },
            "vehicle": {"vin": self.vehicle.vin, "plate": self.vehicle.plate},
            "devices": list(self.devices),
            "terms": self.terms.to_record(),
            "dealer": self.dealer,
            "state": self.state.value,
            "history": [change.to_record() for change in self.history],
            "collector": self.collector,
            "collection_notes": self.collection_notes,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Contract:
        """Rebuild a contract from `to_record` output."""
        return cls(
            contract_id=record["contract_id"],
            borrower=Borrower(**record["borrower"]),
            vehicle=Vehicle(**record["vehicle"]),
            terms=LoanTerms.from_record(record["terms"]),
            dealer=record["dealer"],
            devices=tuple(record.get("devices", ())),
            state=ContractState(record["state"]),
            history=tuple(StateChange.from_record(r) for r in record["history"]),
            collector=record.get("collector"),
            collection_notes=record.get("collection_notes", ""),
        )


class CollateralInUseError(ValueError):
    """A contract's VIN or tracker belongs to another contract that has not ended.

    ``field`` is the import field that carries ``value`` ("vin" or "devices").
    """

    field = ""

    def __init__(
        self, contract_id: str, value: str, other: Contract, message: str
    ) -> None:
        super().__init__(message)
        self.contract_id = contract_id
        self.value = value
        self.other_id = other.contract_id


class VinInUseError(CollateralInUseError):
    """A contract's VIN belongs to another contract that has not ended."""

    field = "vin"

    def __init__(self, contract_id: str, vin: str, other: Contract) -> None:
        message = (
            f"VIN {vin} of contract {contract_id} already belongs to contract "
            f"{other.contract_id}, which is {other.state.value}; one car backs "
            f"one live contract, so settle, repurchase or write off "
            f"{other.contract_id} first"
        )
        super().__init__(contract_id, vin, other, message)
        self.vin = vin


class DeviceInUseError(CollateralInUseError):
    """A contract's tracker is fitted to the car of another live contract."""

    field = "devices"

    def __init__(self, contract_id: str, device_id: str, other: Contract) -> None:
        message = (
            f"device {device_id} of contract {contract_id} already belongs to "
            f"contract {other.contract_id}, which is {other.state.value}; a "
            f"tracker is fitted to one car, so settle, repurchase or write off "
            f"{other.contract_id} first, or fit another tracker"
        )
        super().__init__(contract_id, device_id, other, message)
        self.device_id = device_id


class LiveCollateral:
    """The live contract of each VIN and each tracker id.

    No car is pledged twice and no tracker reports for two loans. A contract
    is live until it ends (settled, repurchased or written off), and an ended
    contract frees its VIN and devices. A repossessed contract is still live,
    because the car may be released to the borrower.
    """

    def __init__(self, contracts: Iterable[Contract] = ()) -> None:
        self._vins: dict[str, Contract] = {}
        self._devices: dict[str, Contract] = {}
        for contract in contracts:
            self.add(contract)

    def owner(self, vin: str) -> Contract | None:
        """Return the live contract of `vin`, if any."""
        return self._vins.get(normalize_vin(vin))

    def device_owner(self, device_id: str) -> Contract | None:
        """Return the live contract whose vehicle carries `device_id`, if any."""
        return self._devices.get(device_id.strip())

    def check(self, contract: Contract) -> None:
        """Raise VinInUseError or DeviceInUseError if another live contract clashes."""
        if contract.is_closed:
            return
        other = self.owner(contract.vehicle.vin)
        if other is not None and other.contract_id != contract.contract_id:
            vin = normalize_vin(contract.vehicle.vin)
            raise VinInUseError(contract.contract_id, vin, other)
        for device_id in contract.devices:
            other = self.device_owner(device_id)
            if other is not None and other.contract_id != contract.contract_id:
                raise DeviceInUseError(contract.contract_id, device_id.strip(), other)

    def add(self, contract: Contract) -> None:
        """Record a live contract; the first one recorded keeps its VIN and devices."""
        if contract.is_closed:
            return
        self._vins.setdefault(normalize_vin(contract.vehicle.vin), contract)
        for device_id in contract.devices:
            self._devices.setdefault(device_id.strip(), contract)


def open_contract(
    contract: Contract, actor: str, at: datetime, reason: str
) -> Contract:
    """Return ``contract`` with the OPEN entry that starts its history."""
    change = StateChange(
        require_utc(at, "at"), actor, E.OPEN, None, contract.state, reason
    )
    return replace(contract, history=(change,))


def apply_event(
    contract: Contract,
    event: ContractEvent,
    *,
    actor: str,
    at: datetime,
    reason: str,
) -> Contract:
    """Move a contract by ``event`` and record who, when and why.

    Raises TransitionError when the event is not allowed in the current state,
    and ValueError when the actor or reason is empty.
    """
    target = TRANSITIONS[contract.state].get(event)
    if target is None:
        raise TransitionError(contract.contract_id, event, contract.state)
    if not actor.strip() or not reason.strip():
        raise ValueError(f"event {event.value!r} needs an actor and a reason")
    change = StateChange(
        require_utc(at, "at"), actor, event, contract.state, target, reason
    )
    return replace(contract, state=target, history=(*contract.history, change))
