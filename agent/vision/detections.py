"""Detections and tracks of one frame: the values the detector hands to the tracker and the
tracker to the rules."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pantau.agent.vision.geometry import Position, anchor_points

# The classes Pantau counts by default, with their COCO-80 ids (0-based, as detectors emit).
DEFAULT_CLASSES: dict[str, int] = {
    "person": 0,
    "bicycle": 1,
    "car": 2,
    "motorcycle": 3,
    "bus": 5,
    "truck": 7,
}

# Classes that detectors often confuse for one object (one van may get a car box and a truck
# box): one NMS pass and one track per object within each group.
CONFUSABLE_CLASSES: tuple[tuple[str, ...], ...] = (
    ("bicycle", "motorcycle"),
    ("car", "bus", "truck"),
)


@dataclass(frozen=True)
class Detections:
    """Boxes of one frame in source-pixel coordinates.

    xyxy: float32 (N, 4) as x1, y1, x2, y2; confidence: float32 (N,); class_id: int32 (N,)
    indexes `names`, the model's class names; frame_size: (width, height) of the frame when
    known: a box that touches its border may be cut off there (the tracker then trusts the
    box's other edge and the track's size instead).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: tuple[str, ...] = field(default=())
    frame_size: tuple[int, int] | None = None

    @classmethod
    def empty(
        cls, names: tuple[str, ...] = (), frame_size: tuple[int, int] | None = None
    ) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int32),
            names,
            frame_size,
        )

    def __len__(self) -> int:
        return len(self.confidence)

    def __getitem__(self, index: np.ndarray | slice) -> Detections:
        return Detections(
            self.xyxy[index],
            self.confidence[index],
            self.class_id[index],
            self.names,
            self.frame_size,
        )

    def class_names(self) -> list[str]:
        return [self.names[i] if 0 <= i < len(self.names) else str(i) for i in self.class_id]


# Tracker ids, [x, y] anchors, class ids and confirmed flags of a Tracks, as Python lists.
TrackRows = tuple[list[int], list[list[float]], list[int], list[bool]]


@dataclass(frozen=True)
class Tracks:
    """Tracks reported for one frame: every array has one row per track.

    tracker_id: int64, unique for the tracker's lifetime and never shared (unconfirmed tracks
    have their own ids too); xyxy: float32 (N, 4) filtered boxes; class_id: int32 class by
    confidence-weighted vote over the track's detections; confidence: float32 of the detection
    matched in this frame; confirmed: bool, true once the track has had `min_hits` consecutive
    matches. Rules must ignore unconfirmed tracks for counting.
    """

    tracker_id: np.ndarray
    xyxy: np.ndarray
    class_id: np.ndarray
    confidence: np.ndarray
    confirmed: np.ndarray
    names: tuple[str, ...] = field(default=())
    # Per anchor position, what `anchors` and `rows` computed: filled on first use (the
    # frozen fields never change, so neither do these).
    _anchors: dict[Position | str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _rows: dict[Position | str, TrackRows] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def empty(cls, names: tuple[str, ...] = ()) -> Tracks:
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.int32),
            np.zeros(0, np.float32),
            np.zeros(0, bool),
            names,
        )

    def __len__(self) -> int:
        return len(self.tracker_id)

    def __getitem__(self, index: np.ndarray | slice) -> Tracks:
        return Tracks(
            self.tracker_id[index],
            self.xyxy[index],
            self.class_id[index],
            self.confidence[index],
            self.confirmed[index],
            self.names,
        )

    def anchors(self, position: Position | str = Position.BOTTOM_CENTER) -> np.ndarray:
        """(N, 2) float64 anchor points (computed once per position; do not modify)."""
        found = self._anchors.get(position)
        if found is None:
            found = self._anchors[position] = anchor_points(self.xyxy, position)
        return found

    def rows(self, position: Position | str = Position.BOTTOM_CENTER) -> TrackRows:
        """Python lists (tracker ids, [x, y] anchors, class ids, confirmed) for rules that loop
        over tracks. Computed once per Tracks and anchor position, then shared by every rule
        that asks (the arrays of a Tracks are never modified)."""
        cache = self._rows
        found = cache.get(position)  # a Position and its string value are equal keys
        if found is None:
            key = Position(position)
            found = (
                self.tracker_id.tolist(),
                self.anchors(key).tolist(),
                self.class_id.tolist(),
                self.confirmed.tolist(),
            )
            cache[key] = found
        return found
