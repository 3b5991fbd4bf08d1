"""The agent's configuration: identity, broker, outbox buffer, bucket size and cameras."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pantau.agent.config.detector import DETECTOR_FLOOR, DetectorSettings
from pantau.agent.config.rules import LineConfig, ZoneConfig
from pantau.agent.config.tuning import HealthConfig, MotionConfig, TrackerConfig
from pantau.agent.rules.schedule import check_timezone
from pantau.agent.wire.paths import outbox_file
from pantau.agent.wire.protocol import segment_validator
from pantau.agent.wire.settings import BrokerSettings, PantauSettings, Section, redact_url
from pydantic import (
    Field,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)


class BufferSettings(Section):
    path: Path = Field(
        default_factory=outbox_file,
        description="SQLite outbox file; its folder is created. Camera health references are "
        "kept beside it. Default outbox.db under Pantau's state root: $PANTAU_HOME, else "
        "/var/lib/pantau for a service, else ~/.local/share/pantau.",
    )
    max_mb: float = Field(
        256,
        gt=0,
        description="Size cap of the outbox; above it old buckets are merged, then dropped.",
    )
    max_age_hours: float = Field(
        168, gt=0, description="Counts older than this are dropped (with a buffer_overflow alert)."
    )
    replay_rate: float = Field(
        2000,
        ge=0,
        description="Most messages per second published while draining a backlog (0 = no limit). "
        "Alerts are never held back by it.",
    )
    max_inflight: int = Field(
        200, ge=1, le=65535, description="Messages published but not yet acknowledged, at most."
    )


class DeliverySettings(Section):
    until: Literal["central", "broker"] = Field(
        "central",
        description="When a message leaves the outbox: `central`, once central's ack says it is "
        "stored (nothing lost even if the broker dies with messages queued); `broker`, on the "
        "broker's PUBACK (for a central that sends no acks).",
    )
    resend_after: float = Field(
        300,
        gt=0,
        description="Seconds after the broker's PUBACK at which a message central has not "
        "confirmed is sent again, while central is heard from but makes no progress (a hole "
        "central's ack shows is sent again at once).",
    )


class CameraConfig(Section):
    source: str | None = Field(
        None, description="rtsp:// or http(s):// URL, a file path, or a device index."
    )

    @field_serializer("source")
    def _hide_credentials(self, source: str | None, info: SerializationInfo) -> str | None:
        # Printed settings (`pantau-agent config`) pass context={"redact": True}.
        if source is None or not (info.context or {}).get("redact"):
            return source
        return redact_url(source)
    analysis_fps: float = Field(
        5, gt=0, le=60,
        description="Frames analysed per second (of the file's own timeline). 5 counts people "
        "and cars well; 2 still counts people at walking pace (measured: 8 % counting error "
        "against 3 % at 5 fps) at 40 % of the detector load; below 2, tracks break up.",
    )
    model: str | None = Field(
        None, description="Detector model of this camera; default the agent's `model`."
    )
    input_size: int | None = Field(
        None,
        ge=160,
        le=1280,
        multiple_of=32,
        description="Detector input side for this camera: 512 or 640 finds small distant "
        "vehicles better (see the model card) at about (side/416)^2 the cost; default the "
        "model's own.",
    )
    lines: dict[str, LineConfig] = Field(
        default_factory=dict, description="Counting lines by rule name."
    )
    zones: dict[str, ZoneConfig] = Field(default_factory=dict, description="Zones by rule name.")
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> CameraConfig:
        # Alerts and stored counts are keyed by rule name alone, so a line and a zone may
        # not share one.
        shared = sorted(set(self.lines) & set(self.zones))
        if shared:
            raise ValueError(f"duplicate rule names {shared}: a line and a zone share a name")
        return self


class AgentDetectorSettings(DetectorSettings):
    """DetectorSettings as the agent runs them: weak boxes are kept for the tracker."""

    confidence: float = Field(
        DETECTOR_FLOOR, gt=0, le=1, description="Lowest score kept. The tracker's low-score "
        "stage needs the weak boxes (tracks still start at cameras.<name>.tracker.new_score), "
        "so raise it only to shed load.",
    )


class AgentSettings(PantauSettings):
    id: str = Field("agent-1", description="This agent's name, unique within its site.")
    site: str = Field("site-1", description="The site (e.g. a Polres area) the agent belongs to.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    buffer: BufferSettings = Field(default_factory=BufferSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    bucket_seconds: int = Field(
        60, ge=1, le=3600, description="Length of a counts bucket; 3600 must be a multiple of it."
    )
    heartbeat_seconds: float = Field(30, gt=0, description="Heartbeat period in seconds.")
    model: str = Field("nanodet-m", description="Default detector model (local model store).")
    detector: AgentDetectorSettings = Field(
        default_factory=AgentDetectorSettings,
        description="Detector runtime of every camera: execution provider (cpu, cuda, "
        "tensorrt, openvino), threads, precision, NMS, class thresholds. The model is "
        "`model` above (or cameras.<name>.model).",
    )
    timezone: str = Field(
        "UTC", description="IANA timezone of restricted-zone schedules that name none."
    )
    cameras: dict[str, CameraConfig] = Field(
        default_factory=dict, description="Cameras by name; names become topic segments."
    )

    _check_id = field_validator("id")(segment_validator("agent id"))
    _check_site = field_validator("site")(segment_validator("site"))

    _timezone = field_validator("timezone")(check_timezone)

    @field_validator("bucket_seconds")
    @classmethod
    def _divides_hour(cls, value: int) -> int:
        if 3600 % value:
            raise ValueError("must divide 3600 so buckets align to the hour")
        return value

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, value: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        for name in value:
            segment_validator("camera name")(name)
        return value

    @field_validator("detector")
    @classmethod
    def _model_is_set_elsewhere(cls, value: AgentDetectorSettings) -> AgentDetectorSettings:
        # One place says which model runs: two that disagree would be a trap.
        if "model" in value.model_fields_set:
            raise ValueError("set the model with `model` (or cameras.<name>.model), not "
                             "detector.model")
        return value
