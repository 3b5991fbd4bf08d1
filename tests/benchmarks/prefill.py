"""A PostgreSQL central database filled with a history, generated in SQL on the server (a
script and a helper of bench_datapath, not a test): `days` days of `cameras` cameras up to
`end`, the fleet and the counts of bench_storage.messages (one 60 s bucket a camera-minute,
two lines x two classes), as a central that stored them would hold it:

- `buckets`: every bucket, in its day partition, packed as storage.packed packs it;
- `hourly` and `daily`: their rollups (closed forms: within an hour every count of the
  generator's five-minute cycle occurs twelve times; checked against the raw rows);
- `messages` (dedupe) only for `retention.dedupe_days`, `events` only for
  `retention.events_hours` (each with the body of one generated bucket: its size, not its
  content), and the bookkeeping: sites, agents, epochs, seq_ranges, cameras, counters.

    .venv/bin/python -m tests.benchmarks.prefill --days 30 --cameras 1000 [--keep NAME]

Without --keep the database is dropped after it is measured (a check of the generator).
Indexes of the tables filled with random keys (messages, events) are dropped and built after
the load, as one sort each: a live database's indexes, grown by random inserts, are larger.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from pantau.central.config import CentralSettings
from pantau.central.storage import Storage, packed
from pantau.central.storage.base import DAY
from pantau.central.storage.postgres import PostgresStorage

from tests.benchmarks.bench_storage import AGENTS_PER_SITE, CAMERAS_PER_AGENT, messages

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
# The SQL below is written with % as modulo and format's %s: all but %(name)s doubled for psycopg.
_PERCENT = re.compile(r"%(?!\()")

# Per camera c and bucket start s (epoch s) of a history starting at s0, with the camera's
# names: bench_storage.messages' values (k cycles through 0..4; busy is 5 in local office
# hours, UTC+8, else 1), packed.
_CAMERA = (
    f"'site' || lpad((c / {CAMERAS_PER_AGENT * AGENTS_PER_SITE})::text, 3, '0') AS site, "
    f"'agent' || lpad((c / {CAMERAS_PER_AGENT})::text, 3, '0') AS agent, "
    f"'cam' || lpad((c % {CAMERAS_PER_AGENT})::text, 2, '0') AS camera"
)
_BUSY = "CASE WHEN (s / 3600 % 24 + 8) % 24 BETWEEN 8 AND 18 THEN 5 ELSE 1 END"
_BUCKETS = f"""
INSERT INTO buckets (site, agent, camera, start_s, end_s, msg_id, observed_seconds, lines)
SELECT {_CAMERA}, s, s + 60, md5(c || '/' || s), 60.0, format(
    '[["door","person",%s,%s],["door","car",%s,0],["gate","person",%s,%s],'
    '["gate","truck",0,%s]]',
    busy * k, k, k % 2, busy, busy, k % 3)::json
FROM generate_series(0, %(cameras)s - 1) c,
    LATERAL generate_series(%(lo)s, %(hi)s - 60, 60) s,
    LATERAL (SELECT (c * 7 + (s - %(s0)s) / 60) % 5 AS k, {_BUSY} AS busy) v
"""
# Seq of camera c's message at s: an agent's cameras send in turn, minute after minute.
_SEQ = (
    f"((s - %(s0)s) / 60 * LEAST({CAMERAS_PER_AGENT}, %(cameras)s - c / {CAMERAS_PER_AGENT} "
    f"* {CAMERAS_PER_AGENT}) + c % {CAMERAS_PER_AGENT})"
)
_ISO = "to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
_MESSAGES = f"""
INSERT INTO messages (site, msg_id, agent, camera, kind, seq, created_at, received_at)
SELECT site, md5(c || '/' || s), agent, camera, 'counts', {_SEQ}, {_ISO.format("s + 60")},
    {_ISO.format("s + 61")}
FROM generate_series(0, %(cameras)s - 1) c, LATERAL generate_series(%(lo)s, %(hi)s - 60, 60) s,
    LATERAL (SELECT {_CAMERA}) n
"""
_EVENTS = f"""
INSERT INTO events (at, recorded_at, kind, action, site, agent, camera, key, body)
SELECT {_ISO.format("s")}, {_ISO.format("s + 61")}, 'counts', 'bucket', site, agent, camera,
    'counts:' || site || '/' || agent || '/' || camera || '@' || {_ISO.format("s")}, %(body)s
FROM generate_series(%(lo)s, %(hi)s - 60, 60) s, generate_series(0, %(cameras)s - 1) c,
    LATERAL (SELECT {_CAMERA}) n
"""
# An hour's sums of the cycle: k 120, k % 2 24, k % 3 48; 60 buckets of 60 s.
_HOURLY = f"""
INSERT INTO hourly (site, agent, camera, rule, class, hour_start, rule_type, "in", "out",
    entries, dwell_seconds, occupancy_seconds, observed_seconds, rows)
SELECT n.site, n.agent, n.camera, r.rule, r.class, to_timestamp(s), 'line', r.i, r.o, 0, 0, 0,
    3600, 60
FROM generate_series(0, %(cameras)s - 1) c, LATERAL (SELECT {_CAMERA}) n,
    generate_series(%(s0)s, %(end)s - 3600, 3600) s, LATERAL (SELECT {_BUSY} AS busy) b,
    LATERAL (VALUES ('door', 'person', busy * 120, 120), ('door', 'car', 24, 0),
        ('gate', 'person', busy * 60, busy * 60), ('gate', 'truck', 0, 48)) r(rule, class, i, o)
"""
_DAILY = """
INSERT INTO daily (site, agent, camera, rule, class, day, rule_type, "in", "out", entries,
    dwell_seconds, occupancy_seconds, observed_seconds, rows)
SELECT h.site, agent, camera, rule, class, to_char(hour_start AT TIME ZONE z.timezone,
    'YYYY-MM-DD'), 'line', SUM("in"), SUM("out"), 0, 0, 0, SUM(observed_seconds), SUM(rows)
FROM hourly h JOIN sites z ON z.site = h.site GROUP BY 1, 2, 3, 4, 5, 6
"""
_BOOKKEEPING = (
    f"INSERT INTO cameras (site, agent, camera, last_seen) SELECT {_CAMERA}, %(end)s "
    "FROM generate_series(0, %(cameras)s - 1) c",
    # An agent's highest seq: that of its last camera's last bucket.
    f"INSERT INTO agents (site, agent, last_seen, high_water_seq, max_seq) SELECT site, agent, "
    f"%(end)s, MAX(seq), MAX(seq) FROM (SELECT n.site, n.agent, {_SEQ} AS seq FROM "
    "generate_series(0, %(cameras)s - 1) c, LATERAL (SELECT %(end)s - 60 AS s) t, "
    f"LATERAL (SELECT {_CAMERA}) n) a GROUP BY 1, 2",
    "INSERT INTO epochs (site, agent, epoch, max_seq, high_water_seq) SELECT site, agent, '', "
    "max_seq, max_seq FROM agents",
    "INSERT INTO seq_ranges (site, agent, epoch, seq_from, seq_to) SELECT site, agent, '', 0, "
    "max_seq FROM agents",
)


def prefill(url: str, cameras: int, days: int, end: int, log: Any = print) -> dict[str, Any]:
    """Fill the (new) central database at `url` with `days` days of `cameras` cameras ending at
    `end` (epoch s, a whole hour); return what it holds and how long each step took."""
    s0 = end - days * DAY
    settings = CentralSettings.model_validate({"storage": url})
    st = Storage(url, settings)
    assert isinstance(st, PostgresStorage)
    st.close()
    sample = _sample(cameras, s0)
    keep = settings.retention
    took: dict[str, float] = {}
    base = {"cameras": cameras, "s0": s0, "end": end}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")

        def step(name: str, sql: str, **args: Any) -> None:
            t = time.perf_counter()
            conn.execute(_PERCENT.sub("%%", sql), {**base, **args})
            took[name] = took.get(name, 0.0) + time.perf_counter() - t
            log(f"{name}: {took[name]:.0f} s", flush=True)

        first_day = s0 // DAY * DAY
        days_touched = range(first_day, end, DAY)
        st = Storage(url, settings)
        st._prepare_days(set(days_touched))  # the partitions central makes
        st.close()
        for day in days_touched:  # one day partition at a time, in index order
            step("buckets", _BUCKETS, lo=max(s0, day), hi=min(end, day + DAY))
        # Random keys: load, then index in one sort each.
        conn.execute("ALTER TABLE messages DROP CONSTRAINT messages_pkey")
        conn.execute("DROP INDEX messages_received")
        dedupe_from = max(s0, end - int(keep.dedupe_days * DAY) // 60 * 60)
        step("messages", _MESSAGES, lo=dedupe_from, hi=end)
        step("messages", "ALTER TABLE messages ADD CONSTRAINT messages_pkey "
             "PRIMARY KEY (site, msg_id)")  # fmt: skip
        step("messages", "CREATE INDEX messages_received ON messages (site, received_at)")
        conn.execute("ALTER TABLE events DROP CONSTRAINT events_key_key")
        conn.execute("DROP INDEX events_recorded")
        events_from = max(s0, end - int(keep.events_hours * 3600) // 60 * 60)
        step("events", _EVENTS, lo=events_from, hi=end, body=sample["body"])
        step("events", "ALTER TABLE events ADD CONSTRAINT events_key_key UNIQUE (key)")
        step("events", "CREATE INDEX events_recorded ON events (recorded_at)")
        sites = [f"site{a // AGENTS_PER_SITE:03d}" for a in range(0, cameras, CAMERAS_PER_AGENT)]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO sites (site, timezone) VALUES (%s, %s)",
                [(s, settings.zone(s).key) for s in sorted(set(sites))],
            )
        step("rollups", _HOURLY)
        step("rollups", _DAILY)
        for sql in _BOOKKEEPING:
            step("bookkeeping", sql)
        n_buckets = cameras * (end - s0) // 60
        n_messages = cameras * (end - dedupe_from) // 60
        for name, value in (("buckets", n_buckets), ("count_rows", 4 * n_buckets),
                            ("messages", n_messages), ("first_bucket", s0),
                            ("last_bucket", end - 60)):  # fmt: skip
            conn.execute(
                "INSERT INTO counters (name, shard, value) VALUES (%s, 0, %s) ON CONFLICT "
                "(name, shard) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        step("analyze", "VACUUM ANALYZE")
        _check(conn, sample, s0, end)
    st = Storage(url, settings)
    try:
        return {
            "prefill_days": days,
            "prefill_cameras": cameras,
            "prefill_buckets": st.counter("buckets"),
            "prefill_messages": st.counter("messages"),
            "prefill_s": {k: round(v) for k, v in took.items()},
            "prefill_db_mb": round(st.size_bytes() / 1e6),
        }
    finally:
        st.close()


def _sample(cameras: int, s0: int) -> dict[str, Any]:
    """The first minute of bench_storage.messages for this history: what the SQL must have
    written for it (packed lines of camera 3) and an event body."""
    days = 1  # the generator's start is end - days: only its first minute is taken
    start = datetime.fromtimestamp(s0, timezone.utc)
    first = next(messages(cameras, days, start + timedelta(days=days)))
    msg = first[min(3, cameras - 1)].message
    assert msg is not None
    return {
        "camera": (msg.site, msg.agent, msg.camera),
        "lines": packed.pack(msg.payload)[0],
        "body": json.dumps(msg.payload.model_dump(mode="json", by_alias=True),
                           separators=(",", ":")),
    }  # fmt: skip


def _check(conn: psycopg.Connection, sample: dict[str, Any], s0: int, end: int) -> None:
    """The SQL wrote what the Python generator would have, and its rollups add up."""
    site, agent, camera = sample["camera"]
    row = conn.execute(
        "SELECT lines::text FROM buckets WHERE site = %s AND agent = %s AND camera = %s "
        "AND start_s = %s",
        (site, agent, camera, s0),
    ).fetchone()
    assert row is not None and row[0] == sample["lines"], (row, sample["lines"])
    day = min(s0 + DAY, end - DAY) // DAY * DAY
    raw, hourly = conn.execute(
        'SELECT (SELECT SUM("in" + "out") FROM counts WHERE site = %(site)s AND '
        "agent = %(agent)s AND camera = %(camera)s AND bucket_start >= to_timestamp(%(lo)s) AND "
        'bucket_start < to_timestamp(%(hi)s)), (SELECT SUM("in" + "out") FROM hourly WHERE '
        "site = %(site)s AND agent = %(agent)s AND camera = %(camera)s AND "
        "hour_start >= to_timestamp(%(lo)s) AND hour_start < to_timestamp(%(hi)s))",
        {"site": site, "agent": agent, "camera": camera, "lo": day, "hi": day + DAY},
    ).fetchone() or (None, None)
    assert raw is not None and raw == hourly, (raw, hourly)


@contextlib.contextmanager
def database(keep: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database on the local server, dropped after unless `keep` names it."""
    name = keep or f"pantau_bench_{secrets.token_hex(4)}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{PG_SERVER}/{name}"
        finally:
            if not keep:
                admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--keep", help="Name of the database to make and leave (else dropped).")
    args = ap.parse_args()
    end = int(time.time()) // 3600 * 3600
    with database(args.keep) as url:
        print(json.dumps(prefill(url, args.cameras, args.days, end)), flush=True)


if __name__ == "__main__":
    main()
