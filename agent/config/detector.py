"""Detector settings (model, precision, execution provider, threads, input size, NMS), kept out
of the detector runtime so that loading a config never imports OpenCV or ONNX Runtime."""

from __future__ import annotations

from typing import Literal

from pantau.agent.vision.detections import DEFAULT_CLASSES
from pantau.agent.wire.settings import Section
from pydantic import Field, field_validator

# The agent keeps boxes down to this score so that ByteTrack's second, low-score stage has
# something to match; new tracks still need the tracker's own `new_score`.
DETECTOR_FLOOR = 0.1


class DetectorSettings(Section):
    model: str = Field("nanodet-m", description="Model name in the local model store.")
    precision: Literal["auto", "int8", "fp32"] = Field(
        "auto",
        description="auto: INT8 when built and accepted by the accuracy gate, else FP32.",
    )
    provider: Literal["cpu", "cuda", "tensorrt", "openvino"] = Field(
        "cpu", description="ONNX Runtime execution provider."
    )
    intra_op_threads: int = Field(
        0, ge=0, description="Threads inside one operator (0 = ONNX Runtime picks: all cores)."
    )
    inter_op_threads: int = Field(1, ge=0, description="Operators run in parallel (0 = auto).")
    input_size: int | None = Field(
        None, ge=32, description="Input side in pixels (e.g. 512 or 640 for small, distant "
        "vehicles); default the model's. Cameras may override it."
    )
    classes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CLASSES),
        description="Class names to keep; empty keeps every class of the model.",
    )
    confidence: float = Field(0.5, gt=0, le=1, description="Default score threshold.")
    class_confidence: dict[str, float] = Field(
        default_factory=dict, description="Per-class score thresholds, by class name."
    )
    nms_iou: float = Field(0.5, gt=0, le=1, description="IoU above which NMS drops a box.")
    nms_merge_confusable: bool = Field(
        True, description="NMS treats confusable classes (car, bus and truck; bicycle and "
        "motorcycle) as one, so one vehicle gives one box, not a car box and a truck box "
        "that would become two tracks and count twice.",
    )
    max_detections: int = Field(300, ge=1, description="Most boxes kept per frame.")
    max_batch: int = Field(8, ge=1, description="Most frames per inference call.")
    pad: Literal["minimal", "square"] = Field(
        "minimal",
        description="Letterbox canvas: minimal pads the scaled frame only up to the next "
        "multiple the model allows (same scale, fewer pixels: a 4:3 frame at 416 runs as "
        "416x320); square always pads to input_size x input_size.",
    )
    calls_per_second: float | None = Field(
        None, gt=0,
        description="Detector calls per second this box sustains at the model's input "
        "(`pantau-agent models bench` shows it). A live agent plans tiles on 60 % of them "
        "(decoding and tracking take the rest), shared fairly across its cameras; a camera "
        "whose tiles (cameras.<name>.tiling) would exceed its share falls back to fewer, "
        "larger tiles. Default: measured when the agent starts.",
    )
    allow_spinning: bool = Field(
        True, description="ONNX Runtime worker threads spin between runs (lower latency, "
        "burns CPU while idle).",
    )

    @field_validator("class_confidence")
    @classmethod
    def _in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, score in value.items():
            if not 0 < score <= 1:
                raise ValueError(f"threshold of {name!r} must be in (0, 1], got {score}")
        return value
