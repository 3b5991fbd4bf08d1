"""ByteTrack-class multi-object tracker: turns each frame's Detections into Tracks with stable ids.

Built on numpy and scipy only. Time is explicit (seconds), so one configuration behaves the same
at 5 and at 25 analysed frames per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pantau.agent.config.tuning import TrackerConfig
from pantau.agent.vision.detections import CONFUSABLE_CLASSES, DEFAULT_CLASSES, Detections, Tracks
from pantau.agent.vision.geometry import box_iou
from scipy.optimize import linear_sum_assignment

# COCO-80 ids of the confusable groups (car/bus/truck, bicycle/motorcycle): a track may match
# any detection of its group and keeps its class by vote; a person never matches a bicycle box
# that overlaps it.
DEFAULT_CLASS_GROUPS: tuple[tuple[int, ...], ...] = tuple(
    tuple(DEFAULT_CLASSES[name] for name in group) for group in CONFUSABLE_CLASSES
)

# Kalman noise, as fractions of box size, per frame at this reference rate (ByteTrack's values);
# scaled with the real time step so that 5 and 25 fps share one model.
_REF_FPS = 25.0
_STD_POS = 1.0 / 20
_STD_VEL = 1.0 / 160

# Constant-velocity Kalman filter over (cx, cy, w, h), velocities in pixels per second, for all
# tracks at once. F, H, Q and R never couple different coordinates, so the covariance is four
# independent 2x2 blocks per track: var(pos), cov(pos, vel), var(vel), each an (N, 4) array.
# Process noise grows linearly with the time step (a random walk), so a 0.2 s step at 5 fps
# carries the uncertainty of five 0.04 s steps at 25 fps. Columns of the (N, 20) state:
_POS, _VEL, _PXX, _PXV, _PVV = (slice(i, i + 4) for i in range(0, 20, 4))
# Then per-track bookkeeping: matches so far, confirmed (0/1), time last matched, class (the
# vote's winner), the score of the detection last matched and the time last matched by a
# strong detection.
_HITS, _CONFIRMED, _SEEN, _CLS, _SCORE, _STRONG = range(20, 26)
_COLS = 26
_NO_IDS = np.zeros(0, np.int64)
_NO_ROWS = np.zeros(0, np.intp)


_SIZE_COLS = np.array([2, 3, 2, 3])


def _noise_scale(pos: np.ndarray) -> np.ndarray:
    # Noise scales with width for x and w, height for y and h (BoT-SORT style).
    return np.maximum(pos.take(_SIZE_COLS, axis=1), 1.0)


def _initiate(cxcywh: np.ndarray) -> np.ndarray:
    kf = np.zeros((len(cxcywh), _COLS))
    kf[:, _POS] = cxcywh
    size = _noise_scale(cxcywh)
    kf[:, _PXX] = (2 * _STD_POS * size) ** 2
    kf[:, _PVV] = (10 * _STD_VEL * _REF_FPS * size) ** 2
    return kf


def _predict(kf: np.ndarray, dt: float) -> None:
    """Advance every row of `kf` by `dt` seconds, in place."""
    size2 = np.square(_noise_scale(kf[:, _POS]))
    steps = dt * _REF_FPS
    pxv, pvv = kf[:, _PXV], kf[:, _PVV]
    kf[:, _POS] += dt * kf[:, _VEL]
    # pxx += dt * (2 pxv + dt pvv) + q_pos, with the fewest array operations (small N: each
    # operation costs more than its arithmetic).
    kf[:, _PXX] += (2 * dt) * pxv + (dt * dt) * pvv + (_STD_POS**2 * steps) * size2
    pxv += dt * pvv
    pvv += ((_STD_VEL * _REF_FPS) ** 2 * steps) * size2


def _update(kf: np.ndarray, cxcywh: np.ndarray) -> None:
    """Correct the rows of `kf` with measured boxes, in place."""
    pxx, pxv = kf[:, _PXX], kf[:, _PXV]
    s = pxx + (_STD_POS**2) * np.square(_noise_scale(kf[:, _POS]))
    k_pos = pxx / s
    k_vel = pxv / s
    innovation = cxcywh - kf[:, _POS]
    kf[:, _POS] += k_pos * innovation
    kf[:, _VEL] += k_vel * innovation
    kf[:, _PVV] -= k_vel * pxv
    keep = 1.0 - k_pos
    pxv *= keep
    pxx *= keep


def _xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    out = np.empty((len(xyxy), 4))
    np.add(xyxy[:, :2], xyxy[:, 2:], out=out[:, :2])
    out[:, :2] *= 0.5
    np.subtract(xyxy[:, 2:], xyxy[:, :2], out=out[:, 2:])
    return out


def _cxcywh_to_xyxy(state: np.ndarray) -> np.ndarray:
    out = np.empty((len(state), 4))
    half = np.maximum(state[:, 2:4], 0.0)
    half *= 0.5
    np.subtract(state[:, 0:2], half, out=out[:, :2])
    np.add(state[:, 0:2], half, out=out[:, 2:])
    return out


def _uncut(
    measured: np.ndarray, xyxy: np.ndarray, predicted: np.ndarray, frame_size: tuple[int, int]
) -> np.ndarray:
    """Measurements (cx, cy, w, h) of matched boxes, corrected where the frame border cuts a
    box on one side: the visible part of an object leaving the frame shrinks towards the
    border, so its centre would stop short of where the object is. Such a box keeps its
    uncut edge and takes the larger of its own and the track's predicted size, so the track
    goes on moving (and its anchor crosses a line near the edge) at the object's pace."""
    limit = (frame_size[0] - 1.0, frame_size[1] - 1.0)
    low = xyxy[:, :2] <= 1.0  # touches the left / top border
    high = xyxy[:, 2:] >= limit  # touches the right / bottom border
    cut_high, cut_low = high & ~low, low & ~high
    cut = cut_high | cut_low
    if not cut.any():
        return measured
    size = np.maximum(measured[:, 2:], predicted[:, 2:4])
    out = measured.copy()
    out[:, 2:] = np.where(cut, size, measured[:, 2:])
    out[:, :2] = np.where(
        cut_high,
        xyxy[:, :2] + size / 2,
        np.where(cut_low, xyxy[:, 2:] - size / 2, measured[:, :2]),
    )
    return out


def _nz(mask: np.ndarray) -> np.ndarray:
    return mask.nonzero()[0]


def _without(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    keep = np.ones(len(values), bool)
    keep[positions] = False
    return values[keep]


def _match(sim: np.ndarray, min_sim: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one assignment maximising the summed similarity over the pairs with
    similarity >= `min_sim` (the others are never matched).

    Most frames are unambiguous: every row's best column has that row as its own best row.
    Then matching each row to its best column is the optimum (it reaches the sum of row
    maxima, an upper bound), found without scipy; otherwise scipy solves it.
    """
    n_rows, n_cols = sim.shape
    if n_rows == 0 or n_cols == 0:
        return _NO_ROWS, _NO_ROWS
    sim[sim < min_sim] = 0.0  # callers pass a fresh array
    best_col = sim.argmax(axis=1)
    live = _nz(sim.max(axis=1) > 0)
    if len(live) == 0:
        return _NO_ROWS, _NO_ROWS
    best_col = best_col[live]
    if len(live) == 1 or np.bincount(best_col).max() == 1:
        return live, best_col
    r, c = linear_sum_assignment(sim, maximize=True)
    keep = sim[r, c] > 0
    return r[keep], c[keep]


_CONFIGURED = TrackerConfig()  # the defaults of the settings a camera's configuration may set



@dataclass(frozen=True)
class _FrameDetections:
    """One frame's detections in the tracker's dtypes: float64 scores, xyxy and cx, cy, w, h
    boxes, int64 classes, and which are strong."""

    scores: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray
    cxcywh: np.ndarray
    high_mask: np.ndarray
    high: np.ndarray
    frame_size: tuple[int, int] | None

    @classmethod
    def of(cls, detections: Detections, high_score: float) -> _FrameDetections:
        scores = np.asarray(detections.confidence, np.float64)
        boxes = np.asarray(detections.xyxy, np.float64).reshape(-1, 4)
        high_mask = scores >= high_score
        return cls(
            scores=scores,
            classes=np.asarray(detections.class_id, np.int64),
            boxes=boxes,
            cxcywh=_xyxy_to_cxcywh(boxes),
            high_mask=high_mask,
            high=_nz(high_mask),
            frame_size=detections.frame_size,
        )


@dataclass
class _Association:
    """One update's matching in progress: the pairs found so far (track rows, detection
    indices) and the confirmed tracks, unconfirmed tracks and strong detections still free."""

    iou: np.ndarray  # (tracks, detections), zero across class groups
    groups: tuple[np.ndarray, np.ndarray]  # class group of each track, of each detection
    left_tracks: np.ndarray
    tentative: np.ndarray
    left_high: np.ndarray
    rows: list[np.ndarray] = field(default_factory=list)
    dets: list[np.ndarray] = field(default_factory=list)

    def add(self, rows: np.ndarray, dets: np.ndarray) -> None:
        self.rows.append(rows)
        self.dets.append(dets)


class ByteTracker:
    """Two-stage (high, then low score) IoU tracker with a Kalman motion model.

    Each `update(detections, t)`:
    1. predicts every live track to time `t`;
    2. matches detections with score >= `high_score` to confirmed and lost tracks by IoU
       (optimal assignment, IoU >= `match_iou`; with `fuse_score`, IoU is weighted by the
       detection score as in ByteTrack);
    3. matches the strong detections still unmatched to the confirmed and lost tracks still
       unmatched by the distance of their centres (within `centre_gate` box heights, plus
       `centre_gate_per_second` heights per second since the track was last seen, and a
       height ratio within 1.5), for tracks last matched at least `centre_min_step` ago and
       at most `centre_max_unseen` seconds or `centre_max_steps` updates ago, whichever is
       longer: at 5 fps or less, or after a missed frame, an object may have moved too far
       for the boxes to overlap (a car often does), while at >= 10 fps consecutive boxes
       overlap and IoU alone is safer; after a longer gap the gate is wide and a nearby
       stranger too easily taken for the lost track (ID switches that count twice), so such
       tracks are left to IoU against their predicted box. The limit in updates lets a person
       hidden behind another for three frames at 5 fps (0.8 s) be picked up again, where 0.8 s
       at 25 fps is twenty missed frames of a detector that has lost them;
    4. matches detections with `low_score` <= score < `high_score` to the confirmed tracks
       still unmatched that were seen in the previous update (IoU >= `low_match_iou`), which
       keeps tracks alive through occlusion without ever starting tracks from weak boxes,
       for at most `lost_seconds` after the track's last strong detection (see below);
    5. matches the remaining strong detections to unconfirmed tracks
       (IoU >= `tentative_match_iou`), then what is left of both by centre distance as in
       3, without its `centre_max_unseen` limit (a new track has no velocity yet, so at 2
       fps a walker's next box does not overlap its first; an unconfirmed track is young by
       construction); an unconfirmed track is removed once it has not been matched by a
       strong detection for `tentative_seconds`;
    6. starts a new unconfirmed track from each remaining detection with score >= `new_score`.

    A track is confirmed after `min_hits` matches and stays confirmed; a confirmed track
    without a match is lost and is removed once it has not been matched by a strong
    detection for `lost_seconds` (time, not frames, so the buffer is the same at any
    analysis rate). Weak matches do not extend that buffer: a static weak false positive
    where a person stood (a chair, a table scored 0.2 as a person) would otherwise hold the
    track, and a zone's occupancy, for as long as the camera runs, and hand it to the next
    person who stands there. Removed tracks leave no state behind: memory is bounded by the
    live tracks.

    Classes: a detection may match only a track of the same class group (`class_groups`,
    default person / two-wheelers / four-wheelers by COCO id; a class in no group is its own
    group); a track's class is the confidence-weighted majority of its matched detections.

    Only tracks matched in this update are reported; lost tracks coast silently.

    Cost: all per-track state lives in a few numpy arrays (one row per track) and the Kalman
    filter runs on all tracks at once; the covariance of this model is block diagonal (each
    of cx, cy, w, h couples only with its own velocity), so it is kept as three (N, 4) arrays
    instead of (N, 8, 8) matrices, with the same results as the full filter.
    """

    def __init__(
        self,
        *,
        high_score: float = _CONFIGURED.high_score,
        low_score: float = _CONFIGURED.low_score,
        new_score: float = _CONFIGURED.new_score,
        match_iou: float = 0.2,
        low_match_iou: float = 0.5,
        tentative_match_iou: float = 0.3,
        centre_gate: float = 0.25,
        centre_gate_per_second: float = 0.5,
        centre_min_step: float = 0.1,
        centre_max_unseen: float = 0.5,
        centre_max_steps: int = 4,
        min_hits: int = _CONFIGURED.min_hits,
        lost_seconds: float = _CONFIGURED.lost_seconds,
        tentative_seconds: float = 0.45,
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
        self.centre_gate = centre_gate
        self.centre_gate_per_second = centre_gate_per_second
        self.centre_min_step = centre_min_step
        self.centre_max_unseen = centre_max_unseen
        self.centre_max_steps = centre_max_steps
        self.min_hits = min_hits
        self.lost_seconds = lost_seconds
        self.tentative_seconds = tentative_seconds
        self.fuse_score = fuse_score
        self._centre_gating = centre_gate > 0 or centre_gate_per_second > 0
        group_of: dict[int, int] = {}
        for group, members in enumerate(class_groups):
            for cid in members:
                group_of[int(cid)] = -1 - group  # negative: never equal to a class id
        self._group_of = group_of
        size = max([*group_of, 0]) + 1
        self._group_lut = np.arange(size, dtype=np.int64)
        for cid, g in group_of.items():
            self._group_lut[cid] = g
        self._next_id = 1
        self.reset()

    @classmethod
    def from_config(cls, config: TrackerConfig) -> ByteTracker:
        """A tracker with the settings a camera's configuration sets (defaults for the rest)."""
        return cls(**config.model_dump())

    def reset(self) -> None:
        """Forget every track (ids keep increasing, so an id is never reused)."""
        self._s = np.zeros((0, _COLS))  # one row per track: Kalman state and bookkeeping
        self._votes = np.zeros((0, 1))  # confidence summed per class id
        self._ids = np.zeros(0, np.int64)
        self._names: tuple[str, ...] = ()
        self._removed = np.zeros(0, np.int64)
        self._last_output = Tracks.empty()
        self._last_t: float | None = None

    def __len__(self) -> int:
        """Live tracks: confirmed, lost within the buffer, and unconfirmed."""
        return len(self._ids)

    @property
    def removed_ids(self) -> np.ndarray:
        """Ids of the tracks removed by the last `update`: rules may drop their state."""
        return self._removed

    def _groups(self, class_id: np.ndarray) -> np.ndarray:
        lut = self._group_lut
        if len(class_id) == 0 or int(class_id.max()) < len(lut):
            return lut[class_id]
        return np.array([self._group_of.get(int(c), int(c)) for c in class_id], np.int64)

    def update(self, detections: Detections, t: float) -> Tracks:
        """Advance to time `t` (seconds, increasing) with this frame's detections."""
        t = float(t)
        last_t = self._last_t
        if last_t is not None and t < last_t:
            raise ValueError(f"time went backwards: {t} < {last_t}")
        if detections.names:
            self._names = detections.names
        n_tracks = len(self._ids)
        if n_tracks and last_t is not None and t > last_t:
            _predict(self._s, t - last_t)
        dets = _FrameDetections.of(detections, self.high_score) if len(detections) else None
        matched = left_high = _NO_ROWS
        if dets is not None:
            left_high = dets.high
            if n_tracks:
                a = self._associate(dets, t, last_t)
                left_high = a.left_high
                if a.rows:
                    matched = self._apply(a, dets, t)
        out_rows = self._age_out(n_tracks, matched, t)
        if dets is not None and len(left_high):
            out_rows = self._start_new(dets, left_high, out_rows, t)
        self._last_t = t
        self._last_output = self._report(out_rows)
        return self._last_output

    def _associate(
        self, dets: _FrameDetections, t: float, last_t: float | None
    ) -> _Association:
        """Match this frame's detections to the live tracks, stage by stage (see the class
        docs): a detection and a track match only within one class group."""
        s = self._s
        iou = box_iou(_cxcywh_to_xyxy(s), dets.boxes)
        groups = (self._groups(s[:, _CLS].astype(np.int64)), self._groups(dets.classes))
        iou *= groups[0][:, None] == groups[1][None, :]
        confirmed = s[:, _CONFIRMED] > 0
        a = _Association(iou, groups, _nz(confirmed), _nz(~confirmed), dets.high)
        self._match_strong(a, dets)
        self._match_strong_by_centre(a, dets, t, None if last_t is None else t - last_t)
        if last_t is not None:
            self._match_weak(a, dets, last_t)
        self._match_tentative(a, dets, t)
        return a

    def _match_strong(self, a: _Association, dets: _FrameDetections) -> None:
        """Strong detections against confirmed and lost tracks, by IoU."""
        tracks, high = a.left_tracks, a.left_high
        if not (len(tracks) and len(high)):
            return
        sim = a.iou[tracks][:, high]
        if self.fuse_score:
            sim *= np.minimum(dets.scores[high], 1.0)[None, :]
        r, c = _match(sim, self.match_iou)
        if len(r):
            a.add(tracks[r], high[c])
            a.left_tracks = _without(tracks, r)
            a.left_high = _without(high, c)

    def _match_strong_by_centre(
        self, a: _Association, dets: _FrameDetections, t: float, step: float | None
    ) -> None:
        """What is left of both, by centre distance, for the tracks the centre stage may
        match when updates come `step` seconds apart."""
        tracks, high = a.left_tracks, a.left_high
        if not (len(tracks) and len(high) and self._centre_gating):
            return
        unseen = t - self._s[tracks, _SEEN]
        far_at = _nz(self._centre_eligible(unseen, step))
        if not len(far_at):
            return
        far = tracks[far_at]
        r, c = self._centre_match(far, high, unseen[far_at], dets.boxes, a.groups)
        if len(r):
            a.add(far[r], high[c])
            a.left_tracks = _without(tracks, far_at[r])
            a.left_high = _without(high, c)

    def _match_weak(self, a: _Association, dets: _FrameDetections, last_t: float) -> None:
        """Weak detections only rescue confirmed tracks seen in the previous update."""
        if not len(a.left_tracks):
            return
        low = _nz(~dets.high_mask & (dets.scores >= self.low_score))
        cand = a.left_tracks[self._s[a.left_tracks, _SEEN] >= last_t]
        if len(low) and len(cand):
            r, c = _match(a.iou[cand][:, low], self.low_match_iou)
            a.add(cand[r], low[c])

    def _match_tentative(self, a: _Association, dets: _FrameDetections, t: float) -> None:
        """Unconfirmed tracks take what strong detections remain, by IoU, then by centre
        distance."""
        tentative, high = a.tentative, a.left_high
        if not (len(tentative) and len(high)):
            return
        r, c = _match(a.iou[tentative][:, high], self.tentative_match_iou)
        if len(r):
            a.add(tentative[r], high[c])
            tentative = _without(tentative, r)
            high = a.left_high = _without(high, c)
        if not (len(tentative) and len(high) and self._centre_gating):
            return
        unseen = t - self._s[tentative, _SEEN]
        step = unseen >= self.centre_min_step
        far = tentative[step]
        if len(far):
            r, c = self._centre_match(far, high, unseen[step], dets.boxes, a.groups)
            if len(r):
                a.add(far[r], high[c])
                a.left_high = _without(high, c)

    def _apply(self, a: _Association, dets: _FrameDetections, t: float) -> np.ndarray:
        """Correct the matched tracks with their detections; returns their rows."""
        rows = np.concatenate(a.rows)
        matched = np.concatenate(a.dets)
        measured = dets.cxcywh[matched]
        if dets.frame_size is not None:
            measured = _uncut(measured, dets.boxes[matched], self._s[rows], dets.frame_size)
        self._apply_matches(rows, matched, measured, dets.scores, dets.classes, t)
        return rows

    def _age_out(self, n_tracks: int, matched: np.ndarray, t: float) -> np.ndarray:
        """Remove the unconfirmed and lost tracks past their buffers; returns the rows, after
        removal, of the `matched` rows (of the first `n_tracks`) that remain."""
        self._removed = _NO_IDS
        if not n_tracks:
            return _NO_ROWS
        was_matched = np.zeros(n_tracks, bool)
        was_matched[matched] = True
        # Unconfirmed tracks only ever match strong detections: _STRONG is their _SEEN.
        unseen = t - self._s[:, _STRONG]
        limit = np.where(self._s[:, _CONFIRMED] > 0, self.lost_seconds, self.tentative_seconds)
        dead = unseen > limit
        if dead.any():
            self._removed = self._ids[dead]
            keep = ~dead
            was_matched = was_matched[keep]
            self._s = self._s[keep]
            self._votes, self._ids = self._votes[keep], self._ids[keep]
        return _nz(was_matched)

    def _start_new(
        self, dets: _FrameDetections, left: np.ndarray, out_rows: np.ndarray, t: float
    ) -> np.ndarray:
        """Start unconfirmed tracks from the unmatched strong detections `left` that score at
        least `new_score`; returns `out_rows` with the new tracks' rows added."""
        new_dets = left[dets.scores[left] >= self.new_score]
        if not len(new_dets):
            return out_rows
        first_new = len(self._ids)
        self._start_tracks(
            dets.cxcywh[new_dets], dets.scores[new_dets], dets.classes[new_dets], t
        )
        return np.concatenate([out_rows, np.arange(first_new, len(self._ids))])

    def _centre_eligible(self, unseen: np.ndarray, step: float | None) -> np.ndarray:
        """Which tracks, last seen `unseen` seconds ago, the centre stage may match when
        updates come `step` seconds apart: seen at least `centre_min_step` ago, and at most
        `centre_max_unseen` seconds or `centre_max_steps` updates ago, whichever is longer."""
        limit = self.centre_max_unseen
        if step is not None:
            limit = max(limit, self.centre_max_steps * step * (1 + 1e-9))
        return (unseen >= self.centre_min_step) & (unseen <= limit)

    def _centre_match(
        self,
        rows: np.ndarray,
        dets: np.ndarray,
        unseen: np.ndarray,
        det_boxes: np.ndarray,
        groups: tuple[np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Match tracks `rows` (last seen `unseen` seconds ago) to detections `dets` of the
        same class group by centre distance; positions into `rows` and `dets`."""
        sim = self._centre_similarity(self._s[rows, :4], det_boxes[dets], unseen)
        sim *= groups[0][rows][:, None] == groups[1][dets][None, :]
        return _match(sim, 1e-9)

    def _centre_similarity(
        self, state: np.ndarray, boxes: np.ndarray, unseen: np.ndarray
    ) -> np.ndarray:
        """(T, D) similarity in (0, 1] of predicted centres and detection centres within the
        gate, 0 outside it or when the heights differ by more than 1.5x."""
        h = np.maximum(state[:, 3], 1.0)
        gate = h * (self.centre_gate + self.centre_gate_per_second * np.maximum(unseen, 0.0))
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        bh = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
        dist = np.hypot(state[:, 0, None] - cx[None, :], state[:, 1, None] - cy[None, :])
        sim = 1.0 - dist / gate[:, None]
        ratio = bh[None, :] / h[:, None]
        sim[(ratio > 1.5) | (ratio < 1 / 1.5)] = 0.0
        return np.maximum(sim, 0.0)

    def coast(self, t: float) -> Tracks:
        """Report the last update's tracks again at time `t` without new detections.

        For a frame that a motion gate judged unchanged: the objects are where they were, so
        no track ages towards removal (its match times move on by the time coasted: a lost
        track stays lost, with the buffer it had left) and every velocity is zeroed.
        """
        t = float(t)
        if self._last_t is not None and t > self._last_t:
            self._s[:, [_SEEN, _STRONG]] += t - self._last_t
        self._s[:, _VEL] = 0.0
        self._removed = _NO_IDS
        self._last_t = t
        live = np.isin(self._last_output.tracker_id, self._ids)
        if not live.all():
            self._last_output = self._last_output[live]
        return self._last_output

    def _grow_votes(self, class_id: np.ndarray) -> None:
        if len(class_id) == 0:
            return
        top = int(class_id.max()) + 1
        if top > self._votes.shape[1]:
            self._votes = np.pad(self._votes, ((0, 0), (0, top - self._votes.shape[1])))

    def _apply_matches(
        self,
        rows: np.ndarray,
        dets: np.ndarray,
        measured: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        t: float,
    ) -> None:
        """Update the tracks at `rows` with detections `dets` (`measured`: their boxes as
        cx, cy, w, h, one row per match)."""
        s = self._s[rows]
        _update(s, measured)
        hits = s[:, _HITS] + 1
        s[:, _HITS] = hits
        s[:, _CONFIRMED] = np.maximum(s[:, _CONFIRMED], hits >= self.min_hits)
        s[:, _SEEN] = t
        s[:, _STRONG] = np.where(scores[dets] >= self.high_score, t, s[:, _STRONG])
        cls = classes[dets]
        self._grow_votes(cls)
        # Weak detections still vote a little, so a score of 0 never erases a class.
        self._votes[rows, cls] += np.maximum(scores[dets], 1e-3)
        s[:, _CLS] = np.argmax(self._votes[rows], axis=1)
        s[:, _SCORE] = scores[dets]
        self._s[rows] = s

    def _start_tracks(
        self, cxcywh: np.ndarray, scores: np.ndarray, classes: np.ndarray, t: float
    ) -> None:
        n = len(cxcywh)
        self._grow_votes(classes)
        votes = np.zeros((n, self._votes.shape[1]))
        votes[np.arange(n), classes] = np.maximum(scores, 1e-3)
        s = _initiate(cxcywh)
        s[:, _HITS] = 1
        s[:, _CONFIRMED] = self.min_hits <= 1
        s[:, _SEEN] = t
        s[:, _STRONG] = t
        s[:, _CLS] = classes
        s[:, _SCORE] = scores
        self._s = np.concatenate([self._s, s])
        self._votes = np.concatenate([self._votes, votes])
        self._ids = np.concatenate([self._ids, np.arange(self._next_id, self._next_id + n)])
        self._next_id += n

    def _report(self, rows: np.ndarray) -> Tracks:
        s = self._s[rows]
        return Tracks(
            tracker_id=self._ids[rows],
            xyxy=_cxcywh_to_xyxy(s).astype(np.float32),
            class_id=s[:, _CLS].astype(np.int32),
            confidence=s[:, _SCORE].astype(np.float32),
            confirmed=s[:, _CONFIRMED] > 0,
            names=self._names,
        )
