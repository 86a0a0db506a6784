"""The ledger of one contract on a business date, recomputed from its history.

`compute_ledger` replays the history in date order. Penalty accrues on what
is past due and approved reductions waive penalty. Payments go into a pool of
unallocated money (first in, first out), which pays the due components in the
policy's allocation order. Money that nothing due can take is carried forward
and pays the next installments on their due dates. The result depends only on
the contract, the history, the business date and the policy, so a reversal is
a replay without the reversed payment.

Within one day the steps run in this order: the day's penalty accrues on the
amount unpaid at the start of the day, then reductions apply, then payments.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from types import MappingProxyType

from postloan.loans.contracts import Contract
from postloan.loans.history import Closure, LoanHistory
from postloan.loans.money import ZERO, round_cent
from postloan.loans.payments import Payment
from postloan.loans.policy import (
    DEFAULT_POLICY,
    AllocateBy,
    Component,
    LoanPolicy,
    PenaltyBasis,
    QuotePart,
)
from postloan.loans.reductions import Reduction, ReductionStatus
from postloan.loans.schedule import Installment, accrued_interest

PRINCIPAL = Component.PRINCIPAL
INTEREST = Component.INTEREST
PENALTY = Component.PENALTY
_PART_COMPONENT = {
    QuotePart.PRINCIPAL: PRINCIPAL,
    QuotePart.INTEREST: INTEREST,
    QuotePart.PENALTY: PENALTY,
}


@dataclass(frozen=True, slots=True)
class InstallmentStatus:
    """Amounts owed, paid, waived and written off on one installment.

    ``interest`` is the scheduled interest, except after a closure, where it
    is the interest accrued to the closure date (zero for later periods).
    """

    number: int
    due_date: date
    principal: Decimal
    interest: Decimal
    principal_paid: Decimal
    interest_paid: Decimal
    penalty_accrued: Decimal
    penalty_paid: Decimal
    penalty_waived: Decimal
    # Debt cancelled by a closure, by component (PRINCIPAL, INTEREST, PENALTY).
    written_off: Mapping[Component, Decimal] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def _off(self, component: Component) -> Decimal:
        return self.written_off.get(component, ZERO)

    @property
    def principal_unpaid(self) -> Decimal:
        return self.principal - self.principal_paid - self._off(PRINCIPAL)

    @property
    def interest_unpaid(self) -> Decimal:
        return self.interest - self.interest_paid - self._off(INTEREST)

    @property
    def amount_unpaid(self) -> Decimal:
        """Unpaid principal plus unpaid interest."""
        return self.principal_unpaid + self.interest_unpaid

    @property
    def penalty_outstanding(self) -> Decimal:
        """Penalty accrued and neither paid, waived nor written off."""
        settled = self.penalty_paid + self.penalty_waived + self._off(PENALTY)
        return self.penalty_accrued - settled


@dataclass(frozen=True, slots=True)
class Allocation:
    """Part of one payment applied to one component of one installment.

    ``installment`` is None for a closure fee, which belongs to no installment.
    """

    payment_id: str
    on: date
    installment: int | None
    component: Component
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Waiver:
    """Part of one approved reduction applied to one installment's penalty."""

    reduction_id: str
    on: date
    installment: int
    amount: Decimal


@dataclass(frozen=True)
class LedgerState:
    """The ledger of one contract as of the end of the business date ``on``."""

    contract_id: str
    on: date
    installments: tuple[InstallmentStatus, ...]
    allocations: tuple[Allocation, ...]
    waivers: tuple[Waiver, ...]
    # Money received but not allocated, by payment id (carried forward).
    credit: Mapping[str, Decimal]
    dpd: int
    bucket: str
    closure: Closure | None = None
    policy: LoanPolicy = field(default=DEFAULT_POLICY, repr=False, compare=False)

    @property
    def credit_total(self) -> Decimal:
        return sum(self.credit.values(), ZERO)

    @property
    def overdue(self) -> tuple[InstallmentStatus, ...]:
        """Unpaid installments more than the grace days past their due date."""
        cutoff = self.on - timedelta(days=self.policy.grace_days)
        return tuple(
            i for i in self.installments if i.due_date < cutoff and i.amount_unpaid > 0
        )

    @property
    def principal_outstanding(self) -> Decimal:
        """Principal not yet paid, due or not."""
        return sum((i.principal_unpaid for i in self.installments), ZERO)

    @property
    def penalty_outstanding(self) -> Decimal:
        return sum((i.penalty_outstanding for i in self.installments), ZERO)

    @property
    def written_off(self) -> Decimal:
        """Debt cancelled by the closure."""
        return sum((sum(i.written_off.values(), ZERO) for i in self.installments), ZERO)

    def allocated_from(self, payment_id: str) -> Decimal:
        """Return how much of one payment has been allocated."""
        return sum(
            (a.amount for a in self.allocations if a.payment_id == payment_id), ZERO
        )


def bucket_for(dpd: int, policy: LoanPolicy = DEFAULT_POLICY) -> str:
    """Return the DPD bucket label (M0, M1, ...) for a number of days past due."""
    for label, highest in policy.buckets:
        if dpd <= highest:
            return label
    return policy.bucket_overflow


def days_past_due(
    installments: Iterable[InstallmentStatus], on: date, policy: LoanPolicy
) -> int:
    """Return days past due, counted from the oldest unpaid installment's due date.

    An installment is unpaid while any of its principal or interest is unpaid.
    Unpaid penalty alone does not count. DPD stays 0 until it exceeds the grace days.
    """
    for installment in installments:
        if installment.amount_unpaid > 0 and installment.due_date < on:
            days = (on - installment.due_date).days
            return days if days > policy.grace_days else 0
    return 0


class _Position:
    """Mutable working state of one installment during a replay."""

    def __init__(self, installment: Installment) -> None:
        self.item = installment
        self.interest = installment.interest
        self.paid = dict.fromkeys((PRINCIPAL, INTEREST, PENALTY), ZERO)
        self.written_off = dict.fromkeys((PRINCIPAL, INTEREST, PENALTY), ZERO)
        # Owed less paid, waived and written off; kept up to date by every
        # change below rather than recomputed, because allocation reads it
        # for every due installment on every event day.
        self.balance = {
            PRINCIPAL: installment.principal,
            INTEREST: installment.interest,
            PENALTY: ZERO,
        }
        self.penalty_accrued = ZERO
        self.penalty_pending = ZERO  # accrued in penalty grace, not yet charged
        self.penalty_waived = ZERO

    def unpaid(self, component: Component) -> Decimal:
        return self.balance[component]

    def amount_unpaid(self) -> Decimal:
        return self.balance[PRINCIPAL] + self.balance[INTEREST]

    def is_settled(self) -> bool:
        return not any(self.balance.values())

    def pay(self, component: Component, amount: Decimal) -> None:
        self.paid[component] += amount
        self.balance[component] -= amount

    def charge_penalty(self, amount: Decimal) -> None:
        self.penalty_accrued += amount
        self.balance[PENALTY] += amount

    def waive_penalty(self, amount: Decimal) -> None:
        self.penalty_waived += amount
        self.balance[PENALTY] -= amount

    def write_off(self, component: Component) -> None:
        self.written_off[component] += self.balance[component]
        self.balance[component] = ZERO

    def set_interest(self, interest: Decimal) -> None:
        self.balance[INTEREST] += interest - self.interest
        self.interest = interest

    def penalty_base(self, basis: PenaltyBasis) -> Decimal:
        if basis is PenaltyBasis.PRINCIPAL:
            return self.unpaid(PRINCIPAL)
        return self.amount_unpaid()

    def freeze(self) -> InstallmentStatus:
        return InstallmentStatus(
            number=self.item.number,
            due_date=self.item.due_date,
            principal=self.item.principal,
            interest=self.interest,
            principal_paid=self.paid[PRINCIPAL],
            interest_paid=self.paid[INTEREST],
            penalty_accrued=self.penalty_accrued,
            penalty_paid=self.paid[PENALTY],
            penalty_waived=self.penalty_waived,
            written_off=MappingProxyType(
                {c: v for c, v in self.written_off.items() if v}
            ),
        )


@dataclass(slots=True)
class _Credit:
    """Unallocated rest of one payment in the pool."""

    payment_id: str
    amount: Decimal


class _Replay:
    """Mutable state of one replay of a contract's history."""

    def __init__(self, contract: Contract, policy: LoanPolicy) -> None:
        self.contract = contract
        self.policy = policy
        self.positions = [_Position(item) for item in contract.schedule]
        # Positions before this index are paid in full and never change again.
        self.first_open = 0
        self.accrued_through = self.positions[0].item.due_date
        self.pool: deque[_Credit] = deque()
        self.allocations: list[Allocation] = []
        self.waivers: list[Waiver] = []
        self.closed = False

    def accrue_penalty(self, through: date) -> None:
        """Accrue penalty for the days after `accrued_through` up to ``through``."""
        if not self.closed and through > self.accrued_through:
            for position in self._open(before=through):
                self._accrue(position, self.accrued_through, through)
            self.accrued_through = through

    def _open(self, before: date | None) -> list[_Position]:
        """Return the positions not paid in full that fall due before ``before``
        (all of them when ``before`` is None)."""
        while (
            self.first_open < len(self.positions)
            and self.positions[self.first_open].is_settled()
        ):
            # Paid in full: pending grace penalty is never charged.
            self.positions[self.first_open].penalty_pending = ZERO
            self.first_open += 1
        open_positions = []
        for position in self.positions[self.first_open :]:
            if before is not None and position.item.due_date >= before:
                break
            if not position.is_settled():
                open_positions.append(position)
        return open_positions

    def _accrue(self, position: _Position, after: date, through: date) -> None:
        due = position.item.due_date
        start = max(after, due)
        if through <= start:
            return
        grace_end = due + timedelta(days=self.policy.penalty_grace_days)
        if start < grace_end < through:
            self._accrue(position, start, grace_end)
            self._accrue(position, grace_end, through)
            return
        in_grace = through <= grace_end
        if not in_grace and position.penalty_pending:
            # The grace days passed with the installment unpaid: charge them.
            if position.amount_unpaid() > 0:
                position.charge_penalty(position.penalty_pending)
            position.penalty_pending = ZERO
        daily = round_cent(
            position.penalty_base(self.policy.penalty_basis)
            * self.policy.penalty_daily_rate
        )
        amount = self._capped(position, daily * (through - start).days)
        if in_grace:
            position.penalty_pending += amount
        else:
            position.charge_penalty(amount)

    def _capped(self, position: _Position, amount: Decimal) -> Decimal:
        ratio = self.policy.penalty_cap_ratio
        if ratio is None:
            return amount
        cap = round_cent(position.item.payment * ratio)
        charged = position.penalty_accrued + position.penalty_pending
        return max(min(amount, cap - charged), ZERO)

    def waive(self, reduction: Reduction, on: date) -> None:
        """Apply an approved reduction to outstanding penalty, oldest first."""
        if self.closed:
            return
        left = reduction.amount
        for position in self._open(before=None):
            take = min(left, position.unpaid(PENALTY))
            if take > 0:
                position.waive_penalty(take)
                left -= take
                number = position.item.number
                self.waivers.append(Waiver(reduction.reduction_id, on, number, take))

    def receive(self, payment: Payment) -> None:
        self.pool.append(_Credit(payment.payment_id, payment.amount))

    def allocate(self, on: date, everything: bool = False) -> None:
        """Pay what is due on ``on`` (or everything) from the pool, in policy order."""
        if self.closed or not self.pool:
            return
        due = self._open(before=None if everything else on + timedelta(days=1))
        order = self.policy.allocation_order
        if self.policy.allocate_by is AllocateBy.INSTALLMENT:
            targets = [(p, c) for p in due for c in order]
        else:
            targets = [(p, c) for c in order for p in due]
        for position, component in targets:
            for payment_id, amount in self._take(position.unpaid(component)):
                position.pay(component, amount)
                number = position.item.number
                self.allocations.append(
                    Allocation(payment_id, on, number, component, amount)
                )

    def _take(self, need: Decimal) -> list[tuple[str, Decimal]]:
        """Remove up to ``need`` from the pool, oldest payment first."""
        portions = []
        while need > 0 and self.pool:
            credit = self.pool[0]
            amount = min(need, credit.amount)
            portions.append((credit.payment_id, amount))
            need -= amount
            credit.amount -= amount
            if not credit.amount:
                self.pool.popleft()
        return portions

    def close(self, closure: Closure) -> None:
        """Make all debt due on the closure date, pay it, write off the rest."""
        for position in self.positions:
            if position.item.due_date > closure.on:
                position.set_interest(
                    accrued_interest(self.contract.terms, position.item, closure.on)
                )
        for part, component in _PART_COMPONENT.items():
            if part not in closure.parts:
                self._write_off(component)
        for payment_id, amount in self._take(closure.fee):
            self.allocations.append(
                Allocation(payment_id, closure.on, None, Component.FEE, amount)
            )
        self.allocate(closure.on, everything=True)
        for component in (PRINCIPAL, INTEREST, PENALTY):
            self._write_off(component)
        self.closed = True

    def _write_off(self, component: Component) -> None:
        for position in self.positions:
            position.write_off(component)

    def credit(self) -> Mapping[str, Decimal]:
        totals: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for credit in self.pool:
            totals[credit.payment_id] += credit.amount
        return MappingProxyType(dict(totals))


def compute_ledger(
    contract: Contract,
    history: LoanHistory,
    on: date,
    policy: LoanPolicy = DEFAULT_POLICY,
) -> LedgerState:
    """Replay a contract's history up to the end of ``on`` and return its ledger.

    Reversed payments are left out entirely. Payments, approved reductions and
    a closure dated after ``on`` are ignored. A reduction takes effect on the
    borrower's local date of its approval.
    """
    replay = _Replay(contract, policy)
    for day, payments, reductions, closure in _events(contract, history, on):
        replay.accrue_penalty(day)
        for reduction in reductions:
            replay.waive(reduction, day)
        for payment in payments:
            replay.receive(payment)
        replay.allocate(day)
        if closure is not None:
            replay.close(closure)
    installments = tuple(p.freeze() for p in replay.positions)
    closure = history.closure if replay.closed else None
    dpd = 0 if closure else days_past_due(installments, on, policy)
    return LedgerState(
        contract_id=contract.contract_id,
        on=on,
        installments=installments,
        allocations=tuple(replay.allocations),
        waivers=tuple(replay.waivers),
        credit=replay.credit(),
        dpd=dpd,
        bucket=bucket_for(dpd, policy),
        closure=closure,
        policy=policy,
    )


_DayEvents = tuple[date, list[Payment], list[Reduction], Closure | None]


def _events(contract: Contract, history: LoanHistory, on: date) -> list[_DayEvents]:
    """Group the history's effective events by day, in date order, up to ``on``."""
    payments: dict[date, list[Payment]] = defaultdict(list)
    reductions: dict[date, list[Reduction]] = defaultdict(list)
    reversed_ids = history.reversed_ids
    for payment in history.payments:
        if payment.payment_id not in reversed_ids and payment.value_date <= on:
            payments[payment.value_date].append(payment)
    for reduction in history.reductions:
        if reduction.status is ReductionStatus.APPROVED and reduction.decided_at:
            day = contract.borrower.local_date(reduction.decided_at)
            if day <= on:
                reductions[day].append(reduction)
    closure = history.closure
    if closure is not None and closure.on > on:
        closure = None
    days = {item.due_date for item in contract.schedule if item.due_date <= on}
    days |= set(payments) | set(reductions) | {on}
    if closure is not None:
        days.add(closure.on)
    return [
        (
            day,
            payments.get(day, []),
            reductions.get(day, []),
            closure if closure is not None and closure.on == day else None,
        )
        for day in sorted(days)
    ]
