"""Risk signals: pure functions of one vehicle's records and a clock.

Every signal function takes the vehicle's `Observations`, the evaluation time
`now` and `SignalSettings`, reads only records at or before `now`, and
returns the signals that hold at `now`. Each `Signal` carries the time it
became true (the fix or event time behind it, or for `offline` the moment the
allowed silence ran out) and the evidence it rests on.

Alarm names follow the gateway's ``alarm:<name>`` device events: GT06 names
from the Concox JM-VL03 v1.1.2 alarm byte, JT808 names from the JT/T 808
alarm flag bits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from postloan.model import EMPTY, DeviceEvent, FenceEvent, Fix
from postloan.risk.evidence import Evidence, stamp
from postloan.risk.places import (
    NIGHT_START,
    Place,
    PlaceSettings,
    find_stops,
    haversine_m,
    learn_places,
    nights_of,
)

POWER_CUT_ALARMS = frozenset({"alarm:power_cut", "alarm:main_power_cut"})
TAMPER_ALARMS = frozenset(
    {"alarm:removal", "alarm:tamper", "alarm:unplugged", "alarm:illegal_displacement"}
)
LOW_BATTERY_ALARMS = frozenset(
    {"alarm:low_battery", "alarm:low_internal_battery", "alarm:low_battery_shutdown"}
)
# Records that do not show the device is alive and well.
NOT_REPORTS = frozenset({"fix_rejected"})


@dataclass(frozen=True, slots=True)
class FenceInfo:
    """The fence facts the risk engine uses: its role and `properties.kind`."""

    role: str  # permitted, risk, home or work
    kind: str | None = None  # e.g. pawnshop, second_hand_market, dismantling, port


@dataclass(frozen=True)
class Observations:
    """One vehicle's records, each sequence in time order."""

    vehicle_id: str
    fixes: Sequence[Fix] = ()
    events: Sequence[DeviceEvent] = ()
    fence_events: Sequence[FenceEvent] = ()
    fences: Mapping[str, FenceInfo] = field(default_factory=lambda: EMPTY)
    devices: Sequence[str] = ()  # trackers fitted, even if silent
    time_zone: str = "UTC"  # the borrower's, for night and day rules

    def until(self, now: datetime) -> Observations:
        """Return the records at or before `now`."""
        return Observations(
            self.vehicle_id,
            [fix for fix in self.fixes if fix.time <= now],
            [event for event in self.events if event.time <= now],
            [event for event in self.fence_events if event.time <= now],
            self.fences,
            self.devices,
            self.time_zone,
        )

    def device_ids(self) -> list[str]:
        seen = dict.fromkeys(self.devices)
        seen.update(dict.fromkeys(fix.device_id for fix in self.fixes))
        return sorted(seen)


@dataclass(frozen=True, slots=True)
class SignalSettings:
    """Thresholds of every signal; each default is stated with its reason."""

    # Reporting profile: a parked tracker sends a heartbeat at least this
    # often, a moving one a fix. Devices are configured per lender, so both
    # are settings. Offline is declared after `missed_reports` intervals.
    parked_interval_s: float = 3600.0
    moving_interval_s: float = 60.0
    missed_reports: int = 3
    # Alarms older than this no longer describe the vehicle's state.
    alarm_window_s: float = 86_400.0
    low_battery_percent: int = 20
    jamming_fixes: int = 10  # consecutive invalid fixes
    long_distance_m: float = 300_000.0
    nights_window: int = 7  # local nights looked back on
    nights_away_min: int = 2
    disagree_distance_m: float = 1_000.0  # two trackers this far apart
    disagree_window_s: float = 600.0  # at fix times this close
    silent_moved_m: float = 1_000.0  # one tracker moved this far, the other silent
    places: PlaceSettings = field(default_factory=PlaceSettings)


@dataclass(frozen=True, slots=True)
class Signal:
    """A condition that holds for a vehicle, since `since`, with its evidence."""

    name: str
    vehicle_id: str
    since: datetime
    evidence: Evidence
    device_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vehicle_id": self.vehicle_id,
            "device_id": self.device_id,
            "since": stamp(self.since),
            "details": dict(self.details),
            "evidence": self.evidence.to_record(),
        }


SignalFunction = Callable[[Observations, datetime, SignalSettings], list[Signal]]


def _signal(
    name: str, view: Observations, since: datetime, evidence: Evidence, **details: Any
) -> Signal:
    device = details.pop("device_id", None)
    return Signal(
        name, view.vehicle_id, since, evidence, device, MappingProxyType(details)
    )


# --- device health ------------------------------------------------------------


def offline(
    view: Observations, now: datetime, settings: SignalSettings
) -> list[Signal]:
    """Fire per device silent for longer than its reporting profile allows.

    The profile is the moving one when the last fix had speed above 0 or
    ignition (``acc``) on, else the parked one. A device that never reported
    is not judged here.
    """
    signals = []
    for device in view.device_ids():
        fixes = [fix for fix in view.fixes if fix.device_id == device]
        events = [
            event
            for event in view.events
            if event.device_id == device and event.kind not in NOT_REPORTS
        ]
        last_fix = fixes[-1] if fixes else None
        last_event = events[-1] if events else None
        times = [record.time for record in (last_fix, last_event) if record]
        if not times:
            continue
        moving = last_fix is not None and _is_moving(last_fix)
        interval = settings.moving_interval_s if moving else settings.parked_interval_s
        deadline = max(times) + timedelta(seconds=interval * settings.missed_reports)
        if now > deadline:
            evidence = Evidence.of(
                [last_fix] if last_fix else [], [last_event] if last_event else []
            )
            signals.append(
                _signal(
                    "offline",
                    view,
                    deadline,
                    evidence,
                    device_id=device,
                    last_report=stamp(max(times)),
                    profile="moving" if moving else "parked",
                )
            )
    return signals


def _is_moving(fix: Fix) -> bool:
    return fix.speed_kmh > 0 or fix.attributes.get("acc") is True


def _alarm(name: str, kinds: frozenset[str]) -> SignalFunction:
    def detect(
        view: Observations, now: datetime, settings: SignalSettings
    ) -> list[Signal]:
        start = now - timedelta(seconds=settings.alarm_window_s)
        hits = [e for e in view.events if e.kind in kinds and e.time >= start]
        if not hits:
            return []
        alarms = sorted({event.kind.removeprefix("alarm:") for event in hits})
        return [
            _signal(name, view, hits[0].time, Evidence.of(events=hits), alarms=alarms)
        ]

    return detect


def low_battery(
    view: Observations, now: datetime, settings: SignalSettings
) -> list[Signal]:
    """Fire on a low-battery alarm, or a last reported battery level under the limit."""
    signals = _alarm("low_battery", LOW_BATTERY_ALARMS)(view, now, settings)
    if signals:
        return signals
    levels = [fix for fix in view.fixes if "battery_level" in fix.attributes]
    if not levels or levels[-1].attributes["battery_level"] >= (
        settings.low_battery_percent
    ):
        return []
    run = _trailing(
        levels,
        lambda fix: fix.attributes["battery_level"] < (settings.low_battery_percent),
    )
    return [
        _signal(
            "low_battery",
            view,
            run[0].time,
            Evidence.of(run[:1] + run[-1:]),
            battery_level=levels[-1].attributes["battery_level"],
        )
    ]


def _trailing(fixes: Sequence[Fix], test: Callable[[Fix], bool]) -> list[Fix]:
    """Return the longest run at the end of `fixes` that passes `test`."""
    run: list[Fix] = []
    for fix in reversed(fixes):
        if not test(fix):
            break
        run.append(fix)
    return run[::-1]


def jamming(
    view: Observations, now: datetime, settings: SignalSettings
) -> list[Signal]:
    """Fire per device whose latest `jamming_fixes` or more fixes are all invalid."""
    signals = []
    for device in view.device_ids():
        fixes = [fix for fix in view.fixes if fix.device_id == device]
        run = _trailing(fixes, lambda fix: not fix.valid)
        if len(run) >= settings.jamming_fixes:
            became = run[settings.jamming_fixes - 1]
            signals.append(
                _signal(
                    "jamming",
                    view,
                    became.time,
                    Evidence.of(run),
                    device_id=device,
                    invalid_fixes=len(run),
                )
            )
    return signals


# --- fences -------------------------------------------------------------------


def _latest_by_fence(view: Observations, role: str) -> dict[str, list[FenceEvent]]:
    """Return, per fence of `role`, its events from the last enter or exit on."""
    spells: dict[str, list[FenceEvent]] = {}
    for event in view.fence_events:
        info = view.fences.get(event.fence_id)
        if info is None or info.role != role:
            continue
        if event.event == "dwell":
            spells.setdefault(event.fence_id, []).append(event)
        else:
            spells[event.fence_id] = [event]
    return spells


def left_permitted(
    view: Observations, now: datetime, settings: SignalSettings
) -> list[Signal]:
    """Fire per permitted fence whose latest event is an exit."""
    return [
        _signal(
            "left_permitted",
            view,
            spell[0].time,
            Evidence.of(fence_events=spell),
            fence_id=fence_id,
        )
        for fence_id, spell in _latest_by_fence(view, "permitted").items()
        if spell[0].event == "exit"
    ]


def _risk_place(name: str, event_kind: str) -> SignalFunction:
    def detect(
        view: Observations, now: datetime, settings: SignalSettings
    ) -> list[Signal]:
        signals = []
        for fence_id, spell in _latest_by_fence(view, "risk").items():
            hits = [event for event in spell if event.event == event_kind]
            if spell[0].event != "enter" or not hits:
                continue
            kind = view.fences[fence_id].kind
            evidence = Evidence.of(fence_events=[spell[0], *hits[:1]])
            signals.append(
                _signal(
                    name, view, hits[0].time, evidence, fence_id=fence_id, kind=kind
                )
            )
        return signals

    return detect


# --- learned places -----------------------------------------------------------


def _places(
    view: Observations, settings: SignalSettings
) -> tuple[dict[str, Place], list[Any]]:
    """Learn places from the device with the most fixes, a vehicle's main tracker."""
    by_device: dict[str, list[Fix]] = {}
    for fix in view.fixes:
        by_device.setdefault(fix.device_id, []).append(fix)
    if not by_device:
        return {}, []
    main = max(by_device.values(), key=len)
    stops = find_stops(main, settings.places)
    zone = ZoneInfo(view.time_zone)
    return learn_places(stops, zone, settings.places), stops


def nights_away(
    view: Observations, now: datetime, settings: SignalSettings
) -> list[Signal]:
    """Fire when the vehicle spent `nights_away_min` of the last nights away from home.

    A night counts as away when the vehicle had a night stop that night and
    none of them at home. Nights without a stop (driving, or no data) do not
    count either way.
    """
    places, stops = _places(view, settings)
    home = places.get("home")
    if home is None:
        return []
    zone = ZoneInfo(view.time_zone)
    first_night = now.astimezone(zone).date() - timedelta(days=settings.nights_window)
    nights: dict[Any, list[Any]] = {}
    for stop in stops:
        for night in nights_of(stop, zone):
            if night >= first_night:
                nights.setdefault(night, []).append(stop)
    radius = settings.places.stop_radius_m
    away = [
        (night, group[0])
        for night, group in sorted(nights.items())
        if all(_distance(home, stop) > radius for stop in group)
    ]
    if len(away) < settings.nights_away_min:
        return []
    night, stop = away[settings.nights_away_min - 1]
    night_start = datetime.combine(night, NIGHT_START, zone)
    became = next((f for f in stop.fixes if f.time >= night_start), stop.fixes[0])
    evidence = Evidence.of([became])
    return [
        _signal(
            "nights_away",
            view,
            became.time,
            evidence,
            nights=[night.isoformat() for night, _ in away],
        )
    ]


def _distance(place: Place, point: Any) -> float:
    return haversine_m(place.longitude, place.latitude, point.longitude, point.latitude)


def long_distance(
    view: Observations, now: datetime, settings: SignalSettings
) -> list[Signal]:
    """Fire while the latest valid fix is over `long_distance_m` from home."""
    places, _ = _places(view, settings)
    home = places.get("home")
    valid = [fix for fix in view.fixes if fix.valid]
    if home is None or not valid:
        return []
    run = _trailing(valid, lambda fix: _distance(home, fix) > settings.long_distance_m)
    if not run:
        return []
    return [
        _signal(
            "long_distance",
            view,
            run[0].time,
            Evidence.of([run[0], run[-1]]),
            distance_m=round(_distance(home, run[-1])),
        )
    ]


# --- two trackers -------------------------------------------------------------


def trackers_disagree(
    view: Observations, now: datetime, settings: SignalSettings
) -> list[Signal]:
    """Fire when two trackers of the vehicle are far apart or one is silent.

    Far apart: the latest valid fixes of two devices, at most
    `disagree_window_s` apart in time, are over `disagree_distance_m` apart.
    Silent: one device has not reported for the parked allowance while the
    other has since moved over `silent_moved_m` from its last position.
    """
    latest = _latest_valid(view)
    devices = sorted(latest)
    for index, first in enumerate(devices):
        for second in devices[index + 1 :]:
            found = _apart(view, latest[first], latest[second], settings)
            found = found or _silent(view, latest[first], latest[second], now, settings)
            found = found or _silent(view, latest[second], latest[first], now, settings)
            if found:
                return [found]
    return []


def _latest_valid(view: Observations) -> dict[str, Fix]:
    latest: dict[str, Fix] = {}
    for fix in view.fixes:
        if fix.valid:
            latest[fix.device_id] = fix
    return latest


def _apart(
    view: Observations, first: Fix, second: Fix, settings: SignalSettings
) -> Signal | None:
    gap_s = abs((first.time - second.time).total_seconds())
    distance = haversine_m(
        first.longitude, first.latitude, second.longitude, second.latitude
    )
    if gap_s > settings.disagree_window_s or distance <= settings.disagree_distance_m:
        return None
    return _signal(
        "trackers_disagree",
        view,
        max(first.time, second.time),
        Evidence.of([first, second]),
        reason="apart",
        distance_m=round(distance),
    )


def _silent(
    view: Observations, quiet: Fix, moving: Fix, now: datetime, settings: SignalSettings
) -> Signal | None:
    allowance = timedelta(seconds=settings.parked_interval_s * settings.missed_reports)
    last_report = max(
        [quiet.time] + [e.time for e in view.events if e.device_id == quiet.device_id]
    )
    if now - last_report <= allowance:
        return None
    later = [
        fix
        for fix in view.fixes
        if fix.device_id == moving.device_id
        and fix.valid
        and fix.time > last_report
        and haversine_m(quiet.longitude, quiet.latitude, fix.longitude, fix.latitude)
        > settings.silent_moved_m
    ]
    if not later:
        return None
    return _signal(
        "trackers_disagree",
        view,
        max(later[0].time, last_report + allowance),
        Evidence.of([quiet, later[0]]),
        reason="silent",
        silent=quiet.device_id,
    )


#: Every signal by name; rules refer to these names.
SIGNALS: Mapping[str, SignalFunction] = MappingProxyType(
    {
        "offline": offline,
        "power_cut": _alarm("power_cut", POWER_CUT_ALARMS),
        "tamper": _alarm("tamper", TAMPER_ALARMS),
        "low_battery": low_battery,
        "left_permitted": left_permitted,
        "risk_place_entered": _risk_place("risk_place_entered", "enter"),
        "risk_place_dwell": _risk_place("risk_place_dwell", "dwell"),
        "nights_away": nights_away,
        "long_distance": long_distance,
        "jamming": jamming,
        "trackers_disagree": trackers_disagree,
    }
)


def compute_signals(
    view: Observations, now: datetime, settings: SignalSettings = SignalSettings()
) -> list[Signal]:
    """Return every signal true at `now`, ordered by the time it became true."""
    current = view.until(now)
    found = [
        signal
        for function in SIGNALS.values()
        for signal in function(current, now, settings)
    ]
    return sorted(found, key=lambda signal: (signal.since, signal.name))
