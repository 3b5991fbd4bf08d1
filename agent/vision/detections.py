"""Detections of one frame: the value the detector hands to the tracker."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
