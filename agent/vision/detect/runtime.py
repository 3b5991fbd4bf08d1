"""The detector runtime: a batch of BGR frames -> Detections per frame, through an ONNX Runtime
session (CPU, CUDA, TensorRT or OpenVINO), the family's decoder, class-aware NMS and thresholds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pantau.agent.config.detector import DetectorSettings
from pantau.agent.vision.detect.decoders import Candidates, decode
from pantau.agent.vision.detect.store import ModelManifest, ModelStore
from pantau.agent.vision.detections import CONFUSABLE_CLASSES, Detections
from pantau.agent.vision.geometry import box_iou
from pantau.agent.vision.tiles import TilePlan, merge_tiles
from pantau.agent.wire.errors import PantauError

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


class DetectorError(PantauError):
    """The detector cannot be built as configured."""


@dataclass(frozen=True)
class Transform:
    """Model-input pixels -> source pixels: x_src = (x - pad_x) / scale_x."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.scale_x).clip(0, self.width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.scale_y).clip(0, self.height)
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale_x + self.pad_x
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale_y + self.pad_y
        return out


@dataclass(frozen=True)
class Prepared:
    """One frame as model input: its CHW float tensor and the way back to source pixels."""

    tensor: np.ndarray
    transform: Transform


def canvas_size(
    frame_hw: tuple[int, int], size: tuple[int, int], multiple: int | None
) -> tuple[int, int]:
    """The (height, width) canvas of a letterboxed frame: `size`, or with `multiple` (minimal
    padding) the frame scaled as into `size` and padded up to the next multiple."""
    if not multiple:
        return size
    h, w = frame_hw
    scale = min(size[1] / w, size[0] / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    up = lambda v: -(-v // multiple) * multiple  # noqa: E731
    return (min(size[0], up(nh)), min(size[1], up(nw)))


def prepare(
    frame: np.ndarray, manifest: ModelManifest, size: tuple[int, int], multiple: int | None = None
) -> Prepared:
    """A BGR uint8 frame -> the model's CHW float tensor, as its manifest says; with `multiple`
    a letterbox canvas is only padded to the next multiple of it (see `canvas_size`).
    Resize, mean, std and transposition run in OpenCV (C, GIL released)."""
    h, w = frame.shape[:2]
    th, tw = size
    if manifest.resize == "stretch":
        image = cv2.resize(frame, (tw, th), interpolation=cv2.INTER_LINEAR)
        transform = Transform(tw / w, th / h, 0.0, 0.0, w, h)
    else:
        scale = min(tw / w, th / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        ch, cw = canvas_size((h, w), size, multiple)
        px, py = (cw - nw) // 2, (ch - nh) // 2
        if (nw, nh) == (cw, ch):
            image = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        else:
            image = np.full((ch, cw, frame.shape[2]), manifest.pad_value, dtype=frame.dtype)
            cv2.resize(frame, (nw, nh), dst=image[py : py + nh, px : px + nw],
                       interpolation=cv2.INTER_LINEAR)
        transform = Transform(nw / w, nh / h, float(px), float(py), w, h)
    # With swapRB the mean is taken in the swapped (model) order: manifest order either way.
    blob = cv2.dnn.blobFromImage(image, 1.0, mean=tuple(float(m) for m in manifest.mean),
                                 swapRB=manifest.channel_order == "rgb", crop=False,
                                 ddepth=cv2.CV_32F)[0]
    for c, std in enumerate(manifest.std):
        # OpenCV's type stubs lack the scalar form of multiply.
        cv2.multiply(blob[c], 1.0 / float(std), dst=blob[c])  # type: ignore[call-overload]
    return Prepared(blob, transform)


def preprocess(
    frames: Sequence[np.ndarray], manifest: ModelManifest, size: tuple[int, int]
) -> tuple[np.ndarray, list[Transform]]:
    """BGR uint8 frames -> the model's NCHW float batch (square canvas), as its manifest says."""
    prepared = [prepare(f, manifest, size) for f in frames]
    return np.stack([p.tensor for p in prepared]), [p.transform for p in prepared]


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float) -> np.ndarray:
    """Class-aware greedy NMS (boxes of different `class_ids` never suppress each other);
    returns kept indices, best score first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    # Shifting each class to its own region makes one pass class-aware.
    shift = (class_ids.astype(np.float32) * (float(boxes.max()) + 1.0))[:, None]
    b = boxes + shift
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        overlap = box_iou(b[i : i + 1], b[rest], min_union=1e-9)[0]
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def make_session(
    path: str,
    provider: str = "cpu",
    intra_op_threads: int = 0,
    inter_op_threads: int = 1,
    allow_spinning: bool = True,
):  # -> onnxruntime.InferenceSession (imported lazily: the CLI must start without it)
    import onnxruntime as ort

    wanted = PROVIDERS[provider]
    available = ort.get_available_providers()
    if wanted not in available:
        raise DetectorError(
            f"execution provider {provider!r} ({wanted}) is not available in this onnxruntime "
            f"(available: {', '.join(available)}); install the matching onnxruntime build or "
            "set detector.provider: cpu"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]
    return ort.InferenceSession(path, sess_options=options, providers=providers)


class Detector:
    """One model session shared by all cameras of an agent; `detect` takes frames of any sizes."""

    def __init__(
        self,
        manifest: ModelManifest,
        model_path: str,
        settings: DetectorSettings | None = None,
    ) -> None:
        self.settings = settings or DetectorSettings(model=manifest.name)
        self.manifest = manifest
        self.names = tuple(manifest.class_names)
        self.spec = manifest.decoder_spec()
        s = self.settings
        self.session = make_session(model_path, s.provider, s.intra_op_threads,
                                    s.inter_op_threads, s.allow_spinning)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.batchable = not isinstance(model_input.shape[0], int) or model_input.shape[0] != 1
        self.input_size = self.check_size(s.input_size)
        self.mask, self.thresholds = self._class_filter()
        # NMS class of each class id: its own, or its confusable group's first member.
        self.nms_class = np.arange(len(self.names))
        if s.nms_merge_confusable:
            ids = {name: i for i, name in enumerate(self.names)}
            for group in CONFUSABLE_CLASSES:
                members = [ids[n] for n in group if n in ids]
                self.nms_class[members] = min(members, default=0)
        self.floor = float(self.thresholds[self.mask].min()) if self.mask.any() else 1.0

    @classmethod
    def from_store(
        cls, settings: DetectorSettings | None = None, store: ModelStore | None = None
    ) -> Detector:
        """The configured model from the local store, INT8 or FP32 as `precision` says."""
        settings = settings or DetectorSettings()
        store = store or ModelStore()
        manifest = store.manifest(settings.model)
        which = settings.precision
        if which == "auto":
            which = "int8" if manifest.int8 and manifest.int8_accepted else "fp32"
        elif which == "int8" and manifest.int8 is None:
            raise DetectorError(f"model {manifest.name!r} has no INT8 file; build it or use fp32")
        path = store.file(manifest, which)
        detector = cls(manifest, str(path), settings)
        detector.precision = which
        return detector

    precision: str = "fp32"
    calls: int = 0  # images run through the model (frames and tiles), for cost accounting

    def check_size(self, side: int | tuple[int, int] | None) -> tuple[int, int]:
        """(height, width) for a requested input size; the model's own when None."""
        if side is None:
            return tuple(self.manifest.input_size)  # type: ignore[return-value]
        size = (side, side) if isinstance(side, int) else tuple(side)
        if size == tuple(self.manifest.input_size):
            return size  # type: ignore[return-value]
        if not self.manifest.dynamic_size:
            raise DetectorError(
                f"model {self.manifest.name!r} has a fixed input of {self.manifest.input_size}"
            )
        if any(v % self.manifest.size_multiple for v in size):
            raise DetectorError(f"input size {size} must be a multiple of "
                                f"{self.manifest.size_multiple}")
        return size  # type: ignore[return-value]

    def _class_filter(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        wanted = set(s.classes) if s.classes else set(self.names)
        unknown = (wanted | set(s.class_confidence)) - set(self.names)
        if unknown:
            raise DetectorError(f"classes not in model {self.manifest.name!r}: {sorted(unknown)}")
        mask = np.array([n in wanted for n in self.names])
        thresholds = np.array([s.class_confidence.get(n, s.confidence) for n in self.names],
                              np.float32)
        return mask, thresholds

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Raw outputs for a preprocessed batch, split into calls the model and max_batch allow."""
        step = self.settings.max_batch if self.batchable else 1
        parts = [self.session.run(None, {self.input_name: batch[i : i + step]})
                 for i in range(0, len(batch), step)]
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]

    def detect(
        self, frames: Sequence[np.ndarray], input_size: int | tuple[int, int] | None = None
    ) -> list[Detections]:
        """Detections per frame, boxes in each frame's own pixels. `input_size` overrides the
        configured size for this call (group cameras by their size setting).
        """
        if not frames:
            return []
        return self.detect_prepared([self.prepare(f, input_size) for f in frames])

    def prepare(
        self, frame: np.ndarray, input_size: int | tuple[int, int] | None = None
    ) -> Prepared:
        """The model input of one frame (thread-safe: readers may prepare ahead)."""
        size = self.input_size if input_size is None else self.check_size(input_size)
        multiple = (self.manifest.size_multiple
                    if self.settings.pad == "minimal" and self.manifest.dynamic_size else None)
        return prepare(frame, self.manifest, size, multiple)

    def detect_prepared(self, prepared: Sequence[Prepared]) -> list[Detections]:
        """Detections of prepared frames; frames of one canvas size share inference calls."""
        self.calls += len(prepared)
        groups: dict[tuple[int, ...], list[int]] = {}
        for k, p in enumerate(prepared):
            groups.setdefault(p.tensor.shape, []).append(k)
        result: list[Detections | None] = [None] * len(prepared)
        for shape, ks in groups.items():
            if len(ks) == 1:
                batch = prepared[ks[0]].tensor[None]
            else:
                batch = np.stack([prepared[k].tensor for k in ks])
            size = (shape[1], shape[2])
            found = decode(self.infer(batch), self.spec, size, self.floor, self.mask)
            for k, cand in zip(ks, found, strict=True):
                result[k] = self.postprocess(cand, prepared[k].transform)
        return result  # type: ignore[return-value]

    def postprocess(self, cand: Candidates, transform: Transform) -> Detections:
        keep = cand.scores >= self.thresholds[cand.class_ids]
        boxes, scores, ids = cand.boxes[keep], cand.scores[keep], cand.class_ids[keep]
        order = (np.argsort(-scores, kind="stable") if cand.nms_done
                 else nms(boxes, scores, self.nms_class[ids], self.settings.nms_iou))
        order = order[: self.settings.max_detections]
        size = (transform.width, transform.height)
        if len(order) == 0:
            return Detections.empty(self.names, size)
        return Detections(
            transform.to_source(boxes[order]), scores[order].astype(np.float32),
            ids[order].astype(np.int32), self.names, size,
        )

    def detect_tiles(
        self, frame: np.ndarray, plan: TilePlan, input_size: int | tuple[int, int] | None = None
    ) -> Detections:
        """Detections of `frame` from the crops of `plan`, merged in frame pixels (see
        pantau.agent.vision.tiles); one call per crop, in one batch."""
        height, width = frame.shape[:2]
        if plan.tiles == ((0, 0, width, height),):
            return self.detect([frame], input_size)[0]
        crops = [frame[y0:y1, x0:x1] for x0, y0, x1, y1 in plan.tiles]
        found = self.detect_prepared([self.prepare(c, input_size) for c in crops])
        shifted = [d.xyxy + np.array([x0, y0, x0, y0], np.float32)
                   for d, (x0, y0, _, _) in zip(found, plan.tiles, strict=True)]
        keep, boxes = merge_tiles(plan.tiles, shifted, [d.confidence for d in found],
                                  [self.nms_class[d.class_id] for d in found], (width, height),
                                  self.settings.nms_iou)
        keep, boxes = keep[: self.settings.max_detections], boxes[: self.settings.max_detections]
        scores = np.concatenate([d.confidence for d in found])[keep]
        ids = np.concatenate([d.class_id for d in found])[keep]
        return Detections(boxes, scores.astype(np.float32), ids.astype(np.int32), self.names,
                          (width, height))

    def calls_per_second(self, input_size: int | tuple[int, int] | None = None,
                         runs: int = 5) -> float:
        """Detector calls per second at `input_size` (square canvas), timed on a blank
        frame after one warm-up call: the budget a live agent shares across cameras."""
        size = self.input_size if input_size is None else self.check_size(input_size)
        blank = np.zeros((*size, 3), np.uint8)
        prepared = [self.prepare(blank, input_size)]
        self.detect_prepared(prepared)
        began = time.perf_counter()
        for _ in range(runs):
            self.detect_prepared(prepared)
        self.calls -= runs + 1
        return runs / max(time.perf_counter() - began, 1e-9)

