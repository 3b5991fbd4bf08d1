"""The import contracts of the layout: central sees only the agent's wire package, the wire
package carries no vision stack, every import names the installed `pantau.*` packages, and
every package folder is one that the distribution installs."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"agent": "pantau.agent", "central": "pantau.central", "models": "pantau.models"}
# What the wire package may import besides the standard library and itself: the packages
# central installs without the `agent` extra.
WIRE_THIRD_PARTY = {"pydantic", "pydantic_settings", "paho", "rich", "yaml", "typer"}
# numpy is left out of the run-time check only because sqlite-utils imports it when present.
VISION_STACK = ("cv2", "onnxruntime", "onnx", "scipy")


def module_name(path: Path) -> str:
    """The import name of a source file (tests and packaging keep their folder names)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([FOLDERS.get(parts[0], parts[0]), *parts[1:]])


def sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, lazy ones included."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield node.lineno, ".".join([*base, node.module or ""]).rstrip(".")
            else:
                yield node.lineno, node.module or ""


def violations(folder: str, allowed: Callable[[str], bool]) -> list[str]:
    found = []
    for path in sources(folder):
        for line, name in imports(path):
            if not allowed(name):
                found.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    return found


@pytest.mark.parametrize("folder", ["agent", "central", "models", "tests", "packaging"])
def test_imports_name_the_installed_packages(folder: str) -> None:
    """`import agent` would find the repository folder in a checkout and another
    distribution's `agent` (or `models`) anywhere else."""
    bad = violations(folder, lambda n: n.split(".")[0] not in FOLDERS)
    assert bad == [], "\n".join(bad)


def test_central_imports_only_the_agents_wire_package() -> None:
    def allowed(name: str) -> bool:
        return not name.startswith("pantau.agent") or name.startswith("pantau.agent.wire")

    bad = violations("central", allowed)
    assert bad == [], "\n".join(bad)


def test_wire_package_imports_no_vision_stack() -> None:
    def allowed(name: str) -> bool:
        top = name.split(".")[0]
        if top == "pantau":
            return name.startswith("pantau.agent.wire")
        return top in sys.stdlib_module_names or top in WIRE_THIRD_PARTY

    bad = violations("agent/wire", allowed)
    assert bad == [], "\n".join(bad)


def test_central_runs_without_loading_the_vision_stack() -> None:
    """The same rule at run time, lazy imports and transitive ones included."""
    modules = [module_name(p) for p in sources("central")] + [
        module_name(p) for p in sources("agent/wire")
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = [m for m in {VISION_STACK!r} if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_package_folder_is_installed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {module_name(p) for folder in FOLDERS for p in (REPO / folder).rglob("__init__.py")}
    assert listed == on_disk
    assert config["package-dir"] == {v: k for k, v in FOLDERS.items()}


def test_every_error_class_is_a_pantau_error() -> None:
    """One base exception: a caller (a CLI, the runtime) catches the project's own errors with
    one `except PantauError` and lets real bugs surface."""
    bad = []
    for folder in FOLDERS:
        for path in sources(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.ClassDef)
                    and node.name.endswith("Error")
                    and (node.name != "PantauError")
                ):
                    bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                    if not bases & {"PantauError"} and not any(
                        b.endswith("Error") and b != "ValueError" for b in bases
                    ):
                        bad.append(f"{path.relative_to(REPO)}: {node.name}{sorted(bases)}")
    assert bad == [], "\n".join(bad)
