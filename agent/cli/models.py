"""`pantau-agent models`: build, install, import, verify and benchmark detection models in the
local model store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from pantau.agent.vision.detect.decoders import FAMILIES, DecodeError
from pantau.agent.vision.detect.store import ModelManifest, ModelStore, StoreError
from pantau.agent.wire.console import fail

models_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

STORE_HELP = "Model store folder (default $PANTAU_MODEL_DIR, else models/ under the state root)."
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "nanodet": {"channel_order": "bgr", "mean": (103.53, 116.28, 123.675),
                "std": (57.375, 57.12, 58.395), "pad_value": 0.0},
    "darknet-yolo": {"channel_order": "rgb", "std": (255.0, 255.0, 255.0), "pad_value": 127.5},
    "yolov5": {"channel_order": "rgb", "std": (255.0, 255.0, 255.0)},
    "yolov8": {"channel_order": "rgb", "std": (255.0, 255.0, 255.0)},
    "yolox": {"channel_order": "bgr"},
    "end2end": {"channel_order": "rgb", "std": (255.0, 255.0, 255.0)},
}


def _errors_to_exit(fn: Callable[..., None]) -> Callable[..., None]:
    """Known failures become one stderr line and exit code 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from pantau.agent.vision.detect.runtime import DetectorError

        known: tuple[type[BaseException], ...] = (StoreError, DetectorError, DecodeError,
                                                  FileNotFoundError)
        try:
            from pantau.models.build import BuildError
            from pantau.models.fetch import FetchError

            known = (*known, BuildError, FetchError)
        except ImportError:  # an edge box without the build extra
            pass
        try:
            fn(*args, **kwargs)
        except known as exc:
            fail(str(exc))

    return wrapper


def _store(root: Path | None) -> ModelStore:
    return ModelStore(root)


def _builder() -> Any:
    try:
        from pantau.models import build
    except ImportError as exc:
        fail(f"building models needs the 'models' extra (pip install 'pantau[models]'): {exc}")
    return build


@models_app.command("list")
@_errors_to_exit
def list_models(store: Path | None = typer.Option(None, help=STORE_HELP)) -> None:
    """Models in the store, and built-in recipes not yet built."""
    s = _store(store)
    for name in s.names():
        m = s.manifest(name)
        int8 = "no int8"
        if m.int8:
            int8 = "int8 accepted" if m.int8_accepted else "int8 not accepted"
        ok = "ok" if s.intact(name) else "FILES ALTERED"
        typer.echo(f"{name:<16} {m.family:<13} {m.input_size[0]}x{m.input_size[1]}  fp32, {int8}"
                   f"  [{ok}]")
    try:
        from pantau.models.recipes import RECIPES
    except ImportError:
        return
    for name, r in RECIPES.items():
        if name not in s.names():
            typer.echo(f"{name:<16} (not built; `models build {name}`, needs {r.source.needs})")


@models_app.command()
@_errors_to_exit
def build(
    name: str = typer.Argument(..., help="Built-in recipe: nanodet-m, yolov3-tiny or yolov4-tiny."),
    calibrate: Path | None = typer.Option(
        None, help="Images folder or video for INT8 calibration (default coco-tiny train2017)."
    ),
    int8: bool = typer.Option(True, help="Also build the INT8 model."),
    force: bool = typer.Option(False, help="Rebuild even when the store is up to date."),
    pack: Path | None = typer.Option(None, help="Also write a .tar.gz for `models install`."),
    store: Path | None = typer.Option(None, help=STORE_HELP),
) -> None:
    """Fetch a recipe's source (sha256-checked), convert, quantize and gate it."""
    b = _builder()
    s = _store(store)
    b.build(name, s, calibrate=calibrate, int8=int8, force=force, say=typer.echo)
    if pack:
        typer.echo(f"packed {s.pack(name, pack)}")


@models_app.command()
@_errors_to_exit
def install(
    file: Path = typer.Argument(..., help="A .tar.gz made by `models build --pack`."),
    store: Path | None = typer.Option(None, help=STORE_HELP),
) -> None:
    """Put a built model into this box's store (no registry needed)."""
    m = _store(store).install(file)
    typer.echo(f"installed {m.name} ({m.family}) into {_store(store).folder(m.name)}")


@models_app.command("import")
@_errors_to_exit
def import_model(
    file: Path = typer.Argument(..., help="Your ONNX model."),
    family: str = typer.Option(..., help=f"Output layout: {', '.join(FAMILIES)}."),
    names: Path = typer.Option(..., help="Text file of class names, one a line."),
    name: str | None = typer.Option(None, help="Store name (default the file's stem)."),
    input_size: int | None = typer.Option(None, help="Input side when the model's is dynamic."),
    resize: str = typer.Option("letterbox", help="letterbox or stretch."),
    reg_max: int = typer.Option(7, help="nanodet: distribution bins minus one (NanoDet-Plus 7)."),
    anchors: str = typer.Option(
        "", help="darknet-yolo: 'stride:w,h,w,h,...;stride:...' in input pixels."
    ),
    store: Path | None = typer.Option(None, help=STORE_HELP),
) -> None:
    """Register a user's own ONNX detector (FP32) after a test inference through its decoder."""
    import shutil

    import numpy as np
    from pantau.agent.config.detector import DetectorSettings
    from pantau.agent.vision.detect.runtime import Detector

    if family not in FAMILIES:
        fail(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    for f in (file, names):
        if not f.is_file():
            fail(f"{f}: no such file")
    if resize not in ("letterbox", "stretch"):
        fail(f"--resize {resize!r}: expected letterbox or stretch")
    anchor_map = _parse_anchors(anchors)
    if family == "darknet-yolo" and not anchor_map:
        fail("darknet-yolo needs --anchors, e.g. '16:10,14,23,27,37,58;32:81,82,135,169,344,319'")
    classes = [n.strip() for n in names.read_text().splitlines() if n.strip()]
    name = name or file.stem
    s = _store(store)
    s.folder(name)  # refuses a name that is not one safe path segment, before any work
    shape = _input_shape(file)
    dynamic = not all(isinstance(d, int) for d in shape[2:])
    if dynamic and input_size is None:
        fail(f"{file}: input size is dynamic; give --input-size")
    size = (input_size, input_size) if input_size else (int(shape[2]), int(shape[3]))
    with s.staging() as staged:  # into the store only once the test inference passed
        folder = staged.folder(name)
        folder.mkdir()
        shutil.copyfile(file, folder / f"{name}.fp32.onnx")
        manifest = ModelManifest(
            name=name, family=family, input_size=size, dynamic_size=dynamic, resize=resize,
            class_names=classes, fp32=staged.entry(name, f"{name}.fp32.onnx"),
            reg_max=reg_max, anchors=anchor_map, center_offset=0.0 if reg_max == 7 else 0.5,
            source={"imported_from": str(file)}, **_FAMILY_DEFAULTS[family],
        )
        staged.save(manifest)
        settings = DetectorSettings(model=name, precision="fp32", classes=[])
        Detector.from_store(settings, staged).detect([np.zeros((size[0], size[1], 3), np.uint8)])
    typer.echo(f"imported {name}: {family}, {len(classes)} classes, input {size[0]}x{size[1]}")


def _parse_anchors(text: str) -> dict[int, list[tuple[float, float]]]:
    result: dict[int, list[tuple[float, float]]] = {}
    try:
        for part in filter(None, (p.strip() for p in text.split(";"))):
            stride, values = part.split(":")
            flat = [float(v) for v in values.split(",")]
            result[int(stride)] = list(zip(flat[0::2], flat[1::2], strict=True))
    except ValueError:
        fail(f"--anchors {text!r}: expected 'stride:w,h,w,h;stride:...'")
    return result


def _input_shape(file: Path) -> list[Any]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        fail(f"{file}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})")
    return list(session.get_inputs()[0].shape)


@models_app.command()
@_errors_to_exit
def verify(
    name: str = typer.Argument(..., help="Model in the store."),
    coco: Path = typer.Option(..., help="COCO-format annotations (json)."),
    images: Path = typer.Option(..., help="Folder of the annotated images."),
    force: bool = typer.Option(False, help="Accept INT8 even if it fails the gate."),
    input_size: int | None = typer.Option(None, help="Input side to evaluate at."),
    store: Path | None = typer.Option(None, help=STORE_HELP),
) -> None:
    """COCO AP (person, vehicles) of FP32 and INT8; INT8 losing > 1.5 person AP is refused."""
    for path in (coco, images):
        if not path.exists():
            fail(f"{path}: no such file or folder")
    b = _builder()
    m = b.verify(_store(store), name, coco, images, force=force, input_size=input_size,
                 say=typer.echo)
    typer.echo(json.dumps({k: v for k, v in m.metrics.items()}, indent=1))


@models_app.command()
@_errors_to_exit
def bench(
    name: str = typer.Argument("nanodet-m", help="Model in the store."),
    batch: str = typer.Option("1,4", help="Batch sizes, comma-separated."),
    fps: float = typer.Option(5.0, help="Analysis frames per second per camera."),
    runs: int = typer.Option(20, help="Timed runs per batch size."),
    threads: int = typer.Option(0, help="intra-op threads (0 = all cores)."),
    input_size: int | None = typer.Option(None, help="Input side (default the model's)."),
    store: Path | None = typer.Option(None, help=STORE_HELP),
) -> None:
    """FP32 and INT8 latency and throughput per batch size, and cameras served at --fps."""
    from pantau.models import bench as b

    try:
        sizes = [int(v) for v in batch.split(",") if v.strip()]
    except ValueError:
        fail(f"--batch {batch!r}: expected integers like 1,4")
    timings = b.run(name, _store(store), sizes, runs=runs, threads=threads, input_size=input_size)
    for line in b.report(timings, fps):
        typer.echo(line)
