"""The built NanoDet on real footage: it finds the people of a TUD-Campus frame, and INT8 agrees
with FP32 on real frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pantau.agent.config.detector import DetectorSettings
from pantau.agent.vision.detect.runtime import Detector


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _tud(data: Path, frame: int) -> tuple[np.ndarray, np.ndarray]:
    seq = data / "tud" / "TUD-Campus"
    image = cv2.imread(str(seq / "img1" / f"{frame:06d}.jpg"))
    rows = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",")
    rows = rows[rows[:, 0] == frame]
    gt = np.c_[rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]]
    return image, gt


def test_nanodet_finds_the_people_in_a_tud_frame(data: Path, built_store) -> None:
    image, gt = _tud(data, 1)
    for precision in ("fp32", "int8"):
        detector = Detector.from_store(DetectorSettings(precision=precision), built_store)
        (dets,) = detector.detect([image])
        people = dets[dets.class_id == 0]
        matched = (_iou(gt, people.xyxy).max(axis=1) >= 0.5).sum()
        assert matched >= len(gt) - 2, f"{precision}: {matched} of {len(gt)} people found"
        assert len(people) <= len(gt) + 1


def test_int8_agrees_with_fp32_on_real_frames(data: Path, built_store) -> None:
    frames = [_tud(data, f)[0] for f in (1, 20, 40, 60)]
    fp32 = Detector.from_store(DetectorSettings(precision="fp32"), built_store).detect(frames)
    int8 = Detector.from_store(DetectorSettings(precision="int8"), built_store).detect(frames)
    total = found = 0
    for a, b in zip(fp32, int8, strict=True):
        strong = a[a.confidence >= 0.6]
        total += len(strong)
        if len(strong) and len(b):
            iou = _iou(strong.xyxy, b.xyxy)
            same = strong.class_id[:, None] == b.class_id[None, :]
            found += int(((iou >= 0.5) & same).any(axis=1).sum())
    assert total >= 8
    assert found >= 0.85 * total, f"INT8 matched {found} of {total} confident FP32 boxes"


def test_batch_equals_single_frames(data: Path, built_store) -> None:
    frames = [_tud(data, f)[0] for f in (1, 30)]
    detector = Detector.from_store(DetectorSettings(precision="fp32"), built_store)
    batched = detector.detect(frames)
    for frame, together in zip(frames, batched, strict=True):
        (alone,) = detector.detect([frame])
        np.testing.assert_allclose(alone.xyxy, together.xyxy, atol=1e-2)


def test_verify_at_another_input_size_keeps_the_models_own_record(
    data: Path, built_store, tmp_path: Path
) -> None:
    """`models verify --input-size` records its APs under a size-tagged key and never changes
    the INT8 verdict, which belongs to the size the model is built and calibrated for."""
    import json
    import shutil

    from pantau.agent.vision.detect.store import ModelStore
    from pantau.models.build import verify

    coco = json.loads((data / "coco-tiny/annotations/instances_val2017.json").read_text())
    images = coco["images"][:6]
    keep = {im["id"] for im in images}
    subset = tmp_path / "few" / "annotations" / "instances.json"
    subset.parent.mkdir(parents=True)
    subset.write_text(
        json.dumps(
            {
                **coco,
                "images": images,
                "annotations": [a for a in coco["annotations"] if a["image_id"] in keep],
            }
        )
    )
    store = ModelStore(tmp_path / "store")
    shutil.copytree(built_store.root / "nanodet-m", store.root / "nanodet-m")
    own = verify(store, "nanodet-m", subset, data / "coco-tiny/val2017", force=True)
    assert own.int8_accepted
    assert "few.person.ap.int8" in own.metrics
    for verdict in (True, False):  # whatever the AP drop at 320, the verdict stays as it was
        store.save(own.model_copy(update={"int8_accepted": verdict}))
        other = verify(store, "nanodet-m", subset, data / "coco-tiny/val2017", input_size=320)
        assert other.int8_accepted is verdict
        assert other.metrics["few.person.ap.int8"] == own.metrics["few.person.ap.int8"]
        assert "few@320.person.ap.int8" in other.metrics
