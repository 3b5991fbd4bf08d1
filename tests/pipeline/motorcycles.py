"""Motorcycle-heavy road clips, their counting lines and the crossings counted by eye on them
(tests/pipeline/motorcycle_truth.md says how); scored with tests.pipeline.traffic.score."""

from __future__ import annotations

from tests.pipeline.traffic import VEHICLES, Clip

MOTORCYCLE_CLIPS: list[Clip] = [
    Clip("hcmc", "hcmc-motorcycles.mp4", 30.14, {
        "lines": {"road": {"points": [[430, 360], [1290, 360]], "classes": VEHICLES}},
    }, ()),
    Clip("makassar", "makassar-motorcycles-dusk.mp4", 30.0, {
        "lines": {"left": {"points": [[110, 215], [415, 215]], "classes": VEHICLES}},
    }, ()),
]
