"""Default paths: the state root per platform and its overrides, and a config that names no path
writing nothing under the current folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.vision.detect.store import ModelStore
from pantau.agent.wire import paths
from pantau.central.config import CentralSettings
from pantau.central.storage import Storage, sqlite_path

ROOT_ENVS = (
    "PANTAU_HOME",
    "STATE_DIRECTORY",
    "XDG_DATA_HOME",
    "PANTAU_MODEL_DIR",
    "PANTAU_TEST_DATA",
    "PANTAU_BUFFER__PATH",
    "PANTAU_STORAGE",
    "PANTAU_CONFIG",
)


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Pantau variable set, an ordinary user whose home is a temporary folder."""
    for name in ROOT_ENVS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    return home


def test_user_default_is_the_xdg_data_directory(bare_env: Path, monkeypatch) -> None:
    assert paths.state_root() == bare_env / ".local" / "share" / "pantau"
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/data")
    assert paths.state_root() == Path("/srv/data/pantau")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # the XDG spec says: ignore it
    assert paths.state_root() == bare_env / ".local" / "share" / "pantau"


def test_service_defaults_to_var_lib(bare_env: Path, monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert paths.state_root() == Path("/var/lib/pantau")
    assert paths.outbox_file() == Path("/var/lib/pantau/outbox.db")
    assert paths.central_database() == Path("/var/lib/pantau/central.db")
    assert paths.model_dir() == Path("/var/lib/pantau/models")


def test_systemd_state_directory_beats_the_user_default(bare_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/pantau:/var/lib/other")
    assert paths.state_root() == Path("/var/lib/pantau")


def test_pantau_home_overrides_everything(bare_env: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/pantau")
    monkeypatch.setenv("PANTAU_HOME", str(tmp_path / "state"))
    assert paths.state_root() == tmp_path / "state"
    assert paths.cache_dir() == tmp_path / "state" / "cache"
    assert paths.research_data() == tmp_path / "state" / "data"
    assert ModelStore().root == tmp_path / "state" / "models"


def test_specific_overrides_beat_the_root(bare_env: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PANTAU_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("PANTAU_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PANTAU_TEST_DATA", str(tmp_path / "data"))
    assert ModelStore().root == tmp_path / "models"
    assert paths.research_data() == tmp_path / "data"


def test_a_config_without_paths_writes_nothing_under_the_current_folder(
    bare_env: Path, monkeypatch, tmp_path: Path
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    agent, central = AgentSettings(), CentralSettings()
    root = bare_env / ".local" / "share" / "pantau"
    defaults = [
        agent.buffer.path,
        sqlite_path(central.storage),
        ModelStore().root,
        paths.cache_dir(),
        paths.research_data(),
    ]
    for path in defaults:
        assert path.is_absolute() and path.is_relative_to(root), path
    Outbox(agent.buffer.path, agent=agent.id, site=agent.site).close()
    Storage(central.storage).close()
    assert agent.buffer.path.is_file() and sqlite_path(central.storage).is_file()
    assert list(cwd.iterdir()) == []
