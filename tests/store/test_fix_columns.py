"""Building fixes column by column (`fixes_from_columns`), as track reads do."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postloan.model import EMPTY, Fix, fixes_from_columns

START = datetime(2026, 3, 1, tzinfo=UTC)


def columns_of(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 9


ROWS = [
    (START, 38.7, -9.14, 42.0, 90.0, 80.0, True, 9, {"mileage_km": 1.5}),
    (START + timedelta(seconds=30), 38.8, -9.15, 0.0, None, None, False, None, EMPTY),
]


def test_fixes_from_columns_equal_constructed() -> None:
    built = fixes_from_columns("860000000000001", columns_of(ROWS))

    assert built == [Fix("860000000000001", *row) for row in ROWS]
    assert repr(built[1]) == repr(Fix("860000000000001", *ROWS[1]))


def test_fixes_from_columns_stay_frozen() -> None:
    (fix,) = fixes_from_columns("860000000000001", columns_of(ROWS[:1]))

    with pytest.raises(dataclasses.FrozenInstanceError):
        fix.latitude = 0.0  # type: ignore[misc]
    assert type(fix) is Fix
    assert dataclasses.astuple(fix)[:3] == ("860000000000001", START, 38.7)


def test_fixes_from_columns_empty() -> None:
    assert fixes_from_columns("860000000000001", [[]] * 9) == []


def test_fixes_from_columns_rejects_wrong_column_count() -> None:
    with pytest.raises(ValueError, match=r"expected 9 columns .* got 8"):
        fixes_from_columns("860000000000001", columns_of(ROWS)[:8])


def test_fixes_from_columns_rejects_uneven_columns() -> None:
    columns = columns_of(ROWS)
    columns[4] = columns[4][:1]

    with pytest.raises(ValueError, match=r"differ in length: \[1, 2\]"):
        fixes_from_columns("860000000000001", columns)


rows_strategy = st.lists(
    st.tuples(
        st.datetimes(timezones=st.just(UTC)),
        st.floats(-90, 90),
        st.floats(-180, 180),
        st.floats(0, 300),
        st.none() | st.floats(0, 360),
        st.none() | st.floats(-500, 9000),
        st.booleans(),
        st.none() | st.integers(0, 40),
        st.just(EMPTY) | st.dictionaries(st.text(max_size=5), st.integers()),
    ),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(device_id=st.text(min_size=1, max_size=20), rows=rows_strategy)
def test_fixes_from_columns_match_init(
    device_id: str, rows: list[tuple[Any, ...]]
) -> None:
    expected = [Fix(device_id, *row) for row in rows]

    assert fixes_from_columns(device_id, columns_of(rows)) == expected
