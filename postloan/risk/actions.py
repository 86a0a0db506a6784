"""Actions that leave the risk engine: GPS work orders and immobilize requests.

An immobilize request (a fuel cut-off) needs an approver other than the
requester, and is released to the device only when the vehicle has been
stopped for `stop_s`: every fix with speed 0 and ignition off. Until then it
is held, and each new fix of the device re-evaluates it, so the outbox entry
survives restarts in the repository. Released, it becomes a ``fuel_cut``
command row that the gateway sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from postloan.model import EMPTY, Fix
from postloan.risk.evidence import stamp
from postloan.times import parse_time

COMMAND_KIND = "fuel_cut"


class CommandQueue(Protocol):
    """The part of `postloan.store.Store` that queues a downlink command."""

    def add_command(
        self,
        device_id: str,
        protocol: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        created_at: datetime,
    ) -> int: ...


class ImmobilizeStatus(StrEnum):
    """Lifecycle of an immobilize request."""

    PENDING_APPROVAL = "pending_approval"
    HELD = "held"  # approved, waiting for the vehicle to stop
    RELEASED = "released"  # queued as a command for the gateway
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """A GPS work order: inspect, refit or recover a tracker."""

    order_id: str
    contract_id: str
    vehicle_id: str
    reason: str
    created_at: datetime
    evidence: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def to_record(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "contract_id": self.contract_id,
            "vehicle_id": self.vehicle_id,
            "reason": self.reason,
            "created_at": stamp(self.created_at),
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class ImmobilizeRequest:
    """A request to cut a vehicle's fuel supply through one tracker."""

    request_id: str
    contract_id: str
    device_id: str
    protocol: str  # gt06 or jt808, for the command row
    requested_by: str
    requested_at: datetime
    reason: str
    status: ImmobilizeStatus = ImmobilizeStatus.PENDING_APPROVAL
    approved_by: str | None = None
    approved_at: datetime | None = None
    stopped_since: datetime | None = None  # first fix of the current stop
    command_id: int | None = None
    # Why staff cut the fuel of a contract that was not overdue (DPD 0).
    override_reason: str | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            record[name] = stamp(value) if isinstance(value, datetime) else value
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ImmobilizeRequest:
        values = dict(record)
        for name in ("requested_at", "approved_at", "stopped_since"):
            if values.get(name) is not None:
                values[name] = parse_time(values[name], name)
        values["status"] = ImmobilizeStatus(values["status"])
        return cls(**values)


def approve(
    request: ImmobilizeRequest, approver: str, at: datetime
) -> ImmobilizeRequest:
    """Approve a pending request; the approver must not be the requester."""
    if request.status is not ImmobilizeStatus.PENDING_APPROVAL:
        raise ValueError(
            f"immobilize request {request.request_id} is {request.status.value}, "
            "not pending approval"
        )
    if not approver.strip() or approver == request.requested_by:
        raise ValueError(
            f"immobilize request {request.request_id}: the approver must be "
            f"someone other than the requester {request.requested_by!r}"
        )
    return replace(
        request, status=ImmobilizeStatus.HELD, approved_by=approver, approved_at=at
    )


def is_stopped(fix: Fix) -> bool:
    """Speed 0 and ignition off.

    NOTE: a tracker that reports no ignition state (no ``acc`` attribute) is
    judged by speed alone.
    """
    return fix.speed_kmh == 0 and fix.attributes.get("acc", False) is False


def on_fix(
    request: ImmobilizeRequest, fix: Fix, store: CommandQueue, stop_s: float
) -> ImmobilizeRequest:
    """Re-evaluate a held request on a new fix; release it once stopped long enough."""
    if (
        request.status is not ImmobilizeStatus.HELD
        or fix.device_id != request.device_id
    ):
        return request
    if not (fix.valid and is_stopped(fix)):
        return replace(request, stopped_since=None)
    since = request.stopped_since or fix.time
    if (fix.time - since).total_seconds() < stop_s:
        return replace(request, stopped_since=since)
    command_id = store.add_command(
        request.device_id,
        request.protocol,
        COMMAND_KIND,
        {
            "request_id": request.request_id,
            "contract_id": request.contract_id,
            "approved_by": request.approved_by,
            "stopped_since": stamp(since),
        },
        created_at=fix.time,
    )
    return replace(
        request,
        status=ImmobilizeStatus.RELEASED,
        stopped_since=since,
        command_id=command_id,
    )
