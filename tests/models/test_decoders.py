"""Every family's decoder, on the output layouts real exports produce, end to end through
`models import` and the Detector (boxes back in source pixels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pantau.agent.cli.main import app
from pantau.agent.config.detector import DetectorSettings
from pantau.agent.vision.detect.decoders import DecodeError, DecoderSpec, decode
from pantau.agent.vision.detect.runtime import Detector
from pantau.agent.vision.detect.store import ModelStore
from typer.testing import CliRunner

C = 3  # classes: person, car, dog
NAMES = "person\ncar\ndog\n"
SIZE = 64
# One object in model-input pixels (the frame is 128x128, so source = 2x): class car.
BOX = np.array([16.0, 8.0, 48.0, 40.0])
SOURCE_BOX = BOX * 2
DARKNET_BOX = BOX + 4  # its centre must fall inside a cell, not on a cell edge


def _cxcywh(box: np.ndarray) -> np.ndarray:
    return np.array(
        [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]
    )


def _yolov5() -> dict[str, np.ndarray]:
    out = np.zeros((10, 5 + C))
    out[3, :4], out[3, 4], out[3, 5 + 1] = _cxcywh(BOX), 0.9, 0.95
    out[4, :4], out[4, 4], out[4, 5 + 1] = _cxcywh(BOX + 1), 0.9, 0.8  # duplicate, NMS drops it
    out[5, :4], out[5, 4], out[5, 5 + 0] = _cxcywh(BOX), 0.2, 0.9  # below threshold
    return {"output0": out}


def _yolov8() -> dict[str, np.ndarray]:
    out = np.zeros((4 + C, 12))
    out[:4, 7], out[4 + 1, 7] = _cxcywh(BOX), 0.9
    out[:4, 8], out[4 + 1, 8] = _cxcywh(BOX + 2), 0.7
    return {"output0": out}


def _yolox() -> dict[str, np.ndarray]:
    grid = [(SIZE // s, s) for s in (8, 16, 32)]
    out = np.zeros((sum(g * g for g, _ in grid), 5 + C))
    cx, cy, w, h = _cxcywh(BOX)
    stride, gx, gy = 16, 1, 1  # level 1 starts after the 8x8 cells of stride 8
    row = 64 + gy * (SIZE // stride) + gx
    out[row, :4] = [cx / stride - gx, cy / stride - gy, np.log(w / stride), np.log(h / stride)]
    out[row, 4], out[row, 5 + 1] = 0.95, 0.9
    return {"output": out}


def _end2end_single() -> dict[str, np.ndarray]:
    out = np.zeros((5, 6))
    out[0] = [*BOX, 0.9, 1]
    out[1] = [*(BOX + 1), 0.85, 1]  # kept: the model did NMS, we must not redo it
    return {"output0": out}


def _end2end_split() -> dict[str, np.ndarray]:
    boxes = np.zeros((4, 4))
    boxes[0] = BOX
    return {
        "num_dets": np.array([1.0]),
        "boxes": boxes,
        "scores": np.array([0.9, 0.8, 0, 0]),
        "labels": np.array([1.0, 2.0, 0, 0]),
    }


def _nanodet() -> dict[str, np.ndarray]:
    bins = 8  # reg_max 7, as NanoDet-Plus exports it: one merged [N, C + 32] tensor
    cells = [(SIZE // s) ** 2 for s in (8, 16, 32)]
    out = np.full((sum(cells), C + 4 * bins), -20.0)
    out[:, :C] = 0.0
    stride, gx, gy = 8, 3, 2
    row = gy * (SIZE // stride) + gx
    centre = np.array([gx, gy]) * stride  # NanoDet-Plus: cell corner, no half-cell offset
    sides = (
        np.array([centre[0] - BOX[0], centre[1] - BOX[1], BOX[2] - centre[0], BOX[3] - centre[1]])
        / stride
    )
    for k, d in enumerate(sides):  # all mass on one bin: the expected value is exact
        out[row, C + k * bins + int(d)] = 20.0
    out[row, 1] = 0.9
    return {"output": out}


def _darknet() -> dict[str, np.ndarray]:
    heads = {}
    for name, stride in (("head_0", 32), ("head_1", 16)):
        g = SIZE // stride
        heads[name] = np.full((3 * (5 + C), g, g), -10.0)
    cx, cy, w, h = _cxcywh(DARKNET_BOX)
    gx, gy, a = 2, 1, 2  # head_1 (stride 16), anchor 2 = (32, 32)
    t = heads["head_1"].reshape(3, 5 + C, 4, 4)
    t[a, 0, gy, gx] = np.log((cx / 16 - gx) / (1 - (cx / 16 - gx)))
    t[a, 1, gy, gx] = np.log((cy / 16 - gy) / (1 - (cy / 16 - gy)))
    t[a, 2, gy, gx], t[a, 3, gy, gx] = np.log(w / 32), np.log(h / 32)
    t[a, 4, gy, gx], t[a, 5 + 1, gy, gx] = 10.0, 10.0
    return heads


CASES = {
    "yolov5": (_yolov5, 1, SOURCE_BOX),
    "yolov8": (_yolov8, 1, SOURCE_BOX),
    "yolox": (_yolox, 1, SOURCE_BOX),
    "end2end": (_end2end_single, 2, SOURCE_BOX),
    "nanodet": (_nanodet, 1, SOURCE_BOX),
    "darknet-yolo": (_darknet, 1, DARKNET_BOX * 2),
}


def _import(
    tmp_path: Path, family: str, outputs: dict[str, np.ndarray], make, extra: list[str]
) -> ModelStore:
    model_file = tmp_path / f"{family}.onnx"
    onnx.save(make(outputs, SIZE), str(model_file))
    (tmp_path / "names.txt").write_text(NAMES)
    store = tmp_path / "store"
    result = CliRunner().invoke(
        app,
        [
            "models",
            "import",
            str(model_file),
            "--family",
            family,
            "--names",
            str(tmp_path / "names.txt"),
            "--name",
            "m",
            "--store",
            str(store),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return ModelStore(store)


@pytest.mark.parametrize("family", list(CASES))
def test_family_end_to_end(tmp_path: Path, family: str, const_model) -> None:
    make, expected, box = CASES[family]
    extra = (
        ["--anchors", "32:81,82,135,169,344,319;16:10,14,23,27,32,32"]
        if (family == "darknet-yolo")
        else []
    )
    store = _import(tmp_path, family, make(), const_model, extra)
    settings = DetectorSettings(
        model="m", precision="fp32", classes=["person", "car"], confidence=0.5
    )
    detector = Detector.from_store(settings, store)
    frames = [np.zeros((128, 128, 3), np.uint8)] * 2
    for dets in detector.detect(frames):
        assert len(dets) == expected
        assert dets.class_names()[0] == "car"
        np.testing.assert_allclose(dets.xyxy[0], box, atol=0.05)


def test_end2end_split_outputs() -> None:
    outs = [v[None].astype(np.float32) for v in _end2end_split().values()]
    spec = DecoderSpec("end2end", C)
    (found,) = decode(outs, spec, (SIZE, SIZE), 0.5)
    assert found.nms_done and found.class_ids.tolist() == [1]
    np.testing.assert_allclose(found.boxes[0], BOX)


def test_class_mask_picks_best_allowed_class() -> None:
    out = np.zeros((1, 2, 5 + C), np.float32)
    out[0, 0, :4], out[0, 0, 4] = _cxcywh(BOX), 1.0
    out[0, 0, 5:] = [0.6, 0.1, 0.9]  # dog wins overall, person among the allowed
    spec = DecoderSpec("yolov5", C)
    (found,) = decode([out], spec, (SIZE, SIZE), 0.5, np.array([True, True, False]))
    assert found.class_ids.tolist() == [0]
    assert found.scores.tolist() == pytest.approx([0.6])


def test_wrong_layout_is_a_clear_error() -> None:
    with pytest.raises(DecodeError, match="yolov8"):
        decode([np.zeros((1, 7, 5), np.float32)], DecoderSpec("yolov8", 80), (64, 64), 0.5)
    with pytest.raises(DecodeError, match="unknown family"):
        decode([], DecoderSpec("ssd", 80), (64, 64), 0.5)
