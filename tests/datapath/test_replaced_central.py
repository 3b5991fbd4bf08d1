"""Central's database replaced by an empty one while the broker still holds the old one's
retained ack: the acks carry the database's id, the new central replaces the stale retained ack
with one of its own, and the agent sends again what it still holds instead of deleting it on
the old database's word."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.delivery.publisher import Publisher
from pantau.agent.delivery.simulate import Plan, parse_start
from pantau.agent.delivery.simulate import run as generate
from pantau.agent.wire.protocol import AckMessage, ack_topic, decode_ack
from pantau.central.storage import Storage

from tests.datapath.helpers import central_config
from tests.datapath.test_broker_kill import start_central
from tests.datapath.test_faults import stop


def retained_ack(port: int, site: str, agent: str, timeout: float = 2.0) -> AckMessage | None:
    """The ack the broker retains for an agent (None: none)."""
    got: queue.Queue[AckMessage] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, m: got.put(decode_ack(m.topic, bytes(m.payload)))
    client.connect("127.0.0.1", port)
    client.subscribe(ack_topic(site, agent), qos=1)
    client.loop_start()
    try:
        return got.get(timeout=timeout)
    except queue.Empty:
        return None
    finally:
        client.loop_stop()
        client.disconnect()


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def stored(url: str) -> int:
    st = Storage(url)
    try:
        return st.counter("messages") or 0
    finally:
        st.close()


def test_outbox_judges_central_ids_same_new_and_retired(tmp_path):
    outbox = Outbox(tmp_path / "ob.db", agent="a1", site="s1")
    assert outbox.adopt_central("aa") == "same"  # the first one seen
    assert outbox.adopt_central("aa") == "same"
    assert outbox.adopt_central("bb") == "new"
    assert outbox.adopt_central("aa") == "retired"  # a stale retained ack of the old one
    assert outbox.adopt_central("bb") == "same"
    outbox.close()
    reopened = Outbox(tmp_path / "ob.db", agent="a1", site="s1")
    assert reopened.adopt_central("aa") == "retired"  # remembered across restarts
    reopened.close()


def test_an_empty_replacement_database_gets_what_the_agent_still_holds(tmp_path: Path, broker):
    settings = AgentSettings(
        id="a1", site="s1", heartbeat_seconds=1,
        broker={"port": broker.port, "reconnect_min": 0.2, "reconnect_max": 1.0},
        buffer={"path": tmp_path / "outbox.db"},
        delivery={"until": "central", "resend_after": 3},
    )  # fmt: skip
    outbox = Outbox(settings.buffer.path, agent="a1", site="s1")
    n = sum(generate(Plan(4, 1, parse_start(None, 60, 2)), outbox))
    old_url = f"sqlite:///{tmp_path}/old.db"
    old_db = Storage(old_url)
    old_id = old_db.database_id()
    old_db.close()
    # The agent has applied the old database's acks before (it knows its id).
    assert outbox.adopt_central(old_id) == "same"

    # The old central stores every message (sent while the agent looked away): its retained
    # ack covers all of them, while the agent still holds every row.
    config = central_config(tmp_path, broker.port)
    config.write_text(config.read_text().replace(f"{tmp_path}/central.db", f"{tmp_path}/old.db"))
    central = start_central(tmp_path)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    for msg in outbox.messages():
        sender.publish(msg.topic, msg.encode(), qos=1).wait_for_publish(5)
    sender.loop_stop()
    sender.disconnect()
    wait_for(lambda: stored(old_url) == n)
    wait_for(lambda: (a := retained_ack(broker.port, "s1", "a1")) is not None and a.upto >= n - 1)
    stop(central)

    # The database is replaced by an empty one: the new central replaces the stale ack.
    new_url = f"sqlite:///{tmp_path}/new.db"
    config.write_text(config.read_text().replace(f"{tmp_path}/old.db", f"{tmp_path}/new.db"))
    central = start_central(tmp_path)
    try:
        new_db = Storage(new_url)
        new_id = new_db.database_id()
        new_db.close()
        assert new_id != old_id
        wait_for(lambda: (a := retained_ack(broker.port, "s1", "a1")) is not None
                 and a.central == new_id)  # fmt: skip
        ack = retained_ack(broker.port, "s1", "a1")
        assert ack is not None and ack.upto == -1 and ack.ranges == []

        # The agent comes back: it sends what the new database lacks instead of deleting it.
        publisher = Publisher(settings, outbox)
        publisher.start()
        try:
            assert publisher.wait_drained(60), f"{len(outbox)} never confirmed"
        finally:
            publisher.stop()
        assert stored(new_url) == n
        assert outbox.adopt_central(old_id) == "retired"
    finally:
        stop(central)
        outbox.close()
