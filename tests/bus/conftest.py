"""Bus fixtures: the shared Mosquitto on 127.0.0.1:1883 and private brokers.

Tests that restart a broker start their own mosquitto on a free port with a
config file in tmp_path and stop it when the test ends; the shared broker is
never stopped or reconfigured.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED_BROKER = ("127.0.0.1", 1883)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def shared_broker_url() -> str:
    host, port = SHARED_BROKER
    if not _port_open(host, port):
        pytest.fail(
            f"no MQTT broker on {host}:{port}; start one with "
            "`mosquitto -d -c /etc/mosquitto/mosquitto.conf`"
        )
    return f"mqtt://{host}:{port}"


@pytest.fixture
def run_id() -> str:
    """A short id that keeps device ids and client ids of one test apart."""
    return uuid.uuid4().hex[:8]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PrivateBroker:
    """A mosquitto of this test alone, which it may stop and start."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = self.folder / "mosquitto.conf"
        # Started as root, mosquitto switches to the user "mosquitto", which
        # cannot write its persistence file into this test's folder, and it
        # then loses every session and queued message on a restart.
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            f"log_dest file {self.folder}/mosquitto.log\n"
            "max_queued_messages 100000\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen(
            [binary, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"private mosquitto on port {self.port} failed")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "broker", free_port())
    broker.folder.mkdir()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
