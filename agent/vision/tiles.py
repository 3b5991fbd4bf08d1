"""Tiling: which crops of a frame the detector runs on, so that small objects on the camera's
rules reach a size the model sees, and how the crops' boxes merge back into one frame.

The region is the bounding box of the camera's lines and zones plus a margin (a camera
without rules is not tiled: detections only feed rules). It is cut into overlapping tiles
whose side, in frame pixels, is the model's input side divided by the wanted scale: the scale
at which an object of `min_object_px` frame pixels becomes MODEL_MIN_FRACTION of the input
side, the smallest the small detectors find reliably. Each tile is one detector call; over
the camera's budget the scale drops until the tiles fit (fewer, larger tiles), down to one
call on the region alone.
Within the limit the whole frame is detected as well, for objects larger than a tile. Live,
the pipeline gives each camera its share of the detector's calls per second (BUDGET_SHARE of
them, alike per analysed frame: `share_budget`).

Without `min_object_px` (the default), the agent judges where tiles pay: only on frames at
least AUTO_GAIN x the model's input (1568x778 or 960x540 at 416, not 768x576), as finely as the
call limit allows up to AUTO_SCALE, and not on close views, which the camera's own tracks
reveal: when the objects its confirmed tracks show in the rules' region are large at the whole
frame's scale, the whole frame is detected alone (`Tiler.observe`).

Merging: boxes of different crops are one object when, clipped to the part of the frame both
crops saw, they overlap by `iou` or more (same NMS class): an object cut by a seam is a
fragment in one tile and whole (or the other fragment) in its neighbour, and within their
shared strip the two boxes coincide. A cluster becomes its best box, or the union of its
boxes when one of them was cut at an inner tile edge. When the whole frame is one of the
crops, boxes cut at an inner tile edge are dropped instead: objects larger than the overlap
are found whole there (close-up people cut by tiles split into several tracks otherwise).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pantau.agent.config.agent import CameraConfig
from pantau.agent.config.rules import to_pixels
from pantau.agent.config.tuning import TilingConfig
from pantau.agent.vision.detections import Tracks
from pantau.agent.vision.geometry import box_iou

# The smallest object (its height) the small detectors find reliably, as a fraction of their
# input side: 26 px at 416, a working assumption near COCO's "small" (under 32x32 at the
# model's input), where these detectors lose most objects; `min_object_px` is scaled to it.
MODEL_MIN_FRACTION = 1 / 16

# Tiles only pay when they make objects this much larger than the whole frame does: below,
# the crops' lost context (objects cut at crop edges) costs more than the gain (bikes.mp4).
MIN_GAIN = 1.6

# Without `min_object_px`: tiles only on frames at least this many times the model's input
# (vtest.avi, 768x576 at 416, 1.85x: tiles gave 0 against 1 error in 61 crossings at 3x the
# calls; motorway.mp4 2.3x, hcmc-motorcycles.mp4 3.8x need them), planned as finely as the
# call limit allows up to AUTO_SCALE (objects of 13 px then reach MODEL_MIN_FRACTION: the
# distant cars of motorway.mp4 need about that).
AUTO_GAIN = 2.0
AUTO_SCALE = 2.0

# Close views (without `min_object_px`): the lower quartile of the heights of the confirmed
# tracks in the rules' region, at the whole frame's scale, in units of the model's smallest
# object. At LARGE or more the whole frame sees them and tiles would only cut them (an indoor
# zone counted 7-8 entries for 6 on tiles); below SMALL, tiles again. Measured at the whole
# frame: hcmc-motorcycles 1.0, motorway 1.3, vtest.avi 1.5, one-by-one-person-detection 7.6.
LARGE = 3.0
SMALL = 2.0
VIEW_SECONDS = 60.0  # heights kept for the judgement
VIEW_SAMPLES = 20  # heights needed before the first judgement

# The part of a detector's measured calls per second that tiles may plan on: decoding,
# tracking and the rules take the rest of the box (bench_live, 6 vtest cameras at 5 fps on a
# busy box: planned on the full measure, 2 calls per frame, they held 4.2 fps; on 60 %, 1
# call, 4.6-4.7).
BUDGET_SHARE = 0.6

# A box edge this close (pixels) to an inner tile edge was cut by it.
CUT_PX = 3.0

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, x1 and y1 exclusive


@dataclass(frozen=True)
class TilePlan:
    """The crops one frame is detected on: `tiles` (the whole frame first when it is one of
    them), the `scale` (model pixels per frame pixel) of the finest crop, the `wanted` scale
    and a `note` for people saying why this plan."""

    frame: tuple[int, int]  # (width, height)
    region: Box
    tiles: tuple[Box, ...]
    scale: float
    wanted: float
    note: str

    @property
    def calls(self) -> int:
        """Detector calls per analysed frame."""
        return len(self.tiles)

    @property
    def pixels(self) -> int:
        """Frame pixels detected on per analysed frame (overlaps counted twice)."""
        return sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in self.tiles)


def rules_region(config: CameraConfig, width: int, height: int, margin: float) -> Box:
    """The bounding box of the camera's lines and zones, `margin` x height added on every
    side, within the frame; the whole frame when the camera has no rules."""
    points = [p for _, pts in config.rule_points() for p in pts]
    if not points:
        return (0, 0, width, height)
    xy = np.asarray(to_pixels(points, width, height) if config.relative else points, float)
    pad = margin * height
    x0, y0 = np.floor(xy.min(axis=0) - pad)
    x1, y1 = np.ceil(xy.max(axis=0) + pad)
    return (max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1)))


def _spans(lo: int, hi: int, side: float, overlap: float) -> list[tuple[int, int]]:
    """Intervals of length `side` (at most hi - lo) covering [lo, hi), evenly spread, each
    overlapping the next by at least `overlap` x side."""
    length = hi - lo
    if length <= side:
        return [(lo, hi)]
    step = side * (1 - overlap)
    n = math.ceil((length - side) / step) + 1
    width = round(side)
    starts = np.linspace(lo, hi - width, n)
    return [(round(s), round(s) + width) for s in starts]


def cut(region: Box, side: float, overlap: float) -> list[Box]:
    """`region` as tiles of `side` frame pixels (or the region's own extent where smaller)
    overlapping by `overlap` of the side."""
    x0, y0, x1, y1 = region
    return [
        (a, b, c, d)
        for b, d in _spans(y0, y1, side, overlap)
        for a, c in _spans(x0, x1, side, overlap)
    ]


def grow(region: Box, side: float, frame: tuple[int, int]) -> Box:
    """`region` widened (about its centre, within the frame) to at least `side` each way: a
    crop narrower than a tile would cut objects that cross a line along it."""
    out = list(region)
    for lo, limit in ((0, frame[0]), (1, frame[1])):
        short = side - (out[lo + 2] - out[lo])
        if short > 0:
            start = min(max(0, round(out[lo] - short / 2)), max(0, limit - round(side)))
            out[lo], out[lo + 2] = start, min(limit, start + round(side))
    return (out[0], out[1], out[2], out[3])


def plan_tiles(
    frame: tuple[int, int],
    region: Box,
    input_hw: tuple[int, int],
    tiling: TilingConfig,
    budget: float | None = None,
) -> TilePlan:
    """The crops for a `frame` (width, height) whose rules cover `region`, for a model input
    of `input_hw`, within `tiling.max_tiles` and `budget` detector calls per frame (None: no
    budget beyond max_tiles). The whole frame alone where crops would not enlarge
    `min_object_px` by MIN_GAIN or, without it, where the frame is under AUTO_GAIN x the
    model's input (then the crops are as fine as the limit allows, up to AUTO_SCALE)."""
    width, height = frame
    side = float(min(input_hw))
    whole_scale = min(input_hw[1] / width, input_hw[0] / height)
    model_min = MODEL_MIN_FRACTION * side
    given = tiling.min_object_px is not None
    wanted = model_min / tiling.min_object_px if tiling.min_object_px else AUTO_SCALE
    whole = (0, 0, width, height)
    limit = tiling.max_tiles if budget is None else max(1, min(tiling.max_tiles, int(budget)))

    def plan(tiles: list[Box], scale: float, note: str) -> TilePlan:
        return TilePlan(frame, region, tuple(tiles), scale, wanted, note)

    if tiling.mode == "off":
        return plan([whole], whole_scale, "tiling off: the whole frame")
    if not given and whole_scale * AUTO_GAIN > 1:
        return plan(
            [whole],
            whole_scale,
            f"the whole frame: less than {AUTO_GAIN:g}x the model's input (scale "
            f"{whole_scale:.2f})",
        )
    if given and whole_scale * MIN_GAIN > wanted:
        return plan(
            [whole],
            whole_scale,
            f"the whole frame: at scale {whole_scale:.2f} it "
            f"nearly resolves min_object_px (scale {wanted:.2f})",
        )
    # From the wanted scale down in 10 % steps until the crops fit the limit, the whole frame
    # pass included; once the region fits one crop, that crop alone is the one-call plan.
    scale = wanted
    while True:
        crops = cut(grow(region, side / scale, frame), side / scale, tiling.overlap)
        if len(crops) == 1:
            break
        tiles = [whole, *crops] if tiling.whole_frame else crops
        if len(tiles) <= limit:
            return plan(tiles, scale, _note(len(tiles), scale, wanted, limit, tiling, budget))
        scale *= 0.9
    # The one crop: the region widened to a square (the model's input is one; more context
    # at the same scale), and to a tile at the wanted scale at least.
    rx0, ry0, rx1, ry1 = region
    x0, y0, x1, y1 = crop = grow(region, max(rx1 - rx0, ry1 - ry0, side / wanted), frame)
    crops = [crop]
    scale = min(input_hw[1] / (x1 - x0), input_hw[0] / (y1 - y0))
    if scale < 1.25 * whole_scale:  # one crop in place of the whole frame: no cost
        return plan(
            [whole], whole_scale, "the whole frame: a crop of the rules' region would not be finer"
        )
    tiles = [whole, *crops] if tiling.whole_frame and limit >= 2 else crops
    return plan(tiles, scale, _note(len(tiles), scale, wanted, limit, tiling, budget))


def _note(
    calls: int, scale: float, wanted: float, limit: int, tiling: TilingConfig, budget: float | None
) -> str:
    text = f"{calls} calls at scale {scale:.2f}"
    if tiling.min_object_px is None:
        # As fine as the limit allows: say so only where the budget, not max_tiles, set it.
        if limit >= tiling.max_tiles:
            return text
        return (f"{text}, limit of {limit} calls per frame (max_tiles {tiling.max_tiles}, "
                f"budget {_budget(budget)})")
    if scale >= 0.95 * wanted:
        return text
    return (
        f"{text}, not {wanted:.2f}: limit of {limit} calls per frame (max_tiles "
        f"{tiling.max_tiles}, budget {_budget(budget)})"
    )


def _budget(budget: float | None) -> str:
    return "none" if budget is None else f"{budget:.1f}"


class Tiler:
    """One camera's tiling: its plan per frame size and detector budget (cached); the whole
    frame for a camera without rules, and (without `min_object_px`) for a close view, which
    `observe` judges from the camera's confirmed tracks."""

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self.budget: float | None = None  # detector calls per frame the pipeline allows
        self.last: TilePlan | None = None  # the plan of the last frame detected on tiles
        self.close_view = False  # objects at the rules are large at the whole frame's scale
        self.view = 0.0  # the last judgement: objects' size in model-smallest units
        self._plans: dict[tuple[tuple[int, int], tuple[int, int], float | None, bool],
                          TilePlan] = {}
        self._whole_scale = 1.0  # model pixels per frame pixel of the whole frame, last plan
        self._side = 416  # the model's input side, last plan
        self._heights: deque[tuple[float, float]] = deque()  # (t, frame px) at the rules

    @property
    def enabled(self) -> bool:
        return self.config.tiling.mode != "off"

    @property
    def tiled(self) -> bool:
        """The last frame was detected on crops, not on the whole frame alone."""
        plan = self.last
        return plan is not None and plan.tiles != ((0, 0, *plan.frame),)

    def plan(self, width: int, height: int, input_hw: tuple[int, int]) -> TilePlan:
        key = ((width, height), input_hw, self.budget, self.close_view)
        self._whole_scale = min(input_hw[1] / width, input_hw[0] / height)
        self._side = min(input_hw)
        found = self._plans.get(key)
        if found is None:
            t = self.config.tiling
            if not self.config.rule_points():
                # Detections feed only the rules (and health): nothing to tile for.
                t = t.model_copy(update={"mode": "off"})
            region = rules_region(self.config, width, height, t.margin)
            found = plan_tiles((width, height), region, input_hw, t, self.budget)
            if self.close_view and found.calls > 1:
                found = TilePlan(
                    found.frame, region, ((0, 0, width, height),), self._whole_scale,
                    found.wanted, f"the whole frame: a close view (objects at the rules "
                    f"{self.view:.1f}x the model's smallest at its scale, >= {LARGE:g})",
                )
            self._plans[key] = found
        self.last = found
        return found

    def observe(self, tracks: Tracks, t: float) -> None:
        """A detected frame's tracks at `t`: the heights of the confirmed ones in the rules'
        region judge whether the view is close (see LARGE)."""
        plan = self.last
        if plan is None or not self.enabled or self.config.tiling.min_object_px is not None:
            return
        x0, y0, x1, y1 = plan.region
        xyxy = np.asarray(tracks.xyxy, np.float64).reshape(-1, 4)[np.asarray(tracks.confirmed,
                                                                           bool)]
        cx, cy = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2
        inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
        self._heights.extend((t, float(h)) for h in xyxy[inside, 3] - xyxy[inside, 1])
        while self._heights and self._heights[0][0] < t - VIEW_SECONDS:
            self._heights.popleft()
        if len(self._heights) < VIEW_SAMPLES:
            return
        heights = np.percentile([h for _, h in self._heights], 25)
        self.view = float(heights * self._whole_scale / (MODEL_MIN_FRACTION * self._side))
        if self.close_view:
            self.close_view = self.view >= SMALL
        else:
            self.close_view = self.view >= LARGE


def share_budget(calls_per_second: float, fps: Sequence[float]) -> float:
    """Detector calls per analysed frame that each of cameras analysed at `fps` gets when
    they share BUDGET_SHARE of `calls_per_second` fairly (alike per frame)."""
    total = sum(fps)
    return BUDGET_SHARE * calls_per_second / total if total > 0 else float("inf")


def merge_tiles(
    tiles: Sequence[Box],
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    groups: Sequence[np.ndarray],
    frame: tuple[int, int],
    iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-tile boxes (frame pixels), scores and NMS groups (class ids as NMS sees
    them) into one frame's: (indices into the concatenated boxes of each kept cluster's best
    box, the (K, 4) merged boxes), best score first (see the module docs)."""
    if not tiles:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    xyxy = np.concatenate(boxes).astype(np.float32).reshape(-1, 4)
    score = np.concatenate(scores)
    group = np.concatenate(groups)
    source = np.concatenate([np.full(len(b), k) for k, b in enumerate(boxes)]).astype(np.int64)
    if len(xyxy) == 0:
        return np.zeros(0, np.int64), xyxy
    rect = np.asarray(tiles, np.float32)
    cut_flags = _cut_at_inner_edge(xyxy, rect[source], frame)
    # With the whole frame among the crops, a box cut at a tile's inner edge is dropped: an
    # object smaller than the overlap is whole in a neighbour, a larger one is found whole,
    # and large enough, in the whole frame; its fragments would only split its track.
    whole = np.flatnonzero((rect == np.array([0, 0, *frame], np.float32)).all(axis=1))
    alive = ~cut_flags | np.isin(source, whole) if len(whole) else np.ones(len(xyxy), bool)
    # Pairs of boxes from different crops that touch, with the area both crops saw, and
    # both boxes clipped to it.
    i, j = np.nonzero(
        (box_iou(xyxy, xyxy) > 0)
        & (group[:, None] == group[None, :])
        & (source[:, None] != source[None, :])
    )
    ri, rj = rect[source[i]], rect[source[j]]
    shared = np.concatenate(
        [np.maximum(ri[:, :2], rj[:, :2]), np.minimum(ri[:, 2:], rj[:, 2:])], axis=1
    )
    match = _pair_iou(_clip(xyxy[i], shared), _clip(xyxy[j], shared)) >= iou
    same = np.zeros((len(xyxy), len(xyxy)), bool)
    same[i[match], j[match]] = True
    order = np.argsort(-score, kind="stable")
    cluster = np.full(len(xyxy), -1)
    kept: list[int] = []
    for k in order[alive[order]]:
        heads = [h for h in kept if same[k, h]]
        if heads:
            cluster[k] = heads[0]
        else:
            cluster[k] = k
            kept.append(int(k))
    out = np.empty((len(kept), 4), np.float32)
    for k, head in enumerate(kept):
        members = np.flatnonzero(cluster == head)
        if cut_flags[members].any():
            m = xyxy[members]
            out[k] = (*m[:, :2].min(axis=0), *m[:, 2:].max(axis=0))
        else:
            out[k] = xyxy[head]
    return np.asarray(kept, np.int64), out


def _cut_at_inner_edge(xyxy: np.ndarray, rect: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """bool (N,): the box touches an edge of its crop that is not the frame's edge."""
    width, height = frame
    inner_lo = rect[:, :2] > 0
    inner_hi = rect[:, 2:] < np.array([width, height], np.float32)
    touch_lo = (xyxy[:, :2] - rect[:, :2] <= CUT_PX) & inner_lo
    touch_hi = (rect[:, 2:] - xyxy[:, 2:] <= CUT_PX) & inner_hi
    result: np.ndarray = touch_lo.any(axis=1) | touch_hi.any(axis=1)
    return result


def _clip(box: np.ndarray, rect: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.maximum(box[..., :2], rect[..., :2]), np.minimum(box[..., 2:], rect[..., 2:])], axis=-1
    )


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of two (..., 4) box arrays; 0 where either is empty."""

    def area(x: np.ndarray) -> np.ndarray:
        return np.maximum(x[..., 2] - x[..., 0], 0) * np.maximum(x[..., 3] - x[..., 1], 0)

    inter = area(_clip(a, b))
    union = area(a) + area(b) - inter
    result: np.ndarray = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    return result
