"""Live capacity of `pantau-agent run`: N cameras looping vtest.avi at 5 fps, with decoders in
threads of the agent (isolation off) and in supervised child processes (the default).

    .venv/bin/python -m tests.benchmarks.bench_live --cameras 4 6 8 10 12 --seconds 60
    .venv/bin/python -m tests.benchmarks.bench_live --cameras 2 6 --lines   # walkway lines,
        # tiling auto: each camera's tiles within its share of the detector budget

Each run has no broker (messages stay in a fresh outbox, which is where the numbers are read
from): per camera the analysed frames/s of the full 10 s buckets (health fps_effective), the
total analysed frames/s, and the CPU seconds of the agent and its decoder processes per
camera and second. Live capacity is the largest N whose every camera held >= 4.5 fps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
BUCKET = 10


# vtest.avi's walkway lines (tests/vision/RESULTS.md), for --lines.
LINES = {"x320": {"points": [[320, 130], [320, 400]], "classes": ["person"]},
         "x500": {"points": [[500, 130], [500, 420]], "classes": ["person"]}}


def run(n: int, isolate: bool, seconds: float, lines: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "agent.yaml"
        config.write_text(yaml.safe_dump({
            "broker": {"port": 1, "reconnect_min": 5, "reconnect_max": 30},
            "buffer": {"path": str(Path(tmp) / "outbox.db")},
            "bucket_seconds": BUCKET,
            "decoders": {"isolate": isolate},
            "cameras": {f"c{k}": {"source": VTEST, "analysis_fps": 5, **(
                {"lines": LINES, "tiling": {"mode": "auto"}} if lines else {})}
                for k in range(n)},
        }))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        agent = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("pantau-agent")),
                "run",
                "-c",
                str(config),
                "--duration",
                str(seconds),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        agent.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        db = sqlite3.connect(Path(tmp) / "outbox.db")
        rows = db.execute(
            "SELECT camera, body FROM outbox WHERE kind = 'health' ORDER BY seq"
        ).fetchall()
        db.close()
    per_camera: dict[str, list[float]] = {}
    calls: list[float] = []  # detector calls per analysed frame (tiles), per health message
    for camera, body in rows:
        payload = json.loads(body)
        per_camera.setdefault(camera, []).append(payload["payload"]["fps_effective"])
        calls.append(payload["payload"]["details"].get("detector_calls_per_frame", 1))
    # The first bucket is partial (start-up), the last one closed at the stop.
    fps = {c: statistics.mean(v[1:-1]) for c, v in per_camera.items() if len(v) > 2}
    return {
        "min_fps": min(fps.values(), default=0.0),
        "mean_fps": statistics.mean(fps.values()) if fps else 0.0,
        "total_fps": sum(fps.values()),
        "cpu_per_camera_s": cpu / seconds / n,
        "calls_per_frame": statistics.mean(calls) if calls else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, nargs="+", default=[4, 6, 8, 10, 12])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--lines", action="store_true", help="give every camera vtest's "
                        "walkway lines and tiling auto")
    args = parser.parse_args()
    os.environ.setdefault("PANTAU_HOME", str(Path("var").resolve()))
    capacity = {False: 0, True: 0}
    print("decoders  cameras  min fps  mean fps  total frames/s  CPU s/s per camera  calls/frame")
    for n in args.cameras:
        for isolate in (False, True):
            r = run(n, isolate, args.seconds, args.lines)
            if r["min_fps"] >= 4.5:
                capacity[isolate] = max(capacity[isolate], n)
            print(f"{'isolated' if isolate else 'threads':9} {n:7d}  {r['min_fps']:7.2f}  "
                  f"{r['mean_fps']:8.2f}  {r['total_fps']:14.1f}  {r['cpu_per_camera_s']:18.3f}"
                  f"  {r['calls_per_frame']:.2f}",
                  flush=True)
    print(f"live capacity (cameras at >= 4.5 fps): threads {capacity[False]}, "
          f"isolated {capacity[True]}")


if __name__ == "__main__":
    main()
