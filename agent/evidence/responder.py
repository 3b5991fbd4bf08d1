"""Answers central's evidence requests (MQTT v5 request/response) from the agent's evidence
store: only requests on this agent's own request topic, only to a response topic under its own
tree, one message per frame. It publishes nothing else, and nothing unasked."""

from __future__ import annotations

import base64
import logging
import threading
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pantau.agent.config.agent import AgentSettings
from pantau.agent.evidence.store import EvidenceStore, Lookup
from pantau.agent.wire.mqtt import MqttConnection
from pantau.agent.wire.protocol import (
    EvidenceFrame,
    EvidenceReply,
    EvidenceRequest,
    ProtocolError,
    decode_evidence,
    evidence_request_topic,
    evidence_response_topic,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024  # a request is a few hundred bytes: the broker drops larger ones


class EvidenceResponder:
    """Its own MQTT connection (so that large answers never hold up the outbox's messages),
    subscribed to pantau/v1/{site}/{agent}/evidence/request. `store` None: evidence is
    disabled, and every request is answered `disabled`."""

    def __init__(self, settings: AgentSettings, store: EvidenceStore | None) -> None:
        self.site = settings.site
        self.agent = settings.id
        self.store = store
        self.topic = evidence_request_topic(self.site, self.agent)
        # What every acceptable Response Topic starts with (a requester's segment follows).
        self.reply_prefix = evidence_response_topic(self.site, self.agent, "x")[:-1]
        self.answered = 0
        self.ignored = 0
        self.ready = threading.Event()  # subscribed: requests reach us from now on
        self.conn = MqttConnection(
            # No session kept while away: a request nobody answered in time is void anyway.
            settings.broker.model_copy(update={"session_expiry": 0}),
            client_id=f"pantau-agent-{self.site}-{self.agent}-evidence",
            clean_start=True,
            max_packet_size=MAX_REQUEST_BYTES,
            on_connect=lambda _present: self.conn.subscribe(self.topic, qos=1),
            on_message=self._on_message,
        )
        self.conn.client.on_subscribe = self._on_subscribe

    def start(self) -> None:
        self.conn.start()

    def stop(self) -> None:
        self.conn.stop()

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties) -> None:
        if any(code.is_failure for code in reason_codes):
            log.warning(
                "the broker refused our subscription to %s (%s): central's evidence "
                "requests will not reach this agent; its broker user needs that right "
                "(pantau-central credentials)",
                self.topic,
                reason_codes[0],
            )
            return
        self.ready.set()

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        reply_to = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        if msg.topic != self.topic or not self._acceptable(reply_to):
            # Not ours, or nowhere we may answer: publishing where a message says would let
            # anyone who can reach this topic aim our frames elsewhere.
            self.ignored += 1
            log.warning(
                "evidence request on %r with response topic %r ignored (answers go "
                "only to %s<requester>)",
                msg.topic,
                reply_to,
                self.reply_prefix,
            )
            return
        assert reply_to is not None  # _acceptable
        for reply in self.answer(msg.topic, bytes(msg.payload)):
            out = Properties(PacketTypes.PUBLISH)
            if correlation is not None:
                out.CorrelationData = correlation
            out.ContentType = "application/json"
            self.conn.publish(reply_to, reply.encode(), qos=1, properties=out)
        self.answered += 1

    def _acceptable(self, reply_to: str | None) -> bool:
        if not reply_to or not reply_to.startswith(self.reply_prefix):
            return False
        try:
            evidence_response_topic(self.site, self.agent, reply_to[len(self.reply_prefix) :])
        except ProtocolError:
            return False
        return True

    def answer(self, topic: str, payload: bytes) -> list[EvidenceReply]:
        """The replies to one request received on `topic` (this agent's request topic)."""
        base: dict[str, str | None] = {"site": self.site, "agent": self.agent}
        try:
            request = decode_evidence(EvidenceRequest, topic, payload)
        except ProtocolError as exc:
            return [
                EvidenceReply(**base, alert_id="-", status="bad_request", detail=exc.reason[:500])
            ]
        base |= {"alert_id": request.alert_id, "camera": request.camera}
        if (request.site, request.agent) != (self.site, self.agent):
            return [EvidenceReply(**base, status="bad_request", detail=(
                f"request for {request.site}/{request.agent} on {self.site}/{self.agent}'s topic"
            ))]  # fmt: skip
        if self.store is None:
            return [
                EvidenceReply(
                    **base,
                    status="disabled",
                    detail=f"evidence is disabled on agent {self.site}/{self.agent}",
                )
            ]
        found = self.store.lookup(request.alert_id, request.camera)
        log.info(
            "evidence of alert %s requested by %r: %s (%d frames)",
            request.alert_id,
            request.requested_by,
            found.status,
            len(found.frames),
        )
        return replies(base, found)


def replies(base: dict[str, str | None], found: Lookup) -> list[EvidenceReply]:
    """A lookup as replies: one per frame when ok, else one saying why."""
    if found.status != "ok":
        return [EvidenceReply(**base, status=found.status, detail=found.detail,
                              alert_type=found.alert_type)]  # fmt: skip
    return [
        EvidenceReply(
            **base,
            status="ok",
            part=part,
            parts=len(found.frames),
            alert_type=found.alert_type,
            frame=EvidenceFrame(
                index=f.index,
                taken_at=datetime.fromtimestamp(f.taken_at, timezone.utc),
                offset_seconds=round(f.offset_seconds, 3),
                width=f.width,
                height=f.height,
                sha256=f.sha256,
                jpeg=base64.b64encode(f.jpeg).decode(),
            ),
        )
        for part, f in enumerate(found.frames)
    ]
