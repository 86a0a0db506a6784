"""The gateway against real sockets on 127.0.0.1 and a real store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from postloan.config import Config, GatewayConfig
from postloan.gateway import Gateway
from postloan.model import Fix
from postloan.store import Store

GT06_LOGIN = bytes.fromhex("78780d010358735070530281007718630d0a")
GT06_LOGIN_ACK = bytes.fromhex("787805010077cf6d0d0a")
GT06_DEVICE = "358735070530281"
GT06_LOCATION = bytes.fromhex(
    "78781f120f0a140e150bc505e51e780293a9e800540000f601006e0055da00035f240d0a"
)
GT06_LOCATION_ACK = bytes.fromhex("787805120003903f0d0a")
JT808_HEARTBEAT = bytes.fromhex("7e0002000000570445552900177f7e")


def _config(**gateway: Any) -> Config:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "gt06_port": 0,
        "jt808_port": 0,
        "nmea_port": 0,
    }
    settings.update(gateway)
    return Config(gateway=GatewayConfig(**settings))


def _run(
    store: Store,
    body: Callable[[Gateway], Awaitable[None]],
    **gateway: Any,
) -> None:
    async def main() -> None:
        async with Gateway(_config(**gateway), store) as gw:
            await body(gw)

    asyncio.run(main())


async def _connect(
    gateway: Gateway, protocol: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gateway.ports[protocol])


async def _read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(size), timeout=5)


def test_gt06_login_is_acked_with_its_serial(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        writer.write(GT06_LOGIN)

        reply = await _read_exactly(reader, len(GT06_LOGIN_ACK))

        assert reply == GT06_LOGIN_ACK
        writer.close()

    _run(store, body)


def test_gt06_location_is_stored_then_acked(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        writer.write(GT06_LOGIN + GT06_LOCATION)

        replies = await _read_exactly(reader, 20)

        assert replies[10:] == GT06_LOCATION_ACK
        track = store.track(GT06_DEVICE)
        assert len(track) == 1
        assert abs(track[0].latitude - 54.945347) < 1e-6
        writer.close()

    _run(store, body)


def test_gt06_location_before_login_is_not_stored(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        writer.write(GT06_LOCATION + GT06_LOGIN)

        reply = await _read_exactly(reader, len(GT06_LOGIN_ACK))
        await gateway.writer.flush()

        assert reply == GT06_LOGIN_ACK
        assert store.count_fixes() == 0
        assert gateway.stats.dropped[("gt06", "before_login")] == 1
        writer.close()

    _run(store, body)


def test_gateway_survives_junk_and_serves_next_device(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        _, junk_writer = await _connect(gateway, "gt06")
        junk_writer.write(b"GET / HTTP/1.1\r\nHost: scanner\r\n\r\n" * 50)
        await junk_writer.drain()
        reader, writer = await _connect(gateway, "gt06")

        writer.write(GT06_LOGIN)
        reply = await _read_exactly(reader, len(GT06_LOGIN_ACK))

        assert reply == GT06_LOGIN_ACK
        assert sum(gateway.stats.decode_errors.values()) > 0
        writer.close()
        junk_writer.close()

    _run(store, body)


def test_session_closes_after_repeated_decode_errors(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        corrupted = bytearray(GT06_LOGIN)
        corrupted[-4] ^= 0xFF

        writer.write(bytes(corrupted) * 5)
        data = await asyncio.wait_for(reader.read(), timeout=5)

        assert data == b""
        assert gateway.stats.decode_errors[("gt06", "crc_mismatch")] == 5

    _run(store, body, max_decode_errors=5)


def test_oversized_frame_is_not_buffered(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        huge = b"\x79\x79\xff\xff\x94" + b"\x00" * 5000

        writer.write(huge + GT06_LOGIN)
        reply = await _read_exactly(reader, len(GT06_LOGIN_ACK))

        assert reply == GT06_LOGIN_ACK
        writer.close()

    _run(store, body, max_decode_errors=50)


def test_idle_connection_is_closed(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        writer.write(GT06_LOGIN)
        await _read_exactly(reader, len(GT06_LOGIN_ACK))

        data = await asyncio.wait_for(reader.read(), timeout=5)

        assert data == b""

    _run(store, body, idle_timeout_s=0.4)


def test_jt808_heartbeat_is_answered_with_general_response(store: Store) -> None:
    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "jt808")
        writer.write(JT808_HEARTBEAT)

        start = await _read_exactly(reader, 1)
        rest = await asyncio.wait_for(reader.readuntil(b"\x7e"), timeout=5)
        frame = start + rest

        assert frame[1:3] == b"\x80\x01"
        writer.close()

    _run(store, body)


class _GatedStore:
    """A real store whose fix writes wait until the test opens the gate."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.gate = threading.Event()

    def write_fixes(self, fixes: Sequence[Fix]) -> int:
        self.gate.wait(timeout=10)
        return self._store.write_fixes(fixes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_ack_waits_until_fix_is_stored(store: Store) -> None:
    gated = _GatedStore(store)

    async def main() -> None:
        async with Gateway(_config(), gated) as gateway:  # type: ignore[arg-type]
            reader, writer = await _connect(gateway, "gt06")
            writer.write(GT06_LOGIN)
            await _read_exactly(reader, len(GT06_LOGIN_ACK))
            writer.write(GT06_LOCATION)

            try:
                early = await asyncio.wait_for(reader.read(1), timeout=0.5)
            except TimeoutError:
                early = None
            assert early is None
            assert store.count_fixes() == 0

            gated.gate.set()
            ack = await _read_exactly(reader, len(GT06_LOCATION_ACK))
            assert ack == GT06_LOCATION_ACK
            assert store.count_fixes() == 1
            writer.close()

    asyncio.run(main())


def test_future_fix_stored_as_event(store: Store) -> None:
    from datetime import UTC, datetime

    from postloan.protocols import gt06
    from postloan.protocols.base import Location

    future = Location(
        time=datetime(2099, 1, 1, tzinfo=UTC), latitude=41.15, longitude=-8.61
    )
    frame = gt06.encode_location(future, 5, msg_type=0x22)

    async def body(gateway: Gateway) -> None:
        reader, writer = await _connect(gateway, "gt06")
        writer.write(GT06_LOGIN + frame)
        await _read_exactly(reader, 20)
        writer.close()

    _run(store, body)

    assert store.count_fixes() == 0
    kinds = [event.kind for event in store.device_events(GT06_DEVICE)]
    assert "fix_rejected" in kinds
