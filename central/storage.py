"""Central's SQLite store (through sqlite-utils): idempotent, batched writes of validated
messages, dead letters, fleet state and per-agent seq gaps, plus the queries the CLI shows.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import sqlite_utils
from pantau.agent.wire.migrations import Migration, connect
from pantau.agent.wire.protocol import (
    MAX_ACK_RANGES,
    AlertMessage,
    CountsMessage,
    CountsPayload,
    HealthMessage,
    HeartbeatMessage,
    StatusMessage,
    format_time,
)
from pantau.central.config import CentralSettings
from pantau.central.seqs import Range, SeqTracker

DEAD_LETTER_BYTES = 4096  # raw bytes kept of a rejected message

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS messages (
    msg_id TEXT PRIMARY KEY, site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT,
    kind TEXT NOT NULL, seq INTEGER NOT NULL, created_at TEXT NOT NULL, received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counts (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, rule TEXT NOT NULL,
    rule_type TEXT NOT NULL, class TEXT NOT NULL, bucket_start TEXT NOT NULL,
    bucket_seconds INTEGER NOT NULL, observed_seconds REAL NOT NULL,
    "in" INTEGER, "out" INTEGER, occupancy_mean REAL, occupancy_max INTEGER,
    dwell_count INTEGER, dwell_mean REAL, dwell_p90 REAL, dwell_max REAL, msg_id TEXT NOT NULL,
    -- Time first: new buckets append at the end of the B-tree, and time ranges need no index.
    PRIMARY KEY (bucket_start, site, agent, camera, rule, class)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, alert_id TEXT NOT NULL,
    state TEXT NOT NULL, type TEXT NOT NULL, severity TEXT NOT NULL, started_at TEXT NOT NULL,
    ended_at TEXT, rule TEXT, details TEXT NOT NULL, created_at TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    PRIMARY KEY (site, agent, alert_id, state)
);
CREATE TABLE IF NOT EXISTS health (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, created_at TEXT NOT NULL,
    state TEXT NOT NULL, fps_target REAL, fps_effective REAL, frames_read INTEGER,
    frames_analyzed INTEGER, details TEXT, msg_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS agents (
    site TEXT NOT NULL, agent TEXT NOT NULL, status TEXT, status_at TEXT, software TEXT,
    last_seen REAL, last_heartbeat REAL, high_water_seq INTEGER NOT NULL DEFAULT -1,
    max_seq INTEGER NOT NULL DEFAULT -1, outbox_messages INTEGER,
    PRIMARY KEY (site, agent)
);
CREATE TABLE IF NOT EXISTS cameras (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, last_seen REAL,
    health TEXT, health_at TEXT,
    PRIMARY KEY (site, agent, camera)
);
CREATE TABLE IF NOT EXISTS agent_seqs (
    site TEXT NOT NULL, agent TEXT NOT NULL, seq INTEGER NOT NULL, how TEXT NOT NULL,
    PRIMARY KEY (site, agent, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps (
    site TEXT NOT NULL, agent TEXT NOT NULL, seq_from INTEGER NOT NULL, seq_to INTEGER NOT NULL,
    detected_at TEXT NOT NULL, closed_at TEXT, missing INTEGER NOT NULL,
    lost INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, agent, seq_from)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, topic TEXT NOT NULL,
    size INTEGER NOT NULL, payload BLOB, reason TEXT NOT NULL
);
"""
# v2: seqs kept as ranges (v1 kept a row per seq: a message declaring ten million lost seqs
# wrote ten million rows); a row per stored counts bucket, to find conflicts and overlaps; the
# dead-letter retention's index and counter.
_SCHEMA_V2 = """
CREATE TABLE seq_ranges (
    site TEXT NOT NULL, agent TEXT NOT NULL, seq_from INTEGER NOT NULL, seq_to INTEGER NOT NULL,
    PRIMARY KEY (site, agent, seq_from)
) WITHOUT ROWID;
INSERT INTO seq_ranges
    SELECT site, agent, MIN(seq), MAX(seq) FROM (
        SELECT site, agent, seq, seq - ROW_NUMBER() OVER (PARTITION BY site, agent ORDER BY seq)
            AS run
        FROM agent_seqs
    ) GROUP BY site, agent, run;
DROP TABLE agent_seqs;
CREATE TABLE buckets (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, start_s INTEGER NOT NULL,
    end_s INTEGER NOT NULL, msg_id TEXT NOT NULL,
    PRIMARY KEY (site, agent, camera, start_s)
) WITHOUT ROWID;
INSERT OR IGNORE INTO buckets
    SELECT site, agent, camera, CAST(strftime('%s', bucket_start) AS INTEGER),
        CAST(strftime('%s', bucket_start) AS INTEGER) + bucket_seconds, MIN(msg_id)
    FROM counts GROUP BY site, agent, camera, bucket_start;
CREATE INDEX dead_letters_received ON dead_letters (received_at);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('dead_letters_dropped', 0);
"""
# v3: agent epochs (a reinstalled agent's seqs start again at 0): seq ranges and gaps are kept
# per epoch, everything stored before under the legacy epoch ''; `epochs` holds each epoch's
# highest stored seq and what its heartbeats said was sent (tail_seq, first said at tail_at), so
# that a tail central never received shows as a gap; `agents.epoch` is the current one.
_SCHEMA_V3 = """
CREATE TABLE seq_ranges_v3 (
    site TEXT NOT NULL, agent TEXT NOT NULL, epoch TEXT NOT NULL, seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL,
    PRIMARY KEY (site, agent, epoch, seq_from)
) WITHOUT ROWID;
INSERT INTO seq_ranges_v3 SELECT site, agent, '', seq_from, seq_to FROM seq_ranges;
DROP TABLE seq_ranges;
ALTER TABLE seq_ranges_v3 RENAME TO seq_ranges;
CREATE TABLE gaps_v3 (
    site TEXT NOT NULL, agent TEXT NOT NULL, epoch TEXT NOT NULL, seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL, detected_at TEXT NOT NULL, closed_at TEXT,
    missing INTEGER NOT NULL, lost INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, agent, epoch, seq_from)
);
INSERT INTO gaps_v3 SELECT site, agent, '', seq_from, seq_to, detected_at, closed_at, missing,
    lost FROM gaps;
DROP TABLE gaps;
ALTER TABLE gaps_v3 RENAME TO gaps;
CREATE TABLE epochs (
    site TEXT NOT NULL, agent TEXT NOT NULL, epoch TEXT NOT NULL,
    max_seq INTEGER NOT NULL DEFAULT -1, high_water_seq INTEGER NOT NULL DEFAULT -1,
    tail_seq INTEGER, tail_at REAL,
    PRIMARY KEY (site, agent, epoch)
);
INSERT INTO epochs (site, agent, epoch, max_seq, high_water_seq)
    SELECT site, agent, '', max_seq, high_water_seq FROM agents;
ALTER TABLE agents ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
"""
# The schema's history, oldest first: a change is a new Migration; a shipped one never changes.
MIGRATIONS = (Migration(1, _SCHEMA_V1), Migration(2, _SCHEMA_V2), Migration(3, _SCHEMA_V3))


_SEQUENCED = (CountsMessage, AlertMessage, HealthMessage)
# The verdict on a message already stored (same msg_id, or same key and content).
DUPLICATE: Final = "duplicate"
# Dead letters past retention or cap are dropped at least this often (seconds), and after every
# batch that added one.
PRUNE_INTERVAL = 60.0
_COUNT_COLUMNS = (
    "site, agent, camera, rule, rule_type, class, bucket_start, bucket_seconds, "
    'observed_seconds, "in", "out", occupancy_mean, occupancy_max, dwell_count, dwell_mean, '
    "dwell_p90, dwell_max"
)


def _iso(epoch: float) -> str:
    return format_time(datetime.fromtimestamp(epoch, timezone.utc))


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
    if start < now - settings.max_bucket_age_days * 86400:
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


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///path` URL (four slashes for an absolute path)."""
    return Path(url.removeprefix("sqlite:///"))


@dataclass(frozen=True)
class Received:
    """One message as it came off the wire: topic, raw bytes, and the decoded message or the
    reason it was rejected."""

    topic: str
    payload: bytes
    message: Any = None
    error: str | None = None


class Storage:
    """All reads and writes of central's database."""

    def __init__(self, url: str, settings: CentralSettings | None = None) -> None:
        self.settings = settings or CentralSettings()
        path = sqlite_path(url)
        self.db = sqlite_utils.Database(connect(path, MIGRATIONS))
        self.db.execute("PRAGMA journal_mode=WAL")
        # Messages are acknowledged to the broker after commit: the commit must be on disk.
        self.db.execute("PRAGMA synchronous=FULL")
        # Count keys arrive spread over the whole primary key (every camera, rule and class at
        # once): a cache that holds the hot B-tree pages keeps inserts off the disk.
        self.db.execute("PRAGMA cache_size=-131072")
        self.path = path
        self.seqs = SeqTracker(self.db.conn)
        self._pruned_at = 0.0

    def close(self) -> None:
        self.db.close()

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
        copy of a stored key with other content, is dead-lettered with the reason.

        Returns counters (stored, duplicate, dead) and each dead letter with its reason.
        """
        now = time.time() if now is None else now
        received_at = format_time(datetime.fromtimestamp(now, timezone.utc))
        stats = {"stored": 0, "duplicate": 0, "dead": 0}
        dead: list[Received] = []
        c = self.db.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            known = self._known_ids(
                [i.message.msg_id for i in batch if isinstance(i.message, _SEQUENCED)]
            )
            anchors: dict[tuple[str, str], tuple[int, float | None]] = {}
            accepted: list[Any] = []
            tracked: list[Any] = []  # stored, or already stored: their seqs are accounted for
            for item in batch:
                msg = item.message
                if msg is None:
                    verdict: str | None = item.error or "invalid"
                elif isinstance(msg, _SEQUENCED) and msg.msg_id in known:
                    verdict = DUPLICATE
                else:
                    verdict = self._within_window(msg, anchors, now)
                    if verdict is None and isinstance(msg, _SEQUENCED):
                        verdict = self._admit(msg, now)
                if verdict is None or verdict is DUPLICATE:
                    stats["stored" if verdict is None else "duplicate"] += 1
                    if isinstance(msg, StatusMessage | HeartbeatMessage):
                        self._agent_state(msg, now)
                    else:
                        tracked.append(msg)
                        if verdict is None:
                            accepted.append(msg)
                            known.add(msg.msg_id)
                else:
                    item = item if item.error else Received(item.topic, item.payload, error=verdict)
                    self._dead_letter(item, received_at)
                    dead.append(item)
                    stats["dead"] += 1
            self._record(accepted, received_at)
            self._seen({(m.site, m.agent, m.camera) for m in tracked}, now)
            self._track_seqs(tracked, received_at)
            if dead or now - self._pruned_at >= PRUNE_INTERVAL:
                self._prune_dead_letters(now)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return stats, dead

    def _known_ids(self, ids: list[str]) -> set[str]:
        known: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            known.update(
                r[0]
                for r in self.db.conn.execute(
                    f"SELECT msg_id FROM messages WHERE msg_id IN ({marks})", chunk
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
        if key not in anchors:
            anchors[key] = self.seqs.anchor(*key)
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

    def _admit(self, msg: CountsMessage | AlertMessage | HealthMessage, now: float) -> str | None:
        """Write what must be visible to the rest of the batch at once (bucket, alert or health
        row) and return None; or return DUPLICATE, or why the message is dead-lettered."""
        if isinstance(msg, CountsMessage):
            return self._admit_bucket(msg, now)
        if isinstance(msg, AlertMessage):
            return self._alert(msg)
        self._health(msg)
        return None

    def _admit_bucket(self, msg: CountsMessage, now: float) -> str | None:
        p = msg.payload
        start = p.bucket_start.timestamp()
        end = start + p.bucket_seconds
        reason = _implausible(p, start, end, now, self.settings)
        if reason:
            return reason
        key = (msg.site, msg.agent, msg.camera)
        clash = [
            r
            for r in self.db.conn.execute(
                "SELECT start_s, end_s, msg_id FROM buckets WHERE site = ? AND agent = ? AND "
                "camera = ? AND start_s < ? AND start_s >= COALESCE((SELECT MAX(start_s) FROM "
                "buckets WHERE site = ? AND agent = ? AND camera = ? AND start_s <= ?), ?)",
                (*key, end, *key, start, start),
            )
            if r[1] > start
        ]
        if len(clash) == 1 and clash[0][:2] == (start, end):
            if self._same_counts(msg):
                return DUPLICATE
            return (
                f"conflict: bucket {_iso(start)} of {'/'.join(key)} is already stored from "
                f"msg_id {clash[0][2]} with other content"
            )
        if clash:
            s0, e0, other = clash[0]
            return (
                f"bucket overlaps: [{_iso(start)}, {_iso(end)}) of {'/'.join(key)} overlaps "
                f"the stored bucket [{_iso(s0)}, {_iso(e0)}) of msg_id {other}"
            )
        self.db.conn.execute(
            "INSERT INTO buckets VALUES (?, ?, ?, ?, ?, ?)", (*key, start, end, msg.msg_id)
        )
        return None

    def _same_counts(self, msg: CountsMessage) -> bool:
        stored = self.db.conn.execute(
            f"SELECT {_COUNT_COLUMNS} FROM counts WHERE bucket_start = ? AND site = ? AND "
            "agent = ? AND camera = ?",
            (format_time(msg.payload.bucket_start), msg.site, msg.agent, msg.camera),
        ).fetchall()
        return sorted(stored) == sorted(r[:-1] for r in _count_rows(msg))

    def _record(self, accepted: list[Any], received_at: str) -> None:
        """The message rows of stored messages, and the count rows of their buckets."""
        insert_rows(
            self.db.conn,
            "INSERT INTO messages",
            [
                (m.msg_id, m.site, m.agent, m.camera, m.kind, m.seq, format_time(m.created_at),
                 received_at)
                for m in accepted
            ],
        )  # fmt: skip
        insert_rows(
            self.db.conn,
            "INSERT INTO counts",
            [r for m in accepted if isinstance(m, CountsMessage) for r in _count_rows(m)],
        )

    def _prune_dead_letters(self, now: float) -> None:
        """Drop dead letters past their retention, then the oldest beyond the cap; count them."""
        limits = self.settings.dead_letters
        cutoff = format_time(datetime.fromtimestamp(now - limits.max_days * 86400, timezone.utc))
        c = self.db.conn
        dropped = c.execute("DELETE FROM dead_letters WHERE received_at < ?", (cutoff,)).rowcount
        dropped += c.execute(
            "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC "
            "LIMIT 1 OFFSET ?)",
            (limits.max_rows,),
        ).rowcount
        if dropped:
            c.execute(
                "UPDATE counters SET value = value + ? WHERE name = 'dead_letters_dropped'",
                (dropped,),
            )
        self._pruned_at = now

    def _dead_letter(self, item: Received, received_at: str) -> None:
        self.db.conn.execute(
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

    def _agent_state(self, msg: StatusMessage | HeartbeatMessage, now: float) -> None:
        c = self.db.conn
        c.execute(
            "INSERT INTO agents (site, agent, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT(site, agent) DO UPDATE SET last_seen = MAX(COALESCE(last_seen, 0), ?)",
            (msg.site, msg.agent, now, now),
        )
        if isinstance(msg, StatusMessage):
            # A retained status can be older than one already applied: keep the newest.
            c.execute(
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
            )
        else:
            c.execute(
                "UPDATE agents SET last_heartbeat = ?, outbox_messages = ?, "
                "status = COALESCE(status, 'online') WHERE site = ? AND agent = ?",
                (now, msg.payload.outbox_messages, msg.site, msg.agent),
            )
        c.execute(
            "UPDATE agents SET high_water_seq = MAX(high_water_seq, ?) "
            "WHERE site = ? AND agent = ?",
            (msg.seq, msg.site, msg.agent),
        )
        key = (msg.site, msg.agent, msg.epoch)
        c.execute(
            "INSERT INTO epochs (site, agent, epoch, high_water_seq) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET "
            "high_water_seq = MAX(high_water_seq, excluded.high_water_seq)",
            (*key, msg.seq),
        )
        # A new tail checkpoint once the last one is stored: what the agent says it has sent
        # by now must be here within tail_gap_after, or the rest shows as an open gap.
        c.execute(
            "UPDATE epochs SET tail_seq = ?, tail_at = ? WHERE site = ? AND agent = ? AND "
            "epoch = ? AND (tail_seq IS NULL OR tail_seq <= max_seq) AND ? > max_seq",
            (msg.seq, now, *key, msg.seq),
        )
        if isinstance(msg, HeartbeatMessage):
            c.execute(
                "UPDATE agents SET epoch = ? WHERE site = ? AND agent = ?",
                (msg.epoch, msg.site, msg.agent),
            )

    def _seen(self, cameras: set[tuple[str, str, str]], now: float) -> None:
        c = self.db.conn
        c.executemany(
            "INSERT INTO agents (site, agent, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT(site, agent) DO UPDATE SET last_seen = MAX(COALESCE(last_seen, 0), ?)",
            [(site, agent, now, now) for site, agent in {(s, a) for s, a, _ in cameras}],
        )
        c.executemany(
            "INSERT INTO cameras (site, agent, camera, last_seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET last_seen = MAX(COALESCE(last_seen, 0), ?)",
            [(*key, now, now) for key in cameras],
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
        stored = self.db.conn.execute(
            "SELECT * FROM alerts WHERE site = ? AND agent = ? AND alert_id = ? AND state = ?",
            (msg.site, msg.agent, p.alert_id, p.state),
        ).fetchone()
        if stored is None:
            self.db.conn.execute(
                "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row
            )
            return None
        # A resend may be stamped anew (created_at, msg_id); what it says must be the same.
        if tuple(stored[:-2]) == row[:-2]:
            return DUPLICATE
        return (
            f"conflict: alert {p.alert_id} ({p.state}) of {msg.site}/{msg.agent} is already "
            f"stored from msg_id {stored[-1]} with other content"
        )

    def _health(self, msg: HealthMessage) -> None:
        p = msg.payload
        created = format_time(msg.created_at)
        self.db.conn.execute(
            "INSERT OR IGNORE INTO health VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        self.db.conn.execute(
            "UPDATE cameras SET health = ?, health_at = ? WHERE site = ? AND agent = ? AND "
            "camera = ? AND (health_at IS NULL OR health_at <= ?)",
            (p.state, created, msg.site, msg.agent, msg.camera, created),
        )

    def _track_seqs(self, messages: list[Any], received_at: str) -> None:
        """Account per agent for the seqs of stored messages: their own, those merged into
        them, and those a buffer_overflow alert declares lost."""
        by_agent: dict[tuple[str, str, str], tuple[list[int], list[Range]]] = {}
        for m in messages:
            seen, lost = by_agent.setdefault((m.site, m.agent, m.epoch), ([], []))
            seen.append(m.seq)
            if isinstance(m, CountsMessage):
                seen.extend(m.payload.merged_seqs)
            elif isinstance(m, AlertMessage) and m.payload.type == "buffer_overflow":
                lost.extend((a, b) for a, b in m.payload.details.get("lost_seqs", []))
        for (site, agent, epoch), (seen, lost) in by_agent.items():
            self.seqs.account(site, agent, epoch, seen, lost, received_at)

    def acknowledgement(self, site: str, agent: str, epoch: str) -> tuple[int, list[Range]]:
        """What central has durably accounted for of one agent epoch (see SeqTracker)."""
        return self.seqs.received_ranges(site, agent, epoch, MAX_ACK_RANGES)

    # --- reads ----------------------------------------------------------------------------

    def counts(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        site: str | None = None,
        agent: str | None = None,
        camera: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        where, args = ["1"], []
        for clause, value in (
            ("bucket_start >= ?", since),
            ("bucket_start < ?", until),
            ("site = ?", site),
            ("agent = ?", agent),
            ("camera = ?", camera),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = (
            "SELECT site, agent, camera, bucket_start, bucket_seconds, rule, rule_type, class, "
            '"in", "out", occupancy_mean, occupancy_max, dwell_count, dwell_mean, dwell_p90, '
            f"dwell_max, observed_seconds FROM counts WHERE {' AND '.join(where)} "
            "ORDER BY bucket_start, site, agent, camera, rule, class"
        )
        yield from self.db.query(sql, args)

    def totals(self) -> dict[str, dict[str, dict[str, dict[str, dict[str, int]]]]]:
        """Line totals: agent -> camera -> rule -> class -> {in, out}."""
        out: dict[str, Any] = {}
        for r in self.db.query(
            'SELECT agent, camera, rule, class, SUM("in") AS i, SUM("out") AS o FROM counts '
            "WHERE rule_type = 'line' GROUP BY agent, camera, rule, class"
        ):
            out.setdefault(r["agent"], {}).setdefault(r["camera"], {}).setdefault(r["rule"], {})[
                r["class"]
            ] = {"in": r["i"], "out": r["o"]}
        return out

    def agents(self, heartbeat_timeout: float) -> list[dict[str, Any]]:
        now = time.time()
        rows = []
        for r in self.db.query("SELECT * FROM agents ORDER BY site, agent"):
            state = r["status"] or "unknown"
            if state == "online" and (now - (r["last_seen"] or 0)) > heartbeat_timeout:
                state = "stale"
            cams = self.db.execute(
                "SELECT COUNT(*) FROM cameras WHERE site = ? AND agent = ?",
                (r["site"], r["agent"]),
            ).fetchone()[0]
            rows.append(
                {
                    "site": r["site"],
                    "agent": r["agent"],
                    "state": state,
                    "last_seen": _ts(r["last_seen"]),
                    "cameras": cams,
                    "max_seq": r["max_seq"],
                    "high_water_seq": r["high_water_seq"],
                    "behind": max(0, r["high_water_seq"] - r["max_seq"]),
                    "outbox": r["outbox_messages"],
                }
            )
        return rows

    def cameras(self) -> list[dict[str, Any]]:
        return [
            {**r, "last_seen": _ts(r["last_seen"])}
            for r in self.db.query("SELECT * FROM cameras ORDER BY site, agent, camera")
        ]

    def gaps(self, include_closed: bool = True, now: float | None = None) -> list[dict[str, Any]]:
        """Stored gaps, and each epoch's tail: seqs its heartbeats said were sent more than
        tail_gap_after ago that never arrived (open, missing; they are not in `gaps` because
        nothing above them arrived either)."""
        where = "" if include_closed else "WHERE closed_at IS NULL"
        rows = list(self.db.query(f"SELECT * FROM gaps {where}"))
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
            for site, agent, epoch, top, tail, at in self.db.execute(
                "SELECT site, agent, epoch, max_seq, tail_seq, tail_at FROM epochs "
                "WHERE tail_seq > max_seq AND tail_at <= ?",
                (now - self.settings.tail_gap_after,),
            )
        ]  # fmt: skip

    def dead_letters(self, limit: int = 50) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "SELECT id, received_at, topic, size, reason, payload FROM dead_letters "
                "ORDER BY id DESC LIMIT ?",
                [limit],
            )
        )

    def summary(self) -> dict[str, Any]:
        def one(sql: str) -> Any:
            return self.db.execute(sql).fetchone()[0]

        return {
            "database": str(self.path),
            "messages": one("SELECT COUNT(*) FROM messages"),
            "count_rows": one("SELECT COUNT(*) FROM counts"),
            "buckets": one(
                "SELECT COUNT(*) FROM (SELECT DISTINCT site, agent, camera, "
                "bucket_start FROM counts)"
            ),
            "alerts": one("SELECT COUNT(*) FROM alerts"),
            "agents": one("SELECT COUNT(*) FROM agents"),
            "cameras": one("SELECT COUNT(*) FROM cameras"),
            "open_gaps": one("SELECT COUNT(*) FROM gaps WHERE closed_at IS NULL")
            + len(self._tails(None)),
            "dead_letters": one("SELECT COUNT(*) FROM dead_letters"),
            "dead_letters_dropped": one(
                "SELECT value FROM counters WHERE name = 'dead_letters_dropped'"
            ),
            "first_bucket": one("SELECT MIN(bucket_start) FROM counts"),
            "last_bucket": one("SELECT MAX(bucket_start) FROM counts"),
        }


# Rows per multi-row INSERT: executemany would release and retake the GIL for every row, and
# each handoff to the busy MQTT thread costs more than the insert itself (22 vs 5 us a row).
_ROWS_PER_INSERT = 256


def insert_rows(conn: sqlite3.Connection, head: str, rows: list[tuple[Any, ...]]) -> None:
    """`head VALUES (...), (...), ...` in chunks: one statement step per chunk of rows."""
    if not rows:
        return
    marks = "(" + ", ".join("?" * len(rows[0])) + ")"
    for i in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[i : i + _ROWS_PER_INSERT]
        sql = f"{head} VALUES {', '.join([marks] * len(chunk))}"
        conn.execute(sql, [v for row in chunk for v in row])


def _count_rows(msg: CountsMessage) -> Iterable[tuple[Any, ...]]:
    p = msg.payload
    start = format_time(p.bucket_start)

    def row(rule: str, kind: str, cls: str, line=(None, None), zone=(None,) * 6) -> tuple:
        return (msg.site, msg.agent, msg.camera, rule, kind, cls, start, p.bucket_seconds,
                p.observed_seconds, *line, *zone, msg.msg_id)  # fmt: skip

    for rule, by_class in p.lines.items():
        for cls, c in by_class.items():
            yield row(rule, "line", cls, line=(c.in_, c.out))
    for rule, zone_by_class in p.zones.items():
        for cls, z in zone_by_class.items():
            d = z.dwell
            stats = (z.occupancy_mean, z.occupancy_max, d.count, d.mean, d.p90, d.max)
            yield row(rule, "zone", cls, zone=stats)
    if not p.lines and not p.zones:
        # A camera with no rules still proves it was watched: keep the bucket as a row.
        yield row("", "none", "")


def _ts(value: float | None) -> str | None:
    if value is None:
        return None
    return format_time(datetime.fromtimestamp(value, timezone.utc))
