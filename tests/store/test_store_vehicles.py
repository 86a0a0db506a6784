"""Vehicles and device-to-vehicle bindings; each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postloan.store import (
    BindingConflictError,
    BindingNotFoundError,
    BindingRecord,
    Store,
    VehicleNotFoundError,
    VehicleRecord,
)

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
VIN = "WVWZZZ1JZ3W386752"
WIRED, WIRELESS = "860000000000001", "860000000000002"


def test_upsert_vehicle_adds_then_updates(store: Store) -> None:
    store.upsert_vehicle("car-1", vin=VIN, plate="AA-00-01")

    store.upsert_vehicle("car-1", vin=VIN, plate="AA-00-02")

    assert store.vehicles() == [VehicleRecord("car-1", VIN, "AA-00-02")]


def test_upsert_vehicle_rejects_malformed_vin(store: Store) -> None:
    with pytest.raises(ValueError, match="ISO 3779"):
        store.upsert_vehicle("car-1", vin="WVWZZZ1JZ3W38675O")


def test_upsert_vehicle_rejects_vin_of_other_vehicle(store: Store) -> None:
    store.upsert_vehicle("car-1", vin=VIN)

    with pytest.raises(ValueError, match="already belongs"):
        store.upsert_vehicle("car-2", vin=VIN)


def test_bind_device_to_unknown_vehicle(store: Store) -> None:
    with pytest.raises(VehicleNotFoundError, match="car-9"):
        store.bind_device(WIRED, "car-9", valid_from=T0)


def test_vehicle_carries_two_trackers(store: Store) -> None:
    store.upsert_vehicle("car-1")

    store.bind_device(WIRED, "car-1", valid_from=T0, role="wired")
    store.bind_device(WIRELESS, "car-1", valid_from=T0 + DAY, role="wireless")

    assert store.devices_at("car-1", T0 + 2 * DAY) == [WIRED, WIRELESS]
    assert store.devices_at("car-1", T0 + DAY / 2) == [WIRED]


def test_vehicle_at_follows_validity(store: Store) -> None:
    store.upsert_vehicle("car-1")
    store.upsert_vehicle("car-2")
    store.bind_device(WIRED, "car-1", valid_from=T0, valid_to=T0 + DAY)
    store.bind_device(WIRED, "car-2", valid_from=T0 + DAY)

    assert store.vehicle_at(WIRED, T0 - DAY) is None
    assert store.vehicle_at(WIRED, T0) == "car-1"
    assert store.vehicle_at(WIRED, T0 + DAY) == "car-2"
    assert store.vehicle_at(WIRED, T0 + 100 * DAY) == "car-2"


def test_bind_device_overlap_rejected(store: Store) -> None:
    store.upsert_vehicle("car-1")
    store.upsert_vehicle("car-2")
    store.bind_device(WIRED, "car-1", valid_from=T0)

    with pytest.raises(BindingConflictError, match="car-1"):
        store.bind_device(WIRED, "car-2", valid_from=T0 + DAY)


def test_bind_device_before_closed_binding_allowed(store: Store) -> None:
    store.upsert_vehicle("car-1")
    store.upsert_vehicle("car-2")
    store.bind_device(WIRED, "car-2", valid_from=T0 + DAY)

    store.bind_device(WIRED, "car-1", valid_from=T0, valid_to=T0 + DAY)

    assert [b.vehicle_id for b in store.bindings(WIRED)] == ["car-1", "car-2"]


def test_bind_device_rejects_empty_interval(store: Store) -> None:
    store.upsert_vehicle("car-1")

    with pytest.raises(ValueError, match="must end after it starts"):
        store.bind_device(WIRED, "car-1", valid_from=T0, valid_to=T0)


def test_unbind_device_closes_open_binding(store: Store) -> None:
    store.upsert_vehicle("car-1")
    store.bind_device(WIRED, "car-1", valid_from=T0, role="wired")

    store.unbind_device(WIRED, at=T0 + DAY)

    assert store.bindings(WIRED) == [
        BindingRecord(WIRED, "car-1", T0, T0 + DAY, "wired")
    ]


def test_unbind_device_without_open_binding(store: Store) -> None:
    with pytest.raises(BindingNotFoundError, match=WIRED):
        store.unbind_device(WIRED, at=T0)


def test_unbind_device_before_start_rejected(store: Store) -> None:
    store.upsert_vehicle("car-1")
    store.bind_device(WIRED, "car-1", valid_from=T0)

    with pytest.raises(ValueError, match="cannot be unbound"):
        store.unbind_device(WIRED, at=T0)


def test_bindings_filter_by_vehicle(store: Store) -> None:
    store.upsert_vehicle("car-1")
    store.upsert_vehicle("car-2")
    store.bind_device(WIRED, "car-1", valid_from=T0)
    store.bind_device(WIRELESS, "car-2", valid_from=T0)

    assert [b.device_id for b in store.bindings(vehicle_id="car-2")] == [WIRELESS]


def test_bind_device_rejects_naive_time(store: Store) -> None:
    store.upsert_vehicle("car-1")

    with pytest.raises(ValueError, match="timezone-aware"):
        store.bind_device(WIRED, "car-1", valid_from=datetime(2024, 5, 1))
