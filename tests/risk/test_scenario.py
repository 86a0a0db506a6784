"""End to end: missed installment, risk place, power cut, silence, payment.

The fixes of a real Porto taxi trip run through the real FenceEngine into a
real SQLite store; the risk engine reads them back from the store.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from postloan.geofence import FenceEngine, FenceIndex, Role, circle_fence
from postloan.loans import Contract, LoanHistory, Payment
from postloan.model import DeviceEvent, Fix
from postloan.notify import LogFileProvider, MemoryTaskRepository, MessageCenter
from postloan.risk import (
    DEFAULT_RULES,
    CaseState,
    CollectorPool,
    FenceInfo,
    MemoryRiskRepository,
    RiskEngine,
    load_rules,
)
from postloan.risk.observe import observe
from postloan.risk.places import haversine_m
from postloan.simulators import Trajectory
from postloan.store import open_store

DEVICE = "TRK1"
FENCE = "market-1"


def _fixes(trip: Trajectory) -> list[Fix]:
    moving = [
        Fix(
            DEVICE,
            p.time,
            p.latitude,
            p.longitude,
            speed_kmh=p.speed_kmh or 0.0,
            attributes={"acc": True},
        )
        for p in trip.points
    ]
    last = trip.points[-1]
    parked = [
        Fix(
            DEVICE,
            last.time + timedelta(minutes=minute),
            last.latitude,
            last.longitude,
            attributes={"acc": False},
        )
        for minute in range(1, 21)
    ]
    return moving + parked


def test_scenario_missed_installment_risk_place_power_cut(
    tmp_path: Path, taxi_trip: Trajectory, contract: Contract
) -> None:
    history = LoanHistory()
    end = taxi_trip.points[-1]
    fence = dataclasses.replace(
        circle_fence(FENCE, end.longitude, end.latitude, 150.0, role=Role.RISK),
        properties={"kind": "second_hand_market"},
    )
    fences = {FENCE: FenceInfo("risk", "second_hand_market")}
    fixes = _fixes(taxi_trip)
    fence_engine = FenceEngine(FenceIndex([fence]))
    store = open_store(str(tmp_path / "track.db"))
    store.write_fixes(fixes)
    store.write_fence_events(fence_engine.process_many(fixes))
    power_cut = DeviceEvent(
        DEVICE,
        fixes[-1].time + timedelta(seconds=30),
        "alarm:power_cut",
        {"alarm": "power_cut"},
    )
    store.write_device_events([power_cut])
    repository = MemoryRiskRepository()
    tasks = MemoryTaskRepository()
    outbox = tmp_path / "outbox.jsonl"
    center = MessageCenter(
        tasks, {"sms": LogFileProvider(outbox), "call": LogFileProvider(outbox)}
    )
    rules = load_rules(DEFAULT_RULES)
    engine = RiskEngine(
        repository, center, rules, CollectorPool(rules.collectors, rules.regions)
    )

    def run(at: datetime, history: LoanHistory = history) -> list[str]:
        view = observe(
            store,
            "V1",
            [DEVICE],
            at - timedelta(days=14),
            at + timedelta(microseconds=1),
            fences=fences,
            time_zone="Europe/Lisbon",
        )
        return [f.rule.rule_id for f in engine.run(contract, history, view, at)]

    def case_state() -> CaseState:
        case = repository.get_case("C-1")
        assert case is not None
        return case.state

    def new_templates(before: int) -> list[str]:
        return [t.template_id for t in tasks.all()[before:]]

    # Three days before the first due date: a pre-due reminder.
    fired = run(datetime(2014, 9, 20, 10, tzinfo=UTC))

    assert fired == ["pre-due-reminder"]
    assert case_state() is CaseState.PRE_DUE
    assert new_templates(0) == ["pre_due_sms"]

    # The installment was missed: overdue reminder at DPD 4.
    fired = run(datetime(2014, 9, 27, 10, tzinfo=UTC))

    assert fired == ["overdue-reminder"]
    assert case_state() is CaseState.OVERDUE
    assert new_templates(1) == ["overdue_sms"]

    # The car enters the second-hand market fence: the first fix of the
    # confirming run within radius minus the 50 m hysteresis margin.
    inside = [
        haversine_m(end.longitude, end.latitude, f.longitude, f.latitude) <= 100.0
        for f in fixes
    ]
    last_outside = max(i for i, flag in enumerate(inside) if not flag)
    enter = fixes[last_outside + 1]
    stored_fence_events = store.fence_events(DEVICE)[-2:]
    count = len(tasks.all())
    firings = engine.run(
        contract,
        history,
        observe(
            store,
            "V1",
            [DEVICE],
            enter.time - timedelta(days=14),
            enter.time + timedelta(seconds=1),
            fences=fences,
            time_zone="Europe/Lisbon",
        ),
        enter.time,
    )
    place = next(f for f in firings if f.rule.rule_id == "overdue-at-risk-place")

    assert [e.event for e in stored_fence_events] == ["enter", "dwell"]
    assert stored_fence_events[0].time == enter.time
    assert place.signals[0].name == "risk_place_entered"
    assert place.signals[0].since == enter.time
    assert place.signals[0].details["kind"] == "second_hand_market"
    assert place.evidence.fence_events == (
        f"TRK1@{enter.time.isoformat().replace('+00:00', 'Z')}#market-1:enter",
    )
    assert case_state() is CaseState.COLLECTION
    assert repository.get_case("C-1").collector == "lisbon-1"  # type: ignore[union-attr]
    # The daily overdue SMS repeats (de-duplicated for 24 h only), then the call.
    assert new_templates(count) == ["overdue_sms", "overdue_call"]

    # Ten minutes later it dwells there.
    dwell_time = stored_fence_events[1].time
    firings = engine.run(
        contract,
        history,
        observe(
            store,
            "V1",
            [DEVICE],
            dwell_time - timedelta(days=14),
            dwell_time + timedelta(seconds=1),
            fences=fences,
            time_zone="Europe/Lisbon",
        ),
        dwell_time,
    )
    dwell = [s for f in firings for s in f.signals if s.name == "risk_place_dwell"]

    assert dwell_time >= enter.time + timedelta(minutes=10)
    assert dwell[0].since == dwell_time

    # The tracker reports a power cut.
    count = len(tasks.all())
    firings = engine.run(
        contract,
        history,
        observe(
            store,
            "V1",
            [DEVICE],
            power_cut.time - timedelta(days=14),
            power_cut.time + timedelta(seconds=1),
            fences=fences,
            time_zone="Europe/Lisbon",
        ),
        power_cut.time,
    )
    cut = next(f for f in firings if f.rule.rule_id == "overdue-power-cut")

    assert cut.signals[0].name == "power_cut"
    assert cut.signals[0].since == power_cut.time
    assert (
        "TRK1@" + power_cut.time.isoformat().replace("+00:00", "Z") + "#alarm:power_cut"
        in cut.evidence.events
    )
    assert new_templates(count) == ["risk_call"]
    assert next(o.reason for o in repository.work_orders()).startswith("tracker power")

    # Silence: three parked heartbeats (3 h) after the power cut it is offline.
    silent_at = power_cut.time + timedelta(hours=3, minutes=5)
    firings = engine.run(
        contract,
        history,
        observe(
            store,
            "V1",
            [DEVICE],
            silent_at - timedelta(days=14),
            silent_at,
            fences=fences,
            time_zone="Europe/Lisbon",
        ),
        silent_at,
    )
    offline = [s for f in firings for s in f.signals if s.name == "offline"]
    case = repository.get_case("C-1")

    assert offline[0].since == power_cut.time + timedelta(hours=3)
    assert case is not None
    assert case.state is CaseState.REPOSSESSION
    assert case.agency == "default-agency"
    assert case.repossession["last_position"]["latitude"] == fixes[-1].latitude
    assert [c.to_state.value for c in case.history] == [
        "pre_due",
        "overdue",
        "collection",
        "outsourced",
        "repossession",
    ]

    # Paying the arrears, with the penalty, closes the case.
    first = contract.schedule[0]
    paid = history.with_payment(
        Payment(
            "BANK-1",
            "C-1",
            silent_at.date(),
            first.principal + first.interest + Decimal("20.00"),
        )
    )
    run(silent_at + timedelta(hours=1), paid)
    case = repository.get_case("C-1")

    assert case is not None
    assert case.state is CaseState.CLOSED
    assert case.history[-1].actor == "ledger"
    assert "BANK-1" in case.history[-1].reason
