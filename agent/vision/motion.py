"""Motion gate: a cheap change test on a grey thumbnail that lets a camera with a still view
skip detection while its tracks coast."""

from __future__ import annotations

import cv2
import numpy as np
from pantau.agent.config.tuning import MotionConfig
from pantau.agent.rules.health import thumbnail

GATE_THUMB = 96  # pixels on the longer side: a walking person still spans several of them


class MotionGate:
    """`changed(frame, t)` says whether `frame` must be detected: it differs from the frame of
    the last detection in at least `min_changed` of its thumbnail pixels, or `max_skip_seconds`
    have passed. Comparing with the last *detected* frame, not the previous one, means slow
    motion adds up instead of slipping under the threshold frame by frame."""

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._reference: np.ndarray | None = None
        self._detected_at = float("-inf")
        self.skipped = 0
        self.last_changed = 1.0

    def changed(self, frame: np.ndarray, t: float) -> bool:
        cfg = self.config
        if not cfg.enabled:
            return True
        thumb = cv2.GaussianBlur(thumbnail(frame, GATE_THUMB), (3, 3), 0)  # sensor noise
        if (
            self._reference is not None
            and self._reference.shape == thumb.shape
            and t - self._detected_at < cfg.max_skip_seconds
        ):
            diff = cv2.absdiff(thumb, self._reference)
            self.last_changed = float(np.count_nonzero(diff > cfg.pixel_threshold)) / diff.size
            if self.last_changed < cfg.min_changed:
                self.skipped += 1
                return False
        self._reference = thumb
        self._detected_at = t
        return True
