"""``postloan risk evaluate`` and ``postloan cases list``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from postloan.loans import Contract
from postloan.loans.jsonledger import JsonLedger
from postloan.risk.engine import BackdatedEvaluationError, RiskEngine
from postloan.risk.evaluation import evaluate_contract, fence_info, open_engine
from postloan.risk.evidence import stamp
from postloan.risk.repository import JsonRiskRepository
from postloan.risk.rules import DEFAULT_RULES, load_rules


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``risk`` and ``cases`` commands to the root parser."""
    risk = sub.add_parser("risk", help="evaluate risk rules").add_subparsers(
        dest="risk_command", required=True
    )
    run = risk.add_parser("evaluate", help="run the rules over the stored state")
    run.add_argument(
        "--on",
        type=date.fromisoformat,
        required=True,
        help="business date; evaluated at the end of the day, UTC",
    )
    run.add_argument("--store", required=True, help="store URL or SQLite path")
    run.add_argument("--ledger", type=Path, required=True, help="loan ledger folder")
    run.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="rule file")
    run.add_argument(
        "--state",
        type=Path,
        required=True,
        help="folder of cases, firings and message tasks",
    )
    run.add_argument(
        "--fences",
        type=Path,
        help="GeoJSON fences, for the role and kind of fence events",
    )
    run.set_defaults(handler=_evaluate)

    cases = sub.add_parser("cases", help="post-loan cases").add_subparsers(
        dest="cases_command", required=True
    )
    listing = cases.add_parser("list", help="print cases as JSON Lines")
    listing.add_argument("--state", type=Path, required=True)
    listing.add_argument("--status", help="only cases in this state, e.g. collection")
    listing.set_defaults(handler=_list_cases)


def _evaluate(args: argparse.Namespace) -> int:
    from postloan.store import StoreNotFoundError, open_existing_store

    if not args.ledger.is_dir():
        print(
            f"postloan risk evaluate: ledger not found: {args.ledger} is not a "
            "folder; pass the --ledger folder that `postloan loans import` wrote",
            file=sys.stderr,
        )
        return 2
    now = datetime.combine(args.on + timedelta(days=1), time(0), UTC)
    rules = load_rules(args.rules)
    fences = fence_info(args.fences)
    try:
        store = open_existing_store(args.store, migrate=True)
    except StoreNotFoundError as exc:
        print(f"postloan risk evaluate: {exc}", file=sys.stderr)
        return 2
    with store:
        protocols = {device.device_id: device.protocol for device in store.devices()}
        engine, center = open_engine(rules, args.state, protocols)
        loans = [
            (contract, history)
            for contract, history in JsonLedger(args.ledger).load_all().values()
            if not contract.is_closed
        ]
        stale = _backdated(engine, [contract for contract, _ in loans], now)
        if stale:
            for error in stale:
                print(f"postloan risk evaluate: {error}", file=sys.stderr)
            print(
                f"postloan risk evaluate: --on {args.on} is evaluated at "
                f"{stamp(now)}; nothing was changed",
                file=sys.stderr,
            )
            return 2
        for contract, history in loans:
            firings = evaluate_contract(
                engine,
                store,
                contract,
                history,
                now,
                fences=fences,
                business_date=args.on,
            )
            for firing in firings:
                print(json.dumps(firing.to_record(), ensure_ascii=False))
    center.dispatch(now)
    return 0


def _backdated(
    engine: RiskEngine, contracts: list[Contract], now: datetime
) -> list[BackdatedEvaluationError]:
    """Return an error for each contract whose risk state is later than `now`."""
    latest = engine.latest_times({contract.contract_id for contract in contracts})
    return [
        BackdatedEvaluationError(contract_id, now, at)
        for contract_id, at in sorted(latest.items())
        if now < at
    ]


def _list_cases(args: argparse.Namespace) -> int:
    for case in JsonRiskRepository(args.state).cases():
        if args.status is None or case.state.value == args.status:
            print(json.dumps(case.to_record(), ensure_ascii=False))
    return 0
