"""Hostile input against a running central (real Mosquitto; real SQLite and real PostgreSQL):
single messages that once stopped central for good are dead-lettered with a reason, the valid
messages around them are stored exactly, and a message that breaks storage is isolated instead
of blocking the queue."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pantau.agent.wire.protocol import (
    CountsMessage,
    CountsPayload,
    HeartbeatMessage,
    HeartbeatPayload,
    LineCount,
    utcnow,
)
from pantau.central.ingest import DeadLetterLog, store_isolating_poison, validate
from pantau.central.storage import Storage

from tests.conftest import spawn
from tests.datapath.conftest import write_central_config
from tests.datapath.test_faults import stop

T0 = utcnow().replace(second=0, microsecond=0) - timedelta(hours=1)


def counts(seq: int, camera: str = "cam", people: int = 1) -> CountsMessage:
    return CountsMessage(
        msg_id=f"m-{camera}-{seq}",
        seq=seq,
        agent="a1",
        site="s1",
        camera=camera,
        created_at=T0,
        payload=CountsPayload(
            bucket_start=T0 + timedelta(minutes=seq),
            bucket_seconds=60,
            observed_seconds=60,
            lines={"door": {"person": LineCount(**{"in": people})}},
        ),
    )


def with_value(msg: CountsMessage, path: tuple[str | int, ...], value: object) -> bytes:
    body = json.loads(msg.encode())
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(body).encode()


def alert_with_details(seq: int, details: object, agent: str = "a1") -> bytes:
    return json.dumps(
        {
            "v": 1,
            "kind": "alerts",
            "msg_id": f"alert-{seq}",
            "seq": seq,
            "agent": agent,
            "site": "s1",
            "camera": "cam",
            "created_at": "2026-11-27T08:00:00Z",
            "payload": {
                "alert_id": f"x{seq}",
                "type": "buffer_overflow",
                "state": "raised",
                "started_at": "2026-11-27T08:00:00Z",
                "details": details,
            },
        }
    ).encode()


TOPIC = "pantau/v1/s1/a1/cam"


def start_central(tmp: Path, port: int, url: str):
    """`pantau-central run` storing into `url`, once it has subscribed."""
    proc = spawn("pantau-central", "run", "-c", str(write_central_config(tmp, port, url)))
    line = proc.stderr.readline()
    assert "subscribed to" in line, line + (proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(0.3)  # the broker handles the SUBSCRIBE in its own time
    return proc


def query(url: str, sql: str) -> list[tuple]:
    st = Storage(url)
    try:
        return st.fetch(sql)
    finally:
        st.close()


# (what, topic kind, payload) of each single message that once stopped central.
POISON = [
    (
        "count >= 2^63",
        "counts",
        with_value(counts(100), ("payload", "lines", "door", "person", "in"), 2**63),
    ),
    ("seq >= 2^63", "counts", with_value(counts(101), ("seq",), 2**63)),
    ("merged seq >= 2^63", "counts", with_value(counts(102), ("payload", "merged_seqs"), [2**63])),
    ("lost_seqs [[1]]", "alerts", alert_with_details(103, {"lost_seqs": [[1]]})),
    ("nested 100,000 deep", "counts", b"[" * 100_000 + b"]" * 100_000),
    ("NaN", "counts", with_value(counts(104), ("payload", "observed_seconds"), float("nan"))),
]


def publisher(port: int) -> mqtt.Client:
    """A plain MQTT v5 client on the test broker, its network loop running."""
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    return pub


def test_poison_between_valid_messages_central_keeps_storing(tmp_path, broker, storage_url):
    url = storage_url()
    central = start_central(tmp_path, broker.port, url)
    try:
        pub = publisher(broker.port)
        seq = 0
        for _, kind, payload in POISON:
            for _ in range(3):
                good = counts(seq)
                pub.publish(good.topic, good.encode(), qos=1).wait_for_publish(5)
                seq += 1
            pub.publish(f"pantau/v1/s1/a1/cam/{kind}", payload, qos=1).wait_for_publish(5)
        pub.loop_stop()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if query(url, "SELECT COUNT(*) FROM dead_letters")[0][0] == len(POISON):
                break
            time.sleep(0.2)
        assert central.poll() is None, "central must keep running"
        assert query(url, 'SELECT COUNT(*), SUM("in") FROM counts') == [(seq, seq)]
        reasons = [r for (r,) in query(url, "SELECT reason FROM dead_letters ORDER BY id")]
        assert len(reasons) == len(POISON)
        assert "less than or equal" in reasons[0] and "lost_seqs" in reasons[3]
        assert "nested too deeply" in reasons[4] and "finite" in reasons[5]
    finally:
        stop(central)


@pytest.fixture
def storage(new_storage):
    return new_storage()


# A fault no validation foresaw, injected in the real database: rows of camera 'poison' cannot
# be inserted (each backend's trigger syntax).
POISON_TRIGGER = {
    "SqliteStorage": [
        "CREATE TRIGGER poison BEFORE INSERT ON buckets WHEN NEW.camera = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'this row cannot be stored'); END"
    ],
    "PostgresStorage": [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.camera = 'poison' THEN RAISE EXCEPTION 'this row cannot be stored'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON buckets FOR EACH ROW EXECUTE FUNCTION poison()",
    ],
}
# A database that refuses every write: a fault of the environment, not of a message.
READ_ONLY = {
    "SqliteStorage": "PRAGMA query_only = ON",
    "PostgresStorage": "SET default_transaction_read_only = on",
}


def test_a_message_that_breaks_storage_is_dead_lettered_alone(storage):
    for statement in POISON_TRIGGER[type(storage).__name__]:
        storage.execute(statement)
    batch = [counts(0), counts(1, camera="poison"), counts(2)]
    items = [validate(m.topic, m.encode()) for m in batch]
    result, dead = store_isolating_poison(storage, items)
    assert result == {"stored": 2, "duplicate": 0, "dead": 1, "poison": 1}
    assert [d.topic for d in dead] == [batch[1].topic]
    assert dead[0].error and "this row cannot be stored" in dead[0].error
    stored = storage.fetch("SELECT camera, COUNT(*) FROM counts GROUP BY camera")
    assert stored == [("cam", 2)]


def test_a_broken_database_stops_ingest_instead_of_dead_lettering(storage):
    storage.execute(READ_ONLY[type(storage).__name__])
    items = [validate(m.topic, m.encode()) for m in (counts(0), counts(1))]
    with pytest.raises(storage.environmental):
        store_isolating_poison(storage, items)
    assert storage.one("SELECT COUNT(*) FROM dead_letters") == 0


def test_dead_letter_log_is_one_line_per_reason_per_interval(caplog):
    log = DeadLetterLog(interval=60)
    with caplog.at_level(logging.WARNING, logger="pantau.central.ingest"):
        for i in range(8000):
            log.add("t", f"schema: field {i} is bad", now=i * 0.001)
        log.add("t", "payload is not JSON: x", now=9.0)
        log.add("t", "schema: late", now=61.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "field 0" in lines[0] and "not JSON" in lines[1]
    assert "late" in lines[2] and "and 7999 more" in lines[2]


def forged(
    seq: int,
    start: datetime,
    seconds: int = 60,
    merged: tuple[int, ...] = (),
    people: int = 99,
    agent: str = "a1",
) -> tuple[str, bytes]:
    msg = CountsMessage(
        msg_id=f"forged-{agent}-{seq}", seq=seq, agent=agent, site="s1", camera="cam",
        created_at=T0,
        payload=CountsPayload(
            bucket_start=start, bucket_seconds=seconds, observed_seconds=seconds,
            lines={"door": {"person": LineCount(**{"in": people})}}, merged_seqs=list(merged),
        ),
    )  # fmt: skip
    return msg.topic, msg.encode()


def far_heartbeat(seq: int) -> tuple[str, bytes]:
    msg = HeartbeatMessage(
        msg_id=f"hb-{seq}", seq=seq, agent="a1", site="s1", created_at=T0,
        payload=HeartbeatPayload(uptime_seconds=1, outbox_messages=0, outbox_bytes=0),
    )  # fmt: skip
    return msg.topic, msg.encode()


def minute(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


# (expected dead-letter reason, topic and payload): each claim central must not believe.
UNBELIEVABLE = [
    ("seq far ahead", forged(10**6, minute(50))),
    ("seq far ahead", far_heartbeat(10**6)),
    ("seq far ahead", (f"{TOPIC}/alerts", alert_with_details(1000, {"lost_seqs": [[0, 10**7]]}))),
    ("conflict", forged(1001, minute(0))),  # valid seq 0's bucket, other counts
    ("bucket not aligned", forged(1002, minute(51.5))),
    ("bucket overlaps", forged(1003, minute(1), seconds=120, merged=(1003, 1004))),
    ("bucket too old", forged(1005, T0 - timedelta(days=401))),
    ("bucket in the future", forged(1006, T0 + timedelta(hours=3))),
]


def wait_for(url: str, sql: str, timeout: float = 20) -> None:
    """Until `sql` counts something in central's database (or the time is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.OperationalError):
            if query(url, sql)[0][0]:
                return
        time.sleep(0.1)


def test_unbelievable_claims_between_valid_messages(tmp_path, broker, storage_url):
    url = storage_url()
    central = start_central(tmp_path, broker.port, url)
    try:
        pub = publisher(broker.port)

        def send(topic: str, payload: bytes) -> None:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)

        seq = 0
        for _, (topic, payload) in UNBELIEVABLE:
            for _ in range(3):
                good = counts(seq)
                send(good.topic, good.encode())
                seq += 1
            send(topic, payload)
        # An agent whose first seq is ten million declares all below it lost: believed, and
        # booked as one range, not ten million rows.
        send(*forged(10_000_001, minute(0), people=5, agent="big"))
        wait_for(url, "SELECT COUNT(*) FROM gaps WHERE agent = 'big'")  # 0 - 10,000,000
        lost = {"lost_seqs": [[0, 10_000_000]]}
        send("pantau/v1/s1/big/cam/alerts", alert_with_details(10_000_002, lost, agent="big"))
        pub.loop_stop()
        wait_for(url, "SELECT COUNT(*) FROM gaps WHERE agent = 'big' AND closed_at > ''")
        assert central.poll() is None, "central must keep running"
        totals = dict(query(url, 'SELECT agent, SUM("in") FROM counts GROUP BY agent'))
        assert totals == {"a1": seq, "big": 5}
        reasons = [r for (r,) in query(url, "SELECT reason FROM dead_letters ORDER BY id")]
        assert [r.split(":")[0] for r in reasons] == [why for why, _ in UNBELIEVABLE]
        assert query(url, "SELECT seq_from, seq_to, missing, lost FROM gaps "
                     "WHERE agent = 'big'") == [(0, 10_000_000, 0, 10_000_001)]  # fmt: skip
        assert query(url, "SELECT COUNT(*) FROM seq_ranges WHERE agent = 'big'") == [(1,)]
    finally:
        stop(central)


def test_oversized_payloads_never_reach_central(tmp_path, broker, storage_url):
    """Central tells the broker its maximum packet size: 20 payloads of 1 MB are dropped by
    Mosquitto, not read into central's memory (and so not even dead-lettered)."""
    url = storage_url()
    central = start_central(tmp_path, broker.port, url)
    try:
        pub = publisher(broker.port)
        for i in range(20):
            pub.publish("pantau/v1/s1/a1/cam/counts", b"x" * 1_000_000, qos=1).wait_for_publish(5)
            good = counts(i)
            pub.publish(good.topic, good.encode(), qos=1).wait_for_publish(5)
        pub.loop_stop()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if query(url, "SELECT COUNT(*) FROM counts")[0][0] == 20:
                break
            time.sleep(0.2)
        assert central.poll() is None
        assert query(url, "SELECT COUNT(*) FROM counts")[0][0] == 20
        assert query(url, "SELECT COUNT(*) FROM dead_letters")[0][0] == 0
    finally:
        stop(central)
