"""Schedules checked by hand and against the closed-form annuity formula."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pytest

from postloan.loans.dates import DayCount, add_months, days_30e_360
from postloan.loans.schedule import (
    LoanTerms,
    Method,
    accrued_interest,
    build_schedule,
    due_dates,
)

CENT = Decimal("0.01")


def terms(
    method: Method = Method.ANNUITY,
    months: int = 12,
    first_due: date = date(2026, 1, 31),
    day_count: DayCount = DayCount.THIRTY_360,
    principal: str = "100000.00",
    rate: str = "0.12",
    start: date | None = None,
) -> LoanTerms:
    return LoanTerms(
        Decimal(principal), Decimal(rate), months, method, first_due, day_count, start
    )


def test_annuity_payment_matches_closed_form() -> None:
    # P = 100,000.00, r = 0.12 / 12 = 0.01, n = 12.
    # (1 + r) ** 12 = 1.126825030131969720661201
    # payment = P * r / (1 - (1 + r) ** -12) = 1,000 / 0.112550775...
    #         = 8,884.878867..., rounded half-up to 8,884.88.
    growth = Decimal("1.01") ** 12
    exact = Decimal("100000.00") * Decimal("0.01") / (1 - 1 / growth)

    schedule = build_schedule(terms())

    assert exact.quantize(CENT, rounding=ROUND_HALF_UP) == Decimal("8884.88")
    assert [i.payment for i in schedule[:11]] == [Decimal("8884.88")] * 11


def test_annuity_first_installments_by_hand() -> None:
    schedule = build_schedule(terms())

    # 1: interest 100,000.00 * 0.01 = 1,000.00; principal 8,884.88 - 1,000.00.
    assert schedule[0].interest == Decimal("1000.00")
    assert schedule[0].principal == Decimal("7884.88")
    assert schedule[0].balance == Decimal("92115.12")
    # 2: interest 92,115.12 * 0.01 = 921.1512, rounded to 921.15.
    assert schedule[1].interest == Decimal("921.15")
    assert schedule[1].principal == Decimal("7963.73")
    assert schedule[1].balance == Decimal("84151.39")


def test_annuity_last_installment_absorbs_rounding() -> None:
    schedule = build_schedule(terms())

    # 12: the balance left after 11 payments is repaid in full, with its
    # interest 8,796.88 * 0.01 = 87.9688 -> 87.97: 8,796.88 + 87.97 = 8,884.85.
    last = schedule[-1]
    assert last.principal == Decimal("8796.88")
    assert last.interest == Decimal("87.97")
    assert last.payment == Decimal("8884.85")
    assert last.balance == Decimal("0.00")


def test_annuity_zero_rate_splits_principal() -> None:
    schedule = build_schedule(terms(rate="0", principal="1000.00", months=3))

    assert [i.payment for i in schedule] == [
        Decimal("333.33"),
        Decimal("333.33"),
        Decimal("333.34"),
    ]


def test_equal_principal_by_hand() -> None:
    schedule = build_schedule(terms(Method.EQUAL_PRINCIPAL))

    # Principal 100,000.00 / 12 = 8,333.333... -> 8,333.33; interest on the
    # opening balance: 1,000.00, then 91,666.67 * 0.01 = 916.6667 -> 916.67.
    assert schedule[0].payment == Decimal("9333.33")
    assert schedule[1].interest == Decimal("916.67")
    assert schedule[1].payment == Decimal("9250.00")
    # The last takes the 0.04 left by rounding: 100,000.00 - 11 * 8,333.33.
    assert schedule[-1].principal == Decimal("8333.37")
    assert schedule[-1].interest == Decimal("83.33")


def test_balloon_interest_only_then_principal() -> None:
    schedule = build_schedule(terms(Method.BALLOON))

    assert [i.payment for i in schedule[:11]] == [Decimal("1000.00")] * 11
    assert [i.principal for i in schedule[:11]] == [Decimal("0.00")] * 11
    assert schedule[-1].payment == Decimal("101000.00")
    assert schedule[-1].balance == Decimal("0.00")


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("day_count", list(DayCount))
def test_schedule_principal_sums_to_loan(method: Method, day_count: DayCount) -> None:
    schedule = build_schedule(terms(method, day_count=day_count))

    assert sum(i.principal for i in schedule) == Decimal("100000.00")


def test_due_dates_month_end_falls_back_and_returns() -> None:
    dates = due_dates(date(2026, 1, 31), 4)

    assert dates == [
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
    ]


def test_due_dates_leap_year_february() -> None:
    dates = due_dates(date(2028, 1, 31), 3)

    assert dates[1] == date(2028, 2, 29)
    assert dates[2] == date(2028, 3, 31)


def test_due_dates_from_leap_day_keep_day_29() -> None:
    dates = due_dates(date(2028, 2, 29), 13)

    assert dates[1] == date(2028, 3, 29)
    assert dates[12] == date(2029, 2, 28)


def test_add_months_backwards_across_year() -> None:
    assert add_months(date(2026, 1, 31), -1) == date(2025, 12, 31)


def test_actual_365_interest_counts_days() -> None:
    schedule = build_schedule(terms(months=3, day_count=DayCount.ACTUAL_365))

    # Dec 31 -> Jan 31 is 31 days: 100,000.00 * 0.12 * 31 / 365 = 1,019.178...
    assert schedule[0].interest == Decimal("1019.18")
    # Jan 31 -> Feb 28 is 28 days: 67,016.97 * 0.12 * 28 / 365 = 616.924...
    assert schedule[1].principal == Decimal("33385.29")
    assert schedule[1].interest == Decimal("616.92")
    # The level payment is the annuity at 1 % a month; the last one differs.
    assert schedule[0].payment == Decimal("34002.21")
    assert schedule[2].payment == Decimal("33974.45")


def test_actual_360_interest_counts_days() -> None:
    schedule = build_schedule(terms(months=3, day_count=DayCount.ACTUAL_360))

    # 100,000.00 * 0.12 * 31 / 360 = 1,033.333...
    assert schedule[0].interest == Decimal("1033.33")
    # 67,031.12 * 0.12 * 28 / 360 = 625.623...
    assert schedule[1].interest == Decimal("625.62")


def test_thirty_360_interest_ignores_month_length() -> None:
    schedule = build_schedule(terms(Method.BALLOON, months=3))

    # February (28 days) earns the same as January (31 days): 1 % a month.
    assert schedule[0].interest == schedule[1].interest == Decimal("1000.00")


def test_actual_365_february_leap_year() -> None:
    schedule = build_schedule(
        terms(
            Method.BALLOON,
            months=2,
            first_due=date(2028, 1, 31),
            day_count=DayCount.ACTUAL_365,
        )
    )

    # Jan 31 -> Feb 29, 2028 is 29 days: 100,000.00 * 0.12 * 29 / 365 = 953.424...
    assert schedule[1].due_date == date(2028, 2, 29)
    assert schedule[1].interest == Decimal("953.42")


def test_start_date_sets_first_period() -> None:
    schedule = build_schedule(
        terms(
            Method.BALLOON,
            months=2,
            day_count=DayCount.ACTUAL_365,
            start=date(2026, 1, 16),
        )
    )

    # Jan 16 -> Jan 31 is 15 days: 100,000.00 * 0.12 * 15 / 365 = 493.150...
    assert schedule[0].interest == Decimal("493.15")


def test_start_date_after_first_due_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be before the first due date"):
        terms(start=date(2026, 2, 1))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("principal", "0.00", "principal 0.00 is invalid"),
        ("principal", "100.001", "whole cents"),
        ("rate", "12", "expected a fraction from 0 to 1"),
        ("months", 0, "expected 1 to 600"),
    ],
)
def test_loan_terms_invalid_values_rejected(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        terms(**{field: value})  # type: ignore[arg-type]


def test_days_30e_360_counts_day_31_as_30() -> None:
    assert days_30e_360(date(2026, 1, 31), date(2026, 3, 31)) == 60
    assert days_30e_360(date(2026, 1, 31), date(2026, 2, 15)) == 15


def test_accrued_interest_half_period() -> None:
    schedule = build_schedule(terms())

    # 15 of 30 days of February's period on 92,115.12 at 1 % a month.
    accrued = accrued_interest(terms(), schedule[1], date(2026, 2, 15))

    assert accrued == Decimal("460.58")
