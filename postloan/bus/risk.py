"""The risk role: evaluate the contracts of devices whose records arrive.

`RiskConsumer` evaluates a contract with the code of ``postloan risk
evaluate`` (`postloan.risk.evaluation`), over the store's last 14 days of
the contract's devices, and applies what fires: cases, firings, message
tasks, work orders and immobilize requests in ``[api] state_dir``. It runs
the same way in a ``postloan worker risk`` process and, through
`postloan.bus.local`, in the gateway process.

A contract is evaluated at once on an alarm that a risk signal reads
(`RISK_EVENT_KINDS`), and on new fixes at most once per ``[risk]
fix_interval_s`` of fix time. The evaluation time is the record's time,
capped at the wall clock, so a replay evaluates each moment as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from postloan.bus.worker import LastSeen
from postloan.config import Config
from postloan.loans.jsonledger import JsonLedger, LedgerFileError
from postloan.model import DeviceEvent, Fix
from postloan.risk.engine import Firing
from postloan.risk.evaluation import evaluate_contract, fence_info, open_engine
from postloan.risk.rules import DEFAULT_RULES, load_rules
from postloan.risk.signals import (
    LOW_BATTERY_ALARMS,
    POWER_CUT_ALARMS,
    TAMPER_ALARMS,
)
from postloan.times import format_time

log = logging.getLogger(__name__)

# The device events that risk signals read. Jamming is read from a run of
# invalid fixes, so the fix evaluation finds it.
RISK_EVENT_KINDS = POWER_CUT_ALARMS | TAMPER_ALARMS | LOW_BATTERY_ALARMS
# Device protocols (for immobilize commands) are reread from the store after
# this many seconds.
_PROTOCOLS_MAX_AGE_S = 60.0
# Event keys remembered to drop repeated messages.
_SEEN_EVENTS = 10_000
_LOCK_FILE = ".risk.lock"


class ContractIndex:
    """Open contracts by device id, from a JSON ledger folder.

    The index is rebuilt when the folder's modification time changes, which
    every save of a contract does (it renames a new file into the folder).
    """

    def __init__(self, ledger: JsonLedger) -> None:
        self.ledger = ledger
        self._stamp: int | None = None
        self._by_device: dict[str, list[str]] = {}

    def refresh(self) -> None:
        try:
            stamp: int | None = self.ledger.folder.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and stamp is not None:
            return
        by_device: dict[str, list[str]] = {}
        try:
            contracts = self.ledger.load_all()
        except LedgerFileError as exc:
            log.error(
                "rereading ledger %s failed, keeping the old contract index: %s",
                self.ledger.root,
                exc,
            )
            return
        for contract_id, (contract, _) in contracts.items():
            if contract.is_closed:
                continue
            for device_id in contract.devices:
                by_device.setdefault(device_id, []).append(contract_id)
        self._by_device = by_device
        self._stamp = stamp

    def contracts_of(self, device_id: str) -> list[str]:
        """Return the open contracts that list `device_id`, as of the last refresh."""
        return self._by_device.get(device_id, [])


class ContractEvaluator:
    """Evaluate one contract at a time against the store, as the CLI does.

    Methods block (files and the store): call them from a worker thread.
    """

    def __init__(self, config: Config, store: Any) -> None:
        self.store = store
        self.ledger = JsonLedger(Path(config.api.ledger_dir))
        self.state = Path(config.api.state_dir)
        self.rules = load_rules(
            Path(config.risk.rules) if config.risk.rules else DEFAULT_RULES
        )
        fences = Path(config.geofence.file) if config.geofence.file else None
        self.fences = fence_info(fences, config.geofence.id_property)
        self.index = ContractIndex(self.ledger)
        self._protocols: dict[str, str] = {}
        self._protocols_read = float("-inf")

    def evaluate(self, contract_id: str, at: datetime) -> list[Firing]:
        """Evaluate the contract at `at` over the records up to and including `at`."""
        try:
            contract, history = self.ledger.load(contract_id)
        except LedgerFileError as exc:
            log.error("risk evaluation of contract %s skipped: %s", contract_id, exc)
            return []
        if contract.is_closed:
            return []
        with _state_lock(self.state):
            engine, center = open_engine(
                self.rules, self.state, self._device_protocols(contract.devices)
            )
            firings = evaluate_contract(
                engine,
                self.store,
                contract,
                history,
                at,
                fences=self.fences,
                until=at + timedelta(microseconds=1),
            )
            center.dispatch(at)
        return firings

    def _device_protocols(self, devices: Sequence[str]) -> dict[str, str]:
        stale = time.monotonic() - self._protocols_read > _PROTOCOLS_MAX_AGE_S
        if stale or any(device not in self._protocols for device in devices):
            self._protocols = {d.device_id: d.protocol for d in self.store.devices()}
            self._protocols_read = time.monotonic()
        return self._protocols


@contextlib.contextmanager
def _state_lock(state: Path) -> Iterator[None]:
    """Hold an exclusive lock on the state folder across processes of one host.

    The JSON repositories allow one writer at a time, and two risk workers may
    evaluate one contract whose devices fall in partitions of both.
    """
    state.mkdir(parents=True, exist_ok=True)
    with (state / _LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class RiskConsumer:
    """Evaluate the contracts of devices on new fixes (debounced) and risk alarms."""

    def __init__(
        self, evaluator: ContractEvaluator, *, fix_interval_s: float = 300.0
    ) -> None:
        self.evaluator = evaluator
        self.fix_interval = timedelta(seconds=fix_interval_s)
        self.last_seen = LastSeen()
        self.latest: dict[str, Fix] = {}
        self.evaluations = 0
        self.fired = 0
        self._evaluated: dict[str, datetime] = {}
        self._due: dict[str, datetime] = {}
        self._seen_events: OrderedDict[tuple[str, datetime, str], None] = OrderedDict()

    async def handle(self, fixes: Sequence[Fix]) -> None:
        await asyncio.to_thread(self._handle_fixes, fixes)

    async def handle_events(self, events: Sequence[DeviceEvent]) -> None:
        await asyncio.to_thread(self._handle_events, events)

    def _handle_fixes(self, fixes: Sequence[Fix]) -> None:
        fresh = self.last_seen.fresh(fixes)
        if fresh:
            self.evaluator.index.refresh()
        for fix in fresh:
            self.latest[fix.device_id] = fix
            for contract_id in self.evaluator.index.contracts_of(fix.device_id):
                last = self._evaluated.get(contract_id)
                if last is None or fix.time - last >= self.fix_interval:
                    self._schedule(contract_id, fix.time)
        self._evaluate_due()

    def _handle_events(self, events: Sequence[DeviceEvent]) -> None:
        alarms = [e for e in events if e.kind in RISK_EVENT_KINDS and self._new(e)]
        if alarms:
            self.evaluator.index.refresh()
        for event in alarms:
            for contract_id in self.evaluator.index.contracts_of(event.device_id):
                self._schedule(contract_id, event.time)
        self._evaluate_due()

    def _schedule(self, contract_id: str, at: datetime) -> None:
        self._due[contract_id] = max(at, self._due.get(contract_id, at))

    def _evaluate_due(self) -> None:
        """Evaluate the scheduled contracts, each leaving the schedule once done.

        A contract whose evaluation raises (the store is down, say) stays
        scheduled, so the retry of the batch evaluates it even though its
        fixes and alarms are no longer new.
        """
        while self._due:
            contract_id, at = next(iter(self._due.items()))
            self._evaluate(contract_id, at)
            del self._due[contract_id]

    def _new(self, event: DeviceEvent) -> bool:
        key = (event.device_id, event.time, event.kind)
        if key in self._seen_events:
            return False
        self._seen_events[key] = None
        if len(self._seen_events) > _SEEN_EVENTS:
            self._seen_events.popitem(last=False)
        return True

    def _evaluate(self, contract_id: str, at: datetime) -> None:
        # A device clock ahead of the server's must not move evaluations ahead.
        at = min(at, datetime.now(UTC))
        firings = self.evaluator.evaluate(contract_id, at)
        previous = self._evaluated.get(contract_id)
        self._evaluated[contract_id] = at if previous is None else max(previous, at)
        self.evaluations += 1
        self.fired += len(firings)
        if firings:
            log.info(
                "contract %s evaluated at %s: %s",
                contract_id,
                format_time(at),
                ", ".join(firing.rule.rule_id for firing in firings),
            )


def build_risk_consumer(config: Config, store: Any) -> RiskConsumer:
    """Return the risk consumer of ``[risk]``, ``[api]`` folders and ``[geofence]``."""
    return RiskConsumer(
        ContractEvaluator(config, store), fix_interval_s=config.risk.fix_interval_s
    )
