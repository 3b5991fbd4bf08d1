"""The model store through `models import`: a failed import leaves nothing behind (nor harms the
model it would have replaced), and a model name must be one safe path segment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pantau.agent.cli.main import app
from pantau.agent.vision.detect.store import ModelStore, StoreError
from typer.testing import CliRunner

runner = CliRunner()


def _import(tmp_path: Path, const_model, rows: int, *extra: str) -> tuple[int, str]:
    """Import a yolov8-layout model with `rows` output rows (4 box + one per class) for the two
    classes of names.txt: 6 rows pass the test inference, any other number fails it."""
    model = tmp_path / "m.onnx"
    onnx.save(const_model({"output0": np.zeros((rows, 5))}, 64), str(model))
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
            *extra,
        ],
    )
    return result.exit_code, result.output


def test_a_failed_import_leaves_nothing_behind(tmp_path: Path, const_model) -> None:
    code, output = _import(tmp_path, const_model, rows=9)
    assert code == 2, output
    assert "Traceback" not in output
    assert list((tmp_path / "s").iterdir()) == []


def test_a_failed_import_keeps_the_model_it_would_replace(tmp_path: Path, const_model) -> None:
    assert _import(tmp_path, const_model, rows=6)[0] == 0
    store = ModelStore(tmp_path / "s")
    before = store.manifest("m")
    code, output = _import(tmp_path, const_model, rows=9)
    assert code == 2, output
    assert store.names() == ["m"] and store.intact("m") and store.manifest("m") == before
    assert [p.name for p in store.root.iterdir()] == ["m"]


@pytest.mark.parametrize("name", ["../x", "ABSOLUTE", ".hidden", "a/b", "has space"])
def test_a_name_that_is_not_one_path_segment_is_refused(
    tmp_path: Path, const_model, name: str
) -> None:
    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    code, output = _import(tmp_path, const_model, 6, "--name", name)
    assert code == 2, output
    assert "model name" in output and "Traceback" not in output
    assert not (tmp_path / "x").exists() and not (tmp_path / "elsewhere").exists()
    assert not (tmp_path / "s").exists() or list((tmp_path / "s").iterdir()) == []


def test_the_store_refuses_such_names_everywhere(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for name in ("..", "../x", "/etc"):
        with pytest.raises(StoreError, match="model name"):
            store.manifest(name)


@pytest.mark.parametrize("content", [b"not an archive", b"\x1f\x8b\x08\x00garbled gzip"])
def test_installing_a_file_that_is_not_an_archive_is_a_clear_error(
    tmp_path: Path, content: bytes
) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(content)
    result = runner.invoke(app, ["models", "install", str(archive), "--store", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert "not a model archive" in result.output and "Traceback" not in result.output
    store = tmp_path / "s"
    assert not store.exists() or not any(store.iterdir())  # nothing half-installed
