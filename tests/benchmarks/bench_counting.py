"""Counting benchmark on TUD: counting error and per-frame cost of our tracker + rules against
supervision's ByteTrack (the `trackers` package) + LineZone (bottom-centre anchor) +
PolygonZone, on the same detections, at every frame (25 fps) and at 5 fps.

    .venv/bin/python tests/benchmarks/bench_counting.py             # ours only
    tests/benchmarks/setup_bench_env.sh                             # once: /tmp/bench-venv
    .venv/bin/python tests/benchmarks/bench_counting.py --supervision /tmp/bench-venv/bin/python
    # --dets public|ours|both (default both); --grid: lines every 40 px (105 crossings);
    # --model M, --input-size 512, --nms-iou 0.6: our detector with other settings;
    # --min-object-px 20: our detector on tiles (4 tiles and the whole frame at 640x480);
    # --dets truth [--hide-covered 0.5]: the annotated boxes as detections (all, or without
    # those more than half hidden): what tracker and rules lose without a detector's misses;
    # results: tests/vision/RESULTS.md

With `--supervision`, both sides run in the benchmark venv's one process (`--side both`),
alternating repeat by repeat, so that a busy or noisy machine slows both alike; supervision
is never imported by the project's venv. Our detector's detections are computed here (the
benchmark venv has no onnxruntime) and handed over in a file. Cost = thread CPU time of
tracker + lines + zone per frame, the best of `--repeats` runs.
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

from tests.vision.evaluation import LINES, ZONES, evaluate, use_line_grid  # noqa: E402
from tests.vision.motdata import SEQUENCES, Sequence, summarize, true_crossings  # noqa: E402

# CPU time of this thread: another process on the box (a soak, a build) does not count.
CLOCK = time.thread_time
SETTINGS = ((1, 2), (5, 1), (5, 2))  # (frame step, min_frames)


def load(
    source: str,
    ours_dets: str | None = None,
    detector: dict | None = None,
    hide_covered: float | None = None,
) -> list[Sequence]:
    """The TUD sequences with the public detections, with our detector's (with the
    DetectorSettings overrides `detector`, computed and cached by
    `Sequence.with_our_detections`, or read from `ours_dets` in the benchmark venv, which has
    no onnxruntime), or with the annotated boxes (`Sequence.with_truth_boxes`)."""
    seqs = [Sequence.load(n) for n in SEQUENCES]
    if source == "public":
        return seqs
    if source == "truth":
        return [s.with_truth_boxes(hide_covered) for s in seqs]
    if ours_dets:
        saved = np.load(ours_dets)
        return [
            dataclasses.replace(s, det=saved[s.name], det_source="ours", names=()) for s in seqs
        ]
    return [s.with_our_detections(**(detector or {})) for s in seqs]


def ours_once(seqs: list[Sequence], source: str, step: int, k: int) -> dict:
    r = evaluate(seqs, step, k, clock=CLOCK)
    s = summarize(r.accs, list(SEQUENCES))
    return {
        "side": "ours",
        "dets": source,
        "fps": 25 // step,
        "K": k,
        "error": round(r.error, 3),
        "abs_error": r.abs_error,
        "true": r.true_total,
        "us_per_frame": round(r.us_per_frame, 1),
        "mota": {n: round(float(s.loc[n, "mota"]), 3) for n in SEQUENCES},
        "idf1": {n: round(float(s.loc[n, "idf1"]), 3) for n in SEQUENCES},
        "idsw": {n: int(s.loc[n, "num_switches"]) for n in SEQUENCES},
        "per_line": r.per_line,
    }


def supervision_once(seqs: list[Sequence], source: str, step: int, k: int) -> dict:
    import supervision as sv
    from trackers import ByteTrackTracker

    # The same thresholds as ours (tests/vision/evaluation.tracker_settings).
    high, new = (0.2, 0.3) if source == "public" else (0.5, 0.5)
    abs_error = true_total = frames = 0
    seconds = 0.0
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
            start = CLOCK()
            tracked = tracker.update(det)
            # Unconfirmed tracks all carry id -1; keeping them would merge their line state
            # (supervision #2578), so LineZone gets confirmed tracks only. Lines and zones
            # count people only (class 0), as ours.
            tracked = tracked[(tracked.tracker_id >= 0) & (tracked.class_id == 0)]
            for line in lines.values():
                line.trigger(tracked)
            zone.trigger(tracked)
            seconds += CLOCK() - start
            frames += 1
        for n, (a, b) in LINES[seq.name].items():
            truth = true_crossings(seq.counting_gt(), a, b)
            line = lines[n]
            per_line[f"{seq.name}/{n}"] = (line.in_count, truth["in"], line.out_count, truth["out"])
            abs_error += abs(line.in_count - truth["in"]) + abs(line.out_count - truth["out"])
            true_total += truth["in"] + truth["out"]
    return {
        "side": f"sv {sv.__version__} + trackers",
        "dets": source,
        "fps": 25 // step,
        "K": k,
        "error": round(abs_error / true_total, 3),
        "abs_error": abs_error,
        "true": true_total,
        "us_per_frame": round(1e6 * seconds / frames, 1),
        "per_line": per_line,
    }


def compare(
    source: str,
    repeats: int,
    ours_dets: str | None,
    with_sv: bool,
    detector: dict,
    hide_covered: float | None,
) -> list[dict]:
    """Both sides on the same detections, alternating run by run; the fastest run of each."""
    seqs = load(source, ours_dets, detector, hide_covered)
    if source == "truth":
        source = seqs[0].det_source
    rows = []
    for step, k in SETTINGS:
        sides = [ours_once] + ([supervision_once] if with_sv else [])
        best: list[dict | None] = [None] * len(sides)
        for _ in range(repeats):
            for i, side in enumerate(sides):
                row = side(seqs, source, step, k)
                if best[i] is None or row["us_per_frame"] < best[i]["us_per_frame"]:
                    best[i] = row
        rows += best
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--side",
        choices=["ours", "both"],
        default="ours",
        help="both: run in the benchmark venv (set by --supervision)",
    )
    parser.add_argument("--supervision", help="python of a venv with supervision installed")
    parser.add_argument(
        "--dets",
        choices=["public", "ours", "both", "truth"],
        default="both",
        help="detections: det.txt (ACF), our default detector, both, or the annotated boxes "
        "(the error of tracker and rules alone)",
    )
    parser.add_argument(
        "--hide-covered",
        type=float,
        metavar="FRACTION",
        help="with --dets truth: leave out boxes more than FRACTION covered "
        "by nearer people, as a detector that misses them",
    )
    parser.add_argument("--ours-dets", help=argparse.SUPPRESS)  # set for the subprocess
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print JSON rows only")
    parser.add_argument(
        "--grid",
        action="store_true",
        help="count on vertical lines every 40 px instead of the chosen lines",
    )
    parser.add_argument(
        "--input-size", type=int, help="our detector's input side (default the model's, 416)"
    )
    parser.add_argument(
        "--nms-iou", type=float, help="our detector's NMS IoU (default the agent's, 0.5)"
    )
    parser.add_argument("--model", help="our detector's model in the store (default nanodet-m)")
    parser.add_argument("--min-object-px", type=int,
                        help="our detector on tiles of the frame at the scale this object "
                        "height needs (pantau.agent.vision.tiles)")
    args = parser.parse_args()
    detector = {k: v for k in ("model", "input_size", "nms_iou", "min_object_px")
                if (v := getattr(args, k)) is not None}
    if args.grid:
        use_line_grid()
    sources = ["public", "ours"] if args.dets == "both" else [args.dets]

    rows: list[dict] = []
    for source in sources:
        if not args.supervision:
            rows += compare(
                source,
                args.repeats,
                args.ours_dets,
                args.side == "both",
                detector,
                args.hide_covered,
            )
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [args.supervision, __file__, "--side", "both", "--json"]
            cmd += ["--repeats", str(args.repeats), "--dets", source]
            if args.grid:
                cmd.append("--grid")
            if args.hide_covered is not None:
                cmd += ["--hide-covered", str(args.hide_covered)]
            if source == "ours":
                path = Path(tmp) / "dets.npz"
                np.savez(path, **{s.name: s.det for s in load("ours", detector=detector)})
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
