"""Vehicle counting on real road footage against the crossings counted by eye in
tests/pipeline/traffic_truth.md: the camera pipeline of `analyze` (default detector, motion
gate, tracker, lines) at each analysis rate, with every counted crossing and its frame.

    .venv/bin/python -m tests.benchmarks.bench_traffic                  # every clip, 5/10/auto
    .venv/bin/python -m tests.benchmarks.bench_traffic --clips fast-traffic --fps 5 10 60 -v

Error per clip = |counted - true| summed over line, direction and class group, over the true
total (a missed car and an extra one both count). Results: tests/vision/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.pipeline.traffic import CLIPS, Clip, score

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


def run(clip: Clip, fps: str, data: Path) -> Run:
    """The clip through the `analyze` pipeline at `fps` ("auto" or a number)."""
    from pantau.agent.config.agent import CameraConfig
    from pantau.agent.pipeline.camera import CameraAnalytics
    from pantau.agent.pipeline.scheduler import CameraRunner, Pipeline, load_detectors
    from pantau.agent.rules.lines import Crossing
    from pantau.agent.vision.capture import FileReader

    cam = CameraConfig.model_validate({**clip.camera, "analysis_fps": _fps(fps)})
    path = data / "videos" / clip.file
    detectors = load_detectors({"nanodet-m"})
    names = detectors["nanodet-m"].names
    analytics = CameraAnalytics(clip.name, cam, names)
    reader = FileReader(path, analytics.rate.fps)
    runner = CameraRunner(analytics, reader, "nanodet-m", analytics.rate.fps, cam.input_size)
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
    return Run(
        clip.name,
        fps,
        sorted(crossings),
        reader.frames_read,
        analytics.frames_analyzed,
        analytics.frames_detected,
        time.perf_counter() - began,
        analytics.rate.note,
    )


def _fps(text: str) -> Any:
    return text if text == "auto" else float(text)


def main() -> None:
    from pantau.agent.wire.paths import research_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", default=[c.name for c in CLIPS])
    parser.add_argument("--fps", nargs="*", default=["5", "10", "auto"])
    parser.add_argument("-v", "--verbose", action="store_true", help="list every crossing")
    args = parser.parse_args()
    print(
        f"{'clip':14} {'fps':>5} {'true':>5} {'count':>5} {'error':>7} {'analysed/s':>10} "
        f"{'detected':>8} {'wall s':>6}  rate"
    )
    for clip in CLIPS:
        if clip.name not in args.clips:
            continue
        for fps in args.fps:
            r = run(clip, fps, research_data())
            s = score(clip, r.crossings)
            duration = r.frames_read / clip.source_fps
            print(
                f"{clip.name:14} {fps:>5} {s.true:5d} {s.counted:5d} {s.error:7.1%} "
                f"{r.frames_analyzed / duration:10.1f} {r.frames_detected:8d} "
                f"{r.seconds:6.1f}  {r.rate_note}"
            )
            if args.verbose:
                for row in r.crossings:
                    print("   ", *row)
                for row in s.detail:
                    print("   ", row)


if __name__ == "__main__":
    main()
