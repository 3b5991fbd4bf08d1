"""`models build`: fetch a recipe's source, convert it to ONNX, quantize it to INT8 and run the
accuracy gate when the data is there, then record it all in the store's manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import onnx
from pantau.agent.vision.detect.runtime import Detector, DetectorSettings
from pantau.agent.vision.detect.store import ModelManifest, ModelStore
from pantau.agent.wire.errors import PantauError
from pantau.agent.wire.paths import research_data
from pantau.models.coco import COCO80
from pantau.models.fetch import fetch
from pantau.models.recipes import RECIPES, Recipe

log = logging.getLogger(__name__)


class BuildError(PantauError):
    """A model that cannot be built as asked."""


def default_calibration() -> Path | None:
    path = research_data() / "coco-tiny" / "train2017"
    return path if path.is_dir() else None


def default_gate_set() -> tuple[Path, Path] | None:
    root = research_data() / "coco-tiny"
    ann, images = root / "annotations" / "instances_val2017.json", root / "val2017"
    return (ann, images) if ann.is_file() and images.is_dir() else None


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise BuildError(f"unknown model {name!r}; built-in recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def _up_to_date(store: ModelStore, r: Recipe, want_int8: bool) -> bool:
    if not store.intact(r.name):
        return False
    m = store.manifest(r.name)
    same = m.source.get("recipe_version") == r.version and m.source.get("sha256") == r.source.sha256
    return same and (m.int8 is not None or not want_int8)


def build(
    name: str,
    store: ModelStore,
    calibrate: Path | None = None,
    int8: bool = True,
    force: bool = False,
    say: Callable[[str], None] = log.info,
) -> ModelManifest:
    r = recipe(name)
    calibrate = calibrate or (default_calibration() if int8 else None)
    if calibrate is not None and not calibrate.exists():
        raise BuildError(f"calibration source {calibrate} does not exist")
    if int8 and calibrate is None:
        say(f"warning: no calibration frames ({research_data()}/coco-tiny/train2017 not found "
            "(set PANTAU_TEST_DATA), no --calibrate): building FP32 only")
    want_int8 = int8 and calibrate is not None
    if not force and _up_to_date(store, r, want_int8):
        say(f"{name}: already in {store.folder(name)} with matching sha256s; nothing to do")
        return store.manifest(name)
    files = fetch(r.source)
    model, extra = r.convert(files)
    folder = store.folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    fp32_path = folder / f"{name}.fp32.onnx"
    onnx.save(model, str(fp32_path))
    settings = {**r.manifest, **extra}
    manifest = ModelManifest(
        name=name, class_names=list(COCO80), fp32=store.entry(name, fp32_path.name),
        source={
            "recipe_version": r.version, "package": f"{r.source.package}@{r.source.version}",
            "registry": r.source.kind, "archive": r.source.archive, "sha256": r.source.sha256,
            "licence": r.licence,
        },
        **settings,
    )
    (folder / f"{name}.int8.onnx").unlink(missing_ok=True)
    store.save(manifest)
    say(f"{name}: FP32 model written to {fp32_path}")
    if want_int8 and calibrate is not None:
        manifest = quantize_into_store(store, manifest, calibrate, say, r.keep_float)
    return manifest


def quantize_into_store(
    store: ModelStore,
    manifest: ModelManifest,
    calibrate: Path,
    say: Callable[[str], None],
    keep_float: tuple[str, ...] = (),
) -> ModelManifest:
    from pantau.models.quantize import quantize

    int8_path = store.folder(manifest.name) / f"{manifest.name}.int8.onnx"
    fp32_path = store.file(manifest, "fp32")
    used = quantize(fp32_path, int8_path, manifest, calibrate, keep_float=keep_float)
    manifest = manifest.model_copy(update={
        "int8": store.entry(manifest.name, int8_path.name), "int8_accepted": False,
    })
    manifest.source["calibration"] = f"{calibrate} ({used} frames)"
    store.save(manifest)
    say(f"{manifest.name}: INT8 model written to {int8_path} (calibrated on {used} frames)")
    gate_set = default_gate_set()
    if gate_set is None:
        say(f"warning: {research_data()}/coco-tiny val2017 not found: INT8 not gated; run "
            "`models verify` before use")
        return manifest
    return verify(store, manifest.name, *gate_set, force=False, say=say)


def verify(
    store: ModelStore,
    name: str,
    annotations: Path,
    images: Path,
    force: bool = False,
    input_size: int | None = None,
    say: Callable[[str], None] = log.info,
) -> ModelManifest:
    """FP32 vs INT8 AP on a COCO set; accepts INT8 when it passes the gate (or `force`).

    At an `input_size` other than the model's own, the APs are recorded under a key tagged
    with the size (`ngsim@640.vehicle.ap.int8`) and the gate is left as it is: it judges the
    model at the size it is built and calibrated for, and one flag cannot hold a verdict per
    size."""
    from pantau.models.evaluate import evaluate, gate

    manifest = store.manifest(name)
    if manifest.int8 is None:
        raise BuildError(f"model {name!r} has no INT8 file to verify; build it with calibration")
    scores = {}
    for precision in ("fp32", "int8"):
        settings = DetectorSettings(model=name, precision=precision, confidence=0.05,
                                    max_detections=100, classes=[])
        detector = Detector.from_store(settings, store)
        scores[precision] = evaluate(detector, annotations, images, input_size)
        parts = ", ".join(f"{g} AP {v:.1f} (AP50 {scores[precision].ap50[g]:.1f})"
                          for g, v in scores[precision].ap.items())
        say(f"{name} {precision}: {parts} on {scores[precision].images} images")
    ok, drop = gate(scores["fp32"], scores["int8"])
    metrics = dict(manifest.metrics)
    tag = annotations.parent.parent.name if annotations.parent.name == "annotations" else (
        annotations.parent.name)
    own_size = input_size is None or (input_size, input_size) == tuple(manifest.input_size)
    if not own_size:
        tag = f"{tag}@{input_size}"
    for precision, s in scores.items():
        for group, value in s.ap.items():
            metrics[f"{tag}.{group}.ap.{precision}"] = round(value, 2)
    if not own_size:
        accepted = manifest.int8_accepted
        say(f"{name}: evaluated at {input_size}, not the model's own "
            f"{manifest.input_size[0]}x{manifest.input_size[1]}: gate unchanged")
    elif "person" in scores["fp32"].ap:
        accepted = ok or force
        verdict = "accepted" if ok else ("accepted by --force" if force else "REFUSED")
        say(f"{name}: INT8 person AP drop {drop:.2f} (limit 1.5): {verdict}")
    else:
        accepted = manifest.int8_accepted
        say(f"{name}: no person labels in {annotations}: gate unchanged")
    manifest = manifest.model_copy(update={"int8_accepted": accepted, "metrics": metrics})
    store.save(manifest)
    return manifest
