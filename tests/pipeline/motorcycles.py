"""Motorcycle-heavy road clips, their counting lines and the crossings counted by eye on them
(tests/pipeline/motorcycle_truth.md says how); scored with tests.pipeline.traffic.score."""

from __future__ import annotations

from tests.pipeline.traffic import VEHICLES, Clip


def _crossings(line: str, rows: str) -> tuple[tuple[int, str, str, str], ...]:
    """'frame direction group' rows (group: car or two-wheeler) as truth tuples."""
    out = []
    for row in rows.split(","):
        frame, direction, group = row.split()
        out.append((int(frame), line, direction, group))
    return tuple(out)


MOTORCYCLE_CLIPS: list[Clip] = [
    Clip(
        "hcmc",
        "hcmc-motorcycles.mp4",
        30.14,
        {
            "lines": {"road": {"points": [[430, 360], [1290, 360]], "classes": VEHICLES}},
        },
        _crossings(
            "road",
            "50 in two-wheeler, 53 in two-wheeler, 74 in two-wheeler, "
            "80 in two-wheeler, 95 in two-wheeler, 100 in two-wheeler, 105 in car, "
            "114 in two-wheeler, 118 out two-wheeler, 122 in two-wheeler, "
            "150 in two-wheeler, 214 in two-wheeler",
        ),
    ),
    Clip(
        "makassar",
        "makassar-motorcycles-dusk.mp4",
        30.0,
        {
            "lines": {"left": {"points": [[110, 215], [400, 215]], "classes": VEHICLES}},
        },
        _crossings(
            "left",
            "45 in two-wheeler, 76 in two-wheeler, 119 in two-wheeler, "
            "140 in two-wheeler, 237 in two-wheeler, 246 out two-wheeler, "
            "262 in two-wheeler, 280 out two-wheeler, 285 in car, "
            "324 in two-wheeler",
        ),
    ),
]
