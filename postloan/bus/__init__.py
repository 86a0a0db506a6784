"""The MQTT bus between the gateway and its store, fence and risk workers.

Topics and the JSON payload schema are described in docs/mqtt.md.
"""

from postloan.bus.publisher import BusPublisher
from postloan.bus.schema import (
    SCHEMA_VERSION,
    decode_event,
    decode_fix,
    encode_event,
    encode_fix,
    event_topic,
    partition_of,
    position_topic,
)

__all__ = [
    "SCHEMA_VERSION",
    "BusPublisher",
    "decode_event",
    "decode_fix",
    "encode_event",
    "encode_fix",
    "event_topic",
    "partition_of",
    "position_topic",
]
