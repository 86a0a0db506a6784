"""One test per signal, named for the case it covers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.risk import FenceInfo, Observations, SignalSettings, compute_signals
from postloan.risk.signals import SIGNALS

T0 = datetime(2024, 5, 6, 8, tzinfo=UTC)  # a Monday, 09:00 in Lisbon (WEST)
HOME = (-8.61, 41.15)
FAR = (-3.70, 40.42)  # Madrid, about 420 km from Porto


def fix(
    minutes: float,
    where: tuple[float, float] = HOME,
    device: str = "A",
    speed: float = 0.0,
    valid: bool = True,
    **attributes: object,
) -> Fix:
    return Fix(
        device,
        T0 + timedelta(minutes=minutes),
        where[1],
        where[0],
        speed_kmh=speed,
        valid=valid,
        attributes=attributes,
    )


def names(view: Observations, now: datetime, **settings: object) -> list[str]:
    found = compute_signals(view, now, SignalSettings(**settings))  # type: ignore[arg-type]
    return [signal.name for signal in found]


def one(view: Observations, name: str, now: datetime) -> object:
    return SIGNALS[name](view.until(now), now, SignalSettings())


def test_offline_parked_after_three_heartbeats() -> None:
    view = Observations("V", [fix(0)], devices=["A"])

    early = one(view, "offline", T0 + timedelta(hours=2, minutes=59))
    late = SIGNALS["offline"](view, T0 + timedelta(hours=4), SignalSettings())

    assert early == []
    assert late[0].since == T0 + timedelta(hours=3)
    assert late[0].details["profile"] == "parked"


def test_offline_moving_uses_short_interval() -> None:
    view = Observations("V", [fix(0, speed=50.0)])

    found = SIGNALS["offline"](view, T0 + timedelta(minutes=4), SignalSettings())

    assert found[0].since == T0 + timedelta(minutes=3)
    assert found[0].details["profile"] == "moving"


def test_offline_heartbeat_keeps_device_online() -> None:
    beat = DeviceEvent("A", T0 + timedelta(hours=2), "heartbeat")
    view = Observations("V", [fix(0)], [beat])

    found = SIGNALS["offline"](view, T0 + timedelta(hours=4), SignalSettings())

    assert found == []


def test_power_cut_gt06_and_jt808_names() -> None:
    events = [
        DeviceEvent("A", T0, "alarm:power_cut"),
        DeviceEvent("B", T0 + timedelta(minutes=1), "alarm:main_power_cut"),
    ]
    view = Observations("V", [], events)

    found = SIGNALS["power_cut"](view, T0 + timedelta(minutes=5), SignalSettings())

    assert found[0].since == T0
    assert found[0].details["alarms"] == ["main_power_cut", "power_cut"]
    assert len(found[0].evidence.events) == 2


def test_power_cut_older_than_window_ignored() -> None:
    view = Observations("V", [], [DeviceEvent("A", T0, "alarm:power_cut")])

    found = SIGNALS["power_cut"](view, T0 + timedelta(days=2), SignalSettings())

    assert found == []


def test_tamper_removal_alarm() -> None:
    view = Observations("V", [], [DeviceEvent("A", T0, "alarm:removal")])

    assert names(view, T0 + timedelta(minutes=1)) == ["tamper"]


def test_low_battery_level_under_limit() -> None:
    view = Observations(
        "V",
        [fix(0, battery_level=50), fix(1, battery_level=15), fix(2, battery_level=10)],
    )

    found = SIGNALS["low_battery"](view, T0 + timedelta(minutes=3), SignalSettings())

    assert found[0].since == T0 + timedelta(minutes=1)


def test_left_permitted_after_exit() -> None:
    exit_event = FenceEvent("A", "region", "exit", T0, 41.0, -8.0)
    view = Observations("V", [], [], [exit_event], {"region": FenceInfo("permitted")})

    found = SIGNALS["left_permitted"](view, T0, SignalSettings())

    assert found[0].since == T0


def test_left_permitted_back_inside_clears() -> None:
    events = [
        FenceEvent("A", "region", "exit", T0, 41.0, -8.0),
        FenceEvent("A", "region", "enter", T0 + timedelta(hours=1), 41.0, -8.0),
    ]
    view = Observations("V", [], [], events, {"region": FenceInfo("permitted")})

    assert (
        SIGNALS["left_permitted"](view, T0 + timedelta(hours=2), SignalSettings()) == []
    )


def test_risk_place_enter_and_dwell_carry_kind() -> None:
    events = [
        FenceEvent("A", "shop", "enter", T0, 41.0, -8.0),
        FenceEvent("A", "shop", "dwell", T0 + timedelta(minutes=10), 41.0, -8.0),
    ]
    view = Observations("V", [], [], events, {"shop": FenceInfo("risk", "pawnshop")})

    entered = SIGNALS["risk_place_entered"](view, T0, SignalSettings())
    dwell = SIGNALS["risk_place_dwell"](
        view, T0 + timedelta(minutes=10), SignalSettings()
    )

    assert entered[0].details["kind"] == "pawnshop"
    assert dwell[0].since == T0 + timedelta(minutes=10)


def _nights(where_by_night: list[tuple[float, float]]) -> list[Fix]:
    """One parked night per entry: 23:00-05:00 Lisbon (22:00-04:00 UTC)."""
    fixes = []
    for night, where in enumerate(where_by_night):
        start = 14 * 60 + night * 24 * 60  # minutes after T0: 22:00 UTC
        fixes += [fix(start + step * 30, where) for step in range(13)]
    return fixes


def test_nights_away_after_home_learned() -> None:
    view = Observations(
        "V", _nights([HOME, HOME, HOME, FAR, FAR]), time_zone="Europe/Lisbon"
    )
    now = T0 + timedelta(days=5)

    found = SIGNALS["nights_away"](view.until(now), now, SignalSettings())

    assert found[0].details["nights"] == ["2024-05-09", "2024-05-10"]
    assert found[0].since == T0 + timedelta(days=4, hours=14)


def test_nights_away_without_home_silent() -> None:
    view = Observations("V", _nights([HOME, FAR, FAR]), time_zone="Europe/Lisbon")

    found = SIGNALS["nights_away"](view, T0 + timedelta(days=4), SignalSettings())

    assert found == []


def test_long_distance_from_home() -> None:
    fixes = _nights([HOME, HOME, HOME])
    trip = [fix(4 * 24 * 60, FAR, speed=90.0), fix(4 * 24 * 60 + 1, FAR, speed=90.0)]
    view = Observations("V", fixes + trip, time_zone="Europe/Lisbon")

    found = SIGNALS["long_distance"](view, trip[-1].time, SignalSettings())

    assert found[0].since == trip[0].time
    assert found[0].details["distance_m"] > 400_000


def test_jamming_streak_of_invalid_fixes() -> None:
    fixes = [fix(0)] + [fix(minute, valid=False) for minute in range(1, 13)]
    view = Observations("V", fixes)

    found = SIGNALS["jamming"](view, T0 + timedelta(minutes=13), SignalSettings())

    assert found[0].since == T0 + timedelta(minutes=10)
    assert found[0].details["invalid_fixes"] == 12


def test_jamming_broken_streak_silent() -> None:
    fixes = [fix(m, valid=False) for m in range(9)] + [fix(9)]

    assert (
        SIGNALS["jamming"](
            Observations("V", fixes), T0 + timedelta(minutes=10), SignalSettings()
        )
        == []
    )


def test_trackers_disagree_far_apart() -> None:
    view = Observations("V", [fix(0, HOME, "A"), fix(1, FAR, "B")])

    found = SIGNALS["trackers_disagree"](
        view, T0 + timedelta(minutes=2), SignalSettings()
    )

    assert found[0].details["reason"] == "apart"
    assert found[0].since == T0 + timedelta(minutes=1)


def test_trackers_disagree_one_silent_other_moves() -> None:
    moved = (-8.58, 41.15)  # about 2.5 km east of HOME
    fixes = [fix(0, HOME, "A"), fix(0, HOME, "B")] + [
        fix(m, moved, "B", speed=30.0) for m in range(60, 240, 30)
    ]
    view = Observations("V", sorted(fixes, key=lambda f: f.time))

    found = SIGNALS["trackers_disagree"](
        view, T0 + timedelta(hours=4), SignalSettings()
    )

    assert found[0].details == {"reason": "silent", "silent": "A"}
    assert found[0].since == T0 + timedelta(hours=3)
