"""The adaptive analysis rate (pantau.agent.pipeline.rate): probes at max_fps find objects too
fast to become tracks at the current rate, and cost calm scenes little."""

from __future__ import annotations

import numpy as np
import pytest
from pantau.agent.pipeline.rate import PROBE_PERIOD, AnalysisRate
from pantau.agent.vision.detections import Tracks


def _boxes(ids: list[int], centres: list[tuple[float, float]], size: float) -> Tracks:
    n = len(ids)
    xyxy = np.array([[x - size / 2, y - size / 2, x + size / 2, y + size / 2]
                     for x, y in centres], np.float32).reshape(-1, 4)
    return Tracks(np.array(ids, np.int64), xyxy, np.zeros(n, np.int32),
                  np.ones(n, np.float32), np.ones(n, bool), ("car",))


def _run(rate: AnalysisRate, speed: float, size: float, until: float, t: float = 0.0) -> float:
    """Three objects of `size` px moving `speed` px/s, observed at the rate's own fps until
    `until`; returns the time reached."""
    while t < until:
        x = 100 + speed * t
        rate.observe(_boxes([1, 2, 3], [(x, 100), (x, 200), (x, 300)], size), t)
        t += 1 / rate.fps
    return t


def test_a_probe_at_start_raises_the_rate_for_objects_too_fast_to_start_tracks() -> None:
    """Objects 20 px tall that move 60 px/s: 0.6 of their height between frames at 5 fps, too
    far for a new track's centre gate; the probe at 15 fps tracks them and leaves the rate
    where a new track's step is 0.25 box heights (12 fps)."""
    rate = AnalysisRate(None, 5, 15)
    rate.observe(Tracks.empty(), 0.0)
    assert rate.probing and rate.fps == 15 and "probing" in rate.note
    _run(rate, 60, 20, 3.5, 1 / 15)
    assert not rate.probing and rate.probes == 1
    assert rate.fps == pytest.approx(12, rel=0.05)
    assert "raised by a probe" in rate.note


def test_calm_objects_go_back_to_min_fps_after_a_short_probe_and_probe_again_later() -> None:
    rate = AnalysisRate(None, 5, 15)
    # Walkers 80 px tall at 30 px/s: 0.075 of their height per frame at 5 fps.
    t = _run(rate, 30, 80, 1.2)
    assert not rate.probing and rate.fps == 5 and "a probe at max_fps found" in rate.note
    # Frames at 15 fps during the probe: 1 s of them (its floor), then 5 fps until the next.
    t = _run(rate, 30, 80, PROBE_PERIOD, t)
    assert rate.probes == 1 and rate.fps == 5
    _run(rate, 30, 80, PROBE_PERIOD + 2.0, t)
    assert rate.probes == 2


def test_the_phase_delays_the_second_probe_only() -> None:
    rate = AnalysisRate(None, 5, 15, phase=0.5)
    t = _run(rate, 30, 80, 1.2)
    t = _run(rate, 30, 80, 1.5 * PROBE_PERIOD, t)
    assert rate.probes == 1
    t = _run(rate, 30, 80, 1.5 * PROBE_PERIOD + 2.0, t)
    assert rate.probes == 2
    _run(rate, 30, 80, 2.5 * PROBE_PERIOD + 4.0, t)
    assert rate.probes == 3


def test_a_fixed_rate_never_probes() -> None:
    rate = AnalysisRate(5, 5, 15)
    _run(rate, 60, 20, 2.0)
    assert rate.fps == 5 and rate.probes == 0 and rate.note == "fixed"
