"""Fuzzing central's decode-and-store path (hypothesis, bounded time) against real SQLite and
real PostgreSQL databases: whatever arrives, storing never raises, and every input is either
stored exactly or dead-lettered with a reason."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pantau.central.ingest import store_isolating_poison, validate
from pantau.central.storage import Storage

# Yesterday, 08:00 UTC: central refuses buckets too old or in the future, so test times
# follow the calendar.
T0 = (datetime.now(timezone.utc) - timedelta(days=1)).replace(
    hour=8, minute=0, second=0, microsecond=0
)

# Numbers at the edges that broke storage before: huge, negative, fractional, non-finite.
EDGES = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, math.inf, math.nan, 1e308]
numbers = st.one_of(
    st.sampled_from(EDGES),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(numbers, numbers, st.none(), st.booleans(), st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
segments = st.sampled_from(["s1", "a1", "cam", "x+y", "", "#", "a" * 70])
kinds = st.sampled_from(["counts", "alerts", "health", "status", "heartbeat", "video"])


def valid_counts(seq: int) -> dict[str, Any]:
    return {
        "v": 1,
        "kind": "counts",
        "msg_id": f"m{seq}",
        "seq": seq,
        "agent": "a1",
        "site": "s1",
        "camera": "cam",
        "created_at": T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "payload": {
            "bucket_start": (T0 + timedelta(minutes=seq)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bucket_seconds": 60,
            "observed_seconds": 60,
            "lines": {"door": {"person": {"in": 1, "out": 0}}},
        },
    }


PATHS = [
    ("seq",),
    ("msg_id",),
    ("created_at",),
    ("payload", "bucket_seconds"),
    ("payload", "observed_seconds"),
    ("payload", "lines", "door", "person", "in"),
    ("payload", "lines", "door", "person", "out"),
    ("payload", "merged_seqs"),
    ("payload", "zones"),
    ("payload", "lines"),
    ("v",),
    ("kind",),
]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid counts message with one field replaced, or something else entirely."""
    seq = draw(st.integers(min_value=0, max_value=10_000))
    body = valid_counts(seq)
    choice = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
    if choice == 0:  # replace a few leaves or subtrees
        paths = draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3, unique=True))
        for path in sorted(paths, key=len, reverse=True):
            target = body
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = draw(st.one_of(numbers, json_values))
    elif choice == 1:  # an arbitrary JSON document
        body = draw(json_values)
    topic = "pantau/v1/s1/a1/cam/counts"
    if choice == 2:  # an arbitrary topic
        parts = [draw(segments) for _ in range(3)]
        topic = "/".join(["pantau", "v1", *parts, draw(kinds)])
    if choice == 3:  # raw bytes
        return topic, draw(st.binary(max_size=200))
    try:
        return topic, json.dumps(body, allow_nan=True).encode()
    except (ValueError, OverflowError):
        return topic, b"{}"


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(mutated(), min_size=1, max_size=8))
def test_every_input_is_stored_exactly_or_dead_lettered(storage_url, batch):
    storage = Storage(storage_url())
    try:
        items = [validate(topic, payload) for topic, payload in batch]
        result, dead = store_isolating_poison(storage, items)
        n_dead = storage.one("SELECT COUNT(*) FROM dead_letters")
        assert n_dead == result["dead"] == len(dead)
        assert all(d.error for d in dead)
        assert result["stored"] + result["duplicate"] + result["dead"] == len(batch)
        stored_ids = {r[0] for r in storage.fetch("SELECT msg_id FROM messages")}
        rejected = {(d.topic, d.payload) for d in dead}
        for item in items:
            if (item.topic, item.payload) in rejected or item.error:
                continue
            msg = item.message
            if msg.kind in ("counts", "alerts", "health"):
                assert msg.msg_id in stored_ids
            if msg.kind == "counts":
                lines = msg.payload.lines
                want = sum(c.in_ + c.out for by in lines.values() for c in by.values())
                got = sum(
                    (i or 0) + (o or 0)
                    for i, o in storage.fetch(
                        'SELECT "in", "out" FROM counts WHERE camera = ? AND bucket_start = ?',
                        (msg.camera, msg.payload.bucket_start.strftime("%Y-%m-%dT%H:%M:%SZ")),
                    )
                )
                # Exactly what was sent, unless an earlier copy of the same key won.
                assert got == want or result["duplicate"], (got, want)
            for value in (getattr(msg.payload, "observed_seconds", 0.0),):
                assert math.isfinite(value)
    finally:
        storage.close()
