"""Offline pipeline throughput (what `pantau-agent analyze` does), baseline and changes in one
run, interleaved, so that other load on the box hits every variant alike.

    .venv/bin/python -m tests.benchmarks.bench_pipeline --reps 3 --frames 300

Variants (INT8 nanodet-m, 416, one camera with a line and a zone, every frame analysed):
  baseline      numpy preprocessing, square 416x416 letterbox, no read-ahead (before issue 4's
                performance work)
  cv2-prep      + resize into the canvas and blobFromImage (OpenCV, GIL released)
  prefetch      + decode and preprocess in a read-ahead thread
  minimal-pad   + letterbox padded only to the next multiple of 32 (768x576 -> 416x320)
  no-spin       + session.intra_op.allow_spinning = 0
Prints best and median analysed frames/s per variant and the ratio to the baseline.

Motion gate, off vs on, on real footage (counts, share of frames skipped, analysed frames/s):

    .venv/bin/python -m tests.benchmarks.bench_pipeline --motion --reps 2 \
        --video /work/shared/data/videos/one-by-one-person-detection.mp4 \
        --video /work/shared/data/videos/car-detection.mp4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def legacy_prepare(detector, frame: np.ndarray, input_size=None):
    """The preprocessing before this change: numpy mean/std/transpose on a square canvas."""
    import cv2
    from pantau.agent.vision.detect.runtime import Prepared, Transform

    m = detector.manifest
    th, tw = detector.input_size
    h, w = frame.shape[:2]
    if m.resize == "stretch":
        image = cv2.resize(frame, (tw, th), interpolation=cv2.INTER_LINEAR)
        transform = Transform(tw / w, th / h, 0.0, 0.0, w, h)
    else:
        scale = min(tw / w, th / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        px, py = (tw - nw) // 2, (th - nh) // 2
        image = np.full((th, tw, frame.shape[2]), m.pad_value, dtype=frame.dtype)
        image[py : py + nh, px : px + nw] = cv2.resize(
            frame, (nw, nh), interpolation=cv2.INTER_LINEAR
        )
        transform = Transform(nw / w, nh / h, float(px), float(py), w, h)
    if m.channel_order == "rgb":
        image = image[:, :, ::-1]
    mean = np.asarray(m.mean, np.float32)
    inv_std = 1.0 / np.asarray(m.std, np.float32)
    tensor = ((image.astype(np.float32) - mean) * inv_std).transpose(2, 0, 1)
    return Prepared(np.ascontiguousarray(tensor), transform)


class Limited:
    """A reader that ends after `n` frames."""

    def __init__(self, reader, n: int) -> None:
        self.reader, self.n = reader, n

    def __getattr__(self, name):
        return getattr(self.reader, name)

    def read(self):
        if self.reader.frames_read >= self.n:
            self.reader.ended = True
            return None
        return self.reader.read()


VARIANTS = {
    "baseline": dict(legacy=True, prefetch=False, pad="square", spin=True),
    "cv2-prep": dict(legacy=False, prefetch=False, pad="square", spin=True),
    "prefetch": dict(legacy=False, prefetch=True, pad="square", spin=True),
    "minimal-pad": dict(legacy=False, prefetch=True, pad="minimal", spin=True),
    "no-spin": dict(legacy=False, prefetch=True, pad="minimal", spin=False),
}


def camera(width: int, height: int, fps: float, classes: list[str] | None = None):
    from pantau.agent.config.agent import CameraConfig

    w, h = width - 1, height - 1
    classes = classes or ["person"]
    return CameraConfig.model_validate(
        {
            "analysis_fps": fps,
            "lines": {"middle": {"points": [[w // 2, 0], [w // 2, h]], "classes": classes}},
            "zones": {
                "left": {"polygon": [[0, 0], [w // 2, 0], [w // 2, h], [0, h]], "classes": classes}
            },
        }
    )


def run_motion(video: Path, gate: bool, detector, fps: float) -> dict:
    from pantau.agent.pipeline.camera import CameraAnalytics
    from pantau.agent.pipeline.scheduler import CameraRunner, Pipeline
    from pantau.agent.vision.capture import FileReader

    reader = FileReader(video, fps)
    cfg = camera(*reader.size, fps, ["person", "bicycle", "car", "motorcycle", "bus", "truck"])
    cfg.motion.enabled = gate
    analytics = CameraAnalytics("bench", cfg, detector.names)
    runner = CameraRunner(analytics, reader, "m", fps)
    pipeline = Pipeline([runner], {"m": detector}, bucket_seconds=60)
    began = time.perf_counter()
    try:
        pipeline.run()
    finally:
        pipeline.close()
    wall = time.perf_counter() - began
    t = analytics.totals
    return {
        "video": video.name,
        "gate": gate,
        "frames": analytics.frames_analyzed,
        "skipped_pct": round(100 * analytics.gate.skipped / max(analytics.frames_analyzed, 1), 1),
        "fps": round(analytics.frames_analyzed / wall, 1),
        "line_in_out": [
            sum(v[0] for v in t.lines["middle"].values()),
            sum(v[1] for v in t.lines["middle"].values()),
        ],
        "zone_mean": round(sum(t.zone_area["left"].values()) / max(t.observed, 1e-9), 3),
        "zone_peak": t.zone_peak.get("left", 0),
    }


def run_once(video: Path, frames: int, variant: dict, detectors: dict) -> tuple[float, dict]:
    from pantau.agent.pipeline.camera import CameraAnalytics
    from pantau.agent.pipeline.scheduler import CameraRunner, Pipeline
    from pantau.agent.vision.capture import FileReader

    det = detectors[(variant["pad"], variant["spin"])]
    if variant["legacy"]:
        det.prepare = lambda frame, input_size=None: legacy_prepare(det, frame, input_size)
    else:
        det.__dict__.pop("prepare", None)
    reader = FileReader(video, 60.0)
    fps = 60.0
    analytics = CameraAnalytics("bench", camera(*reader.size, fps), det.names)
    runner = CameraRunner(analytics, Limited(reader, frames), "m", fps)
    if variant["prefetch"]:
        from pantau.agent.vision.capture import Prefetcher

        runner.reader = Prefetcher(runner.reader, det.prepare)
    pipeline = Pipeline([runner], {"m": det}, bucket_seconds=60, prefetch=False)
    began = time.perf_counter()
    try:
        pipeline.run()
    finally:
        pipeline.close()
    wall = time.perf_counter() - began
    totals = {r: {c: v for c, v in by.items()} for r, by in analytics.totals.lines.items()}
    return analytics.frames_analyzed / wall, totals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--video", type=Path, action="append", default=None)
    p.add_argument("--frames", type=int, default=300, help="frames per run (0: all)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--motion", action="store_true", help="motion gate off vs on instead")
    p.add_argument("--fps", type=float, default=10.0, help="analysis_fps for --motion")
    args = p.parse_args(argv)
    if args.motion:
        return motion_main(args)
    args.video = (args.video or [VTEST])[0]

    from pantau.agent.config.detector import DETECTOR_FLOOR, DetectorSettings
    from pantau.agent.vision.detect.runtime import Detector

    names = args.variants.split(",")
    detectors = {}
    for n in names:
        v = VARIANTS[n]
        key = (v["pad"], v["spin"])
        if key not in detectors:
            detectors[key] = Detector.from_store(
                DetectorSettings(confidence=DETECTOR_FLOOR, pad=v["pad"], allow_spinning=v["spin"])
            )
    frames = args.frames or 10**9
    rates: dict[str, list[float]] = {n: [] for n in names}
    counts: dict[str, dict] = {}
    for _ in range(args.reps):
        for n in names:
            fps, totals = run_once(args.video, frames, VARIANTS[n], detectors)
            rates[n].append(fps)
            counts[n] = totals
    base = statistics.median(rates[names[0]])
    for n in names:
        r = rates[n]
        print(
            json.dumps(
                {
                    "variant": n,
                    "best_fps": round(max(r), 1),
                    "median_fps": round(statistics.median(r), 1),
                    "median_ratio": round(statistics.median(r) / base, 2),
                    "runs": [round(x, 1) for x in r],
                    "line_totals": counts[n],
                }
            )
        )
    return 0


def motion_main(args) -> int:
    from pantau.agent.config.detector import DETECTOR_FLOOR, DetectorSettings
    from pantau.agent.vision.detect.runtime import Detector

    detector = Detector.from_store(DetectorSettings(confidence=DETECTOR_FLOOR))
    videos = args.video if isinstance(args.video, list) else [args.video]
    for video in videos:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.reps):
            for gate in (False, True):
                runs[gate].append(run_motion(video, gate, detector, args.fps))
        for rs in runs.values():
            r = dict(rs[-1])
            fps = [x["fps"] for x in rs]
            r["fps"] = {"best": max(fps), "median": round(statistics.median(fps), 1)}
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
