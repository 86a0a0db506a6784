"""Repositories of return visits, GPS work orders and traffic violations."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from postloan.affairs.violations import TrafficViolation
from postloan.affairs.visits import ReturnVisit
from postloan.affairs.work_orders import GpsWorkOrder
from postloan.notify.repository import write_json_atomic

T = TypeVar("T")


class AffairsRepository(Protocol):
    """Storage of vehicle affairs by id."""

    def save_visit(self, visit: ReturnVisit) -> None: ...
    def visits(self) -> list[ReturnVisit]: ...
    def save_work_order(self, order: GpsWorkOrder) -> None: ...
    def work_orders(self) -> list[GpsWorkOrder]: ...
    def save_violation(self, violation: TrafficViolation) -> None: ...
    def violations(self) -> list[TrafficViolation]: ...


class MemoryAffairsRepository:
    """Affairs in dicts, for tests and one-shot runs."""

    def __init__(self) -> None:
        self._visits: dict[str, ReturnVisit] = {}
        self._orders: dict[str, GpsWorkOrder] = {}
        self._violations: dict[str, TrafficViolation] = {}

    def save_visit(self, visit: ReturnVisit) -> None:
        self._visits[visit.visit_id] = visit

    def visits(self) -> list[ReturnVisit]:
        return [self._visits[key] for key in sorted(self._visits)]

    def save_work_order(self, order: GpsWorkOrder) -> None:
        self._orders[order.order_id] = order

    def work_orders(self) -> list[GpsWorkOrder]:
        return [self._orders[key] for key in sorted(self._orders)]

    def save_violation(self, violation: TrafficViolation) -> None:
        self._violations[violation.violation_id] = violation

    def violations(self) -> list[TrafficViolation]:
        return [self._violations[key] for key in sorted(self._violations)]


class JsonAffairsRepository:
    """Affairs under one directory: ``visits/``, ``work_orders/``, ``violations/``.

    One JSON file a record, written atomically; ids are file names, so callers
    must pass ids without path separators (the API checks them). One process
    at a time may write the directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def _save(self, folder: str, record_id: str, record: Mapping[str, Any]) -> None:
        with self._lock:
            write_json_atomic(self.root / folder / f"{record_id}.json", record)

    def _load(self, folder: str, build: Callable[[Mapping[str, Any]], T]) -> list[T]:
        paths = sorted((self.root / folder).glob("*.json"))
        return [build(json.loads(p.read_text(encoding="utf-8"))) for p in paths]

    def save_visit(self, visit: ReturnVisit) -> None:
        self._save("visits", visit.visit_id, visit.to_record())

    def visits(self) -> list[ReturnVisit]:
        return self._load("visits", ReturnVisit.from_record)

    def save_work_order(self, order: GpsWorkOrder) -> None:
        self._save("work_orders", order.order_id, order.to_record())

    def work_orders(self) -> list[GpsWorkOrder]:
        return self._load("work_orders", GpsWorkOrder.from_record)

    def save_violation(self, violation: TrafficViolation) -> None:
        self._save("violations", violation.violation_id, violation.to_record())

    def violations(self) -> list[TrafficViolation]:
        return self._load("violations", TrafficViolation.from_record)
