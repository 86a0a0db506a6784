"""The ledger: allocation, carry-forward, reversal, DPD, buckets and penalty.

The contract is 100,000.00 at 12 % over 12 months from 2026-01-31: every
installment is 8,884.88; the first is 1,000.00 interest and 7,884.88
principal, the second (2026-02-28) 921.15 interest and 7,963.73 principal.
Default penalty: 0.05 % a day of the unpaid installment, so 8,884.88 earns
4.44 a day (8,884.88 * 0.0005 = 4.44244, rounded half-up to the cent).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from postloan.loans.contracts import Contract
from postloan.loans.history import LoanHistory
from postloan.loans.ledger import Allocation, bucket_for, compute_ledger
from postloan.loans.payments import Payment, Reversal
from postloan.loans.policy import AllocateBy, Component, LoanPolicy, PenaltyBasis
from postloan.loans.reductions import Reduction, ReductionStatus

D = Decimal
JAN_31 = date(2026, 1, 31)


def pay(reference: str, day: date, amount: str) -> Payment:
    return Payment(reference, "C-1", day, D(amount))


def history(*payments: Payment) -> LoanHistory:
    return LoanHistory(payments=payments)


def test_ledger_on_time_payment_allocation(
    contract: Contract,
) -> None:
    ledger = compute_ledger(
        contract, history(pay("B-1", JAN_31, "8884.88")), date(2026, 2, 15)
    )

    assert ledger.allocations == (
        Allocation("B-1", JAN_31, 1, Component.INTEREST, D("1000.00")),
        Allocation("B-1", JAN_31, 1, Component.PRINCIPAL, D("7884.88")),
    )
    assert ledger.dpd == 0
    assert ledger.bucket == "M0"


def test_ledger_partial_payment_past_due(contract: Contract) -> None:
    ledger = compute_ledger(
        contract, history(pay("B-1", JAN_31, "5000.00")), date(2026, 2, 10)
    )

    first = ledger.installments[0]
    assert first.interest_paid == D("1000.00")
    assert first.principal_unpaid == D("3884.88")
    assert ledger.dpd == 10
    assert ledger.bucket == "M1"


def test_ledger_late_payment_pays_penalty_first(contract: Contract) -> None:
    # Ten days late: 10 * 4.44 = 44.40 penalty, paid before interest and principal.
    ledger = compute_ledger(
        contract, history(pay("B-1", date(2026, 2, 10), "8884.88")), date(2026, 2, 10)
    )

    first = ledger.installments[0]
    assert first.penalty_paid == D("44.40")
    assert first.interest_paid == D("1000.00")
    assert first.principal_unpaid == D("44.40")
    assert ledger.dpd == 10


def test_ledger_allocation_order_configurable(contract: Contract) -> None:
    policy = LoanPolicy(
        allocation_order=(Component.INTEREST, Component.PRINCIPAL, Component.PENALTY)
    )

    ledger = compute_ledger(
        contract,
        history(pay("B-1", date(2026, 2, 10), "8884.88")),
        date(2026, 2, 10),
        policy,
    )

    assert ledger.installments[0].amount_unpaid == D("0.00")
    assert ledger.penalty_outstanding == D("44.40")
    assert ledger.dpd == 0


def test_ledger_component_order_interest_first(contract: Contract) -> None:
    # On Mar 10 installments 1 (38 days late) and 2 (10 days late) are unpaid.
    payments = history(pay("B-1", date(2026, 3, 10), "9100.00"))

    ledger = compute_ledger(contract, payments, date(2026, 3, 10))

    # Penalty 168.72 + 44.40, interest 1,000.00 + 921.15, and the 6,965.73
    # left goes to installment 1's principal.
    first, second = ledger.installments[:2]
    assert second.interest_paid == D("921.15")
    assert first.principal_unpaid == D("919.15")


def test_ledger_installment_order_clears_oldest_first(contract: Contract) -> None:
    policy = LoanPolicy(allocate_by=AllocateBy.INSTALLMENT)
    payments = history(pay("B-1", date(2026, 3, 10), "9100.00"))

    ledger = compute_ledger(contract, payments, date(2026, 3, 10), policy)

    # 9,100.00 - 168.72 penalty (38 days) - 8,884.88 = 46.40 for installment 2:
    # its 44.40 penalty (10 days), then 2.00 of its interest.
    first, second = ledger.installments[:2]
    assert first.amount_unpaid == D("0.00")
    assert second.penalty_outstanding == D("0.00")
    assert second.interest_paid == D("2.00")
    assert second.principal_paid == D("0.00")
    assert ledger.dpd == 10


def test_ledger_overpayment_carried_forward(
    contract: Contract,
) -> None:
    payments = history(pay("B-1", JAN_31, "10000.00"))

    before = compute_ledger(contract, payments, date(2026, 2, 27))
    after = compute_ledger(contract, payments, date(2026, 2, 28))

    assert dict(before.credit) == {"B-1": D("1115.12")}
    assert after.credit_total == D("0.00")
    assert after.installments[1].interest_paid == D("921.15")
    assert after.installments[1].principal_paid == D("193.97")
    assert after.allocations[-1].on == date(2026, 2, 28)


def test_ledger_early_payment_waits_as_credit(contract: Contract) -> None:
    payments = history(pay("B-1", date(2026, 1, 20), "8884.88"))

    early = compute_ledger(contract, payments, date(2026, 1, 25))
    due = compute_ledger(contract, payments, JAN_31)

    assert early.credit_total == D("8884.88")
    assert due.installments[0].amount_unpaid == D("0.00")
    assert due.credit_total == D("0.00")


def test_ledger_ignores_later_payments(contract: Contract) -> None:
    payments = history(pay("B-1", date(2026, 2, 20), "8884.88"))

    ledger = compute_ledger(contract, payments, date(2026, 2, 10))

    assert ledger.allocations == ()
    assert ledger.dpd == 10


def test_ledger_reversal_restores_prior_state(contract: Contract) -> None:
    base = history(pay("B-1", JAN_31, "8884.88"), pay("B-2", date(2026, 3, 5), "900"))
    bounced = base.with_payment(pay("B-3", date(2026, 3, 8), "9500.00"))
    reversal = Reversal("B-3", datetime(2026, 3, 12, tzinfo=UTC), "ops", "returned")

    expected = compute_ledger(contract, base, date(2026, 4, 20))
    restored = compute_ledger(
        contract, bounced.with_reversal(reversal), date(2026, 4, 20)
    )

    assert restored == expected


def test_ledger_reversal_makes_contract_past_due(contract: Contract) -> None:
    paid = history(pay("B-1", JAN_31, "8884.88"))
    reversal = Reversal("B-1", datetime(2026, 2, 3, tzinfo=UTC), "ops", "NSF")

    ledger = compute_ledger(contract, paid.with_reversal(reversal), date(2026, 2, 5))

    assert ledger.dpd == 5
    assert ledger.penalty_outstanding == D("22.20")


def test_dpd_counts_from_oldest_unpaid_due_date(contract: Contract) -> None:
    ledger = compute_ledger(contract, LoanHistory(), date(2026, 3, 10))

    # Jan 31 -> Mar 10 is 38 days, whatever happened to the Feb 28 installment.
    assert ledger.dpd == 38
    assert ledger.bucket == "M2"
    assert [i.number for i in ledger.overdue] == [1, 2]


def test_dpd_zero_on_due_date_itself(contract: Contract) -> None:
    assert compute_ledger(contract, LoanHistory(), JAN_31).dpd == 0


def test_dpd_ignores_unpaid_penalty(contract: Contract) -> None:
    # The installment is paid 10 days late with interest-first allocation,
    # so 44.40 of penalty stays unpaid, which does not make it past due.
    policy = LoanPolicy(
        allocation_order=(Component.INTEREST, Component.PRINCIPAL, Component.PENALTY)
    )
    payments = history(pay("B-1", date(2026, 2, 10), "8884.88"))

    ledger = compute_ledger(contract, payments, date(2026, 2, 20), policy)

    assert ledger.dpd == 0


@pytest.mark.parametrize(
    ("on", "dpd"),
    [(date(2026, 2, 3), 0), (date(2026, 2, 4), 4), (date(2026, 2, 10), 10)],
)
def test_dpd_grace_days_then_full_count(contract: Contract, on: date, dpd: int) -> None:
    policy = LoanPolicy(grace_days=3)

    assert compute_ledger(contract, LoanHistory(), on, policy).dpd == dpd


@pytest.mark.parametrize(
    ("dpd", "bucket"),
    [
        (0, "M0"),
        (1, "M1"),
        (30, "M1"),
        (31, "M2"),
        (60, "M2"),
        (61, "M3"),
        (90, "M3"),
        (91, "M4+"),
        (400, "M4+"),
    ],
)
def test_bucket_for_default_bounds(dpd: int, bucket: str) -> None:
    assert bucket_for(dpd) == bucket


def test_bucket_for_configured_bounds() -> None:
    policy = LoanPolicy(buckets=(("C", 0), ("X", 15)), bucket_overflow="Y")

    assert bucket_for(15, policy) == "X"
    assert bucket_for(16, policy) == "Y"


def test_penalty_accrues_daily_on_whole_installment(contract: Contract) -> None:
    ledger = compute_ledger(contract, LoanHistory(), date(2026, 2, 10))

    assert ledger.installments[0].penalty_accrued == D("44.40")


def test_penalty_on_principal_basis(contract: Contract) -> None:
    policy = LoanPolicy(penalty_basis=PenaltyBasis.PRINCIPAL)

    ledger = compute_ledger(contract, LoanHistory(), date(2026, 2, 10), policy)

    # 7,884.88 * 0.0005 = 3.94244 -> 3.94 a day, 10 days.
    assert ledger.installments[0].penalty_accrued == D("39.40")


def test_penalty_follows_partial_payment(contract: Contract) -> None:
    payments = history(pay("B-1", date(2026, 2, 5), "4884.88"))

    ledger = compute_ledger(contract, payments, date(2026, 2, 10))

    # Feb 1-5 on 8,884.88: 5 * 4.44 = 22.20, paid on Feb 5 first. Feb 6-10
    # on the 4,022.20 left: 4,022.20 * 0.0005 = 2.0111 -> 2.01 a day.
    first = ledger.installments[0]
    assert first.penalty_paid == D("22.20")
    assert first.amount_unpaid == D("4022.20")
    assert first.penalty_outstanding == D("10.05")


def test_penalty_grace_paid_within_grace_owes_nothing(contract: Contract) -> None:
    policy = LoanPolicy(penalty_grace_days=5)
    payments = history(pay("B-1", date(2026, 2, 5), "8884.88"))

    ledger = compute_ledger(contract, payments, date(2026, 2, 20), policy)

    assert ledger.installments[0].penalty_accrued == D("0.00")
    assert ledger.installments[0].amount_unpaid == D("0.00")


def test_penalty_grace_passed_charges_from_due_date(contract: Contract) -> None:
    policy = LoanPolicy(penalty_grace_days=5)
    payments = history(pay("B-1", date(2026, 2, 6), "8884.88"))

    ledger = compute_ledger(contract, payments, date(2026, 2, 6), policy)

    # Six days (Feb 1-6) at 4.44, the five grace days included.
    assert ledger.installments[0].penalty_paid == D("26.64")


def test_penalty_grace_not_yet_charged_inside_grace(contract: Contract) -> None:
    policy = LoanPolicy(penalty_grace_days=5)

    ledger = compute_ledger(contract, LoanHistory(), date(2026, 2, 4), policy)

    assert ledger.penalty_outstanding == D("0.00")


def test_penalty_cap_ratio_limits_each_installment(contract: Contract) -> None:
    # Cap: 8,884.88 * 0.01 = 88.8488 -> 88.85, reached after 21 days.
    policy = LoanPolicy(penalty_cap_ratio=D("0.01"))

    ledger = compute_ledger(contract, LoanHistory(), date(2026, 5, 31), policy)

    assert ledger.installments[0].penalty_accrued == D("88.85")
    assert ledger.installments[3].penalty_accrued == D("88.85")


def approved(amount: str, decided_at: datetime) -> Reduction:
    return Reduction(
        "R-1",
        "C-1",
        D(amount),
        "hospital stay",
        "collector.li",
        datetime(2026, 2, 9, tzinfo=UTC),
        ReductionStatus.APPROVED,
        "supervisor.zhao",
        "supervisor",
        decided_at,
    )


def test_reduction_waives_from_local_date(
    contract: Contract,
) -> None:
    # 02:00 UTC is 10:00 in Asia/Shanghai, still Feb 10 there.
    reduction = approved("20.00", datetime(2026, 2, 10, 2, 0, tzinfo=UTC))
    waived = LoanHistory(reductions=(reduction,))

    before = compute_ledger(contract, waived, date(2026, 2, 9))
    after = compute_ledger(contract, waived, date(2026, 2, 10))

    assert before.penalty_outstanding == D("39.96")
    assert after.penalty_outstanding == D("24.40")
    assert after.waivers[0].amount == D("20.00")


def test_reduction_utc_evening_next_local_day(contract: Contract) -> None:
    # 20:00 UTC on Feb 10 is 04:00 on Feb 11 in Asia/Shanghai.
    reduction = approved("20.00", datetime(2026, 2, 10, 20, 0, tzinfo=UTC))

    ledger = compute_ledger(
        contract, LoanHistory(reductions=(reduction,)), date(2026, 2, 10)
    )

    assert ledger.penalty_outstanding == D("44.40")


def test_reduction_rejected_has_no_effect(contract: Contract) -> None:
    reduction = replace(
        approved("20.00", datetime(2026, 2, 10, 2, tzinfo=UTC)),
        status=ReductionStatus.REJECTED,
    )

    ledger = compute_ledger(
        contract, LoanHistory(reductions=(reduction,)), date(2026, 2, 10)
    )

    assert ledger.penalty_outstanding == D("44.40")


def test_reduction_capped_at_penalty(
    contract: Contract,
) -> None:
    reduction = approved("500.00", datetime(2026, 2, 10, 2, tzinfo=UTC))

    ledger = compute_ledger(
        contract, LoanHistory(reductions=(reduction,)), date(2026, 2, 10)
    )

    assert ledger.penalty_outstanding == D("0.00")
    assert sum(w.amount for w in ledger.waivers) == D("44.40")
    assert ledger.installments[0].amount_unpaid == D("8884.88")
