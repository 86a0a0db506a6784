"""``postloan decode`` prints the values of every real device packet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from postloan.protocols.inspect import decode_hex

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "vectors.json").read_text(encoding="utf-8")
)
DEVICE_VECTORS = [v for v in VECTORS if v.get("direction") != "server_to_device"]


def _positions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for r in records for p in r.get("positions", [])]


@pytest.mark.parametrize(
    "vector", DEVICE_VECTORS, ids=[v["id"] for v in DEVICE_VECTORS]
)
def test_decode_prints_vector_values(vector: dict[str, Any]) -> None:
    expect = vector["expect"]
    zone = vector.get("details", {}).get("tz_assumed")
    offset = zone if vector["protocol"] == "gt06" and zone != "+00:00" else None

    records = decode_hex(vector["hex"], utc_offset=offset)

    if expect["error"]:
        assert any("error" in r for r in records)
        return
    assert not any("error" in r for r in records), records
    positions = _positions(records)
    assert len(positions) == len(expect["positions"])
    for got, want in zip(positions, expect["positions"], strict=True):
        if "time" in want:
            assert got["time"] == want["time"]
        assert got["latitude"] == pytest.approx(want["latitude"], abs=1e-6)
        assert got["longitude"] == pytest.approx(want["longitude"], abs=1e-6)
        for key in ("speed_kmh", "course", "valid", "satellites"):
            if key in want:
                assert got[key] == pytest.approx(want[key]), key
    if "device_id" in expect:
        assert expect["device_id"] in {r["device_id"] for r in records}
    alarms = {a for r in records for a in r.get("alarm", [])}
    assert set(expect["alarms"]) <= alarms
    replies = [r["reply"] for r in records if "reply" in r]
    if any(r["type"] == "time_request" for r in records):
        # The 0x8A reply carries the server's clock: check its frame and serial.
        serial = vector["details"]["serial"]
        assert replies[0].startswith("78780b8a")
        assert replies[0][-12:-8] == f"{serial:04x}"
    elif expect["reply_check"] == "exact":
        assert replies == expect["replies"]


def test_decode_command_line_prints_json_lines() -> None:
    login = next(v for v in VECTORS if v["id"] == "gt06-login-basic")
    spaced = " ".join(login["hex"][i : i + 2] for i in range(0, len(login["hex"]), 2))

    result = subprocess.run(
        [sys.executable, "-m", "postloan.cli", "decode", spaced],
        capture_output=True,
        text=True,
        timeout=60,
    )
    record = json.loads(result.stdout)

    assert result.returncode == 0
    assert record["protocol"] == "gt06"
    assert record["type"] == "login"
    assert record["device_id"] == "358735070530281"
    assert record["reply"] == "787805010077cf6d0d0a"


def test_decode_command_line_reads_stdin_and_fails_on_bad_crc() -> None:
    bad = next(v for v in VECTORS if v["id"] == "gt06-neg-bad-crc")

    result = subprocess.run(
        [sys.executable, "-m", "postloan.cli", "decode"],
        input=bad["hex"] + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    record = json.loads(result.stdout)

    assert result.returncode == 1
    assert record["error"] == "crc_mismatch"


def test_decode_rejects_non_hex_input() -> None:
    records = decode_hex("78 78 zz")

    assert records[0]["error"] == "invalid_input"
    assert "zz" in records[0]["detail"] or "z" in records[0]["detail"]
