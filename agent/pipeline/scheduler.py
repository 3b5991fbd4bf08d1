"""The vision pipeline: N cameras, one shared detector per model, frames batched across
cameras in fair round-robin; closed buckets, alerts and health go to the outbox."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pantau.agent.config.detector import DETECTOR_FLOOR, DetectorSettings
from pantau.agent.pipeline.camera import CameraAnalytics
from pantau.agent.vision.capture import Clock, FileReader, Frame, Prefetcher
from pantau.agent.vision.detect.runtime import Detector
from pantau.agent.vision.detect.store import ModelStore
from pantau.agent.vision.detections import Detections, Tracks
from pantau.agent.vision.isolated import IsolatedReader, Reader
from pantau.agent.vision.tiles import Tiler, share_budget
from pantau.agent.wire.protocol import AlertPayload

log = logging.getLogger(__name__)

Item = tuple[str, str, Any]  # (kind, camera, payload), as Outbox.enqueue takes them

# A live camera's wall clock that moves this many buckets (and at least CLOCK_JUMP_SECONDS)
# more or less than the monotonic clock did has jumped; less is latency and drift.
CLOCK_JUMP_BUCKETS = 3
CLOCK_JUMP_SECONDS = 10.0


def load_detectors(
    models: set[str], store: ModelStore | None = None, settings: DetectorSettings | None = None
) -> dict[str, Detector]:
    """One Detector per model name, each with `settings` (the agent's `detector` section;
    default: keep boxes down to DETECTOR_FLOOR); DetectorError or StoreError when one cannot
    be loaded."""
    store = store or ModelStore()
    settings = settings or DetectorSettings(confidence=DETECTOR_FLOOR)
    return {
        m: Detector.from_store(settings.model_copy(update={"model": m}), store)
        for m in sorted(models)
    }


@dataclass
class CameraRunner:
    """One camera in the pipeline: its reader, analytics and schedule."""

    analytics: CameraAnalytics
    reader: Reader
    model: str
    fps: float
    input_size: int | None = None  # detector input side for this camera; None: the model's
    bucket_start: float | None = None
    next_due: float = 0.0  # monotonic time of the next analysis (live pacing)
    last_t: float | None = None  # time of the last analysed frame
    last_tick: float = float("-inf")  # monotonic time of the last idle tick
    clock_ref: tuple[float, float] | None = None  # (wall, monotonic) when last seen (live)
    floor: float = float("-inf")  # live time never goes below this (see Pipeline._timeline)
    frames_at_tick: int = 0  # reader.frames_read at the last idle tick
    done: bool = False
    on_frame: list[Callable[[Frame, Tracks], None]] = field(default_factory=list)
    # Called with every analysed frame, its tracks and the alerts it raised or cleared
    # (evidence recorders).
    on_alerts: list[Callable[[Frame, Tracks, list[AlertPayload]], None]] = field(
        default_factory=list
    )

    @property
    def name(self) -> str:
        return self.analytics.name


class Pipeline:
    """Drives cameras through one shared detector per model.

    Each `step` takes at most one new frame from each camera, starting at a rotating camera
    so that, when more cameras have frames than a batch holds, every camera waits its turn;
    frames a motion gate judges unchanged skip detection. Live cameras are paced at their
    `analysis_fps` and their readers keep only the newest frame, so when the box is too slow
    every camera's effective rate drops alike and nothing queues up. A live camera whose
    reader still receives frames is never called offline, however long it waits its turn.

    Buckets are aligned to multiples of `bucket_seconds` of frame time; every bucket is closed,
    empty ones too, with a `counts` and a `health` message; alerts leave at once. Items go to
    `sink` (e.g. an outbox's enqueue) when given.

    Live cameras run on the wall clock (`clock`), checked against the monotonic one, so that
    buckets cover only time that was observed. A forward jump closes the open bucket and
    goes on at the new time, the gap left without buckets. A backward jump closes the open
    bucket too, then holds: the next bucket is the one after it, and the camera's time stays
    at its start until the wall clock has passed it, so no bucket is ever sent twice and the
    tracker's time never goes back (what is seen meanwhile counts in that next bucket, and a
    camera cannot be called offline). Either jump is logged and reported in the health of the
    bucket it closed (`details.clock_jump_seconds`).
    """

    def __init__(
        self,
        runners: Sequence[CameraRunner],
        detectors: dict[str, Detector],
        *,
        bucket_seconds: int = 60,
        sink: Callable[[list[Item]], None] | None = None,
        live: bool = False,
        max_batch: int | None = None,
        prefetch: bool = True,
        clock: Clock = time,
    ) -> None:
        self.runners = list(runners)
        self.clock = clock
        self.detectors = detectors
        self.bucket_seconds = bucket_seconds
        self.sink = sink
        self.live = live
        self.max_batch = max_batch or max(
            (d.settings.max_batch for d in detectors.values()), default=8
        )
        self._rr = 0
        self.batches = 0
        self._capacity: dict[str, float] = {}  # detector calls/s per model (tiling budget)
        if live:
            self.share_budget()
        if prefetch and not live:
            # Offline: decode and preprocess the next frames while the detector runs.
            for r in self.runners:
                reader = r.reader
                if isinstance(reader, FileReader | IsolatedReader) and not reader.realtime:
                    prepare = getattr(self.detectors.get(r.model), "prepare", None)
                    if prepare is not None and r.input_size is not None:
                        prepare = functools.partial(prepare, input_size=r.input_size)
                    if prepare is not None and r.analytics.tiler.enabled:
                        prepare = _unless_tiled(prepare, r.analytics.tiler)
                    r.reader = Prefetcher(reader, prepare)

    def share_budget(self) -> None:
        """Give every tiled live camera its fair share of its detector's calls per second
        (detector.calls_per_second, else measured once) as calls per analysed frame, at the
        cameras' current rates; a camera whose tiles need more falls back to fewer, larger
        ones (its health says so). Called again when a camera's rate changes."""
        for model, detector in self.detectors.items():
            runners = [r for r in self.runners if r.model == model]
            if not hasattr(detector, "detect_tiles") or not any(
                r.analytics.tiler.enabled for r in runners
            ):
                continue
            capacity = self._capacity.get(model)
            if capacity is None:
                capacity = detector.settings.calls_per_second or detector.calls_per_second()
                self._capacity[model] = capacity
            budget = share_budget(capacity, [r.fps for r in runners])
            log.info("detector %s: %.1f calls/s for %d cameras: %.2f calls per analysed frame "
                     "each", model, capacity, len(runners), budget)
            for r in runners:
                r.analytics.tiler.budget = budget

    @property
    def finished(self) -> bool:
        return all(r.done for r in self.runners)

    def _collect(self, now: float) -> list[tuple[CameraRunner, Frame]]:
        taken: list[tuple[CameraRunner, Frame]] = []
        n = len(self.runners)
        last = self._rr - 1
        for k in range(n):
            if len(taken) >= self.max_batch:
                break
            i = (self._rr + k) % n
            runner = self.runners[i]
            if runner.done or (self.live and now < runner.next_due):
                continue
            frame = runner.reader.read()
            if frame is None:
                runner.done = runner.reader.ended
                continue
            if self.live:
                period = 1.0 / runner.fps
                runner.next_due = max(runner.next_due + period, now + 0.5 * period)
            taken.append((runner, frame))
            last = i
        self._rr = (last + 1) % n if n else 0
        return taken

    def step(self) -> int:
        """Analyse one round of frames; return how many were analysed."""
        now = self.clock.monotonic()
        taken = self._collect(now)
        items: list[Item] = []
        for k, (runner, frame) in enumerate(taken):
            t, jumped = self._timeline(runner, frame.t, now)
            if t != frame.t:
                frame = dataclasses.replace(frame, t=t)
                taken[k] = (runner, frame)
            runner.floor = t
            items += jumped + self._roll(runner, t)
        by_model: dict[tuple[str, int | None], list[int]] = {}
        detections: dict[int, Any] = {}
        for k, (runner, frame) in enumerate(taken):
            if not runner.analytics.gate.changed(frame.image, frame.t):
                continue
            tiled = self._detect_tiles(runner, frame)
            if tiled is None:
                by_model.setdefault((runner.model, runner.input_size), []).append(k)
            else:
                detections[k] = tiled
        for (model, size), ks in by_model.items():
            detector = self.detectors[model]
            frames = [taken[k][1] for k in ks]
            if all(f.prepared is not None for f in frames):
                found = detector.detect_prepared([f.prepared for f in frames])
            elif size is None:
                found = detector.detect([f.image for f in frames])
            else:
                found = detector.detect([f.image for f in frames], size)
            detections.update(zip(ks, found, strict=True))
            self.batches += 1
        for k, (runner, frame) in enumerate(taken):
            alerts = runner.analytics.process(frame.t, frame.image, detections.get(k))
            items += [("alerts", runner.name, a) for a in alerts]
            runner.last_t = frame.t
            self._follow_rate(runner)
            for callback in runner.on_frame:
                callback(frame, runner.analytics.tracks)
            for recorder in runner.on_alerts:
                recorder(frame, runner.analytics.tracks, alerts)
        if self.live:
            items += self._tick_idle({id(r) for r, _ in taken})
        self._emit(items)
        return len(taken)

    def _detect_tiles(self, runner: CameraRunner, frame: Frame) -> Detections | None:
        """The frame's detections on its camera's tiles; None when the camera's plan is the
        whole frame (it joins the batch of its model)."""
        detector = self.detectors[runner.model]
        tiler = runner.analytics.tiler
        if not tiler.enabled or not hasattr(detector, "detect_tiles"):
            return None
        height, width = frame.image.shape[:2]
        size = (detector.input_size if runner.input_size is None
                else detector.check_size(runner.input_size))
        plan = tiler.plan(width, height, size)
        if plan.calls == 1 and plan.tiles[0] == (0, 0, width, height):
            return None
        self.batches += 1
        result: Detections = detector.detect_tiles(frame.image, plan, runner.input_size)
        return result

    def _follow_rate(self, runner: CameraRunner) -> None:
        # The camera's analytics choose its rate (analysis_fps auto); live pacing reads
        # runner.fps, the reader hands out frames at it; a live camera's share of the
        # detector per frame follows.
        fps = runner.analytics.rate.fps
        if fps != runner.fps:
            runner.fps = fps
            runner.reader.set_fps(fps)
            if self.live and runner.analytics.tiler.enabled:
                self.share_budget()

    def _tick_idle(self, fresh: set[int]) -> list[Item]:
        # Cameras without a frame still need their clock: offline alerts and zero buckets.
        wall, now = self.clock.time(), self.clock.monotonic()
        items: list[Item] = []
        for runner in self.runners:
            if id(runner) in fresh or now - runner.last_tick < 1.0:
                continue
            runner.last_tick = now
            t, jumped = self._timeline(runner, wall, now)
            items += jumped
            # A reader that received frames since the last tick is a live camera waiting
            # its turn on an overloaded box, not an offline one.
            read = runner.reader.frames_read
            delivering = read != runner.frames_at_tick
            runner.frames_at_tick = read
            if not delivering and (runner.last_t is None or t - runner.last_t > 1.0):
                items += [("alerts", runner.name, a) for a in runner.analytics.tick(t)]
            items += self._roll(runner, t)
        return items

    def _timeline(self, runner: CameraRunner, t: float, now: float) -> tuple[float, list[Item]]:
        """A live camera's time for wall time `t` seen at monotonic `now`, and the bucket a
        jump of the wall clock closed (see the class); a file's time is its own."""
        if not self.live:
            return t, []
        ref, runner.clock_ref = runner.clock_ref, (t, now)
        items: list[Item] = []
        if ref is not None and runner.bucket_start is not None:
            jump = (t - ref[0]) - (now - ref[1])
            if abs(jump) > max(CLOCK_JUMP_BUCKETS * self.bucket_seconds, CLOCK_JUMP_SECONDS):
                items = self._clock_jumped(runner, runner.bucket_start, t, jump)
        return max(t, runner.floor), items

    def _clock_jumped(
        self, runner: CameraRunner, start: float, t: float, jump: float
    ) -> list[Item]:
        """Close the bucket open at `start`; the next one starts at wall time `t`'s bucket,
        or after `start`'s, whichever is later (never a bucket twice)."""
        bs = self.bucket_seconds
        runner.bucket_start = max(math.floor(t / bs) * bs, start + bs)
        runner.floor = max(runner.floor, runner.bucket_start)
        log.warning("camera %s: the wall clock jumped %+.0f s; bucket %s closed, the next "
                    "starts at %s", runner.name, jump, _iso(start), _iso(runner.bucket_start))
        runner.analytics.clock_jumped(jump)
        return self._close(runner, start, None)

    def _roll(self, runner: CameraRunner, t: float) -> list[Item]:
        """Close every bucket that ends at or before `t`."""
        bs = self.bucket_seconds
        if runner.bucket_start is None:
            runner.bucket_start = math.floor(t / bs) * bs
        items: list[Item] = []
        while t >= runner.bucket_start + bs:
            items += self._close(runner, runner.bucket_start, None)
            runner.bucket_start += bs
        return items

    def _close(self, runner: CameraRunner, start: float, end: float | None) -> list[Item]:
        a = runner.analytics
        counts = a.close_bucket(start, self.bucket_seconds, end)
        seconds = (self.bucket_seconds if end is None else end - start) or self.bucket_seconds
        health = a.health_payload(runner.fps, seconds, runner.reader.frames_read)
        if isinstance(runner.reader, IsolatedReader):
            # A decoder that died says why; while it is down, its camera is offline at once.
            down, fault = runner.reader.take_fault()
            if fault is not None:
                health = health.model_copy(update={
                    "state": "offline" if down else health.state,
                    "details": {**health.details, **fault},
                })
        return [("counts", runner.name, counts), ("health", runner.name, health)]

    def _emit(self, items: list[Item]) -> None:
        if items and self.sink is not None:
            self.sink(items)

    def finish(self) -> None:
        """End every camera's tracks and close its open bucket: at its last frame for a file
        (its timeline ends there), at the full bucket length otherwise."""
        items: list[Item] = []
        for runner in self.runners:
            if runner.bucket_start is None:
                continue
            runner.analytics.end_tracks()
            end = runner.last_t if not self.live else None
            if end is not None:
                end = max(end, runner.bucket_start)
            items += self._close(runner, runner.bucket_start, end)
            runner.bucket_start = None
        self._emit(items)

    def start(self) -> None:
        """Start the cameras' read-ahead threads (`run` does; once is enough)."""
        for runner in self.runners:
            if isinstance(runner.reader, Prefetcher):
                runner.reader.start()

    def run(
        self, stop: threading.Event | None = None, duration: float | None = None
    ) -> None:
        """Step until every source ended, `stop` is set or `duration` seconds passed; then
        close the open buckets."""
        self.start()
        stop = stop or threading.Event()
        deadline = None if duration is None else self.clock.monotonic() + duration
        try:
            while not stop.is_set() and not self.finished:
                if deadline is not None and self.clock.monotonic() >= deadline:
                    break
                if self.step() == 0 and self.live:
                    stop.wait(self._idle_wait())
        finally:
            self.finish()

    def _idle_wait(self) -> float:
        now = self.clock.monotonic()
        due = [r.next_due - now for r in self.runners if not r.done]
        return float(np.clip(min(due, default=0.05), 0.005, 0.05))

    def close(self) -> None:
        for runner in self.runners:
            runner.reader.close()


def _unless_tiled(
    prepare: Callable[[np.ndarray], Any], tiler: Tiler
) -> Callable[[np.ndarray], Any]:
    """`prepare`, skipped (None) while the camera's frames are detected on tiles: the tiles
    are cut and prepared at detection."""

    def run(image: np.ndarray) -> Any:
        return None if tiler.tiled else prepare(image)

    return run


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
