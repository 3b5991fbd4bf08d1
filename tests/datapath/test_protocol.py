"""Wire protocol v1: topics, validation, round trips and the bucket-merge arithmetic."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pantau.agent.wire.protocol import (
    AlertPayload,
    CountsMessage,
    CountsPayload,
    Dwell,
    LineCount,
    ProtocolError,
    ZoneStats,
    check_segment,
    decode,
    json_schema,
    merge_counts,
    parse_topic,
    topic_for,
)

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)


def counts_msg(**payload) -> CountsMessage:
    return CountsMessage(
        msg_id="m1",
        seq=7,
        agent="a1",
        site="s1",
        camera="cam",
        created_at=T0,
        payload=CountsPayload(bucket_start=T0, bucket_seconds=60, observed_seconds=60, **payload),
    )


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "a b", "-x", "x" * 65, "é"])
def test_bad_segments_rejected(bad):
    with pytest.raises(ProtocolError):
        check_segment(bad)


def test_topics():
    assert topic_for("s1", "a1", "counts", "cam") == "pantau/v1/s1/a1/cam/counts"
    assert topic_for("s1", "a1", "status") == "pantau/v1/s1/a1/status"
    assert parse_topic("pantau/v1/s1/a1/heartbeat") == ("s1", "a1", None, "heartbeat")
    with pytest.raises(ProtocolError, match="unknown protocol version"):
        parse_topic("pantau/v2/s1/a1/status")
    with pytest.raises(ProtocolError, match="not pantau/v1"):
        parse_topic("pantau/v1/s1/a1/cam/video")
    with pytest.raises(ProtocolError, match="needs a camera"):
        topic_for("s1", "a1", "alerts")


def test_decode_round_trip_and_mismatch():
    msg = counts_msg(lines={"door": {"person": LineCount(**{"in": 3, "out": 1})}})
    raw = msg.encode()
    assert json.loads(raw)["payload"]["lines"]["door"]["person"] == {"in": 3, "out": 1}
    assert decode(msg.topic, raw) == msg
    with pytest.raises(ProtocolError, match="topic/body mismatch"):
        decode("pantau/v1/s1/a1/other/counts", raw)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 2}', "unknown protocol version"),
        (b'{"v": 1, "kind": "counts"}', "schema"),
        (b"x" * 300_000, "exceeds"),
    ],
)
def test_decode_errors_say_why(payload, reason):
    with pytest.raises(ProtocolError, match=reason):
        decode("pantau/v1/s1/a1/cam/counts", payload)


def test_naive_times_rejected():
    with pytest.raises(ValueError, match="timezone"):
        CountsPayload(bucket_start=datetime(2026, 1, 1), bucket_seconds=60, observed_seconds=0)


def test_json_schema_covers_every_kind():
    text = json.dumps(json_schema())
    for kind in ("CountsMessage", "AlertMessage", "HealthMessage", "StatusMessage"):
        assert kind in text


line_counts = st.builds(
    lambda i, o: LineCount(**{"in": i, "out": o}),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
)
zone_stats = st.builds(
    lambda mean, peak, n: ZoneStats(
        occupancy_mean=mean, occupancy_max=peak, dwell=Dwell(count=n, mean=10.0, p90=20, max=30)
    ),
    st.floats(0, 50, allow_nan=False),
    st.integers(0, 100),
    st.integers(0, 50),
)


@st.composite
def bucket_runs(draw):
    n = draw(st.integers(1, 12))
    seconds = draw(st.sampled_from([60, 300]))
    rules = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    parts = []
    for i in range(n):
        parts.append(
            CountsPayload(
                bucket_start=T0 + timedelta(seconds=i * seconds),
                bucket_seconds=seconds,
                observed_seconds=draw(st.floats(0, seconds, allow_nan=False)),
                lines={r: draw(st.dictionaries(names, line_counts, max_size=3)) for r in rules},
                zones={"z": draw(st.dictionaries(names, zone_stats, max_size=2))},
            )
        )
    return parts


@settings(max_examples=150, deadline=None)
@given(bucket_runs())
def test_merge_preserves_sums_exactly(parts):
    merged = merge_counts(parts, seqs=range(len(parts)))
    assert merged.bucket_start == parts[0].bucket_start
    assert merged.bucket_seconds == sum(p.bucket_seconds for p in parts)
    assert merged.merged_seqs == list(range(len(parts)))
    for rule in {r for p in parts for r in p.lines}:
        for cls in {c for p in parts for c in p.lines.get(rule, {})}:
            total_in = sum(p.lines.get(rule, {}).get(cls, LineCount()).in_ for p in parts)
            total_out = sum(p.lines.get(rule, {}).get(cls, LineCount()).out for p in parts)
            assert merged.lines[rule][cls].in_ == total_in
            assert merged.lines[rule][cls].out == total_out
    for cls, z in merged.zones.get("z", {}).items():
        stats = [p.zones["z"].get(cls, ZoneStats()) for p in parts]
        assert z.dwell.count == sum(s.dwell.count for s in stats)
        assert z.occupancy_max == max(s.occupancy_max for s in stats)
        lo = min(s.occupancy_mean for s in stats)
        hi = max(s.occupancy_mean for s in stats)
        observed = sum(p.observed_seconds for p in parts)
        if observed:
            assert lo - 1e-9 <= z.occupancy_mean <= hi + 1e-9
    # Merging is associative: merging halves first gives the same line totals.
    if len(parts) > 1:
        half = len(parts) // 2
        twice = merge_counts([merge_counts(parts[:half]), merge_counts(parts[half:])])
        assert twice.lines == merged.lines


def test_merge_refuses_non_contiguous():
    a = CountsPayload(bucket_start=T0, bucket_seconds=60, observed_seconds=60)
    b = CountsPayload(
        bucket_start=T0 + timedelta(minutes=2), bucket_seconds=60, observed_seconds=60
    )
    with pytest.raises(ValueError, match="not contiguous"):
        merge_counts([a, b])


@settings(max_examples=100, deadline=None)
@given(
    names,
    st.sampled_from(["intrusion", "crowd", "loitering", "camera_offline", "buffer_overflow"]),
    st.sampled_from(["raised", "cleared"]),
)
def test_alert_round_trip(name, kind, state):
    from pantau.agent.wire.protocol import AlertMessage

    msg = AlertMessage(
        msg_id="x",
        seq=1,
        agent="a",
        site="s",
        camera=name,
        created_at=T0,
        payload=AlertPayload(alert_id="al", type=kind, state=state, started_at=T0),
    )
    assert decode(msg.topic, msg.encode()) == msg


def test_documented_examples_are_valid():
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    examples = re.findall(r"Topic: `([^`]+)`\n\n```json\n(.*?)\n```", doc, re.S)
    kinds = {decode(topic, body.encode()).kind for topic, body in examples}
    assert kinds == {"counts", "alerts", "health", "status", "heartbeat"}


# --- hostile input: each of these once stopped central's storage for good ---------------------


def _alert_body(details: dict) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "kind": "alerts",
            "msg_id": "m2",
            "seq": 3,
            "agent": "a1",
            "site": "s1",
            "camera": "cam",
            "created_at": "2026-11-27T08:00:00Z",
            "payload": {
                "alert_id": "x",
                "type": "buffer_overflow",
                "state": "raised",
                "started_at": "2026-11-27T08:00:00Z",
                "details": details,
            },
        }
    ).encode()


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("seq",), 2**63, "less than or equal"),
        (("payload", "lines", "door", "person", "in"), 2**63, "less than or equal"),
        (("payload", "merged_seqs"), [1, 2**64], "less than or equal"),
        (("payload", "observed_seconds"), float("inf"), "finite"),
    ],
)
def test_unstorable_numbers_are_rejected(path, value, reason):
    body = json.loads(counts_msg(lines={"door": {"person": LineCount(**{"in": 1})}}).encode())
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProtocolError, match=reason):
        decode("pantau/v1/s1/a1/cam/counts", json.dumps(body).encode())


@pytest.mark.parametrize("lost", [[[1]], [1, 2], [[2, 1]], [[0, 2**63]], "0-9", [[0, 1.5]]])
def test_lost_seqs_must_be_ranges(lost):
    with pytest.raises(ProtocolError, match="lost_seqs"):
        decode("pantau/v1/s1/a1/cam/alerts", _alert_body({"lost_seqs": lost}))


def test_lost_seqs_ranges_accepted():
    msg = decode("pantau/v1/s1/a1/cam/alerts", _alert_body({"lost_seqs": [[0, 4], [9, 9]]}))
    assert msg.payload.details["lost_seqs"] == [[0, 4], [9, 9]]


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_is_a_protocol_error(depth):
    with pytest.raises(ProtocolError, match=r"nested too deeply|schema"):
        decode("pantau/v1/s1/a1/cam/counts", b"[" * depth + b"]" * depth)
