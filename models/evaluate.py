"""COCO AP of a detector on a COCO-format set (faster-coco-eval): person AP, vehicle AP, and the
FP32-vs-INT8 accuracy gate.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from pantau.agent.vision.capture import read_image
from pantau.agent.vision.detect.runtime import Detector
from pantau.agent.vision.detections import DEFAULT_CLASSES
from pantau.models.coco import COCO80, COCO91_IDS

VEHICLES = ("bicycle", "car", "motorcycle", "bus", "truck")
GATE_MAX_PERSON_DROP = 1.5


@dataclass(frozen=True)
class Scores:
    """AP (0.5:0.95) and AP50, in percent, per group that the annotations contain."""

    ap: dict[str, float]
    ap50: dict[str, float]
    images: int


def _category_map(categories: list[dict], merge_vehicles: bool) -> dict[str, int]:
    """Model class name -> annotation category id. A one-class vehicle set (`car`) takes every
    vehicle class, as a surveillance labeller would.
    """
    by_name = {c["name"]: c["id"] for c in categories}
    if merge_vehicles and "car" in by_name:
        return {**{v: by_name["car"] for v in VEHICLES}, **({"person": by_name["person"]}
                if "person" in by_name else {})}
    names_to_ids = dict(zip(COCO80, COCO91_IDS, strict=True))
    return {n: by_name[n] for n in DEFAULT_CLASSES if n in by_name and
            by_name[n] == names_to_ids[n]}


def evaluate(
    detector: Detector,
    annotations: Path,
    images: Path,
    input_size: int | None = None,
    limit: int | None = None,
    batch: int = 4,
) -> Scores:
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
    cats = gt.loadCats(gt.getCatIds())
    merge = len(cats) == 1
    cat_of = _category_map(cats, merge)
    img_ids = sorted(gt.getImgIds())[:limit]
    results = []
    for start in range(0, len(img_ids), batch):
        chunk = gt.loadImgs(img_ids[start : start + batch])
        frames = [read_image(images / im["file_name"]) for im in chunk]
        for im, dets in zip(chunk, detector.detect(frames, input_size), strict=True):
            for box, score, name in zip(dets.xyxy, dets.confidence, dets.class_names(),
                                        strict=True):
                if name in cat_of:
                    x1, y1, x2, y2 = (float(v) for v in box)
                    results.append({"image_id": im["id"], "category_id": cat_of[name],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    groups = {"person": [cat_of["person"]]} if "person" in cat_of else {}
    vehicle_ids = sorted({cat_of[v] for v in VEHICLES if v in cat_of})
    present = set(gt.getCatIds())
    vehicle_ids = [c for c in vehicle_ids if gt.getAnnIds(catIds=[c])] if not merge else vehicle_ids
    if vehicle_ids and set(vehicle_ids) <= present:
        groups["vehicle"] = vehicle_ids
    ap, ap50 = {}, {}
    for group, ids in groups.items():
        if not results:
            ap[group] = ap50[group] = 0.0
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(results)
            ev = COCOeval_faster(gt, dt, "bbox")
            ev.params.imgIds = img_ids
            ev.params.catIds = ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        ap[group], ap50[group] = 100 * float(ev.stats[0]), 100 * float(ev.stats[1])
    return Scores(ap, ap50, len(img_ids))


def gate(fp32: Scores, int8: Scores) -> tuple[bool, float]:
    """INT8 passes when it loses at most GATE_MAX_PERSON_DROP AP on person."""
    drop = fp32.ap.get("person", 0.0) - int8.ap.get("person", 0.0)
    return drop <= GATE_MAX_PERSON_DROP, drop


def to_json(scores: Scores) -> str:
    return json.dumps({"ap": scores.ap, "ap50": scores.ap50, "images": scores.images})
