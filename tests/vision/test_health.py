import cv2
import numpy as np
import pytest
from pantau.agent.rules.health import HealthMonitor, HealthThresholds
from pantau.agent.wire.paths import research_data

TUD = research_data() / "tud"
pytestmark = pytest.mark.skipif(
    not (TUD / "TUD-Campus" / "img1").is_dir(),
    reason=f"test data not found under {research_data()} (set PANTAU_TEST_DATA)",
)
FAST = HealthThresholds(
    offline_seconds=5, frozen_seconds=3, covered_seconds=3, shift_seconds=3, clear_seconds=1
)


def frames(seq: str) -> list[np.ndarray]:
    paths = sorted((TUD / seq / "img1").glob("*.jpg"))
    return [cv2.imread(str(p)) for p in paths]


@pytest.fixture(scope="module")
def campus() -> list[np.ndarray]:
    return frames("TUD-Campus")


def run(monitor: HealthMonitor, images: list, t0: float, fps: float = 5.0) -> list:
    events = []
    for i, img in enumerate(images):
        events += monitor.update(t0 + i / fps, img)
    return events


def kinds(events) -> list[tuple[str, str]]:
    return [(e.type, e.state) for e in events]


def test_live_footage_raises_nothing(campus):
    monitor = HealthMonitor(FAST)
    assert run(monitor, campus, 0.0) == []
    assert monitor.state == "ok"
    assert monitor.metrics["similarity"] > 0.5


def test_offline_raises_and_clears(campus):
    monitor = HealthMonitor(FAST)
    assert monitor.state == "starting"
    run(monitor, campus[:5], 0.0)
    events = []
    for k in range(1, 30):
        events += monitor.update(1.0 + k * 0.5, None)
    assert kinds(events) == [("camera_offline", "raised")]
    assert monitor.state == "offline"
    assert kinds(monitor.update(20.0, campus[5])) == [("camera_offline", "cleared")]


def test_offline_when_no_frame_ever_came():
    monitor = HealthMonitor(FAST)
    events = [e for k in range(20) for e in monitor.update(k * 0.5, None)]
    assert kinds(events) == [("camera_offline", "raised")]


def test_frozen_raises_and_clears(campus):
    monitor = HealthMonitor(FAST)
    run(monitor, campus[:10], 0.0)
    # The decoder keeps delivering copies of one frame (a frozen encoder).
    events = run(monitor, [campus[10].copy() for _ in range(25)], 2.0)
    assert kinds(events) == [("camera_frozen", "raised")]
    assert monitor.state == "frozen"
    events = run(monitor, campus[11:30], 7.0)
    assert kinds(events) == [("camera_frozen", "cleared")]


@pytest.mark.parametrize("kind", ["black", "blurred"])
def test_covered_or_blurred_raises_and_clears(campus, kind):
    monitor = HealthMonitor(FAST)
    run(monitor, campus[:10], 0.0)
    rng = np.random.default_rng(0)
    if kind == "black":
        # A covered lens: dark, with a little sensor noise so it is not also frozen.
        bad = [np.clip(rng.normal(8, 2, f.shape), 0, 255).astype(np.uint8) for f in campus[10:30]]
    else:
        bad = [cv2.GaussianBlur(f, (0, 0), 15) for f in campus[10:30]]
    events = run(monitor, bad, 2.0)
    assert kinds(events) == [("camera_tamper", "raised")]
    assert monitor.state == "covered"
    events = run(monitor, campus[30:50], 6.0)
    assert kinds(events) == [("camera_tamper", "cleared")]


def test_scene_shift_raises_and_clears(campus):
    monitor = HealthMonitor(FAST)
    run(monitor, campus[:10], 0.0)
    other = frames("TUD-Stadtmitte")[:25]  # the camera now sees another street
    events = run(monitor, other, 2.0)
    assert kinds(events) == [("camera_scene_shift", "raised")]
    assert monitor.state == "scene_shift"
    events = run(monitor, campus[10:40], 7.0)
    assert kinds(events) == [("camera_scene_shift", "cleared")]


def test_reference_can_be_set(campus):
    monitor = HealthMonitor(FAST, reference=frames("TUD-Stadtmitte")[0])
    events = run(monitor, campus[:25], 0.0)
    assert kinds(events) == [("camera_scene_shift", "raised")]
    monitor.set_reference(campus[0])
    assert kinds(run(monitor, campus[25:40], 5.0)) == [("camera_scene_shift", "cleared")]


def test_cost_per_frame_is_small(campus):
    import time

    monitor = HealthMonitor()
    start = time.perf_counter()
    run(monitor, campus, 0.0)
    per_frame = (time.perf_counter() - start) / len(campus)
    assert per_frame < 10e-3  # ~1 ms for a 640x480 frame including the resize
