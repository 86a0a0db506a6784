"""Provider adapters: where an SMS or call task goes out.

`LogFileProvider` is the default and writes one JSON line per message.
`WebhookProvider` POSTs the task as JSON to an HTTP endpoint (a gateway that
the lender runs in front of its SMS and call vendors).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from postloan.notify.tasks import MessageTask, mask_phone

log = logging.getLogger(__name__)


class ProviderError(RuntimeError):
    """Sending failed; the task is retried with back-off."""


class Provider(Protocol):
    """Sends one task and returns the provider's message id ("" if it has none)."""

    def send(self, task: MessageTask) -> str: ...


class LogFileProvider:
    """Appends each message to a JSON Lines file, phone numbers masked."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, task: MessageTask) -> str:
        line = {
            "task_id": task.task_id,
            "channel": task.channel,
            "phone": mask_phone(task.phone),
            "template_id": task.template_id,
            "text": task.text,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as output:
            output.write(json.dumps(line, ensure_ascii=False) + "\n")
        return task.task_id


class WebhookProvider:
    """POSTs ``{task_id, channel, phone, text}`` as JSON; a 2xx reply is success.

    The reply body may be a JSON object with an ``id``, taken as the provider's
    message id. Any other status, a timeout or a refused connection raises
    ProviderError.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        if urlsplit(url).scheme not in {"http", "https"}:
            raise ValueError(f"webhook URL {url!r} is invalid: expected http(s)://")
        self.url = url
        self.timeout_s = timeout_s

    def send(self, task: MessageTask) -> str:
        body = json.dumps(
            {
                "task_id": task.task_id,
                "channel": task.channel,
                "phone": task.phone,
                "text": task.text,
            }
        ).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                payload = reply.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            log.warning(
                "webhook send of task %s to %s failed: %s", task.task_id, self.url, exc
            )
            raise ProviderError(f"webhook {self.url} failed: {exc}") from exc
        return _message_id(payload)


def _message_id(payload: bytes) -> str:
    try:
        document = json.loads(payload or b"{}")
    except json.JSONDecodeError:
        return ""
    return str(document.get("id", "")) if isinstance(document, dict) else ""
