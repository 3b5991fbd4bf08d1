"""Motorcycle AP of the default detector on hand-checked boxes of real footage (see
motorcycle_boxes.md): tiles of the counting line's region against the whole frame."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vision.motorcycle_ap import evaluate, frames


def _model_built() -> bool:
    from pantau.agent.vision.detect.store import ModelStore

    return "nanodet-m" in ModelStore().names()


@pytest.mark.skipif(not _model_built(), reason="nanodet-m is not built")
def test_tiles_find_the_scooters_the_whole_frame_misses(shared_data: Path) -> None:
    from pantau.agent.config.detector import DETECTOR_FLOOR, DetectorSettings
    from pantau.agent.pipeline.scheduler import load_detectors

    video = shared_data / "videos" / "hcmc-motorcycles.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is missing")
    images = frames(video)
    detector = load_detectors({"nanodet-m"}, None, DetectorSettings(confidence=DETECTOR_FLOOR))[
        "nanodet-m"
    ]
    whole = evaluate(detector, images, tiled=False)
    tiled = evaluate(detector, images, tiled=True)
    assert (whole.frames, whole.boxes) == (17, 147)
    # Measured (INT8): whole frame AP50 5.1, tiles 46.9 at 5 calls per frame.
    assert whole.ap50 < 15
    assert tiled.ap50 > 35
    assert (whole.calls, tiled.calls) == (17, 85)
