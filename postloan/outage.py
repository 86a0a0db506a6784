"""Log a repeated operation's first failure and its recovery, not every retry."""

from __future__ import annotations

import logging


class OutageLog:
    """One warning when `operation` starts failing, one info line when it works again.

    A poll that retries every second through a database outage would
    otherwise write a line per try.
    """

    def __init__(self, logger: logging.Logger, operation: str) -> None:
        self.logger = logger
        self.operation = operation
        self.failing = False

    def failed(self, error: BaseException) -> None:
        if not self.failing:
            self.logger.warning("%s failed, retrying: %s", self.operation, error)
        self.failing = True

    def succeeded(self) -> None:
        if self.failing:
            self.logger.info("%s recovered", self.operation)
        self.failing = False
