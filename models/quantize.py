"""Static INT8 quantization (QDQ, per-channel weights) with onnxruntime.quantization, calibrated on
real frames from a folder of images or a video, preprocessed exactly as the runtime does.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from pantau.agent.vision.detect.runtime import preprocess
from pantau.agent.vision.detect.store import ModelManifest

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def calibration_frames(path: Path, limit: int = 64) -> Iterator[np.ndarray]:
    """BGR frames from an image folder (sorted) or a video (evenly spaced)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        step = max(1, len(files) // limit)
        for p in files[::step][:limit]:
            frame = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if frame is not None:
                yield frame
        return
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or limit
    step, index, given = max(1, total // limit), 0, 0
    while given < limit:
        ok, frame = cap.read()
        if not ok:
            break
        if index % step == 0:
            given += 1
            yield frame
        index += 1
    cap.release()


def quantize(
    fp32: Path,
    int8: Path,
    manifest: ModelManifest,
    calibrate: Path,
    limit: int = 64,
    keep_float: tuple[str, ...] = (),
) -> int:
    """Write the INT8 model, with the nodes named in `keep_float` left in float; returns the
    number of calibration frames used."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    size = tuple(manifest.input_size)
    frames = list(calibration_frames(calibrate, limit))
    if not frames:
        raise ValueError(f"{calibrate}: no readable images or video frames")
    input_name = _input_name(fp32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(frames)

        def get_next(self) -> dict[str, np.ndarray] | None:
            frame = next(self.items, None)
            if frame is None:
                return None
            return {input_name: preprocess([frame], manifest, size)[0]}  # type: ignore[arg-type]

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX shape inference covers these plain conv graphs; no sympy needed.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(keep_float),
            extra_options={"CalibTensorRangeSymmetric": False},
        )
    return len(frames)


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name
