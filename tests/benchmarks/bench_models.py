"""FP32 vs INT8 detector latency at several batch sizes, measured in one run, with ratios and the
camera capacity at an analysis rate. Run: .venv/bin/python tests/benchmarks/bench_models.py
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pantau.agent.vision.detect.store import ModelStore
from pantau.models import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="nanodet-m")
    parser.add_argument("--batch", default="1,2,4")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--input-size", type=int, default=None)
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    timings = bench.run(args.model, ModelStore(), batches, args.runs, args.threads, args.input_size)
    print(
        f"{args.model} on {platform.processor() or platform.machine()}, "
        f"input {args.input_size or 'default'}, {args.runs} runs, median, detect() end to end"
    )
    for line in bench.report(timings, args.fps):
        print(line)


if __name__ == "__main__":
    main()
