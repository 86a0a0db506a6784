"""Traffic violations read from a CSV export, linked to vehicle and contract.

Columns (case-insensitive; aliases in `VIOLATION_ALIASES`): violation_id,
plate, occurred_at (ISO 8601 with offset), place, code, fine, points. Each bad
field of a row is one `RowIssue`; a row with any issue is not imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from postloan.loans.money import parse_amount
from postloan.loans.rows import FieldReader, RowIssue, read_csv
from postloan.times import format_time, parse_time

VIOLATION_COLUMNS = ("violation_id", "plate", "occurred_at", "code", "fine")
VIOLATION_ALIASES = {
    "id": "violation_id",
    "ticket": "violation_id",
    "licence_plate": "plate",
    "license_plate": "plate",
    "time": "occurred_at",
    "location": "place",
    "amount": "fine",
}


@dataclass(frozen=True, slots=True)
class TrafficViolation:
    """One recorded traffic offence of a financed vehicle."""

    violation_id: str
    plate: str
    vehicle_id: str
    contract_id: str | None
    occurred_at: datetime
    code: str
    fine: Decimal
    points: int = 0
    place: str = ""

    def to_record(self) -> dict[str, Any]:
        return {
            "violation_id": self.violation_id,
            "plate": self.plate,
            "vehicle_id": self.vehicle_id,
            "contract_id": self.contract_id,
            "occurred_at": format_time(self.occurred_at),
            "code": self.code,
            "fine": str(self.fine),
            "points": self.points,
            "place": self.place,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrafficViolation:
        values = dict(record)
        values["occurred_at"] = parse_time(values["occurred_at"], "occurred_at")
        values["fine"] = Decimal(values["fine"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ViolationImport:
    violations: tuple[TrafficViolation, ...]
    duplicates: tuple[str, ...]  # ids already known
    issues: tuple[RowIssue, ...]


def _occurred_at(text: str) -> datetime:
    return parse_time(text, "occurred_at")


def _points(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 12:
        raise ValueError(f"points {text!r} out of range 0-12")
    return value


def _plate_key(plate: str) -> str:
    return plate.replace(" ", "").replace("-", "").upper()


def read_violations(
    text: str,
    *,
    vehicles_by_plate: Mapping[str, str],
    contracts_by_plate: Mapping[str, str],
    known: frozenset[str],
) -> ViolationImport:
    """Read a violation CSV; plates match ignoring spaces, hyphens and case.

    A plate of no known vehicle is an issue. A vehicle with no contract is
    imported with ``contract_id`` None. Raises ImportFileError when a required
    column is missing.
    """
    vehicles = {_plate_key(p): v for p, v in vehicles_by_plate.items()}
    contracts = {_plate_key(p): c for p, c in contracts_by_plate.items()}
    found: list[TrafficViolation] = []
    duplicates: list[str] = []
    issues: list[RowIssue] = []
    seen = set(known)
    for row, values in read_csv(text, VIOLATION_ALIASES, VIOLATION_COLUMNS):
        fields = FieldReader(row, values)
        violation = _read_row(fields, vehicles, contracts)
        issues.extend(fields.issues)
        if violation is None or fields.issues:
            continue
        if violation.violation_id in seen:
            duplicates.append(violation.violation_id)
            continue
        seen.add(violation.violation_id)
        found.append(violation)
    return ViolationImport(tuple(found), tuple(duplicates), tuple(issues))


def _read_row(
    fields: FieldReader, vehicles: Mapping[str, str], contracts: Mapping[str, str]
) -> TrafficViolation | None:
    violation_id = fields.required("violation_id", str)
    plate = fields.required("plate", str)
    occurred_at = fields.required("occurred_at", _occurred_at)
    code = fields.required("code", str)
    fine = fields.required("fine", parse_amount)
    points = fields.optional("points", _points) or 0
    vehicle_id = vehicles.get(_plate_key(plate)) if plate else None
    if plate and vehicle_id is None:
        fields.fail("plate", plate, f"no vehicle with plate {plate!r}")
    if (
        violation_id is None
        or plate is None
        or occurred_at is None
        or code is None
        or fine is None
        or vehicle_id is None
    ):
        return None
    return TrafficViolation(
        violation_id=violation_id,
        plate=plate,
        vehicle_id=vehicle_id,
        contract_id=contracts.get(_plate_key(plate)),
        occurred_at=occurred_at,
        code=code,
        fine=fine,
        points=points,
        place=fields.text("place"),
    )
