"""A bad camera must not stop the others: every camera is decoded in a supervised child process
(vision.isolated). A file that aborts FFmpeg (`decoder-abort.avi`, `malloc_consolidate()`,
SIGABRT), a source that accepts and then never sends, and a `kill -9` of a decoder each take
down only their camera, which is reported offline with the reason; the healthy cameras count
exactly what they count alone, and `analyze` of the aborting file is a clear error."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pantau.agent.config.agent import AgentSettings
from pantau.agent.runtime import LiveAgent
from pantau.agent.vision.isolated import DecoderLimits, IsolatedReader

from tests.conftest import spawn
from tests.datapath.helpers import query
from tests.datapath.test_faults import start_central, stop
from tests.pipeline.test_analyze_cli import _model_built

needs_model = pytest.mark.skipif(not _model_built(), reason="nanodet-m is not built")
FAST = DecoderLimits(hang_seconds=2.0, restart_min=0.2, restart_max=1.0)


class SilentCamera:
    """A TCP server that accepts connections and never sends a byte (a camera whose firmware
    hung)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent():
    camera = SilentCamera()
    yield camera
    camera.close()


def _clips(shared_data: Path) -> tuple[Path, Path]:
    good = shared_data / "videos" / "TUD-Campus.mp4"
    bad = shared_data / "videos" / "broken" / "decoder-abort.avi"
    for clip in (good, bad):
        if not clip.is_file():
            pytest.skip(f"{clip} is missing")
    return good, bad


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_kill_9_of_a_decoder_is_survived(shared_data: Path) -> None:
    good, _ = _clips(shared_data)
    reader = IsolatedReader(str(good), 5.0, limits=FAST, name="campus").start()
    try:
        assert reader.wait_ready(20) == (640, 480)
        assert _wait(lambda: reader.read() is not None, 5)
        first = reader.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert _wait(lambda: reader.take_fault()[0], 5), "the dead decoder must be noticed"
        _, fault = reader.take_fault()
        assert fault == {"reason": "decoder_crashed", "signal": "SIGKILL", "decoder_restarts": 1}
        assert _wait(lambda: reader.pid != first, 10), "restarted"
        before = reader.frames_read
        frames: list[Any] = []
        assert _wait(
            lambda: (
                (f := reader.read()) is not None
                and not frames.append(f)
                and reader.frames_read > before
            ),
            20,
        ), "frames again from the new decoder"
        assert reader.take_fault() == (False, None), "back, and the fault was reported"
        assert frames[-1].image.shape == (480, 640, 3)
    finally:
        reader.close()


def test_a_source_that_never_sends_is_a_hung_decoder(silent: SilentCamera) -> None:
    reader = IsolatedReader(
        f"http://user:pw@127.0.0.1:{silent.port}/video.mjpg", 5.0, limits=FAST
    ).start()
    try:
        assert _wait(lambda: reader.restarts >= 1, 10)
        down, fault = reader.take_fault()
        assert down and fault is not None
        assert fault["reason"] == "decoder_hung" and fault["signal"] == "SIGKILL"
        assert reader.read() is None
    finally:
        reader.close()


def test_an_aborting_file_is_a_crashed_decoder_with_its_signal(shared_data: Path) -> None:
    _, bad = _clips(shared_data)
    reader = IsolatedReader(str(bad), 5.0, limits=FAST).start()
    try:
        assert _wait(lambda: reader.restarts >= 2, 20), "restarted, with backoff"
        down, fault = reader.take_fault()
        assert down and fault is not None
        assert fault["reason"] == "decoder_crashed" and fault["signal"] == "SIGABRT"
    finally:
        reader.close()
    assert not list(Path("/dev/shm").glob(f"psm_*{os.getpid()}*")), "no ring left behind"


@needs_model
def test_analyze_of_a_file_that_aborts_the_decoder_fails_cleanly(
    tmp_path: Path, shared_data: Path
) -> None:
    _, bad = _clips(shared_data)
    config = tmp_path / "cams.yaml"
    config.write_text(yaml.safe_dump({"cameras": {"c": {"analysis_fps": 5}}}))
    done = spawn(
        "pantau-agent",
        "analyze",
        str(bad),
        "--camera",
        "c",
        "-c",
        str(config),
        "--json",
        str(tmp_path / "out.json"),
    )
    _, err = done.communicate(timeout=120)
    assert done.returncode == 2, err
    message = " ".join(err.split())
    assert str(bad) in message and "decoder" in message and "crashed (signal SIGABRT)" in message
    assert "Traceback" not in err
    assert not (tmp_path / "out.json").exists()


def _agent_settings(tmp_path: Path, port: int, cameras: dict[str, str]) -> dict[str, Any]:
    return {
        "id": "a1",
        "site": "s1",
        "broker": {"port": port, "reconnect_min": 0.2, "reconnect_max": 1.0},
        "buffer": {"path": str(tmp_path / "outbox.db")},
        "heartbeat_seconds": 1,
        "bucket_seconds": 2,
        # Restarts no more often than every 2 s: each one starts a Python with OpenCV, CPU
        # the healthy camera needs on a 2-core box.
        "decoders": {"hang_seconds": 2.0, "restart_min": 2.0, "restart_max": 8.0},
        "cameras": {
            name: {
                "source": source,
                "analysis_fps": 5,
                "lines": {"middle": {"points": [[320, 200], [320, 479]], "classes": ["person"]}},
            }
            for name, source in cameras.items()
        },
    }


def _counts_per_frame(
    tmp_path: Path, port: int, cameras: dict[str, str], seconds: float
) -> list[int]:
    """The running line total of camera `campus` after each analysed frame, live."""
    settings = AgentSettings.model_validate(_agent_settings(tmp_path, port, cameras))
    agent = LiveAgent(settings)
    agent.start()
    seen: list[int] = []
    times: list[float] = []
    assert agent.pipeline is not None
    runner = next(r for r in agent.pipeline.runners if r.name == "campus")

    def record(frame: Any, tracks: Any) -> None:
        times.append(frame.t)
        lines = runner.analytics.totals.lines["middle"]
        seen.append(sum(v[0] + v[1] for v in lines.values()))

    runner.on_frame.append(record)
    try:
        agent.run_until(threading.Event(), seconds)
    finally:
        agent.stop()
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert max(steps) < 0.3, f"frames skipped (a box too busy to compare): {steps}"
    return seen


@needs_model
def test_healthy_cameras_count_exactly_beside_broken_ones(
    tmp_path: Path, shared_data: Path, broker, silent: SilentCamera
) -> None:
    good, bad = _clips(shared_data)
    alone = _counts_per_frame(tmp_path / "alone", broker.port, {"campus": str(good)}, 8)
    beside = _counts_per_frame(
        tmp_path / "beside",
        broker.port,
        {
            "campus": str(good),
            "aborting": str(bad),
            "silent": f"http://127.0.0.1:{silent.port}/video.mjpg",
        },
        8,
    )
    n = min(len(alone), len(beside))
    assert n >= 30, (len(alone), len(beside))  # 8 s at 5 fps, less start-up
    assert alone[-1] > 0, "the clip's line must count someone"
    assert beside[:n] == alone[:n]


@needs_model
def test_run_reports_broken_cameras_and_keeps_counting(
    tmp_path: Path, shared_data: Path, broker, silent: SilentCamera
) -> None:
    good, bad = _clips(shared_data)
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            _agent_settings(
                tmp_path,
                broker.port,
                {
                    "campus": str(good),
                    "aborting": str(bad),
                    "silent": f"http://127.0.0.1:{silent.port}/video.mjpg",
                },
            )
        )
    )
    central = start_central(tmp_path, broker.port)
    agent = spawn("pantau-agent", "run", "-c", str(config))
    try:
        time.sleep(14)
        assert agent.poll() is None, agent.stderr.read()
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err[-2000:]

        def health(camera: str) -> list[tuple[str, float, dict[str, Any]]]:
            rows = query(
                tmp_path,
                "SELECT state, fps_effective, details FROM health WHERE "
                "camera = ? ORDER BY created_at",
                (camera,),
            )
            return [(s, f, json.loads(d)) for s, f, d in rows]

        assert _wait(lambda: len(health("campus")) >= 5 and health("silent"), 20)
        reasons = {"aborting": "decoder_crashed", "silent": "decoder_hung"}
        for camera, reason in reasons.items():
            # A bucket that closed before the decoder's fault was seen says `starting` (no
            # frame yet); from the fault on, every one says offline with the reason.
            rows = [r for r in health(camera) if r[0] != "starting"]
            assert rows and all(state == "offline" for state, _, _ in rows), health(camera)
            assert {d.get("reason") for _, _, d in rows} == {reason}, rows
        aborting = [d for state, _, d in health("aborting") if state == "offline"]
        assert all(d.get("signal") == "SIGABRT" for d in aborting)
        # The healthy camera: every full bucket at 5 fps, none offline, no gap.
        rows = health("campus")
        assert all(state in ("ok", "starting") for state, _, _ in rows), rows
        full = [fps for _, fps, _ in rows[1:-1]]
        assert full and min(full) >= 4.5, full
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        stop(central)
