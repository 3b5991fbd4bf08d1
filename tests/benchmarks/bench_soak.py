"""Memory soak of the vision pipeline as `pantau-agent run` drives it: N looping file cameras
(the shared videos, each with a line and a zone) in realtime, the shared INT8 detector behind
the motion gate as shipped, the pipeline in the main thread, the live agent's bounded alert
history, closed buckets into an Outbox that a stand-in publisher drains, and the process RSS
sampled over time.

    .venv/bin/python -m tests.benchmarks.bench_soak --minutes 120 --cameras 16 --fps 1 \
        --out var/soak.jsonl

Each sample is one JSON line (t, rss_mib, frames, detected, pending, alerts raised so far);
the summary at the end gives the trend and compares the samples after `--warmup`. Target:
RSS flat within 5 % over the soak. `--tracemalloc N` also prints the N Python allocation
sites that grew most.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

VIDEOS = Path("/work/shared/data/videos")


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def camera_config(width: int, height: int, fps: float) -> dict:
    """A vertical counting line through the middle and a zone over the left half."""
    w, h = width - 1, height - 1
    return {
        "analysis_fps": fps,
        "lines": {"middle": {"points": [[w // 2, 0], [w // 2, h]]}},
        "zones": {"left": {"polygon": [[0, 0], [w // 2, 0], [w // 2, h], [0, h]]}},
    }


def build(cameras: int, fps: float, videos: list[Path], outbox_path: Path, bucket: int):
    from pantau.agent.config.agent import CameraConfig
    from pantau.agent.delivery.outbox import Outbox
    from pantau.agent.pipeline.camera import CameraAnalytics
    from pantau.agent.pipeline.scheduler import CameraRunner, Pipeline, load_detectors
    from pantau.agent.runtime import LIVE_ALERT_HISTORY
    from pantau.agent.vision.capture import FileReader

    detectors = load_detectors({"nanodet-m"})
    names = detectors["nanodet-m"].names
    outbox = Outbox(outbox_path, agent="soak", site="soak")
    runners = []
    for k in range(cameras):
        reader = FileReader(videos[k % len(videos)], fps, realtime=True)
        cfg = CameraConfig.model_validate(camera_config(*reader.size, fps))
        # Bounded alert history, as `pantau-agent run` keeps it: a soak that kept every alert
        # measured its own list growing (looping files raise health alerts at every loop).
        analytics = CameraAnalytics(f"cam{k:02d}", cfg, names, alert_history=LIVE_ALERT_HISTORY)
        runners.append(CameraRunner(analytics, reader, "nanodet-m", fps))
    pipeline = Pipeline(runners, detectors, bucket_seconds=bucket, sink=outbox.enqueue, live=True)
    return pipeline, outbox


def drain(outbox, stop: threading.Event) -> None:
    """A stand-in publisher: every few seconds take and acknowledge everything pending."""
    while not stop.wait(5.0):
        for lane in range(4):
            rows = outbox.take(lane, 0, 10_000)
            outbox.ack(r.seq for r in rows)


def summarize(samples: list[dict], warmup: float) -> dict:
    """RSS after `warmup` seconds: first, last, min and max, the least-squares trend over the
    soak (MiB per hour), and the median of the last ten samples against the median of the first
    ten. One sample can land on a peak of the allocator's saw-tooth, so the two medians and the
    trend say more than the first and last samples alone."""
    after = [s for s in samples if s["t"] >= warmup] or samples
    first, last = after[0], after[-1]
    rss = [s["rss_mib"] for s in after]
    ts = [s["t"] for s in after]
    wall = samples[-1]["t"] if samples else 0.0
    if len(after) > 1:
        mt, mr = statistics.fmean(ts), statistics.fmean(rss)
        slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rss, strict=True)) / sum(
            (t - mt) ** 2 for t in ts
        )
    else:
        slope = 0.0
    head, tail = statistics.median(rss[:10]), statistics.median(rss[-10:])
    return {
        "minutes": round(wall / 60, 1),
        "frames_analyzed": last["frames"],
        "frames_detected": last["detected"],
        "analysed_fps": round(last["frames"] / wall, 2) if wall else 0.0,
        "rss_first_after_warmup": first["rss_mib"],
        "rss_first_t": first["t"],
        "rss_last": last["rss_mib"],
        "rss_min": min(rss),
        "rss_max": max(rss),
        "growth_pct": round(100 * (last["rss_mib"] / first["rss_mib"] - 1), 2),
        "max_over_first_pct": round(100 * (max(rss) / first["rss_mib"] - 1), 2),
        "trend_mib_per_hour": round(slope * 3600, 2),
        "median_last10_vs_first10_pct": round(100 * (tail / head - 1), 2),
    }


def print_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> None:
    """The `n` allocation sites whose traced memory grew most between two snapshots."""
    skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(skip).compare_to(before.filter_traces(skip), "traceback")
    for stat in diff[:n]:
        print(
            f"{stat.size_diff / 2**20:+.2f} MiB {stat.count_diff:+d} blocks "
            f"(now {stat.size / 2**20:.2f} MiB)",
            flush=True,
        )
        for line in stat.traceback.format(limit=8, most_recent_first=True):
            print("   ", line, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=120.0, help="soak length (default 120)")
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--fps", type=float, default=1.0, help="analysis_fps of every camera")
    p.add_argument("--warmup", type=float, default=120.0, help="seconds before the baseline")
    p.add_argument("--every", type=float, default=30.0, help="seconds between RSS samples")
    p.add_argument("--bucket", type=int, default=60, help="bucket_seconds")
    p.add_argument("--out", type=Path, default=None, help="JSON-lines samples file")
    p.add_argument(
        "--summarize",
        type=Path,
        default=None,
        metavar="JSONL",
        help="only summarize the samples of an earlier soak (with its --warmup)",
    )
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (the agent tunes it: pantau.allocator)",
    )
    p.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="N",
        help="trace Python allocations (slow) and print the N source lines whose "
        "memory grew most from the end of the warm-up to the end",
    )
    args = p.parse_args(argv)

    if args.summarize:
        rows = [json.loads(line) for line in args.summarize.read_text().splitlines()]
        print(json.dumps(summarize([r for r in rows if "rss_mib" in r], args.warmup)))
        return 0
    videos = sorted(VIDEOS.glob("*.mp4"))
    if not videos:
        print(f"no videos in {VIDEOS}", file=sys.stderr)
        return 2
    if not args.default_malloc:
        from pantau.agent.allocator import limit_heap_growth

        limit_heap_growth()  # as `pantau-agent run` does at start-up
    if args.tracemalloc:
        tracemalloc.start(8)
    tmp = Path(tempfile.mkdtemp(prefix="pantau-soak-"))
    pipeline, outbox = build(args.cameras, args.fps, videos, tmp / "outbox.db", args.bucket)
    stop = threading.Event()
    drainer = threading.Thread(target=drain, args=(outbox, stop), daemon=True)
    drainer.start()
    out = args.out.open("w") if args.out else None
    samples: list[dict] = []
    snapshots: list[tracemalloc.Snapshot] = []
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.wait(args.every):
            r = pipeline.runners
            s = {
                "t": round(time.monotonic() - t0, 1),
                "rss_mib": round(rss_mib(), 1),
                "frames": sum(x.analytics.frames_analyzed for x in r),
                "detected": sum(x.analytics.frames_detected for x in r),
                "pending": len(outbox),
                "alerts": sum(x.analytics.totals.alerts_raised for x in r),
            }
            if args.tracemalloc:
                s["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
                if not snapshots and s["t"] >= args.warmup:
                    snapshots.append(tracemalloc.take_snapshot())
            samples.append(s)
            print(json.dumps(s), flush=True)
            if out:
                out.write(json.dumps(s) + "\n")
                out.flush()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # The pipeline runs in the main thread, as in `pantau-agent run`: glibc gives the
        # main thread its own arena, so where the pipeline runs shapes the heap.
        pipeline.run(stop, args.minutes * 60)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        sampler.join()
        pipeline.close()
        outbox.close()
    if snapshots:
        print_growth(snapshots[0], tracemalloc.take_snapshot(), args.tracemalloc)
    summary = {
        "summary": True,
        "cameras": args.cameras,
        "analysis_fps": args.fps,
        **summarize(samples, args.warmup),
    }
    print(json.dumps(summary), flush=True)
    if out:
        out.write(json.dumps(summary) + "\n")
        out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
