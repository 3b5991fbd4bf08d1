"""Configuration of a camera's counting lines and zones (pydantic), validated; the rules
build their LineCounter and ZoneMonitor objects from it (`from_config`). Points are frame
pixels or fractions 0-1 of the frame (`Units`), read per camera (`read_units`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pantau.agent.rules.schedule import check_timezone, parse_daily_window
from pantau.agent.vision.detections import DEFAULT_CLASSES
from pantau.agent.vision.geometry import Point, crossing_edges, points_outside, polygon_area2
from pantau.agent.wire.settings import Section
from pydantic import (
    Field,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

Units = Literal["relative", "pixels"]

AnchorName = Literal[
    "bottom_center",
    "center",
    "top_center",
    "bottom_left",
    "bottom_right",
    "center_left",
    "center_right",
    "top_left",
    "top_right",
]


def _check_classes(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if not value:
        raise ValueError("classes must not be empty (omit it for all person and vehicle classes)")
    unknown = [c for c in value if c not in DEFAULT_CLASSES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; known: {', '.join(DEFAULT_CLASSES)}")
    if len(set(value)) != len(value):
        raise ValueError("classes are listed twice")
    return value


def within_frame_fractions(points: Sequence[Point]) -> bool:
    """Whether every point lies within 0-1 on both axes (reads as fractions of the frame)."""
    return all(0 <= x <= 1 and 0 <= y <= 1 for x, y in points)


def read_units(points: Sequence[Point], units: Units | None) -> Units:
    """How a camera's rule `points` are read: `units` when set, else relative when every
    point lies within 0-1 and pixels otherwise (a camera without rules reads as relative)."""
    if units is not None:
        return units
    return "relative" if within_frame_fractions(points) else "pixels"


def to_pixels(points: Sequence[Point], width: int, height: int) -> list[Point]:
    """Fractions of a width x height frame as pixels: (1, 1) is its bottom-right corner."""
    return [(x * width, y * height) for x, y in points]


def class_ids(classes: Sequence[str] | None, names: Sequence[str] = ()) -> list[int]:
    """Class ids of `classes` (None = every DEFAULT_CLASSES name) in the model's `names`;
    with no names, the COCO ids of DEFAULT_CLASSES. KeyError for a name the model lacks."""
    wanted = list(classes) if classes is not None else list(DEFAULT_CLASSES)
    if not names:
        return [DEFAULT_CLASSES[c] for c in wanted]
    index = {n: i for i, n in enumerate(names)}
    missing = [c for c in wanted if c not in index]
    if missing and classes is not None:
        raise KeyError(f"the model has no class {missing}")
    return [index[c] for c in wanted if c in index]


def _outside_frame(field: str, points: Sequence[Point], width: int, height: int) -> list[str]:
    outside = points_outside(points, width, height)
    if not outside:
        return []
    return [f"{field}: {outside} -> outside the {width}x{height} frame"]


class LineConfig(Section):
    """A counting line: crossings of the segment A->B; 'in' is onto its left-hand side as
    seen on screen (cross(B-A, P-A) < 0 in image coordinates)."""

    points: list[Point] = Field(
        description="Two points [[xA, yA], [xB, yB]] from A to B: frame pixels, or fractions "
        "0-1 of the frame's width and height (see the camera's `units`)."
    )
    classes: list[str] | None = Field(
        None, description="Classes counted; default: person and every vehicle class."
    )
    anchor: AnchorName = Field(
        "bottom_center", description="Point of the box that must cross the line."
    )
    min_frames: int = Field(
        2,
        ge=1,
        le=50,
        description="Analysed frames the anchor must stay on the new side before the crossing "
        "counts (flicker filter).",
    )

    _classes = field_validator("classes")(_check_classes)

    @field_validator("points")
    @classmethod
    def _two_points(cls, value: list[Point]) -> list[Point]:
        if len(value) != 2:
            raise ValueError(f"a line needs exactly 2 points, got {len(value)}")
        if value[0] == value[1]:
            raise ValueError("the two points of a line must differ")
        return value

    def frame_errors(self, width: int, height: int, where: str = "line") -> list[str]:
        """`where.points: value -> reason` lines for points outside a width x height frame
        (fractions 0-1 are inside every frame)."""
        return _outside_frame(f"{where}.points", self.points, width, height)


class RestrictedConfig(Section):
    schedule: str = Field(
        description="Daily window 'HH:MM-HH:MM' when any object inside is an intrusion; may "
        "wrap midnight ('18:00-06:00'); '00:00-24:00' is always."
    )
    timezone: str | None = Field(
        None, description="IANA timezone of the schedule (e.g. Asia/Makassar); default the "
        "agent's `timezone`."
    )

    @field_serializer("timezone")
    def _zone_in_force(self, value: str | None, info: SerializationInfo) -> str | None:
        # Printed settings (`pantau-agent config`) pass the agent's zone in context, so a
        # schedule is never shown without the zone it runs in.
        return value or (info.context or {}).get("timezone")
    hold_seconds: float = Field(
        2.0, ge=0, description="Seconds something must be inside before the alert is raised."
    )
    clear_seconds: float = Field(
        30.0, ge=0, description="Seconds the zone must be empty before the alert clears."
    )

    _timezone = field_validator("timezone")(check_timezone)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_daily_window(value)
        return value


class ZoneConfig(Section):
    """A zone: a polygon in which occupancy and dwell are measured and alerts raised."""

    polygon: list[Point] = Field(
        description="At least 3 points [[x, y], ...]: frame pixels, or fractions 0-1 of the "
        "frame's width and height (see the camera's `units`); must not cross itself."
    )
    classes: list[str] | None = Field(
        None, description="Classes measured; default: person and every vehicle class."
    )
    anchor: AnchorName = Field(
        "bottom_center", description="Point of the box that must be inside the polygon."
    )
    max_occupancy: int | None = Field(
        None, ge=0, description="Crowd alert when more objects than this are inside."
    )
    crowd_hold_seconds: float = Field(
        10.0, ge=0, description="Seconds over max_occupancy before the crowd alert is raised."
    )
    crowd_hysteresis: int = Field(
        1, ge=1, description="The crowd alert clears at max_occupancy minus this or fewer."
    )
    loiter_seconds: float | None = Field(
        None, gt=0, description="Loitering alert for a track inside longer than this."
    )
    restricted: RestrictedConfig | None = Field(
        None, description="Intrusion alert schedule; omit for a zone that is never restricted."
    )
    exit_seconds: float = Field(
        1.0, ge=0, description="Seconds unseen inside before a track counts as having left."
    )

    _classes = field_validator("classes")(_check_classes)

    @field_validator("polygon")
    @classmethod
    def _simple_polygon(cls, value: list[Point]) -> list[Point]:
        if len(value) < 3:
            raise ValueError(f"a zone needs at least 3 points, got {len(value)}")
        crossing = crossing_edges(value)
        if crossing is not None:
            i, j = crossing
            raise ValueError(f"the polygon crosses itself (edges {i + 1} and {j + 1})")
        if abs(polygon_area2(value)) < 1e-9:
            raise ValueError("the polygon has no area (its points are on one line)")
        return value

    @model_validator(mode="after")
    def _crowd(self) -> ZoneConfig:
        if self.max_occupancy is not None and self.crowd_hysteresis > self.max_occupancy + 1:
            raise ValueError("crowd_hysteresis must be at most max_occupancy + 1")
        return self

    def frame_errors(self, width: int, height: int, where: str = "zone") -> list[str]:
        """`where.polygon: value -> reason` lines for points outside a width x height frame
        (fractions 0-1 are inside every frame)."""
        return _outside_frame(f"{where}.polygon", self.polygon, width, height)
