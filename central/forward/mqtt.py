"""Delivery to another MQTT broker: each event re-published at QoS 1 under the forwarder's
topic prefix, confirmed by its PUBACK, with the event key as the `idempotency-key` user
property."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pantau.agent.wire.mqtt import MqttConnection
from pantau.central.config import ForwarderSettings
from pantau.central.events import Event
from pantau.central.forward.queue import Outcome, Queued, encode

# PUBACK reason codes that will not change on retry: not authorized, topic name invalid,
# payload format invalid. Others of 0x80 and above (quota exceeded, unspecified) are retried.
PERMANENT_CODES = frozenset({0x87, 0x90, 0x99})


def topic(prefix: str, event: Event) -> str:
    where = [event.site, event.agent] + ([event.camera] if event.camera is not None else [])
    return "/".join([prefix, *where, event.kind])


class MqttSender:
    def __init__(self, name: str, settings: ForwarderSettings) -> None:
        assert settings.mqtt is not None
        self.settings = settings
        self.prefix = settings.mqtt.topic_prefix
        self._acked: dict[int, int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.name = name
        self.conn = self._connect()

    def _connect(self) -> MqttConnection:
        assert self.settings.mqtt is not None
        conn = MqttConnection(
            self.settings.mqtt.resolved(),
            client_id=self.settings.mqtt.client_id or f"pantau-forward-{self.name}",
            clean_start=True,
            # Unlimited in paho: send() already keeps at most one window (`batch`) unconfirmed.
            # With a limit, paho reports a PUBACK before it frees that message's slot, so the
            # next window's first publish could be queued inside paho and overtaken by the
            # second (seen: bucket 21 before 20).
            max_inflight=0,
            on_publish=self._on_publish,
        )
        conn.start()
        return conn

    def _retry(self, out: Outcome, why: str) -> Outcome:
        """Give up on this window: a fresh connection, so that paho's queue of the unconfirmed
        publishes (which it would send again after a reconnect) cannot interleave with the
        resend that follows and break a camera's order."""
        out.retry = why
        self.conn.stop()
        self.conn = self._connect()
        return out

    def _on_publish(self, mid: int, reason: int) -> None:
        with self._changed:
            self._acked[mid] = reason
            self._changed.notify_all()

    def send(self, items: Sequence[Queued], deadline: float) -> Outcome:
        """Publish a window of events and wait for their PUBACKs; what is confirmed counts
        only up to the first event without one, so a resend keeps each camera's order."""
        out = Outcome([], [])
        if not self.conn.wait_connected(self.settings.connect_timeout):
            out.retry = f"not connected to {self.conn.where}: {self.conn.last_error or 'no answer'}"
            return out
        for start in range(0, len(items), self.settings.batch):
            if time.monotonic() > deadline:
                break
            window = items[start : start + self.settings.batch]
            with self._changed:
                self._acked.clear()  # a late PUBACK of an earlier window must not count here
            mids = []
            # Not under our lock: paho's thread takes it to report PUBACKs.
            for q in window:
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = [("idempotency-key", q.event.key)]
                props.ContentType = "application/json"
                info = self.conn.client.publish(
                    topic(self.prefix, q.event), encode(q.event), qos=1, properties=props
                )
                mids.append(info.mid)
            with self._changed:
                deadline = time.monotonic() + self.settings.timeout
                while not all(m in self._acked for m in mids):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                codes = [self._acked.pop(m, None) for m in mids]
            for q, code in zip(window, codes, strict=True):
                if code is None:
                    return self._retry(
                        out, f"no PUBACK from {self.conn.where} in {self.settings.timeout:g} s"
                    )
                if code < 0x80:
                    out.delivered.append(q.id)
                elif code in PERMANENT_CODES:
                    out.rejected.append((q.id, code, f"PUBACK reason code 0x{code:02x}"))
                else:
                    return self._retry(
                        out, f"{self.conn.where} answered PUBACK reason code 0x{code:02x}"
                    )
        return out

    def close(self) -> None:
        self.conn.stop()
