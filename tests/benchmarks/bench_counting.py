"""Counting benchmark on TUD with the public detections: counting error and per-frame cost of
our tracker + rules, at every frame (25 fps) and at 5 fps, and the same for supervision's
ByteTrack (now in the `trackers` package) + LineZone (bottom-centre anchor) + PolygonZone
when a benchmark venv has them.

    .venv/bin/python tests/benchmarks/bench_counting.py             # ours only
    tests/benchmarks/setup_bench_env.sh                             # once: /tmp/bench-venv
    .venv/bin/python tests/benchmarks/bench_counting.py --supervision /tmp/bench-venv/bin/python

The supervision side runs in the benchmark venv as a subprocess (`--side supervision`), on the
same detections, lines and zones; supervision is never imported by the project's venv.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.vision.evaluation import LINES, ZONES, evaluate  # noqa: E402
from tests.vision.motdata import SEQUENCES, Sequence, summarize, true_crossings  # noqa: E402

SETTINGS = ((1, 2), (5, 1), (5, 2))  # (frame step, min_frames)


def ours(repeats: int) -> list[dict]:
    seqs = [Sequence.load(n) for n in SEQUENCES]
    rows = []
    for step, k in SETTINGS:
        best = None
        for _ in range(repeats):
            r = evaluate(seqs, step, k)
            best = r if best is None or r.seconds < best.seconds else best
        s = summarize(best.accs, list(SEQUENCES))
        rows.append(
            {
                "side": "ours",
                "fps": 25 // step,
                "K": k,
                "error": round(best.error, 3),
                "abs_error": best.abs_error,
                "true": best.true_total,
                "us_per_frame": round(best.us_per_frame, 1),
                "mota": {n: round(float(s.loc[n, "mota"]), 3) for n in SEQUENCES},
                "idf1": {n: round(float(s.loc[n, "idf1"]), 3) for n in SEQUENCES},
                "idsw": {n: int(s.loc[n, "num_switches"]) for n in SEQUENCES},
                "per_line": best.per_line,
            }
        )
    return rows


def supervision_side(repeats: int) -> list[dict]:
    import supervision as sv
    from trackers import ByteTrackTracker

    seqs = [Sequence.load(n) for n in SEQUENCES]
    rows = []
    for step, k in SETTINGS:
        best = None
        for _ in range(repeats):
            abs_error = true_total = 0
            seconds = 0.0
            frames = 0
            per_line = {}
            for seq in seqs:
                tracker = ByteTrackTracker(
                    lost_track_buffer=max(1, round(1.5 * seq.fps / step)),
                    frame_rate=seq.fps / step,
                    # The same thresholds as ours (tests/vision/evaluation.TUD_TRACKER).
                    track_activation_threshold=0.3,
                    high_conf_det_threshold=0.2,
                    minimum_consecutive_frames=2,
                )
                anchors = (sv.Position.BOTTOM_CENTER,)
                lines = {
                    n: sv.LineZone(
                        sv.Point(*a),
                        sv.Point(*b),
                        triggering_anchors=anchors,
                        minimum_crossing_threshold=k,
                    )
                    for n, (a, b) in LINES[seq.name].items()
                }
                zone = sv.PolygonZone(np.array(ZONES[seq.name], int), triggering_anchors=anchors)
                for f in seq.frames(step):
                    d = seq.detections(f)
                    det = sv.Detections(
                        xyxy=d.xyxy.astype(float), confidence=d.confidence, class_id=d.class_id
                    )
                    start = time.perf_counter()
                    tracked = tracker.update(det)
                    # Unconfirmed tracks all carry id -1; keeping them would merge their line
                    # state (supervision #2578), so give LineZone confirmed tracks only.
                    tracked = tracked[tracked.tracker_id >= 0]
                    for line in lines.values():
                        line.trigger(tracked)
                    zone.trigger(tracked)
                    seconds += time.perf_counter() - start
                    frames += 1
                for n, (a, b) in LINES[seq.name].items():
                    truth = true_crossings(seq.gt, a, b)
                    line = lines[n]
                    per_line[f"{seq.name}/{n}"] = (
                        line.in_count,
                        truth["in"],
                        line.out_count,
                        truth["out"],
                    )
                    abs_error += abs(line.in_count - truth["in"]) + abs(
                        line.out_count - truth["out"]
                    )
                    true_total += truth["in"] + truth["out"]
            row = {
                "side": "sv " + sv.__version__ + " + trackers",
                "fps": 25 // step,
                "K": k,
                "error": round(abs_error / true_total, 3),
                "abs_error": abs_error,
                "true": true_total,
                "us_per_frame": round(1e6 * seconds / frames, 1),
                "per_line": per_line,
            }
            best = row if best is None or row["us_per_frame"] < best["us_per_frame"] else best
        rows.append(best)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["ours", "supervision"], default="ours")
    parser.add_argument("--supervision", help="python of a venv with supervision installed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON rows only")
    args = parser.parse_args()

    rows = ours(args.repeats) if args.side == "ours" else supervision_side(args.repeats)
    if args.side == "ours" and args.supervision:
        out = subprocess.run(
            [
                args.supervision,
                __file__,
                "--side",
                "supervision",
                "--json",
                "--repeats",
                str(args.repeats),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows += json.loads(out.stdout)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'side':<22}{'fps':>4}{'K':>3}{'error':>8}{'|err|/true':>12}{'us/frame':>10}")
    for r in rows:
        print(
            f"{r['side']:<22}{r['fps']:>4}{r['K']:>3}{r['error']:>8.3f}"
            f"{str(r['abs_error']) + '/' + str(r['true']):>12}{r['us_per_frame']:>10.0f}"
        )
    for r in rows:
        extra = {k: r[k] for k in ("mota", "idf1", "idsw") if k in r}
        print(
            f"\n{r['side']} {r['fps']} fps K={r['K']} {extra}\n  per line (in, true in, "
            f"out, true out): {r['per_line']}"
        )


if __name__ == "__main__":
    main()
