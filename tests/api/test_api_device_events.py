"""Device events stored by the real gateway are served as JSON."""

from __future__ import annotations

import asyncio

from api_support import auth
from fastapi.testclient import TestClient

from postloan.api import ApiContext
from postloan.config import Config, GatewayConfig
from postloan.data import DATA_DIR
from postloan.gateway import Gateway

GT06_DEVICE = "358735070530281"
GT06_LOGIN = bytes.fromhex("78780d010358735070530281007718630d0a")
GT06_LOCATION = bytes.fromhex(
    "78781f120f0a140e150bc505e51e780293a9e800540000f601006e0055da00035f240d0a"
)
NMEA_DEVICE = "358735070530282"


def _send(context: ApiContext, protocol: str, payload: bytes, reply: int) -> None:
    """Send `payload` to the gateway's `protocol` port, read `reply` bytes."""
    config = Config(
        gateway=GatewayConfig(
            host="127.0.0.1",
            gt06_port=0 if protocol == "gt06" else -1,
            jt808_port=-1,
            nmea_port=0 if protocol == "nmea" else -1,
            max_decode_errors=100,
        )
    )

    async def main() -> None:
        async with Gateway(config, context.store) as gateway:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", gateway.ports[protocol]
            )
            writer.write(payload)
            await writer.drain()
            if reply:
                await asyncio.wait_for(reader.readexactly(reply), timeout=5)
            else:
                await asyncio.sleep(0.3)
            writer.close()
            await writer.wait_closed()
            await gateway.writer.flush()

    asyncio.run(main())


def test_gt06_login_event_served(client: TestClient, context: ApiContext) -> None:
    # The login ack is 10 bytes and the location ack 10 more.
    _send(context, "gt06", GT06_LOGIN + GT06_LOCATION, reply=20)

    response = client.get(f"/devices/{GT06_DEVICE}/events", headers=auth("admin"))

    assert response.status_code == 200
    events = response.json()
    assert [event["kind"] for event in events] == ["login"]
    assert events[0]["device_id"] == GT06_DEVICE
    assert events[0]["attributes"] == {}
    assert events[0]["time"].endswith("Z")


def test_nmea_login_event_served(client: TestClient, context: ApiContext) -> None:
    data = (DATA_DIR / "nmea" / "bt451.log").read_bytes()
    _send(context, "nmea", NMEA_DEVICE.encode() + b"\r\n" + data, reply=0)

    response = client.get(f"/devices/{NMEA_DEVICE}/events", headers=auth("analyst"))

    assert response.status_code == 200
    kinds = [event["kind"] for event in response.json()]
    assert "login" in kinds
    assert all(isinstance(e["attributes"], dict) for e in response.json())
