"""Loan ledger: contracts, schedules, payments, overdue, penalty and repurchase."""
