"""The main job end to end on embedded defaults: a private Mosquitto, central on SQLite, and an
agent counting people on real footage (packaging/demo.yaml) and publishing through its outbox;
then what central stored, read back from its database.

    .venv/bin/python packaging/demo.py [SECONDS]     (./dev.sh demo does the set-up first)
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

from pantau.agent.wire.paths import state_root

BIN = Path(sys.executable).parent
WORK = Path(os.environ.get("PANTAU_DEMO_DIR") or state_root() / "demo")
CONFIG = Path(__file__).with_name("demo.yaml")


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
    seconds = sys.argv[1] if len(sys.argv) > 1 else "45"
    central = subprocess.Popen(
        [BIN / "pantau-central", "run"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        print(central.stderr.readline().strip())  # connected and subscribed
        print(f"== agent on {CONFIG.name} for {seconds} s (live counts below)")
        agent = subprocess.run(
            [BIN / "pantau-agent", "run", "-c", CONFIG, "--duration", seconds], env=env
        )
        if agent.returncode:
            sys.exit(f"the agent failed (exit {agent.returncode})")
        time.sleep(1.5)
    finally:
        central.send_signal(signal.SIGINT)
        central.wait(20)
        broker.terminate()
    print("== what central stored")
    subprocess.run([BIN / "pantau-central", "status"], env=env, check=True)
    subprocess.run([BIN / "pantau-central", "agents", "--cameras"], env=env, check=True)
    totals = subprocess.run(
        [BIN / "pantau-central", "export", "counts", "--format", "jsonl"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines: dict[tuple[str, str, str], list[int]] = {}
    for row in map(json.loads, totals.stdout.splitlines()):
        if row["rule_type"] == "line":
            t = lines.setdefault((row["camera"], row["rule"], row["class"]), [0, 0])
            t[0] += row["in"]
            t[1] += row["out"]
    for (camera, rule, cls), (n_in, n_out) in sorted(lines.items()):
        print(f"{camera}/{rule}/{cls}: in {n_in}, out {n_out}")


if __name__ == "__main__":
    main()
