"""Topic partitions and the v1 JSON payload."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from postloan.bus.schema import (
    PayloadError,
    decode_event,
    decode_fix,
    encode_event,
    encode_fix,
    event_topic,
    partition_of,
    position_topic,
    topic_kind,
    worker_partitions,
)
from postloan.model import DeviceEvent, Fix

FIX = Fix(
    device_id="358735070530281",
    time=datetime(2026, 1, 31, 8, 0, 5, 250000, tzinfo=UTC),
    latitude=41.15,
    longitude=-8.61,
    speed_kmh=42.5,
    course=270.0,
    satellites=9,
    attributes={"acc": True},
)


def test_fix_payload_round_trip() -> None:
    payload = encode_fix(FIX)

    decoded = decode_fix(payload)

    assert decoded == FIX


def test_fix_payload_time_is_utc_iso() -> None:
    document = json.loads(encode_fix(FIX))

    assert document["time"] == "2026-01-31T08:00:05.250000Z"
    assert document["v"] == 1


def test_decode_fix_rejects_unknown_version() -> None:
    document = json.loads(encode_fix(FIX))
    document["v"] = 2

    with pytest.raises(PayloadError, match="version"):
        decode_fix(json.dumps(document))


def test_decode_fix_rejects_time_without_zone() -> None:
    document = json.loads(encode_fix(FIX))
    document["time"] = "2026-01-31T08:00:05"

    with pytest.raises(PayloadError, match="offset"):
        decode_fix(json.dumps(document))


def test_partition_of_is_stable_crc32() -> None:
    # CRC-32 (zlib) of b"358735070530281" is 0x0D0C790C in every process.
    partition = partition_of("358735070530281", 16)

    assert partition == 0x0D0C790C % 16


def test_position_topic_names_partition_and_device() -> None:
    topic = position_topic(FIX.device_id, 16)

    assert (
        topic
        == f"postloan/v1/positions/{partition_of(FIX.device_id, 16)}/{FIX.device_id}"
    )


def test_worker_partitions_cover_each_once() -> None:
    sets = [worker_partitions(16, index, 3) for index in range(3)]

    assert sorted(p for s in sets for p in s) == list(range(16))


def test_worker_partitions_reject_bad_index() -> None:
    with pytest.raises(ValueError, match="worker index 2 of 2"):
        worker_partitions(16, 2, 2)


EVENT = DeviceEvent(
    device_id="358735070530281",
    time=datetime(2026, 1, 31, 8, 0, 7, tzinfo=UTC),
    kind="alarm:power_cut",
    attributes={"alarm": "power_cut", "protocol": "gt06", "latitude": 41.15},
)


def test_event_payload_round_trip() -> None:
    decoded = decode_event(encode_event(EVENT))

    assert decoded == EVENT


def test_event_payload_fields() -> None:
    document = json.loads(encode_event(EVENT))

    assert document == {
        "v": 1,
        "device_id": "358735070530281",
        "time": "2026-01-31T08:00:07Z",
        "kind": "alarm:power_cut",
        "attributes": {"alarm": "power_cut", "protocol": "gt06", "latitude": 41.15},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": ""}, "invalid kind"),
        ({"kind": 7}, "invalid kind"),
        ({"attributes": [1]}, "invalid attributes"),
        ({"time": "yesterday"}, "invalid time"),
        ({"v": 2}, "unsupported schema version"),
    ],
)
def test_decode_event_rejects_invalid(change: dict[str, object], message: str) -> None:
    document = {**json.loads(encode_event(EVENT)), **change}

    with pytest.raises(PayloadError, match=message):
        decode_event(json.dumps(document))


def test_decode_event_rejects_missing_kind() -> None:
    document = json.loads(encode_event(EVENT))
    del document["kind"]

    with pytest.raises(PayloadError, match="kind"):
        decode_event(json.dumps(document))


def test_event_topic_shares_partition_with_positions() -> None:
    topic = event_topic(EVENT.device_id, 16)

    assert topic == position_topic(EVENT.device_id, 16).replace("positions", "events")
    assert topic_kind(topic) == "events"
    assert topic_kind(position_topic(EVENT.device_id, 16)) == "positions"


def test_topic_kind_rejects_foreign_topic() -> None:
    with pytest.raises(PayloadError, match="not under postloan/v1/"):
        topic_kind("other/v1/positions/3/dev")
