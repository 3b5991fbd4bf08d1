import numpy as np
import pytest
from pantau.agent.rules.lines import IN, OUT, LineCounter
from pantau.agent.vision.detections import Tracks
from pantau.agent.vision.geometry import path_crosses

from .helpers import tracks

# A vertical line from A=(100, 0) to B=(100, 200): B - A points down the screen, so its
# left-hand side as seen on screen (cross < 0) is x > 100.
A, B = (100.0, 0.0), (100.0, 200.0)


def feed(counter: LineCounter, path: list, tid: int = 1, confirmed: bool = True, t0: float = 0):
    events = []
    for i, (x, y) in enumerate(path):
        events += counter.update(tracks((tid, x, y), confirmed=confirmed), t0 + i * 0.2)
    return events


def test_direction_convention():
    counter = LineCounter(A, B, min_frames=1)
    assert counter.sides(np.array([[150.0, 50.0], [50.0, 50.0], [100.0, 70.0]])).tolist() == [
        -1,
        1,
        0,
    ]
    events = feed(counter, [(80, 100), (120, 100)])
    assert [e.direction for e in events] == [IN]
    # Drawn the other way round (B to A), the same walk is 'out'.
    reverse = LineCounter(B, A, min_frames=1)
    assert [e.direction for e in feed(reverse, [(80, 100), (120, 100)])] == [OUT]


def test_horizontal_line_in_is_screen_left_of_a_to_b():
    # A->B to the right along the screen: its left-hand side is up (smaller y).
    counter = LineCounter((0, 100), (200, 100), min_frames=1)
    events = feed(counter, [(50, 150), (50, 50)])
    assert [e.direction for e in events] == [IN]


def test_hysteresis_counts_after_k_frames_and_flicker_never_counts():
    counter = LineCounter(A, B, min_frames=3)
    assert feed(counter, [(90, 100), (110, 100), (112, 100)]) == []
    assert len(feed(counter, [(114, 100)], t0=1.0)) == 1
    # Flicker: two frames across and back, repeatedly, counts neither way.
    flicker = LineCounter(A, B, min_frames=3)
    path = [(95, 100), (105, 100), (106, 100), (95, 100)] * 5
    assert feed(flicker, path) == []
    assert flicker.in_count == flicker.out_count == 0


def test_walk_back_counts_out_then_in():
    counter = LineCounter(A, B, min_frames=2)
    path = [(120, 100), (130, 100), (80, 100), (70, 100), (120, 100), (130, 100)]
    assert [e.direction for e in feed(counter, path)] == [OUT, IN]
    assert (counter.in_count, counter.out_count) == (1, 1)


def test_unconfirmed_tracks_never_count_and_keep_separate_state():
    counter = LineCounter(A, B, min_frames=1)
    # Many unconfirmed tracks walking across: none counts (no shared id to pollute).
    for tid in range(10):
        assert feed(counter, [(80, 100), (120, 100)], tid=tid, confirmed=False) == []
    assert counter.in_count == 0
    # A track confirmed by the time its crossing settles does count it.
    counter = LineCounter(A, B, min_frames=2)
    counter.update(tracks((7, 80, 100), confirmed=False), 0.0)
    counter.update(tracks((7, 120, 100), confirmed=False), 0.2)
    assert len(counter.update(tracks((7, 125, 100), confirmed=True), 0.4)) == 1


def test_segment_not_infinite_line():
    counter = LineCounter(A, B, min_frames=1)
    # Walking round the lower end (y > 200) changes side without crossing the segment.
    assert feed(counter, [(80, 250), (120, 250), (120, 100)]) == []
    # ...and coming back through the segment counts once, as out.
    assert [e.direction for e in feed(counter, [(80, 100)], t0=2)] == [OUT]


def test_jump_across_between_frames_and_over_a_gap_counts():
    # At 5 fps an anchor can jump far across; the path still crosses the segment.
    counter = LineCounter(A, B, min_frames=2)
    events = feed(counter, [(20, 20), (180, 180), (190, 190)])
    assert [e.direction for e in events] == [IN]
    # A path passing beyond the end of the segment does not.
    counter = LineCounter(A, B, min_frames=2)
    assert feed(counter, [(20, 150), (180, 300), (190, 300)]) == []


def test_line_at_frame_edge_counts():
    # 640-wide frame, line 3 px from the right edge; people walk out of the frame.
    counter = LineCounter((637, 0), (637, 480), min_frames=1)
    events = feed(counter, [(600, 300), (625, 300), (639, 300)])
    assert [e.direction for e in events] == [IN]
    assert path_crosses(
        np.array([630.0, 1]), np.array([639.0, 1]), *map(np.array, [(637, 0), (637, 480)])
    )


def test_per_class_counts_and_class_filter():
    counter = LineCounter(A, B, classes=[0, 2], min_frames=1)
    for tid, cls in [(1, 0), (2, 2), (3, 2), (4, 1)]:
        counter.update(tracks((tid, 80, 100, cls)), 0.0)
        counter.update(tracks((tid, 120, 100, cls)), 0.2)
    assert counter.take_counts() == {0: (1, 0), 2: (2, 0)}
    assert counter.take_counts() == {}
    assert counter.in_count == 3


def test_state_pruned_by_forget_and_by_idle_time():
    counter = LineCounter(A, B, max_idle_seconds=10)
    for i in range(5000):
        t = i * 0.2
        counter.update(tracks((i, 80 + i % 40, 100)), t)
        if i % 2:
            counter.forget([i])
    assert len(counter) <= 60  # 10 s of 5 fps, half already forgotten
    counter.update(Tracks.empty(), 5000.0)
    assert len(counter) == 0


def test_invalid_line():
    with pytest.raises(ValueError):
        LineCounter((1, 1), (1, 1))


def test_crossing_before_confirmation_counts_once_confirmed_and_never_if_not():
    # At 5 fps a track often crosses during the frames that confirm it.
    counter = LineCounter(A, B, min_frames=1)
    counter.update(tracks((7, 80, 100), confirmed=False), 0.0)
    assert counter.update(tracks((7, 120, 100), confirmed=False), 0.2) == []
    events = counter.update(tracks((7, 125, 100), confirmed=True), 0.4)
    assert [e.direction for e in events] == [IN]
    assert counter.update(tracks((7, 130, 100), confirmed=True), 0.6) == []  # once only
    # Walking back before confirmation: both transitions count, once confirmed.
    counter = LineCounter(A, B, min_frames=1)
    for i, x in enumerate([80, 120, 80]):
        counter.update(tracks((8, x, 100), confirmed=False), i * 0.2)
    events = counter.update(tracks((8, 75, 100), confirmed=True), 0.6)
    assert [e.direction for e in events] == [IN, OUT]
    # Removed unconfirmed: forgotten, never counted.
    counter = LineCounter(A, B, min_frames=1)
    counter.update(tracks((9, 80, 100), confirmed=False), 0.0)
    counter.update(tracks((9, 120, 100), confirmed=False), 0.2)
    counter.forget([9])
    assert counter.in_count == 0 and len(counter) == 0


def test_a_track_that_ends_on_the_new_side_counts_once_when_it_ends():
    # K=3, but the track is seen only once past the line before it leaves the view.
    counter = LineCounter(A, B, min_frames=3)
    assert feed(counter, [(80, 100), (90, 100), (110, 100)]) == []
    ended = counter.forget([1])
    assert [(e.direction, e.t) for e in ended] == [(IN, 0.4)]  # the time it was last seen
    assert counter.forget([1]) == [] and counter.in_count == 1
    # One that came back to its side, or never went through the segment, or was never
    # confirmed, holds nothing.
    back = LineCounter(A, B, min_frames=3)
    feed(back, [(80, 100), (110, 100), (90, 100)])
    around = LineCounter(A, B, min_frames=3)
    feed(around, [(80, 300), (120, 300)])  # below the segment's end
    tentative = LineCounter(A, B, min_frames=3)
    feed(tentative, [(80, 100), (110, 100)], confirmed=False)
    assert back.forget([1]) == around.forget([1]) == tentative.forget([1]) == []
    # The end of the stream ends every track: finish() counts what they held.
    last = LineCounter(A, B, min_frames=2)
    feed(last, [(120, 100), (80, 100)], tid=7)
    assert [e.direction for e in last.finish()] == [OUT] and len(last) == 0
