"""Central's configuration: broker, storage URL, shared-subscription group and batching,
retention, each site's time zone, camera registry overrides, and the forwarders that push
events to other systems."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pantau.agent.wire.paths import central_database
from pantau.agent.wire.protocol import RegistryFields, segment_validator
from pantau.agent.wire.schedule import parse_daily_window
from pantau.agent.wire.settings import BrokerSettings, PantauSettings, Section
from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

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
    alerts_days: float = Field(
        400,
        gt=0,
        description="Alerts cleared longer ago than this are dropped (with the agents' alert "
        "messages behind them), and so are evidence audit records; open alerts are kept "
        "however old. Keep it above buffer.max_age of every agent.",
    )
    evidence_days: float = Field(
        30,
        gt=0,
        description="Evidence frames (JPEGs fetched from agents on request) kept longer than "
        "this are dropped; their audit records stay for `alerts_days`. Save what a case needs "
        "with `pantau-central evidence save`.",
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


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> object:
    """'90s', '10m', '2h', '1d' or a number of seconds, as seconds (other values unchanged,
    for pydantic to refuse)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (seconds, or like 90s, 10m, 2h, 1d)")
        return float(match.group(1)) * _UNIT[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]


class AlertSettings(Section):
    offline_clear_after: Duration = Field(
        900,
        gt=0,
        description="Open alerts of a camera or agent that central has not heard from for this "
        "long (or whose camera's health has said offline for this long) are cleared by central "
        "('central: offline'); seconds or a duration like 15m.",
    )
    check_every: Duration = Field(
        60,
        gt=0,
        description="How often `pantau-central run` evaluates the count rules and clears the "
        "alerts of silent cameras (seconds or a duration like 1m).",
    )


class CountRuleSettings(Section):
    """A rule on stored counts that raises central alerts (source 'central'): `threshold` on
    the counts of a sliding window, or `unusual` for the last hour against its visit pattern."""

    kind: Literal["threshold", "unusual"] = Field(
        "threshold",
        description="threshold: the window's count against min or max; unusual: the last full "
        "hour against the mean of that hour of the week over past weeks.",
    )
    site: str = Field(description="The site whose counts the rule reads.")
    camera: str | None = Field(
        None,
        description="One camera, as AGENT/CAMERA or SITE/AGENT/CAMERA; omitted: the sum over "
        "every camera of the site (the alert then names no camera: agent 'central').",
    )
    rule: str | None = Field(None, description="Only this line or zone rule (omitted: all).")
    classes: list[str] | None = Field(None, description="Only these classes (omitted: all).")
    severity: Literal["info", "warning", "critical"] = Field(
        "warning", description="Severity of the alerts it raises."
    )
    window: Duration = Field(
        600,
        gt=0,
        description="threshold: the sliding window counted (buckets starting in the last "
        "window), e.g. 10m.",
    )
    min: int | None = Field(
        None, ge=1, description="threshold: raise when the window holds at least this many."
    )
    max: int | None = Field(
        None, ge=0, description="threshold: raise when the window holds more than this many."
    )
    schedule: str | None = Field(
        None,
        description="threshold: only in this daily window, in the site's local time, e.g. "
        "'22:00-05:00' (may wrap midnight); outside it an open alert clears. Omitted: always.",
    )
    hold: Duration = Field(
        0, ge=0, description="The condition must hold this long before the alert is raised."
    )
    clear_after: Duration = Field(
        0, ge=0, description="The condition must be gone this long before the alert clears."
    )
    ratio: float = Field(
        2.0,
        gt=1,
        description="unusual: raise when the hour has at least ratio times the usual count "
        "(above) or at most 1/ratio of it (below).",
    )
    min_difference: float = Field(
        10,
        ge=0,
        description="unusual: and differs from the usual count by at least this many.",
    )
    min_weeks: int = Field(
        3, ge=1, description="unusual: weeks with data at that hour needed before judging."
    )
    weeks: int = Field(8, ge=1, le=520, description="unusual: weeks of history read.")
    direction: Literal["both", "above", "below"] = Field(
        "both", description="unusual: which departures raise (a busy gate gone quiet: below)."
    )
    min_observed: float = Field(
        0.5,
        ge=0,
        le=1,
        description="unusual: share of the hour a camera must have observed for the hour to "
        "be judged (a camera that was down is not 'quiet').",
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_daily_window(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CountRuleSettings:
        if self.camera is not None:
            parts = self.camera.split("/")
            if len(parts) == 3 and parts[0] != self.site:
                raise ValueError(f"camera {self.camera!r} is not in site {self.site!r}")
            if len(parts) not in (2, 3) or not all(parts):
                raise ValueError(f"camera {self.camera!r}: name it AGENT/CAMERA or "
                                 "SITE/AGENT/CAMERA")  # fmt: skip
        if self.kind == "threshold" and (self.min is None) == (self.max is None):
            raise ValueError("a threshold rule needs exactly one of min (at least) and max "
                             "(more than)")  # fmt: skip
        if self.kind == "unusual" and (self.min, self.max, self.schedule) != (None,) * 3:
            raise ValueError("an unusual rule takes ratio, min_difference, min_weeks; not min, "
                             "max or schedule")  # fmt: skip
        return self

    @property
    def agent_camera(self) -> tuple[str, str] | None:
        """(agent, camera) of the rule's camera (None: the whole site)."""
        if self.camera is None:
            return None
        agent, camera = self.camera.split("/")[-2:]
        return agent, camera


class CentralBrokerSettings(BrokerSettings):
    session_expiry: int = Field(
        600,
        ge=0,
        description="Seconds the broker keeps a worker's session (and its share of the queue) "
        "while the worker is away. Short, so a worker that never returns stops holding its "
        "share: agents send again what no live worker stored (end-to-end acks).",
    )


SEVERITIES = ("info", "warning", "critical")  # lowest first


class ForwardFilterSettings(Section):
    """Which events a forwarder sends: the scope (sites, jurisdictions, cameras; the same
    model as API tokens, central.scope.Scope) and kinds, alert types and severity. Empty or
    absent: no restriction on that axis."""

    sites: list[str] = Field(default_factory=list, description="Only cameras of these sites.")
    jurisdictions: list[str] = Field(
        default_factory=list,
        description="Only cameras in these jurisdictions (from the camera registry); a camera "
        "of unknown jurisdiction, and an agent's own events (fleet), are then not sent.",
    )
    cameras: list[str] = Field(
        default_factory=list, description="Only these cameras, named SITE/AGENT/CAMERA."
    )
    kinds: list[Literal["alerts", "counts", "health", "fleet"]] = Field(
        default_factory=list,
        description="Only these kinds of events (alerts, counts, health, "
        "fleet); empty: all (a cap forwarder sends alerts only).",
    )
    alert_types: list[str] = Field(
        default_factory=list,
        description="Only alerts of these types (intrusion, crowd, ...); other kinds pass.",
    )
    min_severity: Literal["info", "warning", "critical"] = Field(
        "info", description="Only alerts at least this severe (info < warning < critical)."
    )

    @field_validator("cameras")
    @classmethod
    def _camera_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            parts = path.split("/")
            if len(parts) != 3 or not all(parts):
                raise ValueError(f"camera {path!r}: name it as SITE/AGENT/CAMERA")
        return value


class ForwardMqttSettings(BrokerSettings):
    """The other broker: host, port, TLS and credentials of its own."""

    topic_prefix: str = Field(
        "pantau",
        min_length=1,
        description="Events go to {topic_prefix}/{site}/{agent}/{camera}/{kind} (an agent's "
        "own events, fleet: {topic_prefix}/{site}/{agent}/{kind}).",
    )
    client_id: str | None = Field(
        None, description="MQTT client id (default pantau-forward-{forwarder name})."
    )
    session_expiry: int = Field(
        0,
        ge=0,
        description="Seconds the other broker keeps our session: 0, as central resends what "
        "was not acknowledged from its own queue.",
    )
    password_env: str | None = Field(
        None, description="Environment variable holding the password (instead of password)."
    )

    def resolved(self) -> ForwardMqttSettings:
        """These settings with the password read from password_env, if set."""
        if self.password_env is None:
            return self
        value = os.environ.get(self.password_env)
        if not value:
            raise ValueError(f"environment variable {self.password_env} (password_env) is unset")
        return self.model_copy(update={"password": SecretStr(value)})

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError("a topic prefix has no wildcards (+ #) and no leading/trailing /")
        return value


CAP_LANGUAGES: tuple[Literal["id-ID", "en-US"], ...] = ("id-ID", "en-US")


class CapSettings(Section):
    """How alerts are written as OASIS CAP 1.2."""

    sender: str = Field(
        "pantau@localhost",
        description="CAP <sender>: this system's globally unique id (e.g. "
        "pantau@kota.example.go.id); no spaces, commas or < &.",
    )
    sender_name: str = Field("Pantau", description="CAP <senderName>, shown to people.")
    scope: Literal["Public", "Restricted"] = Field(
        "Restricted", description="CAP <scope>: Public, or Restricted (with `restriction`)."
    )
    restriction: str = Field(
        "For authorised command-center and police operators only.",
        description="CAP <restriction> text, for a Restricted scope.",
    )
    languages: list[Literal["id-ID", "en-US"]] = Field(
        default_factory=lambda: list(CAP_LANGUAGES),
        min_length=1,
        description="One CAP <info> block per language, in this order (id-ID, en-US).",
    )

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if not value or any(c in value for c in " ,<&"):
            raise ValueError("a CAP sender has no spaces, commas, < or &")
        return value


class BackoffSettings(Section):
    initial: float = Field(1.0, gt=0, description="First retry delay in seconds.")
    max: float = Field(
        30.0,
        gt=0,
        description="Longest retry delay in seconds: also the longest a target that is back "
        "waits for the queue to move again.",
    )


class ForwarderSettings(Section):
    """One target: a webhook, another MQTT broker, or a CAP endpoint. Each has its own durable
    queue in central's storage, filled in the transaction that stores the change."""

    type: Literal["webhook", "mqtt", "cap"] = Field(
        description="webhook: POST JSON; mqtt: publish to another broker; cap: POST alerts as "
        "OASIS CAP 1.2 XML."
    )
    enabled: bool = Field(
        True, description="Queue and deliver; false keeps what is queued but adds nothing."
    )
    url: str | None = Field(None, description="Where to POST (webhook, cap): https://...")
    secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 signing key (webhook, cap). Better not in the file: use "
        "secret_file or secret_env.",
    )
    secret_file: Path | None = Field(
        None, description="File holding the signing key (surrounding whitespace ignored)."
    )
    secret_env: str | None = Field(
        None, description="Environment variable holding the signing key."
    )
    verify_tls: bool = Field(True, description="Check the target's TLS certificate (https).")
    ca_file: Path | None = Field(
        None, description="CA bundle (PEM) to check the target's certificate with."
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to the target.")
    timeout: float = Field(
        15.0, gt=0, description="Seconds to wait for the target's answer (read/write/publish)."
    )
    batch: int = Field(
        1,
        ge=1,
        le=1000,
        description="webhook: events per POST; 1 sends one event object per request, more "
        "sends a JSON array (each element with its own key). mqtt: publishes in flight at once "
        "(keep it at most the target broker's receive maximum, 20 on a default Mosquitto).",
    )
    backoff: BackoffSettings = Field(
        default_factory=BackoffSettings,
        description="Retry delays after a failure, doubling with jitter.",
    )
    poll_interval: float = Field(0.5, gt=0, description="Seconds between looks at an empty queue.")
    lease_seconds: float = Field(
        30.0,
        gt=0,
        description="One process delivers a forwarder at a time: it holds a lease this long, "
        "renewed while it works; a process that died frees it when it runs out. More than "
        "timeout + connect_timeout, so that one slow answer cannot outlast it.",
    )
    mqtt: ForwardMqttSettings | None = Field(None, description="The other broker (mqtt).")
    cap: CapSettings = Field(default_factory=CapSettings, description="CAP details (cap).")
    filter: ForwardFilterSettings = Field(
        default_factory=ForwardFilterSettings, description="Which events are sent."
    )

    @model_validator(mode="after")
    def _complete(self) -> ForwarderSettings:
        if self.type in ("webhook", "cap"):
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError(f"a {self.type} forwarder needs url: http(s)://...")
            given = [n for n in ("secret", "secret_file", "secret_env") if getattr(self, n)]
            if len(given) != 1:
                raise ValueError(
                    f"a {self.type} forwarder needs exactly one of secret, secret_file, "
                    f"secret_env (to sign what it sends), not {len(given)}"
                )
            if self.secret_file is not None and not self.secret_file.is_file():
                raise ValueError(f"secret_file {str(self.secret_file)!r} is not a file")
            if self.ca_file is not None and not self.ca_file.is_file():
                raise ValueError(f"ca_file {str(self.ca_file)!r} is not a file")
        if self.lease_seconds <= self.timeout + self.connect_timeout:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds:g}) must be more than timeout + "
                f"connect_timeout ({self.timeout + self.connect_timeout:g})"
            )
        if self.type == "mqtt" and self.mqtt is None:
            raise ValueError("an mqtt forwarder needs an mqtt: section (host, port, ...)")
        if self.type == "cap" and set(self.filter.kinds) - {"alerts"}:
            raise ValueError("a cap forwarder sends alerts only: filter.kinds may be [alerts]")
        return self

    def signing_key(self) -> bytes:
        """The HMAC key, from wherever it is kept (read now, so a rotated file is picked up
        on restart)."""
        if self.secret is not None:
            return self.secret.get_secret_value().encode()
        if self.secret_file is not None:
            return self.secret_file.read_text(encoding="utf-8").strip().encode()
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env)
            if not value:
                raise ValueError(f"environment variable {self.secret_env} (secret_env) is unset")
            return value.encode()
        raise ValueError("no signing key configured")


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
    alerts: AlertSettings = Field(
        default_factory=AlertSettings,
        description="Alert lifecycle: clearing silent cameras' "
        "alerts, and how often count rules are evaluated.",
    )
    count_rules: dict[str, CountRuleSettings] = Field(
        default_factory=dict,
        description="Rules on stored counts that raise central alerts, by name (the alert's rule).",
    )
    gap_grace: float = Field(
        10,
        ge=0,
        description="Seconds a hole in an agent's seqs must last before ingest records it as a gap "
        "(it shows by then, at most twice this after it opened). Workers that share the load "
        "often store seq N+1 just before N: such a hole leaves no gap. 0: record at once.",
    )
    tail_gap_after: float = Field(
        600,
        gt=0,
        description="Seconds after an agent's heartbeat said it had sent a seq at which the "
        "seqs up to it that never arrived show as an open gap (a loss at the tail of its seqs).",
    )

    forwarders: dict[str, ForwarderSettings] = Field(
        default_factory=dict,
        description="Where events are pushed (webhook, mqtt, cap), by forwarder name; see "
        "docs/integration.md.",
    )

    _check_names = field_validator("group", "worker")(segment_validator("name"))
    _camera_names = field_validator("cameras")(_check_camera_names)

    @field_validator("forwarders")
    @classmethod
    def _forwarder_names(cls, value: dict[str, ForwarderSettings]) -> dict[str, ForwarderSettings]:
        check = segment_validator("forwarder name")
        for name in value:
            check(name)
        return value

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
