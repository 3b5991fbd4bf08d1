"""The local model store: one folder per model with its ONNX files and a manifest.json that says how
to feed and decode it. Default root `$PANTAU_MODEL_DIR`, else `models/` under Pantau's state root
(`pantau.agent.wire.paths`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pantau.agent.vision.detect.decoders import FAMILIES, DecoderSpec
from pantau.agent.wire.errors import PantauError
from pantau.agent.wire.paths import model_dir
from pantau.agent.wire.protocol import ProtocolError, check_segment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST = "manifest.json"


class StoreError(PantauError):
    """A model that is missing, incomplete or altered."""


class ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="File name inside the model's folder.")
    sha256: str = Field(description="sha256 of the file, checked on load.")


class ModelManifest(BaseModel):
    """How to feed a model and read its outputs."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Store name, e.g. nanodet-m.")
    family: str = Field(description=f"Output layout, one of: {', '.join(FAMILIES)}.")
    input_size: tuple[int, int] = Field(description="Default input height and width in pixels.")
    dynamic_size: bool = Field(False, description="Whether other input sizes may be used.")
    size_multiple: int = Field(32, description="Input sizes must be multiples of this.")
    resize: Literal["letterbox", "stretch"] = Field("letterbox", description="Preprocessing.")
    pad_value: float = Field(114.0, description="Pixel value of letterbox borders.")
    channel_order: Literal["bgr", "rgb"] = Field("bgr", description="Channel order of the input.")
    mean: tuple[float, float, float] = Field((0.0, 0.0, 0.0), description="Per-channel mean.")
    std: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="Per-channel divisor.")
    class_names: list[str] = Field(description="Class names by output index.")
    strides: tuple[int, ...] = Field((8, 16, 32), description="Head strides (grid families).")
    reg_max: int = Field(10, description="NanoDet: distribution bins minus one.")
    center_offset: float = Field(0.5, description="NanoDet: cell-centre offset in strides.")
    anchors: dict[int, list[tuple[float, float]]] = Field(
        default_factory=dict, description="Darknet: anchors (w, h) in input pixels by stride."
    )
    scale_xy: float = Field(1.0, description="Darknet: scale_x_y of the yolo layers.")
    fp32: ModelFile = Field(description="The float model.")
    int8: ModelFile | None = Field(None, description="The INT8 (QDQ) model, if built.")
    int8_accepted: bool = Field(False, description="INT8 passed the accuracy gate (or forced).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Measured AP, latency.")
    source: dict[str, str] = Field(default_factory=dict, description="Provenance and licence.")

    def decoder_spec(self) -> DecoderSpec:
        return DecoderSpec(
            family=self.family,
            num_classes=len(self.class_names),
            strides=tuple(self.strides),
            reg_max=self.reg_max,
            center_offset=self.center_offset,
            anchors={int(s): tuple((a[0], a[1]) for a in v) for s, v in self.anchors.items()},
            scale_xy=self.scale_xy,
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else model_dir()

    def folder(self, name: str) -> Path:
        """The model's folder; StoreError for a name that is not one safe path segment."""
        try:
            check_segment(name, "model name")
        except ProtocolError as exc:
            raise StoreError(exc.reason) from None
        return self.root / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{MANIFEST}"))

    def manifest(self, name: str) -> ModelManifest:
        path = self.folder(name) / MANIFEST
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise StoreError(f"model {name!r} is not in the store {self.root} (have: {known})")
        try:
            return ModelManifest.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise StoreError(f"{path}: invalid manifest: {exc.errors()[0]['msg']}") from None

    def file(self, manifest: ModelManifest, which: Literal["fp32", "int8"]) -> Path:
        """Path of a model file after checking its sha256 against the manifest."""
        entry = manifest.fp32 if which == "fp32" else manifest.int8
        if entry is None:
            raise StoreError(f"model {manifest.name!r} has no {which} file")
        path = self.folder(manifest.name) / entry.path
        if not path.is_file():
            raise StoreError(f"{path} is missing")
        if sha256_file(path) != entry.sha256:
            raise StoreError(f"{path}: sha256 does not match the manifest")
        return path

    def intact(self, name: str) -> bool:
        """The manifest exists and every file it names has the recorded sha256."""
        try:
            manifest = self.manifest(name)
            self.file(manifest, "fp32")
            if manifest.int8:
                self.file(manifest, "int8")
        except StoreError:
            return False
        return True

    def save(self, manifest: ModelManifest) -> Path:
        path = self.folder(manifest.name) / MANIFEST
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
        tmp.replace(path)
        return path

    def entry(self, name: str, file_name: str) -> ModelFile:
        return ModelFile(path=file_name, sha256=sha256_file(self.folder(name) / file_name))

    def pack(self, name: str, dest: Path) -> Path:
        """A .tar.gz of the model's folder, for `models install` on a box without a registry."""
        manifest = self.manifest(name)
        files = [MANIFEST, manifest.fp32.path] + ([manifest.int8.path] if manifest.int8 else [])
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(dest, "w:gz") as tar:
            for f in files:
                tar.add(self.folder(name) / f, arcname=f"{name}/{f}")
        return dest

    @contextmanager
    def staging(self) -> Iterator[ModelStore]:
        """A private store in a hidden folder of this one. The models written there move into
        this store (replacing ones of the same name) when the block ends without an error, and
        are removed otherwise: a failed import or install leaves nothing behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            staged = ModelStore(tmp)
            yield staged
            for name in staged.names():
                target = self.folder(name)
                if target.exists():
                    target.rename(tmp / f".replaced-{name}")  # removed with the staging folder
                staged.folder(name).rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def install(self, archive: Path) -> ModelManifest:
        """Unpack an archive made by `pack`, check it, and move it into the store."""
        if not archive.is_file():
            raise StoreError(f"{archive}: no such file")
        with self.staging() as staged:
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(staged.root, filter="data")
            except (tarfile.TarError, EOFError, zlib.error):
                raise StoreError(
                    f"{archive}: not a model archive (a .tar.gz made by `models build --pack`)"
                ) from None
            found = list(staged.root.glob(f"*/{MANIFEST}"))
            if len(found) != 1:
                raise StoreError(f"{archive}: expected one <name>/{MANIFEST} inside")
            name = found[0].parent.name
            manifest = staged.manifest(name)
            if manifest.name != name or not staged.intact(name):
                raise StoreError(f"{archive}: files do not match the manifest's sha256")
        return manifest
