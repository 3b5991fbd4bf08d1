"""Central's storage: one interface (base.Storage) over SQLite (the embedded default) and
PostgreSQL (at scale); `Storage(url, settings)` opens the one the URL names."""

from __future__ import annotations

from pantau.central.storage.base import (
    DUPLICATE,
    GRANULARITIES,
    AlertNotFound,
    CameraRef,
    Filter,
    Received,
    Storage,
    backend_class,
    open_storage,
)
from pantau.central.storage.sqlite import sqlite_path

__all__ = ["DUPLICATE", "GRANULARITIES", "AlertNotFound", "CameraRef", "Filter", "Received",
           "Storage", "backend_class", "open_storage", "sqlite_path"]  # fmt: skip
