"""Fix range checks, GT06 login changes and JT/T 808 authentication.

Each test runs a real gateway on 127.0.0.1 against a real store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postloan.config import Config, DevicesConfig, GatewayConfig
from postloan.gateway import Gateway
from postloan.gateway.handlers import Jt808Handler
from postloan.protocols import gt06, jt808
from postloan.protocols.base import Location, Message
from postloan.protocols.gt06_frame import build_frame
from postloan.store import Store

GT06_DEVICE = "358735070530281"
GT06_OTHER = "358735070530299"
PHONE = "013912345678"


def _config(require_auth: bool = True) -> Config:
    return Config(
        gateway=GatewayConfig(host="127.0.0.1", gt06_port=0, jt808_port=0, nmea_port=0),
        devices=DevicesConfig(jt808_require_auth=require_auth),
    )


def _run(
    store: Store, body: Callable[[Gateway], Awaitable[None]], **config: Any
) -> None:
    async def main() -> None:
        async with Gateway(_config(**config), store) as gateway:
            await body(gateway)

    asyncio.run(main())


async def _connect(
    gateway: Gateway, protocol: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gateway.ports[protocol])


def _recent() -> Location:
    now = datetime.now(UTC).replace(microsecond=0)
    return Location(time=now - timedelta(minutes=1), latitude=41.15, longitude=100.0)


def _gt06_longitude_200(serial: int) -> bytes:
    """Return a 0x22 location whose longitude field reads 200 degrees."""
    frame = gt06.encode_location(_recent(), serial, msg_type=0x22)
    content = bytearray(frame[4:-6])
    # GPS block: time 6 bytes, satellites 1, latitude 4, then longitude 4.
    content[11:15] = (200 * 1_800_000).to_bytes(4)
    return build_frame(0x22, bytes(content), serial)


def test_gt06_longitude_200_acked_and_kept_as_event(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    login = gt06.encode_login(GT06_DEVICE, 1)
    location = _gt06_longitude_200(2)

    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        writer.write(login + location)
        replies = await asyncio.wait_for(reader.readexactly(20), timeout=5)
        assert replies[10:] == gt06.ack(0x22, 2)
        assert gateway.stats.dropped[("gt06", "position_out_of_range")] == 1
        writer.close()

    with caplog.at_level(logging.WARNING, logger="postloan.gateway.session"):
        _run(store, body)

    assert store.count_fixes() == 0
    events = [e for e in store.device_events(GT06_DEVICE) if e.kind == "fix_rejected"]
    assert len(events) == 1
    assert events[0].attributes["reason"] == "position_out_of_range"
    assert "200.000000" in str(events[0].attributes["value"])
    logged = [
        r.getMessage() for r in caplog.records if "fix rejected" in r.getMessage()
    ]
    assert len(logged) == 1
    assert GT06_DEVICE in logged[0]
    assert "200.000000" in logged[0]


def test_gt06_second_login_other_imei_closes(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    first = gt06.encode_login(GT06_DEVICE, 1)
    second = gt06.encode_login(GT06_OTHER, 2)
    location = gt06.encode_location(_recent(), 3, msg_type=0x22)

    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        writer.write(first)
        await asyncio.wait_for(reader.readexactly(10), timeout=5)
        writer.write(second + location)
        rest = await asyncio.wait_for(reader.read(), timeout=5)
        assert rest == b""  # closed without an ack
        assert gateway.stats.dropped[("gt06", "login_device_changed")] == 1
        writer.close()

    with caplog.at_level(logging.WARNING, logger="postloan.gateway.session"):
        _run(store, body)

    assert store.count_fixes() == 0
    assert store.device_events(GT06_OTHER) == []
    logged = [r.getMessage() for r in caplog.records if GT06_OTHER in r.getMessage()]
    assert len(logged) == 1
    assert GT06_DEVICE in logged[0]


def test_gt06_second_login_same_imei_acked(store: Store) -> None:
    login = gt06.encode_login(GT06_DEVICE, 1)
    again = gt06.encode_login(GT06_DEVICE, 2)
    location = gt06.encode_location(_recent(), 3, msg_type=0x22)

    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        writer.write(login + again + location)
        replies = await asyncio.wait_for(reader.readexactly(30), timeout=5)
        assert replies[20:] == gt06.ack(0x22, 3)
        writer.close()

    _run(store, body)

    assert store.count_fixes(GT06_DEVICE) == 1


async def _reply(reader: asyncio.StreamReader) -> Message:
    start = await asyncio.wait_for(reader.readexactly(1), timeout=5)
    rest = await asyncio.wait_for(reader.readuntil(b"\x7e"), timeout=5)
    return jt808.decode(start + rest)


def _location(serial: int) -> bytes:
    return jt808.encode_location(PHONE, serial, _recent())


def test_jt808_location_before_auth_rejected(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "jt808")
        for serial in (1, 2):
            writer.write(_location(serial))
            reply = await _reply(reader)
            assert reply.msg_id == 0x8001
            assert reply.attributes["result"] == 1
        await gateway.writer.flush()
        assert gateway.stats.dropped[("jt808", "unauthenticated")] == 2
        writer.close()

    with caplog.at_level(logging.WARNING, logger="postloan.gateway.session"):
        _run(store, body)

    assert store.count_fixes() == 0
    assert store.device_events(PHONE) == []
    logged = [r for r in caplog.records if "not authenticated" in r.getMessage()]
    assert len(logged) == 1  # one line per connection


def test_jt808_register_then_auth_stores_location(store: Store) -> None:
    code = Jt808Handler(_config()).auth_code(PHONE)

    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "jt808")
        writer.write(jt808.encode_register(PHONE, 1))
        registered = await _reply(reader)
        assert registered.msg_id == 0x8100
        assert registered.attributes["result"] == 0
        assert registered.attributes["auth_code"] == code

        writer.write(jt808.encode_auth(PHONE, 2, "wrong-code"))
        wrong = await _reply(reader)
        assert wrong.attributes["result"] == 1
        writer.write(_location(3))
        before = await _reply(reader)
        assert before.attributes["result"] == 1

        writer.write(jt808.encode_auth(PHONE, 4, code))
        right = await _reply(reader)
        assert right.attributes["result"] == 0
        writer.write(_location(5))
        after = await _reply(reader)
        assert after.attributes["result"] == 0
        writer.close()

    _run(store, body)

    assert store.count_fixes(PHONE) == 1
    auths = [e for e in store.device_events(PHONE) if e.kind == "auth"]
    assert [e.attributes["result"] for e in auths] == [1, 0]
    assert all("auth_code" not in e.attributes for e in auths)


def test_jt808_auth_code_kept_across_reconnects(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "jt808")
        writer.write(jt808.encode_register(PHONE, 1))
        code = str((await _reply(reader)).attributes["auth_code"])
        writer.close()

        reader, writer = await _connect(gateway, "jt808")
        writer.write(jt808.encode_auth(PHONE, 1, code) + _location(2))
        assert (await _reply(reader)).attributes["result"] == 0
        assert (await _reply(reader)).attributes["result"] == 0
        writer.close()

    _run(store, body)

    assert store.count_fixes(PHONE) == 1


def test_jt808_auth_for_other_phone_not_reused(store: Store) -> None:
    code = Jt808Handler(_config()).auth_code(PHONE)
    other = "013900000000"

    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "jt808")
        writer.write(jt808.encode_auth(PHONE, 1, code))
        assert (await _reply(reader)).attributes["result"] == 0
        writer.write(jt808.encode_location(other, 2, _recent()))
        assert (await _reply(reader)).attributes["result"] == 1
        writer.close()

    _run(store, body)

    assert store.count_fixes(other) == 0


def test_jt808_without_required_auth_stores(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "jt808")
        writer.write(jt808.encode_auth(PHONE, 1, "from-another-platform"))
        assert (await _reply(reader)).attributes["result"] == 0
        writer.write(_location(2))
        assert (await _reply(reader)).attributes["result"] == 0
        writer.close()

    _run(store, body, require_auth=False)

    assert store.count_fixes(PHONE) == 1


def test_jt808_speed_out_of_range_kept_as_event(store: Store) -> None:
    code = Jt808Handler(_config()).auth_code(PHONE)
    fast = Location(
        time=_recent().time, latitude=41.15, longitude=100.0, speed_kmh=2000.0
    )

    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "jt808")
        writer.write(jt808.encode_auth(PHONE, 1, code))
        assert (await _reply(reader)).attributes["result"] == 0
        writer.write(jt808.encode_location(PHONE, 2, fast) + _location(3))
        assert (await _reply(reader)).attributes["result"] == 0
        assert (await _reply(reader)).attributes["result"] == 0
        assert gateway.stats.dropped[("jt808", "invalid_speed_kmh")] == 1
        writer.close()

    _run(store, body)

    assert store.count_fixes(PHONE) == 1
    events = [e for e in store.device_events(PHONE) if e.kind == "fix_rejected"]
    assert len(events) == 1
    assert events[0].attributes["field"] == "speed_kmh"
    assert events[0].attributes["value"] == 2000.0
