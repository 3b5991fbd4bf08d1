"""Data-path benchmark (a script, not a test): outbox write rate, publish rate, central ingest
rate through Mosquitto into SQLite (one worker) and PostgreSQL (one and two workers sharing the
subscription), and the replay of a 24 h x 16 camera backlog.

    .venv/bin/python -m tests.benchmarks.bench_datapath [--cameras 16 --hours 24]
        [--ingest sqlite postgresql] [--fleet 64 --fleet-hours 1 [--skip-single]]
        [--storage URL | --prefill-days 30 --prefill-cameras 1000] [--skip-replay]

The ingest step also reports the CPU each kind of process spent per stored message (the MQTT
processes, their storage children, PostgreSQL's backends, Mosquitto): on a busy box a better
guide than the rate.

With --fleet N it first replays a 1-hour central outage of N agents of --cameras cameras each
into two PostgreSQL workers (issue 16: 64 x 16 caught up in < 60 s). The PostgreSQL ingest
runs on an empty database, on one that holds a history (--prefill-days: generated for each
run by tests.benchmarks.prefill), or on an existing one (--storage); each run reports the
rate of the first and of the last tenth of its messages too (issue 16: sustained, the last
within 20 % of the first), and the database's size after it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import Outbox, new_msg_id
from pantau.agent.delivery.publisher import Publisher
from pantau.agent.delivery.simulate import Plan, bucket_items, parse_start
from pantau.agent.delivery.simulate import run as generate
from pantau.agent.wire.protocol import ack_topic
from pantau.central.storage import Storage

from tests.benchmarks.prefill import PG_SERVER, database, prefill
from tests.conftest import Broker

BIN = Path(sys.executable).parent
INGEST_RUNS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))


def wait_until(predicate, timeout: float = 300.0, step: float = 0.02) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark step timed out")
        time.sleep(step)
    return time.perf_counter() - start


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first); [] if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process (0 if it is gone)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def children(pid: int) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and (fields := _stat(p.name)) and int(fields[1]) == pid
    ]


def postgres_backends(url: str) -> list[int]:
    """The server processes of the connections to the database at `url`."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG_SERVER}/postgres") as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchall()
    return [r[0] for r in rows]


def ingest_rate(
    tmp: Path, broker: Broker, outbox: Outbox, args: argparse.Namespace, url: str, workers: int
) -> dict[str, object]:
    """Messages and count rows per second that `workers` `pantau-central run` processes (one
    shared-subscription group, one database at `url`) store while draining a queue of counts
    messages that waited at the broker for their sessions, the CPU microseconds per stored
    message of each kind of process, and the messages per second of the first and of the last
    tenth of them (sustained: the last as fast as the first). The messages are new to the
    database whatever it holds (agents and msg_ids of this run)."""
    port = broker.port
    group = f"bench{secrets.token_hex(3)}"
    configs = []
    for w in range(workers):
        config = tmp / f"{group}-{w}.yaml"
        config.write_text(
            f"broker: {{port: {port}}}\nstorage: '{url}'\ngroup: {group}\nworker: 'w{w}'\n"
        )
        configs.append([str(BIN / "pantau-central"), "run", "-c", str(config)])
    for central in configs:  # each worker's session joins the share, then goes away
        subprocess.run([*central, "--duration", "2"], check=True, capture_output=True)
    storage = Storage(url)

    def stored() -> int:  # buckets: retention, which may run meanwhile, drops messages rows
        return storage.counter("buckets") or 0

    base = stored()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    sent = 0
    batch = fleet(outbox.messages("counts")[: args.ingest_messages], args.ingest_agents, group)
    for msg in batch:
        pub.publish(msg.topic, msg.encode(), qos=1)
        sent += 1
    while pub.want_write() or pub._out_messages:  # wait for every PUBACK
        time.sleep(0.05)
    pub.loop_stop()
    pub.disconnect()
    procs = [
        subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in configs
    ]
    samples: list[tuple[float, int]] = []  # (time, messages stored by this run)

    def done(n: int) -> bool:
        samples.append((time.perf_counter(), stored() - base))
        return samples[-1][1] >= n

    try:
        wait_until(lambda: done(1), step=0.005)
        assert broker.proc is not None
        groups = {
            "mosquitto": [broker.proc.pid],
            "mqtt": [p.pid for p in procs],
            "store": [c for p in procs for c in children(p.pid)],
            "postgres": postgres_backends(url) if url.startswith("postgresql") else [],
        }
        cpu = {k: sum(map(cpu_seconds, pids)) for k, pids in groups.items()}
        (t0, n0), rows = samples[-1], storage.counter("count_rows") or 0
        wait_until(lambda: done(sent), step=0.01)
        took, tenth = samples[-1][0] - t0, (sent - n0) // 10
        spent = {k: sum(map(cpu_seconds, pids)) - cpu[k] for k, pids in groups.items()}
        rates: dict[str, object] = {
            "messages_per_s": round((sent - n0) / took),
            "count_rows_per_s": round(((storage.counter("count_rows") or 0) - rows) / took),
            "first_tenth_msgs_per_s": _rate(samples, n0, n0 + tenth),
            "last_tenth_msgs_per_s": _rate(samples, sent - tenth, sent),
            "cpu_us_per_msg": {
                k: round(v / (sent - n0) * 1e6)
                for k, v in {**spent, "total": sum(spent.values())}.items()
            },
            "load": round(os.getloadavg()[0], 1),
            "db_mb": round(storage.size_bytes() / 1e6),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
        storage.close()
    return rates


def _rate(samples: list[tuple[float, int]], lo: int, hi: int) -> int:
    """Messages per second from the last sample that had stored at most `lo` to the first that
    had stored `hi`."""
    t_lo, n_lo = [s for s in samples if s[1] <= lo][-1]
    t_hi, n_hi = next(s for s in samples if s[1] >= hi)
    return round((n_hi - n_lo) / (t_hi - t_lo))


def fleet(messages: list[Any], agents: int, run: str = "") -> Iterator[Any]:
    """The messages of one agent's outbox as `agents` agents would send them: cameras dealt
    out among the agents, each agent with seqs of its own from 0 (workers then take agents in
    parallel instead of queueing on one agent's lock). With `run`, agents and msg_ids of that
    run: new to a database that holds an earlier run's."""
    names = sorted({m.camera for m in messages})
    seqs: dict[str, int] = {}
    for m in messages:
        agent = f"{m.agent}{run}-{names.index(m.camera) % agents}"
        seqs[agent] = seqs.get(agent, -1) + 1
        update = {"agent": agent, "seq": seqs[agent]}
        yield m.model_copy(update={**update, "msg_id": new_msg_id()} if run else update)


def fleet_replay(tmp: Path, port: int, args: argparse.Namespace) -> dict[str, float]:
    """An outage of central for `fleet_hours` of a fleet of `fleet` agents with `cameras`
    cameras each: every agent comes back at once with its backlog, into `fleet_workers`
    PostgreSQL workers. Seconds until central has stored every bucket, and until every agent's
    outbox is empty (central's acks cover all of it)."""
    plan = Plan(args.cameras, args.fleet_hours, parse_start(None, 60, args.fleet_hours + 1))
    agents = []
    for a in range(args.fleet):
        settings = AgentSettings(
            id=f"f{a:03d}", site=f"site{a // 4:02d}", broker={"port": port},
            buffer={"path": tmp / f"fleet-{a}.db"},
        )  # fmt: skip
        outbox = Outbox(settings.buffer.path, agent=settings.id, site=settings.site)
        sum(generate(plan, outbox))
        agents.append((settings, outbox))
    expected = args.fleet * args.cameras * plan.buckets
    with database() as url:
        procs = []
        for w in range(args.fleet_workers):
            config = tmp / f"fleet-{w}.yaml"
            config.write_text(
                f"broker: {{port: {port}}}\nstorage: '{url}'\ngroup: fleet\nworker: 'w{w}'\n"
            )
            procs.append(
                subprocess.Popen(
                    [str(BIN / "pantau-central"), "run", "-c", str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:  # each has joined the share
            assert proc.stderr is not None and "subscribed to" in proc.stderr.readline()
        time.sleep(0.5)
        storage = Storage(url)
        publishers = [Publisher(s, o, cameras=args.cameras) for s, o in agents]
        try:
            t = time.perf_counter()
            for p in publishers:
                p.start()
            stored = wait_until(lambda: (storage.counter("buckets") or 0) >= expected, 600, 0.1)
            drained = wait_until(lambda: all(p.wait_drained(0) for p in publishers), 600, 0.1)
            return {
                "agents": args.fleet,
                "cameras_per_agent": args.cameras,
                "outage_hours": args.fleet_hours,
                "buckets": expected,
                "workers": args.fleet_workers,
                "stored_s": round(stored, 1),
                "acked_s": round(time.perf_counter() - t, 1),
                "drain_after_stored_s": round(drained, 1),
            }
        finally:
            for p in publishers:
                p.stop()
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(20)
            storage.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--ingest-messages", type=int, default=20000)
    ap.add_argument(
        "--fleet", type=int, default=0, help="Agents of the fleet replay step (0: skip it)."
    )
    ap.add_argument("--fleet-hours", type=float, default=1.0, help="Outage of the fleet replay.")
    ap.add_argument("--fleet-workers", type=int, default=2, help="Workers of the fleet replay.")
    ap.add_argument("--skip-single", action="store_true", help="Only the fleet replay step.")
    ap.add_argument(
        "--ingest-agents", type=int, default=8, help="Agents the ingested cameras are dealt to."
    )
    ap.add_argument(
        "--ingest",
        nargs="*",
        default=["sqlite", "postgresql"],
        help="Backends of the ingest step (PostgreSQL at 127.0.0.1:5432, user postgres).",
    )
    ap.add_argument(
        "--storage",
        help="PostgreSQL URL of the ingest step's database (one that exists: e.g. filled by "
        "tests.benchmarks.prefill --keep); else a new empty one per run, dropped after.",
    )
    ap.add_argument(
        "--prefill-days",
        type=int,
        default=0,
        help="Fill each PostgreSQL ingest run's new database first with this many days of "
        "history (tests.benchmarks.prefill).",
    )
    ap.add_argument("--prefill-cameras", type=int, default=1000, help="Cameras of that history.")
    ap.add_argument("--skip-replay", action="store_true", help="Stop after the ingest step.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pantau-bench-"))
    broker = Broker(tmp)
    broker.start()
    results: dict[str, object] = {}
    try:
        if args.fleet:
            # 4. A fleet's replay after a central outage (first, on an idle broker).
            results["fleet_replay"] = fleet_replay(tmp, broker.port, args)
            print("fleet_replay", results["fleet_replay"], flush=True)
            if args.skip_single:
                return
        plan = Plan(args.cameras, args.hours, parse_start(None, 60, args.hours + 1))
        agent = AgentSettings(
            id="bench", site="s1", broker={"port": broker.port}, buffer={"path": tmp / "ob.db"}
        )

        # 1. Outbox writes: the whole plan, committed (fsync) one batch of 256 at a time.
        outbox = Outbox(agent.buffer.path, agent="bench", site="s1")
        t = time.perf_counter()
        n = sum(generate(plan, outbox))
        write_s = time.perf_counter() - t
        results["outbox_write_msgs_per_s"] = round(n / write_s)
        results["backlog_messages"] = n

        # 2. Central ingest: the messages queued at the broker for central's persistent
        #    sessions while they are away, then drained by `pantau-central run` processes:
        #    SQLite with one, PostgreSQL with one and with two (one subscription group).
        for backend, workers in INGEST_RUNS:
            if backend not in args.ingest:
                continue
            name = f"central_ingest_{backend}_{workers}w"
            if backend == "sqlite":
                url = f"sqlite:///{tmp}/ingest-{workers}.db"
                results[name] = ingest_rate(tmp, broker, outbox, args, url, workers)
            elif args.storage:
                results[name] = ingest_rate(tmp, broker, outbox, args, args.storage, workers)
            else:
                with database() as url:
                    if args.prefill_days:
                        end = int(time.time()) // 3600 * 3600
                        results[f"{name}_prefill"] = prefill(
                            url, args.prefill_cameras, args.prefill_days, end
                        )
                    results[name] = ingest_rate(tmp, broker, outbox, args, url, workers)
            print(name, results[name], flush=True)
        if args.skip_replay:
            return
        # That central's retained ack says the whole backlog is stored; the replay's central
        # below is another one, with an empty database: clear the ack, as a new central's
        # first ack would replace it.
        clear = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        clear.connect("127.0.0.1", broker.port)
        clear.loop_start()
        clear.publish(ack_topic(agent.site, agent.id), b"", qos=1, retain=True).wait_for_publish(5)
        clear.loop_stop()

        # 3. Backlog replay: central up, the agent comes back with the whole backlog queued.
        config = tmp / "replay.yaml"
        config.write_text(
            f"broker: {{port: {broker.port}}}\nstorage: sqlite:///{tmp}/replay.db\ngroup: replay\n"
        )
        central_proc = subprocess.Popen(
            [str(BIN / "pantau-central"), "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(2)
        storage = Storage(f"sqlite:///{tmp}/replay.db")
        publisher = Publisher(agent, outbox, cameras=args.cameras)
        publisher.start()
        drained = wait_until(lambda: publisher.wait_drained(0.05))
        stored = drained + wait_until(
            lambda: storage.summary()["buckets"] >= args.cameras * plan.buckets, timeout=120
        )
        publisher.stop()
        central_proc.terminate()
        central_proc.wait(20)
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
