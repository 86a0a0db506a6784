"""Property tests of schedules and the ledger (hypothesis, bounded example counts)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postloan.loans.contracts import Borrower, Contract, Vehicle
from postloan.loans.dates import DayCount
from postloan.loans.history import LoanHistory
from postloan.loans.ledger import compute_ledger
from postloan.loans.payments import Payment, Reversal
from postloan.loans.policy import AllocateBy, Component, LoanPolicy, PenaltyBasis
from postloan.loans.schedule import LoanTerms, Method, build_schedule

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
ZERO = Decimal("0.00")

cents = st.integers(min_value=100, max_value=1_000_000_000).map(
    lambda n: Decimal(n).scaleb(-2)
)
rates = st.integers(min_value=0, max_value=3600).map(lambda n: Decimal(n).scaleb(-4))
first_dues = st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31))
terms_strategy = st.builds(
    LoanTerms,
    principal=cents,
    annual_rate=rates,
    term_months=st.integers(min_value=1, max_value=120),
    method=st.sampled_from(Method),
    first_due_date=first_dues,
    day_count=st.sampled_from(DayCount),
)
policies = st.builds(
    LoanPolicy,
    grace_days=st.integers(min_value=0, max_value=5),
    penalty_grace_days=st.integers(min_value=0, max_value=5),
    penalty_basis=st.sampled_from(PenaltyBasis),
    penalty_cap_ratio=st.one_of(st.none(), st.sampled_from([Decimal("0.05")])),
    allocation_order=st.permutations(
        [Component.PENALTY, Component.INTEREST, Component.PRINCIPAL]
    ).map(tuple),
    allocate_by=st.sampled_from(AllocateBy),
)

START = date(2026, 1, 31)


def small_contract(months: int, method: Method) -> Contract:
    terms = LoanTerms(Decimal("12000.00"), Decimal("0.12"), months, method, START)
    return Contract(
        "C-1",
        Borrower("Wang Fang", "+8613800138000", "110101199003074514", "Asia/Shanghai"),
        Vehicle("1M8GDM9AXKP042788"),
        terms,
        "Dealer North",
    )


@st.composite
def payments(draw: st.DrawFn, count: int = 8) -> tuple[Payment, ...]:
    generated = []
    for number in range(draw(st.integers(min_value=0, max_value=count))):
        offset = draw(st.integers(min_value=-20, max_value=200))
        amount = draw(st.integers(min_value=1, max_value=400_000))
        generated.append(
            Payment(
                f"B-{number}",
                "C-1",
                START + timedelta(days=offset),
                Decimal(amount).scaleb(-2),
            )
        )
    return tuple(generated)


contracts = st.builds(
    small_contract, st.integers(min_value=1, max_value=6), st.sampled_from(Method)
)
business_dates = st.integers(min_value=-5, max_value=260).map(
    lambda days: START + timedelta(days=days)
)


@SETTINGS
@given(terms_strategy)
def test_schedule_principal_sums_to_loan_amount(terms: LoanTerms) -> None:
    schedule = build_schedule(terms)

    assert sum(i.principal for i in schedule) == terms.principal
    assert schedule[-1].balance == ZERO
    assert all(i.principal >= 0 and i.interest >= 0 for i in schedule)
    assert all(i.payment == i.principal + i.interest for i in schedule)


@SETTINGS
@given(contracts, payments(), business_dates, policies)
def test_every_payment_cent_allocated_once(
    contract: Contract,
    paid: tuple[Payment, ...],
    on: date,
    policy: LoanPolicy,
) -> None:
    ledger = compute_ledger(contract, LoanHistory(payments=paid), on, policy)

    for payment in paid:
        allocated = ledger.allocated_from(payment.payment_id)
        carried = ledger.credit.get(payment.payment_id, ZERO)
        expected = payment.amount if payment.value_date <= on else ZERO
        assert allocated + carried == expected
    for installment in ledger.installments:
        assert 0 <= installment.principal_paid <= installment.principal
        assert 0 <= installment.interest_paid <= installment.interest
        assert installment.penalty_outstanding >= 0


@SETTINGS
@given(
    contracts,
    payments(),
    business_dates,
    st.integers(min_value=1, max_value=120),
    policies,
)
def test_dpd_never_decreases_without_payment(
    contract: Contract,
    paid: tuple[Payment, ...],
    first: date,
    gap: int,
    policy: LoanPolicy,
) -> None:
    second = first + timedelta(days=gap)
    # Leave out every payment that arrives between the two dates.
    remaining = tuple(p for p in paid if not first < p.value_date <= second)
    history = LoanHistory(payments=remaining)

    before = compute_ledger(contract, history, first, policy)
    after = compute_ledger(contract, history, second, policy)

    assert after.dpd >= before.dpd


@SETTINGS
@given(
    contracts,
    payments(),
    st.integers(min_value=-20, max_value=200),
    st.integers(min_value=1, max_value=900_000),
    st.integers(min_value=0, max_value=8),
    business_dates,
    policies,
)
def test_reversal_restores_prior_state_exactly(
    contract: Contract,
    paid: tuple[Payment, ...],
    offset: int,
    cents_paid: int,
    position: int,
    on: date,
    policy: LoanPolicy,
) -> None:
    extra = Payment(
        "B-extra", "C-1", START + timedelta(days=offset), Decimal(cents_paid).scaleb(-2)
    )
    at = min(position, len(paid))
    history = LoanHistory(payments=paid)
    with_extra = replace(history, payments=(*paid[:at], extra, *paid[at:]))
    reversal = Reversal("B-extra", datetime(2026, 6, 1, tzinfo=UTC), "ops", "returned")

    expected = compute_ledger(contract, history, on, policy)
    restored = compute_ledger(contract, with_extra.with_reversal(reversal), on, policy)

    assert restored == expected
