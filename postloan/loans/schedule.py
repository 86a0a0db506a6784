"""Repayment schedules: equal installment (annuity), equal principal, balloon.

Every amount is a Decimal rounded half-up to the cent when it is computed, and
the last installment takes whatever principal is left, so the principal of a
schedule always sums to the loan amount. Interest for a period is the opening
balance times the period's rate: the annual rate / 12 under 30/360, or the
annual rate times actual days / 365 (or / 360) between the period's start and
its due date.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from postloan.loans.dates import DayCount, add_months, year_fraction
from postloan.loans.money import ZERO, format_amount, require_decimal, round_cent

MAX_TERM_MONTHS = 600


class Method(StrEnum):
    """Way a loan is repaid."""

    ANNUITY = "annuity"  # equal installments of principal plus interest
    EQUAL_PRINCIPAL = "equal-principal"  # equal principal, falling interest
    BALLOON = "balloon"  # interest only, all principal with the last one


@dataclass(frozen=True, slots=True)
class LoanTerms:
    """Amount, rate and timing of a loan, enough to build its schedule."""

    principal: Decimal
    annual_rate: Decimal  # a fraction: 0.12 is 12 % a year
    term_months: int
    method: Method
    first_due_date: date
    day_count: DayCount = DayCount.THIRTY_360
    # Disbursement date, the start of the first period. None means one month
    # before the first due date.
    start_date: date | None = None

    def __post_init__(self) -> None:
        require_decimal(self.principal, "principal")
        require_decimal(self.annual_rate, "annual_rate")
        if self.principal <= 0 or self.principal != round_cent(self.principal):
            raise ValueError(
                f"principal {self.principal} is invalid: expected a positive "
                "amount in whole cents"
            )
        if not 0 <= self.annual_rate <= 1:
            raise ValueError(
                f"annual rate {self.annual_rate} is invalid: expected a fraction "
                "from 0 to 1, e.g. 0.12 for 12 %"
            )
        if not 1 <= self.term_months <= MAX_TERM_MONTHS:
            raise ValueError(
                f"term of {self.term_months} months is invalid: expected 1 to "
                f"{MAX_TERM_MONTHS}"
            )
        if self.start_date is not None and self.start_date >= self.first_due_date:
            raise ValueError(
                f"start date {self.start_date} must be before the first due date "
                f"{self.first_due_date}"
            )

    @property
    def loan_start(self) -> date:
        """Start of the first interest period."""
        return self.start_date or add_months(self.first_due_date, -1)

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict: Decimals as strings, dates ISO-8601."""
        return {
            "principal": format_amount(self.principal),
            "annual_rate": str(self.annual_rate),
            "term_months": self.term_months,
            "method": self.method.value,
            "first_due_date": self.first_due_date.isoformat(),
            "day_count": self.day_count.value,
            "start_date": self.start_date.isoformat() if self.start_date else None,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LoanTerms:
        """Rebuild terms from `to_record` output."""
        start = record.get("start_date")
        return cls(
            principal=Decimal(record["principal"]),
            annual_rate=Decimal(record["annual_rate"]),
            term_months=int(record["term_months"]),
            method=Method(record["method"]),
            first_due_date=date.fromisoformat(record["first_due_date"]),
            day_count=DayCount(record.get("day_count", DayCount.THIRTY_360)),
            start_date=date.fromisoformat(start) if start else None,
        )


@dataclass(frozen=True, slots=True)
class Installment:
    """One scheduled payment. ``balance`` is the principal left after it."""

    number: int
    due_date: date
    period_start: date
    payment: Decimal
    principal: Decimal
    interest: Decimal
    balance: Decimal

    @property
    def opening_balance(self) -> Decimal:
        """Principal outstanding during this installment's period."""
        return self.balance + self.principal

    def to_record(self) -> dict[str, Any]:
        """Return the installment as the CLI prints it: amounts with 2 decimals."""
        return {
            "n": self.number,
            "due_date": self.due_date.isoformat(),
            "payment": format_amount(self.payment),
            "principal": format_amount(self.principal),
            "interest": format_amount(self.interest),
            "balance": format_amount(self.balance),
        }


Schedule = tuple[Installment, ...]


def due_dates(first_due: date, count: int) -> list[date]:
    """Return ``count`` monthly due dates on the first due date's day of month."""
    return [add_months(first_due, months) for months in range(count)]


def annuity_payment(principal: Decimal, monthly_rate: Decimal, months: int) -> Decimal:
    """Return the level monthly payment, rounded half-up to the cent.

    Closed form: P * r / (1 - (1 + r) ** -n); P / n when the rate is 0.
    """
    require_decimal(principal, "principal")
    require_decimal(monthly_rate, "monthly_rate")
    if monthly_rate == 0:
        return round_cent(principal / months)
    return round_cent(principal * monthly_rate / (1 - (1 + monthly_rate) ** -months))


# A principal rule returns the principal part of one installment, given the
# terms, the opening balance and the installment's interest. The last
# installment ignores it and repays the whole remaining balance.
PrincipalRule = Callable[[LoanTerms, Decimal, Decimal], Decimal]


def _annuity_principal(
    terms: LoanTerms, balance: Decimal, interest: Decimal
) -> Decimal:
    # The level payment uses the nominal monthly rate whatever the day count.
    # Under actual/365 and actual/360 the interest varies with month length,
    # so the principal part absorbs the difference and the last payment
    # differs from the others.
    level = annuity_payment(terms.principal, terms.annual_rate / 12, terms.term_months)
    return max(level - interest, ZERO)


def _equal_principal(terms: LoanTerms, balance: Decimal, interest: Decimal) -> Decimal:
    return round_cent(terms.principal / terms.term_months)


def _balloon_principal(
    terms: LoanTerms, balance: Decimal, interest: Decimal
) -> Decimal:
    return ZERO


PRINCIPAL_RULES: dict[Method, PrincipalRule] = {
    Method.ANNUITY: _annuity_principal,
    Method.EQUAL_PRINCIPAL: _equal_principal,
    Method.BALLOON: _balloon_principal,
}


def period_interest(
    terms: LoanTerms, balance: Decimal, start: date, end: date
) -> Decimal:
    """Return one whole period's interest on ``balance``, rounded to the cent."""
    if terms.day_count is DayCount.THIRTY_360:
        return round_cent(balance * terms.annual_rate / 12)
    fraction = year_fraction(terms.day_count, start, end)
    return round_cent(balance * terms.annual_rate * fraction)


def build_schedule(terms: LoanTerms) -> Schedule:
    """Build the installments of a loan, in due-date order."""
    rule = PRINCIPAL_RULES[terms.method]
    dates = due_dates(terms.first_due_date, terms.term_months)
    starts = [terms.loan_start, *dates[:-1]]
    balance = terms.principal
    installments = []
    for number, (start, due) in enumerate(zip(starts, dates, strict=True), 1):
        interest = period_interest(terms, balance, start, due)
        if number == terms.term_months:
            principal = balance
        else:
            principal = min(rule(terms, balance, interest), balance)
        balance -= principal
        installments.append(
            Installment(
                number=number,
                due_date=due,
                period_start=start,
                payment=principal + interest,
                principal=principal,
                interest=interest,
                balance=balance,
            )
        )
    return tuple(installments)


def accrued_interest(terms: LoanTerms, installment: Installment, on: date) -> Decimal:
    """Return the interest of ``installment``'s period accrued up to ``on``.

    Uses the contract's day count (30E/360 days for 30/360) on the period's
    opening balance, never more than the installment's scheduled interest.
    """
    if on <= installment.period_start:
        return ZERO
    if on >= installment.due_date:
        return installment.interest
    fraction = year_fraction(terms.day_count, installment.period_start, on)
    interest = round_cent(installment.opening_balance * terms.annual_rate * fraction)
    return min(interest, installment.interest)
