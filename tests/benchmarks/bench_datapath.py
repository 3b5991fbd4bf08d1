"""Data-path benchmark (a script, not a test): outbox write rate, publish rate, central ingest
rate through Mosquitto into SQLite (one worker), and the replay of a 24 h x 16 camera backlog.

    .venv/bin/python -m tests.benchmarks.bench_datapath [--cameras 16 --hours 24]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import AgentSettings
from agent.outbox import Outbox
from agent.publisher import Publisher
from agent.simulate import Plan, bucket_items, parse_start
from agent.simulate import run as generate
from central.config import CentralSettings
from central.ingest import Ingest
from central.storage import Storage
from tests.conftest import Broker


def wait_until(predicate, timeout: float = 300.0, step: float = 0.02) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark step timed out")
        time.sleep(step)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--ingest-messages", type=int, default=20000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pantau-bench-"))
    broker = Broker(tmp)
    broker.start()
    results: dict[str, object] = {}
    try:
        plan = Plan(args.cameras, args.hours, parse_start(None, 60, args.hours + 1))
        agent = AgentSettings(
            id="bench", site="s1", broker={"port": broker.port}, buffer={"path": tmp / "ob.db"}
        )
        central = CentralSettings(broker={"port": broker.port}, storage=f"sqlite:///{tmp}/c.db")

        # 1. Outbox writes: the whole plan, committed (fsync) one batch of 256 at a time.
        outbox = Outbox(agent.buffer.path, agent="bench", site="s1")
        t = time.perf_counter()
        n = sum(generate(plan, outbox))
        write_s = time.perf_counter() - t
        results["outbox_write_msgs_per_s"] = round(n / write_s)
        results["backlog_messages"] = n

        # 2. Central ingest: the same messages queued at the broker for central's persistent
        #    session while it is away, then drained by one worker.
        storage = Storage(central.storage)
        ingest = Ingest(central, storage)
        ingest.start()
        ingest.conn.wait_connected(10)
        time.sleep(0.5)
        ingest.stop()
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.max_inflight_messages_set(1000)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        bodies = [m.encode() for m in outbox.messages("counts")[: args.ingest_messages]]
        topics = [m.topic for m in outbox.messages("counts")[: args.ingest_messages]]
        t = time.perf_counter()
        infos = [pub.publish(tp, b, qos=1) for tp, b in zip(topics, bodies, strict=True)]
        for info in infos:
            info.wait_for_publish(60)
        results["raw_publish_msgs_per_s"] = round(len(infos) / (time.perf_counter() - t))
        pub.loop_stop()
        pub.disconnect()
        storage = Storage(central.storage)
        ingest = Ingest(central, storage)
        t = time.perf_counter()
        ingest.start()
        ingest_s = wait_until(lambda: ingest.stats.stored >= len(infos))
        ingest.stop()
        results["central_ingest_msgs_per_s"] = round(len(infos) / ingest_s)
        results["central_ingest_batches"] = ingest.stats.batches

        # 3. Backlog replay: central up, the agent comes back with the whole backlog queued.
        storage = Storage(f"sqlite:///{tmp}/replay.db")
        ingest = Ingest(central.model_copy(update={"worker": "2", "group": "replay"}), storage)
        ingest.start()
        ingest.conn.wait_connected(10)
        publisher = Publisher(agent, outbox, cameras=args.cameras)
        t = time.perf_counter()
        publisher.start()
        drained = wait_until(lambda: len(outbox) == 0 or publisher.wait_drained(0.05))
        stored = (
            wait_until(
                lambda: storage.summary()["buckets"] >= args.cameras * plan.buckets, timeout=120
            )
            + drained
        )
        publisher.stop()
        ingest.stop()
        results["replay_rate_limit_msgs_per_s"] = agent.buffer.replay_rate
        results["replay_drain_seconds"] = round(drained, 2)
        results["replay_stored_at_central_seconds"] = round(stored, 2)
        results["replay_msgs_per_s"] = round(n / drained)
        results["bucket_example_bytes"] = len(bucket_items(plan, 0)[0][2].model_dump_json())
    finally:
        broker.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
