"""A realtime file camera (the live agent's stand-in for a live one) through a wall-clock
jump: its frames follow the wall clock, and its pacing, on the monotonic clock, does not
decode its way through the jump."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pantau.agent.vision.capture import FileReader

from tests.pipeline.test_pipeline import SteppedClock


def test_a_realtime_file_follows_a_wall_clock_jump_without_decoding_it(shared_data: Path) -> None:
    video = shared_data / "videos" / "TUD-Campus.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is missing")
    clock = SteppedClock(1_700_000_000.0)
    reader = FileReader(video, 5.0, realtime=True, clock=clock)
    try:
        times = []
        for _ in range(5):
            frame = reader.read()
            assert frame is not None
            times.append(frame.t)
            clock.advance(0.2)
        assert times[0] == pytest.approx(clock.wall - 1.0, abs=0.01)
        assert times[-1] - times[0] == pytest.approx(0.8, abs=0.05)
        clock.wall += 7 * 86400
        started = time.monotonic()
        frame = reader.read()
        assert time.monotonic() - started < 1.0
        assert frame is not None and frame.t == pytest.approx(clock.wall, abs=0.3)
        assert reader.frames_read < 100  # six frames at 5 of 25 fps, not a week of them
    finally:
        reader.close()
