"""Camera health: offline, frozen, covered or blurred, and scene-shift alerts from the frames a
camera delivers, measured on a 160-pixel grey thumbnail so it costs well under a millisecond."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pantau.agent.config.tuning import HealthConfig
from pantau.agent.rules.conditions import AlertEvent, HeldAlert

THUMB_SIZE = 160


def thumbnail(frame: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """uint8 grey image whose longer side is `size` pixels (area interpolation)."""
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    h, w = grey.shape[:2]
    scale = size / max(h, w)
    if scale >= 1:
        return np.ascontiguousarray(grey, np.uint8)
    dsize = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(grey, dsize, interpolation=cv2.INTER_AREA)


def texture(thumb: np.ndarray) -> tuple[float, float]:
    """(variance of the Laplacian, fraction of Canny edge pixels) of a thumbnail."""
    lap = float(cv2.Laplacian(thumb, cv2.CV_32F).var())
    edges = float(np.count_nonzero(cv2.Canny(thumb, 50, 150))) / thumb.size
    return lap, edges


def scene_similarity(reference: np.ndarray, thumb: np.ndarray, grid: int = 4) -> float:
    """Median over a grid x grid of cells of the normalised cross-correlation of two lightly
    blurred thumbnails: near 1 for the same view, near 0 for another one.

    The median ignores the cells that passing objects cover, and normalising per cell ignores
    brightness and contrast changes. Two flat cells count as matching, flat against textured
    as not.
    """
    if reference.shape != thumb.shape:
        thumb = cv2.resize(thumb, reference.shape[::-1], interpolation=cv2.INTER_AREA)
    a = cv2.GaussianBlur(reference.astype(np.float32), (0, 0), 1.5)
    b = cv2.GaussianBlur(thumb.astype(np.float32), (0, 0), 1.5)
    h, w = a.shape
    scores = []
    for i in range(grid):
        for j in range(grid):
            ys = slice(i * h // grid, (i + 1) * h // grid)
            xs = slice(j * w // grid, (j + 1) * w // grid)
            x = a[ys, xs] - a[ys, xs].mean()
            y = b[ys, xs] - b[ys, xs].mean()
            sx, sy = float(np.sqrt((x * x).sum())), float(np.sqrt((y * y).sum()))
            flat = 2.0 * np.sqrt(x.size)  # std below 2 grey levels
            if sx < flat or sy < flat:
                scores.append(1.0 if sx < flat and sy < flat else 0.0)
            else:
                scores.append(float((x * y).sum()) / (sx * sy))
    return float(np.median(scores))


_CONFIGURED = HealthConfig()  # the defaults of the limits a camera's configuration may set


@dataclass(frozen=True)
class HealthThresholds:
    """Limits and hold times of the camera health checks (seconds; grey levels 0..255).

    Measured on real footage (TUD, NGSIM-like road, indoor clips): live scenes keep a
    Laplacian variance above 150 and edge density above 0.005, a fully blurred or covered lens
    falls under 10 and 0.002; a live scene's similarity to its reference stays above 0.5 and
    another view scores below 0.15; real streams repeat an identical frame for at most about
    one second.
    """

    offline_seconds: float = _CONFIGURED.offline_seconds
    frozen_seconds: float = _CONFIGURED.frozen_seconds
    frozen_max_diff: float = 0.1
    covered_seconds: float = _CONFIGURED.covered_seconds
    covered_max_laplacian: float = 25.0
    covered_max_edges: float = 0.002
    shift_seconds: float = _CONFIGURED.shift_seconds
    shift_min_similarity: float = _CONFIGURED.shift_min_similarity
    clear_seconds: float = 3.0

    @classmethod
    def from_config(cls, config: HealthConfig) -> HealthThresholds:
        """These thresholds with the limits a camera's configuration sets."""
        return cls(**config.model_dump())


class HealthMonitor:
    """Raises and clears camera_offline, camera_frozen, camera_tamper (covered or blurred) and
    camera_scene_shift alerts from `update(t, frame)` calls.

    Call `update` regularly (at least every second or so) with each new decoded frame, or
    with None when no new frame arrived, so that offline is noticed; never hand the same
    frame object twice as new, or it reads as frozen.

    - offline: no frame for `offline_seconds` (counted from the first update if none ever
      came); clears on the next frame.
    - frozen: consecutive frames with a mean absolute thumbnail difference below
      `frozen_max_diff` for `frozen_seconds`.
    - covered: Laplacian variance and edge density both under their limits for
      `covered_seconds`.
    - scene shift: similarity to the reference below `shift_min_similarity` for
      `shift_seconds`, not evaluated while covered. The reference is the first frame that is
      not covered, unless `set_reference` gave one (e.g. from `pantau-agent cameras
      reference`).
    Frame-based alerts clear after their condition has been absent for `clear_seconds`.
    """

    def __init__(
        self,
        thresholds: HealthThresholds | None = None,
        *,
        reference: np.ndarray | None = None,
        rule: str | None = None,
    ) -> None:
        self.thresholds = th = thresholds or HealthThresholds()
        self._offline = HeldAlert("camera_offline", rule, 0.0, 0.0)
        self._frozen = HeldAlert("camera_frozen", rule, th.frozen_seconds, th.clear_seconds)
        self._covered = HeldAlert("camera_tamper", rule, th.covered_seconds, th.clear_seconds)
        self._shift = HeldAlert("camera_scene_shift", rule, th.shift_seconds, th.clear_seconds)
        self.reference: np.ndarray | None = None
        if reference is not None:
            self.set_reference(reference)
        self._previous: np.ndarray | None = None
        self._first_t: float | None = None
        self.last_frame_t: float | None = None
        self.frames = 0
        self.metrics: dict[str, float] = {}

    def set_reference(self, frame: np.ndarray) -> None:
        """Use `frame` (any size, BGR or grey) as the view the camera should keep."""
        self.reference = thumbnail(frame)

    @property
    def state(self) -> str:
        """'starting', 'offline', 'frozen', 'covered', 'scene_shift' or 'ok' (worst first),
        as HealthPayload.state wants it."""
        if self._offline.active:
            return "offline"
        if self.last_frame_t is None:
            return "starting"
        for alert, name in (
            (self._frozen, "frozen"),
            (self._covered, "covered"),
            (self._shift, "scene_shift"),
        ):
            if alert.active:
                return name
        return "ok"

    def update(self, t: float, frame: np.ndarray | None) -> list[AlertEvent]:
        """Observe time `t` and the new frame at `t`, or None if none came."""
        if self._first_t is None:
            self._first_t = t
        if frame is None:
            since = self.last_frame_t if self.last_frame_t is not None else self._first_t
            gap = t - since
            details = {"last_frame_at": self.last_frame_t, "seconds_without_frame": gap}
            return self._offline.update(gap >= self.thresholds.offline_seconds, False, t, details)

        events = self._offline.update(False, True, t)
        self.last_frame_t = t
        self.frames += 1
        thumb = thumbnail(frame)
        events += self._check_frame(thumb, t)
        self._previous = thumb
        return events

    def _check_frame(self, thumb: np.ndarray, t: float) -> list[AlertEvent]:
        th = self.thresholds
        events: list[AlertEvent] = []
        if self._previous is not None and self._previous.shape == thumb.shape:
            diff = float(cv2.absdiff(thumb, self._previous).mean())
            self.metrics["frame_diff"] = diff
            frozen = diff < th.frozen_max_diff
            events += self._frozen.update(frozen, not frozen, t, _rounded(frame_diff=diff))

        lap, edges = texture(thumb)
        self.metrics.update(laplacian=lap, edge_density=edges)
        covered = lap < th.covered_max_laplacian and edges < th.covered_max_edges
        events += self._covered.update(
            covered, not covered, t, _rounded(laplacian=lap, edge_density=edges)
        )
        if covered:
            return events

        if self.reference is None:
            self.reference = thumb
            return events
        similarity = scene_similarity(self.reference, thumb)
        self.metrics["similarity"] = similarity
        shifted = similarity < th.shift_min_similarity
        events += self._shift.update(shifted, not shifted, t, _rounded(similarity=similarity))
        return events


def _rounded(**values: float) -> dict[str, Any]:
    return {k: round(v, 4) for k, v in values.items()}
