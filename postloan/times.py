"""Parse and format the times that cross postloan's edges.

Inside postloan every time is an aware datetime in UTC. Text from a user, a
file or a request is parsed by `parse_time` and written back by
`format_time`, so the CLI, the HTTP API and the stored JSON records read and
write times the same way:

- input is ISO 8601 with ``Z`` or a UTC offset (``2026-01-31T08:00:00Z``,
  ``2026-01-31T16:00:00+08:00``) and is converted to UTC;
- a time without a zone is rejected, because an operator in Shanghai who
  types ``2026-01-31 08:00`` means local time, and reading it as UTC would
  shift the window by eight hours without any sign of it;
- output is UTC with a ``Z`` suffix and a fraction only when the
  microseconds are not zero: ``2026-01-31T08:00:00Z``.

A borrower's or lender's local time is shown only where a person reads it
(`format_local`), never stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


class TimeValueError(ValueError):
    """A time value that cannot be used, with the field it came from."""

    def __init__(self, field: str, value: str, problem: str) -> None:
        super().__init__(f"invalid {field} {value!r}: {problem}")
        self.field = field
        self.value = value
        self.problem = problem


def _example(value: datetime | None) -> str:
    """Return the two accepted spellings of `value`'s wall-clock time."""
    wall = (value or datetime(2026, 1, 31, 8)).replace(tzinfo=None, microsecond=0)
    text = wall.isoformat()
    return f"{text}Z (UTC) or {text}+08:00 (with its UTC offset)"


def parse_time(text: str, field: str = "time") -> datetime:
    """Parse ISO 8601 text with ``Z`` or a UTC offset and return it in UTC.

    Raises TimeValueError naming `field` and the text when the text is not
    ISO 8601, has no zone, or lies outside years 1 to 9999 once converted to UTC.
    """
    cleaned = text.strip()
    if cleaned.endswith("z"):
        cleaned = cleaned[:-1] + "Z"  # RFC 3339 allows a lower-case z
    try:
        value = datetime.fromisoformat(cleaned)
    except ValueError:
        raise TimeValueError(
            field,
            text,
            f"expected an ISO 8601 time such as {_example(None)}",
        ) from None
    if value.tzinfo is None:
        raise TimeValueError(
            field,
            text,
            f"the time has no UTC offset; write {_example(value)}",
        )
    return _to_utc(value, field, text)


def _to_utc(value: datetime, field: str, text: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+08:00 is before the earliest datetime in UTC.
        raise TimeValueError(
            field,
            text,
            "the time in UTC is outside the years 1 to 9999 that Python's "
            "datetime can hold",
        ) from None


def require_utc(value: datetime, field: str = "time") -> datetime:
    """Return an aware datetime converted to UTC.

    Raises TimeValueError if it is naive or its UTC time is outside years 1 to 9999.
    """
    text = value.isoformat()
    if value.tzinfo is None or value.utcoffset() is None:
        raise TimeValueError(
            field,
            text,
            f"the time has no UTC offset; write {_example(value)}",
        )
    return _to_utc(value, field, text)


def format_time(value: datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC with a ``Z`` suffix.

    Whole seconds have no fraction. A naive datetime raises TimeValueError.
    """
    utc = require_utc(value)
    return utc.replace(tzinfo=None).isoformat() + "Z"


def format_optional(value: datetime | None) -> str | None:
    """Format like `format_time`, keeping None as None."""
    return None if value is None else format_time(value)


def parse_optional(text: str | None, field: str = "time") -> datetime | None:
    """Parse like `parse_time`; None and empty text give None."""
    return parse_time(text, field) if text else None


def format_local(value: datetime, time_zone: str) -> str:
    """Format an aware time as wall-clock time in an IANA zone, for people.

    The result is minute precision with the zone's abbreviation, e.g.
    ``2026-01-31 16:00 CST`` for Asia/Shanghai. It is for message texts and
    screens only, because the abbreviation is ambiguous and cannot be parsed
    back.
    """
    local = require_utc(value).astimezone(ZoneInfo(time_zone))
    return local.strftime("%Y-%m-%d %H:%M %Z")
