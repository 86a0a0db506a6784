"""The API's context (store, repositories, tokens) and its request dependencies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from pydantic import BeforeValidator, ValidationInfo

from postloan.affairs import AffairsRepository, MemoryAffairsRepository
from postloan.api.audit import AuditEntry, AuditLog, MemoryAuditLog
from postloan.api.auth import Principal, Role, TokenTable
from postloan.loans.jsonledger import JsonLedger
from postloan.notify.repository import MemoryTaskRepository, TaskRepository
from postloan.risk.repository import MemoryRiskRepository, RiskRepository
from postloan.store import Store
from postloan.times import parse_time, require_utc

# Ids in paths also name JSON files of the repositories, so they are limited to
# characters that cannot leave a folder (no "/", no leading ".").
ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,99}$"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApiContext:
    """The store, repositories, tokens and clock one API app works over."""

    store: Store
    tokens: TokenTable
    ledger: JsonLedger | None = None
    risk: RiskRepository = field(default_factory=MemoryRiskRepository)
    tasks: TaskRepository = field(default_factory=MemoryTaskRepository)
    audit: AuditLog = field(default_factory=MemoryAuditLog)
    registry: CollectorRegistry | None = None
    clock: Callable[[], datetime] = _now
    affairs: AffairsRepository = field(default_factory=MemoryAffairsRepository)

    def record(
        self, who: Principal, action: str, target: str, **detail: Any
    ) -> AuditEntry:
        """Append an audit entry for a write and return it."""
        entry = AuditEntry(
            self.clock(), who.user, who.role.value, action, target, detail
        )
        self.audit.append(entry)
        return entry


class ApiError(Exception):
    """A request that cannot be served, with the offending field and value."""

    def __init__(
        self, status: int, message: str, *, field: str | None = None, value: Any = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.value = value

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
            body["value"] = self.value if _jsonable(self.value) else str(self.value)
        return body


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def not_found(kind: str, field: str, value: str) -> ApiError:
    return ApiError(404, f"{kind} {value!r} not found", field=field, value=value)


def _utc_time(value: Any, info: ValidationInfo) -> Any:
    """Parse a request's time text by the CLI's rule (`postloan.times`).

    Text without a zone is rejected, and so is a number, which pydantic would
    otherwise read as Unix seconds.
    """
    field = info.field_name or "time"
    if isinstance(value, str):
        return parse_time(value, field)
    if isinstance(value, datetime):
        return require_utc(value, field)
    raise ValueError(f"invalid {field} {value!r}: expected ISO 8601 text")


#: A time in a query or body: ISO 8601 with Z or an offset, converted to UTC.
UtcTime = Annotated[datetime, BeforeValidator(_utc_time)]


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


_bearer = HTTPBearer(auto_error=False, description="An API token from the tokens file")


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise HTTPException(
            401,
            "missing Authorization: Bearer <token> header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = get_context(request).tokens.authenticate(credentials.credentials)
    if principal is None:
        raise HTTPException(
            401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"}
        )
    request.state.user = principal.user
    return principal


def require(*roles: Role) -> Callable[..., Principal]:
    """Build a dependency that admits only `roles` and returns the principal."""
    allowed = frozenset(roles)

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in allowed:
            names = ", ".join(sorted(role.value for role in allowed))
            raise HTTPException(
                403, f"role {principal.role.value} may not do this; allowed: {names}"
            )
        return principal

    return check


Context = Annotated[ApiContext, Depends(get_context)]
AnyUser = Annotated[Principal, Depends(get_principal)]
Reader = Annotated[
    Principal, Depends(require(Role.ADMIN, Role.SUPERVISOR, Role.ANALYST))
]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
