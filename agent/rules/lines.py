"""Line crossing counter: counts confirmed tracks whose anchor crosses a line segment, by class
and direction, with hysteresis against flicker."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pantau.agent.config.rules import LineConfig, class_ids, to_pixels
from pantau.agent.vision.detections import Tracks
from pantau.agent.vision.geometry import Point, Position, path_crosses

IN = "in"
OUT = "out"


@dataclass(frozen=True)
class Crossing:
    """One counted crossing: `direction` is IN or OUT, `t` the time it was counted."""

    tracker_id: int
    class_id: int
    direction: str
    t: float


class _TrackState:
    __slots__ = (
        "class_id", "confirmed", "crossed", "last", "last_seen", "owed", "pending", "settled"
    )

    def __init__(self, side: int, anchor: list[float], t: float) -> None:
        self.settled = side  # side where the anchor has stayed for min_frames observations
        self.pending = 0  # consecutive observations on the other side
        self.crossed = False  # the move onto the other side went through the segment
        self.owed: list[int] | None = None  # sides of crossings made before confirmation
        self.last = anchor
        self.last_seen = t
        self.class_id = -1  # as of the last observation
        self.confirmed = False


class LineCounter:
    """Counts crossings of the segment from `start` (A) to `end` (B).

    Sides: a point P is on the **in** side when cross(B - A, P - A) < 0 in image coordinates
    (y down), the left-hand side of A->B as seen on screen; on the **out** side when > 0. A
    point exactly on the line carries no side and is ignored.

    Each track's anchor (`anchor`, bottom centre by default) settles on a side once seen there.
    When it is then seen on the other side, the move counts when all of these hold:
    - the path from its previous anchor to the new one passes through the segment (not just
      the infinite line: walking round an end of the segment is no crossing; a jump across
      the line between two analysed frames, or over a gap while the track was lost, is);
    - it stays on the new side for `min_frames` consecutive observations of the track (a
      return earlier is flicker and counts in neither direction);
    - its class is in `classes` (None = every class).
    The new side then becomes the settled side, whether or not the move counted, so walking
    back counts again (out, then in). State is kept for unconfirmed tracks too (each has its
    own id): a crossing settled while the track is still unconfirmed is held and counted when
    the track is confirmed (at 5 fps a person often crosses during the frames that confirm
    the track), and never if the track is removed unconfirmed.

    A confirmed track that ends on the new side before `min_frames` observations there (it
    crossed, then left the view or was occluded for good) never came back: its crossing
    counts when the track ends, that is when `forget` is called for it or when it is pruned,
    with the time it was last seen. Without this, a line near the frame edge, which people
    cross in the last frames before they leave, would never count.

    `start` and `end` are frame pixels, or with `relative` fractions 0-1 of the frame: such a
    line is placed by `fit` once the frame size is known, and moved when it changes (a
    stream switched to another resolution), keeping its tracks' state.

    Per-track state is dropped by `forget(ids)` (feed it the tracker's removed ids) and, as a
    safety net, for tracks not seen for `max_idle_seconds`.
    """

    def __init__(
        self,
        start: tuple[float, float],
        end: tuple[float, float],
        *,
        classes: Iterable[int] | None = None,
        anchor: Position | str = Position.BOTTOM_CENTER,
        min_frames: int = 2,
        max_idle_seconds: float = 60.0,
        relative: bool = False,
    ) -> None:
        if np.allclose(start, end):
            raise ValueError("a line needs two distinct points")
        self.relative = relative
        self._given = ((float(start[0]), float(start[1])), (float(end[0]), float(end[1])))
        self._place(*self._given)
        self._placed = not relative
        if min_frames < 1:
            raise ValueError("min_frames must be at least 1")
        self.classes = None if classes is None else frozenset(int(c) for c in classes)
        self.anchor = Position(anchor)
        self.min_frames = min_frames
        self.max_idle_seconds = max_idle_seconds
        self._states: dict[int, _TrackState] = {}
        self._counts: dict[int, list[int]] = {}
        self._next_prune = -np.inf
        self.in_count = 0
        self.out_count = 0

    @classmethod
    def from_config(
        cls, config: LineConfig, names: Sequence[str] = (), *, relative: bool = False
    ) -> LineCounter:
        """The counter a line's configuration describes, for a model with class `names`;
        `relative`: its points are fractions of the frame (see `fit`)."""
        return cls(
            config.points[0],
            config.points[1],
            classes=class_ids(config.classes, names),
            anchor=config.anchor,
            min_frames=config.min_frames,
            relative=relative,
        )

    def _place(self, start: Point, end: Point) -> None:
        self.start = np.asarray(start, np.float64)
        self.end = np.asarray(end, np.float64)
        self._a, self._b = start, end
        self._d = (end[0] - start[0], end[1] - start[1])

    def fit(self, width: int, height: int) -> None:
        """The frame is width x height (its first frame, or a new size after the stream
        changed): a relative line moves to the same place in it; a line in pixels stays."""
        if self.relative:
            self._place(*to_pixels(self._given, width, height))
            self._placed = True

    def __len__(self) -> int:
        """Tracks with state held."""
        return len(self._states)

    def sides(self, points: np.ndarray) -> np.ndarray:
        """int (N,) side of each (N, 2) point: -1 in, +1 out, 0 on the line."""
        a, b = self.start, self.end
        cross = (b[0] - a[0]) * (points[:, 1] - a[1]) - (b[1] - a[1]) * (points[:, 0] - a[0])
        return np.sign(cross).astype(np.int64)

    def update(self, tracks: Tracks, t: float) -> list[Crossing]:
        """Observe one analysed frame's tracks at time `t`; return the crossings it counted."""
        crossings: list[Crossing] = []
        if not self._placed:
            raise RuntimeError("a line in fractions of the frame needs `fit` before `update`")
        if len(tracks):
            ids, points, classes, confirmed = tracks.rows(self.anchor)
            ax, ay = self._a
            dx, dy = self._d
            a, b = self._a, self._b
            states = self._states
            k = self.min_frames
            for i, p in enumerate(points):
                # geometry.orient(a, b, p), inlined: this runs for every track in every frame.
                cross = dx * (p[1] - ay) - dy * (p[0] - ax)
                if cross == 0:
                    continue
                side = -1 if cross < 0 else 1
                tid = ids[i]
                state = states.get(tid)
                if state is None:
                    states[tid] = _TrackState(side, p, t)
                    continue
                if side == state.settled:
                    state.pending = 0
                else:
                    if state.pending == 0:
                        state.crossed = path_crosses(state.last, p, a, b)
                    state.pending += 1
                    if state.pending >= k:
                        state.settled = side
                        state.pending = 0
                        if state.crossed:
                            if state.owed is None:
                                state.owed = [side]
                            else:
                                state.owed.append(side)
                cls = state.class_id = classes[i]
                state.confirmed = confirmed[i]
                if state.owed is not None and state.confirmed:
                    if self.classes is None or cls in self.classes:
                        crossings += [self._count(tid, cls, s, t) for s in state.owed]
                    state.owed = None
                state.last = p
                state.last_seen = t
        if t >= self._next_prune:
            crossings += self.prune(t)
        return crossings

    def _end(self, tracker_id: int, state: _TrackState) -> list[Crossing]:
        """Crossings a track still holds when it ends (see the class docs)."""
        if not (state.pending and state.crossed and state.confirmed):
            return []
        if self.classes is not None and state.class_id not in self.classes:
            return []
        return [self._count(tracker_id, state.class_id, -state.settled, state.last_seen)]

    def _count(self, tracker_id: int, class_id: int, side: int, t: float) -> Crossing:
        tally = self._counts.setdefault(class_id, [0, 0])
        if side < 0:
            tally[0] += 1
            self.in_count += 1
        else:
            tally[1] += 1
            self.out_count += 1
        return Crossing(tracker_id, class_id, IN if side < 0 else OUT, t)

    def forget(self, tracker_ids: Iterable[int]) -> list[Crossing]:
        """Drop the state of tracks that will not come back; return the crossings they still
        held (a confirmed track that ended on the new side)."""
        crossings: list[Crossing] = []
        for tid in tracker_ids:
            state = self._states.pop(int(tid), None)
            if state is not None:
                crossings += self._end(int(tid), state)
        return crossings

    def finish(self) -> list[Crossing]:
        """The stream has ended, and every track with it: forget them all."""
        return self.forget(list(self._states))

    def prune(self, t: float) -> list[Crossing]:
        """Forget the tracks not seen for `max_idle_seconds` before `t`."""
        horizon = t - self.max_idle_seconds
        self._next_prune = t + min(self.max_idle_seconds, 1.0)
        return self.forget([tid for tid, s in self._states.items() if s.last_seen < horizon])

    def take_counts(self) -> dict[int, tuple[int, int]]:
        """Crossings (in, out) per class id since the last call, then reset them (for buckets).
        Classes without crossings are absent. `in_count` and `out_count` keep running totals."""
        counts = {cls: (c[0], c[1]) for cls, c in self._counts.items()}
        self._counts = {}
        return counts
