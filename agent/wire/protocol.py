"""Wire protocol v1: the topics and JSON messages that agents publish and central accepts.

This module is the whole contract between the two sides. It depends on pydantic only, so
`central` imports it without pulling in the agent's vision stack. See docs/protocol.md.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, TypeVar

from pantau.agent.wire.errors import PantauError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

PROTOCOL_VERSION: Final = 1
TOPIC_ROOT = f"pantau/v{PROTOCOL_VERSION}"
MAX_SEGMENT_LENGTH = 64
MAX_PAYLOAD_BYTES = 256 * 1024
# Bounds that keep every number storable (SQLite integers are signed 64-bit) and every count
# plausible: a value beyond them is an attack or a bug, rejected at validation.
MAX_SEQ = 2**63 - 1
MAX_COUNT = 10**9
MAX_LOST_RANGES = 10_000
# Most stored ranges above the contiguous prefix that one ack reports: enough for the holes a
# broker restart can leave, bounded so an ack stays one small message whatever the history.
MAX_ACK_RANGES = 64
CAMERA_KINDS = ("counts", "alerts", "health")
AGENT_KINDS = ("status", "heartbeat")
ACK_KIND = "ack"

_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# An agent epoch: empty (a message from before epochs, or an outbox upgraded with its history)
# or up to 32 letters and digits.
Epoch = Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9]*$")]

ALERT_TYPES = (
    "intrusion",
    "crowd",
    "loitering",
    "camera_offline",
    "camera_frozen",
    "camera_tamper",
    "camera_scene_shift",
    "buffer_overflow",
)


class ProtocolError(PantauError, ValueError):
    """A topic or payload that does not follow the protocol; `reason` says what and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_segment(value: str, what: str = "topic segment") -> str:
    """Return `value` if it can stand as one MQTT topic level, else raise ProtocolError.

    Allowed: letters, digits, `.`, `_`, `-`, starting with a letter or digit, at most
    MAX_SEGMENT_LENGTH characters. This rules out the MQTT wildcards `+` and `#`, the level
    separator `/`, empty levels and whitespace.
    """
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{what} must be a non-empty string")
    if len(value) > MAX_SEGMENT_LENGTH:
        raise ProtocolError(f"{what} {value[:80]!r} is longer than {MAX_SEGMENT_LENGTH} characters")
    if _is_segment(value):
        return value
    raise ProtocolError(
        f"{what} {value!r} may hold only letters, digits, '.', '_' and '-' "
        "(no '+', '#', '/', spaces) and must start with a letter or digit"
    )


# Central checks the same few site, agent and camera names six times per message (topic and
# body): remembered (short strings only, so the cache stays small), a check is a lookup.
@functools.lru_cache(maxsize=1 << 14)
def _is_segment(value: str) -> bool:
    return _SEGMENT_RE.match(value) is not None


def segment_validator(what: str):
    """A pydantic validator that accepts only valid topic segments (see check_segment)."""

    def validate(value: str) -> str:
        try:
            return check_segment(value, what)
        except ProtocolError as exc:
            raise ValueError(exc.reason) from None

    return validate


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (RFC 3339, e.g. 2026-01-01T00:00:00Z)")
    return value.astimezone(timezone.utc)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix and millisecond precision when there is one."""
    value = value.astimezone(timezone.utc)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


UtcTime = Annotated[datetime, PlainSerializer(format_time, return_type=str)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


class _Model(BaseModel):
    # NaN and infinity are valid Python floats but no valid measurement (and NaN is stored
    # as NULL by SQLite).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_M = TypeVar("_M", bound=_Model)


# --- payloads -------------------------------------------------------------------------------


class LineCount(_Model):
    """Crossings of one line by one class during the bucket."""

    in_: Count = Field(0, alias="in", description="Crossings onto the line's 'in' side.")
    out: Count = Field(0, description="Crossings onto the line's 'out' side.")
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )


class Dwell(_Model):
    """Time spent in a zone by the tracks that left it during the bucket."""

    count: Count = Field(0, description="Tracks that left the zone during the bucket.")
    mean: float = Field(0.0, ge=0, description="Mean dwell in seconds of those tracks.")
    p90: float = Field(
        0.0, ge=0, description="90th percentile dwell in seconds; after a merge an upper bound."
    )
    max: float = Field(0.0, ge=0, description="Longest dwell in seconds.")


class ZoneStats(_Model):
    """Occupancy of one zone by one class during the bucket."""

    occupancy_mean: float = Field(
        0.0, ge=0, description="Time-weighted mean number of objects inside over analysed time."
    )
    occupancy_max: Count = Field(0, description="Most objects inside at any analysed frame.")
    dwell: Dwell = Field(default_factory=Dwell)


class CountsPayload(_Model):
    """Every rule and class of one camera for one closed bucket. Zero buckets are sent too."""

    bucket_start: UtcTime
    bucket_seconds: int = Field(gt=0, le=7 * 86400)
    observed_seconds: float = Field(
        ge=0, description="Seconds of this bucket during which the camera was being analysed."
    )
    lines: dict[str, dict[str, LineCount]] = Field(default_factory=dict)
    zones: dict[str, dict[str, ZoneStats]] = Field(default_factory=dict)
    merged_seqs: list[Seq] = Field(
        default_factory=list,
        description="When the outbox merged buckets under pressure: the seqs of the originals.",
    )

    _check_start = field_validator("bucket_start")(_utc)

    @property
    def bucket_end(self) -> datetime:
        return self.bucket_start + timedelta(seconds=self.bucket_seconds)


class AlertPayload(_Model):
    alert_id: str = Field(min_length=1, max_length=128)
    type: Literal[ALERT_TYPES]  # type: ignore[valid-type]
    state: Literal["raised", "cleared"]
    severity: Literal["info", "warning", "critical"] = "warning"
    started_at: UtcTime
    ended_at: UtcTime | None = None
    rule: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    _check_times = field_validator("started_at", "ended_at")(
        lambda v: None if v is None else _utc(v)
    )

    @model_validator(mode="after")
    def _lost_seqs_are_ranges(self) -> AlertPayload:
        # Central turns these into seq bookkeeping: only a bounded list of [first, last]
        # ranges of storable seqs is believed.
        if self.type != "buffer_overflow" or "lost_seqs" not in self.details:
            return self
        ranges = self.details["lost_seqs"]
        if not isinstance(ranges, list) or len(ranges) > MAX_LOST_RANGES:
            raise ValueError(
                f"details.lost_seqs must be a list of at most {MAX_LOST_RANGES} ranges"
            )
        for r in ranges:
            if not (
                isinstance(r, list)
                and len(r) == 2
                and all(type(x) is int and 0 <= x <= MAX_SEQ for x in r)
                and r[0] <= r[1]
            ):
                raise ValueError(
                    f"details.lost_seqs: {str(r)[:40]} is not a [first, last] range of seqs"
                )
        return self


class HealthPayload(_Model):
    state: Literal["ok", "offline", "frozen", "covered", "scene_shift", "starting"]
    fps_target: float = Field(ge=0)
    fps_effective: float = Field(ge=0)
    frames_read: Seq = 0
    frames_analyzed: Seq = 0
    last_frame_at: UtcTime | None = None
    details: dict[str, Any] = Field(default_factory=dict)


MAX_TAGS = 32
MAX_REGISTRY_CAMERAS = 1024


class Location(_Model):
    """Where a camera stands (WGS 84)."""

    lat: float = Field(ge=-90, le=90, description="Latitude in degrees, -90 to 90.")
    lon: float = Field(ge=-180, le=180, description="Longitude in degrees, -180 to 180.")


def _check_tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not tag or len(tag) > MAX_SEGMENT_LENGTH or tag != tag.strip():
            raise ValueError(
                f"tag {tag[:80]!r}: 1 to {MAX_SEGMENT_LENGTH} characters, no surrounding spaces"
            )
    return tags


class RegistryFields(BaseModel):
    """What an operator needs to find and act on a camera (the camera registry): in the
    agent's camera config, its status message, and central's `cameras` overrides."""

    location: Location | None = Field(None, description="Where the camera stands: {lat, lon}.")
    address: str | None = Field(
        None, max_length=500, description="Street address or landmark, for people."
    )
    description: str | None = Field(
        None, max_length=2000, description="What the camera looks at, for people."
    )
    jurisdiction: str | None = Field(
        None,
        description="The unit whose area the camera is in, e.g. polres-balikpapan (letters, "
        "digits, '.', '_', '-'): API tokens and forwarders are scoped by it.",
    )
    tags: list[str] = Field(
        default_factory=list, max_length=MAX_TAGS, description="Free labels, e.g. gate, night."
    )

    @field_validator("jurisdiction")
    @classmethod
    def _jurisdiction(cls, value: str | None) -> str | None:
        return None if value is None else segment_validator("jurisdiction")(value)

    _tags = field_validator("tags")(_check_tags)


class CameraInfo(_Model, RegistryFields):
    """One camera's registry entry as the agent's status message carries it."""


class StatusPayload(_Model):
    state: Literal["online", "offline"]
    software: str = ""
    cameras: dict[str, CameraInfo] = Field(
        default_factory=dict,
        max_length=MAX_REGISTRY_CAMERAS,
        # Left out when empty: a central from before the registry accepts the message.
        exclude_if=lambda cameras: not cameras,
        description="The agent's cameras by name with their registry entries (location, "
        "address, description, jurisdiction, tags). Optional: absent in messages from agents "
        "before the registry, which central reads as 'nothing said'.",
    )

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, value: dict[str, CameraInfo]) -> dict[str, CameraInfo]:
        for name in value:
            check_segment(name, "camera")
        return value


class HeartbeatPayload(_Model):
    uptime_seconds: float = Field(ge=0)
    outbox_messages: Seq
    outbox_bytes: Seq
    cameras: Count = 0


# --- envelopes --------------------------------------------------------------------------------


class _Envelope(_Model):
    v: Literal[1] = PROTOCOL_VERSION
    msg_id: str = Field(min_length=1, max_length=64, description="Unique; kept across resends.")
    seq: Seq = Field(
        description="Per-agent, strictly increasing for counts/alerts/health; status and "
        "heartbeat carry the agent's latest assigned seq instead (its high-water mark).",
    )
    agent: str
    site: str
    epoch: Epoch = Field(
        "",
        description="The agent's epoch: a random id created with its outbox, so that a "
        "reinstalled agent whose seq starts again at 0 begins a new seq history at central. "
        "Empty (or absent) in messages from before epochs.",
    )
    created_at: UtcTime

    _check_agent = field_validator("agent")(segment_validator("agent"))
    _check_site = field_validator("site")(segment_validator("site"))
    _check_created = field_validator("created_at")(_utc)

    if TYPE_CHECKING:  # each message kind declares these fields with its own literal type
        kind: str
        camera: str | None

    @property
    def topic(self) -> str:
        return topic_for(self.site, self.agent, self.kind, self.camera)

    def encode(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class _CameraEnvelope(_Envelope):
    camera: str
    _check_camera = field_validator("camera")(segment_validator("camera"))


class CountsMessage(_CameraEnvelope):
    kind: Literal["counts"] = "counts"
    payload: CountsPayload


class AlertMessage(_CameraEnvelope):
    kind: Literal["alerts"] = "alerts"
    payload: AlertPayload


class HealthMessage(_CameraEnvelope):
    kind: Literal["health"] = "health"
    payload: HealthPayload


class StatusMessage(_Envelope):
    kind: Literal["status"] = "status"
    camera: None = None
    payload: StatusPayload


class HeartbeatMessage(_Envelope):
    kind: Literal["heartbeat"] = "heartbeat"
    camera: None = None
    payload: HeartbeatPayload


AnyMessage = CountsMessage | AlertMessage | HealthMessage | StatusMessage | HeartbeatMessage
Message = Annotated[AnyMessage, Field(discriminator="kind")]
MESSAGE_TYPES: dict[str, type[AnyMessage]] = {
    "counts": CountsMessage,
    "alerts": AlertMessage,
    "health": HealthMessage,
    "status": StatusMessage,
    "heartbeat": HeartbeatMessage,
}
_message_adapter: TypeAdapter[Message] = TypeAdapter(Message)


class AckMessage(_Model):
    """Central to one agent, on pantau/v1/{site}/{agent}/ack (retained, QoS 1): the seqs of
    one epoch that central has durably accounted for (stored, merged into a stored bucket, or
    declared lost by the agent). A snapshot, not a delta: only the latest one matters."""

    v: Literal[1] = PROTOCOL_VERSION
    site: str
    agent: str
    epoch: Epoch = ""
    upto: int = Field(
        ge=-1, le=MAX_SEQ, description="Every seq from 0 to this one is accounted for (-1: not 0)."
    )
    ranges: list[tuple[Seq, Seq]] = Field(
        default_factory=list,
        max_length=MAX_ACK_RANGES,
        description="Accounted ranges [first, last] above `upto`, lowest first; at most "
        f"{MAX_ACK_RANGES}, so seqs above the last one may be accounted for too.",
    )
    created_at: UtcTime
    central: Epoch = Field(
        "",
        description="The random id of central's database (empty from a central before ids): "
        "an agent that sees it change knows the acks of the one before no longer hold.",
    )

    _check_agent = field_validator("agent")(segment_validator("agent"))
    _check_site = field_validator("site")(segment_validator("site"))

    @property
    def topic(self) -> str:
        return ack_topic(self.site, self.agent)

    def covered(self) -> list[tuple[int, int]]:
        """Every range this ack covers, the contiguous prefix included."""
        return ([(0, self.upto)] if self.upto >= 0 else []) + [(a, b) for a, b in self.ranges]

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


def ack_topic(site: str, agent: str) -> str:
    """Where central acknowledges to one agent what it has stored."""
    return f"{TOPIC_ROOT}/{check_segment(site, 'site')}/{check_segment(agent, 'agent')}/{ACK_KIND}"


def decode_ack(topic: str, payload: bytes) -> AckMessage:
    """Validate an ack received on `topic`; ProtocolError if it is bad or not for that topic."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"ack of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        ack = AckMessage.model_validate_json(payload)
    except ValidationError as exc:
        raise ProtocolError(f"ack on {topic!r}: {_describe(exc)}") from None
    if ack.topic != topic:
        raise ProtocolError(f"ack for {ack.site}/{ack.agent} arrived on {topic!r}")
    return ack


def new_msg_id() -> str:
    return uuid.uuid4().hex


def topic_for(site: str, agent: str, kind: str, camera: str | None = None) -> str:
    parts = [TOPIC_ROOT, check_segment(site, "site"), check_segment(agent, "agent")]
    if kind in CAMERA_KINDS:
        if camera is None:
            raise ProtocolError(f"kind {kind!r} needs a camera")
        parts.append(check_segment(camera, "camera"))
    elif kind not in AGENT_KINDS:
        raise ProtocolError(f"unknown kind {kind!r}")
    parts.append(kind)
    return "/".join(parts)


# A topic per camera and kind, over and over; only valid ones (short) are remembered.
@functools.lru_cache(maxsize=1 << 12)
def parse_topic(topic: str) -> tuple[str, str, str | None, str]:
    """Split a topic into (site, agent, camera or None, kind); ProtocolError if it is not ours."""
    parts = topic.split("/")
    if len(parts) < 2 or parts[0] != "pantau" or not parts[1].startswith("v"):
        raise ProtocolError(f"topic {topic!r} is not under 'pantau/v<N>/'")
    if parts[1] != f"v{PROTOCOL_VERSION}":
        raise ProtocolError(f"unknown protocol version {parts[1]!r} in topic {topic!r}")
    rest = parts[2:]
    if len(rest) == 3 and rest[2] in AGENT_KINDS:
        site, agent, kind = rest
        camera = None
    elif len(rest) == 4 and rest[3] in CAMERA_KINDS:
        site, agent, camera, kind = rest
        check_segment(camera, "camera")
    else:
        raise ProtocolError(
            f"topic {topic!r} is not pantau/v1/<site>/<agent>/(status|heartbeat) "
            "or pantau/v1/<site>/<agent>/<camera>/(counts|alerts|health)"
        )
    check_segment(site, "site")
    check_segment(agent, "agent")
    return site, agent, camera, kind


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        lines.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - 5
    if more > 0:
        lines.append(f"... and {more} more")
    return "; ".join(lines)


def decode(topic: str, payload: bytes) -> Message:
    """Validate one received MQTT message; raise ProtocolError with the reason if it is bad."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    site, agent, camera, kind = parse_topic(topic)
    try:
        # The topic names the kind: validate against that model directly (the common case).
        msg = MESSAGE_TYPES[kind].model_validate_json(payload)
    except ValidationError:
        msg = _decode_slowly(payload)  # only to say precisely what is wrong
    got = (msg.site, msg.agent, msg.camera, msg.kind)
    if got != (site, agent, camera, kind):
        raise ProtocolError(
            f"topic/body mismatch: topic says site={site} agent={agent} camera={camera} "
            f"kind={kind}, body says site={got[0]} agent={got[1]} camera={got[2]} kind={got[3]}"
        )
    return msg


def _decode_slowly(payload: bytes) -> Message:
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("payload is nested too deeply") from None
    if not isinstance(raw, dict):
        raise ProtocolError("payload is not a JSON object")
    if raw.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unknown protocol version v={raw.get('v')!r}")
    try:
        msg = _message_adapter.validate_python(raw)
    except ValidationError as exc:
        raise ProtocolError(f"schema: {_describe(exc)}") from None
    return msg


def json_schema() -> dict[str, Any]:
    """JSON Schema of every message kind, for `pantau-agent protocol schema`."""
    schema = _message_adapter.json_schema(by_alias=True)
    schema["title"] = f"Pantau wire protocol v{PROTOCOL_VERSION}"
    return schema


# --- evidence on request ---------------------------------------------------------------------
# Optional in v1: an agent without evidence never subscribes to its request topic, and nothing
# here changes a message above. Only central asks (the broker's ACLs), only the asked agent
# answers, and only on a response topic under its own tree.

EVIDENCE_KIND = "evidence"
# Room for a reply's JSON around one base64 JPEG within MAX_PAYLOAD_BYTES (the broker's
# message_size_limit): a stored frame is never larger than this.
MAX_EVIDENCE_JPEG_BYTES = 3 * (MAX_PAYLOAD_BYTES - 4096) // 4
EVIDENCE_STATUSES = ("ok", "not_found", "expired", "disabled", "bad_request")
EvidenceStatus = Literal["ok", "not_found", "expired", "disabled", "bad_request"]


def evidence_request_topic(site: str, agent: str) -> str:
    """Where central asks one agent for an alert's evidence frames."""
    return "/".join(
        (
            TOPIC_ROOT,
            check_segment(site, "site"),
            check_segment(agent, "agent"),
            EVIDENCE_KIND,
            "request",
        )
    )


def evidence_response_topic(site: str, agent: str, requester: str) -> str:
    """Where one agent answers one requester (named in the request's Response Topic): under
    the agent's own tree, so that the agent's publish rights cover it."""
    return f"{evidence_request_topic(site, agent).rsplit('/', 1)[0]}/response/" + check_segment(
        requester, "requester"
    )


def is_evidence_topic(topic: str) -> bool:
    """Whether a topic under pantau/v1/ is an evidence request or response (not data)."""
    # Exact shapes: a camera may be named "evidence" (its data topics end in counts etc.).
    parts = topic.split("/")
    if parts[:2] != TOPIC_ROOT.split("/") or len(parts) < 6 or parts[4] != EVIDENCE_KIND:
        return False
    return (len(parts), parts[5]) in ((6, "request"), (7, "response"))


class EvidenceRequest(_Model):
    """Central to one agent, on pantau/v1/{site}/{agent}/evidence/request (QoS 1, not
    retained), with the MQTT v5 properties Response Topic (an evidence_response_topic of that
    agent) and Correlation Data (echoed in every reply)."""

    v: Literal[1] = PROTOCOL_VERSION
    site: str
    agent: str
    camera: str = Field(
        description="The alert's camera: an alert of another camera is answered not_found."
    )
    alert_id: str = Field(min_length=1, max_length=128)
    requested_by: str = Field(
        "",
        max_length=200,
        description="Who asked, for the agent's log (central's audit is the record).",
    )
    created_at: UtcTime

    _check_agent = field_validator("agent")(segment_validator("agent"))
    _check_site = field_validator("site")(segment_validator("site"))
    _check_camera = field_validator("camera")(segment_validator("camera"))

    @property
    def topic(self) -> str:
        return evidence_request_topic(self.site, self.agent)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


class EvidenceFrame(_Model):
    """One stored JPEG of an alert: boxes drawn, faces and plates blurred as configured."""

    index: int = Field(ge=0, le=1000, description="Order of the frame in time, from 0.")
    taken_at: UtcTime
    offset_seconds: float = Field(
        description="Seconds from the alert's raise (negative: before it)."
    )
    width: int = Field(gt=0, le=16384)
    height: int = Field(gt=0, le=16384)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    jpeg: str = Field(max_length=4 * MAX_EVIDENCE_JPEG_BYTES // 3 + 4, description="Base64.")

    _check_taken = field_validator("taken_at")(_utc)


class EvidenceReply(_Model):
    """One agent's answer to one request, on its Response Topic with its Correlation Data:
    status `ok` comes as `parts` messages of one frame each (part 0 .. parts-1, in order);
    any other status is one message without a frame, `detail` saying why."""

    v: Literal[1] = PROTOCOL_VERSION
    site: str
    agent: str
    camera: str | None = None
    alert_id: str = Field(min_length=1, max_length=128)
    status: EvidenceStatus
    detail: str = Field("", max_length=500)
    part: int = Field(0, ge=0, le=1000)
    parts: int = Field(0, ge=0, le=1000)
    alert_type: str | None = Field(None, max_length=64)
    frame: EvidenceFrame | None = None

    _check_agent = field_validator("agent")(segment_validator("agent"))
    _check_site = field_validator("site")(segment_validator("site"))

    @model_validator(mode="after")
    def _frame_with_ok(self) -> EvidenceReply:
        if (self.status == "ok") != (self.frame is not None):
            raise ValueError("a frame comes with status ok, and only with it")
        if self.status == "ok" and self.part >= self.parts:
            raise ValueError(f"part {self.part} of {self.parts}")
        return self

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


def decode_evidence(model: type[_M], topic: str, payload: bytes) -> _M:
    """Validate an evidence request or reply received on `topic`; ProtocolError if bad."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise ProtocolError(f"{model.__name__} on {topic!r}: {_describe(exc)}") from None


# --- bucket arithmetic ------------------------------------------------------------------------


def merge_counts(parts: Sequence[CountsPayload], seqs: Iterable[int] = ()) -> CountsPayload:
    """Merge contiguous buckets of one camera into one coarser bucket.

    Line crossings and dwell counts are summed exactly; occupancy_mean is weighted by each
    part's observed seconds; maxima take the max; a merged dwell p90 is the largest part p90
    (an upper bound, since percentiles do not merge). `seqs` are the seqs of the merged
    messages, recorded so central can account for them.
    """
    if not parts:
        raise ValueError("nothing to merge")
    parts = sorted(parts, key=lambda p: p.bucket_start)
    for a, b in itertools.pairwise(parts):
        if a.bucket_end != b.bucket_start:
            raise ValueError(f"buckets not contiguous: {a.bucket_end} != {b.bucket_start}")

    lines: dict[str, dict[str, LineCount]] = {}
    for p in parts:
        for rule, by_class in p.lines.items():
            target = lines.setdefault(rule, {})
            for cls, c in by_class.items():
                t = target.get(cls, LineCount())
                target[cls] = LineCount(**{"in": t.in_ + c.in_, "out": t.out + c.out})

    observed = sum(p.observed_seconds for p in parts)
    zones: dict[str, dict[str, ZoneStats]] = {}
    keys = {(r, c) for p in parts for r, by in p.zones.items() for c in by}
    for rule, cls in sorted(keys):
        stats = [(p.observed_seconds, p.zones.get(rule, {}).get(cls, ZoneStats())) for p in parts]
        count = sum(s.dwell.count for _, s in stats)
        dwell = Dwell(
            count=count,
            mean=sum(s.dwell.mean * s.dwell.count for _, s in stats) / count if count else 0.0,
            p90=max(s.dwell.p90 for _, s in stats),
            max=max(s.dwell.max for _, s in stats),
        )
        mean = sum(w * s.occupancy_mean for w, s in stats) / observed if observed else 0.0
        zones.setdefault(rule, {})[cls] = ZoneStats(
            occupancy_mean=mean, occupancy_max=max(s.occupancy_max for _, s in stats), dwell=dwell
        )

    merged_seqs = sorted({*seqs, *(s for p in parts for s in p.merged_seqs)})
    return CountsPayload(
        bucket_start=parts[0].bucket_start,
        bucket_seconds=sum(p.bucket_seconds for p in parts),
        observed_seconds=observed,
        lines=lines,
        zones=zones,
        merged_seqs=merged_seqs,
    )
