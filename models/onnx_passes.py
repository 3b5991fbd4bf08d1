"""Clean-up passes for converted graphs: drop identities, cancel transpose pairs, fold zero pads
into convolutions, remove dead nodes, and free the batch and spatial input dimensions.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _inits(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _rename_input(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new


def drop_identities(model: onnx.ModelProto) -> None:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    uses = Counter(i for n in graph.node for i in n.input)
    producer = {o: n for n in graph.node for o in n.output}
    for node in list(graph.node):
        if node.op_type != "Identity":
            continue
        src, dst = node.input[0], node.output[0]
        if dst not in outputs:
            _rename_input(model, dst, src)
        elif src in producer and uses[src] == 1 and src not in outputs:
            out = producer[src].output
            out[list(out).index(src)] = dst
        else:
            continue
        graph.node.remove(node)


def cancel_transposes(model: onnx.ModelProto) -> None:
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "Transpose":
            continue
        first = producer.get(node.input[0])
        if first is None or first.op_type != "Transpose":
            continue
        p1 = np.array(helper.get_attribute_value(first.attribute[0]))
        p2 = np.array(helper.get_attribute_value(node.attribute[0]))
        if np.array_equal(p1[p2], np.arange(len(p1))):
            _rename_input(model, node.output[0], first.input[0])


def fold_pads(model: onnx.ModelProto) -> None:
    """Pad(0) -> Conv and Pad(-inf) -> MaxPool become the op's own `pads`: one op less, and no
    -inf tensor for the INT8 calibrator to choke on.
    """
    inits = _inits(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    fill = {"Conv": 0.0, "MaxPool": -np.inf}
    for node in model.graph.node:
        pad = producer.get(node.input[0]) if node.op_type in fill else None
        if pad is None or pad.op_type != "Pad" or pad.input[1] not in inits:
            continue
        value = 0.0
        if len(pad.input) > 2 and pad.input[2]:
            if pad.input[2] not in inits:
                continue
            value = float(numpy_helper.to_array(inits[pad.input[2]]))
        if value != fill[node.op_type]:
            continue
        pads = numpy_helper.to_array(inits[pad.input[1]]).astype(int)
        rank = len(pads) // 2
        begins, ends = pads[:rank], pads[rank:]
        if rank != 4 or begins[:2].any() or ends[:2].any():
            continue
        old = [a for a in node.attribute if a.name == "pads"]
        extra = helper.get_attribute_value(old[0]) if old else [0, 0, 0, 0]
        spatial = [int(v) for v in (*begins[2:], *ends[2:])]
        for a in old:
            node.attribute.remove(a)
        node.attribute.append(helper.make_attribute("pads", [a + b for a, b in zip(
            spatial, extra, strict=True)]))
        node.input[0] = pad.input[0]


def remove_dead(model: onnx.ModelProto) -> None:
    graph = model.graph
    live = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in live for o in node.output):
            keep.append(node)
            live.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    unused = [t for t in graph.initializer if t.name not in live]
    for t in unused:
        graph.initializer.remove(t)


def make_dynamic(model: onnx.ModelProto) -> None:
    """Resize by scale instead of fixed sizes and free N, H, W of the input, so one model
    serves any batch and any input size the strides divide.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*inferred.graph.value_info, *inferred.graph.input)
    }
    inits = _inits(model)
    for node in model.graph.node:
        if node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
            sizes = numpy_helper.to_array(inits[node.input[3]]).astype(np.float32)
            src = shapes[node.input[0]]
            axes = [a for a in node.attribute if a.name == "axes"]
            dims = helper.get_attribute_value(axes[0]) if axes else range(len(src))
            # Full-rank scales, no `axes`: ORT's NHWC layout pass mis-handles partial ones.
            scales = np.ones(len(src), np.float32)
            for d, v in zip(dims, sizes, strict=True):
                scales[d] = v / src[d]
            for a in axes:
                node.attribute.remove(a)
            name = node.input[3].replace("/sizes", "/scales")
            model.graph.initializer.append(numpy_helper.from_array(scales, name))
            node.input[2], node.input[3] = name, ""
            while node.input and not node.input[-1]:
                del node.input[-1]
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape[0] == 1:  # the batch: copy it from the input
                shape[0] = 0
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("batch", None, "height", "width"), strict=False):
        if name:
            dim.dim_param = name
    static = {o.name: o for o in inferred.graph.output}
    for out in model.graph.output:
        rank = len(static[out.name].type.tensor_type.shape.dim)
        dims = [f"{out.name}_{k}" for k in range(rank)]
        shape = helper.make_tensor_type_proto(1, dims).tensor_type.shape
        out.type.tensor_type.shape.CopyFrom(shape)
    remove_dead(model)


def finalize(model: onnx.ModelProto, dynamic: bool = True) -> onnx.ModelProto:
    drop_identities(model)
    cancel_transposes(model)
    remove_dead(model)
    fold_pads(model)
    remove_dead(model)
    if dynamic:
        make_dynamic(model)
    onnx.checker.check_model(model)
    return model
