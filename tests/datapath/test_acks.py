"""End-to-end acknowledgement pieces: the epoch in the envelope (old messages without it stay
valid), the ack message, the outbox's 'awaiting central' state with its confirmations, holes
and resends (real SQLite); central's per-epoch bookkeeping, acks and tail gaps (on both storage
backends)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import LANE_DATA, Outbox
from pantau.agent.delivery.publisher import Publisher
from pantau.agent.wire.protocol import (
    AckMessage,
    CountsMessage,
    HeartbeatMessage,
    HeartbeatPayload,
    ProtocolError,
    decode,
    decode_ack,
    format_time,
    utcnow,
)
from pantau.central.config import CentralSettings
from pantau.central.ingest import ACK_INTERVAL, ACK_REFRESH, AckThrottle
from pantau.central.storage import Received, Storage

from tests.datapath.test_outbox import counts as outbox_counts
from tests.datapath.test_storage import counts
from tests.datapath.test_upgrade import v1_copy


def with_epoch(item: Received, epoch: str) -> Received:
    msg = item.message.model_copy(update={"epoch": epoch, "msg_id": f"{epoch}-{item.message.seq}"})
    return Received(item.topic, msg.encode(), message=msg)


def heartbeat(seq: int, epoch: str = "") -> Received:
    msg = HeartbeatMessage(
        msg_id=f"hb{seq}-{time.monotonic_ns()}", seq=seq, agent="a1", site="s1", epoch=epoch,
        created_at=utcnow(),
        payload=HeartbeatPayload(uptime_seconds=1, outbox_messages=0, outbox_bytes=0),
    )  # fmt: skip
    return Received(msg.topic, msg.encode(), message=msg)


# --- protocol --------------------------------------------------------------------------------


def test_a_message_without_epoch_stays_valid_and_one_with_it_round_trips():
    item = counts(3, 3)
    body = json.loads(item.payload)
    del body["epoch"]
    legacy = decode(item.topic, json.dumps(body).encode())
    assert legacy.epoch == ""
    modern = decode(item.topic, with_epoch(item, "ab12").payload)
    assert isinstance(modern, CountsMessage) and modern.epoch == "ab12"
    body["epoch"] = "no/slash"
    with pytest.raises(ProtocolError, match="epoch"):
        decode(item.topic, json.dumps(body).encode())


def test_ack_message_round_trips_and_must_match_its_topic():
    ack = AckMessage(site="s1", agent="a1", epoch="e1", upto=9, ranges=[(12, 14)],
                     created_at=utcnow())  # fmt: skip
    assert ack.topic == "pantau/v1/s1/a1/ack"
    back = decode_ack(ack.topic, ack.encode())
    assert back.covered() == [(0, 9), (12, 14)]
    with pytest.raises(ProtocolError, match="arrived on"):
        decode_ack("pantau/v1/s1/a2/ack", ack.encode())
    with pytest.raises(ProtocolError):
        decode_ack(ack.topic, b'{"v": 1, "site": "s1", "agent": "a1", "upto": -2}')


# --- outbox ----------------------------------------------------------------------------------


def test_outbox_epoch_is_random_per_new_outbox_and_kept_on_reopen(tmp_path):
    a = Outbox(tmp_path / "a.db", agent="a1", site="s1")
    b = Outbox(tmp_path / "b.db", agent="a1", site="s1")
    assert a.epoch and b.epoch and a.epoch != b.epoch
    a.enqueue([outbox_counts(0)])
    assert a.messages()[0].epoch == a.epoch
    epoch = a.epoch
    a.close()
    assert Outbox(tmp_path / "a.db", agent="a1", site="s1").epoch == epoch


def test_v1_outbox_upgrades_to_the_legacy_epoch_its_seqs_are_known_under(tmp_path):
    ob = Outbox(v1_copy("outbox-v1.db", tmp_path / "ob.db"), agent="a1", site="s1",
                max_age_seconds=100 * 365 * 86400)  # fmt: skip
    assert ob.get_meta("epoch") == "" and ob.epoch == ""
    assert ob.stats()["awaiting_central"] == 0


def test_awaiting_rows_stay_counted_until_central_confirms_them(tmp_path):
    ob = Outbox(tmp_path / "ob.db", agent="a1", site="s1")
    ob.enqueue([outbox_counts(i) for i in range(6)])
    size = ob.size_bytes
    rows = ob.take(LANE_DATA, -1, 10)
    ob.hold([r.seq for r in rows], now=100.0)
    # Held: not taken again, still in the outbox and its size.
    assert ob.take(LANE_DATA, -1, 10) == [] and len(ob) == 6 and ob.size_bytes == size
    assert ob.awaiting() == 6
    gone, newest, released = ob.confirm([(0, 1), (4, 4)])
    assert (gone, newest, released) == (3, 100.0, [])
    assert len(ob) == 3 and ob.size_bytes < size
    assert ob.take(LANE_DATA, -1, 10) == []
    # Seqs 2 and 3 lie below a confirmed one and were acknowledged by the broker before it.
    ob.hold([5], now=200.0)
    gone, newest, released = ob.confirm([(0, 1), (4, 4)], hole_before=150.0)
    assert released == [2, 3] and ob.lowest(released) == {LANE_DATA: 2}
    assert [r.seq for r in ob.take(LANE_DATA, 1, 10)] == [2, 3]
    # A stalled one is released by age alone.
    assert ob.resend(older_than=150.0) == [] and ob.resend(older_than=250.0) == [5]
    ob.close()


def test_awaiting_rows_are_never_merged_but_relief_may_drop_them(tmp_path):
    ob = Outbox(tmp_path / "ob.db", agent="a1", site="s1")
    ob.enqueue([outbox_counts(i) for i in range(40)])
    ob.hold([r.seq for r in ob.take(LANE_DATA, -1, 20)])
    ob.max_bytes = ob.size_bytes  # the next enqueue must make room
    ob.enqueue([outbox_counts(40)])
    merged = [m for m in ob.messages("counts") if m.payload.merged_seqs]
    assert merged and all(min(m.payload.merged_seqs) >= 20 for m in merged)
    assert ob.awaiting() == 20
    ob.close()


# --- central ---------------------------------------------------------------------------------


def test_a_new_epoch_starts_its_own_bookkeeping_and_old_gaps_stay(new_storage):
    st = new_storage()
    st.store([counts(0, 0), counts(1, 1), counts(3, 3)])  # legacy epoch, gap at 2
    # Reinstalled: seq starts again at 0, in a new epoch, at other minutes.
    st.store([with_epoch(counts(s, 10 + s), "e2") for s in (0, 1, 2)])
    assert st.summary()["count_rows"] == 6
    gaps = [(g["epoch"], g["seq_from"], g["seq_to"], g["closed_at"]) for g in st.gaps()]
    assert gaps == [("", 2, 2, None)]
    assert st.acknowledgement("s1", "a1", "") == (1, [(3, 3)])
    assert st.acknowledgement("s1", "a1", "e2") == (2, [])
    assert st.acknowledgement("s1", "a1", "e3") == (-1, [])
    st.store([with_epoch(counts(5, 15), "e2")])
    assert [(g["epoch"], g["seq_from"]) for g in st.gaps(include_closed=False)] == [
        ("", 2),
        ("e2", 3),
    ]
    st.close()


def test_acks_are_bounded(new_storage):
    st = new_storage()
    st.store([counts(2 * i + 1, i) for i in range(100)])  # every other seq, 0 missing
    upto, ranges = st.acknowledgement("s1", "a1", "")
    assert upto == -1 and len(ranges) == 64 and ranges[0] == (1, 1)
    st.close()


def test_with_a_gap_grace_only_a_hole_that_lasts_becomes_a_gap(new_storage):
    # Two workers on one database, as `pantau-central run` sets them up.
    st = new_storage(CentralSettings(gap_grace=10))
    other = Storage(st.url, st.settings)
    try:
        st.defer_gaps()
        other.defer_gaps()
        now = float(int(time.time()))
        st.store([counts(0, 0), counts(2, 2)], now=now)  # 1 is still with the other worker
        assert st.sweep_gaps(now) == 0  # a first sighting records nothing
        other.store([counts(1, 1)], now=now + 0.1)
        st.store([counts(5, 5)], now=now + 1)  # 3 and 4 are lost for good
        assert st.gaps() == [] and st.summary()["open_gaps"] == 0
        assert st.sweep_gaps(now + 10) == 0 and other.sweep_gaps(now + 10) == 0
        assert st.sweep_gaps(now + 20) == 1 and other.sweep_gaps(now + 20) == 0  # once
        assert [
            (g["seq_from"], g["seq_to"], g["missing"], g["detected_at"], g["closed_at"])
            for g in st.gaps()
        ] == [(3, 4, 2, format_time(datetime.fromtimestamp(now + 10, timezone.utc)), None)]
        # Filled later, the recorded gap shrinks as without a grace.
        other.store([counts(3, 3)], now=now + 21)
        assert [(g["seq_from"], g["missing"]) for g in st.gaps()] == [(3, 1)]
        assert st.acknowledgement("s1", "a1", "") == (3, [(5, 5)])
    finally:
        other.close()


def test_a_tail_never_received_shows_as_an_open_gap_after_the_grace(new_storage):
    settings = CentralSettings(tail_gap_after=60)
    st = new_storage(settings)
    now = time.time()
    st.store([counts(0, 0), counts(1, 1), heartbeat(9)], now=now)
    assert st.gaps(now=now + 30) == []  # maybe still on its way
    tail = st.gaps(now=now + 61)
    assert [(g["seq_from"], g["seq_to"], g["missing"], g["closed_at"]) for g in tail] == [
        (2, 9, 8, None)
    ]
    assert st.summary()["open_gaps"] == 0
    # What arrives closes it; a later heartbeat sets the next checkpoint.
    st.store([counts(s, s) for s in range(2, 10)], now=now + 62)
    assert st.gaps(now=now + 100) == []
    st.store([heartbeat(12)], now=now + 63)
    assert [g["seq_from"] for g in st.gaps(now=now + 200)] == [10]
    st.close()


def test_ack_throttle_sends_changes_at_once_then_at_most_every_interval():
    t = AckThrottle()
    key = ("s1", "a1", "e")
    t.update(key, (5, []))
    assert t.due(100.0) == [(key, (5, []))]  # first change after a quiet spell: at once
    t.update(key, (7, []))
    assert t.due(100.0 + ACK_INTERVAL / 2) == []  # held back...
    assert t.due(100.0 + ACK_INTERVAL) == [(key, (7, []))]  # ...and sent when due
    t.update(key, (7, []))
    assert t.due(100.0 + ACK_INTERVAL * 2) == []  # unchanged: only as a refresh
    assert t.due(100.0 + ACK_INTERVAL + ACK_REFRESH) == [(key, (7, []))]
    assert t.due(1000.0) == []  # not heard from: nothing


def test_storage_keys_stale_epoch_messages_apart(new_storage):
    """A message of an old epoch arriving late is accounted under that epoch."""
    st = new_storage()
    st.store([with_epoch(counts(0, 0), "new"), counts(0, 1, camera="other")])
    assert st.acknowledgement("s1", "a1", "new") == (0, [])
    assert st.acknowledgement("s1", "a1", "") == (0, [])
    st.close()


def test_switching_to_broker_delivery_settles_what_awaited_central(tmp_path):
    settings = AgentSettings(
        broker={"port": 1}, buffer={"path": tmp_path / "ob.db"}, delivery={"until": "broker"}
    )
    ob = Outbox(settings.buffer.path, agent="a1", site="s1")
    ob.enqueue([outbox_counts(i) for i in range(3)])
    ob.hold([r.seq for r in ob.take(LANE_DATA, -1, 2)])
    publisher = Publisher(settings, ob)
    publisher.start()
    publisher.stop()
    assert [m.seq for m in ob.messages()] == [2] and ob.awaiting() == 0
    ob.close()
