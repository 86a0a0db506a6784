"""``postloan run`` serves the API and /metrics on the [api] port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(url: str, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=2.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_run_serves_metrics_on_api_port(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "POSTLOAN_STORE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "POSTLOAN_STORE_SPOOL_DIR": str(tmp_path / "spool"),
        "POSTLOAN_GATEWAY_HOST": "127.0.0.1",
        "POSTLOAN_GATEWAY_GT06_PORT": "0",
        "POSTLOAN_GATEWAY_JT808_PORT": "0",
        "POSTLOAN_GATEWAY_NMEA_PORT": "-1",
        "POSTLOAN_API_HOST": "127.0.0.1",
        "POSTLOAN_API_PORT": str(port),
        "POSTLOAN_API_STATE_DIR": str(tmp_path / "risk"),
        "POSTLOAN_API_LEDGER_DIR": str(tmp_path / "ledger"),
        "POSTLOAN_API_AUDIT_FILE": str(tmp_path / "audit.jsonl"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "postloan.cli", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        metrics = _wait_for(f"http://127.0.0.1:{port}/metrics", timeout_s=30)
        cases = httpx.get(f"http://127.0.0.1:{port}/cases", timeout=2.0)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)

    assert metrics.status_code == 200
    assert "postloan_fixes_stored_total 0.0" in metrics.text
    assert cases.status_code == 401
    assert process.returncode == 0, output.decode(errors="replace")
