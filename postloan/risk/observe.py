"""Read one vehicle's `Observations` from a store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from postloan.risk.signals import FenceInfo, Observations

# How far before a window to look for a silent device's last fix when the
# evaluation date lies in the past.
LOOKBACK_PAST_DAYS = 365


def observe(
    store: Any,
    vehicle_id: str,
    devices: Sequence[str],
    since: datetime,
    until: datetime,
    *,
    fences: Mapping[str, FenceInfo],
    time_zone: str,
) -> Observations:
    """Collect the devices' fixes and events in [since, until), each in time order.

    `store` is a `postloan.store.Store`; it is typed loosely so that this
    package does not import the store and its database drivers.
    """
    fixes = [fix for d in devices for fix in store.track(d, since, until)]
    fixes.extend(_last_fixes_before(store, devices, fixes, since, until))
    events = [e for d in devices for e in store.device_events(d, since, until)]
    fence_events = [e for d in devices for e in store.fence_events(d, since, until)]
    return Observations(
        vehicle_id=vehicle_id,
        fixes=sorted(fixes, key=lambda fix: fix.time),
        events=sorted(events, key=lambda event: event.time),
        fence_events=sorted(fence_events, key=lambda event: event.time),
        fences=fences,
        devices=tuple(devices),
        time_zone=time_zone,
    )


def _last_fixes_before(
    store: Any,
    devices: Sequence[str],
    fixes: Sequence[Any],
    since: datetime,
    until: datetime,
) -> list[Any]:
    """Return the last fix before `since` of each device silent in the window.

    Without it a tracker cut longer ago than the window has no fixes to judge
    and drops out of the offline signal entirely.
    """
    reporting = {fix.device_id for fix in fixes}
    latest = {fix.device_id: fix for fix in store.latest_positions()}
    found = []
    for device_id in devices:
        last = latest.get(device_id)
        if device_id in reporting or last is None:
            continue
        if last.time < since:
            found.append(last)
        elif last.time >= until:
            # Evaluating the past: look for the last fix before the window.
            earlier = store.track(
                device_id, since - timedelta(days=LOOKBACK_PAST_DAYS), since
            )
            found.extend(earlier[-1:])
    return found
