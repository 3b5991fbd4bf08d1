"""Keeps the frames around each alert a camera raises: the last few analysed frames are held in
memory, and when an alert is raised they, the frame of the raise and the next few go to the
evidence store as JPEGs. Called by the pipeline for every analysed frame."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np
from pantau.agent.config.agent import CameraConfig, EvidenceSettings
from pantau.agent.evidence.frames import render
from pantau.agent.evidence.store import EvidenceStore
from pantau.agent.vision.capture import Frame
from pantau.agent.vision.detections import Tracks
from pantau.agent.wire.protocol import AlertPayload

log = logging.getLogger(__name__)


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


class EvidenceRecorder:
    """One camera's evidence: call it with every analysed frame, its tracks and the alerts that
    frame raised or cleared. Frames are rendered (blurred, drawn, encoded) only for alerts, on
    the caller's thread; a failure is logged and never reaches the pipeline."""

    def __init__(
        self, camera: str, config: CameraConfig, settings: EvidenceSettings, store: EvidenceStore
    ) -> None:
        self.camera = camera
        self.config = config
        self.settings = settings
        self.store = store
        self._before: deque[_Held] = deque(maxlen=settings.frames_before)
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
        rendered: dict[int, tuple[bytes, tuple[int, int]]] = {}

        def keep(alert_id: str, index: int, held: _Held, raised_at: float) -> None:
            if id(held.image) not in rendered:  # one rendering per frame, however many alerts
                rendered[id(held.image)] = render(held.image, held.tracks, self.config, s)
            jpeg, size = rendered[id(held.image)]
            self.store.add_frame(alert_id, index, held.t, held.t - raised_at, size, jpeg)

        now = _Held(frame.t, frame.image, tracks)
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
            self.store.add_alert(alert.alert_id, self.camera, alert.type, frame.t)
            before = list(self._before)
            for index, held in enumerate([*before, now]):
                keep(alert.alert_id, index, held, frame.t)
            if s.frames_after:
                self._following.append(
                    _Following(alert.alert_id, frame.t, len(before) + 1, s.frames_after, frame.t)
                )
        if not self._before or frame.t - self._before[-1].t >= s.interval_seconds:
            self._before.append(now)  # with frames_before 0, the deque keeps nothing
