"""ByteTrack-class multi-object tracker: turns each frame's Detections into Tracks with stable ids.

Built on numpy and scipy only. Time is explicit (seconds), so one configuration behaves the same
at 5 and at 25 analysed frames per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from scipy.optimize import linear_sum_assignment

from agent.detections import Detections


class Position(str, Enum):
    """Point of a box that stands for the object in line and zone rules."""

    BOTTOM_CENTER = "bottom_center"
    CENTER = "center"
    TOP_CENTER = "top_center"
    BOTTOM_LEFT = "bottom_left"
    BOTTOM_RIGHT = "bottom_right"
    CENTER_LEFT = "center_left"
    CENTER_RIGHT = "center_right"
    TOP_LEFT = "top_left"
    TOP_RIGHT = "top_right"


# Fractions of (width, height) from the top-left corner for each anchor position.
_ANCHOR_FRACTIONS: dict[Position, tuple[float, float]] = {
    Position.BOTTOM_CENTER: (0.5, 1.0),
    Position.CENTER: (0.5, 0.5),
    Position.TOP_CENTER: (0.5, 0.0),
    Position.BOTTOM_LEFT: (0.0, 1.0),
    Position.BOTTOM_RIGHT: (1.0, 1.0),
    Position.CENTER_LEFT: (0.0, 0.5),
    Position.CENTER_RIGHT: (1.0, 0.5),
    Position.TOP_LEFT: (0.0, 0.0),
    Position.TOP_RIGHT: (1.0, 0.0),
}


def anchor_points(
    xyxy: np.ndarray, position: Position | str = Position.BOTTOM_CENTER
) -> np.ndarray:
    """(N, 2) float64 anchor points of (N, 4) x1, y1, x2, y2 boxes."""
    fx, fy = _ANCHOR_FRACTIONS[Position(position)]
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    x = boxes[:, 0] + fx * (boxes[:, 2] - boxes[:, 0])
    y = boxes[:, 1] + fy * (boxes[:, 3] - boxes[:, 1])
    return np.stack([x, y], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of (N, 4) and (M, 4) xyxy boxes; 0 for empty boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class Tracks:
    """Tracks reported for one frame: every array has one row per track.

    tracker_id: int64, unique for the tracker's lifetime and never shared (unconfirmed tracks
    have their own ids too); xyxy: float32 (N, 4) filtered boxes; class_id: int32 class by
    confidence-weighted vote over the track's detections; confidence: float32 of the detection
    matched in this frame; confirmed: bool, true once the track has had `min_hits` consecutive
    matches. Rules must ignore unconfirmed tracks for counting.
    """

    tracker_id: np.ndarray
    xyxy: np.ndarray
    class_id: np.ndarray
    confidence: np.ndarray
    confirmed: np.ndarray
    names: tuple[str, ...] = field(default=())

    @classmethod
    def empty(cls, names: tuple[str, ...] = ()) -> Tracks:
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.int32),
            np.zeros(0, np.float32),
            np.zeros(0, bool),
            names,
        )

    def __len__(self) -> int:
        return len(self.tracker_id)

    def __getitem__(self, index: np.ndarray | slice) -> Tracks:
        return Tracks(
            self.tracker_id[index],
            self.xyxy[index],
            self.class_id[index],
            self.confidence[index],
            self.confirmed[index],
            self.names,
        )

    def anchors(self, position: Position | str = Position.BOTTOM_CENTER) -> np.ndarray:
        return anchor_points(self.xyxy, position)


# COCO-80 ids. Detectors often swap classes inside these groups (car/truck/bus in particular), so
# a track may match any detection of its group and keeps its class by vote; a person never
# matches a bicycle box that overlaps it.
DEFAULT_CLASS_GROUPS: tuple[tuple[int, ...], ...] = ((0,), (1, 3), (2, 5, 7))

# Kalman noise, as fractions of box size, per frame at this reference rate (ByteTrack's values);
# scaled with the real time step so that 5 and 25 fps share one model.
_REF_FPS = 25.0
_STD_POS = 1.0 / 20
_STD_VEL = 1.0 / 160


class _Kalman:
    """Constant-velocity Kalman filter over (cx, cy, w, h) for many tracks at once.

    State rows are (cx, cy, w, h, vcx, vcy, vw, vh), velocities in pixels per second. Process
    noise grows linearly with the time step (a random walk), so a 0.2 s step at 5 fps carries
    the uncertainty of five 0.04 s steps at 25 fps.
    """

    @staticmethod
    def _size(mean: np.ndarray) -> np.ndarray:
        # Noise scales with width for x and w, height for y and h (BoT-SORT style).
        w = np.maximum(mean[:, 2], 1.0)
        h = np.maximum(mean[:, 3], 1.0)
        return np.stack([w, h, w, h], axis=1)

    @classmethod
    def initiate(cls, cxcywh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(cxcywh)
        mean = np.zeros((n, 8))
        mean[:, :4] = cxcywh
        size = cls._size(mean)
        std = np.concatenate([2 * _STD_POS * size, 10 * _STD_VEL * _REF_FPS * size], axis=1)
        cov = np.zeros((n, 8, 8))
        idx = np.arange(8)
        cov[:, idx, idx] = std**2
        return mean, cov

    @classmethod
    def predict(
        cls, mean: np.ndarray, cov: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(mean) == 0:
            return mean, cov
        dt = np.maximum(dt, 0.0)
        size = cls._size(mean)
        steps = (dt * _REF_FPS)[:, None]
        q = np.concatenate(
            [(_STD_POS * size) ** 2 * steps, (_STD_VEL * _REF_FPS * size) ** 2 * steps], axis=1
        )
        mean = mean.copy()
        mean[:, :4] += dt[:, None] * mean[:, 4:]
        # F P F^T for F = [[I, dt I], [0, I]], written out by blocks.
        p11, p12 = cov[:, :4, :4], cov[:, :4, 4:]
        p21, p22 = cov[:, 4:, :4], cov[:, 4:, 4:]
        d = dt[:, None, None]
        new = np.empty_like(cov)
        new[:, :4, :4] = p11 + d * (p12 + p21) + d * d * p22
        new[:, :4, 4:] = p12 + d * p22
        new[:, 4:, :4] = p21 + d * p22
        new[:, 4:, 4:] = p22
        idx = np.arange(8)
        new[:, idx, idx] += q
        return mean, new

    @classmethod
    def update(
        cls, mean: np.ndarray, cov: np.ndarray, cxcywh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(mean) == 0:
            return mean, cov
        r = (_STD_POS * cls._size(mean)) ** 2
        s = cov[:, :4, :4].copy()
        idx = np.arange(4)
        s[:, idx, idx] += r
        pht = cov[:, :, :4]  # P H^T
        gain = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = cxcywh - mean[:, :4]
        mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        cov = cov - np.einsum("nij,njk->nik", gain, cov[:, :4, :])
        return mean, cov


def _xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    w = xyxy[:, 2] - xyxy[:, 0]
    h = xyxy[:, 3] - xyxy[:, 1]
    return np.stack([xyxy[:, 0] + w / 2, xyxy[:, 1] + h / 2, w, h], axis=1)


def _cxcywh_to_xyxy(state: np.ndarray) -> np.ndarray:
    cx, cy = state[:, 0], state[:, 1]
    w, h = np.maximum(state[:, 2], 0.0), np.maximum(state[:, 3], 0.0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _match(iou: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one assignment maximising IoU; pairs below `min_iou` are not matched."""
    if iou.size == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = iou[rows, cols] >= min_iou
    return rows[keep], cols[keep]


class ByteTracker:
    """Two-stage (high, then low score) IoU tracker with a Kalman motion model.

    Each `update(detections, t)`:
    1. predicts every live track to time `t`;
    2. matches detections with score >= `high_score` to confirmed and lost tracks by IoU
       (optimal assignment, IoU >= `match_iou`; with `fuse_score`, IoU is weighted by the
       detection score as in ByteTrack);
    3. matches detections with `low_score` <= score < `high_score` to the confirmed tracks
       still unmatched that were seen in the previous update (IoU >= `low_match_iou`), which
       keeps tracks alive through occlusion without ever starting tracks from weak boxes;
    4. matches the remaining high-score detections to unconfirmed tracks
       (IoU >= `tentative_match_iou`); an unconfirmed track left unmatched is removed at once;
    5. starts a new unconfirmed track from each remaining detection with score >= `new_score`.

    A track is confirmed after `min_hits` consecutive matches and stays confirmed; a confirmed
    track without a match is lost and is removed once it has not been matched for
    `lost_seconds` (time, not frames, so the buffer is the same at any analysis rate).
    Removed tracks leave no state behind: memory is bounded by the live tracks.

    Classes: a detection may match only a track of the same class group (`class_groups`,
    default person / two-wheelers / four-wheelers by COCO id; a class in no group is its own
    group); a track's class is the confidence-weighted majority of its matched detections.

    Only tracks matched in this update are reported; lost tracks coast silently.
    """

    def __init__(
        self,
        *,
        high_score: float = 0.5,
        low_score: float = 0.1,
        new_score: float = 0.6,
        match_iou: float = 0.2,
        low_match_iou: float = 0.5,
        tentative_match_iou: float = 0.3,
        min_hits: int = 2,
        lost_seconds: float = 1.5,
        tentative_seconds: float = 0.25,
        fuse_score: bool = True,
        class_groups: Iterable[Sequence[int]] = DEFAULT_CLASS_GROUPS,
    ) -> None:
        if not 0 <= low_score <= high_score:
            raise ValueError("need 0 <= low_score <= high_score")
        if min_hits < 1:
            raise ValueError("min_hits must be at least 1")
        if lost_seconds < 0:
            raise ValueError("lost_seconds must be >= 0")
        self.high_score = high_score
        self.low_score = low_score
        self.new_score = new_score
        self.match_iou = match_iou
        self.low_match_iou = low_match_iou
        self.tentative_match_iou = tentative_match_iou
        self.min_hits = min_hits
        self.lost_seconds = lost_seconds
        self.tentative_seconds = tentative_seconds
        self.fuse_score = fuse_score
        self._group_of: dict[int, int] = {}
        for group, members in enumerate(class_groups):
            for cid in members:
                self._group_of[int(cid)] = -1 - group  # negative: never equal to a class id
        self.reset()

    def reset(self) -> None:
        """Forget every track (ids keep increasing, so an id is never reused)."""
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._ids = np.zeros(0, np.int64)
        self._hits = np.zeros(0, np.int64)
        self._confirmed = np.zeros(0, bool)
        self._time = np.zeros(0)  # time the Kalman state refers to
        self._last_seen = np.zeros(0)  # time of the last match
        self._votes = np.zeros((0, 1))  # confidence summed per class id
        self._match_score = np.zeros(0)  # score of the detection last matched
        self._names: tuple[str, ...] = ()
        self._removed = np.zeros(0, np.int64)
        self._last_output = Tracks.empty()
        self._last_t: float | None = None
        if not hasattr(self, "_next_id"):
            self._next_id = 1

    def __len__(self) -> int:
        """Live tracks: confirmed, lost within the buffer, and unconfirmed."""
        return len(self._ids)

    @property
    def removed_ids(self) -> np.ndarray:
        """Ids of the tracks removed by the last `update`: rules may drop their state."""
        return self._removed

    def _groups(self, class_id: np.ndarray) -> np.ndarray:
        return np.array([self._group_of.get(int(c), int(c)) for c in class_id], np.int64)

    def update(self, detections: Detections, t: float) -> Tracks:
        """Advance to time `t` (seconds, increasing) with this frame's detections."""
        t = float(t)
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"time went backwards: {t} < {self._last_t}")
        if detections.names:
            self._names = detections.names
        self._mean, self._cov = _Kalman.predict(self._mean, self._cov, t - self._time)
        self._time = np.full(len(self._ids), t)

        scores = np.asarray(detections.confidence, np.float64)
        det_cls = np.asarray(detections.class_id, np.int64)
        det_boxes = np.asarray(detections.xyxy, np.float64).reshape(-1, 4)
        n_tracks = len(self._ids)
        iou = box_iou(_cxcywh_to_xyxy(self._mean), det_boxes)
        if n_tracks and len(scores):
            same_group = self._groups(self._track_class())[:, None] == self._groups(det_cls)
            iou = np.where(same_group, iou, 0.0)

        high = np.flatnonzero(scores >= self.high_score)
        low = np.flatnonzero((scores >= self.low_score) & (scores < self.high_score))
        recent = self._last_seen >= (self._last_t if self._last_t is not None else t)
        confirmed_idx = np.flatnonzero(self._confirmed)
        tentative_idx = np.flatnonzero(~self._confirmed)

        track_rows: list[np.ndarray] = []
        det_rows: list[np.ndarray] = []

        # Stage 1: strong detections against confirmed and lost tracks.
        sim = iou[np.ix_(confirmed_idx, high)]
        if self.fuse_score:
            sim = sim * np.clip(scores[high], 0.0, 1.0)[None, :]
        r, c = _match(sim, self.match_iou)
        track_rows.append(confirmed_idx[r])
        det_rows.append(high[c])
        left_tracks = np.setdiff1d(confirmed_idx, confirmed_idx[r])
        left_high = np.setdiff1d(high, high[c])

        # Stage 2: weak detections only rescue tracks seen in the previous update.
        cand = left_tracks[recent[left_tracks]]
        r, c = _match(iou[np.ix_(cand, low)], self.low_match_iou)
        track_rows.append(cand[r])
        det_rows.append(low[c])

        # Stage 3: unconfirmed tracks take what strong detections remain.
        r, c = _match(iou[np.ix_(tentative_idx, left_high)], self.tentative_match_iou)
        track_rows.append(tentative_idx[r])
        det_rows.append(left_high[c])
        left_high = np.setdiff1d(left_high, left_high[c])

        matched_t = np.concatenate(track_rows).astype(np.intp)
        matched_d = np.concatenate(det_rows).astype(np.intp)
        self._apply_matches(matched_t, matched_d, det_boxes, scores, det_cls, t)

        # Removal: unmatched unconfirmed tracks at once, lost tracks after the buffer.
        matched_mask = np.zeros(n_tracks, bool)
        matched_mask[matched_t] = True
        unseen = t - self._last_seen
        dead = np.where(
            self._confirmed, unseen > self.lost_seconds, unseen > self.tentative_seconds
        )
        keep = ~dead
        self._removed = self._ids[dead]
        out_rows = np.flatnonzero(matched_mask[keep])
        self._compact(keep)

        new_dets = left_high[scores[left_high] >= self.new_score]
        first_new = len(self._ids)
        self._start_tracks(det_boxes[new_dets], scores[new_dets], det_cls[new_dets], t)
        out_rows = np.concatenate([out_rows, np.arange(first_new, len(self._ids))])

        self._last_t = t
        self._last_output = self._report(out_rows)
        return self._last_output

    def coast(self, t: float) -> Tracks:
        """Report the last update's tracks again at time `t` without new detections.

        For a frame that a motion gate judged unchanged: the objects are where they were, so
        every live track counts as seen at `t` (it does not age towards removal) and its
        velocity is zeroed.
        """
        t = float(t)
        self._time[:] = t
        self._last_seen[:] = t
        self._mean[:, 4:] = 0.0
        self._removed = np.zeros(0, np.int64)
        self._last_t = t
        live = np.isin(self._last_output.tracker_id, self._ids)
        self._last_output = self._last_output[live]
        return self._last_output

    def _track_class(self) -> np.ndarray:
        if len(self._votes) == 0:
            return np.zeros(0, np.int64)
        return np.argmax(self._votes, axis=1)

    def _grow_votes(self, class_id: np.ndarray) -> None:
        if len(class_id) and class_id.max() >= self._votes.shape[1]:
            extra = int(class_id.max()) + 1 - self._votes.shape[1]
            self._votes = np.pad(self._votes, ((0, 0), (0, extra)))

    def _apply_matches(
        self,
        rows: np.ndarray,
        dets: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        t: float,
    ) -> None:
        self._mean[rows], self._cov[rows] = _Kalman.update(
            self._mean[rows], self._cov[rows], _xyxy_to_cxcywh(boxes[dets])
        )
        self._hits[rows] += 1
        self._confirmed[rows] |= self._hits[rows] >= self.min_hits
        self._last_seen[rows] = t
        self._grow_votes(classes[dets])
        # Weak detections still vote a little, so a score of 0 never erases a class.
        self._votes[rows, classes[dets]] += np.maximum(scores[dets], 1e-3)
        self._match_score[rows] = scores[dets]

    def _start_tracks(
        self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, t: float
    ) -> None:
        n = len(boxes)
        if n == 0:
            return
        mean, cov = _Kalman.initiate(_xyxy_to_cxcywh(boxes))
        self._grow_votes(classes)
        votes = np.zeros((n, self._votes.shape[1]))
        votes[np.arange(n), classes] = np.maximum(scores, 1e-3)
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._ids = np.concatenate([self._ids, np.arange(self._next_id, self._next_id + n)])
        self._next_id += n
        self._hits = np.concatenate([self._hits, np.ones(n, np.int64)])
        self._confirmed = np.concatenate([self._confirmed, np.full(n, self.min_hits <= 1)])
        self._time = np.concatenate([self._time, np.full(n, t)])
        self._last_seen = np.concatenate([self._last_seen, np.full(n, t)])
        self._votes = np.concatenate([self._votes, votes])
        self._match_score = np.concatenate([self._match_score, scores])

    def _compact(self, keep: np.ndarray) -> None:
        for name in (
            "_mean",
            "_cov",
            "_ids",
            "_hits",
            "_confirmed",
            "_time",
            "_last_seen",
            "_votes",
            "_match_score",
        ):
            setattr(self, name, getattr(self, name)[keep])

    def _report(self, rows: np.ndarray) -> Tracks:
        rows = rows.astype(np.intp)
        return Tracks(
            tracker_id=self._ids[rows].copy(),
            xyxy=_cxcywh_to_xyxy(self._mean[rows]).astype(np.float32),
            class_id=self._track_class()[rows].astype(np.int32),
            confidence=self._match_score[rows].astype(np.float32),
            confirmed=self._confirmed[rows].copy(),
            names=self._names,
        )
