"""Storage of message tasks and opt-outs, in memory or in a JSON directory.

NOTE: the PostgreSQL store does not hold message tasks yet; a class with the
`TaskRepository` methods over its tables is where that will plug in.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from postloan.notify.tasks import MessageTask


class TaskRepository(Protocol):
    """Storage of message tasks by id and of the opted-out phone numbers."""

    def save(self, task: MessageTask) -> None: ...
    def get(self, task_id: str) -> MessageTask | None: ...
    def all(self) -> list[MessageTask]: ...
    def opted_out(self) -> frozenset[str]: ...
    def set_opt_out(self, phone: str, opted_out: bool) -> None: ...


class MemoryTaskRepository:
    """Tasks in a dict, for tests and one-shot runs."""

    def __init__(self) -> None:
        self._tasks: dict[str, MessageTask] = {}
        self._opt_outs: set[str] = set()

    def save(self, task: MessageTask) -> None:
        self._tasks[task.task_id] = task

    def get(self, task_id: str) -> MessageTask | None:
        return self._tasks.get(task_id)

    def all(self) -> list[MessageTask]:
        """Return every task in creation order."""
        return sorted(self._tasks.values(), key=lambda t: (t.created_at, t.task_id))

    def opted_out(self) -> frozenset[str]:
        return frozenset(self._opt_outs)

    def set_opt_out(self, phone: str, opted_out: bool) -> None:
        (self._opt_outs.add if opted_out else self._opt_outs.discard)(phone)


def write_json_atomic(path: Path, document: Any) -> None:
    """Write JSON to a temporary file, fsync it and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as output:
            json.dump(document, output, ensure_ascii=False, indent=2)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def locked_file(path: Path) -> Iterator[None]:
    """Hold an exclusive flock(2) on `path` (created if missing) for the block.

    The lock serialises processes on one host that use the same lock file,
    waiting as long as another holds it. POSIX only; on NFS it depends on
    the server's lock support.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


class JsonTaskRepository:
    """Tasks as ``DIR/messages/<task_id>.json`` and ``DIR/opt_outs.json``.

    Each write is atomic (temporary file and rename). There is no locking, so
    one process at a time may write a directory.
    """

    def __init__(self, root: Path) -> None:
        self.folder = root / "messages"
        self.opt_out_file = root / "opt_outs.json"

    def save(self, task: MessageTask) -> None:
        write_json_atomic(self.folder / f"{task.task_id}.json", task.to_record())

    def get(self, task_id: str) -> MessageTask | None:
        path = self.folder / f"{task_id}.json"
        if not path.exists():
            return None
        return MessageTask.from_record(json.loads(path.read_text(encoding="utf-8")))

    def all(self) -> list[MessageTask]:
        """Return every task in creation order."""
        tasks = [
            MessageTask.from_record(json.loads(path.read_text(encoding="utf-8")))
            for path in self.folder.glob("*.json")
        ]
        return sorted(tasks, key=lambda t: (t.created_at, t.task_id))

    def opted_out(self) -> frozenset[str]:
        if not self.opt_out_file.exists():
            return frozenset()
        return frozenset(json.loads(self.opt_out_file.read_text(encoding="utf-8")))

    def set_opt_out(self, phone: str, opted_out: bool) -> None:
        phones = set(self.opted_out())
        (phones.add if opted_out else phones.discard)(phone)
        write_json_atomic(self.opt_out_file, sorted(phones))
