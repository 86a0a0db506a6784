"""Loan ledger: contracts, schedules, payments, overdue, penalty and repurchase.

The package is pure domain code with no database driver. The ledger of a
contract is recomputed from its event history on every call
(`compute_ledger`), so payments, reversals and reductions are only ever
appended. Money is `decimal.Decimal` throughout; a float raises TypeError.
"""

from postloan.loans.contracts import (
    Borrower,
    Contract,
    ContractEvent,
    ContractState,
    StateChange,
    TransitionError,
    Vehicle,
    apply_event,
)
from postloan.loans.dates import DayCount
from postloan.loans.history import Closure, ClosureKind, LoanHistory
from postloan.loans.ledger import LedgerState, bucket_for, compute_ledger
from postloan.loans.payments import Payment, Reversal
from postloan.loans.policy import LoanPolicy, PolicyError
from postloan.loans.quotes import Quote, QuoteError, quote_repurchase, quote_settlement
from postloan.loans.reductions import Decision, Reduction, ReductionError
from postloan.loans.schedule import Installment, LoanTerms, Method, build_schedule
from postloan.loans.workflow import (
    decide_reduction,
    execute_repurchase,
    execute_settlement,
    reconcile_state,
)

__all__ = [
    "Borrower",
    "Closure",
    "ClosureKind",
    "Contract",
    "ContractEvent",
    "ContractState",
    "DayCount",
    "Decision",
    "Installment",
    "LedgerState",
    "LoanHistory",
    "LoanPolicy",
    "LoanTerms",
    "Method",
    "Payment",
    "PolicyError",
    "Quote",
    "QuoteError",
    "Reduction",
    "ReductionError",
    "Reversal",
    "StateChange",
    "TransitionError",
    "Vehicle",
    "apply_event",
    "bucket_for",
    "build_schedule",
    "compute_ledger",
    "decide_reduction",
    "execute_repurchase",
    "execute_settlement",
    "quote_repurchase",
    "quote_settlement",
    "reconcile_state",
]
