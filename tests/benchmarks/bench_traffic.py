"""Vehicle counting on real road footage against the crossings counted by eye in
tests/pipeline/traffic_truth.md and motorcycle_truth.md: the camera pipeline of `analyze`
(detector, tiling, motion gate, tracker, riders, lines) at each analysis rate, with every
counted crossing and its frame, the error per class group and the detector work (calls).

    .venv/bin/python -m tests.benchmarks.bench_traffic                  # every clip, 5/10/auto
    .venv/bin/python -m tests.benchmarks.bench_traffic --clips fast-traffic --fps 5 10 60 -v
    .venv/bin/python -m tests.benchmarks.bench_traffic --clips makassar hcmc --tiling off auto \
        --model nanodet-m yolov4-tiny --input-size 416 640

Error per clip = |counted - true| summed over line, direction and class group, over the true
total (a missed car and an extra one both count). Results: tests/vision/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.pipeline.motorcycles import MOTORCYCLE_CLIPS
from tests.pipeline.traffic import CLIPS, Clip, score, score_by_group

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    clip: str
    fps: str
    crossings: list[tuple[int, str, str, str]]  # (frame, line, direction, class)
    frames_read: int
    frames_analyzed: int
    frames_detected: int
    seconds: float
    rate_note: str
    calls: int  # detector calls (frames and tiles)
    tiling: str  # the camera's last tile plan


def run(
    clip: Clip, fps: str, data: Path, model: str = "nanodet-m", input_size: int | None = None,
    tiling: str = "default",
) -> Run:
    """The clip through the `analyze` pipeline at `fps` ("auto" or a number) with `model` at
    `input_size` (None: the model's) and tiling `mode` ("default": the clip's config)."""
    from pantau.agent.config.agent import CameraConfig
    from pantau.agent.pipeline.camera import CameraAnalytics
    from pantau.agent.pipeline.scheduler import CameraRunner, Pipeline, load_detectors
    from pantau.agent.rules.lines import Crossing
    from pantau.agent.vision.capture import FileReader

    camera: dict[str, Any] = {**clip.camera, "analysis_fps": _fps(fps), "model": model}
    if input_size is not None:
        camera["input_size"] = input_size
    if tiling != "default":
        mode, _, px = tiling.partition(":")
        camera["tiling"] = {**camera.get("tiling", {}), "mode": mode}
        if px:
            camera["tiling"]["min_object_px"] = int(px)
    cam = CameraConfig.model_validate(camera)
    path = data / "videos" / clip.file
    detectors = load_detectors({model})
    names = detectors[model].names
    analytics = CameraAnalytics(clip.name, cam, names)
    reader = FileReader(path, analytics.rate.fps)
    runner = CameraRunner(analytics, reader, model, analytics.rate.fps, cam.input_size)
    source_fps = reader.source_fps
    crossings: list[tuple[int, str, str, str]] = []
    tally = analytics._tally

    def record(rule: str, found: list[Crossing]) -> None:
        for c in found:
            crossings.append((round(c.t * source_fps), rule, c.direction, names[c.class_id]))
        tally(rule, found)

    analytics._tally = record  # type: ignore[method-assign]
    pipeline = Pipeline([runner], detectors)
    began = time.perf_counter()
    try:
        pipeline.run()
    finally:
        pipeline.close()
    plan = analytics.tiler.last
    return Run(clip.name, fps, sorted(crossings), reader.frames_read,
               analytics.frames_analyzed, analytics.frames_detected,
               time.perf_counter() - began, analytics.rate.note, detectors[model].calls,
               "whole frame" if plan is None else plan.note)


def _fps(text: str) -> Any:
    return text if text == "auto" else float(text)


def main() -> None:
    from pantau.agent.wire.paths import research_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    clips = CLIPS + MOTORCYCLE_CLIPS
    parser.add_argument("--clips", nargs="*", default=[c.name for c in CLIPS])
    parser.add_argument("--fps", nargs="*", default=["5", "10", "auto"])
    parser.add_argument("--model", nargs="*", default=["nanodet-m"])
    parser.add_argument("--input-size", nargs="*", type=int, default=[0],
                        help="detector input side; 0: the model's")
    parser.add_argument("--tiling", nargs="*", default=["default"],
                        help="default (the clip's config), auto, auto:MIN_OBJECT_PX or off")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every crossing")
    args = parser.parse_args()
    print(f"{'clip':14} {'model':11} {'size':>4} {'tiling':7} {'fps':>5} {'true':>5} "
          f"{'count':>5} {'error':>7} {'by group':32} {'analysed':>8} {'detected':>8} "
          f"{'calls':>6} {'wall s':>6}  tiles; rate")
    for clip in clips:
        if clip.name not in args.clips:
            continue
        for model in args.model:
            for size in args.input_size:
                for tiling in args.tiling:
                    for fps in args.fps:
                        r = run(clip, fps, research_data(), model, size or None, tiling)
                        s = score(clip, r.crossings)
                        groups = " ".join(f"{g} {e.counted}/{e.true}"
                                          for g, e in score_by_group(clip, r.crossings).items())
                        print(f"{clip.name:14} {model:11} {size or '-':>4} {tiling:7} {fps:>5} "
                              f"{s.true:5d} {s.counted:5d} {s.error:7.1%} {groups:32} "
                              f"{r.frames_analyzed:8d} {r.frames_detected:8d} {r.calls:6d} "
                              f"{r.seconds:6.1f}  {r.tiling}; {r.rate_note}", flush=True)
                        if args.verbose:
                            for row in r.crossings:
                                print("   ", *row)
                            for row in s.detail:
                                print("   ", row)


if __name__ == "__main__":
    main()
