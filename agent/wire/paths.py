"""Where Pantau keeps its files by default: one state root per platform, overridable by env.

The root is, first match wins:
1. `$PANTAU_HOME`, when set (a developer's checkout sets it to its own `var/`);
2. `$STATE_DIRECTORY`, which systemd sets for a unit with `StateDirectory=pantau`
   (the packaged services: `/var/lib/pantau`);
3. `/var/lib/pantau` when running as root (a service started some other way);
4. otherwise the user's data directory: `$XDG_DATA_HOME/pantau`, else `~/.local/share/pantau`.

Every default path below lives under that root; a path given in a config file or on the command
line is used as given.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "PANTAU_HOME"
MODEL_DIR_ENV = "PANTAU_MODEL_DIR"
DATA_ENV = "PANTAU_TEST_DATA"
SERVICE_ROOT = Path("/var/lib/pantau")


def state_root() -> Path:
    """The folder under which every default path lives (see the module's docstring)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser().absolute()
    # systemd joins several StateDirectory= entries with ':'; ours is the first.
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return SERVICE_ROOT
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "pantau"


def model_dir() -> Path:
    """The local model store: `$PANTAU_MODEL_DIR`, else `<root>/models`."""
    env = os.environ.get(MODEL_DIR_ENV)
    return Path(env).expanduser().absolute() if env else state_root() / "models"


def cache_dir() -> Path:
    """Downloads of `models build` (source archives, checked by sha256): `<root>/cache`."""
    return state_root() / "cache"


def outbox_file() -> Path:
    """The agent's SQLite outbox: `<root>/outbox.db`."""
    return state_root() / "outbox.db"


def central_database() -> Path:
    """Central's SQLite database: `<root>/central.db`."""
    return state_root() / "central.db"


def research_data() -> Path:
    """The research data (calibration frames, evaluation sets): `$PANTAU_TEST_DATA`, else
    `<root>/data`."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser().absolute() if env else state_root() / "data"
