"""Central's storage on real SQLite and real PostgreSQL (every test runs on both): idempotency,
seq gaps (filled late, or declared lost), fleet state, and the export CLI; plus the rule that
central never imports the vision stack."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_
from pantau.agent.wire.protocol import (
    AlertMessage,
    AlertPayload,
    CountsMessage,
    CountsPayload,
    HeartbeatMessage,
    HeartbeatPayload,
    LineCount,
    StatusMessage,
    StatusPayload,
    format_time,
)
from pantau.central.config import CentralSettings
from pantau.central.seqs import SeqTracker, coalesce, overlaps, subtract
from pantau.central.storage import Received, Storage

from tests.conftest import cli
from tests.datapath.conftest import write_central_config

# Yesterday, 08:00 UTC: central refuses buckets too old or in the future, so test times
# follow the calendar.
T0 = (datetime.now(timezone.utc) - timedelta(days=1)).replace(
    hour=8, minute=0, second=0, microsecond=0
)


def at(minute: int) -> str:
    return format_time(T0 + timedelta(minutes=minute))


def counts(seq: int, minute: int, camera: str = "cam", merged=(), agent: str = "a1") -> Received:
    msg = CountsMessage(
        msg_id=f"m{seq}" if agent == "a1" else f"{agent}-m{seq}",
        seq=seq,
        agent=agent,
        site="s1",
        camera=camera,
        created_at=T0,
        payload=CountsPayload(
            bucket_start=T0 + timedelta(minutes=minute),
            bucket_seconds=60,
            observed_seconds=60,
            lines={"door": {"person": LineCount(**{"in": 2, "out": 1})}},
            merged_seqs=list(merged),
        ),
    )
    return Received(msg.topic, msg.encode(), msg)


def overflow(seq: int, lost: list[list[int]]) -> Received:
    msg = AlertMessage(
        msg_id=f"m{seq}",
        seq=seq,
        agent="a1",
        site="s1",
        camera="cam",
        created_at=T0,
        payload=AlertPayload(
            alert_id=f"o{seq}",
            type="buffer_overflow",
            state="raised",
            severity="critical",
            started_at=T0,
            details={"lost_seqs": lost},
        ),
    )
    return Received(msg.topic, msg.encode(), msg)


def gaps(st: Storage) -> list[tuple]:
    return [
        (g["seq_from"], g["seq_to"], g["missing"], g["lost"], g["closed_at"] is not None)
        for g in st.gaps()
    ]


def test_duplicates_never_count_twice(new_storage):
    st = new_storage()
    first = st.store([counts(0, 0), counts(0, 0)])
    assert first == {"stored": 1, "duplicate": 1, "dead": 0}
    assert st.store([counts(0, 0)])["duplicate"] == 1
    # The same bucket and content under another msg_id (an agent that regenerated it): a
    # duplicate, and its seq is accounted for.
    assert st.store([counts(1, 0), counts(2, 1)]) == {"stored": 1, "duplicate": 1, "dead": 0}
    assert st.totals() == {"a1": {"cam": {"door": {"person": {"in": 4, "out": 2}}}}}
    assert gaps(st) == []


def test_gaps_open_fill_and_lost(new_storage):
    st = new_storage()
    st.store([counts(0, 0), counts(1, 1), counts(4, 4), counts(9, 9)])
    assert gaps(st) == [(2, 3, 2, 0, False), (5, 8, 4, 0, False)]
    st.store([counts(3, 3), counts(2, 2)])  # late arrivals close the first gap
    assert gaps(st)[0] == (2, 3, 0, 0, True)
    # A merged message accounts for 5 and 6; the agent declares 7-8 lost.
    st.store([counts(5, 5, merged=[5, 6]), overflow(10, [[7, 8]])])
    assert gaps(st)[1] == (5, 8, 0, 2, True)
    assert st.summary()["open_gaps"] == 0


def test_agent_state_from_status_and_heartbeat(new_storage):
    st = new_storage()
    common = {"agent": "a1", "site": "s1", "created_at": T0}
    online = StatusMessage(msg_id="s1", seq=3, payload=StatusPayload(state="online"), **common)
    beat = HeartbeatMessage(
        msg_id="h1",
        seq=7,
        payload=HeartbeatPayload(uptime_seconds=1, outbox_messages=4, outbox_bytes=9),
        **common,
    )
    st.store([Received(online.topic, online.encode(), online), Received(beat.topic, b"", beat)])
    st.store([counts(0, 0)])
    (row,) = st.agents(heartbeat_timeout=90)
    assert row["state"] == "online" and row["high_water_seq"] == 7 and row["behind"] == 7
    assert row["outbox"] == 4 and row["cameras"] == 1
    (row,) = st.agents(heartbeat_timeout=-1)
    assert row["state"] == "stale"
    # An older retained status does not override a newer one.
    old = StatusMessage(
        msg_id="s0",
        seq=1,
        payload=StatusPayload(state="offline"),
        **{**common, "created_at": T0 - timedelta(hours=1)},
    )
    st.store([Received(old.topic, old.encode(), old)])
    assert st.agents(heartbeat_timeout=90)[0]["state"] == "online"


def test_export_counts_cli_filters_and_formats(tmp_path, storage_url):
    url = storage_url()
    st = Storage(url)
    st.store([counts(i, i, camera=f"cam{i % 2}") for i in range(6)])
    # The same camera name on another agent: never in an export of s1/a1/cam1.
    st.store([counts(0, 0, camera="cam1", agent="a2")])
    st.close()
    config = write_central_config(tmp_path, 1883, url)
    res = cli("pantau-central", "export", "counts", "-c", str(config), "--camera", "s1/a1/cam1")
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert res.returncode == 0, res.stderr
    assert len(rows) == 3 and {(r["agent"], r["camera"]) for r in rows} == {("a1", "cam1")}
    res = cli("pantau-central", "export", "counts", "-c", str(config), "--camera", "cam1")
    assert res.returncode == 2 and "SITE/AGENT/CAMERA" in res.stderr
    res = cli(
        "pantau-central",
        "export",
        "counts",
        "-c",
        str(config),
        "--format",
        "csv",
        "--from",
        at(2),
        "--to",
        at(4),
    )
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["bucket_start"] for r in table] == [at(2), at(3)]
    assert table[0]["in"] == "2" and table[0]["rule"] == "door"
    res = cli("pantau-central", "export", "counts", "-c", str(config), "--from", "yesterday")
    assert res.returncode == 2 and "--from 'yesterday'" in res.stderr
    res = cli("pantau-central", "gaps", "-c", str(config))
    assert res.returncode == 0 and "(no gaps)" in res.stdout


def test_central_does_not_import_the_vision_stack():
    code = (
        "import sys, pantau.central.cli, pantau.central.ingest, pantau.central.storage;"
        "import pantau.agent.wire.protocol;"
        "bad = [m for m in ('cv2', 'onnxruntime', 'onnx', 'scipy') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_declared_loss_of_ten_million_seqs_is_bounded(new_storage):
    # A window wide enough to believe the claim: the ranges, not the window, must bound it.
    st = new_storage(CentralSettings(seq_window=10**8))
    st.store([counts(0, 0), counts(5, 5)])
    size = st.size_bytes()
    tracemalloc.start()
    started = time.perf_counter()
    st.store([overflow(10_000_001, [[0, 10_000_000]])])
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 2 and peak < 5_000_000, (elapsed, peak)
    assert gaps(st)[0][:4] == (1, 4, 0, 4)
    assert st.fetch("SELECT seq_from, seq_to FROM seq_ranges") == [(0, 10_000_001)]
    assert st.size_bytes() - size < 1_000_000


def per_seq_gaps(batches: list[tuple[list[int], list[list[int]]]]) -> list[tuple]:
    """The v1 algorithm, a row per seq: the reference the ranges must agree with."""
    how: dict[int, str] = {}
    gap_rows: dict[int, list] = {}
    top = -1
    for seen, lost in batches:
        claims = [(s, "seen") for s in seen] + [
            (s, "lost") for a, b in lost for s in range(a, b + 1)
        ]
        for s, h in sorted(claims, key=lambda c: c[1] == "lost"):  # arrival wins in a batch
            how.setdefault(s, h)
        values = sorted({s for s, _ in claims})
        expected = top + 1
        for s in (v for v in values if v > top):
            if s > expected:
                gap_rows[expected] = [expected, s - 1, 0, 0, False]
            expected = s + 1
        top = max(top, values[-1])
        for g in gap_rows.values():
            if not g[4]:
                inside = [how.get(s) for s in range(g[0], g[1] + 1)]
                g[2] = inside.count(None)
                g[3] = inside.count("lost")
                g[4] = g[2] == 0
    return [tuple(g) for _, g in sorted(gap_rows.items())]


seq_batches = st_.lists(
    st_.tuples(
        st_.lists(st_.integers(0, 60), min_size=1, max_size=6),
        st_.lists(
            st_.tuples(st_.integers(0, 60), st_.integers(0, 5)).map(lambda t: [t[0], t[0] + t[1]]),
            max_size=2,
        ),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=seq_batches)
def test_seq_ranges_agree_with_per_seq_bookkeeping(storage_url, batches):
    st = Storage(storage_url())
    try:
        tracker = SeqTracker(st)
        for seen, lost in batches:
            tracker.account("s1", "a1", "", seen, [(a, b) for a, b in lost], "now")
        assert gaps(st) == per_seq_gaps(batches)
    finally:
        st.close()


def test_range_arithmetic():
    assert coalesce([(5, 6), (0, 1), (2, 2), (8, 9), (9, 12)]) == [(0, 2), (5, 6), (8, 12)]
    assert subtract([(0, 10), (20, 30)], [(2, 3), (9, 21), (25, 25)]) == [
        (0, 1),
        (4, 8),
        (22, 24),
        (26, 30),
    ]
    assert overlaps([(0, 4), (8, 9)], [(3, 8), (9, 20), (21, 22)]) == [3, 1, 0]
