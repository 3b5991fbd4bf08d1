"""Shared fixtures: the evaluation data, the built model store, and tiny ONNX models per family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pantau.agent.vision.detect.store import ModelStore
from pantau.agent.wire.paths import research_data


@pytest.fixture(scope="session")
def data() -> Path:
    root = research_data()
    if not (root / "tud").is_dir():
        pytest.skip(f"test data not found at {root} (set PANTAU_TEST_DATA)")
    return root


@pytest.fixture(scope="session")
def built_store() -> ModelStore:
    store = ModelStore()  # the default store, as `pantau-agent models build` fills it
    if not store.intact("nanodet-m"):
        pytest.skip(
            f"nanodet-m is not built in {store.root}: run "
            "`.venv/bin/pantau-agent models build nanodet-m` first"
        )
    return store


def constant_model(
    outputs: dict[str, np.ndarray], size: int = 64, batch: int | str = "batch"
) -> onnx.ModelProto:
    """A model whose outputs are fixed tensors (per frame, tiled over the batch): decoders and
    the runtime see exactly the layout a real export of that family produces.
    """
    nodes, inits, outs = [], [], []
    nodes.append(helper.make_node("Shape", ["images"], ["shape"], start=0, end=1))
    for name, value in outputs.items():
        value = value.astype(np.float32)
        inits.append(numpy_helper.from_array(value[None], f"{name}_c"))
        reps = np.ones(value.ndim + 1, np.int64)
        inits.append(numpy_helper.from_array(reps[1:], f"{name}_rest"))
        nodes.append(
            helper.make_node("Concat", ["shape", f"{name}_rest"], [f"{name}_reps"], axis=0)
        )
        nodes.append(helper.make_node("Tile", [f"{name}_c", f"{name}_reps"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "const",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        outs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def const_model():
    return constant_model
