"""Message center: templates, quiet hours, rate limits, de-dup, retries, opt-out."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from postloan.notify import (
    JsonTaskRepository,
    LogFileProvider,
    MemoryTaskRepository,
    MessageCenter,
    MessageRequest,
    MessageTask,
    NotifySettings,
    ProviderError,
    QuietHours,
    TaskStatus,
    TemplateError,
    WebhookProvider,
    mask_phone,
    render,
)

NOON = datetime(2024, 5, 6, 12, tzinfo=UTC)
PHONE = "13812348000"


class FlakyProvider:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[str] = []

    def send(self, task: MessageTask) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise ProviderError("gateway timed out")
        self.sent.append(task.task_id)
        return f"p-{task.task_id}"


def request(
    template: str = "t1", borrower: str = "B1", **kwargs: Any
) -> MessageRequest:
    values: dict[str, Any] = {
        "borrower_id": borrower,
        "phone": PHONE,
        "time_zone": "Asia/Shanghai",
        "channel": "sms",
        "template_id": template,
        "template_text": "Hi $name",
        "variables": {"name": "Li"},
        "dedup_key": f"{borrower}:{template}",
    }
    values.update(kwargs)
    return MessageRequest(**values)


def center(provider: Any, **settings: Any) -> MessageCenter:
    return MessageCenter(
        MemoryTaskRepository(),
        {"sms": provider, "call": provider},
        NotifySettings(**settings),
    )


def test_render_missing_variable_raises() -> None:
    with pytest.raises(TemplateError, match="variable 'amount' is missing"):
        render("t1", "Pay $amount", {})


def test_mask_phone_keeps_head_and_tail() -> None:
    assert mask_phone("13812348000") == "138****8000"
    assert mask_phone("+351 912 345 678") == "351*****5678"
    assert mask_phone("12345") == "***45"


def test_quiet_hours_spring_forward_new_york() -> None:
    # 2024-03-10: US clocks jump 02:00 EST -> 03:00 EDT. 01:00 EST is 06:00 UTC;
    # 08:00 EDT is 12:00 UTC, an hour earlier in UTC than the night before.
    quiet = QuietHours()

    release = quiet.release(datetime(2024, 3, 10, 6, tzinfo=UTC), "America/New_York")

    assert release == datetime(2024, 3, 10, 12, tzinfo=UTC)


def test_quiet_hours_fall_back_lisbon() -> None:
    # 2024-10-27: Lisbon leaves WEST (UTC+1) for WET (UTC+0) at 02:00 local.
    release = QuietHours().release(
        datetime(2024, 10, 26, 22, tzinfo=UTC), "Europe/Lisbon"
    )

    assert release == datetime(2024, 10, 27, 8, tzinfo=UTC)


def test_quiet_hours_daytime_sends_now() -> None:
    assert QuietHours().release(NOON, "Asia/Shanghai") == NOON  # 20:00 local


def test_dispatch_in_quiet_hours_waits() -> None:
    provider = FlakyProvider(0)
    hub = center(provider)
    hub.enqueue(request(), NOON + timedelta(hours=2))  # 22:00 in Shanghai

    held = hub.dispatch(NOON + timedelta(hours=2))

    assert provider.sent == []
    assert held[0].next_attempt_at == datetime(2024, 5, 7, 0, tzinfo=UTC)


def test_enqueue_dedup_within_window() -> None:
    hub = center(FlakyProvider(0))

    first = hub.enqueue(request(), NOON)
    second = hub.enqueue(request(), NOON + timedelta(hours=1))
    third = hub.enqueue(request(), NOON + timedelta(days=1))

    assert first is not None
    assert second is None
    assert third is not None


def test_dispatch_rate_limit_per_borrower() -> None:
    provider = FlakyProvider(0)
    hub = center(provider, rate_limit=2)
    for name in ("a", "b", "c"):
        hub.enqueue(request(name), NOON)
    hub.enqueue(request("a", borrower="B2"), NOON)

    tasks = hub.dispatch(NOON)

    assert [t.status for t in tasks] == [
        TaskStatus.SENT,
        TaskStatus.SENT,
        TaskStatus.QUEUED,
        TaskStatus.SENT,
    ]
    assert tasks[2].next_attempt_at == NOON + timedelta(days=1)


def test_dispatch_retries_with_backoff_then_sends() -> None:
    provider = FlakyProvider(2)
    hub = center(provider)
    hub.enqueue(request(), NOON)

    first = hub.dispatch(NOON)[0]
    second = hub.dispatch(first.next_attempt_at)[0]
    third = hub.dispatch(second.next_attempt_at)[0]

    assert first.next_attempt_at == NOON + timedelta(seconds=60)
    assert second.next_attempt_at == first.next_attempt_at + timedelta(seconds=120)
    assert third.status is TaskStatus.SENT
    assert third.attempts == 3


def test_dispatch_gives_up_after_max_attempts() -> None:
    hub = center(FlakyProvider(10), max_attempts=2)
    hub.enqueue(request(), NOON)

    first = hub.dispatch(NOON)[0]
    last = hub.dispatch(first.next_attempt_at)[0]

    assert last.status is TaskStatus.FAILED
    assert last.last_error == "gateway timed out"


def test_opt_out_suppresses_new_and_queued() -> None:
    provider = FlakyProvider(0)
    hub = center(provider)
    hub.enqueue(request("a"), NOON)
    hub.opt_out(PHONE)

    late = hub.enqueue(request("b"), NOON)
    tasks = hub.dispatch(NOON)

    assert late is not None and late.status is TaskStatus.SUPPRESSED
    assert tasks[0].status is TaskStatus.SUPPRESSED
    assert provider.sent == []


def test_record_delivery_on_sent_task() -> None:
    hub = center(FlakyProvider(0))
    task = hub.enqueue(request(), NOON)
    assert task is not None
    hub.dispatch(NOON)

    delivered = hub.record_delivery(task.task_id, TaskStatus.DELIVERED)

    assert delivered.status is TaskStatus.DELIVERED


def test_log_file_provider_masks_phone(tmp_path: Path) -> None:
    log_path = tmp_path / "sms.jsonl"
    hub = MessageCenter(
        JsonTaskRepository(tmp_path), {"sms": LogFileProvider(log_path)}
    )
    hub.enqueue(request(), NOON)

    hub.dispatch(NOON)
    line = json.loads(log_path.read_text())

    assert line["phone"] == "138****8000"
    assert PHONE not in log_path.read_text()
    assert JsonTaskRepository(tmp_path).all()[0].status is TaskStatus.SENT


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b'{"id": "vendor-7"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/send"
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(30)
def test_webhook_provider_posts_json(webhook: str) -> None:
    hub = center(WebhookProvider(webhook, timeout_s=5))
    hub.enqueue(request(), NOON)

    task = hub.dispatch(NOON)[0]

    assert task.provider_id == "vendor-7"
    assert _Hook.received[0]["text"] == "Hi Li"


@pytest.mark.timeout(30)
def test_webhook_provider_error_status_retries(webhook: str) -> None:
    _Hook.status = 503
    try:
        hub = center(WebhookProvider(webhook, timeout_s=5))
        hub.enqueue(request(), NOON)

        task = hub.dispatch(NOON)[0]
    finally:
        _Hook.status = 200

    assert task.status is TaskStatus.QUEUED
    assert task.attempts == 1
    assert "503" in (task.last_error or "")
