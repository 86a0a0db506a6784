"""Money is Decimal: floats are rejected, rounding is half-up to the cent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from postloan.loans.money import (
    format_amount,
    parse_amount,
    require_decimal,
    round_cent,
)
from postloan.loans.payments import Payment
from postloan.loans.policy import LoanPolicy
from postloan.loans.reductions import Reduction
from postloan.loans.schedule import LoanTerms, Method, annuity_payment


def test_require_decimal_float_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"amount must be a Decimal, got float"):
        require_decimal(0.1, "amount")


def test_require_decimal_int_raises_type_error() -> None:
    with pytest.raises(TypeError):
        require_decimal(100, "amount")


def test_require_decimal_nan_raises_value_error() -> None:
    with pytest.raises(ValueError, match="finite"):
        require_decimal(Decimal("NaN"), "amount")


# Typed Any so that the type checker lets the calls below pass a float, as an
# untyped caller (JSON, a notebook) would.
FLOAT: Any = 0.12
DUE = date(2026, 1, 31)
AT = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: LoanTerms(FLOAT, Decimal("0.12"), 12, Method.ANNUITY, DUE),
            id="loan principal",
        ),
        pytest.param(
            lambda: LoanTerms(Decimal("100000"), FLOAT, 12, Method.ANNUITY, DUE),
            id="annual rate",
        ),
        pytest.param(lambda: Payment("B-1", "C-1", DUE, FLOAT), id="payment amount"),
        pytest.param(
            lambda: Reduction("R-1", "C-1", FLOAT, "hardship", "li", AT),
            id="reduction amount",
        ),
        pytest.param(lambda: LoanPolicy(penalty_daily_rate=FLOAT), id="penalty rate"),
        pytest.param(
            lambda: annuity_payment(FLOAT, Decimal("0.01"), 12), id="annuity formula"
        ),
    ],
)
def test_money_float_raises_type_error(build: Callable[[], object]) -> None:
    with pytest.raises(TypeError, match="must be a Decimal, got float"):
        build()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.005", "0.01"),
        ("0.015", "0.02"),
        ("0.0049", "0.00"),
        ("2.675", "2.68"),  # a float would give 2.67: 2.675 is 2.67499... in binary
        ("-0.005", "-0.01"),
    ],
)
def test_round_cent_half_up(value: str, expected: str) -> None:
    assert round_cent(Decimal(value)) == Decimal(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234.56", "1234.56"),
        ("1,234.5", "1234.50"),
        (" 7 ", "7.00"),
        ("-3.10", "-3.10"),
    ],
)
def test_parse_amount_accepts_bank_formats(text: str, expected: str) -> None:
    assert parse_amount(text) == Decimal(expected)


@pytest.mark.parametrize(
    "text", ["12.345", "1e3", "NaN", "12,34.00", "", "12.3.4", "€12"]
)
def test_parse_amount_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="invalid amount"):
        parse_amount(text)


def test_format_amount_two_decimals_without_negative_zero() -> None:
    assert format_amount(Decimal("-0.001")) == "0.00"
    assert format_amount(Decimal("1E+5")) == "100000.00"
