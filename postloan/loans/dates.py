"""Due-date arithmetic and day-count conventions.

Due dates keep the day of month of the first due date and fall back to the
last day of a shorter month. An anchor of 31 gives Jan 31, Feb 28 (Feb 29 in
a leap year), Mar 31, Apr 30.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from enum import StrEnum


class DayCount(StrEnum):
    """Convention that turns a period between two dates into a year fraction."""

    THIRTY_360 = "30/360"
    ACTUAL_365 = "actual/365"
    ACTUAL_360 = "actual/360"


def add_months(anchor: date, months: int, day: int | None = None) -> date:
    """Return ``anchor`` moved by ``months``, on ``day`` (default the anchor's day).

    A day past the end of the target month becomes its last day.
    """
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day or anchor.day, last))


def days_30e_360(start: date, end: date) -> int:
    """Count days between two dates as 30E/360 does: day 31 counts as day 30.

    This is the Eurobond basis (ISDA 2006 §4.16(g)). A whole month is 30 days
    whatever its length, so a monthly period is exactly 1/12 of a year.
    """
    start_day = min(start.day, 30)
    end_day = min(end.day, 30)
    return (
        (end.year - start.year) * 360
        + (end.month - start.month) * 30
        + (end_day - start_day)
    )


def _fraction_30_360(start: date, end: date) -> Decimal:
    return Decimal(days_30e_360(start, end)) / 360


def _fraction_actual_365(start: date, end: date) -> Decimal:
    return Decimal((end - start).days) / 365


def _fraction_actual_360(start: date, end: date) -> Decimal:
    return Decimal((end - start).days) / 360


YEAR_FRACTION: dict[DayCount, Callable[[date, date], Decimal]] = {
    DayCount.THIRTY_360: _fraction_30_360,
    DayCount.ACTUAL_365: _fraction_actual_365,
    DayCount.ACTUAL_360: _fraction_actual_360,
}


def year_fraction(day_count: DayCount, start: date, end: date) -> Decimal:
    """Return the fraction of a year between ``start`` and ``end``."""
    return YEAR_FRACTION[day_count](start, end)


def parse_date(text: str) -> date:
    """Parse an ISO-8601 calendar date (``2026-01-31``); raise ValueError."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(
            f"invalid date {text!r}: expected YYYY-MM-DD, e.g. 2026-01-31"
        ) from exc
