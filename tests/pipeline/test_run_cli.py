"""`pantau-agent run` end to end: one looping file camera, a private Mosquitto and a central;
SIGTERM after ~10 s must exit 0, and central must hold the closed buckets' counts."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import spawn
from tests.datapath.helpers import query, wait_buckets
from tests.datapath.test_faults import start_central, stop
from tests.pipeline.test_analyze_cli import _model_built

BUCKET = 2  # seconds


def campus_config(
    path: Path, port: int, outbox: Path, video: Path, zones: dict | None = None
) -> Path:
    """A live agent's config: TUD-Campus as a camera at 5 fps, a person line down the middle
    (and `zones`), buckets of BUCKET seconds, through the broker on `port`."""
    path.write_text(
        yaml.safe_dump(
            {
                "id": "a1",
                "site": "s1",
                "broker": {"port": port, "reconnect_min": 0.2, "reconnect_max": 1.0},
                "buffer": {"path": str(outbox)},
                "heartbeat_seconds": 1,
                "bucket_seconds": BUCKET,
                "cameras": {
                    "campus": {
                        "source": str(video),
                        "analysis_fps": 5,
                        "lines": {
                            "middle": {"points": [[320, 200], [320, 479]], "classes": ["person"]}
                        },
                        "zones": zones or {},
                    }
                },
            }
        )
    )
    return path


@pytest.mark.skipif(not _model_built(), reason="nanodet-m is not built")
def test_run_publishes_closed_buckets_and_stops_cleanly(
    tmp_path: Path, shared_data: Path, broker
) -> None:
    video = shared_data / "videos" / "TUD-Campus.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is missing")
    config = campus_config(
        tmp_path / "agent.yaml",
        broker.port,
        tmp_path / "outbox.db",
        video,
        zones={
            "left": {"polygon": [[0, 150], [320, 150], [320, 479], [0, 479]], "classes": ["person"]}
        },
    )
    central = start_central(tmp_path, broker.port)
    agent = spawn("pantau-agent", "run", "-c", str(config))
    try:
        time.sleep(10)
        assert agent.poll() is None, agent.stderr.read()
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=20)
        assert agent.returncode == 0, err[-2000:]
        assert "stopped;" in out
        # ~10 s of 2 s buckets: at least 3 closed while running (start-up takes a few s).
        got = wait_buckets(tmp_path, 3, timeout=15)
        assert got >= 3
        buckets = query(
            tmp_path,
            "SELECT DISTINCT bucket_start FROM counts WHERE agent = 'a1' AND camera = 'campus'",
        )
        assert len(buckets) == got
        rules = {r[0] for r in query(tmp_path, "SELECT DISTINCT rule FROM counts")}
        assert rules == {"middle", "left"}
        kinds = dict(query(tmp_path, "SELECT kind, COUNT(*) FROM messages GROUP BY kind"))
        assert kinds.get("counts", 0) >= 3 and kinds.get("health", 0) >= 3, kinds
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        stop(central)
