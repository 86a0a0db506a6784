"""GPS work orders: a technician installs, repairs or removes a tracker.

Completing an install binds the device to the vehicle from the completion
time, and completing a removal closes that binding, through the store's
binding API so track queries by vehicle follow the fitted hardware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from postloan.affairs.records import parse_times, record_of, require_aware
from postloan.affairs.visits import AffairError


class OrderKind(StrEnum):
    INSTALL = "install"
    REPAIR = "repair"
    REMOVE = "remove"


class OrderStatus(StrEnum):
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"


class DeviceBindings(Protocol):
    """The part of `postloan.store.Store` that fits devices to vehicles."""

    def bind_device(
        self,
        device_id: str,
        vehicle_id: str,
        *,
        valid_from: datetime,
        valid_to: datetime | None = None,
        role: str | None = None,
    ) -> None: ...

    def unbind_device(self, device_id: str, *, at: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class GpsWorkOrder:
    """One technician job on one tracker of one vehicle."""

    order_id: str
    kind: OrderKind
    vehicle_id: str
    device_id: str
    technician: str
    created_by: str
    created_at: datetime
    status: OrderStatus = OrderStatus.OPEN
    done_at: datetime | None = None
    notes: str = ""
    role: str | None = None  # "wired" or "wireless", for the binding

    def to_record(self) -> dict[str, Any]:
        return record_of(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> GpsWorkOrder:
        values = parse_times(record, ("created_at", "done_at"))
        values["kind"] = OrderKind(values["kind"])
        values["status"] = OrderStatus(values["status"])
        return cls(**values)


def complete_work_order(
    order: GpsWorkOrder, *, at: datetime, notes: str, bindings: DeviceBindings
) -> GpsWorkOrder:
    """Close an open order and bind or unbind its device as the job requires.

    The binding is written first, so a store error (the device still bound
    elsewhere, an unknown vehicle) leaves the order open. Raises AffairError
    for an order that is not open; store errors propagate unchanged.
    """
    at = require_aware(at, "done_at")
    if order.status is not OrderStatus.OPEN:
        raise AffairError(f"work order {order.order_id} is {order.status.value}")
    if order.kind is OrderKind.INSTALL:
        bindings.bind_device(
            order.device_id, order.vehicle_id, valid_from=at, role=order.role
        )
    elif order.kind is OrderKind.REMOVE:
        bindings.unbind_device(order.device_id, at=at)
    return replace(order, status=OrderStatus.DONE, done_at=at, notes=notes)
