"""Keeps the frames around each alert a camera raises: the last few analysed frames are held in
memory, and when an alert is raised they, the frame of the raise and the next few go to the
evidence store as JPEGs, rendered on a thread of their own. Called by the pipeline for every
analysed frame."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from pantau.agent.config.agent import CameraConfig, EvidenceSettings
from pantau.agent.evidence.frames import render
from pantau.agent.evidence.store import EvidenceStore
from pantau.agent.vision.capture import Frame
from pantau.agent.vision.detections import Tracks
from pantau.agent.wire.protocol import AlertPayload

log = logging.getLogger(__name__)

# Frames waiting to be rendered, at most: each holds a decoded frame (6 MB at 1080p).
MAX_WAITING = 16


@dataclass
class _Held:
    t: float
    image: np.ndarray  # the decoder's own array: readers hand out a new one per frame
    tracks: Tracks


@dataclass
class _Following:
    """An alert still collecting the frames after its raise."""

    alert_id: str
    raised_at: float
    next_index: int
    left: int
    last_t: float


@dataclass
class _Job:
    """One frame to render once and keep for each of `targets`: (alert id, index, raise)."""

    held: _Held
    config: CameraConfig
    targets: list[tuple[str, int, float]] = field(default_factory=list)


class EvidenceWriter:
    """Renders (blurs, draws, encodes) and stores evidence frames on one thread of its own, so
    that a raise never holds up the pipeline (about 45 ms a 1080p frame); at most `limit`
    frames wait, more are dropped and logged. `close()` stores what waits, then stops."""

    def __init__(
        self, store: EvidenceStore, settings: EvidenceSettings, limit: int = MAX_WAITING
    ) -> None:
        self.store = store
        self.settings = settings
        self.failures = 0
        self.dropped = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue(limit)
        self._thread = threading.Thread(target=self._run, name="evidence", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            log.warning("evidence frame of alert %s dropped: %d frames wait to be stored",
                        job.targets[0][0], self._queue.qsize())  # fmt: skip

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            held = job.held
            try:
                jpeg, size = render(held.image, held.tracks, job.config, self.settings)
                for alert_id, index, raised_at in job.targets:
                    self.store.add_frame(alert_id, index, held.t, held.t - raised_at, size, jpeg)
            except Exception as exc:  # evidence is a courtesy: log, go on with the next
                self.failures += 1
                log.warning("evidence frame of alert %s not kept: %s", job.targets[0][0], exc)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class EvidenceRecorder:
    """One camera's evidence: call it with every analysed frame, its tracks and the alerts that
    frame raised or cleared. It starts each raised alert in the store and hands the frames to
    keep to `writer`; a failure is logged and never reaches the pipeline."""

    def __init__(self, camera: str, config: CameraConfig, writer: EvidenceWriter) -> None:
        self.camera = camera
        self.config = config
        self.writer = writer
        self.settings = writer.settings
        self._before: deque[_Held] = deque(maxlen=self.settings.frames_before)
        self._following: list[_Following] = []
        self.failures = 0

    def __call__(self, frame: Frame, tracks: Tracks, alerts: list[AlertPayload]) -> None:
        try:
            self._observe(frame, tracks, alerts)
        except Exception as exc:  # evidence is a courtesy: never stop counting for it
            self.failures += 1
            log.warning("camera %s: evidence not kept: %s", self.camera, exc)

    def _observe(self, frame: Frame, tracks: Tracks, alerts: list[AlertPayload]) -> None:
        s = self.settings
        now = _Held(frame.t, frame.image, tracks)
        # One job per frame, however many alerts keep it: each frame is rendered once.
        jobs: dict[int, _Job] = {}

        def keep(alert_id: str, index: int, held: _Held, raised_at: float) -> None:
            job = jobs.setdefault(id(held), _Job(held, self.config))
            job.targets.append((alert_id, index, raised_at))

        for follow in list(self._following):
            if frame.t - follow.last_t >= s.interval_seconds:
                keep(follow.alert_id, follow.next_index, now, follow.raised_at)
                follow.next_index += 1
                follow.left -= 1
                follow.last_t = frame.t
            if follow.left <= 0:
                self._following.remove(follow)
        for alert in alerts:
            if alert.state != "raised":
                continue
            self.writer.store.add_alert(alert.alert_id, self.camera, alert.type, frame.t)
            before = list(self._before)
            for index, held in enumerate([*before, now]):
                keep(alert.alert_id, index, held, frame.t)
            if s.frames_after:
                self._following.append(
                    _Following(alert.alert_id, frame.t, len(before) + 1, s.frames_after, frame.t)
                )
        for job in jobs.values():
            self.writer.submit(job)
        if not self._before or frame.t - self._before[-1].t >= s.interval_seconds:
            self._before.append(now)  # with frames_before 0, the deque keeps nothing
