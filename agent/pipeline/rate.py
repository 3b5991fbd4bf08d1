"""Adaptive analysis rate of one camera: how far its confirmed tracks move between analysed
frames, relative to their own size, decides how many frames a second it analyses."""

from __future__ import annotations

from collections import deque

import numpy as np
from pantau.agent.vision.detections import Tracks

# Association holds while an object moves at most this much of its own size between
# analysed frames (boxes still overlap; the centre gate reaches it); above it the rate rises.
TOO_FAST = 0.5
# Below this the rate may fall again, with margin so that it does not flap.
CALM = 0.15
WINDOW_SECONDS = 3.0  # steps kept for the statistic
CALM_SECONDS = 5.0  # the scene must stay calm this long before the rate falls
PERCENTILE = 90  # of the recent steps: a few fast objects raise the rate, one outlier does not


class AnalysisRate:
    """The analysis rate of one camera: `fixed` frames a second, or (`fixed` None) chosen
    between `min_fps` and `max_fps` from the motion of its confirmed tracks.

    `observe(tracks, t)` takes each analysed frame's tracks; `fps` is the rate to analyse at
    from now on and `note` says why (for health details and `analyze` output). The rate rises
    at once when the 90th percentile of recent steps (centre displacement between analysed
    frames, in box widths and heights) exceeds TOO_FAST, to the rate that brings it back to
    TOO_FAST; it falls by half (not below `min_fps`) only after CALM_SECONDS with that
    percentile below CALM.
    """

    def __init__(self, fixed: float | None, min_fps: float, max_fps: float) -> None:
        self.auto = fixed is None
        self.min_fps = min_fps
        self.max_fps = max_fps
        self.fps = min_fps if fixed is None else fixed
        self.note = "auto: starting at min_fps" if self.auto else "fixed"
        self.speed = 0.0  # the last statistic (sizes per analysed frame at the rate then)
        self._last: dict[int, tuple[float, np.ndarray]] = {}  # id -> (t, cx cy w h)
        self._steps: deque[tuple[float, float]] = deque()  # (t, size-relative speed per s)
        self._calm_since: float | None = None

    def observe(self, tracks: Tracks, t: float) -> None:
        """One analysed frame's tracks at time `t`."""
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
        self._last = seen
        while self._steps and self._steps[0][0] < t - WINDOW_SECONDS:
            self._steps.popleft()
        self._decide(t)

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
