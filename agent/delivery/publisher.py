"""Drains the outbox to the broker: QoS 1, alerts first, backlog replay rate-limited. A message
leaves the outbox once central's ack covers it (delivery `central`; the PUBACK only marks it as
awaiting central) or on its PUBACK (delivery `broker`); what central's ack shows missing, or
leaves unconfirmed too long, is sent again. Also publishes status and heartbeats.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import LANE_ALERT, LANE_DATA, Outbox, OutboxFullError
from pantau.agent.wire.mqtt import MqttConnection
from pantau.agent.wire.protocol import (
    AckMessage,
    CameraInfo,
    HeartbeatMessage,
    HeartbeatPayload,
    ProtocolError,
    StatusMessage,
    StatusPayload,
    ack_topic,
    decode_ack,
    new_msg_id,
    topic_for,
    utcnow,
)

log = logging.getLogger(__name__)

SOFTWARE = "pantau-agent/0.1"
# After an unsuccessful PUBACK the lane is replayed from that message after this long.
RETRY_AFTER_REFUSAL = 2.0
# While the disk cannot take the outbox's 'attempted' marks, the loop tries again this often.
RETRY_AFTER_FULL_DISK = 1.0
PUBACK_SUCCESS = 0
PUBACK_NO_SUBSCRIBERS = 16
# A message awaiting central is a hole, sent again at once, when central has stored one that the
# broker acknowledged this many seconds after it: the broker passes messages on in order, so it
# is not merely still queued (the margin covers batches in flight and several workers).
HOLE_GRACE = 5.0
# How often the loop looks for messages central has left unconfirmed for delivery.resend_after.
RESEND_CHECK_INTERVAL = 1.0


class TokenBucket:
    """At most `rate` tokens per second, with a burst of one second's worth (rate 0: no limit)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._last = clock()

    def available(self) -> int:
        if self.rate <= 0:
            return 1 << 30
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        return int(self._tokens)

    def spend(self, n: int) -> None:
        if self.rate > 0:
            self._tokens -= n


class Publisher:
    """Moves messages from an Outbox to MQTT until stopped.

    Each message is handed to paho once per process; paho retransmits it across reconnects
    until the broker acknowledges. After a restart everything still in the outbox is sent again
    with its original msg_id, so central can drop the duplicates.
    """

    def __init__(
        self,
        settings: AgentSettings,
        outbox: Outbox,
        *,
        cameras: int = 0,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.cameras = cameras
        self.started = time.monotonic()
        self._limiter = TokenBucket(settings.buffer.replay_rate)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[int, int]] = {}  # mid -> (lane, seq)
        self._acked: list[int] = []
        self._early: dict[int, int] = {}  # mid -> reason, for PUBACKs seen before the mid
        self._refused: dict[int, int] = {}  # lane -> earliest refused seq
        self._cursor = {LANE_ALERT: -1, LANE_DATA: -1}
        self._central_acks: list[AckMessage] = []
        # Wall-clock times: when the newest message central confirmed was acknowledged by the
        # broker, when that last moved forward, and when central's last ack for us arrived.
        self._confirmed_through: float | None = None
        self._progress_at = time.time()
        self._heard_at: float | None = None
        self.published = 0
        self.acknowledged = 0
        self.confirmed = 0
        self.resent = 0
        self.no_subscribers = 0
        self._thread: threading.Thread | None = None
        self.status_topic = topic_for(settings.site, settings.id, "status")
        self.ack_topic = ack_topic(settings.site, settings.id)
        self.until_central = settings.delivery.until == "central"
        self.conn = MqttConnection(
            settings.broker,
            client_id=f"pantau-agent-{settings.site}-{settings.id}",
            clean_start=False,
            will=(self.status_topic, self._status("offline").encode()),
            # Our own window (buffer.max_inflight, see _send) bounds what is in flight. paho
            # must never hold a message back in its queue: a later publish that finds room
            # could overtake it, and a camera's buckets would arrive out of order.
            max_inflight=0,
            on_connect=self._on_connect,
            on_publish=self._on_publish,
            on_message=self._on_message if self.until_central else None,
        )

    # --- messages that bypass the outbox ------------------------------------------------

    def _envelope(self) -> dict[str, Any]:
        """Status and heartbeat carry the agent's latest assigned seq (its high-water mark)."""
        return {
            "msg_id": new_msg_id(),
            "seq": max(0, self.outbox.last_seq),
            "agent": self.settings.id,
            "site": self.settings.site,
            "epoch": self.outbox.epoch,
            "created_at": utcnow(),
        }

    def _status(self, state: str) -> StatusMessage:
        # The registry goes along only once some camera has an entry: a status without it
        # stays readable by a central from before the registry.
        cameras = {name: cam.registry() for name, cam in self.settings.cameras.items()}
        if not any(info != CameraInfo() for info in cameras.values()):
            cameras = {}
        return StatusMessage(
            **self._envelope(),
            payload=StatusPayload(state=state, software=SOFTWARE, cameras=cameras),
        )

    def _heartbeat(self) -> HeartbeatMessage:
        return HeartbeatMessage(
            **self._envelope(),
            payload=HeartbeatPayload(
                uptime_seconds=time.monotonic() - self.started,
                outbox_messages=len(self.outbox),
                outbox_bytes=self.outbox.size_bytes,
                cameras=self.cameras,
            ),
        )

    # --- callbacks (paho's thread) --------------------------------------------------------

    def _on_connect(self, _session_present: bool) -> None:
        self.conn.publish(self.status_topic, self._status("online").encode(), retain=True)
        if self.until_central:
            # Central's ack is retained: the latest one arrives at once.
            self.conn.subscribe(self.ack_topic, qos=1)
        self._wake.set()

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = decode_ack(msg.topic, bytes(msg.payload))
        except ProtocolError as exc:
            log.warning("ignoring a bad ack: %s", exc)
            return
        if ack.epoch != self.outbox.epoch:
            return  # an earlier install's seqs, not ours
        with self._lock:
            self._central_acks.append(ack)
        self._wake.set()

    def _on_publish(self, mid: int, reason: int) -> None:
        # Only Success means delivered. "No matching subscribers" (16) means the broker took the
        # message and threw it away: after a broker restart Mosquitto 2.0 does not restore
        # shared subscriptions until central subscribes again, so keep it and retry.
        if reason == PUBACK_NO_SUBSCRIBERS:
            self.no_subscribers += 1
        with self._lock:
            entry = self._inflight.pop(mid, None)
            if entry is None:
                # The PUBACK beat our bookkeeping of the publish; settle it there.
                self._early[mid] = reason
                return
            self._settle(entry, reason)
        self._wake.set()

    def _settle(self, entry: tuple[int, int], reason: int) -> None:
        lane, seq = entry
        accepted = reason == PUBACK_SUCCESS
        if accepted:
            self._acked.append(seq)
            return
        if seq not in self._refused.values():
            log.warning("message seq=%s not delivered (PUBACK reason %s); retrying", seq, reason)
        self._refused[lane] = min(self._refused.get(lane, seq), seq)

    # --- the publishing loop ------------------------------------------------------------

    def start(self) -> None:
        if not self.until_central:
            # Awaiting central from a run with delivery `central`: the broker acknowledged
            # them, which is delivery now.
            self.outbox.ack(self.outbox.resend(float("inf")))
        self.conn.start()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Tell the loop that new messages are in the outbox."""
        self._wake.set()

    def _flush_acks(self) -> None:
        with self._lock:
            acked, self._acked = self._acked, []
            central, self._central_acks = self._central_acks, []
        if acked:
            if self.until_central:
                self.outbox.hold(acked)
                self.acknowledged += len(acked)
            else:
                self.acknowledged += self.outbox.ack(acked)
        for ack in central:
            self._apply(ack)

    def _apply(self, ack: AckMessage) -> None:
        """Delete what central's ack covers; send again the holes it shows."""
        now = time.time()
        if ack.central:
            verdict = self.outbox.adopt_central(ack.central)
            if verdict == "retired":
                return  # a replaced database's ack (a stale retained one): it no longer holds
            if verdict == "new":
                released = self.outbox.resend(float("inf"))
                log.warning(
                    "central's database changed (id %s); sending again the %d messages it has "
                    "not confirmed",
                    ack.central,
                    len(released),
                )
                self._confirmed_through = None
                self._rewind(released)
        self._heard_at = now
        through = self._confirmed_through
        hole_before = None if through is None else through - HOLE_GRACE
        gone, newest, released = self.outbox.confirm(ack.covered(), hole_before)
        self.confirmed += gone
        if newest is not None and (through is None or newest > through):
            self._confirmed_through = newest
            self._progress_at = now
        if released:
            log.warning("central's ack shows %d missing; sending them again", len(released))
        self._rewind(released)

    def _resend_stalled(self) -> None:
        """Send again what central leaves unconfirmed for resend_after while it is heard from
        and makes no progress: lost in the broker, not merely queued behind others."""
        wait = self.settings.delivery.resend_after
        now = time.time()
        if self._heard_at is None or now - self._heard_at > wait or now - self._progress_at < wait:
            return
        released = self.outbox.resend(now - wait)
        if released:
            log.warning(
                "central has not confirmed %d messages in %.0f s; sending them again",
                len(released),
                wait,
            )
            self._progress_at = now  # the next round waits as long again
        self._rewind(released)

    def _rewind(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        if not seqs:
            return
        self.resent += len(seqs)
        with self._lock:
            for lane, seq in self.outbox.lowest(seqs).items():
                self._cursor[lane] = min(self._cursor[lane], seq - 1)
        self._wake.set()

    def _run(self) -> None:
        next_heartbeat = next_resend_check = 0.0
        refused_at: float | None = None
        disk_full = False
        while not self._stop.is_set():
            try:
                self._flush_acks()
                if self.until_central and time.monotonic() >= next_resend_check:
                    self._resend_stalled()
                    next_resend_check = time.monotonic() + RESEND_CHECK_INTERVAL
            except OutboxFullError as exc:
                # Central's confirmations wait for room: nothing is deleted or sent twice.
                log.warning("%s; confirmations wait for room on the disk", exc)
                self._stop.wait(RETRY_AFTER_FULL_DISK)
                continue
            if not self.conn.connected.is_set():
                self._wake.wait(0.2)
                self._wake.clear()
                continue
            now = time.monotonic()
            if now >= next_heartbeat:
                beat = self._heartbeat()
                self.conn.publish(beat.topic, beat.encode(), qos=0)
                next_heartbeat = now + self.settings.heartbeat_seconds
            if self._refused:
                refused_at = refused_at or now
                if now - refused_at >= RETRY_AFTER_REFUSAL:
                    with self._lock:
                        for lane, seq in self._refused.items():
                            self._cursor[lane] = min(self._cursor[lane], seq - 1)
                        self._refused.clear()
                    refused_at = None
            try:
                sent = self._send(LANE_ALERT, limit=None) + self._send(
                    LANE_DATA, limit=self._limiter
                )
            except OutboxFullError as exc:
                # Nothing was taken (or sent): the same messages go once the disk has room.
                if not disk_full:
                    log.warning("%s; publishing waits for room on the disk", exc)
                disk_full = True
                self._stop.wait(RETRY_AFTER_FULL_DISK)
                continue
            if disk_full:
                log.warning("the outbox has room again; publishing resumes")
                disk_full = False
            if not sent:
                self._wake.wait(0.05 if self._inflight else 0.5)
                self._wake.clear()

    def _send(self, lane: int, limit: TokenBucket | None) -> int:
        room = self.settings.buffer.max_inflight - len(self._inflight)
        if limit is not None:
            room = min(room, limit.available())
        if room <= 0:
            return 0
        rows = self.outbox.take(lane, self._cursor[lane], min(room, 100))
        for row in rows:
            # Not under self._lock: paho calls on_publish holding its own lock (deadlock).
            mid = self.conn.publish(row.topic, row.body)
            with self._lock:
                if mid in self._early:
                    self._settle((lane, row.seq), self._early.pop(mid))
                else:
                    self._inflight[mid] = (lane, row.seq)
            self._cursor[lane] = row.seq
        if limit is not None:
            limit.spend(len(rows))
        self.published += len(rows)
        return len(rows)

    # --- lifecycle ----------------------------------------------------------------------

    def wait_drained(self, timeout: float) -> bool:
        """Block until the outbox is empty (every message confirmed by central, or by the
        broker with delivery `broker`) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._flush_acks()
            if len(self.outbox) == 0:
                return True
            time.sleep(0.05)
        return len(self.outbox) == 0

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self._flush_acks()
        self.conn.stop(final=(self.status_topic, self._status("offline").encode()))
        self._flush_acks()
