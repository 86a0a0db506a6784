"""Times whose UTC conversion leaves datetime's range are rejected, not raised."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from postloan.times import TimeValueError, parse_time, require_utc


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-00:01"]
)
def test_parse_time_overflow_names_field(text: str) -> None:
    with pytest.raises(TimeValueError) as caught:
        parse_time(text, "--since")

    assert caught.value.field == "--since"
    assert caught.value.value == text
    assert f"invalid --since {text!r}" in str(caught.value)
    assert "years 1 to 9999" in str(caught.value)


def test_require_utc_overflow_rejected() -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=8)))

    with pytest.raises(TimeValueError, match="invalid at '0001-01-01T00:00:00"):
        require_utc(early, "at")
