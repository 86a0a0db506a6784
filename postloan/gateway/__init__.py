"""asyncio TCP gateway that trackers connect to directly."""

from postloan.gateway.server import Gateway, GatewayStats

__all__ = ["Gateway", "GatewayStats"]
