"""Adaptive analysis rate of one camera: how far its confirmed tracks move between analysed
frames, relative to their own size, decides how many frames a second it analyses; short
probes at the highest rate find objects too fast to become tracks at the current one."""

from __future__ import annotations

from collections import deque

import numpy as np
from pantau.agent.vision.detections import Tracks

# A new track has no velocity yet: it is confirmed only if its next box overlaps its last one
# or its centre is within the tracker's centre gate (0.25 box heights plus 0.5 per second:
# 0.35 at 5 fps). Probes judge the tracks that were not confirmed before them by their step
# in box heights against this, which leaves room for the jitter of small boxes.
START = 0.25
# Association holds while an object moves at most this much of its own size between
# analysed frames (boxes still overlap; the centre gate reaches it); above it the rate rises.
TOO_FAST = 0.5
# Below this the rate may fall again, with margin so that it does not flap.
CALM = 0.15
WINDOW_SECONDS = 3.0  # steps kept for the statistic
CALM_SECONDS = 5.0  # the scene must stay calm this long before the rate falls
PERCENTILE = 90  # of the recent steps: a few fast objects raise the rate, one outlier does not

# Probes: objects that jump more than their size between analysed frames never get the
# consecutive matches that confirm a track, so the steps above never see them (scooters and
# distant cars at 5 fps). At start and every PROBE_PERIOD seconds below max_fps, the camera
# runs at max_fps for PROBE_SECONDS of detected frames (frames a motion gate skips show no
# motion), longer (up to PROBE_MAX_SECONDS) until PROBE_STEPS steps of confirmed tracks were
# seen (fewer: fast-traffic.avi 10.7 % counting error against 7.1 %); the steps of the probe
# then set the rate (see `_end_probe`). A scene with one person pays PROBE_MAX_SECONDS.
PROBE_PERIOD = 30.0
PROBE_SECONDS = 1.0
PROBE_MAX_SECONDS = 3.0
PROBE_STEPS = 20


class AnalysisRate:
    """The analysis rate of one camera: `fixed` frames a second, or (`fixed` None) chosen
    between `min_fps` and `max_fps` from the motion of its confirmed tracks.

    `observe(tracks, t)` takes each detected frame's tracks; `fps` is the rate to analyse at
    from now on and `note` says why (for health details and `analyze` output). The rate rises
    at once when the 90th percentile of recent steps (centre displacement between analysed
    frames, in box widths and heights) exceeds TOO_FAST, to the rate that brings it back to
    TOO_FAST; it falls by half (not below `min_fps`) only after CALM_SECONDS with that
    percentile below CALM. Probes (see PROBE_PERIOD) run at `max_fps` and leave the rate
    where their own steps would be at their limit, never below the rate before them; `phase`
    (0-1) delays the second probe by that part of a period.
    """

    def __init__(
        self, fixed: float | None, min_fps: float, max_fps: float, phase: float = 0.0
    ) -> None:
        self.auto = fixed is None
        self.min_fps = min_fps
        self.max_fps = max_fps
        self.fps = min_fps if fixed is None else fixed
        self.note = "auto: starting at min_fps" if self.auto else "fixed"
        self.speed = 0.0  # the last statistic (sizes per analysed frame at the rate then)
        self.probes = 0  # probes run so far
        self._last: dict[int, tuple[float, np.ndarray]] = {}  # id -> (t, cx cy w h)
        self._steps: deque[tuple[float, float]] = deque()  # (t, size-relative speed per s)
        self._calm_since: float | None = None
        self._next_probe: float | None = None  # time of the next probe; None: at once
        # The first period is this much longer: cameras that started together (a live
        # agent's) do not probe together ever after.
        self._phase = phase * PROBE_PERIOD
        self._probe: tuple[float, float] | None = None  # (seconds detected, rate before)
        self._probe_steps: list[float] = []  # speeds per s, over the threshold of the track
        self._probe_t = 0.0  # time of the probe's last frame
        self._known: set[int] = set()  # tracks confirmed when the probe started

    @property
    def probing(self) -> bool:
        return self._probe is not None

    def observe(self, tracks: Tracks, t: float) -> None:
        """One detected frame's tracks at time `t`."""
        if not self.auto:
            return
        last, seen = self._last, {}
        xyxy = np.asarray(tracks.xyxy, np.float64).reshape(-1, 4)
        for tid, box, confirmed in zip(tracks.tracker_id, xyxy, tracks.confirmed, strict=True):
            size = np.maximum(box[2:] - box[:2], 1.0)
            now = np.concatenate([(box[:2] + box[2:]) / 2, size])
            seen[int(tid)] = (t, now)
            before = last.get(int(tid))
            if confirmed and before is not None and t > before[0]:
                step = float(np.hypot(*((now[:2] - before[1][:2]) / size)))
                self._steps.append((t, step / (t - before[0])))
                if self._probe is not None:
                    if int(tid) in self._known:
                        judged = step / TOO_FAST
                    else:
                        judged = float(np.hypot(*(now[:2] - before[1][:2]))) / size[1] / START
                    self._probe_steps.append(judged / (t - before[0]))
        self._last = seen
        while self._steps and self._steps[0][0] < t - WINDOW_SECONDS:
            self._steps.popleft()
        if self._probe is not None:
            self._end_probe(t)
        else:
            self._decide(t)
            self._start_probe(tracks, t)

    def _start_probe(self, tracks: Tracks, t: float) -> None:
        if self._next_probe is None:
            self._next_probe = t
        if t < self._next_probe or self.fps >= self.max_fps:
            return
        self._probe = (0.0, self.fps)
        self._probe_t = t
        self._probe_steps = []
        self._known = {int(i) for i, c in zip(tracks.tracker_id, tracks.confirmed, strict=True)
                       if c}
        self.probes += 1
        self.note = f"auto: probing at max_fps for objects too fast to track at {self.fps:g}"
        self.fps = self.max_fps

    def _end_probe(self, t: float) -> None:
        assert self._probe is not None
        seconds, before = self._probe
        # Time over frames the motion gate skipped counts as one frame at min_fps.
        seconds += min(t - self._probe_t, 1 / self.min_fps)
        self._probe = (seconds, before)
        self._probe_t = t
        if seconds < PROBE_SECONDS or (
            len(self._probe_steps) < PROBE_STEPS and seconds < PROBE_MAX_SECONDS
        ):
            return
        self._probe = None
        self._next_probe = t + PROBE_PERIOD + self._phase
        self._phase = 0.0
        self._calm_since = None
        # The rate at which each track's step is at its threshold, for most of the steps.
        need = float(np.percentile(self._probe_steps, PERCENTILE)) if self._probe_steps else 0.0
        self.fps = min(self.max_fps, max(before, need))
        if need > before:
            self.note = (f"auto: raised by a probe at max_fps, objects would move "
                         f"{need / before:.2f} of their limit per frame at {before:g} fps (new "
                         f"tracks {START} box heights, tracked ones {TOO_FAST} of their size)")
        else:
            self.note = (f"auto: a probe at max_fps found objects moving {need / before:.2f} of "
                         f"their limit per frame at {before:g} fps")

    def _decide(self, t: float) -> None:
        if not self._steps:
            speed = 0.0
        else:
            speed = float(np.percentile([s for _, s in self._steps], PERCENTILE))
        self.speed = speed / self.fps
        if self.speed > TOO_FAST and self.fps < self.max_fps:
            self.fps = min(self.max_fps, speed / TOO_FAST)
            self.note = (f"auto: raised, objects moved {self.speed:.2f} of their size per "
                         f"analysed frame (> {TOO_FAST})")
            self._calm_since = None
            return
        if self.speed >= CALM:
            self._calm_since = None
            return
        if self._calm_since is None:
            self._calm_since = t
        elif t - self._calm_since >= CALM_SECONDS and self.fps > self.min_fps:
            self.fps = max(self.min_fps, self.fps / 2)
            self._calm_since = t
            self.note = (f"auto: lowered, objects moved {self.speed:.2f} of their size per "
                         f"analysed frame (< {CALM}) for {CALM_SECONDS:g} s")
