"""Small builders shared by the vision unit tests."""

from __future__ import annotations

import numpy as np
from pantau.agent.vision.detections import Detections, Tracks


def tracks(*rows: tuple, confirmed: bool = True) -> Tracks:
    """Tracks from (id, x_anchor, y_anchor[, class_id]) rows: 20x40 boxes whose bottom centre
    is the given point."""
    ids = np.array([r[0] for r in rows], np.int64)
    x = np.array([r[1] for r in rows], np.float64)
    y = np.array([r[2] for r in rows], np.float64)
    cls = np.array([r[3] if len(r) > 3 else 0 for r in rows], np.int32)
    xyxy = np.stack([x - 10, y - 40, x + 10, y], axis=1).astype(np.float32).reshape(-1, 4)
    n = len(rows)
    return Tracks(ids, xyxy, cls, np.ones(n, np.float32), np.full(n, confirmed), ("person",))


def dets(boxes: list[tuple[float, float, float, float]], score: float = 0.9, cls: int = 0):
    n = len(boxes)
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.full(n, score, np.float32),
        np.full(n, cls, np.int32),
        ("person",),
    )
