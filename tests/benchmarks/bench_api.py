"""Read-API benchmark (a script, not a test): p50/p99 over HTTP (a real uvicorn, one client) of
(a) a month of hourly counts of one camera and (b) an 8-week visit pattern of a 64-camera site,
each with an unrestricted token and with a jurisdiction-scoped one (the scope's SQL included);
and (b) straight from storage, uncached, as the first request of a minute pays it.

The database holds M cameras (16 an agent, 64 a site, as bench_storage lays them out: two lines
x two classes a camera) over N days, stored through Storage.store_batch as hourly buckets: the
API reads only the hourly rollups, which hold the same rows whatever the bucket length, so this
loads in seconds what bench_storage's minute buckets load in an hour. `--url` reads an existing
database instead (e.g. bench_storage's 1,000-camera one, kept with its own options).

    .venv/bin/python -m tests.benchmarks.bench_api [--cameras 64 --days 56 --requests 200]
        [--backend sqlite|postgresql] [--url URL]

Target (issue 17): p99 < 200 ms for both questions.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import uvicorn
from pantau.agent.wire.protocol import CountsMessage, CountsPayload, LineCount
from pantau.central.api.app import create_app
from pantau.central.config import CentralSettings
from pantau.central.scope import Scope
from pantau.central.storage import Received, Storage

from tests.benchmarks.bench_storage import AGENTS_PER_SITE, CAMERAS_PER_AGENT, PG_SERVER
from tests.conftest import free_port, wait_port

CAMERA = "site000/agent000/cam03"
JURISDICTION = "polres-bench"


def place(c: int) -> tuple[str, str, str]:
    agent_n = c // CAMERAS_PER_AGENT
    return f"site{agent_n // AGENTS_PER_SITE:03d}", f"agent{agent_n:03d}", f"cam{c % 16:02d}"


def hourly(cameras: int, days: int, end: datetime) -> Iterator[list[Received]]:
    """One batch per hour of every camera, oldest first."""
    start = end - timedelta(days=days)
    seqs: dict[str, int] = {}
    for h in range(days * 24):
        t = start + timedelta(hours=h)
        busy = 1 + (8 <= (t.hour + 8) % 24 <= 18) * 4
        batch = []
        for c in range(cameras):
            site, agent, camera = place(c)
            seq = seqs.get(agent, 0)
            seqs[agent] = seq + 1
            k = (c * 7 + h) % 5
            msg = CountsMessage.model_construct(
                v=1, kind="counts", msg_id=secrets.token_hex(16), seq=seq, agent=agent, site=site,
                camera=camera, created_at=t, epoch="",
                payload=CountsPayload.model_construct(
                    bucket_start=t, bucket_seconds=3600, observed_seconds=3600.0,
                    lines={
                        "door": {"person": LineCount(**{"in": 60 * busy * k, "out": 60 * k}),
                                 "car": LineCount(**{"in": 60 * (k % 2), "out": 0})},
                        "gate": {"person": LineCount(**{"in": 60 * busy, "out": 60 * busy}),
                                 "truck": LineCount(**{"in": 0, "out": 60 * (k % 3)})},
                    },
                    zones={}, merged_seqs=[],
                ),
            )  # fmt: skip
            batch.append(Received("", b"", msg))
        yield batch


def timings(client: httpx.Client, path: str, params: dict, token: str, n: int) -> dict[str, Any]:
    """p50/p99 milliseconds of `n` requests (after one warm-up) and the answer's size."""
    headers = {"Authorization": f"Bearer {token}"}
    first = client.get(path, params=params, headers=headers)
    first.raise_for_status()
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        client.get(path, params=params, headers=headers).raise_for_status()
        runs.append((time.perf_counter() - t) * 1000)
    runs.sort()
    body = first.json()
    return {
        "p50_ms": round(statistics.median(runs), 1),
        "p99_ms": round(runs[min(n - 1, int(n * 0.99))], 1),
        "items": len(body.get("items", body.get("slots", []))),
    }


def _ms(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    site_cameras = {"/".join(place(c)): {"jurisdiction": JURISDICTION} for c in range(64)}
    settings = CentralSettings.model_validate({"storage": url, "cameras": site_cameras})
    st = Storage(url, settings)
    out: dict[str, Any] = {"storage": url.split(":")[0]}
    if not args.url:
        started = time.perf_counter()
        stored, pending = 0, []
        for batch in hourly(args.cameras, args.days, end):
            pending += batch
            if len(pending) >= 2000:
                stored += st.store(pending)["stored"]
                pending = []
        stored += st.store(pending)["stored"] if pending else 0
        out.update(cameras=args.cameras, days=args.days, messages=stored,
                   load_s=round(time.perf_counter() - started, 1))  # fmt: skip
    # The pattern's own cost, as the first request of a minute pays it (the API reuses an
    # answer for a minute: the requests below measure that).
    out["b_pattern_storage_uncached_ms"] = sorted(
        round(_ms(lambda: st.pattern("site000", weeks=8)), 1) for _ in range(5)
    )
    scopes = {"all": Scope(), "scoped": Scope.of(jurisdictions=[JURISDICTION])}
    tag = secrets.token_hex(3)
    tokens = {k: st.add_token(f"bench-{k}-{tag}", "viewer", s) for k, s in scopes.items()}
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_port(port, up=True)
    month = {"granularity": "hour", "camera": CAMERA, "rule": "door", "class": "person",
             "from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()}  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for name, token in tokens.items():
                out[f"a_month_hourly_one_camera_{name}"] = timings(
                    client, "/api/v1/counts", month, token, args.requests
                )
                out[f"b_pattern_8_weeks_64_cameras_{name}"] = timings(
                    client, "/api/v1/patterns", {"site": "site000", "weeks": 8}, token,
                    args.requests,
                )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(10)
        st.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=64)
    ap.add_argument("--days", type=int, default=56, help="8 weeks: the pattern's whole window.")
    ap.add_argument("--requests", type=int, default=200, help="Timed requests per question.")
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--url", help="Benchmark this existing database instead of a generated one.")
    args = ap.parse_args()
    if args.url:
        print(json.dumps(run(args.url, args)))
    elif args.backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run(f"sqlite:///{tmp}/bench.db", args)))
    else:
        import psycopg

        name = f"pantau_bench_{secrets.token_hex(4)}"
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
            try:
                print(json.dumps(run(f"{PG_SERVER}/{name}", args)))
            finally:
                admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
