"""Output decoders, one per model family: raw network outputs -> per-frame candidate boxes (xyxy in
model-input pixels), scores and class ids, above a score floor and before NMS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pantau.agent.wire.errors import PantauError

FAMILIES = ("nanodet", "darknet-yolo", "yolov5", "yolov8", "yolox", "end2end")


class DecodeError(PantauError):
    """The outputs do not have the layout the family expects."""


@dataclass(frozen=True)
class DecoderSpec:
    """What a decoder needs beyond the tensors. anchors: {stride: ((w, h), ...)} in input pixels."""

    family: str
    num_classes: int
    strides: tuple[int, ...] = (8, 16, 32)
    reg_max: int = 10
    center_offset: float = 0.5
    anchors: dict[int, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    scale_xy: float = 1.0


@dataclass
class Candidates:
    """One frame's boxes before NMS; `nms_done` when the model already suppressed duplicates."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    nms_done: bool = False


def _select(
    boxes: np.ndarray, class_scores: np.ndarray, floor: float, mask: np.ndarray | None
) -> Candidates:
    """Keep each box's best allowed class when its score reaches the floor."""
    if mask is not None:
        class_scores = np.where(mask, class_scores, 0.0)
    ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(ids)), ids]
    keep = scores >= floor
    return Candidates(
        boxes[keep].astype(np.float32), scores[keep].astype(np.float32), ids[keep].astype(np.int32)
    )


def _cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    half = b[..., 2:4] / 2
    return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w]
    return xs.reshape(-1).astype(np.float32), ys.reshape(-1).astype(np.float32)


def _level_sizes(input_hw: tuple[int, int], strides: Sequence[int]) -> list[tuple[int, int]]:
    return [(-(-input_hw[0] // s), -(-input_hw[1] // s)) for s in strides]


def decode_nanodet(
    outs: list[np.ndarray],
    spec: DecoderSpec,
    input_hw: tuple[int, int],
    floor: float,
    mask: np.ndarray | None,
) -> list[Candidates]:
    """NanoDet (GFL head): per level sigmoid scores [B,N,C] and side distributions
    [B,N,4*(reg_max+1)], or both concatenated in one [B,sum N,C+4*(reg_max+1)] tensor.
    """
    bins = spec.reg_max + 1
    sizes = _level_sizes(input_hw, spec.strides)
    if len(outs) == 1:
        merged = outs[0]
        if merged.shape[-1] != spec.num_classes + 4 * bins:
            raise DecodeError(f"nanodet: last dim {merged.shape[-1]} != C + 4*(reg_max+1)")
        cls, reg = merged[..., : spec.num_classes], merged[..., spec.num_classes :]
    else:
        cls_l = sorted(
            (o for o in outs if o.shape[-1] == spec.num_classes), key=lambda o: -o.shape[1]
        )
        reg_l = sorted((o for o in outs if o.shape[-1] == 4 * bins), key=lambda o: -o.shape[1])
        if len(cls_l) != len(spec.strides) or len(reg_l) != len(spec.strides):
            raise DecodeError("nanodet: expected one score and one box tensor per stride")
        cls, reg = np.concatenate(cls_l, axis=1), np.concatenate(reg_l, axis=1)
    centres, stride_of = [], []
    for (h, w), s in zip(sizes, spec.strides, strict=True):
        xs, ys = _grid(h, w)
        centres.append(np.stack([xs, ys], 1) * s + spec.center_offset * s)
        stride_of.append(np.full(h * w, s, np.float32))
    centre, stride = np.concatenate(centres), np.concatenate(stride_of)
    if cls.shape[1] != len(centre):
        raise DecodeError(
            f"nanodet: {cls.shape[1]} anchors, grid of input {input_hw} has {len(centre)}"
        )
    project = np.arange(bins, dtype=np.float32)
    result = []
    for b in range(cls.shape[0]):
        scores = cls[b]
        best = (scores if mask is None else np.where(mask, scores, 0)).max(axis=1)
        idx = np.flatnonzero(best >= floor)
        dist = reg[b, idx].reshape(-1, 4, bins)
        dist = np.exp(dist - dist.max(axis=2, keepdims=True))
        dist = (dist / dist.sum(axis=2, keepdims=True)) @ project * stride[idx, None]
        c = centre[idx]
        boxes = np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1)
        result.append(_select(boxes, scores[idx], floor, mask))
    return result


def decode_darknet(
    outs: list[np.ndarray],
    spec: DecoderSpec,
    input_hw: tuple[int, int],
    floor: float,
    mask: np.ndarray | None,
) -> list[Candidates]:
    """Darknet YOLO heads [B, A*(5+C), H, W]: sigmoid offsets in the cell, exp sizes times
    anchors, score = objectness x class probability.
    """
    per_frame: list[list[Candidates]] = [[] for _ in range(outs[0].shape[0])]
    for out in outs:
        b, ch, h, w = out.shape
        stride = input_hw[0] // h
        anchors = np.asarray(spec.anchors.get(stride, ()), np.float32)
        if len(anchors) == 0 or ch != len(anchors) * (5 + spec.num_classes):
            raise DecodeError(
                f"darknet-yolo: head {out.shape} has no matching anchors (stride {stride})"
            )
        xs, ys = _grid(h, w)
        raw = out.reshape(b, len(anchors), 5 + spec.num_classes, h * w).transpose(0, 1, 3, 2)
        for f in range(b):
            obj = _sigmoid(raw[f, :, :, 4])
            a_idx, cell = np.nonzero(obj >= floor)
            p = raw[f, a_idx, cell]
            s = spec.scale_xy
            cx = (_sigmoid(p[:, 0]) * s - (s - 1) / 2 + xs[cell]) * stride
            cy = (_sigmoid(p[:, 1]) * s - (s - 1) / 2 + ys[cell]) * stride
            bw = np.exp(p[:, 2]) * anchors[a_idx, 0]
            bh = np.exp(p[:, 3]) * anchors[a_idx, 1]
            boxes = _cxcywh_to_xyxy(np.stack([cx, cy, bw, bh], 1))
            per_frame[f].append(
                _select(boxes, obj[a_idx, cell, None] * _sigmoid(p[:, 5:]), floor, mask)
            )
    return [_concat(c) for c in per_frame]


def decode_yolov5(
    outs: list[np.ndarray],
    spec: DecoderSpec,
    input_hw: tuple[int, int],
    floor: float,
    mask: np.ndarray | None,
) -> list[Candidates]:
    """YOLOv5/v7 export [B, N, 5+C]: cx, cy, w, h in input pixels, objectness, class probs."""
    out = _single(outs, "yolov5", 5 + spec.num_classes, axis=-1)
    return [
        _select(_cxcywh_to_xyxy(o[:, :4]), o[:, 4:5] * o[:, 5:], floor, mask) for o in out[:, :, :]
    ]


def decode_yolov8(
    outs: list[np.ndarray],
    spec: DecoderSpec,
    input_hw: tuple[int, int],
    floor: float,
    mask: np.ndarray | None,
) -> list[Candidates]:
    """Ultralytics YOLOv8/YOLO11 export [B, 4+C, N]: cx, cy, w, h, then class scores."""
    out = _single(outs, "yolov8", 4 + spec.num_classes, axis=1)
    return [_select(_cxcywh_to_xyxy(o.T[:, :4]), o.T[:, 4:], floor, mask) for o in out]


def decode_yolox(
    outs: list[np.ndarray],
    spec: DecoderSpec,
    input_hw: tuple[int, int],
    floor: float,
    mask: np.ndarray | None,
) -> list[Candidates]:
    """YOLOX export [B, N, 5+C] without decode: (offset + cell) * stride, exp(size) * stride."""
    out = _single(outs, "yolox", 5 + spec.num_classes, axis=-1)
    grids, strides = [], []
    for (h, w), s in zip(_level_sizes(input_hw, spec.strides), spec.strides, strict=True):
        xs, ys = _grid(h, w)
        grids.append(np.stack([xs, ys], 1))
        strides.append(np.full((h * w, 1), s, np.float32))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    if out.shape[1] != len(grid):
        raise DecodeError(
            f"yolox: {out.shape[1]} anchors, grid of input {input_hw} has {len(grid)}"
        )
    result = []
    for o in out:
        xy = (o[:, :2] + grid) * stride
        wh = np.exp(np.minimum(o[:, 2:4], 20.0)) * stride
        boxes = _cxcywh_to_xyxy(np.concatenate([xy, wh], 1))
        result.append(_select(boxes, o[:, 4:5] * o[:, 5:], floor, mask))
    return result


def decode_end2end(
    outs: list[np.ndarray],
    spec: DecoderSpec,
    input_hw: tuple[int, int],
    floor: float,
    mask: np.ndarray | None,
) -> list[Candidates]:
    """Models with NMS inside: one [B, K, 6] (x1, y1, x2, y2, score, class) tensor, or separate
    boxes [B,K,4], scores [B,K], labels [B,K] and optionally a count [B,1].
    """
    if len(outs) == 1:
        out = outs[0]
        if out.ndim != 3 or out.shape[-1] < 6:
            raise DecodeError(f"end2end: expected [B, K, 6], got {out.shape}")
        boxes, scores, labels, counts = out[..., :4], out[..., 4], out[..., 5], None
    else:
        found = next((o for o in outs if o.ndim == 3 and o.shape[-1] == 4), None)
        if found is None:
            raise DecodeError("end2end: expected boxes [B,K,4], scores [B,K] and labels [B,K]")
        boxes = found
        rest = [o for o in outs if o is not boxes]
        counts = next(
            (o for o in rest if o.size == o.shape[0] and boxes.shape[1] != 1),
            None,
        )
        pair = [o for o in rest if o is not counts and o.ndim == 2]
        if len(pair) != 2:
            raise DecodeError("end2end: expected boxes [B,K,4], scores [B,K] and labels [B,K]")
        is_int = [
            np.issubdtype(o.dtype, np.integer) or bool(np.all(o == np.round(o))) for o in pair
        ]
        labels, scores = (pair[0], pair[1]) if is_int[0] and not is_int[1] else (pair[1], pair[0])
    result = []
    for f in range(boxes.shape[0]):
        n = int(counts.reshape(-1)[f]) if counts is not None else boxes.shape[1]
        ids = labels[f, :n].astype(np.int32)
        keep = (scores[f, :n] >= floor) & (ids >= 0) & (ids < spec.num_classes)
        if mask is not None:
            keep &= mask[np.clip(ids, 0, spec.num_classes - 1)]
        result.append(
            Candidates(
                boxes[f, :n][keep].astype(np.float32),
                scores[f, :n][keep].astype(np.float32),
                ids[keep],
                nms_done=True,
            )
        )
    return result


def _single(outs: list[np.ndarray], family: str, size: int, axis: int) -> np.ndarray:
    match = [o for o in outs if o.ndim == 3 and o.shape[axis] == size]
    if len(match) != 1:
        shapes = [o.shape for o in outs]
        raise DecodeError(
            f"{family}: expected one output with dim {size} on axis {axis}, got {shapes}"
        )
    return match[0].astype(np.float32, copy=False)


def _concat(parts: list[Candidates]) -> Candidates:
    return Candidates(
        np.concatenate([p.boxes for p in parts]).reshape(-1, 4),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.class_ids for p in parts]),
    )


Decoder = Callable[
    [list[np.ndarray], DecoderSpec, tuple[int, int], float, "np.ndarray | None"], list[Candidates]
]

DECODERS: dict[str, Decoder] = {
    "nanodet": decode_nanodet,
    "darknet-yolo": decode_darknet,
    "yolov5": decode_yolov5,
    "yolov8": decode_yolov8,
    "yolox": decode_yolox,
    "end2end": decode_end2end,
}


def decode(
    outs: list[np.ndarray],
    spec: DecoderSpec,
    input_hw: tuple[int, int],
    floor: float,
    mask: np.ndarray | None = None,
) -> list[Candidates]:
    """Decode a batch. `mask` (bool, one per class) drops classes before the best one is picked."""
    if spec.family not in DECODERS:
        raise DecodeError(f"unknown family {spec.family!r}; known: {', '.join(FAMILIES)}")
    return DECODERS[spec.family](outs, spec, input_hw, floor, mask)
