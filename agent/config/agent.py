"""The agent's configuration: identity, broker, outbox buffer, bucket size and cameras."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pantau.agent.config.detector import DETECTOR_FLOOR, DetectorSettings
from pantau.agent.config.rules import (
    LineConfig,
    Units,
    ZoneConfig,
    read_units,
    within_frame_fractions,
)
from pantau.agent.config.tuning import HealthConfig, MotionConfig, TilingConfig, TrackerConfig
from pantau.agent.rules.schedule import box_timezone, box_timezone_name, check_timezone
from pantau.agent.vision.geometry import Point
from pantau.agent.wire.paths import outbox_file
from pantau.agent.wire.protocol import CameraInfo, RegistryFields, segment_validator
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


class DecoderSettings(Section):
    """How cameras are decoded: each in a supervised child process of its own (isolated, the
    default), so that a stream that crashes or hangs its decoder takes down only its camera."""

    isolate: bool = Field(
        True,
        description="Decode each camera (and `analyze`'s file) in a child process that is "
        "restarted when it crashes, hangs or outgrows `memory_mb`; false decodes in threads "
        "of the agent, where one aborting decoder stops every camera.",
    )
    hang_seconds: float = Field(
        10.0, gt=0,
        description="A decoder that delivers no frame this long (while the pipeline has room "
        "for one) is hung: killed and restarted, its camera reported offline.",
    )
    memory_mb: float = Field(
        1024.0, gt=0,
        description="Resident memory (RSS) above which a decoder process is killed and "
        "restarted.",
    )
    restart_min: float = Field(
        0.5, gt=0, description="First delay before a failed decoder is restarted, in seconds."
    )
    restart_max: float = Field(
        30.0, gt=0,
        description="Longest restart delay: the delay doubles from `restart_min` up to this "
        "while the decoder keeps failing.",
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


class EvidenceSettings(Section):
    """Frames kept per alert in a bounded local store, sent only when central asks for one
    alert on behalf of an operator (never by default: only counts and alerts leave the edge)."""

    enabled: bool = Field(
        True,
        description="Keep frames around each alert locally and answer central's requests for "
        "them; false keeps nothing and answers every request `disabled`.",
    )
    path: Path | None = Field(
        None,
        description="Folder of the store (JPEG files and their index.db); created. Default: "
        "evidence/ beside the outbox (buffer.path), so under Pantau's state root.",
    )
    frames_before: int = Field(
        2, ge=0, le=10, description="Frames kept from before the alert was raised."
    )
    frames_after: int = Field(
        2, ge=0, le=10, description="Frames kept after the one at which it was raised."
    )
    interval_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Least time between the kept frames of one alert (0: consecutive analysed "
        "frames). Frames before the raise are held in memory, uncompressed, at this spacing: "
        "frames_before of them per camera.",
    )
    max_mb: float = Field(
        512, gt=0, description="Size cap of the store; the oldest alerts' frames go first."
    )
    retention_hours: float = Field(
        72, gt=0, description="Frames older than this are deleted (a request then gets "
        "`expired`).",
    )
    blur_faces: bool = Field(
        True,
        description="Pixelate the head (top quarter) of every tracked person's box. People the "
        "detector did not find are not blurred.",
    )
    blur_plates: bool = Field(
        True,
        description="Pixelate the lower middle of every tracked vehicle's box, where number "
        "plates are (coarse: the plate itself is not detected).",
    )
    jpeg_quality: int = Field(80, ge=20, le=100, description="JPEG quality of stored frames.")
    max_side: int = Field(
        1280, ge=160, le=4096,
        description="Longest side of a stored frame in pixels; larger frames are scaled down. A "
        "frame whose JPEG would not fit one MQTT message (about 190 KB) is stored at a lower "
        "quality or size.",
    )


class CameraConfig(Section, RegistryFields):
    """One camera: its source, analysis and rules, and its registry entry (location, address,
    description, jurisdiction, tags: sent to central in the agent's status message)."""

    source: str | None = Field(
        None, description="rtsp:// or http(s):// URL, a file path, or a device index."
    )
    analysis_fps: Annotated[float, Field(gt=0, le=60)] | Literal["auto"] = Field(
        "auto",
        description="Frames analysed per second (of the file's own timeline): 'auto' chooses "
        "it between min_fps and max_fps from how far this camera's tracked objects move "
        "between analysed frames relative to their own size (cars close to the camera need "
        "10-15, walking people 5), and probes at max_fps at start and every 30 s for objects "
        "too fast to become tracks at the current rate (scooters, distant cars: a new track's "
        "step must stay within a quarter of its height); a probe costs 1-3 s at max_fps "
        "(walkers on vtest.avi: 1.02x the frames of auto without probes, one person indoors "
        "1.14x). Or a fixed number: 5 counts people well; "
        "2 still counts people at walking pace (measured: 8 % counting error against 3 % at "
        "5 fps) at 40 % of the detector load; below 2, tracks break up.",
    )
    min_fps: float = Field(
        5, gt=0, le=60, description="With analysis_fps auto: the rate of a calm scene."
    )
    max_fps: float = Field(
        15, gt=0, le=60,
        description="With analysis_fps auto: the highest rate fast objects may raise it to.",
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
    units: Units | None = Field(
        None,
        description="How the points of this camera's lines and zones are read: 'relative' as "
        "fractions 0-1 of the frame's width and height (rules stay in place when the stream "
        "changes resolution, e.g. main stream to substream), 'pixels' as frame pixels. "
        "Default: relative when every point of the camera's rules lies within 0-1, else "
        "pixels.",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    tiling: TilingConfig = Field(default_factory=TilingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)

    @field_serializer("source")
    def _hide_credentials(self, source: str | None, info: SerializationInfo) -> str | None:
        # Printed settings (`pantau-agent config`) pass context={"redact": True}.
        if source is None or not (info.context or {}).get("redact"):
            return source
        return redact_url(source)

    @field_serializer("units")
    def _units_in_force(self, units: Units | None) -> Units | None:
        # Printed settings show how the points are read, not only whether `units` was set.
        return self.units_in_force

    def registry(self) -> CameraInfo:
        """This camera's registry entry as the agent's status message carries it."""
        return CameraInfo.model_validate(self.model_dump(include=set(RegistryFields.model_fields)))

    @property
    def fixed_fps(self) -> float | None:
        """The fixed analysis rate; None with analysis_fps auto."""
        return None if self.analysis_fps == "auto" else float(self.analysis_fps)

    @model_validator(mode="after")
    def _fps_bounds(self) -> CameraConfig:
        if self.min_fps > self.max_fps:
            raise ValueError(f"min_fps {self.min_fps} is above max_fps {self.max_fps}")
        return self

    @model_validator(mode="after")
    def _unique_rule_names(self) -> CameraConfig:
        # Alerts and stored counts are keyed by rule name alone, so a line and a zone may
        # not share one.
        shared = sorted(set(self.lines) & set(self.zones))
        if shared:
            raise ValueError(f"duplicate rule names {shared}: a line and a zone share a name")
        return self

    @model_validator(mode="after")
    def _fractions_within_the_frame(self) -> CameraConfig:
        if self.units != "relative":
            return self
        for where, points in self.rule_points():
            outside = [p for p in points if not within_frame_fractions([p])]
            if outside:
                raise ValueError(f"units is relative (fractions of the frame) but {where} "
                                 f"has {outside} outside 0-1, so outside every frame")
        return self

    def rule_points(self) -> list[tuple[str, list[Point]]]:
        """(`lines.NAME.points` or `zones.NAME.polygon`, points) of every rule."""
        return [(f"lines.{n}.points", c.points) for n, c in self.lines.items()] + [
            (f"zones.{n}.polygon", c.polygon) for n, c in self.zones.items()
        ]

    @property
    def units_in_force(self) -> Units | None:
        """How the rule points are read (see `units`); None for a camera without rules."""
        rules = self.rule_points()
        if not rules:
            return self.units
        return read_units([p for _, points in rules for p in points], self.units)

    @property
    def relative(self) -> bool:
        """Whether the rule points are fractions of the frame, scaled to it when known."""
        return self.units_in_force == "relative"

    def describe_units(self) -> str:
        """The units in force and why, for people: 'relative (every point within 0-1)'."""
        if self.units_in_force is None:
            return "no rules"
        if self.units is not None:
            return f"{self.units} (set by units)"
        if self.relative:
            return "relative (every point within 0-1: fractions of the frame)"
        return "pixels (points beyond 1)"

    def rule_warnings(self, where: str) -> list[str]:
        """`where.RULE: points -> reason` lines for rules that are degenerate as read: read
        as pixels yet all within 0-1, they cover about one pixel."""
        if self.relative:
            return []
        why = ("units is pixels" if self.units == "pixels"
               else "another rule of this camera has points beyond 1")
        return [
            f"{where}.{name}: {points} -> read as pixels ({why}), so this rule covers about "
            "one pixel; write every rule of the camera as fractions 0-1, or all in pixels"
            for name, points in self.rule_points()
            if within_frame_fractions(points)
        ]


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
    decoders: DecoderSettings = Field(
        default_factory=DecoderSettings,
        description="Decoder processes: isolation, hang timeout, memory limit, restart backoff.",
    )
    evidence: EvidenceSettings = Field(
        default_factory=EvidenceSettings,
        description="Frames around each alert, kept locally and sent only on central's request.",
    )
    timezone: str = Field(
        default_factory=box_timezone_name,
        description="IANA time zone (e.g. Asia/Makassar) of the times of day in rules "
        "(restricted-zone schedules) that name none. Default: the box's own, from the TZ "
        "variable, /etc/timezone or /etc/localtime; UTC, with a warning, if none is set.",
    )
    cameras: dict[str, CameraConfig] = Field(
        default_factory=dict, description="Cameras by name; names become topic segments."
    )

    _check_id = field_validator("id")(segment_validator("agent id"))
    _check_site = field_validator("site")(segment_validator("site"))

    _timezone = field_validator("timezone")(check_timezone)

    def timezone_source(self) -> str | None:
        """Where `timezone` came from: 'settings' (the file or PANTAU_TIMEZONE), the box's
        TZ variable or file, or None when the box names no zone and UTC is a fallback."""
        if "timezone" in self.model_fields_set:
            return "settings"
        return box_timezone()[1]

    def describe_timezone(self) -> str:
        """The zone in force and where it came from, for people."""
        source = self.timezone_source()
        if source == "settings":
            return f"{self.timezone} (set in the settings)"
        if source is None:
            return f"{self.timezone} (the box names no time zone: a fallback)"
        return f"{self.timezone} (the box's own, from {source})"

    def warnings(self) -> list[str]:
        """`field.path: value -> reason` lines for settings that work but are likely not
        what was meant; commands print them, the live agent logs them."""
        lines = []
        if self.timezone_source() is None:
            lines.append(f"timezone: {self.timezone!r} -> the box's time zone could not be "
                         "read (TZ, /etc/timezone, /etc/localtime), so times of day in rules "
                         "run in UTC; set `timezone` (e.g. Asia/Makassar)")
        for name, cam in self.cameras.items():
            lines += cam.rule_warnings(f"cameras.{name}")
        return lines

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
