"""The risk role evaluates a device's contract from the records the gateway stored.

A GT06 device of an overdue contract reports a fix and then a power-cut
alarm. The risk role, as a bus worker on the shared Mosquitto or inside the
gateway process, opens the contract's case and escalates it, as ``postloan
risk evaluate`` would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from postloan.bus import BusPublisher
from postloan.bus.cli import build_consumer
from postloan.bus.local import LocalRole
from postloan.bus.risk import ContractEvaluator, RiskConsumer
from postloan.bus.worker import consume
from postloan.config import (
    ApiConfig,
    BusConfig,
    Config,
    GatewayConfig,
    RiskConfig,
    StoreConfig,
)
from postloan.gateway import Gateway
from postloan.loans import Borrower, Contract, LoanHistory, LoanTerms, Method, Vehicle
from postloan.loans.jsonledger import JsonLedger
from postloan.model import DeviceEvent, Fix
from postloan.notify import JsonTaskRepository
from postloan.protocols import gt06
from postloan.protocols.base import Location
from postloan.risk import CaseState, JsonRiskRepository
from postloan.store import Store, open_store

CONTRACT = "C-BUS-1"
# GT06 terminal information bits 3-5 = 2: the power-cut alarm.
POWER_CUT_STATUS = 2 << 3


def _device_id() -> str:
    return "86" + str(uuid.uuid4().int)[:13]


def _contract(device_id: str, today: date) -> Contract:
    """A 12-month loan whose first installment fell due 10 days ago, unpaid."""
    return Contract(
        contract_id=CONTRACT,
        borrower=Borrower("Ana Silva", "+351912345678", "BI-1", "Europe/Lisbon"),
        vehicle=Vehicle("WVWZZZ1JZXW000001", "AA-00-01"),
        terms=LoanTerms(
            principal=Decimal("12000.00"),
            annual_rate=Decimal("0.12"),
            term_months=12,
            method=Method.ANNUITY,
            first_due_date=today - timedelta(days=10),
        ),
        dealer="dealer-1",
        devices=(device_id,),
    )


def _config(tmp_path: Path, bus_url: str, run_id: str) -> Config:
    return Config(
        gateway=GatewayConfig(
            host="127.0.0.1", gt06_port=0, jt808_port=-1, nmea_port=-1
        ),
        store=StoreConfig(url=f"sqlite:///{tmp_path / 'track.db'}"),
        api=ApiConfig(
            ledger_dir=str(tmp_path / "ledger"), state_dir=str(tmp_path / "risk")
        ),
        bus=BusConfig(
            url=bus_url,
            client_id=f"test-{run_id}",
            queue_dir=str(tmp_path / "queue"),
            shared_group=f"test-{run_id}",
            session_expiry_s=0,
        ),
    )


async def _send(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frame: bytes
) -> None:
    """Send one GT06 frame and wait for the gateway's reply (sent once stored)."""
    writer.write(frame)
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"\r\n"), 15)


async def _case_state(
    state: Path, expected_state: CaseState, timeout: float = 30.0
) -> None:
    repository = JsonRiskRepository(state)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        case = repository.get_case(CONTRACT)
        if case is not None and case.state is expected_state:
            return
        current = None if case is None else case.state
        assert loop.time() < deadline, f"case is {current}, expected {expected_state}"
        await asyncio.sleep(0.1)


async def _drive_device(
    port: int, device_id: str, now: datetime, state: Path
) -> list[CaseState]:
    """Report a fix, then a power-cut alarm; return the case state after each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seen: list[CaseState] = []
    try:
        await _send(reader, writer, gt06.encode_login(device_id, 1))
        fix = Location(now - timedelta(minutes=1), 38.72, -9.14, satellites=8)
        await _send(reader, writer, gt06.encode_location(fix, 2))
        await _case_state(state, CaseState.OVERDUE)
        seen.append(CaseState.OVERDUE)
        heartbeat = gt06.encode_heartbeat(3, terminal_info=POWER_CUT_STATUS)
        await _send(reader, writer, heartbeat)
        await _case_state(state, CaseState.COLLECTION)
        seen.append(CaseState.COLLECTION)
    finally:
        writer.close()
    return seen


Layout = Callable[[Config, Store, Gateway], Awaitable[Callable[[], Awaitable[None]]]]


async def _bus_worker(
    config: Config, store: Store, gateway: Gateway
) -> Callable[[], Awaitable[None]]:
    """Publish stored records and run a risk worker over its own store object."""
    worker_store = open_store(config.store.url)
    publisher = BusPublisher(config.bus)
    stop = asyncio.Event()
    consumer = build_consumer(config, "risk", worker_store)
    worker = asyncio.create_task(consume(config.bus, "risk", consumer, stop))
    await asyncio.sleep(0.5)  # subscriptions are in place before publishing
    await publisher.start()
    gateway.record_observers.append(publisher.publish_records)

    async def close() -> None:
        await publisher.close()
        stop.set()
        await asyncio.wait_for(worker, 10)
        worker_store.close()

    return close


async def _in_gateway(
    config: Config, store: Store, gateway: Gateway
) -> Callable[[], Awaitable[None]]:
    """Run the risk role in this process, as `postloan run` does for [bus] roles."""
    from postloan.bus.risk import build_risk_consumer

    role = LocalRole("risk", build_risk_consumer(config, store))
    role.start()
    gateway.record_observers.append(role.observe)
    return role.close


async def _scenario(
    config: Config, store: Store, layout: Layout, device_id: str, now: datetime
) -> list[CaseState]:
    async with Gateway(config, store) as gateway:
        close = await layout(config, store, gateway)
        try:
            return await _drive_device(
                gateway.ports["gt06"], device_id, now, Path(config.api.state_dir)
            )
        finally:
            await close()


@pytest.mark.parametrize(
    "layout", [_bus_worker, _in_gateway], ids=["worker", "gateway"]
)
def test_power_cut_escalates_overdue_case(
    tmp_path: Path, shared_broker_url: str, run_id: str, layout: Layout
) -> None:
    config = _config(tmp_path, shared_broker_url, run_id)
    now = datetime.now(UTC)
    device_id = _device_id()
    JsonLedger(Path(config.api.ledger_dir)).save(
        _contract(device_id, now.date()), LoanHistory()
    )
    store = open_store(config.store.url)
    store.migrate()

    states = asyncio.run(_scenario(config, store, layout, device_id, now))

    state = Path(config.api.state_dir)
    repository = JsonRiskRepository(state)
    case = repository.get_case(CONTRACT)
    assert states == [CaseState.OVERDUE, CaseState.COLLECTION]
    assert case is not None
    assert case.state is CaseState.COLLECTION
    assert any(rule_id.startswith(CONTRACT) for rule_id in case.firings)
    rules = [firing["rule"] for firing in repository.firings()]
    assert "overdue-reminder" in rules
    assert "overdue-power-cut" in rules
    power_cut = next(
        f for f in repository.firings() if f["rule"] == "overdue-power-cut"
    )
    assert [s["name"] for s in power_cut["signals"]] == ["power_cut"]
    assert {order.reason for order in repository.work_orders()} == {
        "tracker power cut or removed on an overdue loan",
        "check the tracker installation",
    }
    templates = [task.template_id for task in JsonTaskRepository(state).all()]
    assert "overdue_sms" in templates
    assert "risk_call" in templates
    store.close()


def _fix(device_id: str, at: datetime) -> Fix:
    return Fix(device_id, at, 38.72, -9.14, speed_kmh=20.0)


def test_fix_evaluations_debounced_per_contract(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    device_id = _device_id()
    config = Config(
        api=ApiConfig(
            ledger_dir=str(tmp_path / "ledger"), state_dir=str(tmp_path / "risk")
        ),
        risk=RiskConfig(fix_interval_s=300.0),
    )
    JsonLedger(Path(config.api.ledger_dir)).save(
        _contract(device_id, now.date()), LoanHistory()
    )
    store = open_store(f"sqlite:///{tmp_path / 'track.db'}")
    store.migrate()
    start = now - timedelta(hours=1)
    consumer = RiskConsumer(ContractEvaluator(config, store), fix_interval_s=300.0)
    alarm = DeviceEvent(device_id, start + timedelta(seconds=400), "alarm:removal")

    async def feed() -> list[int]:
        counts = []
        for seconds in (0, 60, 299, 300, 301, 599, 600):
            await consumer.handle([_fix(device_id, start + timedelta(seconds=seconds))])
            counts.append(consumer.evaluations)
        await consumer.handle_events([alarm])
        counts.append(consumer.evaluations)
        await consumer.handle_events([alarm])  # the same alarm sent again
        counts.append(consumer.evaluations)
        await consumer.handle_events([DeviceEvent(device_id, start, "heartbeat")])
        counts.append(consumer.evaluations)
        return counts

    counts = asyncio.run(feed())

    # Fixes at 0, 300 and 600 s evaluate; then the removal alarm at once, its
    # repeat not, and a heartbeat never.
    assert counts == [1, 1, 1, 2, 2, 2, 3, 4, 4, 4]
    store.close()


def test_device_without_contract_not_evaluated(tmp_path: Path) -> None:
    config = Config(
        api=ApiConfig(
            ledger_dir=str(tmp_path / "ledger"), state_dir=str(tmp_path / "risk")
        )
    )
    store = open_store(f"sqlite:///{tmp_path / 'track.db'}")
    store.migrate()
    consumer = RiskConsumer(ContractEvaluator(config, store))
    at = datetime.now(UTC)

    async def feed() -> None:
        await consumer.handle([_fix("unknown-device", at)])
        await consumer.handle_events(
            [DeviceEvent("unknown-device", at, "alarm:power_cut")]
        )

    asyncio.run(feed())

    assert consumer.evaluations == 0
    assert not (tmp_path / "risk").exists()
    store.close()


def test_failed_evaluation_retried_with_batch(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    device_id = _device_id()
    state = tmp_path / "risk"
    config = Config(
        api=ApiConfig(ledger_dir=str(tmp_path / "ledger"), state_dir=str(state))
    )
    JsonLedger(Path(config.api.ledger_dir)).save(
        _contract(device_id, now.date()), LoanHistory()
    )
    store = open_store(f"sqlite:///{tmp_path / 'track.db'}")
    store.migrate()
    consumer = RiskConsumer(ContractEvaluator(config, store))
    batch = [_fix(device_id, now - timedelta(minutes=1))]
    state.write_text("a file where the state folder belongs")

    with pytest.raises(OSError):
        asyncio.run(consumer.handle(batch))
    evaluations_after_failure = consumer.evaluations
    state.unlink()
    asyncio.run(consumer.handle(batch))  # the worker retries the same batch

    assert evaluations_after_failure == 0
    assert consumer.evaluations == 1
    case = JsonRiskRepository(state).get_case(CONTRACT)
    assert case is not None
    assert case.state is CaseState.OVERDUE
    store.close()
