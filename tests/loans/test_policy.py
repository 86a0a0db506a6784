"""LoanPolicy defaults and loading from a TOML table."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from postloan.loans.policy import (
    AllocateBy,
    Component,
    LoanPolicy,
    PenaltyBasis,
    PolicyError,
    QuotePart,
)


def test_policy_defaults() -> None:
    policy = LoanPolicy()

    assert policy.buckets[1] == ("M1", 30)
    assert policy.bucket_overflow == "M4+"
    assert policy.allocation_order == (
        Component.PENALTY,
        Component.INTEREST,
        Component.PRINCIPAL,
    )
    assert policy.reduction_limits["collector"] == Decimal("500.00")
    assert policy.reduction_limits["supervisor"] == Decimal("5000.00")


def test_policy_from_toml_reads_loans_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[loans]\n"
        "grace_days = 3\n"
        'penalty_daily_rate = "0.0003"\n'
        'penalty_basis = "principal"\n'
        'penalty_cap_ratio = "0.2"\n'
        'allocation_order = ["interest", "principal", "penalty"]\n'
        'allocate_by = "installment"\n'
        'reduction_limits = { collector = "300.00", manager = "20000.00" }\n'
        'buckets = [["C", 0], ["X1", 15], ["X2", 45]]\n'
        'bucket_overflow = "X3+"\n'
        'repurchase_parts = ["principal", "interest"]\n'
        'repurchase_fee_rate = "0.01"\n'
    )

    policy = LoanPolicy.from_toml(path)

    assert policy.grace_days == 3
    assert policy.penalty_daily_rate == Decimal("0.0003")
    assert policy.penalty_basis is PenaltyBasis.PRINCIPAL
    assert policy.penalty_cap_ratio == Decimal("0.2")
    assert policy.allocation_order[0] is Component.INTEREST
    assert policy.allocate_by is AllocateBy.INSTALLMENT
    assert dict(policy.reduction_limits) == {
        "collector": Decimal("300.00"),
        "manager": Decimal("20000.00"),
    }
    assert policy.buckets == (("C", 0), ("X1", 15), ("X2", 45))
    assert policy.repurchase_parts == (QuotePart.PRINCIPAL, QuotePart.INTEREST)
    assert policy.repurchase_fee_rate == Decimal("0.01")


def test_policy_without_loans_table_is_default(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[store]\nurl = "sqlite:///x.db"\n')

    assert LoanPolicy.from_toml(path) == LoanPolicy()


def test_policy_from_toml_invalid_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[loans\n")

    with pytest.raises(PolicyError, match="cannot read policy file"):
        LoanPolicy.from_toml(path)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"grace_dayz": 3}, "unknown \\[loans\\] key\\(s\\) grace_dayz"),
        ({"penalty_daily_rate": 0.0005}, "is a TOML float; write it as a string"),
        ({"penalty_daily_rate": "abc"}, "invalid penalty_daily_rate 'abc'"),
        ({"penalty_basis": "everything"}, "expected principal, installment"),
        ({"allocation_order": ["interest", "principal"]}, "must name penalty"),
        ({"buckets": [["M1", 30], ["M0", 0]]}, "bounds must increase"),
        ({"grace_days": -1}, "grace_days -1 must not be negative"),
        ({"reduction_limits": {"collector": "-5"}}, "must not be negative"),
    ],
)
def test_policy_invalid_table_raises(table: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        LoanPolicy.from_table(table)
