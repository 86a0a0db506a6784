"""The audit log of API writes: who did what to which record, and when."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from postloan.model import EMPTY
from postloan.times import format_time, parse_time


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One write through the API."""

    at: datetime
    user: str
    role: str
    action: str  # e.g. case.transition, command.fuel_cut
    target: str  # the id of the record written
    detail: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def to_record(self) -> dict[str, Any]:
        return {
            "at": format_time(self.at),
            "user": self.user,
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "detail": dict(self.detail),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AuditEntry:
        return cls(
            parse_time(record["at"], "at"),
            record["user"],
            record["role"],
            record["action"],
            record["target"],
            record.get("detail") or EMPTY,
        )


class AuditLog(Protocol):
    """Append-only storage of audit entries."""

    def append(self, entry: AuditEntry) -> None: ...
    def entries(self) -> list[AuditEntry]: ...


class MemoryAuditLog:
    """Audit entries in a list, for tests."""

    def __init__(self) -> None:
        self._entries: list[AuditEntry] = []

    def append(self, entry: AuditEntry) -> None:
        self._entries.append(entry)

    def entries(self) -> list[AuditEntry]:
        return list(self._entries)


class JsonAuditLog:
    """Audit entries as JSON lines appended to one file, flushed on each write.

    A lock serialises appends from the API's worker threads; one process at a
    time may write the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, entry: AuditEntry) -> None:
        line = json.dumps(entry.to_record(), ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as output:
                output.write(line)

    def entries(self) -> list[AuditEntry]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [AuditEntry.from_record(json.loads(line)) for line in lines if line]
