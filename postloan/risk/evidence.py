"""Evidence: references to the fixes, device events, fence events and payments
behind a signal or a rule firing.

Records have no surrogate ids in the store, so each reference is the record's
natural key, the same key the store de-duplicates on: ``device@time`` for a
fix, ``device@time#kind`` for a device event and
``device@time#fence:event`` for a fence event. Payments are named by their
bank reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.times import format_time


def stamp(moment: datetime) -> str:
    """Format an aware time as ISO-8601 UTC with a Z suffix (`format_time`)."""
    return format_time(moment)


def fix_ref(fix: Fix) -> str:
    return f"{fix.device_id}@{stamp(fix.time)}"


def event_ref(event: DeviceEvent) -> str:
    return f"{event.device_id}@{stamp(event.time)}#{event.kind}"


def fence_ref(event: FenceEvent) -> str:
    return f"{event.device_id}@{stamp(event.time)}#{event.fence_id}:{event.event}"


@dataclass(frozen=True, slots=True)
class Evidence:
    """References to the records a conclusion rests on, each in time order."""

    fixes: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    fence_events: tuple[str, ...] = ()
    payments: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        fixes: Iterable[Fix] = (),
        events: Iterable[DeviceEvent] = (),
        fence_events: Iterable[FenceEvent] = (),
    ) -> Evidence:
        return cls(
            tuple(fix_ref(fix) for fix in fixes),
            tuple(event_ref(event) for event in events),
            tuple(fence_ref(event) for event in fence_events),
        )

    def merge(self, other: Evidence) -> Evidence:
        """Return the union of both, keeping first-seen order without repeats."""
        return Evidence(
            _union(self.fixes, other.fixes),
            _union(self.events, other.events),
            _union(self.fence_events, other.fence_events),
            _union(self.payments, other.payments),
        )

    def to_record(self) -> dict[str, list[str]]:
        return {
            "fixes": list(self.fixes),
            "events": list(self.events),
            "fence_events": list(self.fence_events),
            "payments": list(self.payments),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Evidence:
        return cls(
            tuple(record.get("fixes", ())),
            tuple(record.get("events", ())),
            tuple(record.get("fence_events", ())),
            tuple(record.get("payments", ())),
        )


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))
