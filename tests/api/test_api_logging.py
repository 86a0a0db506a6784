"""Log filters: repeats rate-limited, secrets and phone numbers redacted."""

from __future__ import annotations

import logging

import pytest
from api_support import auth
from fastapi.testclient import TestClient

from postloan.api.logfilter import RedactFilter, RepeatFilter


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(
        "postloan.test", logging.WARNING, __file__, 1, message, args, None
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeat_filter_drops_after_burst() -> None:
    repeats = RepeatFilter(burst=3, interval_s=60, clock=_Clock())

    passed = [repeats.filter(_record("device %s offline", "D-1")) for _ in range(10)]

    assert passed == [True] * 3 + [False] * 7


def test_repeat_filter_reports_suppressed_count() -> None:
    clock = _Clock()
    repeats = RepeatFilter(burst=1, interval_s=60, clock=clock)
    for _ in range(4):
        repeats.filter(_record("device %s offline", "D-1"))
    clock.now = 61.0
    record = _record("device %s offline", "D-1")

    assert repeats.filter(record)
    assert record.getMessage() == (
        "device D-1 offline (3 similar messages suppressed in the previous 60 s)"
    )


def test_repeat_filter_passes_other_devices() -> None:
    repeats = RepeatFilter(burst=1, interval_s=60, clock=_Clock())

    first = repeats.filter(_record("device %s logged in", "D-1"))
    second = repeats.filter(_record("device %s logged in", "D-2"))

    assert first
    assert second


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("sent to 13812348000", "sent to 138****8000"),
        ("sent to +8613812348000", "sent to 861******8000"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"),
        ("dsn password=hunter2 host=x", "dsn password=[redacted] host=x"),
        ("device 358735070530281 logged in", "device 358735070530281 logged in"),
    ],
)
def test_redact_filter_masks_secrets(message: str, expected: str) -> None:
    record = _record(message)

    RedactFilter().filter(record)

    assert record.getMessage() == expected


def test_request_log_names_user_and_contract(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="postloan.api.app"):
        client.get("/contracts/C-1", headers=auth("analyst"))

    [line] = [r.getMessage() for r in caplog.records if r.name == "postloan.api.app"]
    assert "GET /contracts/C-1 -> 200" in line
    assert "user=chen" in line
    assert "contract=C-1" in line
