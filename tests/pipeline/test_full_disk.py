"""A live `pantau-agent run` whose outbox disk another process fills, with the broker away so
the outbox must grow: the agent keeps running (merging, dropping, holding messages in
memory), and once space and broker are back central gets new counts and the loss report."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import spawn
from tests.datapath.helpers import query, wait_buckets
from tests.datapath.test_faults import start_central, stop
from tests.datapath.test_outbox import fill_disk, small_disk  # noqa: F401 (a fixture)
from tests.pipeline.test_analyze_cli import _model_built
from tests.pipeline.test_run_cli import BUCKET, campus_config


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.skipif(not _model_built(), reason="nanodet-m is not built")
def test_a_full_disk_never_stops_the_agent(
    tmp_path: Path,
    shared_data: Path,
    broker,
    small_disk: Path,  # noqa: F811
) -> None:
    video = shared_data / "videos" / "TUD-Campus.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is missing")
    config = campus_config(tmp_path / "agent.yaml", broker.port, small_disk / "outbox.db", video)
    central = start_central(tmp_path, broker.port)
    agent = spawn("pantau-agent", "run", "-c", str(config))
    try:
        assert wait_buckets(tmp_path, 2, timeout=30) >= 2
        broker.stop()  # the outbox has to keep everything now
        time.sleep(2 * BUCKET)
        filler = fill_disk(small_disk)
        time.sleep(5 * BUCKET)  # buckets close against a full disk
        assert agent.poll() is None, agent.stderr.read()

        os.remove(filler)
        freed = time.time()
        broker.start()
        # New buckets, closed after the space came back, reach central; so does the report
        # of what the full disk cost.
        assert _wait(
            lambda: (
                query(
                    tmp_path,
                    "SELECT COUNT(*) FROM counts WHERE CAST(strftime('%s', bucket_start) "
                    "AS INTEGER) > ?",
                    (int(freed),),
                )[0][0]
                > 0
            ),
            timeout=30,
        )
        assert _wait(
            lambda: (
                query(tmp_path, "SELECT COUNT(*) FROM alerts WHERE type = 'buffer_overflow'")[0][0]
                > 0
            ),
            timeout=15,
        )
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        stop(central)
