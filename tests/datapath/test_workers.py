"""Two `pantau-central run` workers share the subscription and one PostgreSQL database; one is
killed with SIGKILL mid-run and never comes back. Its broker session expires, the agent sends
again what no live worker confirmed (end-to-end acks), and central ends with exact totals,
rollups equal to a recomputation from the raw rows, and no open gaps."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import yaml
from pantau.central.storage import Storage

from tests.conftest import spawn
from tests.datapath.helpers import agent_config, summary_of
from tests.datapath.test_faults import ROWS_PER_BUCKET, simulate_args, stop
from tests.datapath.test_rollups import recomputed, stored_rollups

SESSION_EXPIRY = 3  # seconds the broker keeps the dead worker's session and its queue
RESEND_AFTER = 3.0


def worker_configs(tmp: Path, port: int, url: str, n: int) -> list[Path]:
    """Configs of `n` workers of one group: the same but for the worker's name."""
    paths = []
    for w in range(1, n + 1):
        path = tmp / f"central-{w}.yaml"
        path.write_text(
            yaml.safe_dump(
                {"broker": {"port": port, "reconnect_min": 0.2, "reconnect_max": 1.0,
                            "session_expiry": SESSION_EXPIRY},
                 "storage": url, "worker": str(w), "tail_gap_after": 2}
            )
        )  # fmt: skip
        paths.append(path)
    return paths


def start_worker(config: Path) -> subprocess.Popen[str]:
    proc = spawn("pantau-central", "run", "-c", str(config))
    line = proc.stderr.readline()
    assert "subscribed to" in line, line
    return proc


@pytest.fixture
def pg_url(pg_database: str | None) -> str:
    """A fresh schema in this session's PostgreSQL database."""
    if pg_database is None:
        pytest.skip("no PostgreSQL server")
    import psycopg

    schema = f"w_{secrets.token_hex(6)}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_database}?options={quote(f'-csearch_path={schema}')}"


def test_two_workers_one_killed_for_good_end_exact(tmp_path, broker, pg_url):
    agent_cfg = agent_config(tmp_path, broker.port)
    settings = yaml.safe_load(agent_cfg.read_text())
    settings["delivery"] = {"until": "central", "resend_after": RESEND_AFTER}
    agent_cfg.write_text(yaml.safe_dump(settings))
    workers = [start_worker(c) for c in worker_configs(tmp_path, broker.port, pg_url, 2)]
    time.sleep(0.3)  # the broker handles the SUBSCRIBEs in its own time
    st = Storage(pg_url)
    try:
        agent = spawn("pantau-agent", *simulate_args(agent_cfg, 8, 3, "--rate", "300"))
        # Mid-run: both workers have stored some, much is still to come.
        deadline = time.monotonic() + 60
        while (st.counter("messages") or 0) < 300:
            assert time.monotonic() < deadline, "the workers stored nothing"
            time.sleep(0.05)
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(10)
        stored_at_kill = st.counter("messages")
        out, err = agent.communicate(timeout=180)
        assert agent.returncode == 0, err
        summary = summary_of(out)
        assert summary["delivered"] is True and summary["pending"] == 0
        assert stored_at_kill < sum(summary["messages"].values()), "killed after the end"
        # The dead worker's share came again from the agent: its session queue never drained.
        assert "sending them again" in err, "nothing was left with the dead worker"

        buckets = summary["buckets"]
        assert st.counter("buckets") == buckets
        assert st.one("SELECT COUNT(*) FROM counts") == buckets * ROWS_PER_BUCKET
        assert st.totals() == {"a1": summary["totals"]}
        kinds = dict(st.fetch("SELECT kind, COUNT(*) FROM messages GROUP BY kind"))
        assert kinds == {k: v for k, v in summary["messages"].items() if v}
        zone = ZoneInfo("Asia/Makassar")
        hourly, daily = recomputed(st, zone)
        assert stored_rollups(st, "hour", "hour_start") == hourly
        assert stored_rollups(st, "day", "day") == daily
        time.sleep(2.5)  # past tail_gap_after: a tail still missing would show now
        assert st.summary()["open_gaps"] == 0, st.gaps(include_closed=False)
    finally:
        st.close()
        for w in workers:
            stop(w)
