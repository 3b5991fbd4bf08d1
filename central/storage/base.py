"""Central's storage interface and the logic both backends share: idempotent, batched writes
of validated messages with their admission checks, rollups kept in the same transaction, dead
letters, fleet state, seq gaps, retention, and the queries the CLI shows.

Every statement here is written once, with `?` parameters, in the SQL that SQLite and
PostgreSQL both speak; what differs (connections, transactions, bulk inserts, partitions,
sizes) is behind the abstract methods that storage.sqlite and storage.postgres implement.
Times are RFC 3339 UTC strings in and out of both.
"""

from __future__ import annotations

import bisect
import dataclasses
import importlib
import itertools
import json
import math
import operator
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Final

from pantau.agent.wire.protocol import (
    MAX_ACK_RANGES,
    AlertMessage,
    CountsMessage,
    CountsPayload,
    HealthMessage,
    HeartbeatMessage,
    ProtocolError,
    StatusMessage,
    check_segment,
    format_time,
)
from pantau.central import alerts as alert_objects
from pantau.central.alerts import AlertNotFound as AlertNotFound  # callers catch it here
from pantau.central.config import CentralSettings
from pantau.central.events import Event
from pantau.central.forward import queue as forward_queue
from pantau.central.scope import EVERYTHING, Scope
from pantau.central.seqs import Range, SeqTracker
from pantau.central.storage import packed, patterns, rollups
from pantau.central.tokens import Token, TokenError, check_role, digest, new_secret

DEAD_LETTER_BYTES = 4096  # raw bytes kept of a rejected message
_SEQUENCED = (CountsMessage, AlertMessage, HealthMessage)
# The verdict on a message already stored (same msg_id, or same key and content).
DUPLICATE: Final = "duplicate"
# Dead letters past retention or cap are dropped at least this often (seconds), and after every
# batch that added one.
PRUNE_INTERVAL = 60.0
# Retention and partitions ahead are seen to at least this often (seconds) while storing.
MAINTAIN_INTERVAL = 3600.0
DAY = 86400
COUNT_COLUMNS: Final = (
    "site", "agent", "camera", "rule", "rule_type", "class", "bucket_start", "bucket_seconds",
    "observed_seconds", "in", "out", "occupancy_mean", "occupancy_max", "dwell_count",
    "dwell_mean", "dwell_p90", "dwell_max",
)  # fmt: skip
MESSAGE_COLUMNS: Final = (
    "site",
    "msg_id",
    "agent",
    "camera",
    "kind",
    "seq",
    "created_at",
    "received_at",
)
# A stored counts bucket with its count rows packed (see storage.packed).
BUCKET_COLUMNS: Final = (
    "site", "agent", "camera", "start_s", "end_s", "msg_id", "observed_seconds", "lines", "zones",
)  # fmt: skip
CameraKey = tuple[str, str, str]  # site, agent, camera
# A bucket admission compares with: start and end (epoch s), msg_id, and the message when it
# was admitted in this batch (its count rows are not stored yet).
_Bucket = tuple[int, int, str, CountsMessage | None]
# The longest bucket the protocol allows (CountsPayload.bucket_seconds).
MAX_BUCKET_SECONDS: Final = 7 * 86400
# Cameras whose neighbouring buckets one query reads (SQLite allows 500 compound terms).
CAMERAS_PER_QUERY = 100
# The columns of an exported count row, and where each is in a COUNT_COLUMNS row.
_EXPORT_ORDER: Final = (
    "site", "agent", "camera", "bucket_start", "bucket_seconds", "rule", "rule_type", "class",
    "in", "out", "occupancy_mean", "occupancy_max", "dwell_count", "dwell_mean", "dwell_p90",
    "dwell_max", "observed_seconds",
)  # fmt: skip
_EXPORT_PICK: Final = operator.itemgetter(*(COUNT_COLUMNS.index(c) for c in _EXPORT_ORDER))
_RULE_CLASS: Final = operator.itemgetter(3, 5)
# What packed.unpack takes of a buckets row.
_BUCKET_SELECT = "site, agent, camera, start_s, end_s, observed_seconds, lines, zones"
# Counter shards: each open storage adds to one of these rows, so workers never wait on one.
COUNTER_SHARDS = 16
# Backends by URL scheme: module and class, imported when first used (psycopg only if needed).
BACKENDS = {
    "sqlite": ("pantau.central.storage.sqlite", "SqliteStorage"),
    "postgresql": ("pantau.central.storage.postgres", "PostgresStorage"),
    "postgres": ("pantau.central.storage.postgres", "PostgresStorage"),
}
GRANULARITIES = ("bucket", "hour", "day")


def _iso(epoch: float) -> str:
    return format_time(datetime.fromtimestamp(epoch, timezone.utc))


def epoch_of(iso: str) -> float:
    """An RFC 3339 time as epoch seconds (a time without an offset is UTC)."""
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def open_storage(url: str, settings: CentralSettings | None = None) -> Storage:
    """The storage a URL names, open, its schema up to date."""
    return backend_class(url)(url, settings)


def backend_class(url: str) -> type[Storage]:
    """The Storage implementation for a storage URL's scheme."""
    scheme = url.split(":", 1)[0]
    if scheme not in BACKENDS:
        raise ValueError(f"no storage backend for {scheme!r} URLs (sqlite:/// or postgresql://)")
    module, name = BACKENDS[scheme]
    cls: type[Storage] = getattr(importlib.import_module(module), name)
    return cls


@dataclass(frozen=True)
class Received:
    """One message as it came off the wire: topic, raw bytes, and the decoded message or the
    reason it was rejected."""

    topic: str
    payload: bytes
    message: Any = None
    error: str | None = None


@dataclass(frozen=True)
class CameraRef:
    """A camera as an operator names it: SITE/AGENT/CAMERA (camera names repeat across
    agents)."""

    site: str
    agent: str
    camera: str

    @classmethod
    def parse(cls, text: str) -> CameraRef:
        parts = text.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"camera {text!r}: name it as SITE/AGENT/CAMERA (camera names repeat across agents)"
            )
        return cls(*parts)


def scope_where(scope: Scope) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their arguments) on a table's site, agent and camera columns that
    keep the rows of the cameras `scope` covers."""
    clauses: list[str] = []
    args: list[Any] = []
    if scope.sites is not None:
        clauses.append(f"site IN ({', '.join('?' * len(scope.sites)) or 'NULL'})")
        args += sorted(scope.sites)
    if scope.jurisdictions is not None:
        clauses.append(
            "(site, agent, camera) IN (SELECT site, agent, camera FROM cameras WHERE "
            f"jurisdiction IN ({', '.join('?' * len(scope.jurisdictions)) or 'NULL'}))"
        )
        args += sorted(scope.jurisdictions)
    if scope.cameras is not None:
        refs = sorted((r.site, r.agent, r.camera) for r in map(CameraRef.parse, scope.cameras))
        clauses.append(
            f"(site, agent, camera) IN (VALUES {', '.join(['(?, ?, ?)'] * len(refs))})"
            if refs else "1 = 0"
        )  # fmt: skip
        args += [v for r in refs for v in r]
    return clauses, args


@dataclass(frozen=True)
class Filter:
    """Which counts an operator asks for: a period and any of site, camera, rule, class."""

    since: str | None = None
    until: str | None = None
    site: str | None = None
    agent: str | None = None
    camera: CameraRef | None = None
    rule: str | None = None
    cls: str | None = None
    scope: Scope = EVERYTHING

    def where(self, time_column: str) -> tuple[str, list[Any]]:
        clauses, args = scope_where(self.scope)
        cam = self.camera
        for clause, value in (
            (f"{time_column} >= ?", self.since),
            (f"{time_column} < ?", self.until),
            ("site = ?", cam.site if cam else self.site),
            ("agent = ?", cam.agent if cam else self.agent),
            ("camera = ?", cam.camera if cam else None),
            ("rule = ?", self.rule),
            ("class = ?", self.cls),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        return " AND ".join(clauses) or "1 = 1", args


class Storage(ABC):
    """All reads and writes of central's database. `Storage(url, settings)` opens the backend
    the URL names (as pathlib.Path picks its flavour), applying pending schema migrations;
    a database newer than this release raises SchemaTooNewError."""

    # Exceptions that mean the machine or the database failed, not a message: ingest stops on
    # them instead of dead-lettering valid data.
    environmental: ClassVar[tuple[type[BaseException], ...]] = ()

    def __new__(cls, url: str, settings: CentralSettings | None = None) -> Storage:
        if cls is Storage:
            cls = backend_class(url)
        return super().__new__(cls)

    def __init__(self, url: str, settings: CentralSettings | None = None) -> None:
        self.settings = settings or CentralSettings()
        self.url = url
        self._connect(url)
        self.seqs = SeqTracker(self)
        self._pruned_at = 0.0
        self._maintained_at = 0.0
        self._gaps_swept_at = 0.0
        self._shard = random.randrange(COUNTER_SHARDS)
        self._zones_synced: set[str] = set()
        self._pending_events: list[Event] = []
        self._forwarders = forward_queue.filters(self.settings.forwarders)
        self._sync_site_zones()
        self._sync_registry()

    # --- what each backend provides -----------------------------------------------------

    @staticmethod
    @abstractmethod
    def missing(url: str) -> str | None:
        """Why there is no database to read from at `url` (None: there is)."""

    @abstractmethod
    def _connect(self, url: str) -> None:
        """Open the database and bring its schema up to date."""

    @abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one `?`-parameter statement; return its cursor."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one `?`-parameter statement per row."""

    @abstractmethod
    def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Append rows that conflict with nothing, the fastest way the backend has."""

    @abstractmethod
    def begin(self) -> None:
        """Start a write transaction."""

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def where(self) -> str:
        """The database, fit to print (no password)."""

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def size_bytes(self) -> int:
        """Bytes the database's data takes now."""

    def _lock_agents(self, agents: list[tuple[str, str]]) -> None:  # noqa: B027
        """Serialize writers per agent (sorted, so never in a deadlock) for this transaction;
        a backend with a single writer needs nothing."""

    def try_lock(self, name: str) -> bool:
        """Take the lock `name` for this transaction unless another worker holds it (False);
        a backend with a single writer holds it with its write transaction already."""
        return True

    def _prepare_days(self, days: set[int]) -> None:  # noqa: B027
        """Make room for raw rows of these UTC days (epoch of midnight) before a transaction
        writes them (partitions); a backend with one table needs nothing."""

    @abstractmethod
    def _drop_raw_before(self, cutoff: int) -> tuple[int, int]:
        """Drop raw count rows and bucket rows of buckets starting before `cutoff` (epoch, a
        UTC midnight) with their counters; return how many of each went."""

    # --- shared helpers -----------------------------------------------------------------

    def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a `?`-parameter query, as tuples."""
        return [tuple(r) for r in self.execute(sql, args).fetchall()]

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a `?`-parameter query, as dicts by column name."""
        cur = self.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def upsert_rows(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], tail: str = ""
    ) -> None:
        """`INSERT INTO table (columns) VALUES (...), (...) tail` in chunks: one statement per
        chunk of rows (`tail`: an ON CONFLICT clause, or nothing)."""
        if not rows:
            return
        head = f"INSERT INTO {table} ({', '.join(map(quoted, columns))})"
        marks = "(" + ", ".join("?" * len(rows[0])) + ")"
        for i in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[i : i + ROWS_PER_STATEMENT]
            self.execute(
                f"{head} VALUES {', '.join([marks] * len(chunk))} {tail}",
                [v for row in chunk for v in row],
            )

    def _count(self, name: str, delta: int) -> None:
        if delta:
            self.execute(
                "INSERT INTO counters (name, shard, value) VALUES (?, ?, ?) ON CONFLICT "
                "(name, shard) DO UPDATE SET value = counters.value + excluded.value",
                (name, self._shard, delta),
            )

    def _bound(self, name: str, value: int, keep: str) -> None:
        """Lower (keep '<') or raise (keep '>') the one-row counter `name` to `value`."""
        self.execute(
            "INSERT INTO counters (name, shard, value) VALUES (?, 0, ?) ON CONFLICT (name, shard) "
            f"DO UPDATE SET value = CASE WHEN excluded.value {keep} counters.value THEN "
            "excluded.value ELSE counters.value END",
            (name, value),
        )

    def counter(self, name: str) -> int | None:
        return self.one("SELECT SUM(value) FROM counters WHERE name = ?", (name,))

    # --- writes ---------------------------------------------------------------------------

    def store(self, batch: Sequence[Received], now: float | None = None) -> dict[str, int]:
        """Store a batch (see store_batch); return only its counters."""
        return self.store_batch(batch, now)[0]

    def store_batch(
        self, batch: Sequence[Received], now: float | None = None
    ) -> tuple[dict[str, int], list[Received]]:
        """Store a batch in one transaction, received at `now` (default: the clock).

        A message already stored (same msg_id, or same natural key and content) is a
        duplicate. One that claims a seq far ahead of its agent, a counts bucket that is
        implausibly old or in the future, misaligned, overlapping a stored bucket, or a second
        copy of a stored key with other content, is dead-lettered with the reason. The hourly
        and daily rollups of the stored buckets change in the same transaction.

        Returns counters (stored, duplicate, dead) and each dead letter with its reason.
        """
        now = time.time() if now is None else now
        if now - self._maintained_at >= MAINTAIN_INTERVAL:
            self.maintain(now)
        received_at = _iso(now)
        self._prepare_days(
            {
                int(i.message.payload.bucket_start.timestamp()) // DAY * DAY
                for i in batch
                if isinstance(i.message, CountsMessage)
            }
        )
        stats = {"stored": 0, "duplicate": 0, "dead": 0}
        dead: list[Received] = []
        self._pending_events = []
        self.begin()
        try:
            self._lock_agents(
                sorted({(i.message.site, i.message.agent) for i in batch if i.message is not None})
            )
            known = self._known_ids([i.message for i in batch if isinstance(i.message, _SEQUENCED)])
            # What admission compares with, read once for the whole batch (one query each, not
            # one per message) and kept current in memory as the batch is admitted.
            anchors = self.seqs.anchors({(i.message.site, i.message.agent) for i in batch
                                         if i.message is not None})  # fmt: skip
            buckets = self._stored_buckets(
                [i.message for i in batch if isinstance(i.message, CountsMessage)]
            )
            new_buckets: list[tuple[Any, ...]] = []
            accepted: list[Any] = []
            tracked: list[Any] = []  # stored, or already stored: their seqs are accounted for
            for item in batch:
                msg = item.message
                if msg is None:
                    verdict: str | None = item.error or "invalid"
                elif isinstance(msg, _SEQUENCED) and (msg.site, msg.msg_id) in known:
                    verdict = DUPLICATE
                else:
                    verdict = self._within_window(msg, anchors, now)
                    if verdict is None and isinstance(msg, CountsMessage):
                        verdict = self._admit_bucket(msg, now, buckets, new_buckets)
                    elif verdict is None and isinstance(msg, AlertMessage | HealthMessage):
                        verdict = self._admit(msg)
                if verdict is None or verdict is DUPLICATE:
                    stats["stored" if verdict is None else "duplicate"] += 1
                    if isinstance(msg, StatusMessage | HeartbeatMessage):
                        self._agent_state(msg, now)
                    else:
                        tracked.append(msg)
                        if verdict is None:
                            accepted.append(msg)
                            known.add((msg.site, msg.msg_id))
                else:
                    item = item if item.error else Received(item.topic, item.payload, error=verdict)
                    self._dead_letter(item, received_at)
                    dead.append(item)
                    stats["dead"] += 1
            self.insert_rows("buckets", BUCKET_COLUMNS, new_buckets)
            self._record(accepted, received_at)
            self._seen({(m.site, m.agent, m.camera) for m in tracked}, now)
            self._track_seqs(tracked, received_at)
            if dead or now - self._pruned_at >= PRUNE_INTERVAL:
                self._prune_dead_letters(now)
            self._emit(self._pending_events, received_at)
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return stats, dead

    def _known_ids(self, messages: list[Any]) -> set[tuple[str, str]]:
        """(site, msg_id) of those of `messages` already stored."""
        by_site: dict[str, list[str]] = {}
        for m in messages:
            by_site.setdefault(m.site, []).append(m.msg_id)
        known: set[tuple[str, str]] = set()
        for site, ids in by_site.items():
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                known.update(
                    (site, r[0])
                    for r in self.fetch(
                        f"SELECT msg_id FROM messages WHERE site = ? AND msg_id IN ({marks})",
                        [site, *chunk],
                    )
                )
        return known

    def _within_window(
        self, msg: Any, anchors: dict[tuple[str, str], tuple[int, float | None]], now: float
    ) -> str | None:
        """Dead-letter reason if `msg` claims a seq further beyond the highest its agent has
        sent so far (any kind: status and heartbeat carry the agent's latest seq) than the
        agent can have assigned since it was last heard from: seq_window plus max_seq_rate
        per second of silence, so an agent back from a long outage is believed and a forged
        leap from a live one is not. The first message of an unknown agent sets the base."""
        key = (msg.site, msg.agent)
        (anchor, last_seen), top = anchors[key], _highest_claim(msg)
        silent = max(0.0, now - last_seen) if last_seen is not None else 0.0
        allowed = self.settings.seq_window + int(self.settings.max_seq_rate * silent)
        if anchor >= 0 and top > anchor + allowed:
            return (
                f"seq far ahead: {top} is more than {allowed} beyond {anchor}, the highest seq "
                f"agent {msg.site}/{msg.agent} has sent so far ({silent:.0f} s ago)"
            )
        anchors[key] = (max(anchor, top), last_seen)
        return None

    def _admit(self, msg: AlertMessage | HealthMessage) -> str | None:
        """Write what must be visible to the rest of the batch at once (alert or health row)
        and return None; or return DUPLICATE, or why the message is dead-lettered."""
        if isinstance(msg, AlertMessage):
            return self._alert(msg)
        self._health(msg)
        return None

    def _stored_buckets(self, messages: list[CountsMessage]) -> dict[CameraKey, list[_Bucket]]:
        """Per camera of `messages`, the stored buckets their times can touch, by start: those
        starting from the last one at or before the earliest start to the latest end."""
        spans: dict[CameraKey, tuple[int, int]] = {}
        for m in messages:
            start = int(m.payload.bucket_start.timestamp())
            key = (m.site, m.agent, m.camera)
            lo, hi = spans.get(key, (start, start))
            spans[key] = (min(lo, start), max(hi, start + m.payload.bucket_seconds))
        found: dict[CameraKey, list[_Bucket]] = {key: [] for key in spans}
        for site, agent, camera, start_s, end_s, msg_id in self._buckets_near(spans):
            found[(site, agent, camera)].append((int(start_s), int(end_s), msg_id, None))
        for have in found.values():
            have.sort()
        return found

    def _buckets_near(self, spans: dict[CameraKey, tuple[int, int]]) -> list[tuple[Any, ...]]:
        """Stored buckets (site, agent, camera, start_s, end_s, msg_id) of each camera that
        start in [lo, hi), and the last one starting at or before lo if it can reach lo (no
        bucket is longer than MAX_BUCKET_SECONDS): one query per chunk of cameras."""
        one = (
            "SELECT site, agent, camera, start_s, end_s, msg_id FROM buckets WHERE site = ? AND "
            "agent = ? AND camera = ? AND start_s < ? AND start_s >= COALESCE((SELECT "
            "MAX(start_s) FROM buckets WHERE site = ? AND agent = ? AND camera = ? AND "
            "start_s <= ? AND start_s > ?), ?)"
        )
        items = sorted(spans.items())
        found: list[tuple[Any, ...]] = []
        args = [(*key, hi, *key, lo, lo - MAX_BUCKET_SECONDS, lo) for key, (lo, hi) in items]
        for i in range(0, len(items), CAMERAS_PER_QUERY):
            chunk = args[i : i + CAMERAS_PER_QUERY]
            found += self.fetch(
                " UNION ALL ".join([one] * len(chunk)), [v for a in chunk for v in a]
            )
        return found

    def _admit_bucket(
        self,
        msg: CountsMessage,
        now: float,
        buckets: dict[CameraKey, list[_Bucket]],
        new_buckets: list[tuple[Any, ...]],
    ) -> str | None:
        """Admit a bucket against the stored and already admitted buckets of its camera
        (`buckets`, from _stored_buckets, kept current here; the row to store goes to
        `new_buckets`); or return DUPLICATE, or why it is dead-lettered."""
        p = msg.payload
        start = p.bucket_start.timestamp()
        end = start + p.bucket_seconds
        reason = _implausible(p, start, end, now, self.settings)
        if reason:
            return reason
        key = (msg.site, msg.agent, msg.camera)
        have = buckets[key]
        # Stored buckets never overlap: only the last one starting at or before this start,
        # and those starting inside it, can.
        first = max(0, bisect.bisect_right(have, (start, math.inf)) - 1)
        clash = []
        for b in have[first:]:
            if b[0] >= end:
                break
            if b[1] > start:
                clash.append(b)
        if len(clash) == 1 and clash[0][:2] == (start, end):
            other = clash[0][3]
            same = (
                self._same_counts(msg)
                if other is None
                else sorted(count_rows(other)) == sorted(count_rows(msg))
            )
            if same:
                return DUPLICATE
            return (
                f"conflict: bucket {_iso(start)} of {'/'.join(key)} is already stored from "
                f"msg_id {clash[0][2]} with other content"
            )
        if clash:
            s0, e0, other_id, _ = clash[0]
            return (
                f"bucket overlaps: [{_iso(start)}, {_iso(end)}) of {'/'.join(key)} overlaps "
                f"the stored bucket [{_iso(s0)}, {_iso(e0)}) of msg_id {other_id}"
            )
        bisect.insort(have, (int(start), int(end), msg.msg_id, msg))
        new_buckets.append(
            (*key, int(start), int(end), msg.msg_id, p.observed_seconds, *packed.pack(p))
        )
        return None

    def _same_counts(self, msg: CountsMessage) -> bool:
        stored = [
            row
            for b in self.fetch(
                f"SELECT {_BUCKET_SELECT} FROM buckets WHERE site = ? AND agent = ? AND "
                "camera = ? AND start_s = ?",
                (msg.site, msg.agent, msg.camera, int(msg.payload.bucket_start.timestamp())),
            )
            for row in packed.unpack(*b)
        ]
        return sorted(stored) == sorted(count_rows(msg))

    def _record(self, accepted: list[Any], received_at: str) -> None:
        """The message rows of stored messages, the count rows of their buckets, and what
        these add to the rollups and counters."""
        self.insert_rows(
            "messages",
            MESSAGE_COLUMNS,
            [
                (m.site, m.msg_id, m.agent, m.camera, m.kind, m.seq, format_time(m.created_at),
                 received_at)
                for m in accepted
            ],
        )  # fmt: skip
        buckets = [m for m in accepted if isinstance(m, CountsMessage)]
        # The count rows themselves went into their buckets' rows (store_batch).
        rows = [(r, m.payload.bucket_start.timestamp()) for m in buckets for r in count_rows(m)]
        self._roll_up(rows)
        self._pending_events += [_bucket_event(m) for m in buckets]
        self._count("messages", len(accepted))
        self._count("buckets", len(buckets))
        self._count("count_rows", len(rows))
        if buckets:
            starts = [int(m.payload.bucket_start.timestamp()) for m in buckets]
            self._bound("first_bucket", min(starts), "<")
            self._bound("last_bucket", max(starts), ">")

    def _roll_up(self, rows: list[tuple[tuple[Any, ...], float]]) -> None:
        hourly, daily = rollups.deltas(rows, self.settings.zone)
        for site in {k[0] for k in hourly} - self._zones_synced:
            self.execute(
                "INSERT INTO sites (site, timezone) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (site, self.settings.zone(site).key),
            )
            self._zones_synced.add(site)
        # Sorted keys: concurrent writers lock rollup rows in one order.
        for table, period, deltas in (("hourly", "hour_start", hourly), ("daily", "day", daily)):
            columns, tail = rollups.upsert_sql(table, period)
            self.upsert_rows(table, columns, [(*k, *v) for k, v in sorted(deltas.items())], tail)

    def _prune_dead_letters(self, now: float) -> None:
        """Drop dead letters past their retention, then the oldest beyond the cap; count them."""
        limits = self.settings.dead_letters
        cutoff = _iso(now - limits.max_days * DAY)
        dropped = self.execute("DELETE FROM dead_letters WHERE received_at < ?", (cutoff,)).rowcount
        dropped += self.execute(
            "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC "
            "LIMIT 1 OFFSET ?)",
            (limits.max_rows,),
        ).rowcount
        self._count("dead_letters_dropped", dropped)
        self._pruned_at = now

    def _dead_letter(self, item: Received, received_at: str) -> None:
        self.execute(
            "INSERT INTO dead_letters (received_at, topic, size, payload, reason) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                received_at,
                item.topic[:512],
                len(item.payload),
                item.payload[:DEAD_LETTER_BYTES],
                item.error or "invalid",
            ),
        )

    def _touch_agents(self, agents: Iterable[tuple[str, str]], now: float) -> None:
        self.executemany(
            "INSERT INTO agents (site, agent, last_seen) VALUES (?, ?, ?) ON CONFLICT (site, "
            "agent) DO UPDATE SET last_seen = CASE WHEN agents.last_seen > excluded.last_seen "
            "THEN agents.last_seen ELSE excluded.last_seen END",
            [(site, agent, now) for site, agent in sorted(agents)],
        )

    def _agent_state(self, msg: StatusMessage | HeartbeatMessage, now: float) -> None:
        self._touch_agents([(msg.site, msg.agent)], now)
        if isinstance(msg, StatusMessage):
            at = format_time(msg.created_at)
            self._pending_events.append(
                Event(
                    "fleet", msg.payload.state, msg.site, msg.agent, None, at,
                    f"fleet:{msg.site}/{msg.agent}@{at}:{msg.payload.state}",
                    msg.payload.model_dump(mode="json", by_alias=True),
                )
            )  # fmt: skip
            # A retained status can be older than one already applied: keep the newest.
            newest = self.execute(
                "UPDATE agents SET status = ?, status_at = ?, software = ? WHERE site = ? AND "
                "agent = ? AND (status_at IS NULL OR status_at <= ?)",
                (
                    msg.payload.state,
                    format_time(msg.created_at),
                    msg.payload.software,
                    msg.site,
                    msg.agent,
                    format_time(msg.created_at),
                ),
            ).rowcount
            if newest and msg.payload.cameras:
                self._register(
                    [
                        (msg.site, msg.agent, name, info.model_dump(mode="json"))
                        for name, info in sorted(msg.payload.cameras.items())
                    ]
                )
        else:
            self.execute(
                "UPDATE agents SET last_heartbeat = ?, outbox_messages = ?, "
                "status = COALESCE(status, 'online') WHERE site = ? AND agent = ?",
                (now, msg.payload.outbox_messages, msg.site, msg.agent),
            )
        self.execute(
            "UPDATE agents SET high_water_seq = ? WHERE site = ? AND agent = ? AND "
            "high_water_seq < ?",
            (msg.seq, msg.site, msg.agent, msg.seq),
        )
        key = (msg.site, msg.agent, msg.epoch)
        self.execute(
            "INSERT INTO epochs (site, agent, epoch, high_water_seq) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (site, agent, epoch) DO UPDATE SET high_water_seq = CASE WHEN "
            "epochs.high_water_seq > excluded.high_water_seq THEN epochs.high_water_seq ELSE "
            "excluded.high_water_seq END",
            (*key, msg.seq),
        )
        # A new tail checkpoint once the last one is stored: what the agent says it has sent
        # by now must be here within tail_gap_after, or the rest shows as an open gap.
        self.execute(
            "UPDATE epochs SET tail_seq = ?, tail_at = ? WHERE site = ? AND agent = ? AND "
            "epoch = ? AND (tail_seq IS NULL OR tail_seq <= max_seq) AND ? > max_seq",
            (msg.seq, now, *key, msg.seq),
        )
        if isinstance(msg, HeartbeatMessage):
            self.execute(
                "UPDATE agents SET epoch = ? WHERE site = ? AND agent = ?",
                (msg.epoch, msg.site, msg.agent),
            )

    def _seen(self, cameras: set[tuple[str, str, str]], now: float) -> None:
        self._touch_agents({(s, a) for s, a, _ in cameras}, now)
        self.executemany(
            "INSERT INTO cameras (site, agent, camera, last_seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (site, agent, camera) DO UPDATE SET last_seen = CASE WHEN "
            "cameras.last_seen > excluded.last_seen THEN cameras.last_seen ELSE "
            "excluded.last_seen END",
            [(*key, now) for key in sorted(cameras)],
        )

    def _alert(self, msg: AlertMessage) -> str | None:
        p = msg.payload
        row = (
            msg.site,
            msg.agent,
            msg.camera,
            p.alert_id,
            p.state,
            p.type,
            p.severity,
            format_time(p.started_at),
            format_time(p.ended_at) if p.ended_at else None,
            p.rule,
            json.dumps(p.details),
            format_time(msg.created_at),
            msg.msg_id,
        )
        stored = self.execute(
            "SELECT * FROM alerts WHERE site = ? AND agent = ? AND alert_id = ? AND state = ?",
            (msg.site, msg.agent, p.alert_id, p.state),
        ).fetchone()
        if stored is None:
            self.execute("INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            self._pending_events += alert_objects.on_message(self, msg, duplicate=False)
            return None
        # A resend may be stamped anew (created_at, msg_id); what it says must be the same.
        if tuple(stored[:-2]) == row[:-2]:
            self._pending_events += alert_objects.on_message(self, msg, duplicate=True)
            return DUPLICATE
        return (
            f"conflict: alert {p.alert_id} ({p.state}) of {msg.site}/{msg.agent} is already "
            f"stored from msg_id {stored[-1]} with other content"
        )

    def _health(self, msg: HealthMessage) -> None:
        p = msg.payload
        created = format_time(msg.created_at)
        self.execute(
            "INSERT INTO health (site, agent, camera, created_at, state, fps_target, "
            "fps_effective, frames_read, frames_analyzed, details, msg_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                msg.site,
                msg.agent,
                msg.camera,
                created,
                p.state,
                p.fps_target,
                p.fps_effective,
                p.frames_read,
                p.frames_analyzed,
                json.dumps(p.details),
                msg.msg_id,
            ),
        )
        self.execute(
            "UPDATE cameras SET health = ?, health_at = ? WHERE site = ? AND agent = ? AND "
            "camera = ? AND (health_at IS NULL OR health_at <= ?)",
            (p.state, created, msg.site, msg.agent, msg.camera, created),
        )
        self._pending_events.append(
            Event(
                "health", p.state, msg.site, msg.agent, msg.camera, created,
                f"health:{msg.site}:{msg.msg_id}", p.model_dump(mode="json", by_alias=True),
            )
        )  # fmt: skip

    def _track_seqs(self, messages: list[Any], received_at: str) -> None:
        """Account per agent epoch for the seqs of stored messages: their own, those merged
        into them, and those a buffer_overflow alert declares lost."""
        by_agent: dict[tuple[str, str, str], tuple[list[int], list[Range]]] = {}
        for m in messages:
            seen, lost = by_agent.setdefault((m.site, m.agent, m.epoch), ([], []))
            seen.append(m.seq)
            if isinstance(m, CountsMessage):
                seen.extend(m.payload.merged_seqs)
            elif isinstance(m, AlertMessage) and m.payload.type == "buffer_overflow":
                lost.extend((a, b) for a, b in m.payload.details.get("lost_seqs", []))
        for (site, agent, epoch), (seen, lost) in sorted(by_agent.items()):
            self.seqs.account(site, agent, epoch, seen, lost, received_at)

    def defer_gaps(self) -> None:
        """Record a hole in an agent's seqs only once it has lasted settings.gap_grace (see
        SeqTracker), by `sweep_gaps`, which must then be called regularly: for ingest workers.
        Without this, a hole is recorded as a gap in the transaction that opens it."""
        self.seqs.grace = self.settings.gap_grace

    def sweep_gaps(self, now: float | None = None) -> int:
        """With deferred gaps, at most once per grace: record in one transaction the holes that
        have lasted (SeqTracker.sweep). Returns how many gaps were recorded."""
        now = time.time() if now is None else now
        if not self.seqs.grace or now - self._gaps_swept_at < self.seqs.grace:
            return 0
        self.begin()
        try:
            recorded = self.seqs.sweep(_iso(now), self._lock_agents)
            self.commit()
        except BaseException:
            self.rollback()
            raise
        self._gaps_swept_at = now
        return recorded

    def database_id(self) -> str:
        """This database's random id, made the first time it is asked for and kept in it (a
        one-row counter, so no schema change): acks carry it, so that an agent notices when
        central's database was replaced and stops trusting the acks of the one before."""
        self.execute(
            "INSERT INTO counters (name, shard, value) VALUES ('database_id', 0, ?) "
            "ON CONFLICT (name, shard) DO NOTHING",
            (random.SystemRandom().getrandbits(62),),
        )
        return f"{self.counter('database_id'):016x}"

    def acknowledgement(self, site: str, agent: str, epoch: str) -> tuple[int, list[Range]]:
        """What central has durably accounted for of one agent epoch (see SeqTracker)."""
        return self.seqs.received_ranges(site, agent, epoch, MAX_ACK_RANGES)

    # --- camera registry -------------------------------------------------------------------

    def _register(self, reported: list[tuple[str, str, str, dict[str, Any] | None]]) -> None:
        """Store what agents say of their cameras (None: keep what is stored) and set the
        registry columns to it with central.yaml's overrides on top, in the caller's
        transaction."""
        rows = []
        for site, agent, camera, entry in reported:
            if entry is None:
                entry = json.loads(
                    self.one(
                        "SELECT reported FROM cameras WHERE site = ? AND agent = ? AND camera = ?",
                        (site, agent, camera),
                    )
                    or "null"
                )
            override = self.settings.cameras.get(f"{site}/{agent}/{camera}")
            applied = (
                None
                if override is None
                else override.model_dump(mode="json", include=override.model_fields_set)
            )
            rows.append(
                (site, agent, camera, None if entry is None else json.dumps(entry, sort_keys=True),
                 None if applied is None else json.dumps(applied, sort_keys=True),
                 *registry_columns({**(entry or {}), **(applied or {})}))
            )  # fmt: skip
        self.executemany(
            "INSERT INTO cameras (site, agent, camera, reported, overrides, jurisdiction, lat, "
            "lon, address, description, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
            "(site, agent, camera) DO UPDATE SET reported = excluded.reported, overrides = "
            "excluded.overrides, jurisdiction = excluded.jurisdiction, lat = excluded.lat, "
            "lon = excluded.lon, address = excluded.address, description = excluded.description, "
            "tags = excluded.tags",
            rows,
        )

    def _sync_registry(self) -> None:
        """Apply central.yaml's camera overrides where they differ from those applied last
        (added, changed or removed), creating the rows of cameras not seen yet."""
        wanted: dict[tuple[Any, ...], str] = {
            tuple(name.split("/")): json.dumps(
                o.model_dump(mode="json", include=o.model_fields_set), sort_keys=True
            )
            for name, o in self.settings.cameras.items()
        }
        applied: dict[tuple[Any, ...], str] = {
            (s, a, c): o
            for s, a, c, o in self.fetch(
                "SELECT site, agent, camera, overrides FROM cameras WHERE overrides IS NOT NULL"
            )
        }
        stale = sorted(k for k in wanted.keys() | applied.keys() if wanted.get(k) != applied.get(k))
        if not stale:
            return
        self.begin()
        try:
            self._register([(s, a, c, None) for s, a, c in stale])
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def cameras(self, scope: Scope = EVERYTHING) -> list[dict[str, Any]]:
        """The cameras `scope` covers, with their registry entry, health and last seen."""
        return [
            r
            for r in self._cameras("1 = 1", ())
            if scope.covers(r["site"], r["agent"], r["camera"], r["jurisdiction"])
        ]

    def camera(self, ref: CameraRef) -> dict[str, Any] | None:
        """One camera as `cameras` shows it (None: never seen nor configured)."""
        found = self._cameras("site = ? AND agent = ? AND camera = ?",
                              (ref.site, ref.agent, ref.camera))  # fmt: skip
        return found[0] if found else None

    def _cameras(self, where: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        found = self.rows(
            "SELECT site, agent, camera, jurisdiction, lat, lon, address, description, tags, "
            f"health, health_at, last_seen FROM cameras WHERE {where} "
            "ORDER BY site, agent, camera",
            args,
        )
        for r in found:
            lat, lon = r.pop("lat"), r.pop("lon")
            r["location"] = None if lat is None else {"lat": lat, "lon": lon}
            r["tags"] = json.loads(r["tags"] or "[]")
            r["last_seen"] = _ts(r["last_seen"])
        return found

    # --- API tokens --------------------------------------------------------------------------

    def add_token(self, name: str, role: str, scope: Scope, created_by: str | None = None) -> str:
        """Store a new token (only its hash) and return its secret, to be shown once."""
        try:
            check_segment(name, "token name")
        except ProtocolError as exc:
            raise TokenError(exc.reason) from None
        check_role(role)
        secret = new_secret()
        self.begin()
        try:
            if self.one("SELECT 1 FROM tokens WHERE name = ? AND revoked_at IS NULL", (name,)):
                raise TokenError(f"a token named {name!r} exists already (revoke it first)")
            self.execute(
                "INSERT INTO tokens (hash, name, role, scope, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (digest(secret), name, role, json.dumps(scope.to_json()), _iso(time.time()),
                 created_by),
            )  # fmt: skip
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return secret

    def token(self, secret: str) -> Token | None:
        """The live (not revoked) token whose secret this is."""
        rows = self._tokens("hash = ? AND revoked_at IS NULL", (digest(secret),))
        return rows[0] if rows else None

    def tokens(self, include_revoked: bool = True) -> list[Token]:
        return self._tokens("1 = 1" if include_revoked else "revoked_at IS NULL", ())

    def _tokens(self, where: str, args: Sequence[Any]) -> list[Token]:
        return [
            Token(name, role, Scope.from_json(json.loads(scope)), created, by, revoked)
            for name, role, scope, created, by, revoked in self.fetch(
                "SELECT name, role, scope, created_at, created_by, revoked_at FROM tokens "
                f"WHERE {where} ORDER BY name, created_at",
                args,
            )
        ]

    def revoke_token(self, name: str) -> Token:
        """Revoke the live token `name`: it stops working at once."""
        live = self._tokens("name = ? AND revoked_at IS NULL", (name,))
        if not live:
            raise TokenError(f"no live token named {name!r}")
        self.begin()
        try:
            at = _iso(time.time())
            self.execute(
                "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (at, name),
            )
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return dataclasses.replace(live[0], revoked_at=at)

    # --- alert objects (see pantau.central.alerts) -----------------------------------------

    def alerts(
        self,
        scope: Scope = Scope(),
        open_only: bool = False,
        since: str | None = None,
        until: str | None = None,
        site: str | None = None,
        jurisdiction: str | None = None,
        type: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Alert objects of agents and count rules that `scope` covers, newest raised first;
        `since`/`until` bound raised_at."""
        clauses, args = alert_objects.scope_where(scope)
        for clause, value in (
            ("o.state = 'open'", True if open_only else None),
            ("o.raised_at >= ?", since),
            ("o.raised_at < ?", until),
            ("o.site = ?", site),
            ("c.jurisdiction = ?", jurisdiction),
            ("o.type = ?", type),
        ):
            if value is not None:
                clauses.append(clause)
                args += [] if value is True else [value]
        return alert_objects.fetch(
            self, " AND ".join(clauses) or "1 = 1", [*args, limit],
            "ORDER BY o.raised_at DESC, o.id DESC LIMIT ?",
        )  # fmt: skip

    def alert(self, id: int) -> dict[str, Any] | None:
        """One alert object by id (None: no such alert)."""
        found = alert_objects.fetch(self, "o.id = ?", [id])
        return found[0] if found else None

    def ack_alert(
        self, id: int, who: str, note: str = "", now: float | None = None
    ) -> dict[str, Any]:
        """Acknowledge an alert (who, when, a note: visible to everyone who may see it);
        AlertNotFound for an unknown id."""
        now = time.time() if now is None else now
        self._change_alerts(now, lambda: alert_objects.acknowledge(self, id, who, note, now))
        return alert_objects.one(self, id)

    def clear_alert(
        self, id: int, who: str, note: str = "", now: float | None = None
    ) -> dict[str, Any]:
        """Clear an alert as operator `who` (an alert already cleared stays as it was);
        AlertNotFound for an unknown id."""
        now = time.time() if now is None else now
        self._change_alerts(now, lambda: alert_objects.operator_clear(self, id, who, note, now))
        return alert_objects.one(self, id)

    def clear_silent_alerts(self, now: float | None = None) -> list[dict[str, Any]]:
        """Clear the open alerts of cameras and agents silent or offline for longer than
        alerts.offline_clear_after; return them."""
        now = time.time() if now is None else now
        after = self.settings.alerts.offline_clear_after
        events = self._change_alerts(now, lambda: alert_objects.clear_silent(self, now, after))
        return [e.body for e in events]

    def _change_alerts(self, now: float, change: Callable[[], list[Event]]) -> list[Event]:
        """Run `change` in a transaction that also logs the events it returns."""
        self.begin()
        try:
            events = change()
            self._emit(events, _iso(now))
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return events

    # --- outgoing events -------------------------------------------------------------------

    def _emit(self, events: list[Event], recorded_at: str) -> None:
        """Append `events` to the event log, in the caller's transaction, each with its
        camera's jurisdiction from the registry; an event whose key is logged already (the same
        change recorded again) is not logged twice. Each new one is queued for every forwarder
        whose filter it matches."""
        if not events:
            return
        places = sorted({(e.site, e.agent, e.camera) for e in events if e.camera is not None})
        # One query per chunk of cameras, not one per camera.
        where: dict[tuple[str, str, str | None], str | None] = {}
        for i in range(0, len(places), 300):
            chunk = places[i : i + 300]
            where.update(
                ((s, a, c), j)
                for s, a, c, j in self.fetch(
                    "SELECT site, agent, camera, jurisdiction FROM cameras WHERE "
                    f"(site, agent, camera) IN (VALUES {', '.join(['(?, ?, ?)'] * len(chunk))})",
                    [v for place in chunk for v in place],
                )
            )
        events = forward_queue.with_jurisdictions(events, where)
        # Before logging: what is logged already was queued when it was.
        forward_queue.enqueue(self, self._forwarders, events, recorded_at)
        self.upsert_rows(
            "events",
            ("at", "recorded_at", "kind", "action", "site", "agent", "camera", "jurisdiction",
             "key", "body"),
            [
                (e.at, recorded_at, e.kind, e.action, e.site, e.agent, e.camera,
                 e.jurisdiction, e.key, json.dumps(e.body, separators=(",", ":")))
                for e in events
            ],
            "ON CONFLICT (key) DO NOTHING",
        )  # fmt: skip
        self._pending_events = []

    def jurisdiction(self, site: str, agent: str, camera: str) -> str | None:
        """The registry's jurisdiction of a camera (None: not known)."""
        return self.one(
            "SELECT jurisdiction FROM cameras WHERE site = ? AND agent = ? AND camera = ?",
            (site, agent, camera),
        )

    def events_after(
        self, after_id: int = 0, limit: int = 1000, kinds: Sequence[str] | None = None
    ) -> list[Event]:
        """Logged events with an id above `after_id`, oldest first."""
        sql = (
            "SELECT id, kind, action, site, agent, camera, at, key, body, jurisdiction "
            "FROM events WHERE id > ?"
        )
        args: list[Any] = [after_id]
        if kinds:
            sql += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            args += list(kinds)
        rows = self.fetch(sql + " ORDER BY id LIMIT ?", [*args, limit])
        return [
            Event(kind, action, site, agent, camera, at, key, json.loads(body), where, id=i)
            for i, kind, action, site, agent, camera, at, key, body, where in rows
        ]

    def last_event_id(self) -> int:
        return int(self.one("SELECT COALESCE(MAX(id), 0) FROM events"))

    # --- upkeep ---------------------------------------------------------------------------

    def maintain(self, now: float | None = None) -> dict[str, int]:
        """Retention (raw counts, rollups, dedupe and closed gaps, health) and the raw
        partitions of the days ahead; return how many rows each step dropped."""
        now = time.time() if now is None else now
        today = int(now) // DAY * DAY
        self._prepare_days({today + d * DAY for d in range(8)})
        keep = self.settings.retention
        raw_cutoff = int(now - keep.raw_days * DAY) // DAY * DAY  # whole days only
        dropped: dict[str, int] = {}
        dropped["count_rows"], dropped["buckets"] = self._drop_raw_before(raw_cutoff)
        sites = [r[0] for r in self.fetch("SELECT site FROM sites")]
        roll_cutoff = now - keep.hourly_days * DAY
        dedupe_cutoff = _iso(now - keep.dedupe_days * DAY)
        steps = (
            ("hourly", "DELETE FROM hourly WHERE site = ? AND hour_start < ?",
             lambda site: _iso(rollups.hour_start(roll_cutoff))),
            ("daily", "DELETE FROM daily WHERE site = ? AND day < ?",
             lambda site: rollups.local_day(rollups.hour_start(roll_cutoff),
                                            self.settings.zone(site))),
            ("messages", "DELETE FROM messages WHERE site = ? AND received_at < ?",
             lambda site: dedupe_cutoff),
            ("gaps", "DELETE FROM gaps WHERE site = ? AND closed_at < ?",
             lambda site: dedupe_cutoff),
            ("health", "DELETE FROM health WHERE site = ? AND created_at < ?",
             lambda site: _iso(raw_cutoff)),
        )  # fmt: skip
        self.begin()
        try:
            for name, sql, cutoff in steps:
                dropped[name] = sum(self.execute(sql, (s, cutoff(s))).rowcount for s in sites)
            dropped["events"] = self.execute(
                "DELETE FROM events WHERE recorded_at < ?", (_iso(now - keep.events_hours * 3600),)
            ).rowcount
            dropped.update(self._drop_old_alerts(_iso(now - keep.alerts_days * DAY)))
            dropped["evidence"] = self.execute(
                "DELETE FROM evidence WHERE stored_at < ?", (_iso(now - keep.evidence_days * DAY),)
            ).rowcount
            self._count("messages", -dropped["messages"])
            if dropped["buckets"]:
                first = self.one("SELECT MIN(start_s) FROM buckets WHERE start_s >= ?",
                                 (raw_cutoff,))  # fmt: skip
                self.execute("DELETE FROM counters WHERE name = 'first_bucket'")
                if first is not None:
                    self._bound("first_bucket", first, "<")
            self.commit()
        except BaseException:
            self.rollback()
            raise
        self._maintained_at = now
        return dropped

    def _drop_old_alerts(self, cutoff: str) -> dict[str, int]:
        """Drop alert objects cleared before `cutoff`, the links and agent alert messages of
        their alert ids (none of which is open), and evidence audit records before it."""
        gone = (
            "SELECT l.site, l.agent, l.alert_id FROM alert_links l JOIN alert_objects o "
            "ON o.id = l.object WHERE o.state = 'cleared' AND o.cleared_at < ?"
        )
        return {
            "alert_messages": self.execute(
                f"DELETE FROM alerts WHERE (site, agent, alert_id) IN ({gone})", (cutoff,)
            ).rowcount,
            "alert_links": self.execute(
                "DELETE FROM alert_links WHERE object IN (SELECT id FROM alert_objects "
                "WHERE state = 'cleared' AND cleared_at < ?)",
                (cutoff,),
            ).rowcount,
            "alerts": self.execute(
                "DELETE FROM alert_objects WHERE state = 'cleared' AND cleared_at < ?", (cutoff,)
            ).rowcount,
            "evidence_audit": self.execute(
                "DELETE FROM evidence_audit WHERE at < ?", (cutoff,)
            ).rowcount,
        }

    def _sync_site_zones(self) -> None:
        """Rebuild the daily rollups of every site whose time zone is not the one they were
        made in (changed in the configuration, or a database from before rollups)."""
        stale = [
            site
            for site, zone in self.fetch("SELECT site, timezone FROM sites")
            if zone != self.settings.zone(site).key
        ]
        for site in stale:
            zone = self.settings.zone(site)
            days: rollups.Deltas = {}
            for r in self.fetch(
                f"SELECT agent, camera, rule, class, hour_start, rule_type, "
                f"{', '.join(quoted(m) for m in rollups.MEASURES)} FROM hourly WHERE site = ?",
                (site,),
            ):
                day = rollups.local_day(int(epoch_of(r[4])), zone)
                rollups.add(days, (site, *r[:4], day), r[5], list(r[6:]))
            self.begin()
            try:
                self.execute("DELETE FROM daily WHERE site = ?", (site,))
                columns, tail = rollups.upsert_sql("daily", "day")
                rows = [(*k, *v) for k, v in sorted(days.items())]
                self.upsert_rows("daily", columns, rows, tail)
                self.execute("UPDATE sites SET timezone = ? WHERE site = ?", (zone.key, site))
                self.commit()
            except BaseException:
                self.rollback()
                raise
        self._zones_synced.update(site for (site,) in self.fetch("SELECT site FROM sites"))

    # --- reads ----------------------------------------------------------------------------

    def counts(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        site: str | None = None,
        agent: str | None = None,
        camera: CameraRef | None = None,
        rule: str | None = None,
        cls: str | None = None,
        scope: Scope = EVERYTHING,
    ) -> Iterator[dict[str, Any]]:
        """Raw count rows, one per stored bucket, rule and class, oldest first: read from the
        packed buckets along their key (site, agent, camera, start_s), rule and class picked
        as they are unpacked."""
        where, args = Filter(None, None, site, agent, camera, None, None, scope).where("start_s")
        # Bucket starts are whole seconds: start >= since and start < until, in integers.
        for bound, op in ((since, ">="), (until, "<")):
            if bound is not None:
                where += f" AND start_s {op} ?"
                args.append(math.ceil(epoch_of(bound)))
        for b in self.fetch(
            f"SELECT {_BUCKET_SELECT} FROM buckets WHERE {where} "
            "ORDER BY start_s, site, agent, camera",
            args,
        ):
            for r in sorted(packed.unpack(*b), key=_RULE_CLASS):
                if (rule is None or r[3] == rule) and (cls is None or r[5] == cls):
                    yield dict(zip(_EXPORT_ORDER, _EXPORT_PICK(r), strict=True))

    def rollup(
        self, granularity: str, query: Filter, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Totals per camera, rule and class per period: `bucket` (the raw rows), `hour` (UTC
        hours, with the site's local time) or `day` (the site's local days; `since`/`until`
        are then compared with the local date). Line rules have in/out, zone rules entries
        and mean dwell. `limit` and `offset` page through them."""
        if granularity == "bucket":
            found = self.counts(since=query.since, until=query.until, site=query.site,
                                agent=query.agent, camera=query.camera, rule=query.rule,
                                cls=query.cls, scope=query.scope)  # fmt: skip
            stop = None if limit is None else offset + limit
            return list(itertools.islice(found, offset, stop))
        table, period = {"hour": ("hourly", "hour_start"), "day": ("daily", "day")}[granularity]
        where, args = query.where(period)
        rows = self.rows(
            f"SELECT site, agent, camera, {period}, rule, rule_type, class, "
            f'"in", "out", entries, dwell_seconds, observed_seconds, rows AS buckets FROM {table} '
            f"WHERE {where} ORDER BY {period}, site, agent, camera, rule, class"
            + ("" if limit is None else " LIMIT ? OFFSET ?"),
            args if limit is None else [*args, limit, offset],
        )
        for r in rows:
            dwell = r.pop("dwell_seconds")
            r["dwell_mean"] = round(dwell / r["entries"], 3) if r["entries"] else None
            if period == "hour_start":
                local = datetime.fromtimestamp(epoch_of(r[period]), self.settings.zone(r["site"]))
                r["local"] = local.isoformat(timespec="minutes")
        return rows

    def busiest(self, day: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
        """The cameras with the most line crossings (in + out) on a local day (default: each
        site's yesterday), from the daily rollups."""
        found: list[dict[str, Any]] = []
        for (site,) in self.fetch("SELECT site FROM sites ORDER BY site"):
            local = day or (datetime.now(self.settings.zone(site)).date() - timedelta(days=1))
            found += self.rows(
                'SELECT site, agent, camera, day, SUM("in" + "out") AS crossings FROM daily '
                "WHERE site = ? AND day = ? AND rule_type = 'line' GROUP BY site, agent, camera, "
                "day ORDER BY crossings DESC LIMIT ?",
                (site, str(local), limit),
            )
        return sorted(found, key=lambda r: -r["crossings"])[:limit]

    def pattern(
        self,
        site: str,
        *,
        weeks: int = 8,
        camera: CameraRef | None = None,
        rule: str | None = None,
        cls: str | None = None,
        now: float | None = None,
        scope: Scope = EVERYTHING,
    ) -> dict[str, Any]:
        """The visit pattern of a site (or one camera, rule or class) over the `weeks` weeks
        before the current hour: per local hour of week the mean, median and p90 of line
        crossings and of zone entries over the weeks with data, their number, and the mean
        dwell (see patterns.hour_of_week)."""
        if camera is not None and camera.site != site:
            raise ValueError(f"camera {camera.site}/{camera.agent}/{camera.camera} is not in "
                             f"site {site}")  # fmt: skip
        end = rollups.hour_start(time.time() if now is None else now)
        query = Filter(_iso(end - weeks * 7 * DAY), _iso(end), site, None, camera, rule, cls,
                       scope)  # fmt: skip
        where, args = query.where("hour_start")
        hours = self.fetch(
            "SELECT hour_start, "
            'SUM(CASE WHEN rule_type = \'line\' THEN "in" + "out" ELSE 0 END), '
            "SUM(CASE WHEN rule_type = 'zone' THEN entries ELSE 0 END), "
            "SUM(CASE WHEN rule_type = 'zone' THEN dwell_seconds ELSE 0 END), "
            "MAX(CASE WHEN rule_type = 'line' THEN 1 ELSE 0 END), "
            "MAX(CASE WHEN rule_type = 'zone' THEN 1 ELSE 0 END) "
            f"FROM hourly WHERE {where} GROUP BY hour_start",
            args,
        )
        zone = self.settings.zone(site)
        slots = patterns.hour_of_week(
            ((int(epoch_of(h)), c, e, d, bool(ln), bool(z)) for h, c, e, d, ln, z in hours), zone
        )
        return {"site": site, "timezone": zone.key, "weeks": weeks, "from": query.since,
                "to": query.until, "slots": slots}  # fmt: skip

    def totals(self) -> dict[str, dict[str, dict[str, dict[str, dict[str, int]]]]]:
        """Line totals: agent -> camera -> rule -> class -> {in, out}."""
        out: dict[str, Any] = {}
        for r in self.rows(
            'SELECT agent, camera, rule, class, SUM("in") AS i, SUM("out") AS o FROM counts '
            "WHERE rule_type = 'line' GROUP BY agent, camera, rule, class"
        ):
            out.setdefault(r["agent"], {}).setdefault(r["camera"], {}).setdefault(r["rule"], {})[
                r["class"]
            ] = {"in": r["i"], "out": r["o"]}
        return out

    def agents(self, heartbeat_timeout: float) -> list[dict[str, Any]]:
        now = time.time()
        cams = {
            (s, a): n
            for s, a, n in self.fetch(
                "SELECT site, agent, COUNT(*) FROM cameras GROUP BY site, agent"
            )
        }
        rows = []
        for r in self.rows("SELECT * FROM agents ORDER BY site, agent"):
            state = r["status"] or "unknown"
            if state == "online" and (now - (r["last_seen"] or 0)) > heartbeat_timeout:
                state = "stale"
            rows.append(
                {
                    "site": r["site"],
                    "agent": r["agent"],
                    "state": state,
                    "last_seen": _ts(r["last_seen"]),
                    "cameras": cams.get((r["site"], r["agent"]), 0),
                    "max_seq": r["max_seq"],
                    "high_water_seq": r["high_water_seq"],
                    "behind": max(0, r["high_water_seq"] - r["max_seq"]),
                    "outbox": r["outbox_messages"],
                }
            )
        return rows

    def gaps(self, include_closed: bool = True, now: float | None = None) -> list[dict[str, Any]]:
        """Stored gaps, and each epoch's tail: seqs its heartbeats said were sent more than
        tail_gap_after ago that never arrived (open, missing; they are not in `gaps` because
        nothing above them arrived either)."""
        where = "" if include_closed else "WHERE closed_at IS NULL"
        rows = self.rows(
            "SELECT site, agent, epoch, seq_from, seq_to, detected_at, closed_at, missing, lost "
            f"FROM gaps {where}"
        )
        rows += self._tails(now)
        return sorted(rows, key=lambda g: (g["site"], g["agent"], g["epoch"], g["seq_from"]))

    def _tails(self, now: float | None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        return [
            {
                "site": site, "agent": agent, "epoch": epoch, "seq_from": top + 1,
                "seq_to": tail, "detected_at": _iso(at + self.settings.tail_gap_after),
                "closed_at": None, "missing": tail - top, "lost": 0,
            }
            for site, agent, epoch, top, tail, at in self.fetch(
                "SELECT site, agent, epoch, max_seq, tail_seq, tail_at FROM epochs "
                "WHERE tail_seq > max_seq AND tail_at <= ?",
                (now - self.settings.tail_gap_after,),
            )
        ]  # fmt: skip

    def dead_letters(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT id, received_at, topic, size, reason, payload FROM dead_letters "
            "ORDER BY id DESC LIMIT ?",
            [limit],
        )

    # --- evidence on request (central.evidence fetches the frames; these keep them) ---------

    def store_evidence(
        self,
        camera: CameraRef,
        alert_id: str,
        frames: Sequence[dict[str, Any]],
        audit: dict[str, Any],
        now: float | None = None,
    ) -> None:
        """Keep an alert's fetched frames (each a dict of idx, taken_at, offset_seconds, width,
        height, sha256 and jpeg; none for a request that brought nothing) and the request's
        audit record (who, why, outcome, detail) in one transaction. A frame already kept
        (same alert and index) stays as it was."""
        at = _iso(time.time() if now is None else now)
        place = (camera.site, camera.agent, camera.camera, alert_id)
        self.begin()
        try:
            for f in frames:
                self.execute(
                    "INSERT INTO evidence (site, agent, camera, alert_id, idx, taken_at, "
                    "offset_seconds, width, height, stored_at, jpeg, sha256, size) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (site, agent, alert_id, idx) DO NOTHING",
                    (*place, f["idx"], f["taken_at"], f["offset_seconds"], f["width"],
                     f["height"], at, f["jpeg"], f["sha256"], len(f["jpeg"])),
                )  # fmt: skip
            self.execute(
                "INSERT INTO evidence_audit (at, who, why, site, agent, camera, alert_id, "
                "outcome, detail, frames) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (at, audit["who"], audit["why"], *place, audit["outcome"], audit["detail"],
                 len(frames)),
            )  # fmt: skip
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def evidence_for(
        self,
        site: str | None = None,
        agent: str | None = None,
        alert_id: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Metadata of the kept frames (no JPEG bytes: see evidence_jpeg), of one alert when
        all three are given, in alert and time order."""
        where, args = _equal(site=site, agent=agent, alert_id=alert_id)
        return self.rows(
            f"{_EVIDENCE_SELECT} {where} ORDER BY site, agent, alert_id, idx LIMIT ?",
            [*args, limit],
        )

    def evidence_frame(self, evidence_id: int) -> dict[str, Any] | None:
        """The metadata of one kept frame (as evidence_for gives it); None if there is none."""
        rows = self.rows(f"{_EVIDENCE_SELECT} WHERE id = ?", (evidence_id,))
        return rows[0] if rows else None

    def evidence_jpeg(self, evidence_id: int) -> bytes | None:
        """The JPEG of one kept frame (an id from evidence_for); None if there is none."""
        found = self.one("SELECT jpeg FROM evidence WHERE id = ?", (evidence_id,))
        return None if found is None else bytes(found)

    def evidence_audit(
        self,
        site: str | None = None,
        agent: str | None = None,
        alert_id: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The audit of evidence requests, newest first: who asked, when, why, for which
        alert, the outcome and how many frames came."""
        where, args = _equal(site=site, agent=agent, alert_id=alert_id)
        return self.rows(
            "SELECT id, at, who, why, site, agent, camera, alert_id, outcome, detail, frames "
            f"FROM evidence_audit {where} ORDER BY id DESC LIMIT ?",
            [*args, limit],
        )

    def summary(self) -> dict[str, Any]:
        """What is stored, from counters and small tables: as fast on a year as on a day."""
        first, last = self.counter("first_bucket"), self.counter("last_bucket")
        return {
            "database": self.where,
            "schema_version": self.schema_version(),
            "messages": self.counter("messages") or 0,
            "count_rows": self.counter("count_rows") or 0,
            "buckets": self.counter("buckets") or 0,
            "alerts": self.one("SELECT COUNT(*) FROM alerts"),
            "open_alerts": self.one("SELECT COUNT(*) FROM alert_objects WHERE state = 'open'"),
            "agents": self.one("SELECT COUNT(*) FROM agents"),
            "cameras": self.one("SELECT COUNT(*) FROM cameras"),
            "open_gaps": self.one("SELECT COUNT(*) FROM gaps WHERE closed_at IS NULL")
            + len(self._tails(None)),
            "dead_letters": self.one("SELECT COUNT(*) FROM dead_letters"),
            "dead_letters_dropped": self.counter("dead_letters_dropped") or 0,
            "first_bucket": None if first is None else _iso(first),
            "last_bucket": None if last is None else _iso(last),
        }


# Rows per multi-row statement: executemany would pay a round trip (PostgreSQL) or a GIL
# handoff to the busy MQTT thread (SQLite, 22 vs 5 us a row) for every row.
ROWS_PER_STATEMENT = 256


# What evidence_for shows of a kept frame besides id, stored_at and size (store_evidence's
# frame dicts hold these and `jpeg`).
EVIDENCE_COLUMNS: Final = (
    "site", "agent", "camera", "alert_id", "idx", "taken_at", "offset_seconds", "width",
    "height", "sha256",
)  # fmt: skip
_EVIDENCE_SELECT: Final = f"SELECT id, {', '.join(EVIDENCE_COLUMNS)}, stored_at, size FROM evidence"


def _equal(**columns: Any) -> tuple[str, list[Any]]:
    """`WHERE a = ? AND b = ?` for the columns given a value (not None), and the values."""
    given = {k: v for k, v in columns.items() if v is not None}
    if not given:
        return "", []
    return "WHERE " + " AND ".join(f"{k} = ?" for k in given), list(given.values())


def quoted(column: str) -> str:
    return f'"{column}"'


def _highest_claim(msg: Any) -> int:
    """The highest seq a message speaks for: its own, those merged into it, those it declares
    lost."""
    top = int(msg.seq)
    if isinstance(msg, CountsMessage) and msg.payload.merged_seqs:
        top = max(top, *msg.payload.merged_seqs)
    elif isinstance(msg, AlertMessage) and msg.payload.type == "buffer_overflow":
        top = max([top, *(b for _, b in msg.payload.details.get("lost_seqs", []))])
    return top


def _implausible(
    p: CountsPayload, start: float, end: float, now: float, settings: CentralSettings
) -> str | None:
    """Why a bucket cannot be right whatever is stored: its time, or its alignment."""
    if start < now - settings.max_bucket_age_days * DAY:
        return (
            f"bucket too old: it starts {_iso(start)}, more than "
            f"{settings.max_bucket_age_days:g} days before it was received"
        )
    if end > now + settings.max_clock_skew_seconds:
        return (
            f"bucket in the future: it ends {_iso(end)}, more than "
            f"{settings.max_clock_skew_seconds:g} s after it was received"
        )
    # A bucket starts on a multiple of its length; a bucket the outbox merged from n buckets of
    # one length starts on a multiple of that length (n is its merged_seqs).
    parts = len(set(p.merged_seqs)) or 1
    unit, rest = divmod(p.bucket_seconds, parts)
    if start != int(start) or rest or int(start) % unit:
        return (
            f"bucket not aligned: it starts {_iso(start)}, not on a multiple of its "
            f"{p.bucket_seconds} s" + (f" (merged from {parts})" if parts > 1 else "")
        )
    return None


def _bucket_event(msg: CountsMessage) -> Event:
    start = format_time(msg.payload.bucket_start)
    return Event(
        "counts", "bucket", msg.site, msg.agent, msg.camera, start,
        f"counts:{msg.site}/{msg.agent}/{msg.camera}@{start}",
        msg.payload.model_dump(mode="json", by_alias=True),
    )  # fmt: skip


def count_rows(msg: CountsMessage) -> list[tuple[Any, ...]]:
    """The stored rows of one counts message (COUNT_COLUMNS order)."""
    p = msg.payload
    start = format_time(p.bucket_start)

    def row(rule: str, kind: str, cls: str, line=(None, None), zone=(None,) * 6) -> tuple:
        return (msg.site, msg.agent, msg.camera, rule, kind, cls, start, p.bucket_seconds,
                p.observed_seconds, *line, *zone)  # fmt: skip

    out = [
        row(rule, "line", cls, line=(c.in_, c.out))
        for rule, by_class in p.lines.items()
        for cls, c in by_class.items()
    ]
    for rule, zone_by_class in p.zones.items():
        for cls, z in zone_by_class.items():
            d = z.dwell
            out.append(row(rule, "zone", cls, zone=(z.occupancy_mean, z.occupancy_max, d.count,
                                                    d.mean, d.p90, d.max)))  # fmt: skip
    if not out:
        # A camera with no rules still proves it was watched: keep the bucket as a row.
        out.append(row("", "none", ""))
    return out


def registry_columns(entry: dict[str, Any]) -> tuple[Any, ...]:
    """A registry entry (CameraInfo fields, as JSON) as the cameras table's columns:
    jurisdiction, lat, lon, address, description, tags (JSON text)."""
    where = entry.get("location") or {}
    return (entry.get("jurisdiction"), where.get("lat"), where.get("lon"), entry.get("address"),
            entry.get("description"), json.dumps(entry.get("tags") or []))  # fmt: skip


def _ts(value: float | None) -> str | None:
    return None if value is None else _iso(value)
