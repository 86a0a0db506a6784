"""``postloan loans``: schedules, imports and contract status."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``loans`` command group (filled in by the loans package)."""
