"""Vehicle affairs rules: visits, work orders with bindings, violation import."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from postloan.affairs import (
    AffairError,
    GpsWorkOrder,
    JsonAffairsRepository,
    OrderKind,
    OrderStatus,
    ReturnVisit,
    VisitStatus,
    complete_visit,
    complete_work_order,
    offline_devices,
    open_alarms,
    read_violations,
)
from postloan.model import DeviceEvent
from postloan.store import DeviceRecord, Store

NOW = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def _visit() -> ReturnVisit:
    return ReturnVisit("V-1", "C-1", None, NOW, "dina", "ana")


def _order(kind: OrderKind) -> GpsWorkOrder:
    return GpsWorkOrder("W-1", kind, "CAR-1", "860000000000001", "tech", "ana", NOW)


def test_visit_complete_records_outcome() -> None:
    done = complete_visit(_visit(), at=NOW, outcome="borrower promised to pay")

    assert done.status is VisitStatus.DONE
    assert done.done_at == NOW
    assert done.outcome == "borrower promised to pay"


def test_visit_complete_twice_raises() -> None:
    done = complete_visit(_visit(), at=NOW, outcome="met")

    with pytest.raises(AffairError, match="V-1 is done"):
        complete_visit(done, at=NOW, outcome="again")


def test_visit_complete_needs_note() -> None:
    with pytest.raises(AffairError, match="outcome note"):
        complete_visit(_visit(), at=NOW, outcome="  ")


def test_work_order_install_binds_device(store: Store) -> None:
    store.upsert_vehicle("CAR-1")

    done = complete_work_order(
        _order(OrderKind.INSTALL), at=NOW, notes="wired", bindings=store
    )

    assert done.status is OrderStatus.DONE
    assert store.vehicle_at("860000000000001", NOW) == "CAR-1"


def test_work_order_remove_unbinds_device(store: Store) -> None:
    store.upsert_vehicle("CAR-1")
    store.bind_device("860000000000001", "CAR-1", valid_from=NOW - timedelta(days=9))

    complete_work_order(_order(OrderKind.REMOVE), at=NOW, notes="", bindings=store)

    assert store.vehicle_at("860000000000001", NOW) is None
    assert store.vehicle_at("860000000000001", NOW - timedelta(days=1)) == "CAR-1"


def test_work_order_failed_bind_stays_open(store: Store) -> None:
    order = _order(OrderKind.INSTALL)

    with pytest.raises(LookupError):
        complete_work_order(order, at=NOW, notes="", bindings=store)

    assert order.status is OrderStatus.OPEN


def test_violations_import_links_vehicle_and_contract() -> None:
    text = (
        "violation_id,plate,occurred_at,code,fine,points,place\n"
        "T-1,京A 12345,2024-02-10T08:30:00+08:00,1208,200.00,3,Chang'an Ave\n"
    )

    result = read_violations(
        text,
        vehicles_by_plate={"京A12345": "CAR-1"},
        contracts_by_plate={"京A12345": "C-1"},
        known=frozenset(),
    )

    [violation] = result.violations
    assert violation.vehicle_id == "CAR-1"
    assert violation.contract_id == "C-1"
    assert violation.fine == Decimal("200.00")
    assert result.issues == ()


def test_violations_import_reports_each_bad_field() -> None:
    text = (
        "violation_id,plate,occurred_at,code,fine\n"
        "T-1,ZZ999,2024-02-10T08:30:00,1208,abc\n"
    )

    result = read_violations(
        text, vehicles_by_plate={}, contracts_by_plate={}, known=frozenset()
    )

    fields = sorted(issue.field for issue in result.issues)
    assert result.violations == ()
    assert fields == ["fine", "occurred_at", "plate"]


def test_violations_import_skips_known_id() -> None:
    text = "violation_id,plate,occurred_at,code,fine\nT-1,A1,2024-02-10T08:30:00Z,1,1\n"

    result = read_violations(
        text,
        vehicles_by_plate={"A1": "CAR-1"},
        contracts_by_plate={},
        known=frozenset({"T-1"}),
    )

    assert result.duplicates == ("T-1",)
    assert result.violations == ()


def test_offline_devices_longest_first() -> None:
    devices = [
        DeviceRecord("D-1", "gt06", NOW, NOW - timedelta(hours=30)),
        DeviceRecord("D-2", "gt06", NOW, NOW - timedelta(hours=2)),
        DeviceRecord("D-3", "jt808", NOW, NOW - timedelta(hours=50)),
    ]

    offline = offline_devices(devices, [], now=NOW, after=timedelta(hours=24))

    assert [o.device_id for o in offline] == ["D-3", "D-1"]


def test_open_alarms_only_alarm_kinds() -> None:
    events = [
        DeviceEvent("D-1", NOW, "heartbeat"),
        DeviceEvent("D-1", NOW - timedelta(minutes=5), "alarm:power_cut"),
        DeviceEvent("D-1", NOW, "alarm:sos"),
    ]

    alarms = open_alarms(events)

    assert [a.kind for a in alarms] == ["alarm:sos", "alarm:power_cut"]


def test_json_repository_round_trips(tmp_path: Path) -> None:
    repository = JsonAffairsRepository(tmp_path)
    visit = complete_visit(_visit(), at=NOW, outcome="met")
    order = _order(OrderKind.REPAIR)

    repository.save_visit(visit)
    repository.save_work_order(order)

    assert repository.visits() == [visit]
    assert repository.work_orders() == [order]
