"""The road clips, their counting lines and the crossings counted by eye on them
(tests/pipeline/traffic_truth.md says how), and the counting error of a run against them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Vehicle classes are scored as groups, as the tracker matches them: a van seen as a car in
# one frame and a truck in the next is one vehicle, whichever class wins the vote.
GROUPS = {
    "car": "car",
    "bus": "car",
    "truck": "car",
    "motorcycle": "two-wheeler",
    "bicycle": "two-wheeler",
    "person": "person",
}
VEHICLES = ["car", "bus", "truck", "motorcycle", "bicycle"]


@dataclass(frozen=True)
class Clip:
    name: str
    file: str
    source_fps: float
    camera: dict[str, Any]  # the camera's configuration, without analysis_fps
    truth: tuple[tuple[int, str, str, str], ...]  # (frame, line, direction, class group)


@dataclass
class Score:
    true: int
    counted: int
    error: float  # summed |counted - true| per (line, direction, group) over the true total
    detail: list[str] = field(default_factory=list)


def score(clip: Clip, crossings: list[tuple[int, str, str, str]]) -> Score:
    """`crossings` (frame, line, direction, class) against the clip's truth."""
    want = Counter((line, d, g) for _, line, d, g in clip.truth)
    got = Counter((line, d, GROUPS.get(c, c)) for _, line, d, c in crossings)
    wrong = sum(abs(got[k] - want[k]) for k in set(want) | set(got))
    detail = [
        f"{k}: true {want[k]} counted {got[k]}"
        for k in sorted(set(want) | set(got))
        if want[k] != got[k]
    ]
    true = sum(want.values())
    return Score(true, sum(got.values()), wrong / max(true, 1), detail)


def score_by_group(clip: Clip, crossings: list[tuple[int, str, str, str]]) -> dict[str, Score]:
    """`score` per class group (car, two-wheeler, person) that the truth or the count has."""
    groups = {g for *_, g in clip.truth} | {GROUPS.get(c, c) for *_, c in crossings}
    return {
        g: score(Clip(clip.name, clip.file, clip.source_fps, clip.camera,
                      tuple(t for t in clip.truth if t[3] == g)),
                 [c for c in crossings if GROUPS.get(c[3], c[3]) == g])
        for g in sorted(groups)
    }


FAST_TRAFFIC = [
    131,
    248,
    266,
    345,
    418,
    663,
    767,
    798,
    813,
    841,
    857,
    880,
    901,
    983,
    1045,
    1074,
    1100,
    1170,
    1198,
    1338,
    1386,
    1451,
    1495,
    1510,
    1615,
    1639,
    1664,
    1695,
]


def _cars(line: str, direction: str, frames: list[int]) -> tuple[tuple[int, str, str, str], ...]:
    return tuple((f, line, direction, "car") for f in frames)


CLIPS: list[Clip] = [
    Clip(
        "fast-traffic",
        "fast-traffic.avi",
        60.0,
        {
            "lines": {"road": {"points": [[0, 130], [319, 130]], "classes": VEHICLES}},
        },
        _cars("road", "out", FAST_TRAFFIC),
    ),
    Clip(
        "motorway",
        "motorway.mp4",
        29.97,
        {
            "lines": {"road": {"points": [[100, 300], [959, 300]], "classes": VEHICLES}},
        },
        _cars("road", "out", [56, 57, 93, 126, 128, 236, 243, 251, 279, 300, 311]),
    ),
    Clip(
        "street-cars",
        "street-cars.mp4",
        24.04,
        {
            "lines": {"street": {"points": [[150, 230], [639, 230]], "classes": VEHICLES}},
        },
        _cars("street", "out", [28, 80, 130, 190]),
    ),
    Clip(
        "car-detection",
        "car-detection.mp4",
        12.5,
        {
            "tracker": {"high_score": 0.25, "new_score": 0.25},
            "lines": {"middle": {"points": [[0, 216], [767, 216]], "classes": VEHICLES}},
        },
        (
            (90, "middle", "in", "car"),
            (199, "middle", "out", "car"),
            (222, "middle", "in", "car"),
            (328, "middle", "out", "car"),
        ),
    ),
]
