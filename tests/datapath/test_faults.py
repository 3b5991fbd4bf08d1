"""End to end through a real Mosquitto into central's SQLite: normal flow and the faults the
field sees (broker outage, agent and central killed, full outbox), each checked for zero loss
and zero double counting against the simulator's own summary.
"""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import cli, spawn
from tests.datapath.helpers import (
    agent_config,
    central_config,
    line_totals,
    query,
    summary_of,
    wait_buckets,
)

ROWS_PER_BUCKET = 7  # simulated cameras: 6 line classes + 1 zone class
# Recent enough to be inside the outbox's max age (7 days), fixed for the whole test run.
START = (datetime.now(timezone.utc) - timedelta(hours=30)).strftime("%Y-%m-%dT%H:00:00Z")


def start_central(tmp, port) -> subprocess.Popen[str]:
    """Start `pantau-central run` and return once it has subscribed."""
    proc = spawn("pantau-central", "run", "-c", str(central_config(tmp, port)))
    line = proc.stderr.readline()  # the first line says it is connected, or why not
    assert "subscribed to" in line, line + (proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(0.3)  # the broker handles the SUBSCRIBE in its own time
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def assert_exact(tmp, summary: dict) -> None:
    """Every generated bucket stored once, every generated message once, totals equal."""
    buckets = summary["buckets"]
    assert wait_buckets(tmp, buckets) == buckets
    assert query(tmp, "SELECT COUNT(*) FROM counts")[0][0] == buckets * ROWS_PER_BUCKET
    assert line_totals(tmp) == summary["totals"]
    stored_msgs = query(tmp, "SELECT kind, COUNT(*) FROM messages GROUP BY kind")
    assert dict(stored_msgs) == {k: v for k, v in summary["messages"].items() if v}
    assert query(tmp, "SELECT COUNT(*) FROM gaps WHERE closed_at IS NULL")[0][0] == 0


def simulate_args(config, cameras: int, hours: float, *extra: str) -> list[str]:
    return [
        "simulate",
        "-c",
        str(config),
        "--cameras",
        str(cameras),
        "--hours",
        str(hours),
        "--start",
        START,
        *extra,
    ]


def test_simulate_to_central_exactly_once(tmp_path, broker):
    central = start_central(tmp_path, broker.port)
    try:
        res = cli("pantau-agent", *simulate_args(agent_config(tmp_path, broker.port), 4, 3))
        assert res.returncode == 0, res.stderr
        summary = summary_of(res.stdout)
        assert summary["buckets"] == 4 * 180 and summary["delivered"] is True
        assert_exact(tmp_path, summary)
        # Agent state from status and heartbeat messages.
        assert query(tmp_path, "SELECT agent, max_seq FROM agents") == [
            ("a1", sum(summary["messages"].values()) - 1)
        ]
        # The agent said `offline` (retained) when it stopped.
        deadline = time.monotonic() + 5
        while query(tmp_path, "SELECT status FROM agents")[0][0] != "offline":
            assert time.monotonic() < deadline, "no offline status"
            time.sleep(0.1)
    finally:
        stop(central)


def test_broker_down_10s_mid_run(tmp_path, broker):
    central = start_central(tmp_path, broker.port)
    try:
        agent = spawn(
            "pantau-agent",
            *simulate_args(agent_config(tmp_path, broker.port), 8, 6, "--rate", "400"),
        )
        time.sleep(2.5)
        broker.stop()
        time.sleep(10)
        broker.start()
        out, err = agent.communicate(timeout=180)
        assert agent.returncode == 0, err
        summary = summary_of(out)
        assert_exact(tmp_path, summary)
    finally:
        stop(central)


def test_agent_sigkill_mid_publish_then_resume(tmp_path, broker):
    central = start_central(tmp_path, broker.port)
    config = agent_config(tmp_path, broker.port)
    try:
        agent = spawn("pantau-agent", *simulate_args(config, 8, 6, "--rate", "500"))
        time.sleep(2.5)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        stored_before = wait_buckets(tmp_path, 1, timeout=5)
        assert 0 < stored_before < 8 * 360, "the kill must land mid-run"
        res = cli("pantau-agent", *simulate_args(config, 8, 6))
        assert res.returncode == 0, res.stderr
        assert_exact(tmp_path, summary_of(res.stdout))
    finally:
        stop(central)


def test_central_sigkill_and_restart_while_agent_sends(tmp_path, broker):
    central = start_central(tmp_path, broker.port)
    agent = spawn(
        "pantau-agent",
        *simulate_args(agent_config(tmp_path, broker.port), 8, 6, "--rate", "500"),
    )
    try:
        time.sleep(2.5)
        central.send_signal(signal.SIGKILL)
        central.wait(10)
        time.sleep(3)
        central = start_central(tmp_path, broker.port)
        out, err = agent.communicate(timeout=180)
        assert agent.returncode == 0, err
        assert_exact(tmp_path, summary_of(out))
    finally:
        stop(central)
        if agent.poll() is None:
            agent.kill()


def test_outbox_at_cap_merges_and_keeps_totals(tmp_path, broker):
    broker.stop()
    config = agent_config(tmp_path, broker.port, max_mb=0.4)
    args = simulate_args(config, 4, 24, "--drain-timeout", "0")
    res = cli("pantau-agent", *args)
    assert res.returncode == 1 and "still in the outbox" in res.stderr
    generated = summary_of(res.stdout)
    assert generated["pending"] < generated["buckets"], "merging must have shrunk the outbox"

    status = cli("pantau-agent", "buffer", "status", "-c", str(config))
    assert status.returncode == 0, status.stderr
    merged = int(
        next(x for x in status.stdout.splitlines() if x.startswith("merged_buckets:")).split(":")[1]
    )
    assert merged > 0

    broker.start()
    central = start_central(tmp_path, broker.port)
    try:
        res = cli("pantau-agent", *simulate_args(config, 4, 24))
        assert res.returncode == 0, res.stderr
        summary = summary_of(res.stdout)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and line_totals(tmp_path) != summary["totals"]:
            time.sleep(0.3)
        assert line_totals(tmp_path) == summary["totals"]
        coarse = query(tmp_path, "SELECT COUNT(*) FROM counts WHERE bucket_seconds > 60")[0][0]
        assert coarse > 0
        # Merged buckets cover the day without overlap: their seconds add up to 24 h a camera.
        per_camera = query(
            tmp_path,
            "SELECT camera, SUM(bucket_seconds) FROM (SELECT DISTINCT camera, bucket_start, "
            "bucket_seconds FROM counts) GROUP BY camera",
        )
        assert {s for _, s in per_camera} == {24 * 3600}
        assert query(tmp_path, "SELECT COUNT(*) FROM gaps WHERE closed_at IS NULL")[0][0] == 0
    finally:
        stop(central)


@pytest.mark.parametrize("kill_after", [0.5])
def test_agent_sigkill_during_replay_keeps_outbox_consistent(tmp_path, broker, kill_after):
    """Killed while draining a backlog, the outbox still holds exactly what was not acked."""
    broker.stop()
    config = agent_config(tmp_path, broker.port)
    res = cli("pantau-agent", *simulate_args(config, 4, 6, "--drain-timeout", "0"))
    assert res.returncode == 1
    broker.start()
    central = start_central(tmp_path, broker.port)
    try:
        agent = spawn("pantau-agent", *simulate_args(config, 4, 6))
        time.sleep(kill_after)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        res = cli("pantau-agent", *simulate_args(config, 4, 6))
        assert res.returncode == 0, res.stderr
        assert_exact(tmp_path, summary_of(res.stdout))
    finally:
        stop(central)
