"""Logging filters: rate-limit repeated messages and redact secrets and phones.

Both are `logging.Filter` objects for handlers, so they see records of every
logger. `install_filters` adds them to the root logger's handlers; the entry
point that configures logging calls it once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from postloan.notify import mask_phone

# Chinese mobile numbers (11 digits from 13x to 19x, GB/T 13433 numbering)
# with an optional +86, and other E.164 numbers written with a leading "+".
# A 15-digit IMEI is not matched, because the digit run must end after 11.
_PHONE = re.compile(r"(?<![\d+])(?:\+?86)?1[3-9]\d{9}(?!\d)|\+\d{8,15}(?!\d)")
_SECRET = re.compile(
    r"(?i)(bearer\s+|authorization:\s*\S+\s+|password=|token=)[^\s&,;\"']+"
)


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Pass `burst` equal records per logger and level every `interval_s`.

    Records beyond that are dropped and counted, and the first record of the
    next interval reports how many were dropped. Records are equal when their
    formatted messages are, so a login of each device passes while one
    device's repeated decode error is limited. At most `max_keys` messages
    are tracked; past that the table is cleared.
    """

    def __init__(
        self,
        burst: int = 5,
        interval_s: float = 60.0,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval_s:
            if len(self._windows) >= self.max_keys:
                self._windows.clear()
            self._windows[key] = _Window(now, passed=1)
            if window is not None and window.suppressed:
                record.msg = (
                    f"{record.getMessage()} ({window.suppressed} similar messages "
                    f"suppressed in the previous {self.interval_s:.0f} s)"
                )
                record.args = None
            return True
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.suppressed += 1
        return False


class RedactFilter(logging.Filter):
    """Mask bearer tokens, passwords and phone numbers in formatted messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET.sub(lambda m: m.group(1) + "[redacted]", message)
        redacted = _PHONE.sub(lambda m: mask_phone(m.group(0)), redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_filters(logger: logging.Logger | None = None) -> None:
    """Add a RedactFilter and a RepeatFilter to every handler of `logger` (root)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        kinds = {type(f) for f in handler.filters}
        if RedactFilter not in kinds:
            handler.addFilter(RedactFilter())
        if RepeatFilter not in kinds:
            handler.addFilter(RepeatFilter())
