"""TF.js graph model -> ONNX: the op subset of onnx-tf exports (NanoDet), rebuilt as plain NCHW
convolutions so ONNX Runtime and its INT8 quantizer see an ordinary conv net.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pantau.agent.wire.errors import PantauError
from pantau.models.onnx_passes import finalize

OPSET = 18
_NCHW_TO_NHWC = [0, 2, 3, 1]
_NHWC_TO_NCHW = [0, 3, 1, 2]
_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}


class ConversionError(PantauError):
    """The graph uses something this converter does not handle."""


def read_weights(manifest: list[dict[str, Any]], folder: Path) -> dict[str, np.ndarray]:
    """Decode a TF.js weights manifest (shards concatenated, optional quantization)."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((folder / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(s) for s in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            if quant and quant["dtype"] == "float16":
                arr = np.frombuffer(buf, np.float16, count, offset).astype(np.float32)
                offset += 2 * count
            elif quant:
                qtype = np.uint8 if quant["dtype"] == "uint8" else np.uint16
                raw = np.frombuffer(buf, qtype, count, offset)
                offset += raw.nbytes
                arr = (raw.astype(np.float32) * quant["scale"] + quant["min"]).astype(np.float32)
            else:
                dtype = _DTYPES[spec["dtype"]]
                arr = np.frombuffer(buf, dtype, count, offset)
                offset += arr.nbytes
            weights[spec["name"]] = arr.reshape(shape)
    return weights


def _ints(attr: dict[str, Any], key: str) -> list[int]:
    return [int(i) for i in attr[key]["list"].get("i", [])]


def _text(attr: dict[str, Any], key: str) -> str:
    return base64.b64decode(attr[key]["s"]).decode()


def _ref(name: str) -> str:
    """TF input reference -> our tensor name (`node` is output 0, `node:1` output 1)."""
    return name[:-2] if name.endswith(":0") else name


class _Builder:
    def __init__(self, nodes: list[dict[str, Any]], consts: dict[str, np.ndarray]) -> None:
        self.tf_nodes = nodes
        self.consts = consts
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}
        self.uses = Counter(_ref(i) for n in nodes for i in n.get("input", []))
        self.conv_of: dict[str, onnx.NodeProto] = {}  # NHWC conv output -> its Conv node

    def name(self, ref: str) -> str:
        ref = _ref(ref)
        return self.alias.get(ref, ref)

    def const(self, ref: str) -> np.ndarray:
        ref = _ref(ref)
        if ref not in self.consts:
            raise ConversionError(f"{ref} is not a constant")
        return self.consts[ref]

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits[name] = value
        return name

    def add(self, op: str, inputs: list[str], output: str, **attrs: Any) -> onnx.NodeProto:
        node = helper.make_node(op, inputs, [output], name=output, **attrs)
        self.nodes.append(node)
        return node

    def nhwc_op(self, node: dict[str, Any], op: str, inputs: list[str], **attrs: Any) -> None:
        """An NHWC TF op as Transpose -> NCHW ONNX op -> Transpose; pairs cancel later."""
        out = node["name"]
        self.add("Transpose", [self.name(node["input"][0])], f"{out}/nchw", perm=_NHWC_TO_NCHW)
        core = self.add(op, [f"{out}/nchw", *inputs], f"{out}/core", **attrs)
        self.add("Transpose", [f"{out}/core"], out, perm=_NCHW_TO_NHWC)
        if op == "Conv":
            self.conv_of[out] = core

    def convert(self, node: dict[str, Any]) -> None:
        op, out, attr = node["op"], node["name"], node.get("attr", {})
        inputs = node.get("input", [])
        if op in ("Const", "Placeholder"):
            return
        if all(_ref(i) in self.consts for i in inputs) and op in _FOLD:
            self.consts[out] = _FOLD[op]([self.const(i) for i in inputs])
            return
        if op == "Identity":
            self.alias[out] = self.name(inputs[0])
        elif op in ("Pad", "PadV2"):
            pads = self.const(inputs[1]).astype(np.int64)
            args = [self.name(inputs[0]), self.init(f"{out}/pads", pads.T.reshape(-1))]
            if op == "PadV2":
                args.append(self.init(f"{out}/value", self.const(inputs[2]).astype(np.float32)))
            self.add("Pad", args, out, mode="constant")
        elif op == "Transpose":
            self.add("Transpose", [self.name(inputs[0])], out, perm=self.const(inputs[1]).tolist())
        elif op == "Conv2D":
            self._conv(node, attr)
        elif op in ("Add", "AddV2"):
            self._add(node)
        elif op == "LeakyRelu":
            self.add("LeakyRelu", [self.name(inputs[0])], out, alpha=float(attr["alpha"]["f"]))
        elif op == "Sigmoid":
            self.add("Sigmoid", [self.name(inputs[0])], out)
        elif op == "MaxPool":
            self._check_nhwc_valid(node, attr)
            self.nhwc_op(
                node, "MaxPool", [], kernel_shape=_ints(attr, "ksize")[1:3],
                strides=_ints(attr, "strides")[1:3],
            )
        elif op == "ConcatV2":
            axis = int(self.const(inputs[-1]))
            self.add("Concat", [self.name(i) for i in inputs[:-1]], out, axis=axis)
        elif op == "ResizeBilinear":
            self._resize(node, attr)
        elif op == "SplitV":
            sizes = self.const(inputs[1]).astype(np.int64)
            axis = int(self.const(inputs[2]))
            outs = [out] + [f"{out}:{k}" for k in range(1, len(sizes))]
            self.nodes.append(helper.make_node(
                "Split", [self.name(inputs[0]), self.init(f"{out}/split", sizes)], outs,
                name=out, axis=axis,
            ))
        elif op == "Reshape":
            shape = self.const(inputs[1]).astype(np.int64)
            self.add("Reshape", [self.name(inputs[0]), self.init(f"{out}/shape", shape)], out)
        else:
            raise ConversionError(f"unsupported TF op {op} ({out})")

    def _check_nhwc_valid(self, node: dict[str, Any], attr: dict[str, Any]) -> None:
        if _text(attr, "data_format") != "NHWC" or _text(attr, "padding") != "VALID":
            raise ConversionError(f"{node['name']}: only NHWC with VALID padding is supported")

    def _conv(self, node: dict[str, Any], attr: dict[str, Any]) -> None:
        self._check_nhwc_valid(node, attr)
        kernel = self.const(node["input"][1]).astype(np.float32)  # [kh, kw, in, out]
        weight = self.init(f"{node['name']}/W", np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        self.nhwc_op(
            node, "Conv", [weight], kernel_shape=list(kernel.shape[:2]),
            strides=_ints(attr, "strides")[1:3], dilations=_ints(attr, "dilations")[1:3],
        )

    def _add(self, node: dict[str, Any]) -> None:
        a, b = (_ref(i) for i in node["input"])
        if a in self.consts:
            a, b = b, a
        conv = self.conv_of.get(a)
        bias = self.consts.get(b)
        # Conv2D followed by a per-channel constant Add is a biased convolution.
        if conv is not None and bias is not None and bias.ndim == 1 and self.uses[a] == 1:
            conv.input.append(self.init(f"{a}/B", bias.astype(np.float32)))
            self.alias[node["name"]] = self.name(a)
            return
        args = [self.name(a) if a not in self.consts else self.init(a, self.consts[a]),
                self.name(b) if b not in self.consts else self.init(b, self.consts[b])]
        self.add("Add", args, node["name"])

    def _resize(self, node: dict[str, Any], attr: dict[str, Any]) -> None:
        if attr.get("align_corners", {}).get("b"):
            raise ConversionError(f"{node['name']}: align_corners is not supported")
        mode = "half_pixel" if attr.get("half_pixel_centers", {}).get("b") else "asymmetric"
        sizes = self.const(node["input"][1]).astype(np.int64)
        self.nhwc_op(
            node, "Resize", ["", "", self.init(f"{node['name']}/sizes", sizes)], axes=[2, 3],
            mode="linear", coordinate_transformation_mode=mode,
        )


def _sparse_to_dense(args: list[np.ndarray]) -> np.ndarray:
    indices, shape, values, default = args
    dense = np.full(shape.astype(np.int64), default, dtype=np.asarray(default).dtype)
    rows: np.ndarray | list[np.ndarray] = (
        indices.reshape(indices.shape[0], -1) if indices.size else []
    )
    for k, idx in enumerate(rows):
        dense[tuple(idx)] = values[k] if values.ndim else values
    return dense


_FOLD = {
    "SparseToDense": _sparse_to_dense,
    "Add": lambda a: a[0] + a[1],
    "AddV2": lambda a: a[0] + a[1],
    "Identity": lambda a: a[0],
}


def _topological(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {n["name"]: n for n in nodes}
    done: set[str] = set()
    order: list[dict[str, Any]] = []
    for root in nodes:
        stack = [(root["name"], False)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if expanded:
                done.add(name)
                order.append(by_name[name])
                continue
            stack.append((name, True))
            for dep in by_name[name].get("input", []):
                dep = _ref(dep).split(":")[0]
                if dep not in done:
                    stack.append((dep, False))
    return order


def convert(json_path: Path, input_name: str = "images") -> onnx.ModelProto:
    """Convert a TF.js graph model (json + weight shards beside it) to an ONNX model with a
    dynamic batch and spatial size; outputs keep the signature's order and names.
    """
    spec = json.loads(Path(json_path).read_text())
    if spec.get("format") != "graph-model":
        raise ConversionError(f"{json_path}: not a TF.js graph model")
    consts = read_weights(spec["weightsManifest"], Path(json_path).parent)
    nodes = spec["modelTopology"]["node"]
    builder = _Builder(nodes, consts)
    placeholder = next(n for n in nodes if n["op"] == "Placeholder")
    builder.alias[placeholder["name"]] = input_name
    for node in _topological(nodes):
        builder.convert(node)
    dims = [int(d["size"]) for d in placeholder["attr"]["shape"]["shape"]["dim"]]
    graph_in = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, dims)
    outputs = sorted(spec["signature"]["outputs"], key=_output_key)
    graph_out = []
    for key in outputs:
        src = builder.name(key)
        name = key.split(":")[0].lower()
        builder.add("Identity", [src], name)
        graph_out.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    inits = [numpy_helper.from_array(v, k) for k, v in builder.inits.items()]
    graph = helper.make_graph(builder.nodes, "tfjs", [graph_in], graph_out, inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pantau.models.tfjs"
    )
    return finalize(model)


def _output_key(name: str) -> tuple[int, str]:
    base = name.split(":")[0]
    suffix = base.rsplit("_", 1)[-1]
    return (int(suffix) if suffix.isdigit() else 0, base)
