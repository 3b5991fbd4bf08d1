"""Counting evaluation on the TUD sequences: our tracker + LineCounter + ZoneMonitor on the
public detections, against ground truth derived from gt.txt. Shared by tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pantau.agent.rules.lines import LineCounter
from pantau.agent.rules.zones import ZoneMonitor
from pantau.agent.vision.track.tracker import ByteTracker

from .motdata import Sequence, accumulate, run_tracker, true_crossings, true_occupancy

# Tracker settings for the ACF public detections (scores /100, see Sequence.detections). Our
# detector's scores are calibrated 0..1 and use the tracker's defaults, as `analyze` does.
TUD_TRACKER = {"high_score": 0.2, "new_score": 0.3, "low_score": 0.05}
PERSON = 0  # COCO class id; lines and zones count people only


def tracker_settings(seq: Sequence) -> dict:
    return TUD_TRACKER if seq.det_source == "public" else {}


# Vertical lines (A at the top, so 'in' is walking right) across the walkways, one near the
# right frame edge, and zones on the walkways.
LINES: dict[str, dict[str, tuple[tuple[float, float], tuple[float, float]]]] = {
    "TUD-Campus": {
        "x200": ((200, 300), (200, 480)),
        "x320": ((320, 300), (320, 480)),
        "x450": ((450, 300), (450, 480)),
        "edge600": ((600, 300), (600, 480)),
    },
    "TUD-Stadtmitte": {
        "x320": ((320, 200), (320, 360)),
        "x450": ((450, 200), (450, 360)),
        "edge600": ((600, 200), (600, 360)),
    },
}


def use_line_grid(spacing: int = 40) -> None:
    """Replace LINES (in place) by full-height vertical lines every `spacing` px, from 40 to
    600, on both sequences: a truth that does not depend on where lines were placed (105
    crossings at the default spacing, against 30 for the chosen lines)."""
    grid = {f"x{x}": ((float(x), 0.0), (float(x), 480.0)) for x in range(40, 620, spacing)}
    for name in LINES:
        LINES[name] = dict(grid)


ZONES: dict[str, list[tuple[float, float]]] = {
    "TUD-Campus": [(0, 330), (320, 330), (320, 480), (0, 480)],
    "TUD-Stadtmitte": [(300, 220), (640, 220), (640, 340), (300, 340)],
}


@dataclass
class CountResult:
    step: int
    abs_error: int = 0
    true_total: int = 0
    per_line: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    occupancy_mae: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    frames: int = 0
    accs: list = field(default_factory=list)

    @property
    def error(self) -> float:
        return self.abs_error / self.true_total if self.true_total else 0.0

    @property
    def us_per_frame(self) -> float:
        return 1e6 * self.seconds / self.frames if self.frames else 0.0


def evaluate(
    sequences: list[Sequence],
    step: int,
    min_frames: int,
    clock: Callable[[], float] = time.perf_counter,
    **tracker_kw,
) -> CountResult:
    """Run tracker + lines + zone on every `step`-th frame of each sequence.

    `seconds` covers the tracker and rules only (detections are loaded outside the timer),
    measured with `clock`.
    """
    result = CountResult(step)
    for seq in sequences:
        tracker = ByteTracker(**{**tracker_settings(seq), **tracker_kw})
        lines = {
            name: LineCounter(a, b, min_frames=min_frames, classes=[PERSON])
            for name, (a, b) in LINES[seq.name].items()
        }
        zone = ZoneMonitor(ZONES[seq.name], classes=[PERSON])
        frames = list(seq.frames(step))
        occupancy: list[int] = []
        spent = [0.0]

        def update(d, t, tracker=tracker, lines=lines, zone=zone, spent=spent, occ=occupancy):
            start = clock()
            tracks = tracker.update(d, t)
            for line in lines.values():
                line.update(tracks, t)
                line.forget(tracker.removed_ids)
            zone.update(tracks, t)
            zone.forget(tracker.removed_ids)
            spent[0] += clock() - start
            occ.append(int(zone.inside(tracks).sum()))
            return tracks

        hyp = run_tracker(seq, update, step)
        for line in lines.values():
            line.finish()  # the clip ends, and every track with it (as `analyze` does)
        result.accs.append(accumulate(seq.gt, hyp, frames))
        result.seconds += spent[0]
        result.frames += len(frames)
        for name, (a, b) in LINES[seq.name].items():
            truth = true_crossings(seq.counting_gt(), a, b)
            line = lines[name]
            result.per_line[f"{seq.name}/{name}"] = (
                line.in_count,
                truth["in"],
                line.out_count,
                truth["out"],
            )
            result.abs_error += abs(line.in_count - truth["in"]) + abs(
                line.out_count - truth["out"]
            )
            result.true_total += truth["in"] + truth["out"]
        true_occ = true_occupancy(seq.gt, np.asarray(ZONES[seq.name], float), frames)
        result.occupancy_mae[seq.name] = float(np.abs(np.array(occupancy) - true_occ).mean())
    return result
