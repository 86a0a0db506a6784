"""The risk engine: signals and loan state through the rules, into actions.

`evaluate` is pure: it returns the rule firings for one contract at one time.
`RiskEngine.run` applies them: it records each firing with its evidence,
escalates the contract's case, queues message tasks in the rules' order,
opens GPS work orders and immobilize requests, and closes the case once
payments on installments already due have cleared the arrears.

An evaluation dated before the contract's latest case move or recorded
firing changes nothing: `RiskEngine.run` logs it and returns no firings,
and `RiskEngine.last_evaluated` lets a caller reject such a date up front.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from postloan.loans import Contract, LedgerState, LoanHistory, compute_ledger
from postloan.model import EMPTY
from postloan.notify import MessageCenter, MessageRequest
from postloan.risk.actions import ImmobilizeRequest, ImmobilizeStatus, WorkOrder
from postloan.risk.cases import (
    Case,
    CaseEvent,
    CaseState,
    CollectorPool,
    apply_case_event,
    escalation_steps,
)
from postloan.risk.evidence import Evidence, fix_ref, stamp
from postloan.risk.places import PlaceSettings, find_stops
from postloan.risk.repository import RiskRepository
from postloan.risk.rules import Level, LoanFacts, Rule, Rules
from postloan.risk.signals import Observations, Signal, compute_signals
from postloan.times import parse_time

ZERO = Decimal("0")
log = logging.getLogger(__name__)


class BackdatedEvaluationError(ValueError):
    """An evaluation time is earlier than the contract's last recorded risk step."""

    def __init__(self, contract_id: str, at: datetime, latest: datetime) -> None:
        super().__init__(
            f"contract {contract_id}: evaluation at {stamp(at)} is before its "
            f"latest case move or firing at {stamp(latest)}; evaluate at "
            f"{stamp(latest)} or later"
        )
        self.contract_id = contract_id
        self.at = at
        self.latest = latest


@dataclass(frozen=True, slots=True)
class Firing:
    """One rule that fired for one contract at one evaluation time."""

    firing_id: str
    rule: Rule
    contract_id: str
    at: datetime
    signals: tuple[Signal, ...]  # the signals the rule's condition named
    facts: LoanFacts
    evidence: Evidence

    @property
    def level(self) -> Level:
        return self.rule.level

    def to_record(self) -> dict[str, Any]:
        return {
            "firing_id": self.firing_id,
            "rule": self.rule.rule_id,
            "contract_id": self.contract_id,
            "at": stamp(self.at),
            "level": self.rule.level.value,
            "dpd": self.facts.dpd,
            "bucket": self.facts.bucket,
            "overdue_amount": str(self.facts.overdue_amount),
            "signals": [signal.to_record() for signal in self.signals],
            "actions": {
                "case": self.rule.case,
                "messages": list(self.rule.messages),
                "work_order": self.rule.work_order,
                "immobilize": self.rule.immobilize,
            },
            "evidence": self.evidence.to_record(),
        }


def loan_facts(contract: Contract, ledger: LedgerState) -> LoanFacts:
    """Return what the rules read of a contract's ledger."""
    unpaid = [i for i in ledger.installments if i.amount_unpaid > 0]
    upcoming = [i for i in unpaid if i.due_date >= ledger.on]
    overdue = sum((i.amount_unpaid for i in ledger.overdue), ZERO)
    return LoanFacts(
        contract_id=contract.contract_id,
        dpd=ledger.dpd,
        bucket=ledger.bucket,
        contract_state=contract.state.value,
        overdue_amount=overdue + ledger.penalty_outstanding,
        days_to_due=(upcoming[0].due_date - ledger.on).days if upcoming else None,
        # One payment pays several components; name each payment once.
        payments=tuple(dict.fromkeys(a.payment_id for a in ledger.allocations)),
    )


def evaluate(
    rules: Rules, facts: LoanFacts, view: Observations, now: datetime
) -> list[Firing]:
    """Return the firings of every matching rule, in rule-file order."""
    signals = compute_signals(view, now, rules.signal_settings)
    firings = []
    for rule in rules.matching(facts, signals):
        named = rule.condition.signals | rule.condition.any_signals
        behind = tuple(s for s in signals if s.name in named)
        evidence = Evidence(payments=facts.payments)
        for signal in behind:
            evidence = evidence.merge(signal.evidence)
        firing_id = f"{facts.contract_id}:{rule.rule_id}:{stamp(now)}"
        firings.append(
            Firing(firing_id, rule, facts.contract_id, now, behind, facts, evidence)
        )
    return firings


@dataclass
class RiskEngine:
    """Applies firings to cases, messages and actions, recording each step."""

    repository: RiskRepository
    center: MessageCenter
    rules: Rules
    pool: CollectorPool | None = None
    # device id -> protocol, for immobilize commands
    protocols: Mapping[str, str] = field(default_factory=lambda: EMPTY)

    def run(
        self,
        contract: Contract,
        history: LoanHistory,
        view: Observations,
        now: datetime,
        business_date: date | None = None,
    ) -> list[Firing]:
        """Evaluate one contract at `now` and apply what fires.

        The ledger is taken on `business_date` when given (the date an operator
        named), else on the borrower's local date at `now`.
        """
        latest = self.last_evaluated(contract.contract_id)
        if latest is not None and now < latest:
            # Out-of-order input (a late fix on the bus, a back-dated run)
            # must not rewrite a case with the ledger of an earlier date.
            log.warning(
                "%s; nothing changed",
                BackdatedEvaluationError(contract.contract_id, now, latest),
            )
            return []
        on = business_date or contract.borrower.local_date(now)
        ledger = compute_ledger(contract, history, on)
        facts = loan_facts(contract, ledger)
        firings = evaluate(self.rules, facts, view, now)
        case = self.repository.get_case(contract.contract_id)
        case = self._close_if_cleared(case, ledger, facts, firings, now)
        for firing in firings:
            self.repository.add_firing(firing.to_record())
            case = self._escalate(case, contract, firing, view)
            self._queue_messages(contract, firing, facts)
            self._open_actions(contract, firing, view)
        if case is not None:
            self.repository.save_case(case)
        return firings

    def last_evaluated(self, contract_id: str) -> datetime | None:
        """Return the time of the contract's latest case move or firing, if any."""
        return self.latest_times({contract_id}).get(contract_id)

    def latest_times(self, contract_ids: Set[str]) -> dict[str, datetime]:
        """Return the latest case move or firing time of each listed contract
        that has one, reading the firings once."""
        latest: dict[str, datetime] = {}

        def note(contract_id: str, at: datetime) -> None:
            if contract_id not in latest or at > latest[contract_id]:
                latest[contract_id] = at

        for contract_id in contract_ids:
            case = self.repository.get_case(contract_id)
            if case is not None and case.history:
                note(contract_id, max(change.at for change in case.history))
        for record in self.repository.firings():
            fired_for = record.get("contract_id")
            if (
                isinstance(fired_for, str)
                and fired_for in contract_ids
                and "at" in record
            ):
                note(fired_for, parse_time(record["at"], "at"))
        return latest

    def _close_if_cleared(
        self,
        case: Case | None,
        ledger: LedgerState,
        facts: LoanFacts,
        firings: Sequence[Firing],
        now: datetime,
    ) -> Case | None:
        if case is None or case.is_closed or not case.history:
            return case
        if facts.dpd > 0 or facts.overdue_amount > 0:
            return case
        if any(firing.rule.case == CaseState.PRE_DUE.value for firing in firings):
            return case  # the reminder's installment is still unpaid
        # Close only on money the ledger applied to installments due by its
        # date. Without such a payment, zero arrears mean nothing fell due yet.
        due = {i.number for i in ledger.installments if i.due_date <= ledger.on}
        clearing = tuple(
            dict.fromkeys(
                a.payment_id for a in ledger.allocations if a.installment in due
            )
        )
        if not clearing:
            return case
        reason = "arrears cleared by payments " + ", ".join(clearing[-3:])
        return apply_case_event(
            case, CaseEvent.CLEAR_ARREARS, actor="ledger", at=now, reason=reason
        )

    def _escalate(
        self, case: Case | None, contract: Contract, firing: Firing, view: Observations
    ) -> Case | None:
        if firing.rule.case is None:
            return case
        if case is None or case.is_closed:
            case = Case(
                case_id=f"{contract.contract_id}@{stamp(firing.at)}",
                contract_id=contract.contract_id,
                # The borrower's time zone is the region collectors are listed by.
                region=contract.borrower.time_zone,
            )
        steps = escalation_steps(case, CaseState(firing.rule.case))
        if not steps:
            return case
        reason = f"rule {firing.rule.rule_id} at DPD {firing.facts.dpd}"
        if firing.signals:
            reason += ": " + ", ".join(signal.name for signal in firing.signals)
        for event in steps:
            case = apply_case_event(
                case,
                event,
                actor=f"rule:{firing.rule.rule_id}",
                at=firing.at,
                reason=reason,
                **self._assignment(case, event, view),
            )
        return replace(case, firings=(*case.firings, firing.firing_id))

    def _assignment(
        self, case: Case, event: CaseEvent, view: Observations
    ) -> dict[str, Any]:
        if event is CaseEvent.ASSIGN_COLLECTION and self.pool is not None:
            return {"collector": self.pool.assign(case.region)}
        if event is CaseEvent.OUTSOURCE and self.rules.agencies:
            agency = self.rules.agencies[0]
            return {"agency": agency.name, "commission_rate": agency.commission_rate}
        if event is CaseEvent.ORDER_REPOSSESSION:
            return {"repossession": repossession_brief(view)}
        return {}

    def _queue_messages(
        self, contract: Contract, firing: Firing, facts: LoanFacts
    ) -> None:
        variables = {
            "name": contract.borrower.name,
            "contract_id": contract.contract_id,
            "plate": contract.vehicle.plate or contract.vehicle.vin,
            "dpd": facts.dpd,
            "bucket": facts.bucket,
            "overdue_amount": f"{facts.overdue_amount:.2f}",
            "days_to_due": "" if facts.days_to_due is None else facts.days_to_due,
        }
        for template_id in firing.rule.messages:
            template = self.rules.templates[template_id]
            request = MessageRequest(
                borrower_id=contract.borrower.id_number,
                phone=contract.borrower.phone,
                time_zone=contract.borrower.time_zone,
                channel=template.channel,
                template_id=template_id,
                template_text=template.text,
                variables=variables,
                dedup_key=f"{contract.contract_id}:{template_id}",
                evidence={
                    "firing_id": firing.firing_id,
                    **firing.evidence.to_record(),
                },
            )
            self.center.enqueue(request, firing.at)

    def _open_actions(
        self, contract: Contract, firing: Firing, view: Observations
    ) -> None:
        rule = firing.rule
        if rule.work_order is not None:
            order_id = f"{contract.contract_id}:{rule.rule_id}"
            if not any(o.order_id == order_id for o in self.repository.work_orders()):
                self.repository.save_work_order(
                    WorkOrder(
                        order_id,
                        contract.contract_id,
                        view.vehicle_id,
                        rule.work_order,
                        firing.at,
                        {"firing_id": firing.firing_id, **firing.evidence.to_record()},
                    )
                )
        if rule.immobilize:
            self._request_immobilize(contract, firing, view)

    def _request_immobilize(
        self, contract: Contract, firing: Firing, view: Observations
    ) -> None:
        open_ones = [
            r
            for r in self.repository.immobilize_requests()
            if r.contract_id == contract.contract_id
            and r.status in {ImmobilizeStatus.PENDING_APPROVAL, ImmobilizeStatus.HELD}
        ]
        devices = view.device_ids()
        if open_ones or not devices:
            return
        device = devices[0]
        self.repository.save_immobilize(
            ImmobilizeRequest(
                request_id=f"{contract.contract_id}@{stamp(firing.at)}",
                contract_id=contract.contract_id,
                device_id=device,
                protocol=self.protocols.get(device, "gt06"),
                requested_by=f"rule:{firing.rule.rule_id}",
                requested_at=firing.at,
                reason=firing.firing_id,
            )
        )


def repossession_brief(view: Observations, recent: int = 5) -> dict[str, Any]:
    """Return the last known position and the most recent stops, for the field team."""
    valid = [fix for fix in view.fixes if fix.valid]
    if not valid:
        return {"last_position": None, "recent_stops": []}
    last = valid[-1]
    stops = find_stops(valid, PlaceSettings())[-recent:]
    return {
        "last_position": {
            "fix": fix_ref(last),
            "longitude": last.longitude,
            "latitude": last.latitude,
        },
        "recent_stops": [
            {
                "longitude": round(stop.longitude, 6),
                "latitude": round(stop.latitude, 6),
                "start": stamp(stop.start),
                "end": stamp(stop.end),
            }
            for stop in stops
        ],
    }
