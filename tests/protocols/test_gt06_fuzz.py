"""The fuzz harness: a short run passes, a misbehaving codec fails with its input."""

from __future__ import annotations

import dataclasses

import pytest

from postloan.protocols import fuzz, gt06
from postloan.protocols.base import DecodeError


def test_fuzz_short_gt06_run_passes(capsys: pytest.CaptureFixture[str]) -> None:
    codec = fuzz.load_codec("gt06")

    status = fuzz.run(codec, 2000, seed=1, max_seconds=60)

    assert status == 0
    assert "2000 inputs" in capsys.readouterr().out


def test_fuzz_unexpected_exception_fails(capsys: pytest.CaptureFixture[str]) -> None:
    def broken_decode(frame: bytes) -> object:
        if len(frame) > 30:
            raise KeyError("boom")
        return gt06.decode(frame)

    codec = dataclasses.replace(fuzz.load_codec("gt06"), decode=broken_decode)

    status = fuzz.run(codec, 2000, seed=1, max_seconds=60)

    assert status == 1
    assert "FAIL gt06" in capsys.readouterr().out


def test_fuzz_framer_over_bound_fails(capsys: pytest.CaptureFixture[str]) -> None:
    class HoardingFramer:
        buffered = 0

        def feed(self, data: bytes) -> list[bytes | DecodeError]:
            self.buffered += len(data)
            return []

    codec = dataclasses.replace(fuzz.load_codec("gt06"), framer=HoardingFramer)

    status = fuzz.run(codec, 2000, seed=1, max_seconds=60)

    assert status == 1
    assert "framer keeps" in capsys.readouterr().out


def test_fix_gt06_crc_makes_frame_valid() -> None:
    frame = bytearray(gt06.encode_heartbeat(7))
    frame[5] ^= 0xFF

    repaired = fuzz.fix_gt06_crc(bytes(frame))

    assert gt06.decode(repaired).serial == 7


def test_fix_jt808_checksum_recomputes_xor() -> None:
    frame = bytes.fromhex("7e000200000057044555290017807e")  # checksum 0x80 is wrong

    repaired = fuzz.fix_jt808_checksum(frame)

    assert repaired.hex() == "7e0002000000570445552900177f7e"
