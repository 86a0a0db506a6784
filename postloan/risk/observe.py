"""Read one vehicle's `Observations` from a store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from postloan.risk.signals import FenceInfo, Observations


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
