"""A broker killed with `kill -9` while it holds messages central has not stored: with delivery
`central` the agent sends them again and central ends with exact totals and no open gaps; with
delivery `broker` (PUBACK is final) the loss is real, and shows as an open tail gap."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.delivery.publisher import Publisher
from pantau.agent.wire.settings import load_settings

from tests.conftest import Broker, cli, spawn, wait_port
from tests.datapath.helpers import agent_config, central_config, query, summary_of
from tests.datapath.test_faults import assert_exact, simulate_args, stop

RESEND_AFTER = 3.0


def configure(tmp: Path, port: int, until: str = "central") -> tuple[Path, Path]:
    """Agent and central configs for these tests: quick resends and a quick tail gap."""
    agent = agent_config(tmp, port)
    settings = yaml.safe_load(agent.read_text())
    settings["delivery"] = {"until": until, "resend_after": RESEND_AFTER}
    agent.write_text(yaml.safe_dump(settings))
    central = central_config(tmp, port)
    settings = yaml.safe_load(central.read_text())
    settings["tail_gap_after"] = 2
    central.write_text(yaml.safe_dump(settings))
    return agent, central


def start_central(tmp: Path) -> subprocess.Popen[str]:
    """`pantau-central run` with the config `configure` wrote, once it has subscribed."""
    proc = spawn("pantau-central", "run", "-c", str(tmp / "central.yaml"))
    line = proc.stderr.readline()
    assert "subscribed to" in line, line
    time.sleep(0.3)  # the broker handles the SUBSCRIBE in its own time
    return proc


def assert_exact_without_tail(tmp: Path, summary: dict) -> None:
    """assert_exact, and no tail gap either (`status` counts those with the stored ones)."""
    assert_exact(tmp, summary)
    time.sleep(2.5)  # past tail_gap_after: a tail still missing would show now
    status = cli("pantau-central", "status", "-c", str(tmp / "central.yaml"))
    assert summary_of(status.stdout)["open_gaps"] == 0, status.stdout


def kill9(broker: Broker) -> None:
    """What a crash or an OOM kill does: no chance to save the queues."""
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGKILL)
    broker.proc.wait(10)
    wait_port(broker.port, up=False)


def outbox_state(tmp: Path) -> tuple[int, int]:
    """(rows in the agent's outbox, rows of them the broker has acknowledged)."""
    path = tmp / "outbox-a1.db"
    if not path.exists():
        return 0, 0
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*), COUNT(delivered) FROM outbox").fetchone()
    except sqlite3.OperationalError:
        return 0, 0
    finally:
        db.close()


def queue_in_broker(tmp: Path, broker: Broker, until: str):
    """Pause central, let the agent publish 8 cameras x 6 h into the broker, kill -9 the broker
    and start it again, resume central. Returns central, the agent's summary and its log."""
    agent_cfg, _ = configure(tmp, broker.port, until)
    central = start_central(tmp)
    central.send_signal(signal.SIGSTOP)
    agent = spawn("pantau-agent", *simulate_args(agent_cfg, 8, 6, "--drain-timeout", "120"))
    try:
        if until == "central":
            # Everything published and acknowledged by the broker, nothing confirmed.
            deadline = time.monotonic() + 60
            while (state := outbox_state(tmp))[0] < 8 * 360 or state[1] < state[0]:
                assert time.monotonic() < deadline, f"never all in the broker: {state}"
                time.sleep(0.2)
        else:
            agent.wait(60)  # PUBACK is final: the agent is done
        kill9(broker)
        broker.start()
        central.send_signal(signal.SIGCONT)
        out, err = agent.communicate(timeout=120)
        assert agent.returncode == 0, err
        return central, summary_of(out), err
    except BaseException:
        central.send_signal(signal.SIGCONT)
        stop(central)
        agent.kill()
        raise


def test_broker_kill9_with_central_paused_loses_nothing(tmp_path, broker):
    central, summary, log = queue_in_broker(tmp_path, broker, "central")
    try:
        assert "sending them again" in log, "the broker kill lost nothing: the test did not test"
        assert summary["delivered"] is True and summary["pending"] == 0
        assert_exact_without_tail(tmp_path, summary)
    finally:
        stop(central)


def test_broker_kill9_with_puback_delivery_shows_the_tail_loss_as_a_gap(tmp_path, broker):
    """The loss `delivery: broker` cannot prevent must not be silent: the agent's heartbeats
    said how far it had sent, so the missing tail is an open gap in `gaps` and `status`."""
    central, summary, _ = queue_in_broker(tmp_path, broker, "broker")
    try:
        total = sum(summary["messages"].values())
        # The agent lives on, with nothing left to send: its heartbeats say how far it has sent.
        settings = load_settings(AgentSettings, tmp_path / "agent-a1.yaml")
        outbox = Outbox(settings.buffer.path, agent="a1", site="s1")
        publisher = Publisher(settings, outbox)
        publisher.start()
        time.sleep(5)  # central drains what survived; heartbeats; the tail grace (2 s) passes
        publisher.stop()
        outbox.close()
        stored = query(tmp_path, "SELECT COUNT(*) FROM messages")[0][0]
        assert stored < total, "the broker kill lost nothing: the test did not test"
        config = str(tmp_path / "central.yaml")
        status = summary_of(cli("pantau-central", "status", "-c", config).stdout)
        assert status["open_gaps"] >= 1
        gaps = cli("pantau-central", "gaps", "--open", "-c", config)
        assert gaps.returncode == 0 and "open" in gaps.stdout, gaps.stdout + gaps.stderr
    finally:
        stop(central)


def kill_repeatedly(broker: Broker, times: int, spread: float, rng: random.Random) -> None:
    for _ in range(times):
        time.sleep(rng.uniform(0.3, spread))
        kill9(broker)
        time.sleep(rng.uniform(0.1, 1.0))
        broker.start()


@pytest.mark.parametrize(
    "kills", [pytest.param(3, id="3"), pytest.param(10, id="10", marks=pytest.mark.slow)]
)
def test_broker_kill9_at_random_moments_live_and_in_replay(tmp_path, broker, kills):
    rng = random.Random(kills)
    agent_cfg, _ = configure(tmp_path, broker.port)
    central = start_central(tmp_path)
    try:
        # Live: the agent generates while the broker dies under it.
        agent = spawn("pantau-agent", *simulate_args(agent_cfg, 8, 2, "--rate", "400"))
        kill_repeatedly(broker, kills, 1.5, rng)
        out, err = agent.communicate(timeout=180)
        assert agent.returncode == 0, err
        assert_exact(tmp_path, summary_of(out))
        # Replay: a backlog built while the broker was away drains while it dies again.
        broker.stop()
        backlog = simulate_args(agent_cfg, 8, 4, "--drain-timeout", "0")
        assert cli("pantau-agent", *backlog).returncode == 1
        broker.start()
        agent = spawn("pantau-agent", *simulate_args(agent_cfg, 8, 4))
        kill_repeatedly(broker, kills, 1.0, rng)
        out, err = agent.communicate(timeout=180)
        assert agent.returncode == 0, err
        assert_exact_without_tail(tmp_path, summary_of(out))
    finally:
        stop(central)
