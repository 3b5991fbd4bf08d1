"""The agent's durable outbox: every message is committed to SQLite before it is published and
deleted only once it is delivered: on central's ack that covers its seq (delivery `central`: the
broker's PUBACK only marks it as awaiting central), or on the broker's PUBACK (delivery
`broker`). Under size or age pressure, old count buckets are merged into coarser ones (sums kept
exact) before anything is dropped, and a drop raises an alert.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from pantau.agent.wire.errors import PantauError
from pantau.agent.wire.migrations import Migration, connect
from pantau.agent.wire.protocol import (
    MESSAGE_TYPES,
    AlertPayload,
    CountsMessage,
    merge_counts,
    new_msg_id,
    utcnow,
)

# Publish order: alerts first, then counts and health in seq order (which keeps each camera's
# buckets in order). Drop order under pressure is the reverse of importance: health, counts,
# and alerts only when nothing else is left.
LANE_ALERT = 0
LANE_DATA = 1
_LANE = {"alerts": LANE_ALERT, "counts": LANE_DATA, "health": LANE_DATA}

# Coarser resolutions that per-minute buckets are merged into, in order, when space runs out.
MERGE_LEVELS = (300, 900, 3600, 6 * 3600, 86400)
# Bytes of SQLite overhead per row, on top of the message body, in the size estimate.
ROW_OVERHEAD = 96
# Disk space left free for SQLite's journal and the rest of the box: this much, or on a small
# filesystem this share of it (a fixed 32 MiB would leave an 8 MiB disk no room at all).
DISK_RESERVE_BYTES = 32 * 1024 * 1024
DISK_RESERVE_SHARE = 0.125
# A file of this size (at most this share of the filesystem) kept beside the database and
# deleted when the disk is full: SQLite needs room in its journal even to delete, so without
# it a disk another process filled would leave nothing to merge or drop with.
BALLAST_BYTES = 4 * 1024 * 1024
BALLAST_SHARE = 1 / 16
# Relief stops at this share of the cap, so it does not run again on the next enqueue.
RELIEF_TARGET = 0.9
# Ids of replaced central databases remembered, whose acks are ignored (a stale retained ack).
RETIRED_IDS = 16

# Oldest rows looked at per merge step: small, so only as much is coarsened as space requires.
_MERGE_CHUNK = 256
_MERGE_NS = uuid.UUID("6b1d3c1e-5f0a-4d4e-9a51-2f2b8f3c6a10")

# SQLite's primary result code for a full disk (or a file at its max_page_count).
_SQLITE_FULL = 13
# SQLite's own text for SQLITE_FULL, for Pythons before 3.11, whose errors carry no code.
_SQLITE_FULL_TEXT = "database or disk is full"

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL UNIQUE,
    lane INTEGER NOT NULL,
    kind TEXT NOT NULL,
    camera TEXT NOT NULL,
    topic TEXT NOT NULL,
    body BLOB NOT NULL,
    bucket_start REAL,
    bucket_seconds INTEGER,
    created REAL NOT NULL,
    attempted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_lane_seq ON outbox (lane, seq);
CREATE INDEX IF NOT EXISTS outbox_kind_bucket ON outbox (kind, bucket_start);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# v2: `delivered`, when the broker acknowledged a row that now awaits central's ack (NULL: not
# acknowledged); and the epoch of an outbox that already has a seq history is the legacy empty
# one, under which central already tracks those seqs (a new outbox gets a random epoch).
_SCHEMA_V2 = """
ALTER TABLE outbox ADD COLUMN delivered REAL;
INSERT OR IGNORE INTO meta (key, value)
    SELECT 'epoch', '' WHERE EXISTS (SELECT 1 FROM meta WHERE key = 'next_seq');
"""
# v3: the alerts raised and not yet cleared (their payloads), so that a restarted agent
# re-announces them under the same alert_id, or clears them (see Outbox.settle).
_SCHEMA_V3 = """
CREATE TABLE open_alerts (
    camera TEXT NOT NULL, alert_id TEXT NOT NULL, type TEXT NOT NULL, rule TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (camera, alert_id)
);
"""
# The schema's history, oldest first: a change is a new Migration; a shipped one never changes.
MIGRATIONS = (Migration(1, _SCHEMA_V1), Migration(2, _SCHEMA_V2), Migration(3, _SCHEMA_V3))
# Seconds after a restart (from its first message) within which a condition still open from the
# last run must be raised again to continue its alert; longer than the zone and health rules'
# usual hold times, after which one that was not is cleared.
REANNOUNCE_SECONDS = 300.0


class OutboxFullError(PantauError):
    """The disk cannot take the message even after merging and dropping old data."""


class Row(NamedTuple):
    """One stored message, its fields in the outbox table's column order."""

    seq: int
    msg_id: str
    lane: int
    kind: str
    camera: str
    topic: str
    body: bytes
    bucket_start: float | None
    bucket_seconds: int | None
    created: float
    attempted: int
    delivered: float | None

    @property
    def span(self) -> tuple[float, float]:
        """Start and end (epoch seconds) of a counts row's bucket."""
        if self.bucket_start is None or self.bucket_seconds is None:
            raise ValueError(f"outbox row {self.seq} ({self.kind}) has no bucket")
        return self.bucket_start, self.bucket_start + self.bucket_seconds


_COLUMNS = ", ".join(Row._fields)
_SELECT = f"SELECT {_COLUMNS} FROM outbox"
_INSERT = f"INSERT INTO outbox ({_COLUMNS}) VALUES ({', '.join('?' * len(Row._fields))})"


@dataclass
class ReliefReport:
    """What one pressure relief did; `lost` maps a camera to the intervals whose counts went."""

    merged_rows: int = 0
    dropped_health: int = 0
    dropped_counts: int = 0
    dropped_alerts: int = 0
    lost: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lost_seqs: dict[str, list[int]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(
            self.merged_rows or self.dropped_health or self.dropped_counts or self.dropped_alerts
        )

    @property
    def lossy(self) -> bool:
        """Whether counts or alerts went, which a buffer_overflow alert must report."""
        return bool(self.lost or self.lost_seqs)

    def add(self, other: ReliefReport) -> None:
        """Fold another relief's work into this one."""
        self.merged_rows += other.merged_rows
        self.dropped_health += other.dropped_health
        self.dropped_counts += other.dropped_counts
        self.dropped_alerts += other.dropped_alerts
        for camera, spans in other.lost.items():
            self.lost.setdefault(camera, []).extend(spans)
        for camera, seqs in other.lost_seqs.items():
            self.lost_seqs.setdefault(camera, []).extend(seqs)


def _ranges(values: Iterable[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for v in sorted(values):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


class Outbox:
    """A durable, bounded, ordered message store for one agent.

    Thread-safe: the producer enqueues while the publisher takes and acknowledges. `seq` is
    assigned here, inside the same transaction that stores the message, so it is strictly
    increasing and survives restarts.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        agent: str,
        site: str,
        max_bytes: int = 256 * 1024 * 1024,
        max_age_seconds: float = 7 * 86400,
        reannounce_seconds: float | None = None,
    ) -> None:
        self.path = Path(path)
        # None: no open alerts are kept or continued (a simulation, a tool reading the outbox).
        self.reannounce_seconds = reannounce_seconds
        self.agent = agent
        self.site = site
        self.max_bytes = int(max_bytes)
        self.max_age_seconds = max_age_seconds
        self.last_relief = ReliefReport()
        # Losses not yet reported by a buffer_overflow alert (the disk refused the alert too).
        self._unreported = ReliefReport()
        # Acknowledged by the broker but not deleted yet (the disk refused the delete).
        self._delivered: set[int] = set()
        self.ballast = self.path.with_name(self.path.name + "-ballast")
        # Set while the disk is short: every commit is checkpointed, so that the next write
        # reuses the journal's space instead of growing it.
        self._tight = False
        self._lock = threading.RLock()
        self._db = connect(self.path, MIGRATIONS)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk (fsync) before enqueue returns; that is the promise.
        self._db.execute("PRAGMA synchronous=FULL")
        # Keep the WAL file from staying large after a burst: the cap is about the disk.
        self._db.execute("PRAGMA journal_size_limit=4194304")
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox"
        ).fetchone()
        self._count, self._body_bytes = int(row[0]), int(row[1])
        if self._meta("epoch") is None:
            self._set_meta("epoch", uuid.uuid4().hex[:16])
        self.epoch: str = self._meta("epoch") or ""
        # Acknowledged by the broker, not yet marked as awaiting central (the disk refused).
        self._held: dict[int, float] = {}
        # Alerts the last run left open, by (camera, type, rule), until raised again or settled;
        # and this run's alert_ids that continue one of them.
        self._carried: dict[tuple[str, str, str], list[AlertPayload]] = {}
        for camera, type_, rule, body in self._db.execute(
            "SELECT camera, type, rule, body FROM open_alerts WHERE ? ORDER BY rowid",
            (reannounce_seconds is not None,),
        ):
            payload = AlertPayload.model_validate_json(body)
            self._carried.setdefault((camera, type_, rule), []).append(payload)
        self._continued: dict[str, AlertPayload] = {}
        self._settle_from: float | None = None
        self._keep_ballast()

    # --- bookkeeping ---------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            # Inside the try: a COMMIT refused by a full disk may leave the transaction open.
            self._db.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back on some errors (SQLITE_FULL among them).
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        if self._tight:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the journal into the database, so the next write starts it over in place."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            # The database file could not grow: the journal keeps the pages, nothing is lost.

    def _keep_ballast(self) -> None:
        """Create the ballast file where it is missing and the disk has room for it."""
        if self.ballast.exists():
            return
        try:
            disk = shutil.disk_usage(self.path.parent)
            size = int(min(BALLAST_BYTES, disk.total * BALLAST_SHARE))
            if disk.free < 2 * size:
                return
            fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            self.ballast.unlink(missing_ok=True)
            return
        self._tight = False

    def _release_ballast(self) -> None:
        """The disk is full: give the ballast's room to the journal, and keep the journal
        from growing until the disk has room again."""
        self._tight = True
        self.ballast.unlink(missing_ok=True)
        self._checkpoint()

    @contextmanager
    def _disk(self) -> Iterator[None]:
        """Writes in here raise OutboxFullError, not SQLite's error, when the disk is full."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            raise OutboxFullError(f"outbox {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Estimated bytes the stored messages take (bodies plus per-row overhead)."""
        return self._body_bytes + ROW_OVERHEAD * self._count

    def _meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    def _next_seq(self) -> int:
        value = self._meta("next_seq")
        return 0 if value is None else int(value)

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            return self._meta(key, default)

    @property
    def last_seq(self) -> int:
        """The latest seq assigned (-1 before the first message): the agent's high-water mark."""
        with self._lock:
            return self._next_seq() - 1

    def _effective_cap(self) -> int:
        try:
            disk = shutil.disk_usage(self.path.parent)
        except OSError:
            return self.max_bytes
        reserve = min(DISK_RESERVE_BYTES, int(disk.total * DISK_RESERVE_SHARE))
        return max(0, min(self.max_bytes, self.size_bytes + disk.free - reserve))

    # --- producer side -------------------------------------------------------------------

    def enqueue(
        self,
        items: Sequence[tuple[str, str, Any]],
        *,
        meta: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> list[int]:
        """Store messages durably and return their seqs.

        `items` are (kind, camera, payload) with kind counts|alerts|health. All of them, and
        the optional `meta` keys (e.g. a producer's progress marker), are committed in one
        transaction: either everything is on disk when this returns, or nothing is.
        A full disk is met by merging and dropping old data (reported by a buffer_overflow
        alert); OutboxFullError when even that cannot make room, and nothing was stored.
        After a restart, an alert raised for a condition the last run left open continues that
        alert (same alert_id), and the ones not raised again are cleared in time (`settle`).
        """
        created = now or utcnow()
        with self._lock:
            if self._settle_from is None:
                self._settle_from = created.timestamp()
            carried = {k: list(v) for k, v in self._carried.items()}
            continued = dict(self._continued)
            try:
                seqs = self._store(self._continue(items), created, meta or {})
            except BaseException:
                self._carried, self._continued = carried, continued
                raise
            self.settle(created.timestamp())
            return seqs

    def _store(
        self, items: Sequence[tuple[str, str, Any]], created: datetime, meta: dict[str, Any]
    ) -> list[int]:
        rows = self._build(items, created)
        incoming = sum(len(r.body) + ROW_OVERHEAD for r in rows)
        try:
            with self._disk():
                self._keep_ballast()
                self._relieve(incoming)
                return self._insert(rows, items, created, meta)
        except OutboxFullError:
            self._release_ballast()
        # The disk filled before our estimate said so: make room harder and try once more.
        with self._disk():
            self._relieve(incoming, cap=int(self.size_bytes * 0.8))
            return self._insert(rows, items, created, meta)

    def _continue(self, items: Sequence[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
        """Items with a raise of a condition the last run left open replaced by that alert as
        it was raised (central stored it already: a duplicate, the alert goes on), and the
        clear of such a raise by the clear of that alert."""
        out = []
        for kind, camera, p in items:
            if kind == "alerts" and p.state == "raised" and p.ended_at is None:
                carried = self._carried.get((camera, p.type, p.rule or ""))
                if carried:
                    self._continued[p.alert_id] = p = carried.pop(0)
            elif kind == "alerts" and p.alert_id in self._continued:
                old = self._continued.pop(p.alert_id)
                p = p.model_copy(update={"alert_id": old.alert_id, "started_at": old.started_at,
                                         "details": {**old.details, **p.details}})  # fmt: skip
            out.append((kind, camera, p))
        return out

    def settle(self, now: float | None = None) -> list[int]:
        """Clear the alerts the last run left open that this run has not raised again within
        `reannounce_seconds` of its first message (or of the first call here): their
        condition no longer holds, or cannot be judged. Returns the seqs of the clears."""
        now = time.time() if now is None else now
        with self._lock:
            if self._settle_from is None:
                self._settle_from = now
            wait = self.reannounce_seconds or 0.0
            if not any(self._carried.values()) or now - self._settle_from < wait:
                return []
            ended = datetime.fromtimestamp(now, timezone.utc)
            reason = "not raised again after the agent restarted"
            items = [
                ("alerts", camera, p.model_copy(update={
                    "state": "cleared", "ended_at": ended, "details": {**p.details,
                                                                     "reason": reason}}))
                for (camera, _, _), carried in sorted(self._carried.items())
                for p in carried
            ]  # fmt: skip
            carried, self._carried = self._carried, {}
            try:
                return self._store(items, utcnow(), {})
            except BaseException:
                self._carried = carried
                raise

    def _build(self, items: Sequence[tuple[str, str, Any]], created: datetime) -> list[Row]:
        """Envelope and encode items as outbox rows, numbered from the next free seq."""
        next_seq = self._next_seq()
        return [
            self._row(
                MESSAGE_TYPES[kind](
                    msg_id=new_msg_id(),
                    seq=next_seq + i,
                    agent=self.agent,
                    site=self.site,
                    epoch=self.epoch,
                    camera=camera,
                    created_at=created,
                    payload=payload,
                )
            )
            for i, (kind, camera, payload) in enumerate(items)
        ]

    def _insert(
        self,
        rows: list[Row],
        items: Sequence[tuple[str, str, Any]],
        created: datetime,
        meta: dict[str, Any],
    ) -> list[int]:
        if rows and rows[0].seq != self._next_seq():
            # Relief recorded a loss alert meanwhile and took those seqs: renumber.
            rows = self._build(items, created)
        with self._transaction():
            self._db.executemany(_INSERT, rows)
            if self.reannounce_seconds is not None:
                self._remember_alerts(items)
            if rows:
                self._set_meta("next_seq", rows[-1].seq + 1)
            for key, value in meta.items():
                self._set_meta(key, value)
        self._count += len(rows)
        self._body_bytes += sum(len(r.body) for r in rows)
        return [r.seq for r in rows]

    def _remember_alerts(self, items: Sequence[tuple[str, str, Any]]) -> None:
        """Keep the alerts raised and not cleared (a one-off alert, raised ended, is not
        open), in the transaction that stores them."""
        for kind, camera, p in items:
            if kind != "alerts":
                continue
            if p.state == "raised" and p.ended_at is None:
                self._db.execute(
                    "INSERT OR REPLACE INTO open_alerts (camera, alert_id, type, rule, body) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (camera, p.alert_id, p.type, p.rule or "", p.model_dump_json()),
                )
            elif p.state == "cleared":
                self._db.execute(
                    "DELETE FROM open_alerts WHERE camera = ? AND alert_id = ?",
                    (camera, p.alert_id),
                )

    @staticmethod
    def _row(msg: Any) -> Row:
        """A message as a new, never attempted outbox row."""
        start = seconds = None
        if isinstance(msg, CountsMessage):
            start = msg.payload.bucket_start.timestamp()
            seconds = msg.payload.bucket_seconds
        return Row(
            seq=msg.seq,
            msg_id=msg.msg_id,
            lane=_LANE[msg.kind],
            kind=msg.kind,
            camera=msg.camera,
            topic=msg.topic,
            body=msg.encode(),
            bucket_start=start,
            bucket_seconds=seconds,
            created=msg.created_at.timestamp(),
            attempted=0,
            delivered=None,
        )

    # --- publisher side ------------------------------------------------------------------

    def take(self, lane: int, after_seq: int, limit: int) -> list[Row]:
        """The next `limit` messages of a lane after `after_seq` that do not await central,
        marked as attempted.

        Marking comes first and durably: a message that may have reached the broker is never
        merged afterwards, so central can never see both a bucket and a merge containing it.
        OutboxFullError (and nothing taken) when the disk cannot take the mark.
        """
        with self._lock:
            rows = self._rows(
                "lane = ? AND seq > ? AND delivered IS NULL ORDER BY seq LIMIT ?",
                lane,
                after_seq,
                limit,
            )
            if rows:
                with self._disk(), self._transaction():
                    self._db.executemany(
                        "UPDATE outbox SET attempted = 1 WHERE seq = ? AND attempted = 0",
                        [(r.seq,) for r in rows],
                    )
        return [r._replace(attempted=1) for r in rows]

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete messages the broker acknowledged; returns how many were deleted.

        On a full disk (where even a delete needs room in the journal) they are deleted by a
        later write instead, before anything else is dropped, and never reported lost.
        """
        with self._lock:
            self._delivered.update(seqs)
            try:
                with self._disk():
                    return self._forget_delivered()
            except OutboxFullError:
                return 0

    def hold(self, seqs: Iterable[int], now: float | None = None) -> None:
        """Mark messages the broker acknowledged as awaiting central's ack: kept (and counted
        in the outbox's size) but not taken again until `resend` releases them. On a full disk
        the mark is made by a later write; until then they are simply not taken again."""
        now = time.time() if now is None else now
        with self._lock:
            self._held.update(dict.fromkeys(seqs, now))
            try:
                with self._disk():
                    self._mark_held()
            except OutboxFullError:
                pass

    def _mark_held(self) -> None:
        if not self._held:
            return
        with self._transaction():
            self._db.executemany(
                "UPDATE outbox SET delivered = ? WHERE seq = ?",
                [(t, seq) for seq, t in self._held.items()],
            )
        self._held.clear()

    def confirm(
        self, covered: Sequence[tuple[int, int]], hole_before: float | None = None
    ) -> tuple[int, float | None, list[int]]:
        """Delete the messages whose seqs central's ack covers (`covered`: sorted ranges).

        Returns how many were deleted, when the newest of them was acknowledged by the broker
        (None if none was), and the lanes' seqs released for a resend because they are
        holes: awaiting central, below the ack's highest seq, and acknowledged by the broker
        before `hole_before` (the broker passed them on before messages central did store).
        """
        if not covered:
            return 0, None, []
        with self._lock, self._disk():
            self._mark_held()
            gone = freed = 0
            newest: float | None = None
            with self._transaction():
                for a, b in covered:
                    for size, delivered in self._db.execute(
                        "DELETE FROM outbox WHERE seq BETWEEN ? AND ? "
                        "RETURNING LENGTH(body), delivered",
                        (a, b),
                    ).fetchall():
                        gone += 1
                        freed += size
                        if delivered is not None and (newest is None or delivered > newest):
                            newest = delivered
            self._count -= gone
            self._body_bytes -= freed
            released: list[int] = []
            if hole_before is not None:
                released = self._release("delivered < ? AND seq < ?", hole_before, covered[-1][1])
            return gone, newest, released

    def resend(self, older_than: float) -> list[int]:
        """Release for a resend the messages awaiting central that the broker acknowledged
        before `older_than` (epoch seconds); returns their seqs."""
        with self._lock, self._disk():
            self._mark_held()
            return self._release("delivered < ? AND seq >= ?", older_than, 0)

    def _release(self, where: str, *args: Any) -> list[int]:
        seqs = [
            r[0]
            for r in self._db.execute(
                f"SELECT seq FROM outbox WHERE delivered IS NOT NULL AND {where} ORDER BY seq",
                args,
            )
        ]
        if seqs:
            with self._transaction():
                self._db.executemany(
                    "UPDATE outbox SET delivered = NULL WHERE seq = ?", [(s,) for s in seqs]
                )
        return seqs

    def lowest(self, seqs: Iterable[int]) -> dict[int, int]:
        """The lowest of `seqs` in each lane (where to rewind a lane's publishing cursor)."""
        out: dict[int, int] = {}
        with self._lock:
            for lane, seq in self._db.execute(
                "SELECT lane, MIN(seq) FROM outbox WHERE seq IN (SELECT value FROM json_each(?)) "
                "GROUP BY lane",
                (json.dumps(list(seqs)),),
            ):
                out[lane] = seq
        return out

    def adopt_central(self, central: str) -> str:
        """Judge an ack from central's database `central` (its id): "same" as the acks applied
        so far (or the first id seen), "new" (a replaced database: the one before is retired
        for good and every message awaiting central must be sent again, since the new one may
        lack it), or "retired" (an earlier database's ack, such as a stale retained one: not to
        be applied)."""
        with self._lock, self._disk():
            current = self._meta("central")
            retired = (self._meta("central_retired") or "").split()
            if central in retired:
                return "retired"
            if current == central:
                return "same"
            with self._transaction():
                if current is not None:
                    self._set_meta("central_retired", " ".join([*retired, current][-RETIRED_IDS:]))
                self._set_meta("central", central)
            return "same" if current is None else "new"

    def awaiting(self) -> int:
        """Messages the broker acknowledged that central has not yet confirmed."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE delivered IS NOT NULL"
            ).fetchone()[0] + len(self._held)

    def _forget_delivered(self) -> int:
        """Delete the acknowledged messages; returns how many were still stored."""
        if not self._delivered:
            return 0
        gone = freed = 0
        with self._transaction():
            for seq in sorted(self._delivered):
                row = self._db.execute(
                    "DELETE FROM outbox WHERE seq = ? RETURNING LENGTH(body)", (seq,)
                ).fetchone()
                if row:
                    gone += 1
                    freed += row[0]
        self._count -= gone
        self._body_bytes -= freed
        self._delivered.clear()
        return gone

    def _rows(self, where: str, *args: Any) -> list[Row]:
        return [Row._make(r) for r in self._db.execute(f"{_SELECT} WHERE {where}", args)]

    def pending(self, lane: int | None = None) -> int:
        with self._lock:
            if lane is None:
                return self._count
            sql = "SELECT COUNT(*) FROM outbox WHERE lane = ?"
            return self._db.execute(sql, (lane,)).fetchone()[0]

    # --- pressure relief -----------------------------------------------------------------

    def _relieve(self, incoming: int, cap: int | None = None) -> None:
        """Bring the outbox under its age and size bounds; report losses as alerts.

        Any step may meet a full disk (sqlite3 error): what was done before it stays done and
        its losses are reported by the next relief that can write the alert.
        """
        self._forget_delivered()  # delivered messages go first, and are no loss
        self._mark_held()
        report = ReliefReport()
        try:
            cutoff = time.time() - self.max_age_seconds
            self._drop(report, "counts", "bucket_start < ?", (cutoff,), None)
            self._drop(report, "health", "created < ?", (cutoff,), None)
            cap = self._effective_cap() if cap is None else cap
            if self.size_bytes + incoming > cap:
                target = int(cap * RELIEF_TARGET) - incoming
                self._drop(report, "health", "1", (), target)
                for level in MERGE_LEVELS:
                    if self.size_bytes <= target:
                        break
                    self._merge_level(report, level, target)
                self._drop(report, "counts", "1", (), target)
                self._drop(report, "alerts", "1", (), target)
        finally:
            if report.changed:
                self.last_relief = report
                self._unreported.add(report)
        if self._unreported.lossy:
            self._record_loss(self._unreported)
        self._unreported = ReliefReport()

    def _drop(
        self,
        report: ReliefReport,
        kind: str,
        where: str,
        args: tuple[Any, ...],
        target: int | None,
    ) -> None:
        """Drop the oldest messages of a kind matching `where`, until under `target` bytes."""
        while target is None or self.size_bytes > target:
            rows = self._rows(f"kind = ? AND {where} ORDER BY seq LIMIT 500", kind, *args)
            if not rows:
                return
            if target is not None:
                keep, excess = [], self.size_bytes - target
                for r in rows:
                    keep.append(r)
                    excess -= len(r.body) + ROW_OVERHEAD
                    if excess <= 0:
                        break
                rows = keep
            with self._transaction():
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(r.seq,) for r in rows])
            self._count -= len(rows)
            self._body_bytes -= sum(len(r.body) for r in rows)
            for r in rows:
                if kind == "counts":
                    report.dropped_counts += 1
                    report.lost.setdefault(r.camera, []).append(r.span)
                    report.lost_seqs.setdefault(r.camera, []).append(r.seq)
                elif kind == "health":
                    report.dropped_health += 1
                else:
                    report.dropped_alerts += 1
                    report.lost_seqs.setdefault(r.camera, []).append(r.seq)

    def _merge_level(self, report: ReliefReport, level: int, target: int) -> None:
        """Merge never-published count buckets finer than `level` into `level`-second windows,
        oldest first, until the outbox is under `target` bytes or nothing is left to merge.
        """
        while self.size_bytes > target:
            rows = self._rows(
                "kind = 'counts' AND attempted = 0 AND bucket_seconds < ? "
                "ORDER BY bucket_start, seq LIMIT ?",
                level,
                _MERGE_CHUNK,
            )
            groups: dict[tuple[str, int], list[Row]] = {}
            for r in rows:
                groups.setdefault((r.camera, int(r.span[0] // level)), []).append(r)
            if len(rows) == _MERGE_CHUNK:
                # The newest window may continue past this chunk; leave it for the next one.
                newest = int(rows[-1].span[0] // level)
                older = {k: v for k, v in groups.items() if k[1] != newest}
                groups = older or groups
            merges = []
            for members in groups.values():
                members.sort(key=lambda r: r.span[0])
                run: list[Row] = []
                for r in members:
                    if run and run[-1].span[1] != r.span[0]:
                        if len(run) > 1:
                            merges.append(run)
                        run = []
                    run.append(r)
                if len(run) > 1:
                    merges.append(run)
            if not merges:
                return
            count, body_bytes = self._count, self._body_bytes
            try:
                with self._transaction():
                    for run in merges:
                        self._merge_run(run)
            except BaseException:
                self._count, self._body_bytes = count, body_bytes
                raise
            report.merged_rows += sum(len(run) for run in merges)

    def _merge_run(self, run: list[Row]) -> None:
        msgs = [CountsMessage.model_validate_json(r.body) for r in run]
        first = min(msgs, key=lambda m: m.seq)
        payload = merge_counts([m.payload for m in msgs], seqs=[m.seq for m in msgs])
        merged = first.model_copy(
            update={
                "msg_id": uuid.uuid5(_MERGE_NS, ",".join(m.msg_id for m in msgs)).hex,
                "payload": payload,
            }
        )
        self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(r.seq,) for r in run])
        row = self._row(merged)
        self._db.execute(_INSERT, row)
        self._count += 1 - len(run)
        self._body_bytes += len(row.body) - sum(len(r.body) for r in run)

    def _record_loss(self, report: ReliefReport) -> None:
        """Raise one buffer_overflow alert per camera that lost data, stating what was lost."""
        cameras = sorted(set(report.lost) | set(report.lost_seqs))
        now = utcnow()
        items = []
        for camera in cameras:
            spans = report.lost.get(camera, [])
            details: dict[str, Any] = {
                "lost_messages": len(report.lost_seqs.get(camera, [])),
                "lost_seqs": _ranges(report.lost_seqs.get(camera, [])),
                "merged_buckets": report.merged_rows,
            }
            if spans:
                details["lost_from"] = _iso(min(s for s, _ in spans))
                details["lost_to"] = _iso(max(e for _, e in spans))
            items.append(
                (
                    "alerts",
                    camera,
                    AlertPayload(
                        alert_id=new_msg_id(),
                        type="buffer_overflow",
                        state="raised",
                        severity="critical",
                        started_at=now,
                        ended_at=now,
                        details=details,
                    ),
                )
            )
        if items:
            self._insert(self._build(items, now), items, now, {})

    # --- inspection ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            per_kind = {
                kind: {"messages": n, "oldest": _iso(oldest) if oldest else None}
                for kind, n, oldest in self._db.execute(
                    "SELECT kind, COUNT(*), MIN(created) FROM outbox GROUP BY kind"
                )
            }
            merged = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'counts' AND bucket_seconds >= 300"
            ).fetchone()[0]
            return {
                "path": str(self.path),
                "messages": self._count,
                "bytes": self.size_bytes,
                "file_bytes": self.path.stat().st_size if self.path.exists() else 0,
                "max_bytes": self.max_bytes,
                "last_seq": self._next_seq() - 1,
                "epoch": self.epoch,
                "awaiting_central": self._db.execute(
                    "SELECT COUNT(*) FROM outbox WHERE delivered IS NOT NULL"
                ).fetchone()[0],
                "merged_buckets": merged,
                "by_kind": per_kind,
            }

    def export(self) -> Iterable[dict[str, Any]]:
        """Every stored message as its wire JSON, in publish order."""
        with self._lock:
            rows = self._db.execute("SELECT topic, body FROM outbox ORDER BY lane, seq").fetchall()
        for topic, body in rows:
            yield {"topic": topic, "message": json.loads(body)}

    def messages(self, kind: str | None = None) -> list[Any]:
        """Decoded messages, optionally of one kind (for tests and `buffer export`)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, body FROM outbox WHERE ? IS NULL OR kind = ? ORDER BY seq",
                (kind, kind),
            ).fetchall()
        return [MESSAGE_TYPES[k].model_validate_json(b) for k, b in rows]


def _disk_full(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return str(exc) == _SQLITE_FULL_TEXT
    # The extended code carries the primary one in its low byte.
    return int(code) & 0xFF == _SQLITE_FULL


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
