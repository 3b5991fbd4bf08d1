"""The built wheel installs into a fresh virtualenv beside a distribution that owns a top-level
`models` package, and both command lines run from it."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=cwd
    )
    assert res.returncode == 0, f"{args}: {res.stdout}\n{res.stderr}"
    return res


def other_models_dist(tmp: Path) -> Path:
    """A distribution named `other-models` whose import package is a bare `models`."""
    root = tmp / "other-models"
    (root / "models").mkdir(parents=True)
    (root / "models" / "__init__.py").write_text('OWNER = "other-models"\n')
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "other-models"\nversion = "1.0"\n'
        '[tool.setuptools]\npackages = ["models"]\n'
    )
    return root


def test_wheel_installs_beside_a_top_level_models_package(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO)
    (wheel,) = wheels.glob("pantau-*.whl")
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    # The agent's extra, as a technician installs it on a box: the vision stack comes along.
    run(py, "-m", "pip", "install", "-q", f"{wheel}[agent]", other_models_dist(tmp_path))

    # Run from an empty folder, so nothing resolves through the checkout.
    here = tmp_path / "elsewhere"
    here.mkdir()
    owner = run(py, "-c", "import models, pantau.models; print(models.OWNER)", cwd=here)
    assert owner.stdout.strip() == "other-models"
    assert "Usage: pantau-agent" in run(env / "bin" / "pantau-agent", "--help", cwd=here).stdout
    assert "Usage: pantau-central" in run(env / "bin" / "pantau-central", "--help", cwd=here).stdout
    schema = run(env / "bin" / "pantau-agent", "protocol", "schema", cwd=here).stdout
    assert '"counts"' in schema
    status = subprocess.run(
        [env / "bin" / "pantau-central", "status", "-c", here / "missing.yaml"],
        capture_output=True,
        text=True,
        cwd=here,
    )
    assert status.returncode == 2 and "missing.yaml" in status.stderr
