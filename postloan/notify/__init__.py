"""The message center: SMS and outbound-call tasks, templates, quiet hours,
rate limits, de-duplication, retries and provider adapters.

It decides when and whether to send, never whom to contact. The risk engine
makes that choice and sends a `MessageRequest`.
"""

from postloan.notify.center import MessageCenter, NotifySettings
from postloan.notify.providers import (
    LogFileProvider,
    Provider,
    ProviderError,
    WebhookProvider,
)
from postloan.notify.repository import (
    JsonTaskRepository,
    MemoryTaskRepository,
    TaskRepository,
)
from postloan.notify.tasks import (
    MessageRequest,
    MessageTask,
    QuietHours,
    TaskStatus,
    TemplateError,
    mask_phone,
    render,
)

__all__ = [
    "JsonTaskRepository",
    "LogFileProvider",
    "MemoryTaskRepository",
    "MessageCenter",
    "MessageRequest",
    "MessageTask",
    "NotifySettings",
    "Provider",
    "ProviderError",
    "QuietHours",
    "TaskRepository",
    "TaskStatus",
    "TemplateError",
    "WebhookProvider",
    "mask_phone",
    "render",
]
