"""Counting benchmark on TUD with the public detections: counting error and per-frame cost of
our tracker + rules, at every frame (25 fps) and at 5 fps, and the same for supervision's
ByteTrack (now in the `trackers` package) + LineZone (bottom-centre anchor) + PolygonZone
when a benchmark venv has them.

    .venv/bin/python tests/benchmarks/bench_counting.py             # ours only
    tests/benchmarks/setup_bench_env.sh                             # once: /tmp/bench-venv
    .venv/bin/python tests/benchmarks/bench_counting.py --supervision /tmp/bench-venv/bin/python
    # --dets public|ours|both (default both); results: tests/vision/RESULTS.md

The supervision side runs in the benchmark venv as a subprocess (`--side supervision`), on the
same detections, lines and zones; supervision is never imported by the project's venv.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.vision.evaluation import LINES, ZONES, evaluate  # noqa: E402
from tests.vision.motdata import SEQUENCES, Sequence, summarize, true_crossings  # noqa: E402

SETTINGS = ((1, 2), (5, 1), (5, 2))  # (frame step, min_frames)


def load(source: str, ours_dets: str | None = None) -> list[Sequence]:
    """The TUD sequences with the public detections or with our detector's (computed and
    cached by `Sequence.with_our_detections`, or read from `ours_dets` in the benchmark venv,
    which has no onnxruntime)."""
    seqs = [Sequence.load(n) for n in SEQUENCES]
    if source == "public":
        return seqs
    if ours_dets:
        saved = np.load(ours_dets)
        return [
            dataclasses.replace(s, det=saved[s.name], det_source="ours", names=()) for s in seqs
        ]
    return [s.with_our_detections() for s in seqs]


def ours(repeats: int, source: str) -> list[dict]:
    seqs = load(source)
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
                "dets": source,
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


def supervision_side(repeats: int, source: str, ours_dets: str | None) -> list[dict]:
    import supervision as sv
    from trackers import ByteTrackTracker

    seqs = load(source, ours_dets)
    # The same thresholds as ours (tests/vision/evaluation.tracker_settings).
    high, new = (0.2, 0.3) if source == "public" else (0.5, 0.5)
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
                    track_activation_threshold=new,
                    high_conf_det_threshold=high,
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
                    # Lines and zones count people only (class 0), as ours.
                    tracked = tracked[(tracked.tracker_id >= 0) & (tracked.class_id == 0)]
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
                "dets": source,
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
    parser.add_argument(
        "--dets",
        choices=["public", "ours", "both"],
        default="both",
        help="detections: det.txt (ACF), our default detector, or both",
    )
    parser.add_argument("--ours-dets", help=argparse.SUPPRESS)  # set for the subprocess
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON rows only")
    args = parser.parse_args()
    sources = ["public", "ours"] if args.dets == "both" else [args.dets]

    rows: list[dict] = []
    for source in sources:
        if args.side == "supervision":
            rows += supervision_side(args.repeats, source, args.ours_dets)
            continue
        rows += ours(args.repeats, source)
        if not args.supervision:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [args.supervision, __file__, "--side", "supervision", "--json"]
            cmd += ["--repeats", str(args.repeats), "--dets", source]
            if source == "ours":
                path = Path(tmp) / "dets.npz"
                np.savez(path, **{s.name: s.det for s in load("ours")})
                cmd += ["--ours-dets", str(path)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows += json.loads(out.stdout)
    if args.json:
        print(json.dumps(rows))
        return
    print(table(rows))
    for r in rows:
        extra = {k: r[k] for k in ("mota", "idf1", "idsw") if k in r}
        print(
            f"\n{r['side']} {r['dets']} dets {r['fps']} fps K={r['K']} {extra}\n  per line "
            f"(in, true in, out, true out): {r['per_line']}"
        )


def table(rows: list[dict]) -> str:
    """Markdown table; with both sides, the cost ratio supervision / ours per setting."""
    theirs = {(r["dets"], r["fps"], r["K"]): r for r in rows if r["side"] != "ours"}
    lines = [
        "| detections | fps | K | side | counting error | abs err / true | us/frame | "
        "sv cost / ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        key = (r["dets"], r["fps"], r["K"])
        ratio = ""
        if r["side"] == "ours" and key in theirs:
            ratio = f"{theirs[key]['us_per_frame'] / r['us_per_frame']:.2f}x"
        lines.append(
            f"| {r['dets']} | {r['fps']} | {r['K']} | {r['side']} | {r['error']:.3f} | "
            f"{r['abs_error']}/{r['true']} | {r['us_per_frame']:.0f} | {ratio} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
