"""Time text at the edges: one parse rule for the CLI and the API, one format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from api_support import NOW, auth
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from postloan.api import ApiContext
from postloan.cli import main
from postloan.model import Fix
from postloan.notify import render
from postloan.store import SQLiteStore
from postloan.times import (
    TimeValueError,
    format_local,
    format_time,
    parse_time,
    require_utc,
)

DEVICE = "860000000000001"

# (text, accepted) pairs that the CLI and the API must judge alike.
TIME_INPUTS = [
    ("2024-03-01T09:00:00Z", True),
    ("2024-03-01T09:00:00z", True),
    ("2024-03-01T17:00:00+08:00", True),
    ("2024-03-01 09:00:00Z", True),
    ("2024-03-01T09:00:00.250Z", True),
    ("2024-03-01T09:00:00", False),
    ("2024-03-01", False),
    ("1709283600", False),
    ("yesterday", False),
    ("0001-01-01T00:00:00+08:00", False),  # before year 1 in UTC
    ("9999-12-31T23:00:00-08:00", False),  # after year 9999 in UTC
    ("0001-01-01T08:00:00+08:00", True),
]


def test_parse_time_converts_offset_to_utc() -> None:
    value = parse_time("2024-03-01T17:00:00+08:00")

    assert value == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    assert value.tzinfo is UTC


def test_parse_time_naive_names_field_and_value() -> None:
    with pytest.raises(TimeValueError) as caught:
        parse_time("2024-03-01T09:00:00", "--since")

    message = str(caught.value)
    assert "--since" in message
    assert "'2024-03-01T09:00:00'" in message
    assert "2024-03-01T09:00:00Z" in message
    assert caught.value.field == "--since"
    assert caught.value.value == "2024-03-01T09:00:00"


def test_parse_time_garbage_names_value() -> None:
    with pytest.raises(TimeValueError, match="invalid since 'soon'"):
        parse_time("soon", "since")


def test_require_utc_rejects_naive() -> None:
    with pytest.raises(TimeValueError, match="invalid at '2024-03-01T09:00:00'"):
        require_utc(datetime(2024, 3, 1, 9), "at")


def test_format_time_whole_seconds_have_no_fraction() -> None:
    shanghai = timezone(timedelta(hours=8))

    assert format_time(datetime(2024, 3, 1, 17, tzinfo=shanghai)) == (
        "2024-03-01T09:00:00Z"
    )
    assert format_time(datetime(2024, 3, 1, 9, 0, 0, 250_000, tzinfo=UTC)) == (
        "2024-03-01T09:00:00.250000Z"
    )


def test_format_time_rejects_naive() -> None:
    with pytest.raises(TimeValueError):
        format_time(datetime(2024, 3, 1, 9))


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]
        ),
    )
)
def test_format_then_parse_round_trips(value: datetime) -> None:
    text = format_time(value)

    assert text.endswith("Z")
    assert parse_time(text) == value


def test_format_local_shows_borrower_wall_clock() -> None:
    assert format_local(NOW, "Asia/Shanghai") == "2024-03-01 17:00 CST"


def test_render_shows_datetime_in_borrower_zone() -> None:
    text = render("t", "Visit at ${at}", {"at": NOW}, "Asia/Shanghai")

    assert text == "Visit at 2024-03-01 17:00 CST"


def test_render_without_zone_writes_utc() -> None:
    assert render("t", "at ${at}", {"at": NOW}) == "at 2024-03-01T09:00:00Z"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "times.db"
    store = SQLiteStore(path)
    store.migrate()
    store.write_fixes([Fix(DEVICE, NOW, 31.2, 121.4)])
    store.close()
    return f"sqlite:///{path}"


def _cli_accepts(url: str, text: str, capsys: pytest.CaptureFixture[str]) -> bool:
    argv = ["stops", DEVICE, "--since", text, "--until", "2030-01-01T00:00:00Z"]
    try:
        code = main([*argv, "--store", url])
    except SystemExit as exit_:
        assert exit_.code == 2
        assert repr(text) in capsys.readouterr().err
        return False
    assert code == 0
    return True


def _api_accepts(client: TestClient, text: str) -> bool:
    response = client.get(
        f"/devices/{DEVICE}/track", params={"since": text}, headers=auth("admin")
    )
    if response.status_code == 422:
        body = response.json()
        assert body["field"] == "since"
        assert body["value"] == text
        assert repr(text) in body["error"]
        return False
    assert response.status_code == 200
    return True


@pytest.mark.parametrize(("text", "accepted"), TIME_INPUTS)
def test_cli_and_api_share_time_rule(
    text: str,
    accepted: bool,
    sqlite_url: str,
    client: TestClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _cli_accepts(sqlite_url, text, capsys) is accepted
    assert _api_accepts(client, text) is accepted


def test_api_since_offset_selects_same_fixes(client: TestClient) -> None:
    utc = client.get(
        f"/devices/{DEVICE}/track",
        params={"since": "2024-03-01T09:02:00Z"},
        headers=auth("admin"),
    )
    shanghai = client.get(
        f"/devices/{DEVICE}/track",
        params={"since": "2024-03-01T17:02:00+08:00"},
        headers=auth("admin"),
    )

    assert utc.json()["features"] == shanghai.json()["features"]
    assert len(utc.json()["features"]) == 3


def test_api_visit_naive_time_rejected(client: TestClient) -> None:
    response = client.post(
        "/visits",
        json={
            "visit_id": "v-1",
            "contract_id": "C-1",
            "scheduled_for": "2024-03-02T10:00:00",
            "visitor": "dina",
        },
        headers=auth("admin"),
    )

    assert response.status_code == 422
    assert response.json()["field"] == "scheduled_for"
    assert "2024-03-02T10:00:00Z" in response.json()["error"]


def test_api_outputs_times_with_z(client: TestClient, context: ApiContext) -> None:
    visit = client.post(
        "/visits",
        json={
            "visit_id": "v-2",
            "contract_id": "C-1",
            "scheduled_for": "2024-03-02T18:00:00+08:00",
            "visitor": "dina",
        },
        headers=auth("admin"),
    )
    audit = client.get("/audit", headers=auth("admin"))

    assert visit.status_code == 201
    assert visit.json()["scheduled_for"] == "2024-03-02T10:00:00Z"
    assert audit.json()[-1]["at"] == "2024-03-01T09:00:00Z"
    assert audit.json()[-1]["detail"]["scheduled_for"] == "2024-03-02T10:00:00Z"
