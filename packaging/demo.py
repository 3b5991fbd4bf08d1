"""The main job end to end on embedded defaults: a private Mosquitto, central on SQLite, and an
agent publishing through its outbox; then what central stored, read back from its database.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
WORK = Path(os.environ.get("PANTAU_DEMO_DIR", "var/demo"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(port: int) -> subprocess.Popen[bytes]:
    """A private Mosquitto configured like packaging/mosquitto.conf, on a free port."""
    store = Path(tempfile.mkdtemp(prefix="pantau-mosquitto-"))
    store.chmod(0o777)
    conf = store / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {store}/\nmax_queued_messages 0\nmax_inflight_messages 0\n"
    )
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    sys.exit(f"mosquitto did not start on port {port}")


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    port = free_port()
    broker = start_broker(port)
    env = {
        **os.environ,
        "PANTAU_BROKER__PORT": str(port),
        "PANTAU_STORAGE": f"sqlite:///{WORK}/central.db",
        "PANTAU_BUFFER__PATH": f"{WORK}/outbox.db",
    }
    central = subprocess.Popen([BIN / "pantau-central", "run"], env=env)
    try:
        time.sleep(1)
        print(f"== broker 127.0.0.1:{port}, central -> {WORK}/central.db; simulating 4 cameras")
        agent = subprocess.run(
            [BIN / "pantau-agent", "simulate", "--cameras", "4", "--hours", "2"],
            env=env,
            capture_output=True,
            text=True,
        )
        if agent.returncode:
            sys.exit(agent.stderr)
        generated = json.loads(agent.stdout)
        time.sleep(1.5)
    finally:
        central.send_signal(signal.SIGTERM)
        central.wait(20)
        broker.terminate()
    print(f"== agent generated {generated['buckets']} buckets, {generated['messages']}")
    subprocess.run([BIN / "pantau-central", "status"], env=env, check=True)
    subprocess.run([BIN / "pantau-central", "agents"], env=env, check=True)


if __name__ == "__main__":
    main()
