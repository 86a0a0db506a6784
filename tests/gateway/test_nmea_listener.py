"""Raw NMEA 0183 streams on the NMEA listener."""

from __future__ import annotations

import asyncio

from postloan.config import Config, GatewayConfig
from postloan.data import DATA_DIR
from postloan.gateway import Gateway
from postloan.protocols import nmea
from postloan.protocols.base import DecodeError
from postloan.store import Store

BT451 = DATA_DIR / "nmea" / "bt451.log"
COLD_BOOT = DATA_DIR / "nmea" / "gp-320fw-2019-04-07-coldboot.log"


def _expected_fix_times(data: bytes) -> set[str]:
    """Times of every RMC with a position, decoded without the gateway."""
    framer = nmea.Framer()
    times = set()
    for line in framer.feed(data + b"\n"):
        if isinstance(line, DecodeError):
            continue
        try:
            message = nmea.decode(line)
        except DecodeError:
            continue
        times.update(loc.time.isoformat() for loc in message.locations)
    return times


def _stream(store: Store, payload: bytes) -> None:
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1",
            gt06_port=-1,
            jt808_port=-1,
            nmea_port=0,
            max_decode_errors=100,
        )
    )

    async def main() -> None:
        async with Gateway(config, store) as gateway:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", gateway.ports["nmea"]
            )
            writer.write(payload)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.3)
            await gateway.writer.flush()

    asyncio.run(main())


def test_nmea_stream_with_identification_is_stored(store: Store) -> None:
    data = BT451.read_bytes()

    _stream(store, b"358735070530281\r\n" + data)

    stored = {fix.time.isoformat() for fix in store.track("358735070530281")}
    assert stored == _expected_fix_times(data)
    assert len(stored) > 0


def test_nmea_stream_with_bad_checksums_keeps_good_fixes(store: Store) -> None:
    data = COLD_BOOT.read_bytes()

    _stream(store, b"860000000000001\r\n" + data)

    stored = {fix.time.isoformat() for fix in store.track("860000000000001")}
    assert stored == _expected_fix_times(data)
