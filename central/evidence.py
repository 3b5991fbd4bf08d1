"""Evidence on request, central's side: ask one agent (MQTT v5 request/response) for the frames
it kept of one alert, on behalf of an operator; keep them with an audit record of who asked,
when, why and what came of it. No web framework here: the CLI and the read API call the same
functions."""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pantau.agent.wire.errors import PantauError
from pantau.agent.wire.mqtt import MqttConnection
from pantau.agent.wire.protocol import (
    MAX_PAYLOAD_BYTES,
    EvidenceReply,
    EvidenceRequest,
    ProtocolError,
    check_segment,
    decode_evidence,
    evidence_response_topic,
    format_time,
    utcnow,
)
from pantau.agent.wire.settings import BrokerSettings
from pantau.central.config import CentralSettings
from pantau.central.storage import CameraRef, Storage

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0
MAX_TEXT = 500  # longest who / why kept in the audit
JPEG_MAGIC = b"\xff\xd8\xff"


class EvidenceUnavailable(PantauError):
    """A request that brought no frame. `outcome`: not_found, expired, disabled, bad_request
    (the agent's answer), bad_reply (frames that fail their checks) or timeout (no answer);
    the message says why and which alert."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def request_evidence(
    settings: CentralSettings,
    storage: Storage,
    alert: dict[str, Any],
    who: str,
    why: str,
    timeout: float = REQUEST_TIMEOUT,
) -> list[dict[str, Any]]:
    """Fetch and keep the evidence frames of one alert for an operator; return their metadata.

    Contract (for the CLI and the read API alike):
    - `alert` names the alert: keys site, agent, camera and alert_id (the agent's alert id),
      as a row of the alerts table has them. The caller has already checked that the operator
      may see that camera (a token's scope): the agent only checks that the alert is of that
      camera, and answers not_found otherwise.
    - `who` (operator or token name) and `why` (the reason given) must not be empty; both go
      into the audit record (at most MAX_TEXT characters each).
    - Frames already kept at central for the alert are returned without asking the agent
      again (audit outcome `kept`).
    - Otherwise an EvidenceRequest goes to pantau/v1/{site}/{agent}/evidence/request through
      the broker of `settings` (central's user needs the evidence rights of
      central/credentials.py), and the calling thread blocks up to `timeout` seconds for the
      answer.
    - Returns storage.evidence_for(site, agent, alert_id): one dict per frame, in time order,
      with id, site, agent, camera, alert_id, idx, taken_at, offset_seconds (from the raise),
      width, height, sha256, stored_at and size; the JPEG itself is storage.evidence_jpeg(id).
      Some frames but not all within the timeout: those are kept and returned (outcome
      `partial`).
    - Raises EvidenceUnavailable(outcome) when no frame came: not_found, expired, disabled,
      bad_request (the agent's answer), bad_reply (frames that fail their checks) or timeout
      (agent offline, too old to know evidence, or without the broker right to its request
      topic). ValueError for a malformed `alert`
      or an empty who/why. Every outcome is in the audit, the raised ones too.
    """
    camera, alert_id = _alert_ref(alert)
    who, why = _text("who", who), _text("why", why)
    kept = [r for r in storage.evidence_for(camera.site, camera.agent, alert_id)
            if r["camera"] == camera.camera]  # fmt: skip
    if kept:
        _audit(storage, camera, alert_id, who, why, "kept", f"{len(kept)} frames kept already")
        return kept
    requester = f"{settings.group}-{settings.worker}-{uuid.uuid4().hex[:12]}"
    request = EvidenceRequest(
        site=camera.site,
        agent=camera.agent,
        camera=camera.camera,
        alert_id=alert_id,
        requested_by=who,
        created_at=utcnow(),
    )
    replies, trouble = ask_agent(settings.broker, request, requester, timeout)
    frames, problems = _frames(replies)
    refusal = next((r for r in replies if r.status != "ok"), None)
    if frames:
        expected = max(r.parts for r in replies if r.status == "ok")
        complete = len(frames) == expected
        detail = "; ".join([f"{len(frames)} of {expected} frames", *problems])
        storage.store_evidence(camera, alert_id, frames, {
            "who": who, "why": why, "outcome": "stored" if complete else "partial",
            "detail": detail})  # fmt: skip
        return storage.evidence_for(camera.site, camera.agent, alert_id)
    outcome: str
    if refusal is not None:
        outcome, detail = refusal.status, refusal.detail
    elif problems:
        outcome, detail = "bad_reply", "; ".join(problems)
    else:
        outcome = "timeout"
        detail = trouble or (f"agent {camera.site}/{camera.agent} did not answer within "
                             f"{timeout:g} s (offline, or without evidence)")  # fmt: skip
    _audit(storage, camera, alert_id, who, why, outcome, detail)
    raise EvidenceUnavailable(
        outcome,
        f"evidence of alert {alert_id} of "
        f"{camera.site}/{camera.agent}/{camera.camera}: {outcome}: {detail}",
    )


def ask_agent(
    broker: BrokerSettings, request: EvidenceRequest, requester: str, timeout: float
) -> tuple[list[EvidenceReply], str | None]:
    """Send `request` with Response Topic evidence_response_topic(site, agent, requester) and
    Correlation Data `requester`; return the replies received within `timeout` (it stops early
    at a refusal or once every frame came), and why nothing could be asked (None: it was)."""
    reply_topic = evidence_response_topic(request.site, request.agent, requester)
    correlation = requester.encode()
    replies: list[EvidenceReply] = []
    subscribed, done = threading.Event(), threading.Event()

    def on_connect(_present: bool) -> None:
        # Queued before our request on the same connection: the broker subscribes us first.
        conn.subscribe(reply_topic, qos=1)
        subscribed.set()

    def on_message(msg: mqtt.MQTTMessage) -> None:
        if getattr(msg.properties, "CorrelationData", None) != correlation:
            return  # an answer to an earlier request of this name, or not an answer
        try:
            reply = decode_evidence(EvidenceReply, msg.topic, bytes(msg.payload))
        except ProtocolError as exc:
            log.warning("bad evidence reply: %s", exc)
            return
        if (reply.site, reply.agent, reply.alert_id) != (
            request.site,
            request.agent,
            request.alert_id,
        ):
            log.warning("evidence reply for %s/%s alert %s ignored (asked %s/%s alert %s)",
                        reply.site, reply.agent, reply.alert_id, request.site, request.agent,
                        request.alert_id)  # fmt: skip
            return
        replies.append(reply)
        if reply.status != "ok" or len({r.part for r in replies}) >= reply.parts:
            done.set()

    # A session per request, gone when it ends (expiry 0): nothing piles up on the broker.
    conn = MqttConnection(
        broker.model_copy(update={"session_expiry": 0}),
        client_id=f"pantau-central-evidence-{requester}",
        clean_start=True,
        max_packet_size=MAX_PAYLOAD_BYTES + 16 * 1024,
        on_connect=on_connect,
        on_message=on_message,
    )
    deadline = time.monotonic() + timeout
    conn.start()
    try:
        if not subscribed.wait(timeout):
            return [], f"cannot reach the broker: {conn.last_error or 'no answer'}"
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation
        # A request nobody takes within the wait is void: the broker drops it then.
        props.MessageExpiryInterval = max(1, int(timeout))
        conn.publish(request.topic, request.encode(), qos=1, properties=props)
        done.wait(max(0.0, deadline - time.monotonic()))
    finally:
        conn.stop()
    return sorted(replies, key=lambda r: r.part), None


def _frames(replies: list[EvidenceReply]) -> tuple[list[dict[str, Any]], list[str]]:
    """The frames of `ok` replies as store_evidence takes them, each checked (base64, sha256,
    a JPEG), and what was wrong with those dropped."""
    frames: dict[int, dict[str, Any]] = {}
    problems = []
    for reply in replies:
        f = reply.frame
        if f is None:
            continue
        try:
            jpeg = base64.b64decode(f.jpeg, validate=True)
        except ValueError:
            problems.append(f"frame {f.index}: not base64")
            continue
        if hashlib.sha256(jpeg).hexdigest() != f.sha256 or not jpeg.startswith(JPEG_MAGIC):
            problems.append(f"frame {f.index}: not the JPEG its sha256 names")
            continue
        frames[f.index] = {"idx": f.index, "taken_at": format_time(f.taken_at),
                           "offset_seconds": f.offset_seconds, "width": f.width,
                           "height": f.height, "sha256": f.sha256, "jpeg": jpeg}  # fmt: skip
    return [frames[i] for i in sorted(frames)], problems


def _alert_ref(alert: dict[str, Any]) -> tuple[CameraRef, str]:
    try:
        names = [check_segment(alert[k], k) for k in ("site", "agent", "camera")]
        alert_id = alert["alert_id"]
    except KeyError as exc:
        raise ValueError(f"alert needs site, agent, camera and alert_id ({exc} missing)") from None
    except ProtocolError as exc:
        raise ValueError(f"alert: {exc.reason}") from None
    if not isinstance(alert_id, str) or not 0 < len(alert_id) <= 128:
        raise ValueError(f"alert_id {alert_id!r}: 1 to 128 characters")
    return CameraRef(*names), alert_id


def _text(what: str, value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValueError(f"`{what}` must not be empty: every evidence request is audited")
    return value[:MAX_TEXT]


def _audit(
    storage: Storage,
    camera: CameraRef,
    alert_id: str,
    who: str,
    why: str,
    outcome: str,
    detail: str,
) -> None:
    storage.store_evidence(
        camera,
        alert_id,
        [],
        {"who": who, "why": why, "outcome": outcome, "detail": detail[:MAX_TEXT]},
    )
