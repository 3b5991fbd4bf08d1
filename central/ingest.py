"""Central's ingest worker: a shared MQTT v5 subscription whose messages are validated, stored
in batches, and acknowledged to the broker only after their batch is committed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from agent.mqtt import MqttConnection
from agent.protocol import TOPIC_ROOT, ProtocolError, decode
from central.config import CentralSettings
from central.storage import Received, Storage

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicate: int = 0
    dead: int = 0
    batches: int = 0


def validate(topic: str, payload: bytes) -> Received:
    try:
        return Received(topic, payload, message=decode(topic, payload))
    except ProtocolError as exc:
        return Received(topic, payload, error=exc.reason)


class Ingest:
    """Receives `$share/{group}/pantau/v1/#` into a Storage until stopped."""

    def __init__(self, settings: CentralSettings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.stats = IngestStats()
        self.subscription = f"$share/{settings.group}/{TOPIC_ROOT}/#"
        self._queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.conn = MqttConnection(
            settings.broker,
            client_id=f"pantau-central-{settings.group}-{settings.worker}",
            clean_start=False,
            manual_ack=True,
            on_connect=self._on_connect,
            on_message=self._queue.put,
            # The broker may send this many unacknowledged messages: batches can be that large.
            receive_maximum=settings.receive_maximum,
        )

    def _on_connect(self, session_present: bool) -> None:
        # Subscribing again on a resumed session is harmless and heals a lost one.
        self.conn.subscribe(self.subscription, qos=1)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()
        self.conn.start()

    def _next_batch(self) -> list[mqtt.MQTTMessage]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
        while len(batch) < self.settings.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=max(0.0, remaining))
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            batch = self._next_batch()
            if not batch:
                continue
            items = [validate(m.topic, m.payload) for m in batch]
            for item in items:
                if item.error:
                    log.warning("dead letter on %r: %s", item.topic[:200], item.error)
            try:
                result = self.storage.store(items)
            except Exception:
                # Nothing was committed and nothing is acknowledged: the broker redelivers
                # these after we reconnect. Stop rather than spin on a broken database.
                log.exception("storing a batch of %d failed; stopping ingest", len(batch))
                self._stop.set()
                self.conn.stop()
                return
            for m in batch:
                if m.qos > 0:
                    self.conn.ack(m.mid, m.qos)
            s = self.stats
            s.received += len(batch)
            s.stored += result["stored"]
            s.duplicate += result["duplicate"]
            s.dead += result["dead"]
            s.batches += 1

    @property
    def failed(self) -> bool:
        return self._stop.is_set() and self._thread is not None and not self._thread.is_alive()

    def stop(self) -> None:
        """Stop receiving, store what was received, then disconnect."""
        self.conn.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
