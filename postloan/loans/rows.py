"""Row-by-row reading of CSV and JSON imports with per-field issues.

An import never stops at a bad row. Each row's problems are collected as
`RowIssue` values (row number, field, value, message) and the good rows are
kept. A CSV row number is the line number in the file, the header being row 1;
a JSON row number is the 1-based position in the top-level array.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class ImportFileError(ValueError):
    """A whole import file is unusable: unreadable, or a required column is missing."""


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One problem with one field of one imported row."""

    row: int
    field: str
    value: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, field {self.field}: {self.message}"

    def to_record(self) -> dict[str, object]:
        """Return a JSON-ready dict."""
        return {
            "row": self.row,
            "field": self.field,
            "value": self.value,
            "error": self.message,
        }


class FieldReader:
    """Parses the fields of one row, collecting an issue for each bad field."""

    def __init__(self, row: int, values: Mapping[str, str]) -> None:
        self.row = row
        self.values = values
        self.issues: list[RowIssue] = []

    def text(self, name: str) -> str:
        """Return a field's raw text, stripped; empty when the column is absent."""
        return (self.values.get(name) or "").strip()

    def required(self, name: str, parse: Callable[[str], T]) -> T | None:
        """Parse a field that must be present; None after recording an issue."""
        raw = self.text(name)
        if not raw:
            self.fail(name, raw, f"{name} is missing")
            return None
        return self._parse(name, raw, parse)

    def optional(self, name: str, parse: Callable[[str], T]) -> T | None:
        """Parse a field that may be empty; None when empty or invalid."""
        raw = self.text(name)
        return self._parse(name, raw, parse) if raw else None

    def fail(self, name: str, raw: str, message: str) -> None:
        """Record an issue with one field."""
        self.issues.append(RowIssue(self.row, name, raw, message))

    def _parse(self, name: str, raw: str, parse: Callable[[str], T]) -> T | None:
        try:
            return parse(raw)
        except ValueError as exc:
            self.fail(name, raw, str(exc))
            return None


def _column_key(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def read_csv(
    text: str, aliases: Mapping[str, str], required: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (row number, values by canonical column name) for each CSV record.

    Column names are matched case-insensitively, spaces and hyphens counting as
    underscores, and ``aliases`` maps other spellings to canonical names.
    Raises ImportFileError when a required column is missing. Blank lines are
    skipped.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header = next(reader, None)
    if header is None:
        raise ImportFileError("the file is empty: expected a header row")
    columns = [aliases.get(_column_key(name), _column_key(name)) for name in header]
    missing = [name for name in required if name not in columns]
    if missing:
        raise ImportFileError(
            f"missing column(s) {', '.join(missing)} in header {header!r}"
        )
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue
        values = dict(zip(columns, record, strict=False))
        yield reader.line_num, values
