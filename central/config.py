"""Central's configuration: broker, storage URL, shared-subscription group and batching,
retention, each site's time zone, and camera registry overrides."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pantau.agent.wire.paths import central_database
from pantau.agent.wire.protocol import RegistryFields, segment_validator
from pantau.agent.wire.settings import BrokerSettings, PantauSettings, Section
from pydantic import Field, field_validator

DEFAULT_TIMEZONE = "Asia/Makassar"  # WITA, UTC+8: the capital's


class DeadLetterSettings(Section):
    max_days: float = Field(30, gt=0, description="Dead letters older than this are dropped.")
    max_rows: int = Field(
        100_000, ge=1, description="Most dead letters kept; the oldest are dropped first."
    )


class RetentionSettings(Section):
    raw_days: float = Field(
        90,
        gt=0,
        description="Raw count buckets older than this are dropped (on PostgreSQL a "
        "whole day partition at a time).",
    )
    hourly_days: float = Field(
        1100, gt=0, description="Hourly and daily rollups older than this are dropped."
    )
    dedupe_days: float = Field(
        8,
        gt=0,
        description="Message ids (the dedupe of resends) and closed seq gaps older than this are "
        "dropped: keep it above the agents' outbox age (buffer.max_age), the oldest resend.",
    )
    events_hours: float = Field(
        48,
        gt=0,
        description="Outgoing events (what live screens replay on reconnect) older than this "
        "are dropped; forwarders keep their own queues.",
    )


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name like Asia/Makassar)") from None
    return value


class SiteSettings(Section):
    timezone: str = Field(
        DEFAULT_TIMEZONE,
        description="IANA time zone of the site: local days, hours and weekdays of its rollups "
        "and visit patterns.",
    )

    _zone = field_validator("timezone")(_check_timezone)


class CameraOverride(Section, RegistryFields):
    """A camera's registry entry as central.yaml sets it: each field given here wins over what
    the camera's agent says (the others still come from the agent)."""


def _check_camera_names(cameras: dict[str, CameraOverride]) -> dict[str, CameraOverride]:
    for name in cameras:
        parts = name.split("/")
        if len(parts) != 3:
            raise ValueError(f"camera {name!r}: name it as SITE/AGENT/CAMERA")
        for what, part in zip(("site", "agent", "camera"), parts, strict=True):
            segment_validator(what)(part)
    return cameras


class CentralBrokerSettings(BrokerSettings):
    session_expiry: int = Field(
        600,
        ge=0,
        description="Seconds the broker keeps a worker's session (and its share of the queue) "
        "while the worker is away. Short, so a worker that never returns stops holding its "
        "share: agents send again what no live worker stored (end-to-end acks).",
    )


class CentralSettings(PantauSettings):
    broker: CentralBrokerSettings = Field(default_factory=CentralBrokerSettings)
    storage: str = Field(
        default_factory=lambda: f"sqlite:///{central_database()}",
        description="Where messages are stored: sqlite:////abs/path (or sqlite:///relative/path), "
        "or postgresql://user[:password]@host[:port]/database (the database must exist; central "
        "creates its tables). Default central.db under Pantau's state root: $PANTAU_HOME, "
        "else /var/lib/pantau for a service, else ~/.local/share/pantau.",
    )
    group: str = Field(
        "central",
        description="Shared-subscription group: central workers in one group split the load.",
    )
    worker: str = Field("1", description="This worker's name within the group.")
    heartbeat_timeout: float = Field(
        90, gt=0, description="Seconds without a heartbeat after which an agent counts as stale."
    )
    batch_size: int = Field(500, ge=1, description="Most messages stored in one transaction.")
    batch_wait_ms: int = Field(
        50, ge=0, description="Longest wait to fill a batch before it is committed."
    )
    receive_maximum: int = Field(
        2000, ge=1, le=65535, description="Unacknowledged messages the broker may send us."
    )
    seq_window: int = Field(
        10_000,
        ge=1,
        description="How far ahead of the highest seq an agent has sent so far a message may "
        "claim to be, plus max_seq_rate for every second the agent was silent; further ahead "
        "it is dead-lettered ('seq far ahead').",
    )
    max_seq_rate: float = Field(
        50,
        ge=0,
        description="Most seqs per second an agent can assign while central does not hear from "
        "it (32 cameras with 10 s buckets assign about 7): what a long outage may legitimately "
        "add to seq_window.",
    )
    max_bucket_age_days: float = Field(
        400, gt=0, description="Counts buckets older than this when received are dead-lettered."
    )
    max_clock_skew_seconds: float = Field(
        600,
        ge=0,
        description="Counts buckets that end more than this after they were received are "
        "dead-lettered.",
    )
    dead_letters: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    timezone: str = Field(
        DEFAULT_TIMEZONE, description="Time zone of every site not listed under `sites`."
    )
    sites: dict[str, SiteSettings] = Field(
        default_factory=dict, description="Per-site settings, by site name."
    )
    cameras: dict[str, CameraOverride] = Field(
        default_factory=dict,
        description="Camera registry overrides by SITE/AGENT/CAMERA (location, address, "
        "description, jurisdiction, tags): a field set here wins over the agent's.",
    )
    tail_gap_after: float = Field(
        600,
        gt=0,
        description="Seconds after an agent's heartbeat said it had sent a seq at which the "
        "seqs up to it that never arrived show as an open gap (a loss at the tail of its seqs).",
    )

    _check_names = field_validator("group", "worker")(segment_validator("name"))
    _camera_names = field_validator("cameras")(_check_camera_names)
    _zone = field_validator("timezone")(_check_timezone)

    def zone(self, site: str) -> ZoneInfo:
        """The time zone of `site`."""
        return ZoneInfo(self.sites[site].timezone if site in self.sites else self.timezone)

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value.startswith("sqlite:///"):
            if len(value) == len("sqlite:///"):
                raise ValueError("sqlite:/// needs a file path after it")
            return value
        if value.startswith(("postgresql://", "postgres://")):
            rest = value.split("://", 1)[1].split("?", 1)[0]
            if "/" not in rest or not rest.rsplit("/", 1)[1]:
                raise ValueError("postgresql:// needs a database name: postgresql://user@host/db")
            return value
        raise ValueError("not a storage URL: use sqlite:///PATH or postgresql://user@host/db")
