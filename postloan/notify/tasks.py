"""Message tasks, strict templates, phone masking and quiet hours."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from postloan.model import EMPTY
from postloan.times import format_local, format_time, parse_time


class TaskStatus(StrEnum):
    """Lifecycle of a message task."""

    QUEUED = "queued"  # waiting for its send time, quiet hours or a retry
    SENT = "sent"  # the provider accepted it
    DELIVERED = "delivered"  # the provider reported delivery
    UNDELIVERED = "undelivered"  # the provider reported a final failure
    FAILED = "failed"  # every attempt failed
    SUPPRESSED = "suppressed"  # the borrower opted out; kept for the audit


class TemplateError(KeyError):
    """A template refers to a variable that the request did not supply."""

    def __init__(self, template_id: str, variable: str) -> None:
        super().__init__(
            f"template {template_id!r}: variable {variable!r} is missing; "
            "pass it in the request's variables"
        )
        self.template_id = template_id
        self.variable = variable

    def __str__(self) -> str:
        return str(self.args[0])


def render(
    template_id: str,
    text: str,
    variables: Mapping[str, Any],
    time_zone: str | None = None,
) -> str:
    """Substitute ``$name`` and ``${name}``; a missing variable raises TemplateError.

    A datetime variable is written as wall-clock time in `time_zone` (the
    borrower's IANA zone), e.g. ``2026-01-31 16:00 CST``, or as UTC with
    ``Z`` when no zone is given.
    """
    shown = {
        name: _shown(value, time_zone) if isinstance(value, datetime) else value
        for name, value in variables.items()
    }
    try:
        return string.Template(text).substitute(shown)
    except KeyError as exc:
        raise TemplateError(template_id, str(exc.args[0])) from None


def _shown(value: datetime, time_zone: str | None) -> str:
    return format_time(value) if time_zone is None else format_local(value, time_zone)


_DIGITS = re.compile(r"\d")


def mask_phone(phone: str) -> str:
    """Mask all but the first 3 and last 4 digits: 13812348000 -> 138****8000.

    Numbers of 7 digits or fewer keep only their last 2 digits.
    """
    digits = _DIGITS.findall(phone)
    keep_head, keep_tail = (3, 4) if len(digits) > 7 else (0, 2)
    masked = len(digits) - keep_head - keep_tail
    return "".join(digits[:keep_head]) + "*" * masked + "".join(digits[-keep_tail:])


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local hours in which nothing is sent: from `start` until `end` next morning."""

    start: time = time(21, 0)
    end: time = time(8, 0)

    def release(self, now: datetime, time_zone: str) -> datetime:
        """Return `now` if sending is allowed, else the UTC end of the quiet period.

        The end is the wall-clock `end` in the zone, so across a DST change
        the wait is an hour shorter or longer than on other nights.
        """
        zone = ZoneInfo(time_zone)
        local = now.astimezone(zone)
        clock = local.time().replace(tzinfo=None)
        wraps = self.start > self.end
        after_start = clock >= self.start
        before_end = clock < self.end
        quiet = (after_start or before_end) if wraps else (after_start and before_end)
        if not quiet:
            return now
        day = local.date() + timedelta(days=1 if wraps and after_start else 0)
        return datetime.combine(day, self.end, zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class MessageRequest:
    """A message the risk engine requests; the center decides when and whether."""

    borrower_id: str
    phone: str
    time_zone: str  # IANA name, for quiet hours
    channel: str  # sms or call
    template_id: str
    template_text: str
    variables: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    dedup_key: str | None = None  # same key within the window: one task
    evidence: Mapping[str, Any] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class MessageTask:
    """One SMS or outbound call and its delivery state."""

    task_id: str
    borrower_id: str
    phone: str
    time_zone: str
    channel: str
    template_id: str
    text: str
    dedup_key: str
    created_at: datetime
    next_attempt_at: datetime
    status: TaskStatus = TaskStatus.QUEUED
    attempts: int = 0
    sent_at: datetime | None = None
    provider_id: str | None = None
    last_error: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = format_time(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            record[name] = value
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> MessageTask:
        values = dict(record)
        for name in ("created_at", "next_attempt_at", "sent_at"):
            if values.get(name) is not None:
                values[name] = parse_time(values[name], name)
        values["status"] = TaskStatus(values["status"])
        return cls(**values)
