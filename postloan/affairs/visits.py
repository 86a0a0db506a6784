"""Return visits: a collector or field agent calls on the borrower and the car."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from postloan.affairs.records import parse_times, record_of, require_aware


class VisitStatus(StrEnum):
    SCHEDULED = "scheduled"
    DONE = "done"
    CANCELLED = "cancelled"


class AffairError(ValueError):
    """A move a visit or work order does not allow in its current status."""


@dataclass(frozen=True, slots=True)
class ReturnVisit:
    """A visit to a borrower, scheduled and later done with an outcome note."""

    visit_id: str
    contract_id: str
    vehicle_id: str | None
    scheduled_for: datetime
    visitor: str  # the collector or field agent
    created_by: str
    status: VisitStatus = VisitStatus.SCHEDULED
    done_at: datetime | None = None
    outcome: str = ""

    def to_record(self) -> dict[str, Any]:
        return record_of(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ReturnVisit:
        values = parse_times(record, ("scheduled_for", "done_at"))
        values["status"] = VisitStatus(values["status"])
        return cls(**values)


def complete_visit(visit: ReturnVisit, *, at: datetime, outcome: str) -> ReturnVisit:
    """Mark a scheduled visit done with what was found; the note is required."""
    at = require_aware(at, "done_at")
    if visit.status is not VisitStatus.SCHEDULED:
        raise AffairError(
            f"visit {visit.visit_id} is {visit.status.value}, not scheduled"
        )
    if not outcome.strip():
        raise AffairError(f"visit {visit.visit_id}: an outcome note is required")
    return replace(visit, status=VisitStatus.DONE, done_at=at, outcome=outcome)


def cancel_visit(visit: ReturnVisit, *, reason: str) -> ReturnVisit:
    """Cancel a scheduled visit, keeping the reason as its outcome note."""
    if visit.status is not VisitStatus.SCHEDULED:
        raise AffairError(
            f"visit {visit.visit_id} is {visit.status.value}, not scheduled"
        )
    return replace(visit, status=VisitStatus.CANCELLED, outcome=reason)
