"""Per-camera tuning sections of the vision pipeline (motion gate, tracker, health thresholds,
tiling),
kept out of pantau.agent.config.agent so that loading a config never imports OpenCV."""

from __future__ import annotations

from typing import Literal

from pantau.agent.wire.settings import Section
from pydantic import Field, model_validator


class MotionConfig(Section):
    """Motion gate: skip detection while a downscaled view is unchanged; tracks coast."""

    # On by default: on quiet footage it skips 54-62 % of detections with identical counts;
    # on busy scenes it skips ~0 % and costs ~5 % (tests/pipeline/RESULTS.md).
    enabled: bool = Field(
        True,
        description="Skip detection on frames that barely differ from the last detected one.",
    )
    pixel_threshold: int = Field(
        12, ge=1, le=255, description="Grey-level change that marks a thumbnail pixel changed."
    )
    min_changed: float = Field(
        0.002,
        ge=0,
        le=1,
        description="Fraction of changed thumbnail pixels at or above which the frame is "
        "detected.",
    )
    max_skip_seconds: float = Field(
        2.0, ge=0, description="Detect at least this often even in a still view."
    )


class TrackerConfig(Section):
    """Tracker tuning (vision.track.tracker.ByteTracker, whose defaults these are). Lower the
    scores for a view the detector is unsure of: cars seen from straight above, for example,
    score 0.2-0.5. The detector keeps no box below 0.1."""

    high_score: float = Field(
        0.5, ge=0.1, le=1, description="Detections at or above this score are matched first."
    )
    new_score: float = Field(
        0.5, ge=0.1, le=1, description="Lowest score of a detection that starts a new track."
    )
    low_score: float = Field(
        0.1, ge=0.1, le=1, description="Weaker detections down to this score only keep "
        "existing tracks alive (through occlusion); they never start one.",
    )
    min_hits: int = Field(
        2, ge=1, le=10, description="Matches before a track is confirmed; unconfirmed tracks "
        "are never counted.",
    )
    lost_seconds: float = Field(
        2.0, ge=0, le=30, description="How long a confirmed track without a match is kept "
        "(occlusion) before it ends.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> TrackerConfig:
        if self.low_score > self.high_score:
            raise ValueError(
                f"low_score {self.low_score} is above high_score {self.high_score}"
            )
        return self


class HealthConfig(Section):
    """Camera health limits (see rules.health.HealthThresholds, whose defaults these are, for
    what each one measures)."""

    offline_seconds: float = Field(
        10.0, gt=0,
        description="No frame from the camera this long: offline (a live camera that still "
        "delivers frames while it waits its turn on a busy box is not).",
    )
    frozen_seconds: float = Field(10.0, gt=0, description="Identical frames this long: frozen.")
    covered_seconds: float = Field(
        10.0, gt=0, description="No texture this long: covered or blurred."
    )
    shift_seconds: float = Field(
        30.0, gt=0, description="View unlike the reference this long: scene shift."
    )
    shift_min_similarity: float = Field(
        0.35, ge=0, le=1, description="Similarity to the reference below this is another view."
    )


class TilingConfig(Section):
    """Detection on tiles of the region the camera's rules cover, at the resolution the
    smallest object of interest needs (see pantau.agent.vision.tiles)."""

    mode: Literal["auto", "off"] = Field(
        "auto",
        description="auto (the default): detect on model-sized, overlapping tiles of the rules' "
        "region (lines and zones with `margin`) where the whole frame at the model's input "
        "would shrink small objects below what the model sees, within `max_tiles` and the "
        "camera's share of the detector budget (over budget: fewer, larger tiles, said in the "
        "camera's health). Without `min_object_px` the agent judges it: only frames at least "
        "2x the model's input are tiled (1568x778 or 960x540 at 416, not 768x576), as finely "
        "as the calls allow, and a close view is detected whole, as the camera's tracks show "
        "it (the lower quartile of their heights at the rules 3x the model's smallest object "
        "at the whole frame's scale; tiles cut close people into parts: an indoor zone "
        "counted 7-8 entries for 6). Small, distant vehicles need it (motorway.mp4 at the "
        "default configuration: 0 % counting error against 82 % on the whole frame, at 5 "
        "detector calls per analysed frame). off: the whole frame in one call.",
    )
    min_object_px: int | None = Field(
        None,
        ge=4,
        le=1024,
        description="Height in frame pixels of the smallest object to detect (a scooter at "
        "the far end of a line): tiles whenever the whole frame shrinks it below the model's "
        "own smallest object (1/16 of its input side, 26 px at 416) by 1.6x or more, scaled "
        "so that it reaches that size, whatever the view. Default: judged by the agent (see "
        "`mode`).",
    )
    overlap: float = Field(
        0.25, ge=0, le=0.5,
        description="Overlap of neighbouring tiles, as a fraction of the tile side, so that "
        "an object on a seam is whole in at least one tile.",
    )
    margin: float = Field(
        0.15, ge=0, le=1,
        description="Margin added around the rules' geometry, as a fraction of the frame "
        "height: objects reach a line with their whole box and must be tracked before it.",
    )
    max_tiles: int = Field(
        5, ge=1, le=32,
        description="Most detector calls per analysed frame for this camera, the whole-frame "
        "pass included.",
    )
    whole_frame: bool = Field(
        True,
        description="With more than one tile, also detect on the whole frame at the model's "
        "input: objects larger than a tile (cars close to the camera) are found whole there.",
    )
