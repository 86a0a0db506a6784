"""Ledger policy: buckets, grace, penalty, allocation, reduction limits, quotes.

`LoanPolicy()` is the default policy. `LoanPolicy.from_table` reads a TOML
table such as the ``[loans]`` section of config.toml. Money and rates there
are strings (``"500.00"``, ``"0.0005"``) because TOML floats are binary and
cannot carry an exact cent. An unknown key raises `PolicyError`.

Example::

    [loans]
    grace_days = 3
    penalty_daily_rate = "0.0005"
    penalty_basis = "principal"
    allocation_order = ["interest", "principal", "penalty"]
    reduction_limits = { collector = "500.00", supervisor = "5000.00" }
    buckets = [["M0", 0], ["M1", 30], ["M2", 60], ["M3", 90]]
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from postloan.loans.money import parse_decimal, require_decimal


class PolicyError(ValueError):
    """A policy value is invalid."""


class Component(StrEnum):
    """Part of the debt that a payment can pay."""

    PENALTY = "penalty"
    INTEREST = "interest"
    PRINCIPAL = "principal"
    FEE = "fee"  # a settlement or repurchase fee, charged only at closure


INSTALLMENT_COMPONENTS = frozenset(
    {Component.PENALTY, Component.INTEREST, Component.PRINCIPAL}
)


class AllocateBy(StrEnum):
    """Outer loop of payment allocation.

    ``component``: all penalty (oldest installment first), then all interest,
    then all principal. ``installment``: the oldest installment's penalty,
    interest and principal, then the next installment's.
    """

    COMPONENT = "component"
    INSTALLMENT = "installment"


class PenaltyBasis(StrEnum):
    """Amount that penalty interest accrues on."""

    PRINCIPAL = "principal"  # unpaid principal of overdue installments
    INSTALLMENT = "installment"  # unpaid principal plus unpaid interest


class QuotePart(StrEnum):
    """Line of a settlement or repurchase quote."""

    PRINCIPAL = "principal"  # all principal not yet paid, due or not
    INTEREST = "interest"  # unpaid interest due plus interest accrued to the date
    PENALTY = "penalty"  # penalty accrued and not paid or waived
    FEES = "fees"  # the fee rate times the outstanding principal


_ALL_PARTS = (
    QuotePart.PRINCIPAL,
    QuotePart.INTEREST,
    QuotePart.PENALTY,
    QuotePart.FEES,
)


E = TypeVar("E", bound=StrEnum)


def _frozen(mapping: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class LoanPolicy:
    """Rules the ledger applies to every contract, each default stated at its field."""

    # DPD buckets as (label, highest DPD in the bucket), ascending. A DPD above
    # the last bound falls in `bucket_overflow`. Default: M0 = current,
    # M1 = 1-30, M2 = 31-60, M3 = 61-90, M4+ = over 90 days past due.
    buckets: tuple[tuple[str, int], ...] = (
        ("M0", 0),
        ("M1", 30),
        ("M2", 60),
        ("M3", 90),
    )
    bucket_overflow: str = "M4+"
    # Days after a due date in which an unpaid installment is not yet counted
    # as past due, so DPD stays 0. Once they pass, DPD counts from the due date
    # itself, so it jumps from 0 to grace_days + 1. Default 0.
    grace_days: int = 0
    # Days after a due date in which no penalty is charged. An installment
    # paid in full within them owes none. Once they pass, penalty is charged
    # from the day after the due date, including the grace days. Default 0.
    penalty_grace_days: int = 0
    # Penalty interest per day as a fraction of the basis, rounded half-up to
    # the cent each day. Default 0.0005 (0.05 % a day, 18.25 % a year).
    penalty_daily_rate: Decimal = Decimal("0.0005")
    penalty_basis: PenaltyBasis = PenaltyBasis.INSTALLMENT
    # Maximum total penalty on one installment, as a fraction of that
    # installment's scheduled payment. Default None: no cap (leave the key out
    # of the TOML table for no cap).
    penalty_cap_ratio: Decimal | None = None
    # Order in which a payment pays the components of due installments.
    allocation_order: tuple[Component, ...] = (
        Component.PENALTY,
        Component.INTEREST,
        Component.PRINCIPAL,
    )
    allocate_by: AllocateBy = AllocateBy.COMPONENT
    # Maximum total of approved penalty reductions on one contract that each
    # role may approve. A role not listed may neither approve nor reject.
    reduction_limits: Mapping[str, Decimal] = field(
        default_factory=lambda: _frozen(
            {"collector": Decimal("500.00"), "supervisor": Decimal("5000.00")}
        )
    )
    # Early settlement: quote lines and fee (fraction of outstanding principal).
    settlement_parts: tuple[QuotePart, ...] = _ALL_PARTS
    settlement_fee_rate: Decimal = Decimal("0")
    # Repurchase by the dealer: quote lines, fee, and the lowest DPD at which
    # a contract may be repurchased (default 1: any past-due contract).
    repurchase_parts: tuple[QuotePart, ...] = _ALL_PARTS
    repurchase_fee_rate: Decimal = Decimal("0")
    repurchase_min_dpd: int = 1

    def __post_init__(self) -> None:
        _check_policy(self)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> LoanPolicy:
        """Build a policy from a TOML table; keys left out keep their defaults."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise PolicyError(
                f"unknown [loans] key(s) {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        changes = {key: _READERS[key](key, value) for key, value in table.items()}
        return replace(cls(), **changes)

    @classmethod
    def from_toml(cls, path: Path, section: str = "loans") -> LoanPolicy:
        """Read the ``[loans]`` table (or ``section``) of a TOML file."""
        try:
            with path.open("rb") as handle:
                document = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise PolicyError(f"{path}: [{section}] must be a table")
        return cls.from_table(table)


def _check_policy(policy: LoanPolicy) -> None:
    bounds = [bound for _, bound in policy.buckets]
    if not bounds or bounds[0] != 0 or bounds != sorted(set(bounds)):
        raise PolicyError(
            f"buckets {policy.buckets!r} are invalid: the first bound must be 0 "
            "and the bounds must increase"
        )
    counts = {
        "grace_days": policy.grace_days,
        "penalty_grace_days": policy.penalty_grace_days,
        "repurchase_min_dpd": policy.repurchase_min_dpd,
    }
    for name, count in counts.items():
        if count < 0:
            raise PolicyError(f"{name} {count} must not be negative")
    order = policy.allocation_order
    if len(order) != 3 or set(order) != INSTALLMENT_COMPONENTS:
        raise PolicyError(
            f"allocation_order {[str(c) for c in order]} must "
            "name penalty, interest and principal once each"
        )
    rates = {
        "penalty_daily_rate": policy.penalty_daily_rate,
        "penalty_cap_ratio": policy.penalty_cap_ratio,
        "settlement_fee_rate": policy.settlement_fee_rate,
        "repurchase_fee_rate": policy.repurchase_fee_rate,
        **{f"reduction_limits.{k}": v for k, v in policy.reduction_limits.items()},
    }
    for name, value in rates.items():
        if value is not None and require_decimal(value, name) < 0:
            raise PolicyError(f"{name} {value} must not be negative")


def _read_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{key} must be an integer, got {value!r}")
    return value


def _read_decimal(key: str, value: Any) -> Decimal:
    if isinstance(value, float):
        raise PolicyError(
            f"{key} = {value!r} is a TOML float; write it as a string, "
            f'e.g. {key} = "{value}", so that it stays exact'
        )
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PolicyError(f"{key} must be a decimal string, got {value!r}")
    try:
        return parse_decimal(str(value), key)
    except ValueError as exc:
        raise PolicyError(str(exc)) from exc


def _read_str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{key} must be a string, got {value!r}")
    return value


def _enum_reader(kind: type[E]) -> Callable[[str, Any], E]:
    def read(key: str, value: Any) -> E:
        try:
            return kind(value)
        except ValueError as exc:
            choices = ", ".join(item.value for item in kind)
            message = f"{key} {value!r} is invalid: expected {choices}"
            raise PolicyError(message) from exc

    return read


def _enum_tuple_reader(kind: type[E]) -> Callable[[str, Any], tuple[E, ...]]:
    read_one = _enum_reader(kind)

    def read(key: str, value: Any) -> tuple[E, ...]:
        if not isinstance(value, list):
            raise PolicyError(f"{key} must be a list, got {value!r}")
        return tuple(read_one(key, item) for item in value)

    return read


def _read_buckets(key: str, value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list) or not all(
        isinstance(item, list) and len(item) == 2 for item in value
    ):
        raise PolicyError(
            f'{key} must be a list of [label, highest DPD], e.g. [["M0", 0]]'
        )
    return tuple(
        (_read_str(key, label), _read_int(key, bound)) for label, bound in value
    )


def _read_limits(key: str, value: Any) -> Mapping[str, Decimal]:
    if not isinstance(value, dict):
        raise PolicyError(f'{key} must be a table, e.g. {{ collector = "500.00" }}')
    limits = {role: _read_decimal(f"{key}.{role}", v) for role, v in value.items()}
    return _frozen(limits)


_READERS: dict[str, Callable[[str, Any], Any]] = {
    "buckets": _read_buckets,
    "bucket_overflow": _read_str,
    "grace_days": _read_int,
    "penalty_grace_days": _read_int,
    "penalty_daily_rate": _read_decimal,
    "penalty_basis": _enum_reader(PenaltyBasis),
    "penalty_cap_ratio": _read_decimal,
    "allocation_order": _enum_tuple_reader(Component),
    "allocate_by": _enum_reader(AllocateBy),
    "reduction_limits": _read_limits,
    "settlement_parts": _enum_tuple_reader(QuotePart),
    "settlement_fee_rate": _read_decimal,
    "repurchase_parts": _enum_tuple_reader(QuotePart),
    "repurchase_fee_rate": _read_decimal,
    "repurchase_min_dpd": _read_int,
}

DEFAULT_POLICY = LoanPolicy()
