"""Storage benchmark (a script, not a test): N days of M cameras (about 4 count rows per camera
per minute: two lines x two classes, one 60 s bucket a minute) stored straight through
Storage.store_batch (no MQTT) on SQLite and PostgreSQL, then the operator's questions timed:
(a) a month of hourly totals of one camera line, (b) an 8-week visit pattern of a 64-camera
site, (c) the 10 busiest cameras of yesterday, a one-camera-day export and `status`; bytes
per camera-day (the whole database, each table, and as a 30-day history holds them: the event
log and the message dedupe are kept only `retention.events_hours` and `retention.dedupe_days`),
and the database size before and after a retention pass.

    .venv/bin/python -m tests.benchmarks.bench_storage [--cameras 1000 --days 30]
        [--backend sqlite|postgresql|both] [--pg-insert copy|values]

Targets (issue 16): raw <= 1 MB per camera-day; (a) < 100 ms; (b) < 500 ms; (c) < 1 s; export
< 200 ms; status < 200 ms. PostgreSQL runs in a database created for the run and dropped after.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pantau.agent.wire.protocol import CountsMessage, CountsPayload, LineCount
from pantau.central.config import CentralSettings
from pantau.central.storage import CameraRef, Filter, Received, Storage
from pantau.central.storage.postgres import PostgresStorage

CAMERAS_PER_AGENT = 16
AGENTS_PER_SITE = 4  # 64 cameras a site
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


class ValuesPostgres(PostgresStorage):
    """PostgreSQL appending with multi-row INSERT ... VALUES instead of COPY: the alternative
    the benchmark compares (--pg-insert values)."""

    def insert_rows(self, table, columns, rows) -> None:
        Storage.upsert_rows(self, table, columns, rows)


def messages(cameras: int, days: int, end: datetime) -> Iterator[list[Received]]:
    """One batch per minute of every camera, oldest first (as a live fleet sends them)."""
    start = end - timedelta(days=days)
    seqs: dict[str, int] = {}
    minutes = days * 1440
    for m in range(minutes):
        t = start + timedelta(minutes=m)
        local_hour = (t.hour + 8) % 24
        busy = 1 + (8 <= local_hour <= 18) * 4
        batch = []
        for c in range(cameras):
            agent_n = c // CAMERAS_PER_AGENT
            site, agent = f"site{agent_n // AGENTS_PER_SITE:03d}", f"agent{agent_n:03d}"
            seq = seqs.get(agent, 0)
            seqs[agent] = seq + 1
            k = (c * 7 + m) % 5
            msg = CountsMessage.model_construct(
                v=1, kind="counts", msg_id=secrets.token_hex(16), seq=seq, agent=agent, site=site,
                camera=f"cam{c % CAMERAS_PER_AGENT:02d}", created_at=t,
                payload=CountsPayload.model_construct(
                    bucket_start=t, bucket_seconds=60, observed_seconds=60.0,
                    lines={
                        "door": {"person": LineCount(**{"in": busy * k, "out": k}),
                                 "car": LineCount(**{"in": k % 2, "out": 0})},
                        "gate": {"person": LineCount(**{"in": busy, "out": busy}),
                                 "truck": LineCount(**{"in": 0, "out": k % 3})},
                    },
                    zones={}, merged_seqs=[],
                ),
            )  # fmt: skip
            batch.append(Received("", b"", msg))
        yield batch


# Tables that retention bounds by age rather than by the raw history (retention setting, days
# they hold): on a 30-day history they hold only that many days.
BOUNDED = {"events": ("events_hours", 1 / 24), "messages": ("dedupe_days", 1.0)}
HISTORY_DAYS = 30


def table_bytes(st: Storage) -> dict[str, int]:
    """Bytes of each table with its indexes (PostgreSQL: partitions under their parent)."""
    if isinstance(st, PostgresStorage):
        rows = st.fetch(
            "SELECT COALESCE(p.relname, c.relname), SUM(pg_total_relation_size(c.oid)) "
            "FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
            "LEFT JOIN pg_class p ON p.oid = i.inhparent WHERE c.relkind = 'r' "
            "AND c.relnamespace = CAST(current_schema() AS regnamespace) GROUP BY 1"
        )
    else:
        rows = st.fetch(
            "SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize) FROM dbstat d "
            "LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1"
        )
    return {name: int(size) for name, size in rows if size}


def per_camera_day(st: Storage, camera_days: int) -> dict[str, Any]:
    """MB per camera-day: each table, the raw history (every table retention does not bound
    by age), the bounded tables, and what a 30-day history holds per camera-day (the bounded
    tables hold only their retention's days of it)."""
    sizes = table_bytes(st)
    keep = st.settings.retention
    mb = {name: round(size / camera_days / 1e6, 3) for name, size in sorted(sizes.items())}
    raw = sum(size for name, size in sizes.items() if name not in BOUNDED)
    bounded = {
        name: (sizes.get(name, 0), min(HISTORY_DAYS, getattr(keep, setting) * days))
        for name, (setting, days) in BOUNDED.items()
    }
    history = raw + sum(size * kept / HISTORY_DAYS for size, kept in bounded.values())
    return {
        "tables_mb_per_camera_day": {k: v for k, v in mb.items() if v >= 0.001},
        "raw_mb_per_camera_day": round(raw / camera_days / 1e6, 3),
        "bounded_kept_days": {name: kept for name, (_, kept) in bounded.items()},
        "history_30d_mb_per_camera_day": round(history / camera_days / 1e6, 3),
    }


def timed(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """Median milliseconds of `repeat` runs (after one warm-up), and the last result."""
    result = fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        runs.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(runs), 2), result


def run(url: str, args: argparse.Namespace, storage_class: type[Storage] | None) -> dict:
    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    settings = CentralSettings.model_validate({"storage": url})
    st = (storage_class or Storage)(url, settings)
    started = time.perf_counter()
    stored = 0
    pending: list[Received] = []
    for minute in messages(args.cameras, args.days, end):
        pending += minute
        if len(pending) >= args.batch:
            stored += st.store(pending)["stored"]
            pending = []
    if pending:
        stored += st.store(pending)["stored"]
    load_s = time.perf_counter() - started
    size = st.size_bytes()
    camera_days = args.cameras * args.days
    cam = CameraRef("site000", "agent000", "cam03")
    month = Filter(since=_iso(end - timedelta(days=30)), until=_iso(end), camera=cam,
                   rule="door", cls="person")  # fmt: skip
    yesterday = (end - timedelta(days=1)).astimezone(settings.zone("site000")).date().isoformat()
    one_day = dict(since=_iso(end - timedelta(days=1)), until=_iso(end), camera=cam)
    out: dict[str, Any] = {
        "storage": url.split(":")[0],
        "cameras": args.cameras,
        "days": args.days,
        "messages": stored,
        "load_s": round(load_s, 1),
        "load_messages_per_s": round(stored / load_s),
        "bytes_per_camera_day": round(size / camera_days),
        **per_camera_day(st, camera_days),
    }
    out["a_month_hourly_one_line_ms"], rows = timed(lambda: st.rollup("hour", month))
    out["a_rows"] = len(rows)
    out["b_pattern_8_weeks_64_cameras_ms"], _ = timed(lambda: st.pattern("site000", weeks=8))
    out["c_busiest_10_yesterday_ms"], top = timed(lambda: st.busiest(yesterday, 10))
    out["c_top"] = [f"{r['site']}/{r['agent']}/{r['camera']}" for r in top[:3]]
    out["export_one_camera_day_ms"], rows = timed(lambda: list(st.counts(**one_day)))
    out["export_rows"] = len(rows)
    out["status_ms"], _ = timed(st.summary)
    # Retention: keep half the raw days (rollups stay), as a pass a year on would do.
    st.settings = CentralSettings.model_validate(
        {"storage": url, "retention": {"raw_days": max(1, args.days // 2), "dedupe_days": 1}}
    )
    t = time.perf_counter()
    dropped = st.maintain(time.time())
    out["retention_s"] = round(time.perf_counter() - t, 2)
    out["retention_dropped_rows"] = dropped["count_rows"]
    out["size_mb_before_retention"] = round(size / 1e6, 1)
    out["size_mb_after_retention"] = round(st.size_bytes() / 1e6, 1)
    st.close()
    return out


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2000, help="Messages per transaction.")
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--pg-insert", choices=["copy", "values"], default="copy")
    args = ap.parse_args()
    results = []
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run(f"sqlite:///{tmp}/bench.db", args, None))
            print(json.dumps(results[-1]), flush=True)
    if args.backend in ("postgresql", "both"):
        import psycopg

        name = f"pantau_bench_{secrets.token_hex(4)}"
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
            try:
                cls = ValuesPostgres if args.pg_insert == "values" else None
                results.append({**run(f"{PG_SERVER}/{name}", args, cls), "insert": args.pg_insert})
                print(json.dumps(results[-1]), flush=True)
            finally:
                admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
