"""Behaviour every Store backend must share; each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from postloan.model import DeviceEvent, FenceEvent, Fix
from postloan.store import (
    CommandNotFoundError,
    CommandTransitionError,
    DeviceRecord,
    Store,
)

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def fix(device_id: str = "860000000000001", seconds: float = 0, **fields: Any) -> Fix:
    values: dict[str, Any] = {"latitude": 22.5, "longitude": 114.05}
    values.update(fields)
    return Fix(device_id, T0 + timedelta(seconds=seconds), **values)


def track_of(device_id: str, count: int, start: int = 0) -> list[Fix]:
    return [
        fix(device_id, 10 * i, latitude=22.5 + i * 1e-4) for i in range(start, count)
    ]


def test_migrate_twice_is_noop(store: Store) -> None:
    store.write_fixes([fix()])

    store.migrate()
    store.migrate()

    assert store.count_fixes() == 1


def test_write_fixes_returns_new_rows(store: Store) -> None:
    fixes = track_of("a", 5)

    stored = store.write_fixes(fixes)

    assert stored == 5
    assert store.count_fixes() == 5


def test_write_fixes_empty_batch(store: Store) -> None:
    assert store.write_fixes([]) == 0


def test_write_fixes_dedupes_within_batch(store: Store) -> None:
    fixes = track_of("a", 3)

    stored = store.write_fixes([*fixes, fixes[0], fixes[2]])

    assert stored == 3
    assert store.count_fixes() == 3


def test_write_fixes_dedupes_across_batches(store: Store) -> None:
    fixes = track_of("a", 4)
    store.write_fixes(fixes[:3])

    stored = store.write_fixes(fixes[1:])

    assert stored == 1
    assert store.track("a") == fixes


def test_write_fixes_resent_batch_stores_nothing(store: Store) -> None:
    fixes = track_of("a", 4) + track_of("b", 4)
    store.write_fixes(fixes)

    stored = store.write_fixes(fixes)

    assert stored == 0
    assert store.count_fixes() == 8


def test_write_fixes_keeps_first_copy(store: Store) -> None:
    first = fix("a", 0, speed_kmh=10.0)
    resent = fix("a", 0, speed_kmh=99.0)
    store.write_fixes([first])

    store.write_fixes([resent])

    assert store.track("a") == [first]


def test_write_fixes_keeps_first_copy_within_batch(store: Store) -> None:
    first = fix("a", 0, speed_kmh=10.0)
    second = fix("a", 0, speed_kmh=99.0)

    stored = store.write_fixes([first, second])

    assert stored == 1
    assert store.track("a") == [first]


def test_write_fixes_same_time_other_device(store: Store) -> None:
    stored = store.write_fixes([fix("a", 0), fix("b", 0)])

    assert stored == 2


def test_write_fixes_accepts_late_fixes(store: Store) -> None:
    fixes = track_of("a", 6)
    store.write_fixes(fixes[3:])

    stored = store.write_fixes(fixes[:3])

    assert stored == 3
    assert store.track("a") == fixes


def test_write_fixes_unordered_batch_tracks_in_time_order(store: Store) -> None:
    fixes = track_of("a", 6)

    store.write_fixes(list(reversed(fixes)))

    assert store.track("a") == fixes


def test_write_fixes_rejects_naive_time(store: Store) -> None:
    naive = Fix("a", datetime(2024, 5, 1, 8, 0), 22.5, 114.05)

    with pytest.raises(ValueError, match="timezone-aware"):
        store.write_fixes([fix("a", 0), naive])

    assert store.count_fixes() == 0


def test_write_fixes_time_round_trips_microseconds(store: Store) -> None:
    times = [
        datetime(2024, 5, 1, 8, 0, 0, 1, tzinfo=UTC),
        datetime(2024, 5, 1, 8, 0, 0, 999_999, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 123_456, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, 654_321, tzinfo=UTC),
    ]
    fixes = [Fix("a", t, 1.0, 2.0) for t in times]

    store.write_fixes(fixes)
    stored = [f.time for f in store.track("a")]

    assert stored == sorted(times)
    assert all(t.utcoffset() == timedelta(0) for t in stored)


def test_write_fixes_converts_other_zones_to_utc(store: Store) -> None:
    beijing = timezone(timedelta(hours=8))
    local = datetime(2024, 5, 1, 16, 0, 0, 250_000, tzinfo=beijing)

    store.write_fixes([Fix("a", local, 1.0, 2.0)])
    (stored,) = store.track("a")

    assert stored.time == datetime(2024, 5, 1, 8, 0, 0, 250_000, tzinfo=UTC)
    assert stored.time.tzinfo == UTC


def test_write_fixes_floats_round_trip_exactly(store: Store) -> None:
    fixes = [
        fix("a", 0, latitude=0.1 + 0.2, longitude=-179.99999999999997),
        fix("a", 1, latitude=math.nextafter(90.0, 0.0), longitude=5e-324),
        fix("a", 2, latitude=-33.868820000000004, longitude=151.20929),
        fix("a", 3, speed_kmh=1 / 3, course=359.99999999999994, altitude_m=-0.0),
    ]

    store.write_fixes(fixes)
    stored = store.track("a")

    assert [f.latitude for f in stored] == [f.latitude for f in fixes]
    assert [f.longitude for f in stored] == [f.longitude for f in fixes]
    assert stored[3].speed_kmh == 1 / 3
    assert stored[3].course == 359.99999999999994


def test_write_fixes_all_fields_round_trip(store: Store) -> None:
    full = fix(
        "a",
        0,
        speed_kmh=63.5,
        course=271.0,
        altitude_m=12.25,
        valid=False,
        satellites=11,
        attributes={"mileage_km": 1234.5, "acc": True},
    )
    bare = fix("a", 1, course=None, altitude_m=None, satellites=None)

    store.write_fixes([full, bare])

    assert store.track("a") == [full, bare]


def test_write_fixes_attributes_round_trip(store: Store) -> None:
    attributes = {
        "voltage_v": 12.6,
        "gsm_signal": 4,
        "alarm": None,
        "acc": False,
        "cells": [{"mcc": 460, "mnc": 0, "lac": 9520, "cell_id": 3671}],
        "note": '断油 ✓ "quoted" \\ back',
        "big": 2**53 + 1,
    }

    store.write_fixes([fix("a", 0, attributes=attributes)])
    (stored,) = store.track("a")

    assert stored.attributes == attributes


def test_write_fixes_empty_attributes_read_back_empty(store: Store) -> None:
    store.write_fixes([fix("a", 0, attributes={})])

    (stored,) = store.track("a")

    assert stored.attributes == {}


def test_write_fixes_rejects_nan_attribute(store: Store) -> None:
    with pytest.raises(ValueError):
        store.write_fixes([fix("a", 0, attributes={"voltage_v": math.nan})])

    assert store.count_fixes() == 0


def test_track_window_since_inclusive_until_exclusive(store: Store) -> None:
    fixes = track_of("a", 10)
    store.write_fixes(fixes)

    window = store.track("a", since=fixes[2].time, until=fixes[5].time)

    assert window == fixes[2:5]


def test_track_window_open_ends(store: Store) -> None:
    fixes = track_of("a", 10)
    store.write_fixes(fixes)

    assert store.track("a", since=fixes[7].time) == fixes[7:]
    assert store.track("a", until=fixes[3].time) == fixes[:3]


def test_track_adjacent_windows_cover_each_fix_once(store: Store) -> None:
    fixes = track_of("a", 10)
    store.write_fixes(fixes)
    middle = fixes[4].time

    first = store.track("a", until=middle)
    second = store.track("a", since=middle)

    assert first + second == fixes


def test_track_excludes_other_devices(store: Store) -> None:
    store.write_fixes(track_of("a", 3) + track_of("b", 4))

    assert len(store.track("a")) == 3
    assert store.track("missing") == []


def test_track_rejects_naive_window(store: Store) -> None:
    with pytest.raises(ValueError, match="since"):
        store.track("a", since=datetime(2024, 5, 1))


def test_iter_track_matches_track(store: Store) -> None:
    fixes = track_of("a", 25)
    store.write_fixes(fixes)

    streamed = list(store.iter_track("a", batch=4))

    assert streamed == fixes


def test_iter_track_window_and_exact_batch_multiple(store: Store) -> None:
    fixes = track_of("a", 20)
    store.write_fixes(fixes)

    streamed = list(
        store.iter_track("a", since=fixes[2].time, until=fixes[14].time, batch=4)
    )

    assert streamed == fixes[2:14]


def test_iter_track_sqlite_pages_see_later_writes(sqlite_store: Store) -> None:
    fixes = track_of("a", 10)
    sqlite_store.write_fixes(fixes[:6])
    stream = sqlite_store.iter_track("a", batch=3)
    first_page = [next(stream) for _ in range(3)]

    sqlite_store.write_fixes(fixes[6:])
    rest = list(stream)

    assert first_page + rest == fixes


@pytest.mark.postgres
def test_iter_track_postgres_cursor_reads_one_snapshot(
    postgres_store: Store,
) -> None:
    fixes = track_of("a", 10)
    postgres_store.write_fixes(fixes[:6])
    stream = postgres_store.iter_track("a", batch=3)
    first_page = [next(stream) for _ in range(3)]

    postgres_store.write_fixes(fixes[6:])
    rest = list(stream)

    assert first_page + rest == fixes[:6]


def test_iter_track_rejects_zero_batch(store: Store) -> None:
    with pytest.raises(ValueError, match="batch"):
        list(store.iter_track("a", batch=0))


def test_latest_positions_one_per_device(store: Store) -> None:
    a = track_of("a", 5)
    b = track_of("b", 3)
    store.write_fixes(a + b)

    latest = store.latest_positions()

    assert latest == [a[-1], b[-1]]


def test_latest_positions_ignores_late_fix(store: Store) -> None:
    fixes = track_of("a", 5)
    store.write_fixes(fixes[2:])

    store.write_fixes(fixes[:2])

    assert store.latest_positions() == [fixes[-1]]


def test_latest_positions_follows_newer_batch(store: Store) -> None:
    fixes = track_of("a", 5)
    store.write_fixes(fixes[:2])

    store.write_fixes(fixes[2:])

    assert store.latest_positions() == [fixes[-1]]


def test_count_fixes_per_device(store: Store) -> None:
    store.write_fixes(track_of("a", 5) + track_of("b", 3))

    assert store.count_fixes() == 8
    assert store.count_fixes("a") == 5
    assert store.count_fixes("b") == 3
    assert store.count_fixes("missing") == 0


def test_device_ids_from_fixes_and_devices(store: Store) -> None:
    store.write_fixes([fix("c", 0), fix("a", 0)])
    store.touch_device("b", "jt808", seen_at=T0)
    store.touch_device("a", "gt06", seen_at=T0)

    assert store.device_ids() == ["a", "b", "c"]


def test_touch_device_widens_seen_times(store: Store) -> None:
    store.touch_device("a", "gt06", seen_at=T0 + timedelta(minutes=5))
    store.touch_device("a", "gt06", seen_at=T0 + timedelta(minutes=9))

    store.touch_device("a", "gt06", seen_at=T0)

    assert store.devices() == [DeviceRecord("a", "gt06", T0, T0 + timedelta(minutes=9))]


def test_touch_device_older_sighting_keeps_protocol(store: Store) -> None:
    store.touch_device("a", "jt808", seen_at=T0 + timedelta(minutes=5))
    store.touch_device("a", "gt06", seen_at=T0)

    (device,) = store.devices()

    assert device.protocol == "jt808"


def test_touch_device_newer_sighting_replaces_protocol(store: Store) -> None:
    store.touch_device("a", "jt808", seen_at=T0)
    store.touch_device("a", "gt06", seen_at=T0 + timedelta(minutes=5))

    (device,) = store.devices()

    assert device.protocol == "gt06"


def test_write_device_events_dedupes(store: Store) -> None:
    login = DeviceEvent("a", T0, "login", {"timezone": "+08:00"})
    alarm = DeviceEvent("a", T0, "alarm", {"code": "sos"})
    later = DeviceEvent("a", T0 + timedelta(seconds=30), "heartbeat")

    first = store.write_device_events([login, alarm, login])
    second = store.write_device_events([alarm, later])

    assert first == 2
    assert second == 1
    assert store.device_events() == [alarm, login, later]


def test_device_events_filter_by_device_and_window(store: Store) -> None:
    events = [
        DeviceEvent(device, T0 + timedelta(minutes=m), "heartbeat")
        for device in ("a", "b")
        for m in range(4)
    ]
    store.write_device_events(events)

    selected = store.device_events(
        "a", since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)
    )

    assert selected == [e for e in events if e.device_id == "a"][1:3]


def test_write_fence_events_dedupes(store: Store) -> None:
    enter = FenceEvent("a", "depot", "enter", T0, 22.5, 114.05)
    leave = FenceEvent("a", "depot", "exit", T0 + timedelta(minutes=5), 22.6, 114.1)
    other_fence = FenceEvent("a", "city", "enter", T0, 22.5, 114.05)

    first = store.write_fence_events([enter, enter])
    second = store.write_fence_events([enter, leave, other_fence])

    assert first == 1
    assert second == 2
    assert store.fence_events() == [other_fence, enter, leave]


def test_fence_events_filter_by_device_and_window(store: Store) -> None:
    events = [
        FenceEvent(device, "depot", "enter", T0 + timedelta(hours=h), 1.0, 2.0)
        for device in ("a", "b")
        for h in range(3)
    ]
    store.write_fence_events(events)

    assert store.fence_events("b") == events[3:]
    assert store.fence_events(since=T0 + timedelta(hours=2)) == [events[2], events[5]]


def test_fence_events_round_trip_coordinates(store: Store) -> None:
    event = FenceEvent("a", "depot", "enter", T0, 0.1 + 0.2, -179.99999999999997)

    store.write_fence_events([event])

    assert store.fence_events() == [event]


def test_add_command_starts_queued(store: Store) -> None:
    command_id = store.add_command(
        "a", "gt06", "fuel_cut", {"text": "RELAY,1#"}, created_at=T0
    )

    (command,) = store.commands()

    assert command.command_id == command_id
    assert command.status == "queued"
    assert command.payload == {"text": "RELAY,1#"}
    assert command.created_at == T0
    assert command.sent_at is None
    assert command.response is None


def test_update_command_lifecycle(store: Store) -> None:
    command_id = store.add_command("a", "gt06", "fuel_cut", {}, created_at=T0)
    sent_at = T0 + timedelta(seconds=1)
    answered_at = T0 + timedelta(seconds=4, microseconds=7)

    store.update_command(command_id, "sent", at=sent_at)
    store.update_command(
        command_id, "answered", at=answered_at, response={"text": "Cut off OK"}
    )
    (command,) = store.commands()

    assert command.status == "answered"
    assert command.sent_at == sent_at
    assert command.updated_at == answered_at
    assert command.response == {"text": "Cut off OK"}


def test_update_command_without_response_keeps_stored_one(store: Store) -> None:
    command_id = store.add_command("a", "gt06", "locate", {}, created_at=T0)
    store.update_command(command_id, "sent", at=T0, response={"frame": "7878"})

    store.update_command(command_id, "timeout", at=T0 + timedelta(seconds=30))
    (command,) = store.commands()

    assert command.status == "timeout"
    assert command.response == {"frame": "7878"}


def test_update_command_late_answer_after_timeout(store: Store) -> None:
    command_id = store.add_command("a", "gt06", "fuel_cut", {}, created_at=T0)
    store.update_command(command_id, "sent", at=T0)
    store.update_command(command_id, "timeout", at=T0 + timedelta(seconds=30))

    store.update_command(command_id, "answered", at=T0 + timedelta(seconds=45))

    assert store.commands()[0].status == "answered"


def test_update_command_rejects_move_from_final_status(store: Store) -> None:
    command_id = store.add_command("a", "gt06", "fuel_cut", {}, created_at=T0)
    store.update_command(command_id, "failed", at=T0)

    with pytest.raises(CommandTransitionError, match="'failed' to 'sent'"):
        store.update_command(command_id, "sent", at=T0)

    assert store.commands()[0].status == "failed"


def test_update_command_rejects_unknown_status(store: Store) -> None:
    command_id = store.add_command("a", "gt06", "fuel_cut", {}, created_at=T0)

    with pytest.raises(ValueError, match="unknown command status 'done'"):
        store.update_command(command_id, "done", at=T0)


def test_update_command_rejects_unknown_id(store: Store) -> None:
    with pytest.raises(CommandNotFoundError, match="command 999 not found"):
        store.update_command(999, "sent", at=T0)


def test_commands_filter_by_device_and_status(store: Store) -> None:
    first = store.add_command("a", "gt06", "fuel_cut", {}, created_at=T0)
    second = store.add_command("b", "jt808", "locate", {}, created_at=T0)
    third = store.add_command("a", "gt06", "fuel_restore", {}, created_at=T0)
    store.update_command(first, "sent", at=T0)

    assert [c.command_id for c in store.commands("a")] == [first, third]
    assert [c.command_id for c in store.commands(status="queued")] == [second, third]
    assert [c.command_id for c in store.commands("a", "sent")] == [first]


def test_concurrent_writer_and_readers(store: Store) -> None:
    batches = [track_of("a", 50 * (i + 1), start=50 * i) for i in range(40)]
    failures: list[str] = []
    done = threading.Event()

    def write() -> None:
        try:
            for batch in batches:
                store.write_fixes(batch)
        finally:
            done.set()

    def read() -> None:
        last_count = 0
        while not done.is_set():
            try:
                count = store.count_fixes("a")
                times = [f.time for f in store.track("a")]
            except Exception as exc:
                failures.append(repr(exc))
                return
            if count < last_count:
                failures.append(f"count went back from {last_count} to {count}")
            if times != sorted(times) or len(times) % 50:
                failures.append(f"torn or unordered track of {len(times)} fixes")
            last_count = count

    threads = [threading.Thread(target=write, daemon=True)]
    threads += [threading.Thread(target=read, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert store.count_fixes("a") == 2000


def test_close_twice_is_harmless(store: Store) -> None:
    store.close()

    store.close()
