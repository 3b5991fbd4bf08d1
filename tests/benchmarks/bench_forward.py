"""Forwarder benchmark (a script, not a test): webhook delivery rate to a local receiver, and
the catch-up after a receiver outage of an hour of a 1,000-camera fleet.

An hour of 1,000 cameras (60 one-minute counts buckets each: 60,000 events) plus alerts (a
raise and a clear for one camera in ten) is stored straight through Storage.store_batch (the
forwarder's queue is filled in the storing transactions) while a webhook forwarder runs against
a receiver that is down, backing off; after --outage seconds the receiver (http.server in its
own process, HTTP/1.1 keep-alive, checking every signature) comes back and the time until the
queue is empty and every event has arrived is the catch-up. `--batch 1` sends one event per
request (the default), larger values a JSON array per request.

    .venv/bin/python -m tests.benchmarks.bench_forward [--cameras 1000 --minutes 60]
        [--batch 1] [--outage 40] [--backend sqlite|postgresql]

Target (issue 17): catch-up of an hour of 1,000 cameras' counts and alerts under 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import secrets
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from pantau.agent.wire.protocol import CountsMessage, CountsPayload, LineCount, format_time
from pantau.central.config import CentralSettings
from pantau.central.events import Event
from pantau.central.forward import queue, signing
from pantau.central.forward.deliver import Forwarding
from pantau.central.storage import Received, Storage

from tests.conftest import free_port

KEY = b"bench-key"
CAMERAS_PER_AGENT = 16
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


def receive(port: int, unique: Any, bad: Any, first: Any, up: Any) -> None:
    """The receiver process: count unique event keys, check signatures."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stamp = self.headers[signing.TIMESTAMP_HEADER]
            ok = self.headers[signing.SIGNATURE_HEADER] == signing.signature(KEY, int(stamp), body)
            data = json.loads(body)
            with lock:
                if not seen:
                    first.value = time.time()
                for e in data if isinstance(data, list) else [data]:
                    seen.add(e["key"])
                unique.value = len(seen)
                if not ok:
                    bad.value += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    up.set()
    server.serve_forever()


def fill(st: Storage, cameras: int, minutes: int, end: datetime) -> int:
    """An hour of the fleet's buckets, minute by minute, and alerts; returns events queued."""
    start = end - timedelta(minutes=minutes)
    seqs: dict[str, int] = {}
    for m in range(minutes):
        t = start + timedelta(minutes=m)
        batch = []
        for c in range(cameras):
            agent = f"agent{c // CAMERAS_PER_AGENT:03d}"
            seq = seqs[agent] = seqs.get(agent, -1) + 1
            msg = CountsMessage.model_construct(
                v=1, kind="counts", msg_id=secrets.token_hex(16), seq=seq, agent=agent,
                site=f"site{c // 64:03d}", camera=f"cam{c % CAMERAS_PER_AGENT:02d}",
                created_at=t, epoch="",
                payload=CountsPayload.model_construct(
                    bucket_start=t, bucket_seconds=60, observed_seconds=60.0,
                    lines={"door": {"person": LineCount(**{"in": c % 7, "out": m % 5})}},
                    zones={}, merged_seqs=[],
                ),
            )  # fmt: skip
            batch.append(Received("", b"", msg))
        for i in range(0, len(batch), 500):
            st.store_batch(batch[i : i + 500])
    alerts = []
    for c in range(0, cameras, 10):
        site, agent = f"site{c // 64:03d}", f"agent{c // CAMERAS_PER_AGENT:03d}"
        camera, raised = f"cam{c % CAMERAS_PER_AGENT:02d}", format_time(start)
        for action in ("raise", "clear"):
            alerts.append(Event(
                "alerts", action, site, agent, camera, format_time(end), f"alert:{c}:{action}",
                {"alert_id": f"x{c}", "type": "intrusion", "severity": "critical",
                 "started_at": raised},
            ))  # fmt: skip
    st.begin()
    st._emit(alerts, format_time(end))
    st.commit()
    return int(st.one("SELECT COUNT(*) FROM forward_queue"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cameras", type=int, default=1000)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--batch", type=int, default=1, help="Events per POST.")
    ap.add_argument(
        "--outage",
        type=float,
        default=40.0,
        help="Seconds the receiver stays down (at least the storing time).",
    )
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = ap.parse_args()  # fmt: skip

    port = free_port()
    tmp = tempfile.TemporaryDirectory()
    admin = None
    if args.backend == "sqlite":
        url = f"sqlite:///{tmp.name}/central.db"
    else:
        import psycopg

        name = f"pantau_bench_{secrets.token_hex(4)}"
        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True)
        admin.execute(f"CREATE DATABASE {name}")
        url = f"{PG_SERVER}/{name}"
    forwarder = {
        "type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "secret": KEY.decode(),
        "batch": args.batch,
    }  # fmt: skip
    settings = CentralSettings(storage=url, forwarders={"cc": forwarder})
    st = Storage(url, settings)
    forwarding = Forwarding(settings)
    ctx = multiprocessing.get_context("spawn")
    unique, bad, first, up = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("d", 0.0), ctx.Event()
    receiver = ctx.Process(target=receive, args=(port, unique, bad, first, up), daemon=True)
    try:
        down_since = time.monotonic()
        forwarding.start()  # against a receiver that is not there: failing, backing off
        t0 = time.monotonic()
        end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        expected = fill(st, args.cameras, args.minutes, end)
        stored_s = time.monotonic() - t0
        print(f"stored {expected} events ({args.cameras} cameras x {args.minutes} min + alerts) "
              f"in {stored_s:.1f} s; receiver down", flush=True)  # fmt: skip
        time.sleep(max(0.0, args.outage - (time.monotonic() - down_since)))
        row = queue.status(st, settings.forwarders)[0]
        print(f"after {time.monotonic() - down_since:.0f} s down: backlog {row['backlog']}, "
              f"last error {row['last_error']!r}", flush=True)  # fmt: skip
        receiver.start()
        up.wait(30)
        back = time.monotonic()
        while unique.value < expected:
            time.sleep(0.05)
        arrived = time.monotonic() - back
        sending = time.time() - first.value  # from the first event received to the last
        while st.one("SELECT COUNT(*) FROM forward_queue"):
            time.sleep(0.05)
        drained = time.monotonic() - back
        result = {
            "backend": args.backend,
            "batch": args.batch,
            "events": expected,
            "catch_up_s": round(drained, 1),
            "all_arrived_s": round(arrived, 1),
            "waited_for_retry_s": round(arrived - sending, 1),
            "events_per_s": round(expected / sending),
            "bad_signatures": bad.value,
            "target_s": 120,
        }
        print(json.dumps(result), flush=True)
    finally:
        forwarding.stop()
        receiver.kill()
        st.close()
        if admin is not None:
            admin.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")
        tmp.cleanup()


if __name__ == "__main__":
    main()
