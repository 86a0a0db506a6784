"""``postloan loans``: schedules, imports and contract status.

``postloan loans schedule`` prints one JSON object per installment (JSON
Lines) with ``n``, ``due_date``, ``payment``, ``principal``, ``interest`` and
``balance``, amounts as strings with two decimals.

``postloan loans import [CONTRACTS.csv|json] [--payments BANK.csv] --ledger
DIR`` adds contracts and bank payments to a JSON ledger directory. Each bad
row is reported on stderr with its row number, field and value. The good rows
are saved anyway, and the exit status is 1 when any row failed.

``postloan loans status CONTRACT --on DATE --ledger DIR`` prints one JSON
object with DPD, bucket, overdue amounts, penalty and the settlement and
repurchase quotes.

``postloan loans collections LIST.csv --on DATE --ledger DIR`` merges a
lender's overdue list and prints each difference from our ledger as JSON Lines.

Exit status 2 means unusable input: a bad option, an unreadable file or a
missing column.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from postloan.config import load_config
from postloan.loans.collection import merge_collection_list, read_collection_list
from postloan.loans.dates import DayCount, parse_date
from postloan.loans.history import HistoryError
from postloan.loans.importing import ContractImport, parse_annual_rate, read_contracts
from postloan.loans.jsonledger import JsonLedger, LedgerFileError
from postloan.loans.money import parse_money
from postloan.loans.payments import StatementImport, read_statement
from postloan.loans.policy import LoanPolicy, PolicyError
from postloan.loans.report import contract_status
from postloan.loans.rows import ImportFileError, RowIssue
from postloan.loans.schedule import MAX_TERM_MONTHS, LoanTerms, Method, build_schedule

Handler = Callable[[argparse.Namespace], int]


def _principal(text: str) -> Decimal:
    return parse_money(text, "principal")


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a parser so that its ValueError becomes an argparse usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _months(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_TERM_MONTHS:
        raise ValueError(f"invalid term {text!r}: expected 1 to {MAX_TERM_MONTHS}")
    return int(text)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``loans`` command group on the root command's subparsers."""
    loans = sub.add_parser(
        "loans", help="loan ledger: schedules, imports, DPD, penalty and quotes"
    )
    commands = loans.add_subparsers(dest="loans_command", required=True)
    _add_schedule(commands)
    _add_import(commands)
    _add_status(commands)
    _add_collections(commands)


def _add_schedule(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    schedule = commands.add_parser(
        "schedule", help="print a repayment schedule as JSON Lines"
    )
    schedule.add_argument(
        "--principal",
        required=True,
        type=_argument(_principal),
        help="loan amount, e.g. 100000.00",
    )
    schedule.add_argument(
        "--annual-rate",
        required=True,
        type=_argument(parse_annual_rate),
        help="annual interest rate as a fraction (0.12) or a percentage (12%%)",
    )
    schedule.add_argument(
        "--months",
        required=True,
        type=_argument(_months),
        help="term in monthly installments",
    )
    schedule.add_argument(
        "--method",
        required=True,
        choices=[m.value for m in Method],
        help="repayment method: annuity (equal installments), equal-principal, "
        "or balloon (interest only, all principal with the last installment)",
    )
    schedule.add_argument(
        "--first-due",
        required=True,
        type=_argument(parse_date),
        help="first due date, YYYY-MM-DD. Later due dates keep its day of month",
    )
    schedule.add_argument(
        "--day-count",
        choices=[d.value for d in DayCount],
        default="30/360",
        help="interest per period: 30/360 (default) charges the annual rate / 12, "
        "actual/365 and actual/360 count the days of each period",
    )
    schedule.add_argument(
        "--start-date",
        type=_argument(parse_date),
        help="disbursement date, start of the first period "
        "(default: one month before the first due date)",
    )
    schedule.set_defaults(handler=cmd_schedule)


def _add_import(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = commands.add_parser(
        "import",
        help="add contracts and bank payments to a JSON ledger directory",
    )
    load.add_argument(
        "contracts", nargs="?", type=Path, help="contracts as .csv or .json"
    )
    load.add_argument(
        "--payments",
        type=Path,
        help="bank-statement CSV: value_date, amount, contract_id, bank_reference",
    )
    _add_ledger_options(load, policy=False)
    load.add_argument(
        "--actor", default="import", help="name recorded in the contracts' history"
    )
    load.set_defaults(handler=cmd_import)


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status", help="print DPD, bucket, penalty and quotes of one contract"
    )
    status.add_argument("contract", help="contract id")
    _add_ledger_options(status)
    status.set_defaults(handler=cmd_status)


def _add_collections(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    merge = commands.add_parser(
        "collections",
        help="merge a lender's overdue list and print where it differs from ours",
    )
    merge.add_argument(
        "list",
        type=Path,
        help="CSV: contract_id, dpd, overdue_amount, collector, notes",
    )
    _add_ledger_options(merge)
    merge.set_defaults(handler=cmd_collections)


def _add_ledger_options(parser: argparse.ArgumentParser, policy: bool = True) -> None:
    parser.add_argument(
        "--ledger", required=True, type=Path, help="JSON ledger directory"
    )
    parser.add_argument(
        "--on",
        type=_argument(parse_date),
        help="business date, YYYY-MM-DD (default: today)",
    )
    if not policy:
        return
    parser.add_argument(
        "--policy",
        type=Path,
        help="TOML file whose [loans] table sets the ledger policy "
        "(default: the [loans] table of --config, else built-in defaults)",
    )


def _policy(args: argparse.Namespace) -> LoanPolicy:
    """Read --policy if given, else the [loans] table of the --config file."""
    path: Path | None = args.policy
    if path:
        return LoanPolicy.from_toml(path)
    return LoanPolicy.from_table(load_config(args.config).loans)


def _today(args: argparse.Namespace) -> date:
    on: date | None = args.on
    return on or datetime.now(UTC).date()


def _fail(command: str, message: object) -> int:
    print(f"postloan loans {command}: {message}", file=sys.stderr)
    return 2


def cmd_schedule(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the schedule as JSON Lines; return the exit status."""
    out = out or sys.stdout
    try:
        terms = LoanTerms(
            principal=args.principal,
            annual_rate=args.annual_rate,
            term_months=args.months,
            method=Method(args.method),
            first_due_date=args.first_due,
            day_count=DayCount(args.day_count),
            start_date=args.start_date,
        )
    except ValueError as exc:
        return _fail("schedule", exc)
    for installment in build_schedule(terms):
        out.write(json.dumps(installment.to_record()) + "\n")
    return 0


def _report_issues(source: str, issues: Sequence[RowIssue], label: str) -> None:
    for issue in issues:
        print(
            f"postloan loans import: {label}: {source} row {issue.row}, field "
            f"{issue.field}: {issue.message}",
            file=sys.stderr,
        )


def _import_contracts(
    path: Path, ledger: JsonLedger, actor: str, at: datetime
) -> ContractImport:
    existing = {cid: pair[0] for cid, pair in ledger.load_all().items()}
    result = read_contracts(path, existing=existing, actor=actor, at=at)
    # The ledger checks ids, VINs and devices again under its lock, because
    # another import may have stored a contract since `existing` was read.
    result = result.rejecting(ledger.insert(result.contracts))
    _report_issues(path.name, result.issues, "error")
    _report_issues(path.name, result.warnings, "warning")
    return result


def _import_payments(path: Path, ledger: JsonLedger, on: date) -> StatementImport:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"cannot read {path}: {exc}") from exc
    stored = ledger.load_all()
    known = {p.payment_id: p for _, h in stored.values() for p in h.payments}
    result = read_statement(text, contracts=stored, today=on, known=known)
    for contract_id in dict.fromkeys(p.contract_id for p in result.payments):
        contract, history = stored[contract_id]
        for payment in result.payments:
            if payment.contract_id == contract_id:
                history = history.with_payment(payment)
        ledger.save(contract, history)
    _report_issues(path.name, result.issues, "error")
    return result


def cmd_import(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Import contracts, then payments; return 1 if any row failed."""
    out = out or sys.stdout
    if args.contracts is None and args.payments is None:
        return _fail("import", "give a contracts file, --payments FILE or both")
    ledger = JsonLedger(args.ledger)
    summary: dict[str, int] = {}
    failed_rows = 0
    try:
        if args.contracts is not None:
            contracts = _import_contracts(
                args.contracts, ledger, args.actor, datetime.now(UTC)
            )
            summary["contracts_added"] = len(contracts.contracts)
            summary["contracts_already_known"] = len(contracts.duplicates)
            failed_rows += len({issue.row for issue in contracts.issues})
        if args.payments is not None:
            payments = _import_payments(args.payments, ledger, _today(args))
            summary["payments_added"] = len(payments.payments)
            summary["payments_already_known"] = len(payments.duplicates)
            failed_rows += len({issue.row for issue in payments.issues})
    except (ImportFileError, LedgerFileError, HistoryError) as exc:
        out.write(json.dumps(summary) + "\n")
        return _fail("import", exc)
    summary["rows_rejected"] = failed_rows
    out.write(json.dumps(summary) + "\n")
    return 1 if failed_rows else 0


def cmd_status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the status of one contract as one JSON object."""
    out = out or sys.stdout
    try:
        policy = _policy(args)
        contract, history = JsonLedger(args.ledger).load(args.contract)
    except (LedgerFileError, PolicyError, OSError) as exc:
        return _fail("status", exc)
    on = args.on or contract.borrower.local_date(datetime.now(UTC))
    status = contract_status(contract, history, on, policy)
    out.write(json.dumps(status, ensure_ascii=False) + "\n")
    return 0


def cmd_collections(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Merge an overdue list; print differences; return 1 if any row failed."""
    out = out or sys.stdout
    ledger = JsonLedger(args.ledger)
    try:
        policy = _policy(args)
        stored = ledger.load_all()
        text = args.list.read_text(encoding="utf-8-sig")
        contracts = {cid: pair[0] for cid, pair in stored.items()}
        rows, issues = read_collection_list(text, contracts)
    except (ImportFileError, LedgerFileError, PolicyError, OSError) as exc:
        return _fail("collections", exc)
    histories = {cid: pair[1] for cid, pair in stored.items()}
    merge = merge_collection_list(rows, contracts, histories, _today(args), policy)
    for contract in merge.contracts:
        ledger.save(contract, histories[contract.contract_id])
    for difference in merge.differences:
        out.write(json.dumps(difference.to_record(), ensure_ascii=False) + "\n")
    for issue in issues:
        print(
            f"postloan loans collections: error: {args.list.name} row {issue.row}, "
            f"field {issue.field}: {issue.message}",
            file=sys.stderr,
        )
    return 1 if issues else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loans`` on its own, as ``python -m postloan.loans.cli``."""
    parser = argparse.ArgumentParser(prog="postloan")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
