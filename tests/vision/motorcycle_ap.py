"""Motorcycle AP on hand-checked boxes of hcmc-motorcycles.mp4 (tests/vision/motorcycle_boxes.json,
method in motorcycle_boxes.md): a detector on the whole frame or on the tiles of the clip's
counting line (pantau.agent.vision.tiles), scored with faster-coco-eval."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from pantau.agent.vision.detect.runtime import Detector

LABELS = Path(__file__).with_name("motorcycle_boxes.json")
# The clip's counting line (tests/pipeline/motorcycles.py): tiles are planned for it.
LINE = [[430, 360], [1290, 360]]
TWO_WHEELERS = ("motorcycle", "bicycle")  # scored as one class, as the counting groups them


@dataclass(frozen=True)
class Ap:
    ap: float  # AP 0.5:0.95, percent
    ap50: float
    frames: int
    boxes: int
    calls: int  # detector calls (frames and tiles)


def frames(video: Path) -> dict[int, np.ndarray]:
    """The labelled frames of the clip, by index."""
    wanted = {int(f) for f in json.loads(LABELS.read_text())["frames"]}
    found, capture, index = {}, cv2.VideoCapture(str(video)), 0
    while len(found) < len(wanted):
        ok, image = capture.read()
        if not ok:
            break
        if index in wanted:
            found[index] = image
        index += 1
    capture.release()
    return found


def evaluate(detector: Detector, images: dict[int, np.ndarray], tiled: bool) -> Ap:
    """Two-wheeler AP of `detector` on the labelled frames."""
    from faster_coco_eval import COCO, COCOeval_faster
    from pantau.agent.config.agent import CameraConfig
    from pantau.agent.vision.tiles import Tiler

    labels = json.loads(LABELS.read_text())
    region = labels["region"]
    tiler = Tiler(
        CameraConfig.model_validate(
            # Tiles at the frame's own resolution (26 px is the model's smallest object at
            # 416): the plan these AP numbers were measured with. The default plan of a
            # 1568-px frame is finer (scale 1.18): AP50 31.9 on an AVX2 box, see RESULTS.md.
            {"lines": {"road": {"points": LINE}}, "tiling": {"mode": "auto", "min_object_px": 26}}
        )
    )
    gt: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "motorcycle"}]}
    results = []
    before = detector.calls
    for frame, entry in labels["frames"].items():
        image = images[int(frame)]
        h, w = image.shape[:2]
        gt["images"].append(
            {"id": int(frame), "width": w, "height": h, "file_name": f"{frame}.png"}
        )
        for crowd, boxes in ((0, entry["motorcycle"]), (1, entry["ignore"])):
            for x1, y1, x2, y2 in boxes:
                gt["annotations"].append(
                    {
                        "id": len(gt["annotations"]) + 1,
                        "image_id": int(frame),
                        "category_id": 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": crowd,
                    }
                )
        if tiled:
            found = detector.detect_tiles(image, tiler.plan(w, h, detector.input_size))
        else:
            found = detector.detect([image])[0]
        for box, score, name in zip(
            found.xyxy.tolist(), found.confidence.tolist(), found.class_names(), strict=True
        ):
            x1, y1, x2, y2 = box
            inside = (x1 + x2) / 2 >= region["min_centre_x"] and (y1 + y2) / 2 >= region[
                "min_centre_y"
            ]
            if name in TWO_WHEELERS and inside:
                results.append(
                    {
                        "image_id": int(frame),
                        "category_id": 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": score,
                    }
                )
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        path = Path(tmp) / "gt.json"
        path.write_text(json.dumps(gt))
        truth = COCO(str(path))
        ev = COCOeval_faster(truth, truth.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    boxes = sum(len(e["motorcycle"]) for e in labels["frames"].values())
    return Ap(
        100 * float(ev.stats[0]),
        100 * float(ev.stats[1]),
        len(labels["frames"]),
        boxes,
        detector.calls - before,
    )
