"""Tiling: the region of a camera's rules, its tiles at the scale the smallest object needs
within the detector budget, and the merge of the tiles' boxes across seams (synthetic seams,
then a real frame of hcmc-motorcycles.mp4)."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
from pantau.agent.config.agent import CameraConfig
from pantau.agent.config.tuning import TilingConfig
from pantau.agent.vision.detections import Tracks
from pantau.agent.vision.geometry import box_iou
from pantau.agent.vision.tiles import (
    AUTO_SCALE,
    Tiler,
    cut,
    merge_tiles,
    plan_tiles,
    rules_region,
    share_budget,
)

INPUT = (416, 416)


def _camera(**extra: object) -> CameraConfig:
    return CameraConfig.model_validate(
        {
            "lines": {"road": {"points": [[400, 300], [1300, 300]]}},
            "tiling": {"mode": "auto"},
            **extra,
        }
    )


def test_the_region_is_the_rules_with_a_margin_within_the_frame() -> None:
    assert rules_region(_camera(), 1568, 778, 0.1) == (322, 222, 1378, 378)
    assert rules_region(_camera(), 1568, 778, 0.5) == (11, 0, 1568, 689)
    zone = CameraConfig.model_validate(
        {"zones": {"z": {"polygon": [[0.5, 0.5], [0.75, 0.5], [0.75, 1.0]]}}}
    )
    assert zone.relative
    assert rules_region(zone, 800, 400, 0.0) == (400, 200, 600, 400)
    assert rules_region(CameraConfig(), 640, 480, 0.2) == (0, 0, 640, 480)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_tiles_cover_the_region_with_the_overlap_asked(overlap: float) -> None:
    region = (100, 50, 1317, 500)
    tiles = cut(region, 416, overlap)
    covered = np.zeros((600, 1400), bool)
    for x0, y0, x1, y1 in tiles:
        assert x1 - x0 <= 416 and y1 - y0 <= 416
        assert region[0] <= x0 and x1 <= region[2] and region[1] <= y0 and y1 <= region[3]
        covered[y0:y1, x0:x1] = True
    assert covered[50:500, 100:1317].all()
    # Neighbours in a row share at least `overlap` of the side.
    xs = sorted({(x0, x1) for x0, _, x1, _ in tiles})
    for (_, a1), (b0, _) in itertools.pairwise(xs):
        assert a1 - b0 >= overlap * 416 - 1


def test_the_whole_frame_suffices_when_it_resolves_the_smallest_object() -> None:
    plan = plan_tiles(
        (640, 360), (0, 0, 640, 360), INPUT, TilingConfig(mode="auto", min_object_px=40)
    )
    assert plan.tiles == ((0, 0, 640, 360),)
    assert "nearly resolves" in plan.note
    # Below MIN_GAIN, crops would cost context for little: 640 px at 416 is scale 0.65.
    plan = plan_tiles((640, 272), (409, 0, 491, 272), INPUT, TilingConfig(mode="auto"))
    assert plan.tiles == ((0, 0, 640, 272),)


def test_min_object_px_sets_the_scale_and_so_the_number_of_tiles() -> None:
    region = (322, 222, 1378, 378)
    coarse = plan_tiles(
        (1568, 778), region, INPUT, TilingConfig(mode="auto", min_object_px=52, max_tiles=9)
    )
    fine = plan_tiles(
        (1568, 778), region, INPUT, TilingConfig(mode="auto", min_object_px=26, max_tiles=9)
    )
    assert coarse.wanted == pytest.approx(0.5) and fine.wanted == pytest.approx(1.0)
    assert coarse.scale == pytest.approx(0.5) and fine.scale == pytest.approx(1.0)
    # The whole frame first, then tiles of 832 and 416 frame pixels.
    assert coarse.tiles[0] == fine.tiles[0] == (0, 0, 1568, 778)
    assert {x1 - x0 for x0, _, x1, _ in coarse.tiles[1:]} == {832}
    assert {x1 - x0 for x0, _, x1, _ in fine.tiles[1:]} == {416}
    assert len(coarse.tiles) == 3 and len(fine.tiles) == 5


def test_over_budget_the_tiles_grow_and_the_plan_says_so() -> None:
    region = (322, 222, 1378, 378)
    tiling = TilingConfig(mode="auto", min_object_px=26, max_tiles=9)
    full = plan_tiles((1568, 778), region, INPUT, tiling)
    tight = plan_tiles((1568, 778), region, INPUT, tiling, budget=3.4)
    assert tight.calls == 3 < full.calls
    assert tight.scale < full.scale
    assert "limit of 3 calls" in tight.note and "budget 3.4" in tight.note
    one = plan_tiles((1568, 778), region, INPUT, tiling, budget=1.2)
    # The rules' region alone (widened to the square input) beats the whole frame.
    assert one.tiles == ((322, 0, 1378, 778),)
    assert one.scale == pytest.approx(416 / 1056)
    off = plan_tiles((1568, 778), region, INPUT, TilingConfig(mode="off"))
    assert off.tiles == ((0, 0, 1568, 778),)


def test_without_min_object_px_only_large_frames_are_tiled_as_finely_as_allowed() -> None:
    tiling = TilingConfig()
    assert tiling.mode == "auto" and tiling.min_object_px is None
    # 768x576 (vtest.avi) is 1.85x the model's 416: the whole frame.
    vtest = plan_tiles((768, 576), (0, 0, 768, 576), INPUT, tiling)
    assert vtest.calls == 1 and "less than 2x" in vtest.note
    # 960x540 (motorway.mp4, a line at y 300): 2.3x, tiles finer than the frame's own pixels.
    road = plan_tiles((960, 540), (19, 219, 960, 381), INPUT, tiling)
    assert road.calls == 5 and road.tiles[0] == (0, 0, 960, 540)
    assert 1.0 < road.scale <= AUTO_SCALE and road.note == f"5 calls at scale {road.scale:.2f}"
    tight = plan_tiles((960, 540), (19, 219, 960, 381), INPUT, tiling, budget=3.5)
    assert tight.calls == 3 and tight.scale < road.scale and "limit of 3 calls" in tight.note


def _heights(*heights: float, y: float = 300.0) -> Tracks:
    n = len(heights)
    xyxy = np.array([[500 + 50 * i, y - h / 2, 540 + 50 * i, y + h / 2]
                     for i, h in enumerate(heights)], np.float32).reshape(-1, 4)
    return Tracks(np.arange(n, dtype=np.int64), xyxy, np.zeros(n, np.int32),
                  np.ones(n, np.float32), np.ones(n, bool), ("person",))


def test_a_close_view_is_detected_whole_and_small_objects_bring_the_tiles_back() -> None:
    tiler = Tiler(_camera())
    assert tiler.plan(1568, 778, INPUT).calls == 5 and tiler.tiled
    # People 350 px tall at the rules: 93 model px at the whole frame's scale 0.27, 3.6x the
    # model's smallest object (26 px): the whole frame sees them.
    for k in range(5):
        tiler.observe(_heights(350, 360, 340, 355), float(k))
    assert tiler.close_view and tiler.view == pytest.approx(3.6, abs=0.1)
    whole = tiler.plan(1568, 778, INPUT)
    assert whole.tiles == ((0, 0, 1568, 778),) and "close view" in whole.note
    assert not tiler.tiled
    # Tracks outside the rules' region (y 222-378 with the margin) do not count.
    for k in range(60):
        tiler.observe(_heights(60, 60, 60, y=700.0), 5.0 + k)
    assert tiler.close_view
    # Small objects at the rules for a minute: tiles again.
    for k in range(60):
        tiler.observe(_heights(60, 70, 80), 70.0 + k)
    assert not tiler.close_view and tiler.plan(1568, 778, INPUT).calls == 5
    # With min_object_px the size is given: no judgement.
    given = Tiler(_camera(tiling={"mode": "auto", "min_object_px": 26}))
    given.plan(1568, 778, INPUT)
    for k in range(30):
        given.observe(_heights(400, 400, 400), float(k))
    assert not given.close_view and given.plan(1568, 778, INPUT).calls == 5


def test_the_budget_is_shared_alike_per_analysed_frame() -> None:
    assert share_budget(100.0, [5, 5, 5, 5, 10]) == pytest.approx(2.0)  # 60 % of 100
    tiler = Tiler(_camera())
    whole = tiler.plan(1568, 778, INPUT)
    tiler.budget = 1.0
    assert tiler.plan(1568, 778, INPUT).calls == 1 < whole.calls
    assert tiler.last is not None and tiler.last.calls == 1
    assert Tiler(CameraConfig()).plan(1568, 778, INPUT).tiles == ((0, 0, 1568, 778),)


LEFT, RIGHT = (0, 0, 416, 300), (312, 0, 728, 300)  # a vertical seam strip x 312-416


def _merge(
    boxes: list[list[list[float]]],
    groups: list[list[int]] | None = None,
    tiles: list[tuple[int, int, int, int]] | None = None,
) -> np.ndarray:
    tiles = tiles or [LEFT, RIGHT]
    arrays = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
    scores = [np.linspace(0.9, 0.5, len(b)).astype(np.float32) for b in arrays]
    ids = [np.asarray(g) for g in groups] if groups else [np.zeros(len(b), int) for b in arrays]
    _, merged = merge_tiles(tiles, arrays, scores, ids, (728, 300))
    return merged[np.lexsort((merged[:, 1], merged[:, 0]))]


def test_an_object_on_a_seam_gives_one_box() -> None:
    # Whole in the left tile, cut at x=312 in the right one.
    merged = _merge([[[280, 100, 380, 200]], [[312, 100, 381, 201]]])
    assert merged.tolist() == [[280, 100, 381, 201]]
    # Wider than the strip: cut in both tiles, merged into their union.
    merged = _merge([[[250, 100, 416, 200]], [[312, 102, 480, 198]]])
    assert merged.tolist() == [[250, 100, 480, 200]]


def test_neighbours_in_the_strip_and_other_classes_stay_apart() -> None:
    a, b = [320, 100, 360, 200], [362, 100, 400, 200]  # two scooters abreast in the strip
    assert len(_merge([[a, b], [b, a]])) == 2
    assert len(_merge([[a], [a]], groups=[[0], [3]])) == 2  # a person and a scooter
    # A box seen whole by two crops is one box, its best.
    far = [500, 100, 540, 160]
    assert _merge([[far], [[501, 101, 541, 161]]], tiles=[(0, 0, 728, 300), RIGHT]).tolist() == [
        far
    ]


def test_with_the_whole_frame_fragments_cut_by_a_tile_are_dropped() -> None:
    whole = (0, 0, 728, 300)
    person = [250, 20, 470, 290]  # larger than the strip: cut in both tiles
    merged = _merge(
        [[person], [[250, 25, 416, 285]], [[312, 22, 470, 288]]], tiles=[whole, LEFT, RIGHT]
    )
    assert merged.tolist() == [person]
    # A fragment alone (the whole frame missed it) is dropped too; a whole small box stays.
    small = [100, 100, 140, 160]
    assert _merge([[], [[300, 20, 416, 200], small]], tiles=[whole, LEFT]).tolist() == [small]


def _model_built() -> bool:
    from pantau.agent.vision.detect.store import ModelStore

    return "nanodet-m" in ModelStore().names()


@pytest.mark.skipif(not _model_built(), reason="nanodet-m is not built")
def test_tiles_of_a_real_frame_merge_without_double_boxes(shared_data: Path) -> None:
    # Frame 0 of hcmc-motorcycles.mp4: scooters two and three abreast, several on seams.
    source = shared_data / "videos" / "hcmc-motorcycles.mp4"
    if not source.is_file():
        pytest.skip(f"{source} is missing")
    from pantau.agent.pipeline.scheduler import load_detectors

    detector = load_detectors({"nanodet-m"})["nanodet-m"]
    ok, frame = cv2.VideoCapture(str(source)).read()
    assert ok
    plan = Tiler(_camera()).plan(frame.shape[1], frame.shape[0], detector.input_size)
    assert plan.calls == 5
    before = detector.calls
    found = detector.detect_tiles(frame, plan)
    assert detector.calls - before == 5
    whole = detector.detect([frame])[0]
    strong = found[found.confidence >= 0.3]
    groups = detector.nms_class[strong.class_id]
    overlap = box_iou(strong.xyxy, strong.xyxy)
    np.fill_diagonal(overlap, 0)
    assert not (overlap[groups[:, None] == groups[None, :]] > 0.5).any()
    # The tiles see the scooters that the whole frame misses.
    motorcycle = detector.names.index("motorcycle")
    tiled_n = int((strong.class_id == motorcycle).sum())
    whole_n = int(((whole.class_id == motorcycle) & (whole.confidence >= 0.3)).sum())
    assert tiled_n >= whole_n + 2


@pytest.mark.skipif(not _model_built(), reason="nanodet-m is not built")
def test_snapshot_draws_the_tiles(shared_data: Path, tmp_path: Path) -> None:
    from tests.conftest import cli

    source = shared_data / "videos" / "hcmc-motorcycles.mp4"
    if not source.is_file():
        pytest.skip(f"{source} is missing")
    cfg = tmp_path / "a.yaml"
    cfg.write_text(
        f"buffer: {{path: {tmp_path}/outbox.db}}\ncameras:\n  road:\n"
        f"    source: {source}\n    lines:\n"
        "      road: {points: [[400, 300], [1300, 300]]}\n"
        "    tiling: {mode: auto}\n"
    )
    r = cli(
        "pantau-agent", "snapshot", "road", "--config", str(cfg), "--out", str(tmp_path / "s.jpg")
    )
    assert r.returncode == 0, r.stderr
    assert "detector: 5 calls at scale 1.18" in r.stdout
    image = cv2.imread(str(tmp_path / "s.jpg"))
    # The first tile's left edge is magenta (JPEG: roughly) from top to bottom.
    plan = Tiler(_camera()).plan(1568, 778, INPUT)
    x0, y0, _, y1 = plan.tiles[1]
    column = image[y0 + 20 : y1 - 20, x0 : x0 + 2].astype(int).max(axis=1)
    magenta = (column[:, 0] > 150) & (column[:, 2] > 150) & (column[:, 1] < 120)
    assert magenta.mean() > 0.8


class _Reader:
    """A reader that only takes the rate the pipeline sets (no frames are read here)."""

    fps = 0.0

    def set_fps(self, fps: float) -> None:
        self.fps = fps


@pytest.mark.skipif(not _model_built(), reason="nanodet-m is not built")
def test_live_cameras_share_the_detector_budget_and_say_when_it_binds() -> None:
    from pantau.agent.config.agent import AgentDetectorSettings
    from pantau.agent.pipeline.camera import CameraAnalytics
    from pantau.agent.pipeline.scheduler import CameraRunner, Pipeline, load_detectors
    from pantau.agent.vision.detect.store import ModelStore

    settings = AgentDetectorSettings(calls_per_second=40.0)
    detectors = load_detectors({"nanodet-m"}, ModelStore(), settings)
    detector = detectors["nanodet-m"]
    runners = []
    for name in ("a", "b"):
        analytics = CameraAnalytics(name, _camera(analysis_fps=5), detector.names)
        runners.append(CameraRunner(analytics, _Reader(), "nanodet-m", 5.0))  # type: ignore[arg-type]
    pipeline = Pipeline(runners, detectors, live=True)
    # 60 % of 40 calls/s for 2 cameras at 5 fps: 2.4 calls per analysed frame each.
    tiler = runners[0].analytics.tiler
    assert tiler.budget == pytest.approx(2.4)
    plan = tiler.plan(1568, 778, detector.input_size)
    assert plan.calls == 2 and plan.tiles[0] == (0, 0, 1568, 778)
    assert "limit of 2 calls per frame" in plan.note and "budget 2.4" in plan.note
    health = runners[0].analytics.health_payload(5.0, 60.0, 0)
    assert health.details["detector_calls_per_frame"] == 2
    assert "budget 2.4" in health.details["tiling"]
    # A camera whose rate rises takes more of the budget: both get less per frame.
    runners[1].analytics.rate.fps = 15.0
    pipeline._follow_rate(runners[1])
    assert tiler.budget == pytest.approx(1.2)
    assert tiler.plan(1568, 778, detector.input_size).calls == 1
