"""Line crossing counter: counts confirmed tracks whose anchor crosses a line segment, by class
and direction, with hysteresis against flicker."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from agent.tracker import Position, Tracks

IN = "in"
OUT = "out"


@dataclass(frozen=True)
class Crossing:
    """One counted crossing: `direction` is IN or OUT, `t` the time it was counted."""

    tracker_id: int
    class_id: int
    direction: str
    t: float


def _orient(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> float:
    return float((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]))


def path_crosses(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the path p->q goes from one side of segment a->b to the other through it.

    True when p and q are strictly on opposite sides of the line through a and b and the
    crossing point lies on the segment itself (end points included).
    """
    if _orient(a, b, p) * _orient(a, b, q) >= 0:
        return False
    return _orient(p, q, a) * _orient(p, q, b) <= 0


class _TrackState:
    __slots__ = ("crossed", "last", "last_seen", "pending", "settled")

    def __init__(self, side: int, anchor: np.ndarray, t: float) -> None:
        self.settled = side  # side where the anchor has stayed for min_frames observations
        self.pending = 0  # consecutive observations on the other side
        self.crossed = False  # the move onto the other side went through the segment
        self.last = anchor
        self.last_seen = t


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
    - the track is confirmed by then and its class is in `classes` (None = every class).
    The new side then becomes the settled side, whether or not the move counted, so walking
    back counts again (out, then in). State is kept for unconfirmed tracks too (each has its
    own id), so a crossing made while a track was being confirmed is not lost.

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
    ) -> None:
        self.start = np.asarray(start, np.float64)
        self.end = np.asarray(end, np.float64)
        if np.allclose(self.start, self.end):
            raise ValueError("a line needs two distinct points")
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
        if len(tracks):
            anchors = tracks.anchors(self.anchor)
            sides = self.sides(anchors)
            for i, side in enumerate(sides.tolist()):
                if side == 0:
                    continue
                tid = int(tracks.tracker_id[i])
                state = self._states.get(tid)
                if state is None:
                    self._states[tid] = _TrackState(side, anchors[i], t)
                    continue
                if side == state.settled:
                    state.pending = 0
                else:
                    if state.pending == 0:
                        state.crossed = path_crosses(state.last, anchors[i], self.start, self.end)
                    state.pending += 1
                    if state.pending >= self.min_frames:
                        state.settled = side
                        state.pending = 0
                        cls = int(tracks.class_id[i])
                        if state.crossed and tracks.confirmed[i] and self._wanted(cls):
                            crossings.append(self._count(tid, cls, side, t))
                state.last = anchors[i]
                state.last_seen = t
        if t >= self._next_prune:
            self.prune(t)
        return crossings

    def _wanted(self, class_id: int) -> bool:
        return self.classes is None or class_id in self.classes

    def _count(self, tracker_id: int, class_id: int, side: int, t: float) -> Crossing:
        tally = self._counts.setdefault(class_id, [0, 0])
        if side < 0:
            tally[0] += 1
            self.in_count += 1
        else:
            tally[1] += 1
            self.out_count += 1
        return Crossing(tracker_id, class_id, IN if side < 0 else OUT, t)

    def forget(self, tracker_ids: Iterable[int]) -> None:
        """Drop the state of tracks that will not come back."""
        for tid in tracker_ids:
            self._states.pop(int(tid), None)

    def prune(self, t: float) -> None:
        """Drop the state of tracks not seen for `max_idle_seconds` before `t`."""
        horizon = t - self.max_idle_seconds
        stale = [tid for tid, s in self._states.items() if s.last_seen < horizon]
        for tid in stale:
            del self._states[tid]
        self._next_prune = t + min(self.max_idle_seconds, 1.0)

    def take_counts(self) -> dict[int, tuple[int, int]]:
        """Crossings (in, out) per class id since the last call, then reset them (for buckets).
        Classes without crossings are absent. `in_count` and `out_count` keep running totals."""
        counts = {cls: (c[0], c[1]) for cls, c in self._counts.items()}
        self._counts = {}
        return counts
