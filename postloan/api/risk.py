"""Risk firings, cases and their transitions, message tasks, immobilize requests."""

from __future__ import annotations

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
from postloan.notify import mask_phone
from postloan.risk import (
    Case,
    CaseEvent,
    CaseTransitionError,
    ImmobilizeRequest,
    apply_case_event,
    approve,
)
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
    """A case event with its reason; assignment fields are for admins only."""

    event: CaseEvent
    reason: str = Field(min_length=1, max_length=1000)
    collector: str | None = Field(default=None, pattern=ID_PATTERN)
    agency: str | None = Field(default=None, pattern=ID_PATTERN)
    commission_rate: Decimal | None = Field(default=None, ge=0, le=1)


# Staff who work a case may move it; analysts only read.
_MOVERS = frozenset({Role.ADMIN, Role.COLLECTOR, Role.AGENCY})


@router.post("/cases/{contract_id}/transitions")
def move_case(
    contract_id: ContractId,
    body: TransitionRequest,
    context: Context,
    user: AnyUser,
) -> dict[str, Any]:
    """Apply an event to a case; 409 names the allowed events when it is illegal."""
    if user.role not in _MOVERS:
        raise ApiError(403, f"role {user.role.value} may not move cases")
    case = _visible_case(context, user, contract_id)
    assignment = {
        name: value
        for name in ("collector", "agency", "commission_rate")
        if (value := getattr(body, name)) is not None
    }
    if assignment and user.role is not Role.ADMIN:
        field = next(iter(assignment))
        raise ApiError(
            403,
            f"only admins assign {field}",
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
    """A fuel cut-off request for one tracker of a contract's vehicle."""

    contract_id: str = Field(pattern=ID_PATTERN)
    device_id: str = Field(pattern=ID_PATTERN)
    reason: str = Field(min_length=1, max_length=1000)


@router.post("/immobilize", status_code=201)
def request_immobilize(
    body: ImmobilizeBody, context: Context, user: Admin
) -> dict[str, Any]:
    """Record a request; another admin approves it, then the risk engine
    releases it as a ``fuel_cut`` command once the vehicle has stopped."""
    device = next(
        (d for d in context.store.devices() if d.device_id == body.device_id), None
    )
    if device is None:
        raise not_found("device", "device_id", body.device_id)
    now = context.clock()
    utc = require_utc(now, "clock")
    request = ImmobilizeRequest(
        request_id=f"{body.contract_id}@{utc.strftime('%Y%m%dT%H%M%S.%fZ')}",
        contract_id=body.contract_id,
        device_id=body.device_id,
        protocol=device.protocol,
        requested_by=user.user,
        requested_at=now,
        reason=body.reason,
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
