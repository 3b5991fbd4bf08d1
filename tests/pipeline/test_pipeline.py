"""Pipeline glue without a model: a synthetic camera whose 'detector' finds the one bright
square of each frame, through the outbox, buckets (zero ones too), alerts and health."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pantau.agent.config.agent import CameraConfig
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.pipeline.camera import CameraAnalytics
from pantau.agent.pipeline.scheduler import CameraRunner, Pipeline
from pantau.agent.vision.capture import Frame
from pantau.agent.vision.detections import Detections

NAMES = ("person", "bicycle", "car")
# Recent (the outbox drops counts older than its max age) and a multiple of the bucket length.
BASE = float(int(time.time() // 3600 * 3600 - 3600))
W, H = 320, 240


class SquareDetector:
    """Finds the bright square of a synthetic frame: a perfect 'person' detector."""

    class settings:  # mimics Detector.settings
        max_batch = 8

    names = NAMES

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.sizes: list[int | None] = []

    def detect(
        self, frames: Sequence[np.ndarray], input_size: int | None = None
    ) -> list[Detections]:
        self.calls.append(len(frames))
        self.sizes.append(input_size)
        found = []
        for f in frames:
            ys, xs = np.nonzero(f[:, :, 0] > 200)
            if len(xs) == 0:
                found.append(Detections.empty(NAMES))
                continue
            box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
            found.append(Detections(box, np.array([0.9], np.float32), np.zeros(1, np.int32), NAMES))
        return found


class ScriptedReader:
    """Frames at the given times: a square walking left to right while x(t) is not None."""

    def __init__(self, times: Sequence[float], x_of_t) -> None:
        self.times = list(times)
        self.x_of_t = x_of_t
        self.frames_read = 0
        self.ended = False

    def read(self) -> Frame | None:
        if not self.times:
            self.ended = True
            return None
        t = self.times.pop(0)
        self.frames_read += 1
        image = np.full((H, W, 3), 60, np.uint8)
        image[::8, :] = 90  # texture, so the health monitor does not call it covered
        x = self.x_of_t(t - BASE)
        if x is not None:
            image[150:190, int(x) : int(x) + 20] = 255
        return Frame(image, t)

    def set_fps(self, fps: float) -> None:
        """The script, not the analysis rate, decides which frames come."""

    def close(self) -> None:
        pass


CONFIG = CameraConfig.model_validate(
    {
        "lines": {"gate": {"points": [[160, 0], [160, 240]], "classes": ["person"]}},
        "zones": {
            "right": {
                "polygon": [[170, 0], [319, 0], [319, 239], [170, 239]],
                "classes": ["person", "car"],
            },
        },
    }
)


def _walk(t: float) -> float | None:
    # 0..10 s: walks from x=20 to x=280; 10..20 s: gone; 30..35 s: a second pass (gap 20..30)
    if t < 10:
        return 20 + 26 * t
    if 30 <= t < 35:
        return 20 + 50 * (t - 30)
    return None


def _run(tmp_path: Path, times: list[float], **kw) -> tuple[Outbox, CameraAnalytics, Pipeline]:
    outbox = Outbox(tmp_path / "outbox.db", agent="a1", site="s1")
    analytics = CameraAnalytics("cam1", CONFIG, NAMES)
    runner = CameraRunner(analytics, ScriptedReader(times, _walk), "fake", 5.0)
    pipeline = Pipeline(
        [runner], {"fake": SquareDetector()}, bucket_seconds=5, sink=outbox.enqueue, **kw
    )
    pipeline.run()
    return outbox, analytics, pipeline


def test_every_bucket_is_sent_with_every_rule_and_class(tmp_path: Path) -> None:
    base = BASE
    times = [base + k * 0.2 for k in range(100)]  # 0..20 s
    times += [base + 30 + k * 0.2 for k in range(25)]  # 30..35 s, after a 10 s gap
    outbox, analytics, _ = _run(tmp_path, times)

    counts = [m.payload for m in outbox.messages("counts")]
    starts = [c.bucket_start.timestamp() - base for c in counts]
    assert starts == [0, 5, 10, 15, 20, 25, 30]  # 20..30 had no frame: zero buckets still
    for c in counts:
        assert set(c.lines["gate"]) == {"person"}
        assert set(c.zones["right"]) == {"person", "car"}
        assert c.observed_seconds <= c.bucket_seconds
    crossings = [(c.lines["gate"]["person"].in_, c.lines["gate"]["person"].out) for c in counts]
    # The square crosses x=160 left->right, onto the 'in' side of the downward line (its
    # left on screen), near t=5.4 s and t=32.2 s; nowhere else.
    assert sum(i for i, _ in crossings) == 2
    assert sum(o for _, o in crossings) == 0
    assert crossings[1][0] == 1 and crossings[6][0] == 1
    assert counts[4].observed_seconds == 0 and counts[5].observed_seconds == 0
    assert counts[1].zones["right"]["person"].occupancy_max == 1
    assert counts[0].zones["right"]["person"].occupancy_max == 0

    health = [m.payload for m in outbox.messages("health")]
    assert len(health) == len(counts)
    assert health[0].fps_target == 5.0 and health[0].fps_effective == pytest.approx(5.0)
    assert health[-1].frames_analyzed == 125
    assert analytics.totals.lines["gate"]["person"] == [2, 0]


def test_motion_gate_skips_still_frames_and_keeps_counts(tmp_path: Path) -> None:
    gated = CONFIG.model_copy(update={"motion": CONFIG.motion.model_copy(update={"enabled": True})})
    base = BASE
    times = [base + k * 0.2 for k in range(150)]  # 10..30 s the view is still
    outbox = Outbox(tmp_path / "outbox.db", agent="a1", site="s1")
    detector = SquareDetector()
    analytics = CameraAnalytics("cam1", gated, NAMES)
    runner = CameraRunner(analytics, ScriptedReader(times, _walk), "fake", 5.0)
    Pipeline([runner], {"fake": detector}, bucket_seconds=5, sink=outbox.enqueue).run()
    assert analytics.totals.lines["gate"]["person"] == [1, 0]
    assert analytics.gate.skipped > 50  # most of the 20 still seconds
    assert sum(detector.calls) == 150 - analytics.gate.skipped


def test_round_robin_batches_across_cameras() -> None:
    base = BASE
    detector = SquareDetector()
    detector.settings = type("S", (), {"max_batch": 2})
    runners = [
        CameraRunner(
            CameraAnalytics(f"c{i}", CONFIG, NAMES),
            ScriptedReader([base + k * 0.2 for k in range(10)], _walk),
            "fake",
            5.0,
        )
        for i in range(3)
    ]
    pipeline = Pipeline(runners, {"fake": detector}, bucket_seconds=5)
    pipeline.run()
    assert max(detector.calls) == 2  # never more than a batch
    assert [r.analytics.frames_analyzed for r in runners] == [10, 10, 10]


def test_cameras_with_their_own_input_size_are_batched_apart() -> None:
    detector = SquareDetector()
    runners = [
        CameraRunner(
            CameraAnalytics(f"c{i}", CONFIG, NAMES),
            ScriptedReader([BASE + k * 0.2 for k in range(5)], _walk),
            "fake",
            5.0,
            input_size=size,
        )
        for i, size in enumerate((None, 640, None))
    ]
    Pipeline(runners, {"fake": detector}, bucket_seconds=5).run()
    assert sorted(set(detector.sizes), key=str) == [640, None]
    # Each round: one call for the two default-size cameras, one for the 640 camera.
    assert sorted(zip(detector.sizes, detector.calls, strict=True), key=str)[0] == (640, 1)
    assert max(c for s, c in zip(detector.sizes, detector.calls, strict=True) if s is None) == 2


def test_a_crossing_held_when_the_file_ends_reaches_the_last_bucket(tmp_path: Path) -> None:
    """The clip ends one frame after the square crossed the line (K=2 would need another):
    the end of the stream ends the track, so its crossing counts, in the last bucket."""
    # The square's bottom centre, x = 30 + 26 t, is on the line at t = 5.0 s and past it at
    # 5.2 s, the last frame.
    times = [BASE + k * 0.2 for k in range(27)]
    outbox, analytics, _ = _run(tmp_path, times)
    counts = [m.payload for m in outbox.messages("counts")]
    assert [c.lines["gate"]["person"].in_ for c in counts] == [0, 1]
    assert analytics.totals.lines["gate"]["person"] == [1, 0]


class LiveCamera:
    """A live camera: frames arrive at `fps` in the background (frames_read grows with the
    wall clock, as LiveReader's capture thread counts them) until `dies_after` seconds;
    `read` hands out the newest frame not handed out yet, stamped with its arrival time."""

    def __init__(self, fps: float, dies_after: float | None = None) -> None:
        self.fps = fps
        self.dies_after = dies_after
        self.t0 = time.time()
        self.ended = False
        self._handed = 0

    @property
    def frames_read(self) -> int:
        alive = time.time() - self.t0
        if self.dies_after is not None:
            alive = min(alive, self.dies_after)
        return int(alive * self.fps)

    def read(self) -> Frame | None:
        n = self.frames_read
        if n == self._handed:
            return None
        self._handed = n
        image = np.full((H, W, 3), 60, np.uint8)
        image[::8, :] = 90
        return Frame(image, self.t0 + n / self.fps)

    def set_fps(self, fps: float) -> None:
        """The script, not the analysis rate, decides which frames come."""

    def close(self) -> None:
        pass


def test_an_overloaded_box_does_not_call_a_delivering_camera_offline() -> None:
    """Two live cameras share a detector that takes one frame per 0.7 s, so each camera is
    analysed every ~1.4 s, longer than its 1 s offline limit: they still deliver frames, so
    neither is offline. A third camera that stops delivering is."""

    class SlowDetector(SquareDetector):
        def detect(self, frames, input_size=None):
            time.sleep(0.7)
            return super().detect(frames, input_size)

    detector = SlowDetector()
    detector.settings = type("S", (), {"max_batch": 1})
    config = CONFIG.model_copy(
        update={
            "motion": CONFIG.motion.model_copy(update={"enabled": False}),
            "health": CONFIG.health.model_copy(update={"offline_seconds": 1.0}),
        }
    )
    cameras = {"busy1": LiveCamera(10), "busy2": LiveCamera(10), "dead": LiveCamera(10, 0.5)}
    runners = [
        CameraRunner(CameraAnalytics(name, config, NAMES), reader, "fake", 5.0)
        for name, reader in cameras.items()
    ]
    sent: list = []
    Pipeline(runners, {"fake": detector}, bucket_seconds=60, live=True, sink=sent.extend).run(
        duration=6.0
    )
    offline = {
        name for kind, name, alert in sent if kind == "alerts" and alert.type == "camera_offline"
    }
    assert offline == {"dead"}
    analysed = {r.name: r.analytics.frames_analyzed for r in runners}
    assert analysed["busy1"] >= 3 and analysed["busy2"] >= 3, analysed


class SteppedClock:
    """Wall and monotonic time that the test moves by hand; only the wall clock jumps."""

    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class ClockedCamera:
    """A live camera that stamps each frame with the wall clock, as LiveReader does."""

    def __init__(self, clock: SteppedClock) -> None:
        self.clock = clock
        self.frames_read = 0
        self.ended = False

    def read(self) -> Frame | None:
        self.frames_read += 1
        image = np.full((H, W, 3), 60, np.uint8)
        image[::8, :] = 90
        return Frame(image, self.clock.time())

    def set_fps(self, fps: float) -> None:
        """The script, not the analysis rate, decides which frames come."""

    def close(self) -> None:
        pass


def _run_through_jump(jump: float, after: int = 180) -> tuple[list, CameraRunner]:
    """Three minutes of a 1 fps live camera, a wall-clock jump, `after` more seconds."""
    clock = SteppedClock(BASE)
    runner = CameraRunner(CameraAnalytics("cam1", CONFIG, NAMES), ClockedCamera(clock), "fake", 1.0)
    sent: list = []
    pipeline = Pipeline(
        [runner],
        {"fake": SquareDetector()},
        bucket_seconds=60,
        live=True,
        sink=sent.extend,
        clock=clock,
    )
    for seconds in (180, after):
        for _ in range(seconds):
            clock.advance(1.0)
            pipeline.step()
        clock.wall += jump
        jump = 0.0
    pipeline.finish()
    return sent, runner


def _buckets(sent: list) -> list[float]:
    return [p.bucket_start.timestamp() - BASE for kind, _, p in sent if kind == "counts"]


def _jumps(sent: list) -> list[float]:
    return [
        p.details["clock_jump_seconds"]
        for kind, _, p in sent
        if kind == "health" and "clock_jump_seconds" in p.details
    ]


def test_a_forward_clock_jump_sends_no_empty_buckets_for_the_gap() -> None:
    week = 7 * 86400.0
    sent, runner = _run_through_jump(week)
    # 0, 60, 120 before; 180 closed by the jump; then three minutes at the new time.
    assert _buckets(sent) == [0, 60, 120, 180, week + 180, week + 240, week + 300, week + 360]
    assert _jumps(sent) == [pytest.approx(week, abs=2)]
    assert runner.analytics.frames_analyzed == 360


def test_a_backward_clock_jump_never_sends_a_bucket_twice() -> None:
    sent, runner = _run_through_jump(-3600.0)
    starts = _buckets(sent)
    # 180 closed by the jump; the wall clock never passes 240 again in this run, so 240 is
    # held open until the end and nothing before it is sent again.
    assert starts == [0, 60, 120, 180, 240]
    assert _jumps(sent) == [pytest.approx(-3600, abs=2)]
    assert runner.analytics.frames_analyzed == 360  # analysis went on through the hold
    health = [p for kind, _, p in sent if kind == "health"]
    assert health[-1].frames_analyzed == 360


def test_a_backward_jump_resumes_once_the_wall_clock_passes_the_held_bucket() -> None:
    sent, _ = _run_through_jump(-300.0, after=450)
    # The jump at 180 closes 180; the wall clock, back at -120, reaches 240 after 360 s and
    # 300 after 420 s: from there minute buckets on the wall clock again; 300 closes at the end.
    assert _buckets(sent) == [0, 60, 120, 180, 240, 300]
    assert _jumps(sent) == [pytest.approx(-300, abs=2)]


def test_a_small_backward_step_is_held_without_a_report() -> None:
    sent, _ = _run_through_jump(-120.0)
    # Under three buckets: no jump, bucket 180 stays open until the wall clock passes 240.
    assert _buckets(sent) == [0, 60, 120, 180, 240]
    assert _jumps(sent) == []
