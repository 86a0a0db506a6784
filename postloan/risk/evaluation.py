"""Evaluate one contract over a store: shared by `postloan risk evaluate` and
the bus risk role.

Cases, firings and message tasks go to a state folder (`JsonRiskRepository`
and `JsonTaskRepository`), and messages to ``outbox.jsonl`` in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from postloan.loans import Contract, LoanHistory
from postloan.notify import JsonTaskRepository, LogFileProvider, MessageCenter
from postloan.risk.cases import CollectorPool
from postloan.risk.engine import Firing, RiskEngine
from postloan.risk.observe import observe
from postloan.risk.repository import JsonRiskRepository
from postloan.risk.rules import Rules
from postloan.risk.signals import FenceInfo

LOOKBACK_DAYS = 14  # nights_away looks back 7 nights; learning home needs more


def open_engine(
    rules: Rules, state: Path, protocols: Mapping[str, str]
) -> tuple[RiskEngine, MessageCenter]:
    """Return an engine and its message center over the state folder `state`."""
    center = MessageCenter(
        JsonTaskRepository(state),
        {
            channel: LogFileProvider(state / "outbox.jsonl")
            for channel in ("sms", "call")
        },
    )
    repository = JsonRiskRepository(state)
    pool = None
    if rules.collectors:
        # The rotation lives in the state folder, so runs take turns.
        pool = CollectorPool(rules.collectors, rules.regions, repository.rotation())
    engine = RiskEngine(repository, center, rules, pool, protocols)
    return engine, center


def evaluate_contract(
    engine: RiskEngine,
    store: Any,
    contract: Contract,
    history: LoanHistory,
    now: datetime,
    *,
    fences: Mapping[str, FenceInfo],
    until: datetime | None = None,
    business_date: date | None = None,
) -> list[Firing]:
    """Evaluate one contract at `now` over its devices' last LOOKBACK_DAYS.

    The records read are those in [now - LOOKBACK_DAYS, `until`), `until`
    defaulting to `now`. `store` is a `postloan.store.Store`.
    """
    view = observe(
        store,
        contract.vehicle.vin,
        contract.devices,
        now - timedelta(days=LOOKBACK_DAYS),
        now if until is None else until,
        fences=fences,
        time_zone=contract.borrower.time_zone,
    )
    return engine.run(contract, history, view, now, business_date)


def fence_info(path: Path | None, id_property: str = "id") -> dict[str, FenceInfo]:
    """Return the role and kind of each fence of a GeoJSON file, by fence id."""
    if path is None:
        return {}
    from postloan.geofence import load_fences

    return {
        fence.id: FenceInfo(fence.role.value, fence.properties.get("kind"))
        for fence in load_fences(path, id_property=id_property)
    }
