"""Vehicle monitoring views: latest position per vehicle, offline devices, alarms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from postloan.model import DeviceEvent, Fix
from postloan.store import BindingRecord, DeviceRecord

ALARM_PREFIX = "alarm:"  # device event kinds the gateway gives alarms


@dataclass(frozen=True, slots=True)
class OfflineDevice:
    device_id: str
    vehicle_id: str | None
    last_seen: datetime
    offline_for: timedelta


def latest_by_vehicle(
    latest: Sequence[Fix], bindings: Sequence[BindingRecord]
) -> dict[str, Fix]:
    """Return each vehicle's newest fix over the devices bound when it was taken."""
    by_vehicle: dict[str, Fix] = {}
    for fix in latest:
        for binding in bindings:
            if binding.device_id == fix.device_id and binding.covers(fix.time):
                current = by_vehicle.get(binding.vehicle_id)
                if current is None or fix.time > current.time:
                    by_vehicle[binding.vehicle_id] = fix
    return by_vehicle


def offline_devices(
    devices: Sequence[DeviceRecord],
    bindings: Sequence[BindingRecord],
    *,
    now: datetime,
    after: timedelta,
) -> list[OfflineDevice]:
    """Return devices not seen for longer than `after`, longest silence first."""
    fitted = {b.device_id: b.vehicle_id for b in bindings if b.covers(now)}
    offline = [
        OfflineDevice(
            d.device_id, fitted.get(d.device_id), d.last_seen, now - d.last_seen
        )
        for d in devices
        if now - d.last_seen > after
    ]
    return sorted(offline, key=lambda o: (-o.offline_for, o.device_id))


def open_alarms(events: Sequence[DeviceEvent]) -> list[DeviceEvent]:
    """Return the alarm events among `events`, newest first.

    NOTE: alarms have no acknowledgement yet, so "open" means raised within
    the window the caller queried.
    """
    alarms = [e for e in events if e.kind.startswith(ALARM_PREFIX)]
    return sorted(alarms, key=lambda e: e.time, reverse=True)
