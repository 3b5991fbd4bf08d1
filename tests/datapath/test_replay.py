"""Replay after an outage through a real Mosquitto: rate-limited, each camera's buckets in order,
and an alert raised during the replay overtakes the backlog."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.delivery.publisher import Publisher
from pantau.agent.wire.protocol import AlertPayload, CountsPayload

T0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=12)


def test_replay_is_rate_limited_ordered_and_alerts_jump_the_queue(tmp_path, broker):
    settings = AgentSettings(
        id="a1",
        site="s1",
        broker={"port": broker.port},
        buffer={"path": tmp_path / "ob.db", "replay_rate": 400},
        # No central here: drained means the broker took everything.
        delivery={"until": "broker"},
    )
    outbox = Outbox(settings.buffer.path, agent="a1", site="s1")
    backlog = [
        (
            "counts",
            f"cam{c}",
            CountsPayload(
                bucket_start=T0 + timedelta(minutes=i), bucket_seconds=60, observed_seconds=60
            ),
        )
        for i in range(600)
        for c in range(2)
    ]
    outbox.enqueue(backlog)

    arrived: list[tuple[float, str, str, str]] = []
    lock = threading.Lock()

    def on_message(_c, _u, msg):
        body = json.loads(msg.payload)
        key = body["payload"].get("bucket_start") or body["payload"].get("alert_id")
        with lock:
            arrived.append((time.monotonic(), body["kind"], body["camera"], key))

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("pantau/v1/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)

    publisher = Publisher(settings, outbox, cameras=2)
    started = time.monotonic()
    publisher.start()
    time.sleep(1.0)  # the replay is under way
    raised_at = time.monotonic()
    outbox.enqueue(
        [
            (
                "alerts",
                "cam0",
                AlertPayload(alert_id="live-1", type="intrusion", state="raised", started_at=T0),
            )
        ]
    )
    publisher.notify()
    assert publisher.wait_drained(30)
    publisher.stop()
    time.sleep(0.3)
    sub.loop_stop()

    counts = [a for a in arrived if a[1] == "counts"]
    alert = next(a for a in arrived if a[1] == "alerts")
    assert len(counts) == 1200
    # The alert did not wait for the backlog: it arrived within a second of being raised,
    # while most of the backlog was still to come.
    assert alert[0] - raised_at < 1.0
    assert sum(1 for a in counts if a[0] > alert[0]) > 400
    # Rate-limited: 1,200 messages at 400/s (one second of burst) take well over 1.5 s.
    took = counts[-1][0] - started
    assert 1.5 < took < 10, took
    # Each camera's buckets arrive in order.
    for cam in ("cam0", "cam1"):
        starts = [a[3] for a in counts if a[2] == cam]
        assert starts == sorted(starts) and len(starts) == 600
