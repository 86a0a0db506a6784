"""Immobilize requests wait for an approver and for the car to stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postloan.model import Fix
from postloan.risk import ImmobilizeRequest, ImmobilizeStatus, approve, on_fix
from postloan.store import open_store

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
STOP_S = 300.0


def _request() -> ImmobilizeRequest:
    return ImmobilizeRequest("R-1", "C-1", "TRK1", "gt06", "rule:x", T0, "overdue")


def _fix(minute: int, speed: float, acc: bool) -> Fix:
    return Fix(
        "TRK1",
        T0 + timedelta(minutes=minute),
        41.15,
        -8.61,
        speed_kmh=speed,
        attributes={"acc": acc},
    )


def test_immobilize_moving_car_held_until_stopped(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "t.db"))
    request = approve(_request(), "supervisor-1", T0)
    track = [
        _fix(1, 60.0, True),
        _fix(2, 0.0, True),
        _fix(3, 0.0, False),
        _fix(5, 0.0, False),
        _fix(8, 0.0, False),
        _fix(9, 0.0, False),
    ]

    states = []
    for fix in track:
        request = on_fix(request, fix, store, STOP_S)
        states.append((request.status, len(store.commands())))

    assert states[:4] == [(ImmobilizeStatus.HELD, 0)] * 4
    assert states[4] == (ImmobilizeStatus.RELEASED, 1)
    assert store.commands()[0].kind == "fuel_cut"
    assert store.commands()[0].created_at == track[4].time


def test_immobilize_stop_interrupted_restarts_timer(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "t.db"))
    request = approve(_request(), "supervisor-1", T0)

    for fix in [_fix(1, 0.0, False), _fix(4, 20.0, True), _fix(7, 0.0, False)]:
        request = on_fix(request, fix, store, STOP_S)

    assert request.status is ImmobilizeStatus.HELD
    assert request.stopped_since == T0 + timedelta(minutes=7)
    assert store.commands() == []


def test_immobilize_unapproved_never_sent(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "t.db"))
    request = _request()

    for minute in range(0, 20, 5):
        request = on_fix(request, _fix(minute, 0.0, False), store, STOP_S)

    assert request.status is ImmobilizeStatus.PENDING_APPROVAL
    assert store.commands() == []


def test_approve_by_requester_rejected() -> None:
    with pytest.raises(ValueError, match="other than the requester"):
        approve(_request(), "rule:x", T0)
