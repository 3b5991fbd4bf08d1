"""The agent's local evidence store: JPEG files per alert under one folder, indexed in SQLite,
bounded by a size cap and a retention; what was dropped is remembered, so a late request is
told `expired` rather than `not_found`."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pantau.agent.wire.errors import PantauError
from pantau.agent.wire.migrations import Migration, connect
from pantau.agent.wire.protocol import EvidenceStatus, ProtocolError, check_segment

log = logging.getLogger(__name__)

INDEX = "index.db"
# Dropped alerts are remembered this long (to answer `expired`), then forgotten.
TOMBSTONE_SECONDS = 30 * 86400
_SCHEMA_V1 = """
CREATE TABLE alerts (
    alert_id TEXT PRIMARY KEY, camera TEXT NOT NULL, type TEXT NOT NULL,
    raised_at REAL NOT NULL, dropped TEXT, dropped_at REAL
);
CREATE TABLE frames (
    alert_id TEXT NOT NULL, idx INTEGER NOT NULL, taken_at REAL NOT NULL,
    offset_seconds REAL NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (alert_id, idx)
);
CREATE INDEX alerts_raised ON alerts (raised_at);
"""
MIGRATIONS = (Migration(1, _SCHEMA_V1),)


class EvidenceStoreError(PantauError):
    """An evidence store that cannot be opened or written; the message says which folder."""


@dataclass(frozen=True)
class StoredFrame:
    """One kept JPEG of an alert and what the index says of it."""

    index: int
    taken_at: float
    offset_seconds: float
    width: int
    height: int
    sha256: str
    jpeg: bytes


@dataclass(frozen=True)
class Lookup:
    """What the store holds for one alert: `status` ok with its frames, or why not."""

    status: EvidenceStatus
    detail: str = ""
    camera: str | None = None
    alert_type: str | None = None
    frames: tuple[StoredFrame, ...] = ()


class EvidenceStore:
    """`folder`/index.db and `folder`/ALERT_ID/N.jpg. Thread-safe: the pipeline adds frames
    while the MQTT responder reads them. Every add and lookup first drops what is past
    `retention_seconds`, then the oldest alerts while the files exceed `max_bytes`."""

    def __init__(
        self,
        folder: Path,
        max_bytes: int,
        retention_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.retention_seconds = retention_seconds
        self.clock = clock
        self._lock = threading.Lock()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.db = connect(folder / INDEX, MIGRATIONS)
            self.db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            raise EvidenceStoreError(f"cannot open evidence store {folder}: {exc}") from None
        with self._lock:
            self._remove_orphans()
            self._prune(self.clock())

    # --- writes ---------------------------------------------------------------------------

    def add_alert(self, alert_id: str, camera: str, alert_type: str, raised_at: float) -> None:
        """Start an alert's evidence (its frames follow with add_frame)."""
        self._check_id(alert_id)
        with self._lock:
            self.db.execute(
                "INSERT OR IGNORE INTO alerts (alert_id, camera, type, raised_at) "
                "VALUES (?, ?, ?, ?)",
                (alert_id, camera, alert_type, raised_at),
            )

    def add_frame(
        self,
        alert_id: str,
        index: int,
        taken_at: float,
        offset_seconds: float,
        size: tuple[int, int],
        jpeg: bytes,
    ) -> bool:
        """Keep one JPEG of an alert started with add_alert; False when that alert is unknown
        or already dropped. The file is written before its index row, so the index never
        names a file that is not there."""
        self._check_id(alert_id)
        with self._lock:
            row = self.db.execute(
                "SELECT dropped FROM alerts WHERE alert_id = ?", (alert_id,)
            ).fetchone()
            if row is None or row[0] is not None:
                return False
            path = self._file(alert_id, index)
            try:
                path.parent.mkdir(exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(jpeg)
                tmp.replace(path)
            except OSError as exc:
                raise EvidenceStoreError(f"cannot write {path}: {exc}") from None
            self.db.execute(
                "INSERT OR REPLACE INTO frames VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (alert_id, index, taken_at, offset_seconds, size[0], size[1], len(jpeg),
                 hashlib.sha256(jpeg).hexdigest()),
            )  # fmt: skip
            self._prune(self.clock())
            return True

    def prune(self) -> None:
        """Drop what is past the retention or above the size cap now."""
        with self._lock:
            self._prune(self.clock())

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention_seconds
        for (alert_id,) in self.db.execute(
            "SELECT alert_id FROM alerts WHERE dropped IS NULL AND raised_at < ?", (cutoff,)
        ).fetchall():
            self._drop(alert_id, f"older than the retention ({self.retention_seconds / 3600:g} "
                                 "h)", now)  # fmt: skip
        total = self.size_bytes()
        if total > self.max_bytes:
            # Oldest alerts first, whole: an alert with half its frames is worth less.
            for alert_id, size in self.db.execute(
                "SELECT a.alert_id, COALESCE(SUM(f.size), 0) FROM alerts a LEFT JOIN frames f "
                "USING (alert_id) WHERE a.dropped IS NULL GROUP BY a.alert_id "
                "ORDER BY a.raised_at, a.alert_id"
            ).fetchall():
                if total <= self.max_bytes:
                    break
                self._drop(alert_id, f"the store was full ({self.max_bytes / 2**20:g} MB)", now)
                total -= size
        self.db.execute(
            "DELETE FROM alerts WHERE dropped IS NOT NULL AND dropped_at < ?",
            (now - TOMBSTONE_SECONDS,),
        )

    def _drop(self, alert_id: str, why: str, now: float) -> None:
        # Index first: a crash in between leaves files without rows, removed at the next open.
        self.db.execute("DELETE FROM frames WHERE alert_id = ?", (alert_id,))
        self.db.execute(
            "UPDATE alerts SET dropped = ?, dropped_at = ? WHERE alert_id = ?",
            (why, now, alert_id),
        )
        shutil.rmtree(self.folder / alert_id, ignore_errors=True)

    def _remove_orphans(self) -> None:
        """Folders of alerts the index does not hold frames of (a crash mid-drop)."""
        kept = {r[0] for r in self.db.execute("SELECT DISTINCT alert_id FROM frames")}
        kept |= {r[0] for r in self.db.execute("SELECT alert_id FROM alerts WHERE dropped IS "
                                                "NULL")}  # fmt: skip
        for entry in os.scandir(self.folder):
            if entry.is_dir() and entry.name not in kept:
                shutil.rmtree(entry.path, ignore_errors=True)

    # --- reads ----------------------------------------------------------------------------

    def lookup(self, alert_id: str, camera: str | None = None) -> Lookup:
        """The frames of an alert (of `camera`, when given), oldest first, or why there are
        none: not_found, or expired with when and why it was dropped."""
        try:
            self._check_id(alert_id)
        except EvidenceStoreError as exc:
            return Lookup("not_found", str(exc))
        with self._lock:
            self._prune(self.clock())
            alert = self.db.execute(
                "SELECT camera, type, dropped FROM alerts WHERE alert_id = ?", (alert_id,)
            ).fetchone()
            if alert is None or (camera is not None and alert[0] != camera):
                where = f" of camera {camera}" if camera else ""
                return Lookup("not_found", f"no evidence of alert {alert_id}{where} on this agent")
            if alert[2] is not None:
                return Lookup("expired", f"the frames of alert {alert_id} were deleted: "
                              f"{alert[2]}", alert[0], alert[1])  # fmt: skip
            rows = self.db.execute(
                "SELECT idx, taken_at, offset_seconds, width, height, sha256 FROM frames "
                "WHERE alert_id = ? ORDER BY idx",
                (alert_id,),
            ).fetchall()
            frames = []
            for idx, taken_at, offset, width, height, sha in rows:
                try:
                    jpeg = self._file(alert_id, idx).read_bytes()
                except OSError as exc:
                    log.warning("evidence frame of alert %s unreadable: %s", alert_id, exc)
                    continue
                frames.append(StoredFrame(idx, taken_at, offset, width, height, sha, jpeg))
        if not frames:
            return Lookup(
                "not_found",
                f"no frame of alert {alert_id} is kept on this agent (yet: they are "
                "stored within a second of the raise)",
                alert[0],
                alert[1],
            )
        return Lookup("ok", "", alert[0], alert[1], tuple(frames))

    def size_bytes(self) -> int:
        """Bytes of the kept JPEGs."""
        return int(self.db.execute("SELECT COALESCE(SUM(size), 0) FROM frames").fetchone()[0])

    def alerts(self) -> list[str]:
        """Ids of the alerts whose frames are kept, oldest first."""
        return [
            r[0]
            for r in self.db.execute(
                "SELECT alert_id FROM alerts WHERE dropped IS NULL ORDER BY raised_at, alert_id"
            )
        ]

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _file(self, alert_id: str, index: int) -> Path:
        return self.folder / alert_id / f"{index:03d}.jpg"

    @staticmethod
    def _check_id(alert_id: str) -> None:
        # Ids name folders: only what cannot escape the store (no '/', no leading '.').
        try:
            check_segment(alert_id, "alert id")
        except ProtocolError as exc:
            raise EvidenceStoreError(exc.reason) from None
