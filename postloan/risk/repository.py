"""Storage of cases, rule firings, work orders and immobilize requests.

NOTE: cases are not in PostgreSQL yet; a `RiskRepository` over store tables
will plug in here, beside the in-memory and JSON-directory versions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from postloan.notify.repository import locked_file, write_json_atomic
from postloan.risk.actions import ImmobilizeRequest, WorkOrder
from postloan.risk.cases import Case, MemoryRotation, Rotation, next_position
from postloan.times import parse_time


class RiskRepository(Protocol):
    """Storage of the risk engine's state, one case per contract."""

    def get_case(self, contract_id: str) -> Case | None: ...
    def save_case(self, case: Case) -> None: ...
    def cases(self) -> list[Case]: ...
    def add_firing(self, record: dict[str, Any]) -> None: ...
    def firings(self) -> list[dict[str, Any]]: ...
    def save_work_order(self, order: WorkOrder) -> None: ...
    def work_orders(self) -> list[WorkOrder]: ...
    def save_immobilize(self, request: ImmobilizeRequest) -> None: ...
    def immobilize_requests(self) -> list[ImmobilizeRequest]: ...
    def rotation(self) -> Rotation: ...


class MemoryRiskRepository:
    """Risk state in dicts, for tests and one-shot runs."""

    def __init__(self) -> None:
        self._cases: dict[str, Case] = {}
        self._firings: list[dict[str, Any]] = []
        self._orders: dict[str, WorkOrder] = {}
        self._requests: dict[str, ImmobilizeRequest] = {}
        self._rotation = MemoryRotation()

    def get_case(self, contract_id: str) -> Case | None:
        return self._cases.get(contract_id)

    def save_case(self, case: Case) -> None:
        self._cases[case.contract_id] = case

    def cases(self) -> list[Case]:
        return [self._cases[key] for key in sorted(self._cases)]

    def add_firing(self, record: dict[str, Any]) -> None:
        # A rerun for the same date fires the same ids; keep each once.
        known = {firing.get("firing_id") for firing in self._firings}
        if record.get("firing_id") not in known:
            self._firings.append(record)

    def firings(self) -> list[dict[str, Any]]:
        return list(self._firings)

    def save_work_order(self, order: WorkOrder) -> None:
        self._orders[order.order_id] = order

    def work_orders(self) -> list[WorkOrder]:
        return list(self._orders.values())

    def save_immobilize(self, request: ImmobilizeRequest) -> None:
        self._requests[request.request_id] = request

    def immobilize_requests(self) -> list[ImmobilizeRequest]:
        return list(self._requests.values())

    def rotation(self) -> Rotation:
        """Return the collector rotation, kept as long as this repository."""
        return self._rotation


class JsonRotation:
    """Collector rotation positions in ``DIR/assignment.json``.

    Each `advance` reads, moves and rewrites the file under an exclusive lock
    on ``DIR/assignment.lock``, so processes that assign at once each get the
    next collector and none is skipped or given twice.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / "assignment.json"
        self.lock = root / "assignment.lock"

    def advance(self, key: str, names: Sequence[str]) -> str:
        with locked_file(self.lock):
            positions = self._read()
            index = next_position(names, positions.get(key))
            positions[key] = {"index": index, "name": names[index]}
            write_json_atomic(self.path, positions)
        return names[index]

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        document = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise ValueError(
                f"{self.path} is not a JSON object of rotation positions; "
                "delete it to restart the rotation at the first collector"
            )
        return document


class JsonRiskRepository:
    """Risk state under one directory.

    ``cases/<contract_id>.json``, ``firings.jsonl`` (appended),
    ``work_orders/<id>.json``, ``immobilize/<id>.json`` and the collector
    rotation ``assignment.json``. Each file write is atomic. The rotation is
    locked, so processes may assign collectors at once; other files are not,
    so one process at a time may write those.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _read_all(self, folder: str) -> list[Any]:
        return [
            json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((self.root / folder).glob("*.json"))
        ]

    def get_case(self, contract_id: str) -> Case | None:
        path = self.root / "cases" / f"{contract_id}.json"
        if not path.exists():
            return None
        return Case.from_record(json.loads(path.read_text(encoding="utf-8")))

    def save_case(self, case: Case) -> None:
        path = self.root / "cases" / f"{case.contract_id}.json"
        write_json_atomic(path, case.to_record())

    def cases(self) -> list[Case]:
        return [Case.from_record(record) for record in self._read_all("cases")]

    def add_firing(self, record: dict[str, Any]) -> None:
        # A rerun for the same date fires the same ids; keep each once.
        known = {firing.get("firing_id") for firing in self.firings()}
        if record.get("firing_id") in known:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "firings.jsonl").open("a", encoding="utf-8") as output:
            output.write(json.dumps(record, ensure_ascii=False) + "\n")

    def firings(self) -> list[dict[str, Any]]:
        path = self.root / "firings.jsonl"
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    def save_work_order(self, order: WorkOrder) -> None:
        path = self.root / "work_orders" / f"{order.order_id}.json"
        write_json_atomic(path, order.to_record())

    def work_orders(self) -> list[WorkOrder]:
        orders = []
        for record in self._read_all("work_orders"):
            record["created_at"] = _parse(record["created_at"])
            orders.append(WorkOrder(**record))
        return orders

    def save_immobilize(self, request: ImmobilizeRequest) -> None:
        path = self.root / "immobilize" / f"{request.request_id}.json"
        write_json_atomic(path, request.to_record())

    def immobilize_requests(self) -> list[ImmobilizeRequest]:
        return [ImmobilizeRequest.from_record(r) for r in self._read_all("immobilize")]

    def rotation(self) -> Rotation:
        """Return the collector rotation kept in this directory."""
        return JsonRotation(self.root)


def _parse(text: str) -> datetime:
    return parse_time(text, "created_at")
