"""Contract import from CSV and JSON, row by row.

Both formats use the same field names (the CSV header, or the keys of each
JSON object):

    contract_id, borrower_name, borrower_phone, borrower_id_number,
    borrower_time_zone, vin, plate, devices, principal, annual_rate,
    term_months, method, first_due_date, start_date, day_count, dealer, state

``devices`` lists tracker ids separated by ``;`` (a JSON array also works).
``plate``, ``devices``, ``start_date``, ``day_count`` (default 30/360) and
``state`` (default active) may be empty. A JSON file may also contain the
nested objects that `Contract.to_record` writes. Every bad field of every row
is reported as a `RowIssue` and the good rows are kept. A VIN made outside
North America whose check digit does not match is accepted with a warning,
because ISO 3779 does not require the check digit (North-American rules do,
so there a mismatch rejects the row). A row is rejected when its VIN or one of
its devices belongs to another live contract, stored or on an earlier row.
One car backs one live contract, and one tracker is fitted to one car.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from postloan.loans.contracts import (
    Borrower,
    CollateralInUseError,
    Contract,
    ContractState,
    LiveCollateral,
    Vehicle,
    open_contract,
)
from postloan.loans.dates import DayCount, parse_date
from postloan.loans.identity import (
    VinCheck,
    check_vin,
    normalize_contract_id,
    normalize_device_id,
    normalize_id_number,
    normalize_phone,
    normalize_plate,
    normalize_time_zone,
    vin_check_digit,
)
from postloan.loans.money import parse_decimal, parse_money
from postloan.loans.rows import FieldReader, ImportFileError, RowIssue, read_csv
from postloan.loans.schedule import MAX_TERM_MONTHS, LoanTerms, Method

CONTRACT_COLUMNS = (
    "contract_id",
    "borrower_name",
    "borrower_phone",
    "borrower_id_number",
    "borrower_time_zone",
    "vin",
    "principal",
    "annual_rate",
    "term_months",
    "method",
    "first_due_date",
    "dealer",
)
CONTRACT_ALIASES = {
    "name": "borrower_name",
    "phone": "borrower_phone",
    "id_number": "borrower_id_number",
    "time_zone": "borrower_time_zone",
    "rate": "annual_rate",
    "months": "term_months",
    "term": "term_months",
    "service_provider": "dealer",
    "trackers": "devices",
}


@dataclass(frozen=True, slots=True)
class ContractImport:
    """Result of reading a contract file."""

    contracts: tuple[Contract, ...]  # new contracts, each with its OPEN entry
    duplicates: tuple[str, ...]  # ids already known with the same terms
    issues: tuple[RowIssue, ...]  # rows rejected, one entry per bad field
    warnings: tuple[RowIssue, ...]  # rows accepted with a remark
    rows: Mapping[str, int] = field(default_factory=dict)  # contract id -> row

    def rejecting(self, errors: Mapping[str, ValueError]) -> ContractImport:
        """Return this import with the contracts in `errors` moved to issues.

        `errors` maps contract ids to the reason each could not be stored, as
        `JsonLedger.insert` returns them.
        """
        accepted = tuple(c for c in self.contracts if c.contract_id not in errors)
        late = tuple(
            RowIssue(
                self.rows[cid], _field_of(error), _value_of(error, cid), str(error)
            )
            for cid, error in errors.items()
        )
        rejected_rows = {issue.row for issue in late}
        return replace(
            self,
            contracts=accepted,
            issues=tuple(sorted((*self.issues, *late), key=lambda i: i.row)),
            warnings=tuple(w for w in self.warnings if w.row not in rejected_rows),
        )


def _field_of(error: ValueError) -> str:
    return error.field if isinstance(error, CollateralInUseError) else "contract_id"


def _value_of(error: ValueError, contract_id: str) -> str:
    return error.value if isinstance(error, CollateralInUseError) else contract_id


def _name(text: str) -> str:
    if len(text) > 200:
        raise ValueError(f"name of {len(text)} characters is too long (max 200)")
    return text


def _principal(text: str) -> Decimal:
    return parse_money(text, "principal")


def parse_annual_rate(text: str) -> Decimal:
    value = parse_decimal(text.removesuffix("%"), "annual rate")
    if text.endswith("%"):
        value /= 100
    if not 0 <= value <= 1:
        raise ValueError(
            f"annual rate {text!r} is invalid: expected a fraction from 0 to 1 "
            "such as 0.12, or a percentage such as 12%"
        )
    return value


def _term_months(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_TERM_MONTHS:
        raise ValueError(
            f"term {text!r} is invalid: expected 1 to {MAX_TERM_MONTHS} months"
        )
    return int(text)


T = TypeVar("T")


def _choice(kind: Callable[[str], T], label: str, choices: str) -> Callable[[str], T]:
    def parse(text: str) -> T:
        try:
            return kind(text.strip().lower())
        except ValueError:
            message = f"{label} {text!r} is invalid: expected {choices}"
            raise ValueError(message) from None

    return parse


_method = _choice(Method, "method", "annuity, equal-principal or balloon")
_day_count = _choice(DayCount, "day count", "30/360, actual/365 or actual/360")
_IMPORTABLE_STATES = (
    ContractState.ACTIVE,
    ContractState.OVERDUE,
    ContractState.REPOSSESSED,
    ContractState.WRITTEN_OFF,
)


def _state(text: str) -> ContractState:
    """Parse a state a contract may be imported in.

    Settled and repurchased contracts are rejected, because without the
    closure record the ledger would count their installments as unpaid.
    """
    choices = ", ".join(_IMPORTABLE_STATES)
    state = _choice(ContractState, "state", choices)(text)
    if state not in _IMPORTABLE_STATES:
        raise ValueError(
            f"state {text!r} cannot be imported because the ledger has no record "
            f"of the payoff; import the contract as active and record the "
            f"settlement or repurchase (importable states: {choices})"
        )
    return state


def _devices(text: str) -> tuple[str, ...]:
    devices = tuple(normalize_device_id(d) for d in text.split(";") if d.strip())
    repeated = sorted({d for d in devices if devices.count(d) > 1})
    if repeated:
        raise ValueError(
            f"devices {text!r} are invalid: {', '.join(repeated)} listed more than once"
        )
    return devices


# Field name -> (parser, required, value when empty). Parsers raise ValueError
# with a message that names the value and the expected form.
_FIELDS: dict[str, tuple[Callable[[str], Any], bool, Any]] = {
    "contract_id": (normalize_contract_id, True, None),
    "borrower_name": (_name, True, None),
    "borrower_phone": (normalize_phone, True, None),
    "borrower_id_number": (normalize_id_number, True, None),
    "borrower_time_zone": (normalize_time_zone, True, None),
    "vin": (check_vin, True, None),
    "plate": (normalize_plate, False, None),
    "devices": (_devices, False, ()),
    "principal": (_principal, True, None),
    "annual_rate": (parse_annual_rate, True, None),
    "term_months": (_term_months, True, None),
    "method": (_method, True, None),
    "first_due_date": (parse_date, True, None),
    "start_date": (parse_date, False, None),
    "day_count": (_day_count, False, DayCount.THIRTY_360),
    "dealer": (_name, True, None),
    "state": (_state, False, ContractState.ACTIVE),
}


def _read_contract(fields: FieldReader) -> tuple[Contract | None, list[RowIssue]]:
    """Build one contract from one row; return it (or None) and any warnings."""
    values: dict[str, Any] = {}
    for name, (parse, required, default) in _FIELDS.items():
        value = (fields.required if required else fields.optional)(name, parse)
        values[name] = default if value is None else value
    if fields.issues:
        return None, []
    try:
        terms = LoanTerms(
            principal=values["principal"],
            annual_rate=values["annual_rate"],
            term_months=values["term_months"],
            method=values["method"],
            first_due_date=values["first_due_date"],
            day_count=values["day_count"],
            start_date=values["start_date"],
        )
    except ValueError as exc:
        fields.fail("start_date", fields.text("start_date"), str(exc))
        return None, []
    vin = values["vin"]
    contract = Contract(
        contract_id=values["contract_id"],
        borrower=Borrower(
            values["borrower_name"],
            values["borrower_phone"],
            values["borrower_id_number"],
            values["borrower_time_zone"],
        ),
        vehicle=Vehicle(vin.vin, values["plate"]),
        terms=terms,
        dealer=values["dealer"],
        devices=values["devices"],
        state=values["state"],
    )
    return contract, _vin_warnings(fields.row, vin)


def _vin_warnings(row: int, vin: VinCheck) -> list[RowIssue]:
    if vin.check_digit_valid is not False:
        return []
    message = (
        f"VIN {vin.vin} check digit {vin.vin[8]} does not match the North-American "
        f"check digit {vin_check_digit(vin.vin)}; accepted, because other regions "
        "do not require it"
    )
    return [RowIssue(row, "vin", vin.vin, message)]


def read_contracts(
    path: Path,
    *,
    existing: Mapping[str, Contract],
    actor: str,
    at: datetime,
) -> ContractImport:
    """Read contracts from a ``.csv`` or ``.json`` file; see the module docstring.

    ``existing`` maps the contract ids already in the ledger to their
    contracts. A row that repeats a known contract with the same terms is a
    duplicate. With different terms it is an issue, because an import never
    overwrites a contract. Raises ImportFileError when the file cannot be used at all.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"cannot read {path}: {exc}") from exc
    rows: Iterable[tuple[int, Mapping[str, str]]]
    if path.suffix.lower() == ".json":
        rows = _json_rows(text)
    elif path.suffix.lower() == ".csv":
        rows = read_csv(text, CONTRACT_ALIASES, CONTRACT_COLUMNS)
    else:
        raise ImportFileError(f"{path}: expected a .csv or .json file")
    return _collect(rows, existing, actor, at, source=path.name)


def _collect(
    rows: Iterable[tuple[int, Mapping[str, str]]],
    existing: Mapping[str, Contract],
    actor: str,
    at: datetime,
    source: str,
) -> ContractImport:
    known = {key: _terms_only(value) for key, value in existing.items()}
    live = LiveCollateral(existing.values())
    rows_of: dict[str, int] = {}
    contracts: list[Contract] = []
    duplicates: list[str] = []
    issues: list[RowIssue] = []
    warnings: list[RowIssue] = []
    for row, values in rows:
        fields = FieldReader(row, values)
        contract, remarks = _read_contract(fields)
        if contract is not None:
            earlier = known.get(contract.contract_id)
            if earlier is None:
                try:
                    live.check(contract)
                except CollateralInUseError as exc:
                    fields.fail(exc.field, exc.value, str(exc))
                    issues.extend(fields.issues)
                    continue
                live.add(contract)
                known[contract.contract_id] = _terms_only(contract)
                rows_of[contract.contract_id] = row
                reason = f"imported from {source} row {row}"
                contracts.append(open_contract(contract, actor, at, reason))
                warnings.extend(remarks)
            elif earlier == _terms_only(contract):
                duplicates.append(contract.contract_id)
            else:
                fields.fail(
                    "contract_id",
                    contract.contract_id,
                    f"contract {contract.contract_id!r} already exists with other "
                    "data; an import never overwrites a contract",
                )
        issues.extend(fields.issues)
    return ContractImport(
        tuple(contracts), tuple(duplicates), tuple(issues), tuple(warnings), rows_of
    )


def _terms_only(contract: Contract) -> Contract:
    """Return the contract without the fields an import does not set."""
    return replace(contract, history=(), collector=None, collection_notes="")


def _json_rows(text: str) -> list[tuple[int, Mapping[str, str]]]:
    try:
        document = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"invalid JSON: {exc}") from exc
    if isinstance(document, dict) and isinstance(document.get("contracts"), list):
        document = document["contracts"]
    if not isinstance(document, list):
        raise ImportFileError(
            'expected a JSON array of contract objects, or {"contracts": [...]}'
        )
    return [(number, _flatten(item)) for number, item in enumerate(document, 1)]


def _flatten(item: Any) -> Mapping[str, str]:
    """Turn one JSON object, flat or nested as `Contract.to_record` writes it,
    into the flat text fields a CSV row has."""
    if not isinstance(item, dict):
        return {"contract_id": ""}  # reported as a missing contract id
    flat: dict[str, Any] = {}
    for key, value in item.items():
        if key == "borrower" and isinstance(value, dict):
            flat.update({f"borrower_{k}": v for k, v in value.items()})
        elif key in ("vehicle", "terms") and isinstance(value, dict):
            flat.update(value)
        else:
            name = str(key)
            flat[CONTRACT_ALIASES.get(name, name)] = value
    return {key: _text(value) for key, value in flat.items()}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(_text(item) for item in value)
    return str(value)
