"""Latency and throughput of a stored model, FP32 and INT8 measured in the same run (interleaved,
so both see the same machine load), and the camera capacity at a given analysis rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from pantau.agent.vision.capture import read_image
from pantau.agent.vision.detect.runtime import Detector, DetectorSettings
from pantau.agent.vision.detect.store import ModelStore
from pantau.agent.wire.paths import research_data


@dataclass(frozen=True)
class Timing:
    precision: str
    batch: int
    ms_per_batch: float  # median of the runs

    @property
    def fps(self) -> float:
        return 1000.0 * self.batch / self.ms_per_batch


def bench_frames(count: int) -> list[np.ndarray]:
    """Real CCTV frames (TUD-Campus) when the shared data is there, else a fixed noise image."""
    folder = research_data() / "tud" / "TUD-Campus" / "img1"
    files = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    frames = [read_image(p) for p in files]
    rng = np.random.default_rng(0)
    while len(frames) < count:
        frames.append(rng.integers(0, 255, (480, 640, 3), np.uint8))
    return frames


def run(
    name: str,
    store: ModelStore,
    batches: list[int],
    runs: int = 20,
    threads: int = 0,
    input_size: int | None = None,
) -> list[Timing]:
    manifest = store.manifest(name)
    precisions = ["fp32"] + (["int8"] if manifest.int8 else [])
    detectors = {
        p: Detector.from_store(DetectorSettings(
            model=name, precision=p, intra_op_threads=threads, max_batch=max(batches),
            input_size=input_size), store)
        for p in precisions
    }
    frames = bench_frames(max(batches))
    times: dict[tuple[str, int], list[float]] = {(p, b): [] for p in precisions for b in batches}
    for d in detectors.values():  # warm-up: first runs allocate and pick kernels
        for b in batches:
            d.detect(frames[:b])
    for _ in range(runs):
        for b in batches:
            for p, d in detectors.items():
                start = time.perf_counter()
                d.detect(frames[:b])
                times[(p, b)].append(1000 * (time.perf_counter() - start))
    return [Timing(p, b, float(np.median(t))) for (p, b), t in times.items()]


def report(timings: list[Timing], fps: float) -> list[str]:
    lines = [f"{'precision':<9} {'batch':>5} {'ms/batch':>9} {'ms/frame':>9} {'frames/s':>9}"]
    for t in sorted(timings, key=lambda t: (t.precision, t.batch)):
        lines.append(f"{t.precision:<9} {t.batch:>5} {t.ms_per_batch:>9.1f} "
                     f"{t.ms_per_batch / t.batch:>9.1f} {t.fps:>9.1f}")
    by = {(t.precision, t.batch): t for t in timings}
    for b in sorted({t.batch for t in timings}):
        if ("int8", b) in by:
            ratio = by[("fp32", b)].ms_per_batch / by[("int8", b)].ms_per_batch
            lines.append(f"INT8 speed-up at batch {b}: {ratio:.2f}x")
    for p in sorted({t.precision for t in timings}):
        best = max((t for t in timings if t.precision == p), key=lambda t: t.fps)
        lines.append(f"{p}: {best.fps:.1f} frames/s at batch {best.batch} -> "
                     f"{int(best.fps // fps)} cameras at {fps:g} analysis fps")
    return lines
