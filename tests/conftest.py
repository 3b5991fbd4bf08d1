"""Fixtures shared by all tests: a real Mosquitto on a free
port that a test can stop and restart, the shared data folder, and helpers to run the CLIs as
subprocesses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pantau.agent.wire.paths import research_data

REPO = Path(__file__).resolve().parent.parent
MOSQUITTO = os.environ.get("PANTAU_MOSQUITTO", "/usr/sbin/mosquitto")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = research_data()
    if not path.is_dir():
        pytest.skip(f"test data not found at {path} (set PANTAU_TEST_DATA)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not go {'up' if up else 'down'} in {timeout}s")


class Broker:
    """A private Mosquitto with persistence and unbounded queues, as packaging/ configures it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        # Mosquitto started as root drops to its own user: let it write its persistence file.
        store = workdir / "mosquitto-store"
        store.mkdir(exist_ok=True)
        store.chmod(0o777)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {store}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "log_type error\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, up=True)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): Mosquitto saves its queues to disk."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        wait_port(self.port, up=False)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not Path(MOSQUITTO).exists():
        pytest.fail(f"{MOSQUITTO} is missing: install Debian's mosquitto package")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def cli(name: str, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run pantau-agent / pantau-central and capture its output."""
    return subprocess.run(
        [str(BIN / name), *args], capture_output=True, text=True, timeout=300, **kwargs
    )


def spawn(name: str, *args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
