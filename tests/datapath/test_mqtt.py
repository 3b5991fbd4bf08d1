"""The MQTT connection's lean receive path against a real Mosquitto: what paho's private methods
that agent/wire/mqtt.py overrides must still do. A paho upgrade that changes them fails here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pantau.agent.wire.mqtt import READ_CHUNK, MqttConnection
from pantau.agent.wire.settings import BrokerSettings

TOPIC = "pantau/v1/s1/a1/cam/counts"
BIG = 3 * READ_CHUNK // 4  # two of these span a read


def publish(port: int, messages: list[tuple[str, bytes, Properties | None, bool]]) -> None:
    """Publish at QoS 1 and wait for every PUBACK."""
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = [
        pub.publish(topic, payload, qos=1, retain=retain, properties=props)
        for topic, payload, props, retain in messages
    ]
    for info in infos:
        info.wait_for_publish(10)
    pub.loop_stop()
    pub.disconnect()


def wait_for(predicate: Callable[[], bool], what: Callable[[], str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {what()}"
        time.sleep(0.02)


def raw_session(port: int, got: list, acked: bool) -> MqttConnection:
    """A persistent-session subscriber on the lean path that acks (or not) what it gets."""
    conn: MqttConnection

    def on_raw(topic: bytes, payload: bytes, mid: int, qos: int, retain: bool) -> None:
        got.append((topic, payload, qos, retain))
        if acked:
            conn.ack_many([mid])

    conn = MqttConnection(
        BrokerSettings(port=port, session_expiry=600),
        client_id="lean-test",
        manual_ack=True,
        receive_maximum=5000,
        max_packet_size=2 * READ_CHUNK,
        on_connect=lambda _present: conn.subscribe("pantau/v1/#", qos=1),
        on_raw=on_raw,
    )
    return conn


def test_raw_receive_is_exact_across_reads_and_properties_and_acks_in_one_write(broker):
    # Join the session, then leave: what is published next queues at the broker and arrives
    # in a burst, many packets per socket read, some split across reads.
    first = raw_session(broker.port, [], acked=False)
    first.start()
    assert first.wait_connected(10)
    time.sleep(0.3)
    first.stop()
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "pantau/v1/s1/a1/evidence/response/x"
    props.CorrelationData = b"\x00\xff" * 40
    props.UserProperty = ("k", "v" * 300)  # a properties length of two bytes
    sent = [(f"{TOPIC}{i % 7}", f"payload {i} ".encode() * (1 + i % 50), None, False)
            for i in range(3000)]  # fmt: skip
    sent[10] = (TOPIC, b"with properties", props, False)
    sent[11] = (TOPIC, b"x" * BIG, props, False)
    sent[12] = (TOPIC, b"y" * BIG, None, False)
    sent[13] = (TOPIC, b"", None, False)
    sent.append((TOPIC + "r", b"retained", None, True))
    publish(broker.port, sent)

    got: list = []
    conn = raw_session(broker.port, got, acked=True)
    conn.start()
    try:
        wait_for(lambda: len(got) >= len(sent), lambda: f"{len(got)} of {len(sent)}")
        # All in order. The retained one may come twice (queued, and again with the
        # subscribe on connect), flagged retained only on the second.
        kept = TOPIC.encode() + b"r"
        assert [(t.decode(), p) for t, p, _, _ in got if t != kept] == [
            (t, p) for t, p, _, _ in sent[:-1]
        ]
        assert {p for t, p, _, _ in got if t == kept} == {b"retained"}
        assert {q for _, _, q, _ in got} == {1}
    finally:
        conn.stop()
    # Every PUBACK reached the broker: the resumed session has nothing to redeliver (the
    # retained message comes again with each subscribe, flagged retained).
    again: list = []
    conn = raw_session(broker.port, again, acked=False)
    conn.start()
    try:
        assert conn.wait_connected(10)
        time.sleep(1.0)
        assert again and [m for m in again if not m[3]] == []
    finally:
        conn.stop()


def test_message_path_keeps_properties_with_buffered_reads(broker):
    got: list[mqtt.MQTTMessage] = []
    done = threading.Event()

    def on_message(msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        if len(got) == 200:
            done.set()

    conn = MqttConnection(
        BrokerSettings(port=broker.port),
        client_id="message-test",
        on_connect=lambda _present: conn.subscribe("pantau/v1/#", qos=1),
        on_message=on_message,
    )
    conn.start()
    try:
        assert conn.wait_connected(10)
        time.sleep(0.3)
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = b"corr"
        publish(broker.port, [(TOPIC, str(i).encode(), props, False) for i in range(200)])
        assert done.wait(20)
        assert [m.payload for m in got] == [str(i).encode() for i in range(200)]
        assert all(m.properties.CorrelationData == b"corr" for m in got)
    finally:
        conn.stop()
