"""Darknet cfg + weights -> ONNX (YOLOv3/v4-tiny layers), batch norm folded into the convolutions;
the outputs are the raw YOLO head maps, decoded by the runtime's `darknet-yolo` decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pantau.agent.wire.errors import PantauError
from pantau.models.onnx_passes import finalize

OPSET = 18


class DarknetError(PantauError):
    """A cfg or weights file this converter cannot read."""


@dataclass
class YoloHead:
    output: str
    stride: int
    anchors: list[tuple[float, float]]
    classes: int
    scale_xy: float = 1.0


@dataclass
class Converted:
    model: onnx.ModelProto
    heads: list[YoloHead]
    input_size: tuple[int, int]
    extra: dict[str, str] = field(default_factory=dict)


def parse_cfg(text: str) -> list[tuple[str, dict[str, str]]]:
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append((line.strip("[]").strip(), {}))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.strip()
    if not sections or sections[0][0] not in ("net", "network"):
        raise DarknetError("cfg must start with a [net] section")
    return sections


class _Weights:
    def __init__(self, data: bytes) -> None:
        major, minor, _ = np.frombuffer(data, np.int32, 3)
        wide_seen = major * 10 + minor >= 2 and major < 1000 and minor < 1000
        self.data, self.pos = data, 12 + (8 if wide_seen else 4)

    def take(self, count: int) -> np.ndarray:
        if self.pos + 4 * count > len(self.data):
            raise DarknetError("weights file is shorter than the cfg needs")
        arr = np.frombuffer(self.data, np.float32, count, self.pos)
        self.pos += 4 * count
        return arr

    def left(self) -> int:
        return (len(self.data) - self.pos) // 4


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def convert(
    cfg_path: Path, weights_path: Path, overrides: dict[int, dict[str, str]] | None = None
) -> Converted:
    """`overrides` maps a yolo section's index (0 = first [yolo]) to cfg keys to replace."""
    sections = parse_cfg(Path(cfg_path).read_text())
    weights = _Weights(Path(weights_path).read_bytes())
    net = sections[0][1]
    size = (int(net.get("height", 416)), int(net.get("width", 416)))
    channels = int(net.get("channels", 3))
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    heads: list[YoloHead] = []
    outs: list[str] = []  # per layer: output tensor
    chans: list[int] = []
    strides: list[int] = []
    x, c, stride = "images", channels, 1

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    for i, (kind, opt) in enumerate(sections[1:]):
        name = f"l{i:03d}_{kind}"
        if kind == "convolutional":
            n, k = int(opt["filters"]), int(opt["size"])
            s = int(opt.get("stride", 1))
            pad = k // 2 if int(opt.get("pad", 0)) else int(opt.get("padding", 0))
            groups = int(opt.get("groups", 1))
            bias = weights.take(n).copy()
            factor: np.ndarray | None = None
            if int(opt.get("batch_normalize", 0)):
                scale, mean, var = weights.take(n), weights.take(n), weights.take(n)
                # sqrt(var + 1e-6) as OpenCV's reader (our reference); darknet's own
                # sqrt(var) + 1e-6 differs by under 1e-3 of a logit.
                factor = scale / np.sqrt(var + 1e-6)
                bias = bias - mean * factor
            w = weights.take(n * c // groups * k * k).reshape(n, c // groups, k, k).copy()
            if factor is not None:
                w *= factor[:, None, None, None]
            nodes.append(helper.make_node(
                "Conv", [x, const(f"{name}.W", w.astype(np.float32)),
                         const(f"{name}.B", bias.astype(np.float32))],
                [f"{name}.conv"], name=f"{name}.conv", kernel_shape=[k, k], strides=[s, s],
                pads=[pad] * 4, group=groups,
            ))
            x, c, stride = f"{name}.conv", n, stride * s
            act = opt.get("activation", "linear")
            if act == "leaky":
                nodes.append(helper.make_node("LeakyRelu", [x], [name], name=name, alpha=0.1))
                x = name
            elif act == "relu":
                nodes.append(helper.make_node("Relu", [x], [name], name=name))
                x = name
            elif act == "mish":
                nodes.append(helper.make_node("Mish", [x], [name], name=name))
                x = name
            elif act != "linear":
                raise DarknetError(f"layer {i}: activation {act!r} is not supported")
        elif kind == "maxpool":
            k = int(opt.get("size", 2))
            s = int(opt.get("stride", 1))
            padding = int(opt.get("padding", k - 1))
            begin = padding // 2
            nodes.append(helper.make_node(
                "MaxPool", [x], [name], name=name, kernel_shape=[k, k], strides=[s, s],
                pads=[begin, begin, padding - begin, padding - begin],
            ))
            x, stride = name, stride * s
        elif kind == "upsample":
            s = int(opt.get("stride", 2))
            scales = const(f"{name}.scales", np.array([1, 1, s, s], np.float32))
            nodes.append(helper.make_node(
                "Resize", [x, "", scales], [name], name=name, mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor",
            ))
            x, stride = name, stride // s
        elif kind == "route":
            srcs = [j if j >= 0 else i + j for j in _ints(opt["layers"])]
            groups, gid = int(opt.get("groups", 1)), int(opt.get("group_id", 0))
            if len(srcs) == 1:
                x = outs[srcs[0]]
            else:
                nodes.append(helper.make_node("Concat", [outs[j] for j in srcs], [name], name=name,
                                              axis=1))
                x = name
            c, stride = sum(chans[j] for j in srcs), strides[srcs[0]]
            if groups > 1:
                part = c // groups
                nodes.append(helper.make_node(
                    "Slice", [x, const(f"{name}.starts", np.array([part * gid], np.int64)),
                              const(f"{name}.ends", np.array([part * (gid + 1)], np.int64)),
                              const(f"{name}.axes", np.array([1], np.int64))],
                    [f"{name}.group"], name=f"{name}.group",
                ))
                x, c = f"{name}.group", part
        elif kind == "shortcut":
            src = int(opt["from"])
            src = src if src >= 0 else i + src
            nodes.append(helper.make_node("Add", [x, outs[src]], [name], name=name))
            x = name
        elif kind == "yolo":
            opt = {**opt, **(overrides or {}).get(len(heads), {})}
            flat = [float(v) for v in opt["anchors"].split(",") if v.strip()]
            anchors = list(zip(flat[0::2], flat[1::2], strict=True))
            mask = _ints(opt["mask"])
            head = f"head_{len(heads)}"
            nodes.append(helper.make_node("Identity", [x], [head], name=head))
            heads.append(YoloHead(head, stride, [anchors[m] for m in mask], int(opt["classes"]),
                                  float(opt.get("scale_x_y", 1.0))))
        else:
            raise DarknetError(f"layer {i}: [{kind}] is not supported")
        outs.append(x)
        chans.append(c)
        strides.append(stride)
    if weights.left():
        raise DarknetError(f"{weights.left()} weights left over: cfg and weights do not match")
    graph = helper.make_graph(
        nodes, "darknet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       ["batch", channels, "height", "width"])],
        [helper.make_tensor_value_info(h.output, TensorProto.FLOAT,
                                       ["batch", None, f"{h.output}_h", f"{h.output}_w"])
         for h in heads],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pantau.models.darknet")
    return Converted(finalize(model, dynamic=False), heads, size)
