"""Plane geometry of boxes, points, segments and polygons in frame pixels (y down), once for
the detector, the tracker, the rules and their configuration."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike

Point = tuple[float, float]
# Anything indexable as p[0], p[1]: a tuple, a list or a numpy row.
PointLike = Sequence[float] | np.ndarray


class Position(str, Enum):
    """Point of a box that stands for the object in line and zone rules."""

    BOTTOM_CENTER = "bottom_center"
    CENTER = "center"
    TOP_CENTER = "top_center"
    BOTTOM_LEFT = "bottom_left"
    BOTTOM_RIGHT = "bottom_right"
    CENTER_LEFT = "center_left"
    CENTER_RIGHT = "center_right"
    TOP_LEFT = "top_left"
    TOP_RIGHT = "top_right"


# Fractions of (width, height) from the top-left corner for each anchor position.
_ANCHOR_FRACTIONS: dict[Position, tuple[float, float]] = {
    Position.BOTTOM_CENTER: (0.5, 1.0),
    Position.CENTER: (0.5, 0.5),
    Position.TOP_CENTER: (0.5, 0.0),
    Position.BOTTOM_LEFT: (0.0, 1.0),
    Position.BOTTOM_RIGHT: (1.0, 1.0),
    Position.CENTER_LEFT: (0.0, 0.5),
    Position.CENTER_RIGHT: (1.0, 0.5),
    Position.TOP_LEFT: (0.0, 0.0),
    Position.TOP_RIGHT: (1.0, 0.0),
}


def anchor_points(
    xyxy: ArrayLike, position: Position | str = Position.BOTTOM_CENTER
) -> np.ndarray:
    """(N, 2) float64 anchor points of (N, 4) x1, y1, x2, y2 boxes."""
    fractions = np.array(_ANCHOR_FRACTIONS[Position(position)])
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return boxes[:, :2] + fractions * (boxes[:, 2:] - boxes[:, :2])


def box_iou(a: ArrayLike, b: ArrayLike, min_union: float = 1e-12) -> np.ndarray:
    """(N, M) intersection over union of (N, 4) and (M, 4) xyxy boxes, in their dtype (no
    copies for arrays already of the right shape); 0 for empty or inverted boxes. A union
    below `min_union` counts as `min_union`, so degenerate boxes never divide by zero."""
    a = np.asarray(a).reshape(-1, 4)
    b = np.asarray(b).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.maximum(hi - lo, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    result: np.ndarray = inter / np.maximum(union, min_union)
    return result


def orient(a: PointLike, b: PointLike, p: PointLike) -> float:
    """cross(b - a, p - a): < 0 when p is left of a->b as seen on screen (y down), > 0 when
    right, 0 on the line."""
    return float((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]))


def path_crosses(p: PointLike, q: PointLike, a: PointLike, b: PointLike) -> bool:
    """Whether the path p->q goes from one side of segment a->b to the other through it.

    True when p and q are strictly on opposite sides of the line through a and b and the
    crossing point lies on the segment itself (end points included).
    """
    if orient(a, b, p) * orient(a, b, q) >= 0:
        return False
    return orient(p, q, a) * orient(p, q, b) <= 0


def _on_segment(a: Point, b: Point, c: Point) -> bool:
    """Whether c, known to be on the line through a and b, lies between them."""
    return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(
        a[1], b[1]
    )


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether the closed segments p1-p2 and q1-q2 share a point (touching counts)."""
    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    if d1 * d2 < 0 and d3 * d4 < 0:
        return True
    return any(
        d == 0 and _on_segment(a, b, c)
        for d, a, b, c in ((d1, q1, q2, p1), (d2, q1, q2, p2), (d3, p1, p2, q1), (d4, p1, p2, q2))
    )


def crossing_edges(vertices: Sequence[Point]) -> tuple[int, int] | None:
    """The first pair (i, j) of edges of the closed polygon that cross or touch, where edge i
    runs from vertex i to vertex i + 1 (neighbours, which share a corner, are not compared);
    None for a simple polygon."""
    n = len(vertices)
    edges = [(vertices[i], vertices[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            if segments_intersect(*edges[i], *edges[j]):
                return i, j
    return None


def polygon_area2(vertices: Sequence[Point]) -> float:
    """Twice the signed area of the closed polygon (shoelace formula)."""
    n = len(vertices)
    return sum(
        vertices[i][0] * vertices[(i + 1) % n][1] - vertices[(i + 1) % n][0] * vertices[i][1]
        for i in range(n)
    )


def points_outside(points: Sequence[Point], width: int, height: int) -> list[Point]:
    """The points outside the frame [0, width] x [0, height]."""
    return [p for p in points if not (0 <= p[0] <= width and 0 <= p[1] <= height)]


class Polygon:
    """A closed polygon of (x, y) vertices; inside means the even-odd rule (a point exactly on
    an edge may fall either way).

    Points are tested one at a time in plain Python: a frame has a few dozen tracks at most,
    and for so few points a bounding-box check and a loop over the edges cost less than
    setting up array operations.
    """

    def __init__(self, vertices: ArrayLike) -> None:
        self.vertices = np.asarray(vertices, np.float64).reshape(-1, 2)
        v: list[list[float]] = self.vertices.tolist()
        if len(v) < 3:
            raise ValueError("a polygon needs at least 3 points")
        xs, ys = [p[0] for p in v], [p[1] for p in v]
        self._box = (min(xs), min(ys), max(xs), max(ys))
        # (x1, y1, y2, dx/dy) of each edge that is not horizontal (those never straddle).
        self._edges = [
            (x1, y1, y2, (x2 - x1) / (y2 - y1))
            for (x1, y1), (x2, y2) in zip(v, v[1:] + v[:1], strict=True)
            if y1 != y2
        ]

    def contains(self, x: float, y: float) -> bool:
        x0, y0, x1, y1 = self._box
        if x < x0 or x > x1 or y < y0 or y > y1:
            return False
        inside = False
        for ex, ey1, ey2, slope in self._edges:
            if (ey1 > y) != (ey2 > y) and x < ex + (y - ey1) * slope:
                inside = not inside
        return inside
