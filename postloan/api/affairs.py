"""Return visits, GPS work orders, traffic violations and vehicle monitoring."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, Field

from postloan.affairs import (
    AffairError,
    GpsWorkOrder,
    OrderKind,
    ReturnVisit,
    complete_visit,
    complete_work_order,
    latest_by_vehicle,
    offline_devices,
    open_alarms,
    read_violations,
)
from postloan.api.auth import Principal, Role
from postloan.api.context import (
    ID_PATTERN,
    Admin,
    AnyUser,
    ApiContext,
    ApiError,
    Context,
    Reader,
    UtcTime,
    not_found,
)
from postloan.api.loans import MAX_IMPORT_CHARS
from postloan.api.tracking import fix_record
from postloan.loans.jsonledger import LedgerFileError
from postloan.loans.rows import ImportFileError
from postloan.store import (
    BindingConflictError,
    BindingNotFoundError,
    VehicleNotFoundError,
)
from postloan.times import format_time

router = APIRouter(tags=["affairs"])

RecordId = Annotated[str, Path(pattern=ID_PATTERN, max_length=100)]
# Largest "offline for" window, in hours: 90 days.
MAX_OFFLINE_HOURS = 24 * 90


def _can_see_contract(context: ApiContext, user: Principal, contract_id: str) -> bool:
    case = context.risk.get_case(contract_id)
    parties = (None, None) if case is None else (case.collector, case.agency)
    return user.can_see_case(*parties)


class VisitRequest(BaseModel):
    """A return visit to schedule."""

    visit_id: str = Field(pattern=ID_PATTERN)
    contract_id: str = Field(pattern=ID_PATTERN)
    vehicle_id: str | None = Field(default=None, pattern=ID_PATTERN)
    scheduled_for: UtcTime
    visitor: str = Field(min_length=1, max_length=100)


class OutcomeRequest(BaseModel):
    outcome: str = Field(min_length=1, max_length=4000)


@router.get("/visits")
def list_visits(context: Context, user: AnyUser) -> list[dict[str, Any]]:
    """Return visits of the contracts the user may see."""
    return [
        v.to_record()
        for v in context.affairs.visits()
        if _can_see_contract(context, user, v.contract_id)
    ]


@router.post("/visits", status_code=201)
def schedule_visit(
    body: VisitRequest, context: Context, user: AnyUser
) -> dict[str, Any]:
    """Schedule a visit; collectors and agencies only on their own cases."""
    if user.role is Role.ANALYST:
        raise ApiError(403, "role analyst may not schedule visits")
    if not _can_see_contract(context, user, body.contract_id):
        raise not_found("contract", "contract_id", body.contract_id)
    if any(v.visit_id == body.visit_id for v in context.affairs.visits()):
        raise ApiError(
            409, "visit id already used", field="visit_id", value=body.visit_id
        )
    visit = ReturnVisit(**body.model_dump(), created_by=user.user)
    context.affairs.save_visit(visit)
    context.record(user, "visit.schedule", visit.visit_id, **visit.to_record())
    return visit.to_record()


@router.post("/visits/{visit_id}/complete")
def complete_visit_route(
    visit_id: RecordId, body: OutcomeRequest, context: Context, user: AnyUser
) -> dict[str, Any]:
    """Record a visit's outcome; a visit is done once."""
    visit = next((v for v in context.affairs.visits() if v.visit_id == visit_id), None)
    if visit is None or not _can_see_contract(context, user, visit.contract_id):
        raise not_found("visit", "visit_id", visit_id)
    if user.role is Role.ANALYST:
        raise ApiError(403, "role analyst may not complete visits")
    try:
        done = complete_visit(visit, at=context.clock(), outcome=body.outcome)
    except AffairError as exc:
        raise ApiError(409, str(exc), field="visit_id", value=visit_id) from exc
    context.affairs.save_visit(done)
    context.record(user, "visit.complete", visit_id, outcome=body.outcome)
    return done.to_record()


class WorkOrderRequest(BaseModel):
    """A tracker job for a technician."""

    order_id: str = Field(pattern=ID_PATTERN)
    kind: OrderKind
    vehicle_id: str = Field(pattern=ID_PATTERN)
    device_id: str = Field(pattern=ID_PATTERN)
    technician: str = Field(min_length=1, max_length=100)
    role: str | None = Field(default=None, max_length=20)


@router.get("/work-orders")
def list_work_orders(context: Context, user: Reader) -> list[dict[str, Any]]:
    return [o.to_record() for o in context.affairs.work_orders()]


@router.post("/work-orders", status_code=201)
def create_work_order(
    body: WorkOrderRequest, context: Context, user: Admin
) -> dict[str, Any]:
    if any(o.order_id == body.order_id for o in context.affairs.work_orders()):
        raise ApiError(
            409, "work order id already used", field="order_id", value=body.order_id
        )
    order = GpsWorkOrder(
        **body.model_dump(), created_by=user.user, created_at=context.clock()
    )
    context.affairs.save_work_order(order)
    context.record(user, "work_order.create", order.order_id, **order.to_record())
    return order.to_record()


@router.post("/work-orders/{order_id}/complete")
def complete_work_order_route(
    order_id: RecordId,
    context: Context,
    user: Admin,
    notes: Annotated[str, Body(embed=True, max_length=4000)] = "",
) -> dict[str, Any]:
    """Close an order; an install binds its device, a removal unbinds it."""
    orders = context.affairs.work_orders()
    order = next((o for o in orders if o.order_id == order_id), None)
    if order is None:
        raise not_found("work order", "order_id", order_id)
    try:
        done = complete_work_order(
            order, at=context.clock(), notes=notes, bindings=context.store
        )
    except AffairError as exc:
        raise ApiError(409, str(exc), field="order_id", value=order_id) from exc
    except VehicleNotFoundError as exc:
        raise not_found("vehicle", "vehicle_id", order.vehicle_id) from exc
    except (BindingConflictError, BindingNotFoundError, ValueError) as exc:
        raise ApiError(409, str(exc), field="device_id", value=order.device_id) from exc
    context.affairs.save_work_order(done)
    context.record(user, "work_order.complete", order_id, kind=order.kind.value)
    return done.to_record()


@router.get("/violations")
def list_violations(context: Context, user: Reader) -> list[dict[str, Any]]:
    return [v.to_record() for v in context.affairs.violations()]


@router.post("/imports/violations")
def import_violations(
    context: Context,
    user: Admin,
    text: Annotated[str, Body(media_type="text/csv", max_length=MAX_IMPORT_CHARS)],
) -> dict[str, Any]:
    """Import a violation CSV; rows with an unknown plate or bad field are listed."""
    vehicles = {v.plate: v.vehicle_id for v in context.store.vehicles() if v.plate}
    contracts: dict[str, str] = {}
    if context.ledger is not None:
        try:
            for contract_id, (contract, _) in context.ledger.load_all().items():
                if contract.vehicle.plate:
                    contracts[contract.vehicle.plate] = contract_id
        except LedgerFileError as exc:
            raise ApiError(503, f"loans ledger unreadable: {exc}") from exc
    known = frozenset(v.violation_id for v in context.affairs.violations())
    try:
        result = read_violations(
            text, vehicles_by_plate=vehicles, contracts_by_plate=contracts, known=known
        )
    except ImportFileError as exc:
        raise ApiError(422, str(exc), field="text", value=text[:80]) from exc
    for violation in result.violations:
        context.affairs.save_violation(violation)
    added = [v.violation_id for v in result.violations]
    context.record(user, "violations.import", ",".join(added) or "-", added=added)
    return {
        "added": added,
        "duplicates": list(result.duplicates),
        "issues": [
            {"row": i.row, "field": i.field, "value": i.value, "message": i.message}
            for i in result.issues
        ],
    }


@router.get("/monitoring/vehicles")
def monitor_vehicles(context: Context, user: Reader) -> dict[str, Any]:
    """Return each vehicle's latest fix over the devices fitted to it."""
    latest = latest_by_vehicle(
        context.store.latest_positions(), context.store.bindings()
    )
    return {vehicle: fix_record(fix) for vehicle, fix in sorted(latest.items())}


@router.get("/monitoring/offline")
def monitor_offline(
    context: Context,
    user: Reader,
    hours: Annotated[float, Query(gt=0, le=MAX_OFFLINE_HOURS)] = 24.0,
) -> list[dict[str, Any]]:
    """Devices silent for more than `hours`, longest silence first."""
    offline = offline_devices(
        context.store.devices(),
        context.store.bindings(),
        now=context.clock(),
        after=timedelta(hours=hours),
    )
    return [
        {
            "device_id": o.device_id,
            "vehicle_id": o.vehicle_id,
            "last_seen": format_time(o.last_seen),
            "offline_hours": round(o.offline_for.total_seconds() / 3600, 2),
        }
        for o in offline
    ]


@router.get("/monitoring/alarms")
def monitor_alarms(
    context: Context,
    user: Reader,
    hours: Annotated[float, Query(gt=0, le=MAX_OFFLINE_HOURS)] = 24.0,
) -> list[dict[str, Any]]:
    """Alarm events of the last `hours`, newest first."""
    since = context.clock() - timedelta(hours=hours)
    alarms = open_alarms(context.store.device_events(None, since, None))
    return [
        {
            "device_id": e.device_id,
            "time": format_time(e.time),
            "alarm": e.kind.removeprefix("alarm:"),
            "attributes": dict(e.attributes),
        }
        for e in alarms
    ]
