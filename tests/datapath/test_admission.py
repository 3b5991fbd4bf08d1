"""What central refuses to believe, on real SQLite and real PostgreSQL: seqs far ahead of an
agent, a second copy of a stored key with other content, misaligned or overlapping buckets,
implausible times; and the dead letters' retention and cap."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from pantau.agent.wire.protocol import (
    AlertMessage,
    AlertPayload,
    CountsMessage,
    CountsPayload,
    HeartbeatMessage,
    HeartbeatPayload,
    LineCount,
)
from pantau.central.config import CentralSettings
from pantau.central.storage import Received, Storage

from tests.conftest import cli
from tests.datapath.conftest import write_central_config
from tests.datapath.helpers import summary_of

NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
T0 = NOW - timedelta(days=1)


def counts(
    seq: int,
    start: datetime,
    seconds: int = 60,
    people: int = 1,
    merged: tuple[int, ...] = (),
    agent: str = "a1",
    msg_id: str | None = None,
) -> Received:
    msg = CountsMessage(
        msg_id=msg_id or f"{agent}-{seq}",
        seq=seq,
        agent=agent,
        site="s1",
        camera="cam",
        created_at=T0,
        payload=CountsPayload(
            bucket_start=start,
            bucket_seconds=seconds,
            observed_seconds=seconds,
            lines={"door": {"person": LineCount(**{"in": people})}},
            merged_seqs=list(merged),
        ),
    )
    return Received(msg.topic, msg.encode(), msg)


def minute(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def alert(seq: int, severity: str = "warning", lost: list[list[int]] | None = None) -> Received:
    msg = AlertMessage(
        msg_id=f"a-{seq}",
        seq=seq,
        agent="a1",
        site="s1",
        camera="cam",
        created_at=T0,
        payload=AlertPayload(
            alert_id="crowd-1" if lost is None else f"o{seq}",
            type="crowd" if lost is None else "buffer_overflow",
            state="raised",
            severity=severity,
            started_at=T0,
            details={} if lost is None else {"lost_seqs": lost},
        ),
    )
    return Received(msg.topic, msg.encode(), msg)


def heartbeat(seq: int) -> Received:
    msg = HeartbeatMessage(
        msg_id=f"h-{seq}",
        seq=seq,
        agent="a1",
        site="s1",
        created_at=T0,
        payload=HeartbeatPayload(uptime_seconds=1, outbox_messages=0, outbox_bytes=0),
    )
    return Received(msg.topic, msg.encode(), msg)


@pytest.fixture
def st(new_storage):
    return new_storage()


def reasons(st: Storage) -> list[str]:
    return [r["reason"] for r in reversed(st.dead_letters())]


def line_in(st: Storage) -> int:
    return st.one('SELECT COALESCE(SUM("in"), 0) FROM counts')


def test_seqs_far_ahead_are_dead_lettered_not_believed(st):
    t = time.time()
    assert st.store([counts(0, minute(0)), counts(1, minute(1))], now=t)["stored"] == 2
    far = counts(10**6, minute(2))
    result, dead = st.store_batch([far, heartbeat(10**6), alert(2, lost=[[3, 10**7]])], now=t + 1)
    assert result == {"stored": 0, "duplicate": 0, "dead": 3}
    assert [d.error.split(":")[0] for d in dead if d.error] == ["seq far ahead"] * 3
    assert "10000000 is more than 10050 beyond 1" in reasons(st)[2]
    (agent,) = st.agents(heartbeat_timeout=90)
    assert (agent["max_seq"], agent["high_water_seq"]) == (1, -1)
    assert st.gaps() == []
    # Within the window: believed, with the gap it opens; the window moves with it.
    assert st.store([counts(10_001, minute(3)), heartbeat(20_001)], now=t + 2)["stored"] == 2
    assert [(g["seq_from"], g["seq_to"]) for g in st.gaps()] == [(2, 10_000)]
    # The first message of an unknown agent sets its base.
    assert st.store([counts(5 * 10**6, minute(0), agent="a2")], now=t)["stored"] == 1
    assert st.store([counts(5 * 10**6 + 1, minute(1), agent="a2")], now=t)["stored"] == 1


def test_an_agent_back_from_a_long_outage_is_believed(st):
    """Its outbox assigned seqs all the while: four days at 3 seqs/s is about a million."""
    t = time.time()
    assert st.store([counts(0, minute(0))], now=t)["stored"] == 1
    back = t + 4 * 86400
    assert st.store([counts(10**6, minute(1))], now=back)["stored"] == 1
    assert [(g["seq_from"], g["seq_to"]) for g in st.gaps()] == [(1, 10**6 - 1)]


def test_a_second_copy_with_other_content_is_a_conflict(st):
    st.store([counts(0, minute(0), people=3), alert(1)])
    other = counts(2, minute(0), people=30)
    result = st.store([other, alert(3, severity="critical"), counts(4, minute(1))])
    assert result == {"stored": 1, "duplicate": 0, "dead": 2}
    bucket, crowd = reasons(st)
    assert bucket.startswith("conflict: bucket") and "msg_id a1-0" in bucket
    assert crowd.startswith("conflict: alert crowd-1") and "msg_id a-1" in crowd
    assert line_in(st) == 4  # the first copy, never the second
    (stored_alert,) = st.fetch("SELECT severity, msg_id FROM alerts")
    assert stored_alert == ("warning", "a-1")
    # A rejected message's seq stays missing: the data it carried was not stored.
    assert [(g["seq_from"], g["seq_to"], g["missing"]) for g in st.gaps()] == [(2, 3, 2)]


def test_misaligned_and_overlapping_buckets_are_rejected(st):
    st.store([counts(i, minute(i)) for i in range(5)])
    result, dead = st.store_batch(
        [
            counts(5, minute(5.5)),  # not on a minute
            counts(6, minute(0), seconds=300, merged=(6, 7, 8, 9, 10)),  # over 0-4
            counts(11, minute(10), seconds=300),  # a plain 5-minute bucket: fine
            counts(12, minute(12)),  # inside it
            counts(13, minute(17), seconds=180, merged=(13, 14, 15)),  # merged, on the minute
            counts(16, minute(15), seconds=120),  # 2-minute bucket at an odd minute
        ]
    )
    assert result == {"stored": 2, "duplicate": 0, "dead": 4}
    why = [d.error for d in dead if d.error]
    assert why[0].startswith("bucket not aligned") and "60 s" in why[0]
    assert why[1].startswith("bucket overlaps") and "msg_id a1-0" in why[1]
    assert why[2].startswith("bucket overlaps") and "msg_id a1-11" in why[2]
    assert why[3].startswith("bucket not aligned")
    assert line_in(st) == 7


def test_overlap_with_a_bucket_of_an_earlier_day_is_found(st):
    # A merged bucket over midnight is stored in the day partition (PostgreSQL) it starts
    # in; a later batch's buckets of the next day still meet it, also when the batch spans
    # days on either side.
    midnight = T0.replace(hour=0)
    st.store([counts(0, midnight - timedelta(hours=1), seconds=7200, merged=(1, 2))])
    result, dead = st.store_batch(
        [counts(3, midnight + timedelta(minutes=30)), counts(4, midnight + timedelta(hours=1)),
         counts(5, midnight + timedelta(hours=20))]
    )  # fmt: skip
    assert result == {"stored": 2, "duplicate": 0, "dead": 1}
    assert dead[0].error and dead[0].error.startswith("bucket overlaps")
    assert "msg_id a1-0" in dead[0].error


def test_buckets_at_implausible_times_are_dead_lettered(st):
    now = NOW.timestamp()
    old = counts(0, NOW - timedelta(days=401))
    ahead = counts(1, NOW + timedelta(seconds=600))  # ends 660 s after it was received
    edge = counts(2, NOW + timedelta(seconds=540))  # ends exactly 600 s after
    recent = counts(3, NOW - timedelta(days=399))
    result, dead = st.store_batch([old, ahead, edge, recent], now=now)
    assert result == {"stored": 2, "duplicate": 0, "dead": 2}
    why = [d.error for d in dead if d.error]
    assert why[0].startswith("bucket too old") and "400 days" in why[0]
    assert why[1].startswith("bucket in the future") and "600 s" in why[1]


def test_dead_letters_are_capped_and_expire_oldest_first(tmp_path, storage_url):
    settings = CentralSettings.model_validate({"dead_letters": {"max_days": 2, "max_rows": 5}})
    url = storage_url()
    st = Storage(url, settings)
    now = time.time()
    bad = [Received("pantau/v1/s1/a1/cam/counts", f"junk {i}".encode(), error=f"e{i}")
           for i in range(8)]  # fmt: skip
    st.store(bad[:3], now=now - 3 * 86400)  # old enough to expire once anything is stored
    st.store(bad[3:], now=now)
    assert reasons(st) == ["e3", "e4", "e5", "e6", "e7"]
    assert st.summary()["dead_letters_dropped"] == 3
    st.store(bad[:2], now=now)
    assert reasons(st) == ["e5", "e6", "e7", "e0", "e1"]
    st.close()
    res = cli("pantau-central", "status", "-c", str(write_central_config(tmp_path, 1883, url)))
    assert res.returncode == 0, res.stderr
    summary = summary_of(res.stdout)
    assert summary["dead_letters"] == 5 and summary["dead_letters_dropped"] == 5
