"""Command requests are checked before they are queued."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postloan.commands import CommandError, build_payload

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("protocol", "kind", "options", "message"),
    [
        ("jt808", "text", {"text": "hi"}, "jt808 devices take no 'text'"),
        ("gt06", "position_query", {}, "gt06 devices take no 'position_query'"),
        ("gt06", "report_interval", {"seconds": -5}, "from 1 to 86400, got -5"),
        ("gt06", "report_interval", {}, "needs --seconds"),
        ("gt06", "text", {}, "needs --text"),
        ("jt808", "terminal_control", {"command_word": 300}, "got 300"),
    ],
)
def test_build_payload_rejects_invalid_request(
    protocol: str, kind: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(CommandError) as error:
        build_payload(protocol, kind, ttl_s=300, now=NOW, **options)  # type: ignore[arg-type]

    assert message in str(error.value)


def test_build_payload_sets_expiry_from_ttl() -> None:
    payload = build_payload("gt06", "fuel_cut", ttl_s=300, now=NOW)

    assert payload["expires_at"] == "2026-03-01T08:05:00Z"


@pytest.mark.parametrize("ttl", [0.0, -1.0, 1e9, float("nan")])
def test_build_payload_rejects_ttl_out_of_range(ttl: float) -> None:
    with pytest.raises(CommandError):
        build_payload("gt06", "fuel_cut", ttl_s=ttl, now=NOW)
