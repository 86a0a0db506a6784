"""The message center: queues SMS and call tasks and sends them when allowed.

`enqueue` renders the template (a missing variable raises), drops a request
whose de-duplication key was queued within `dedup_window_s`, and records a
request for an opted-out phone as suppressed. `dispatch` sends the tasks that
are due, holding back those in the borrower's quiet hours and those over the
per-borrower rate limit, and retries failed sends with doubling back-off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from postloan.notify.providers import Provider, ProviderError
from postloan.notify.repository import TaskRepository
from postloan.notify.tasks import (
    MessageRequest,
    MessageTask,
    QuietHours,
    TaskStatus,
    mask_phone,
    render,
)

log = logging.getLogger(__name__)

_SENT = frozenset({TaskStatus.SENT, TaskStatus.DELIVERED, TaskStatus.UNDELIVERED})
_FINAL_DELIVERY = frozenset({TaskStatus.DELIVERED, TaskStatus.UNDELIVERED})


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """Limits of the message center."""

    quiet_hours: QuietHours = field(default_factory=QuietHours)
    rate_limit: int = 3  # messages sent per borrower per window
    rate_window_s: float = 86_400.0
    dedup_window_s: float = 86_400.0
    max_attempts: int = 4
    backoff_s: float = 60.0  # wait after the first failure, doubled each time
    backoff_max_s: float = 3_600.0


class MessageCenter:
    """Queues and sends message tasks through one provider per channel."""

    def __init__(
        self,
        repository: TaskRepository,
        providers: Mapping[str, Provider],
        settings: NotifySettings | None = None,
    ) -> None:
        self.repository = repository
        self.providers = providers
        self.settings = settings or NotifySettings()

    def enqueue(self, request: MessageRequest, now: datetime) -> MessageTask | None:
        """Queue a task; return None when a task with its key is recent."""
        text = render(
            request.template_id,
            request.template_text,
            request.variables,
            request.time_zone,
        )
        key = request.dedup_key or f"{request.borrower_id}:{request.template_id}"
        window = timedelta(seconds=self.settings.dedup_window_s)
        tasks = self.repository.all()
        if any(t.dedup_key == key and now - t.created_at < window for t in tasks):
            return None
        opted_out = request.phone in self.repository.opted_out()
        task = MessageTask(
            task_id=f"msg-{len(tasks) + 1:06d}",
            borrower_id=request.borrower_id,
            phone=request.phone,
            time_zone=request.time_zone,
            channel=request.channel,
            template_id=request.template_id,
            text=text,
            dedup_key=key,
            created_at=now,
            next_attempt_at=now,
            status=TaskStatus.SUPPRESSED if opted_out else TaskStatus.QUEUED,
            evidence=request.evidence,
        )
        self.repository.save(task)
        return task

    def opt_out(self, phone: str) -> None:
        """Stop all messages to `phone`, including tasks already queued."""
        self.repository.set_opt_out(phone, True)

    def opt_in(self, phone: str) -> None:
        self.repository.set_opt_out(phone, False)

    def dispatch(self, now: datetime) -> list[MessageTask]:
        """Try every queued task that is due; return them as updated."""
        due = [
            task
            for task in self.repository.all()
            if task.status is TaskStatus.QUEUED and task.next_attempt_at <= now
        ]
        updated = []
        for task in due:
            # Saved one by one, so the rate limit counts sends of this batch.
            task = self._attempt(task, now)
            self.repository.save(task)
            updated.append(task)
        return updated

    def record_delivery(self, task_id: str, status: TaskStatus) -> MessageTask:
        """Store a provider's delivery report for a sent task."""
        task = self.repository.get(task_id)
        if task is None:
            raise LookupError(f"message task {task_id!r} not found")
        if status not in _FINAL_DELIVERY or task.status is not TaskStatus.SENT:
            raise ValueError(
                f"task {task_id}: cannot record {status.value!r} on a "
                f"{task.status.value!r} task; expected delivered or undelivered "
                "on a sent task"
            )
        task = replace(task, status=status)
        self.repository.save(task)
        return task

    def _attempt(self, task: MessageTask, now: datetime) -> MessageTask:
        if task.phone in self.repository.opted_out():
            return replace(task, status=TaskStatus.SUPPRESSED)
        release = self.settings.quiet_hours.release(now, task.time_zone)
        if release > now:
            return replace(task, next_attempt_at=release)
        free_at = self._rate_free_at(task, now)
        if free_at > now:
            return replace(task, next_attempt_at=free_at)
        return self._send(task, now)

    def _rate_free_at(self, task: MessageTask, now: datetime) -> datetime:
        """Return when the borrower may get another message: now, or when the
        oldest message in the window leaves it."""
        window = timedelta(seconds=self.settings.rate_window_s)
        recent = sorted(
            t.sent_at
            for t in self.repository.all()
            if t.borrower_id == task.borrower_id
            and t.status in _SENT
            and t.sent_at is not None
            and now - t.sent_at < window
        )
        if len(recent) < self.settings.rate_limit:
            return now
        return recent[-self.settings.rate_limit] + window

    def _send(self, task: MessageTask, now: datetime) -> MessageTask:
        attempts = task.attempts + 1
        try:
            provider_id = self.providers[task.channel].send(task)
        except ProviderError as exc:
            return self._failed(task, now, attempts, str(exc))
        log.info(
            "sent %s task %s to %s", task.channel, task.task_id, mask_phone(task.phone)
        )
        return replace(
            task,
            status=TaskStatus.SENT,
            attempts=attempts,
            sent_at=now,
            provider_id=provider_id,
            last_error=None,
        )

    def _failed(
        self, task: MessageTask, now: datetime, attempts: int, error: str
    ) -> MessageTask:
        if attempts >= self.settings.max_attempts:
            log.warning("task %s failed after %d attempts", task.task_id, attempts)
            return replace(
                task, status=TaskStatus.FAILED, attempts=attempts, last_error=error
            )
        delay = min(
            self.settings.backoff_s * 2 ** (attempts - 1), self.settings.backoff_max_s
        )
        return replace(
            task,
            attempts=attempts,
            last_error=error,
            next_attempt_at=now + timedelta(seconds=delay),
        )
