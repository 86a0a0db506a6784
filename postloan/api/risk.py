"""Risk firings, cases and their transitions, message tasks, immobilize requests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from postloan.api.auth import SEES_PHONE, Principal, Role
from postloan.api.context import (
    ID_PATTERN,
    Admin,
    AnyUser,
    ApiContext,
    ApiError,
    Context,
    Reader,
    not_found,
)
from postloan.api.loans import load_visible
from postloan.loans import Contract, LoanHistory, compute_ledger
from postloan.notify import mask_phone
from postloan.risk import (
    Case,
    CaseEvent,
    CaseTransitionError,
    ImmobilizeRequest,
    apply_case_event,
    approve,
)
from postloan.risk.evidence import stamp
from postloan.times import require_utc

router = APIRouter(tags=["risk"])

ContractId = Annotated[str, Path(pattern=ID_PATTERN, max_length=100)]
RequestId = Annotated[str, Path(pattern=ID_PATTERN, max_length=100)]


@router.get("/firings")
def list_firings(context: Context, user: Reader) -> list[dict[str, Any]]:
    """Risk rule firings with their signals and evidence, in recording order."""
    return context.risk.firings()


def _visible_case(context: ApiContext, user: Principal, contract_id: str) -> Case:
    case = context.risk.get_case(contract_id)
    # Another party's case is reported missing, so ids of others' cases leak not.
    if case is None or not user.can_see_case(case.collector, case.agency):
        raise not_found("case of contract", "contract_id", contract_id)
    return case


@router.get("/cases")
def list_cases(context: Context, user: AnyUser) -> list[dict[str, Any]]:
    """Cases the user may see: all for admins and analysts, else their own."""
    return [
        case.to_record()
        for case in context.risk.cases()
        if user.can_see_case(case.collector, case.agency)
    ]


@router.get("/cases/{contract_id}")
def get_case(
    contract_id: ContractId, context: Context, user: AnyUser
) -> dict[str, Any]:
    return _visible_case(context, user, contract_id).to_record()


class TransitionRequest(BaseModel):
    """A case event with its reason; assignment fields are for admins and
    supervisors only."""

    event: CaseEvent
    reason: str = Field(min_length=1, max_length=1000)
    collector: str | None = Field(default=None, pattern=ID_PATTERN)
    agency: str | None = Field(default=None, pattern=ID_PATTERN)
    commission_rate: Decimal | None = Field(default=None, ge=0, le=1)


_DECIDERS = frozenset({Role.ADMIN, Role.SUPERVISOR})
_STAFF = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.COLLECTOR})

#: Roles that may fire each case event. Collectors move a case along the
#: reminder path and take it into collection. Events that cost money, hand
#: the case to others or end it are for supervisors and admins. Analysts
#: only read, and agencies fire no event, because a supervisor recalls or
#: escalates an outsourced case. README.md lists the same table.
EVENT_ROLES: Mapping[CaseEvent, frozenset[Role]] = {
    CaseEvent.REMIND_PRE_DUE: _STAFF,
    CaseEvent.MARK_OVERDUE: _STAFF,
    CaseEvent.ASSIGN_COLLECTION: _STAFF,
    CaseEvent.OUTSOURCE: _DECIDERS,
    CaseEvent.RECALL: _DECIDERS,
    CaseEvent.ORDER_REPOSSESSION: _DECIDERS,
    CaseEvent.CLEAR_ARREARS: _DECIDERS,
    CaseEvent.REPURCHASE: _DECIDERS,
    CaseEvent.SETTLE: _DECIDERS,
    CaseEvent.WRITE_OFF: _DECIDERS,
}


@router.post("/cases/{contract_id}/transitions")
def move_case(
    contract_id: ContractId,
    body: TransitionRequest,
    context: Context,
    user: AnyUser,
) -> dict[str, Any]:
    """Apply an event to a case; 409 names the allowed events when it is illegal.

    403 when the user's role may not fire the event (`EVENT_ROLES`) or may
    not set an assignment field.
    """
    allowed = EVENT_ROLES[body.event]
    if user.role not in allowed:
        names = ", ".join(sorted(role.value for role in allowed))
        raise ApiError(
            403,
            f"role {user.role.value} may not fire case event "
            f"{body.event.value!r}; allowed roles: {names}",
            field="event",
            value=body.event.value,
        )
    case = _visible_case(context, user, contract_id)
    assignment = {
        name: value
        for name in ("collector", "agency", "commission_rate")
        if (value := getattr(body, name)) is not None
    }
    if assignment and user.role not in _DECIDERS:
        field = next(iter(assignment))
        raise ApiError(
            403,
            f"role {user.role.value} may not assign {field}; "
            "only admins and supervisors assign",
            field=field,
            value=str(assignment[field]),
        )
    try:
        moved = apply_case_event(
            case,
            body.event,
            actor=user.user,
            at=context.clock(),
            reason=body.reason,
            **assignment,
        )
    except CaseTransitionError as exc:
        raise ApiError(409, str(exc), field="event", value=body.event.value) from exc
    context.risk.save_case(moved)
    context.record(
        user,
        "case.transition",
        contract_id,
        event=body.event.value,
        from_state=case.state.value,
        to_state=moved.state.value,
        reason=body.reason,
        **{k: str(v) for k, v in assignment.items()},
    )
    return moved.to_record()


@router.get("/message-tasks")
def list_message_tasks(context: Context, user: Reader) -> list[dict[str, Any]]:
    """SMS and call tasks in creation order; phone masked for analysts."""
    records = []
    for task in context.tasks.all():
        record = task.to_record()
        if user.role not in SEES_PHONE:
            record["phone"] = mask_phone(task.phone)
        records.append(record)
    return records


@router.get("/immobilize")
def list_immobilize(context: Context, user: Reader) -> list[dict[str, Any]]:
    """Immobilize (fuel cut-off) requests and their approval state."""
    return [r.to_record() for r in context.risk.immobilize_requests()]


class ImmobilizeBody(BaseModel):
    """A fuel cut-off request for one tracker of a contract's vehicle.

    A contract at DPD 0 is rejected unless `override_reason` gives the reason
    to cut its fuel anyway (fraud, a stolen car). The request stores it.
    """

    contract_id: str = Field(pattern=ID_PATTERN)
    device_id: str = Field(pattern=ID_PATTERN)
    reason: str = Field(min_length=1, max_length=1000)
    override_reason: str | None = Field(default=None, min_length=1, max_length=1000)


def _check_immobilize_target(
    context: ApiContext,
    contract: Contract,
    history: LoanHistory,
    body: ImmobilizeBody,
    now: datetime,
) -> None:
    """Reject a request unless the device is fitted to the contract's car now
    and the contract is overdue or the request gives an override reason."""
    vin = contract.vehicle.vin
    vehicles = {
        vehicle.vehicle_id
        for vehicle in context.store.vehicles()
        if vin in (vehicle.vehicle_id, vehicle.vin)
    }
    fitted = [
        binding
        for binding in context.store.bindings(device_id=body.device_id)
        if binding.vehicle_id in vehicles and binding.covers(now)
    ]
    if not fitted:
        raise ApiError(
            422,
            f"device {body.device_id} is not bound to the vehicle (VIN {vin}) of "
            f"contract {body.contract_id} at {stamp(now)}; bind it first or "
            "name a device fitted to that vehicle",
            field="device_id",
            value=body.device_id,
        )
    on = contract.borrower.local_date(now)
    dpd = compute_ledger(contract, history, on).dpd
    if dpd == 0 and body.override_reason is None:
        raise ApiError(
            422,
            f"contract {body.contract_id} is not overdue (DPD 0 on {on}); give "
            "override_reason to request a fuel cut anyway",
            field="override_reason",
            value=None,
        )


@router.post("/immobilize", status_code=201)
def request_immobilize(
    body: ImmobilizeBody, context: Context, user: Admin
) -> dict[str, Any]:
    """Record a request; another admin approves it, then the risk engine
    releases it as a ``fuel_cut`` command once the vehicle has stopped.

    404 for an unknown contract or device, 422 for a device not bound to the
    contract's vehicle now, and 422 for a contract at DPD 0 without
    `override_reason`.
    """
    contract, history = load_visible(context, user, body.contract_id)
    device = next(
        (d for d in context.store.devices() if d.device_id == body.device_id), None
    )
    if device is None:
        raise not_found("device", "device_id", body.device_id)
    now = context.clock()
    utc = require_utc(now, "clock")
    _check_immobilize_target(context, contract, history, body, utc)
    request = ImmobilizeRequest(
        request_id=f"{body.contract_id}@{utc.strftime('%Y%m%dT%H%M%S.%fZ')}",
        contract_id=body.contract_id,
        device_id=body.device_id,
        protocol=device.protocol,
        requested_by=user.user,
        requested_at=now,
        reason=body.reason,
        override_reason=body.override_reason,
    )
    context.risk.save_immobilize(request)
    context.record(user, "immobilize.request", request.request_id, **body.model_dump())
    return request.to_record()


@router.post("/immobilize/{request_id}/approve")
def approve_immobilize(
    request_id: RequestId, context: Context, user: Admin
) -> dict[str, Any]:
    """Approve a pending request; the approver must not be the requester."""
    found = [
        r for r in context.risk.immobilize_requests() if r.request_id == request_id
    ]
    if not found:
        raise not_found("immobilize request", "request_id", request_id)
    try:
        approved = approve(found[0], user.user, context.clock())
    except ValueError as exc:
        raise ApiError(409, str(exc), field="request_id", value=request_id) from exc
    context.risk.save_immobilize(approved)
    context.record(user, "immobilize.approve", request_id)
    return approved.to_record()
