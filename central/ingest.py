"""Central's ingest worker: a shared MQTT v5 subscription whose messages are validated, stored
in batches, and acknowledged to the broker only after their batch is committed; then each agent
the batch touched is told, throttled, which of its seqs are stored (its retained ack topic).

The MQTT client runs in this process and validation plus storage in a child process: sharing
one GIL, the two stalled each other on every SQLite call and ingest topped out near 3,300
messages/s; apart, each has a core. The MQTT side does as little per message as it can: raw
topic and payload bytes (no paho message objects), one pipe send per batch, one write of
PUBACKs per batch.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from multiprocessing.connection import Connection

from pantau.agent.wire.mqtt import MqttConnection
from pantau.agent.wire.protocol import (
    ACK_KIND,
    MAX_PAYLOAD_BYTES,
    TOPIC_ROOT,
    AckMessage,
    ProtocolError,
    decode,
    decode_ack,
    is_evidence_topic,
    utcnow,
)
from pantau.central.config import CentralSettings
from pantau.central.storage import Received, Storage, open_storage

log = logging.getLogger(__name__)

PIPELINE_DEPTH = 2
# Faults of the machine, not of a message (with the storage's own, Storage.environmental): they
# stop ingest (nothing is acknowledged, the broker keeps the batch) instead of dead-lettering
# valid data.
ENVIRONMENTAL = (OSError, MemoryError)
DEAD_LETTER_LOG_INTERVAL = 60.0
# An agent's ack goes out at most this often (seconds) while what it says changes, and at once
# when it changes after a quiet spell.
ACK_INTERVAL = 1.0
# An unchanged ack is repeated this often while the agent is heard from: the agent takes it as
# the sign that central is alive (it resends what stays unconfirmed only then).
ACK_REFRESH = 10.0
_ACK_SUFFIX = f"/{ACK_KIND}".encode()
# Every evidence topic holds this; a data topic may too (a camera named so), then looked at closer.
_EVIDENCE_PART = b"/evidence/"
ACK_TOPICS = f"{TOPIC_ROOT}/+/+/{ACK_KIND}"

AckKey = tuple[str, str, str]  # site, agent, epoch
AckState = tuple[int, list[tuple[int, int]]]  # upto, ranges above it
Raw = tuple[bytes, bytes, int, int]  # a received message: topic, payload, packet id, QoS


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicate: int = 0
    dead: int = 0
    poison: int = 0  # messages that passed validation but could not be stored
    batches: int = 0


def validate(topic: str, payload: bytes) -> Received:
    try:
        return Received(topic, payload, message=decode(topic, payload))
    except ProtocolError as exc:
        return Received(topic, payload, error=exc.reason)


def store_isolating_poison(
    storage: Storage, items: list[Received]
) -> tuple[dict[str, int], list[Received]]:
    """Store a batch in one transaction; if that fails for a reason that is not the
    machine's, store its messages one at a time and dead-letter each that fails alone, so a
    single poison message can never block the queue.

    Returns the storage counts plus `poison`, and every dead letter with its reason.
    """
    environmental: tuple[type[BaseException], ...] = (*ENVIRONMENTAL, *storage.environmental)
    try:
        counts, dead = storage.store_batch(items)
        return {**counts, "poison": 0}, dead
    except environmental:
        raise
    except Exception:
        log.warning("a batch of %d failed to store; storing its messages one by one", len(items))
    totals: Counter[str] = Counter(poison=0)
    dead = []
    for item in items:
        try:
            counts, rejected = storage.store_batch([item])
        except environmental:
            raise
        except Exception as exc:
            item = Received(item.topic, item.payload, error=f"storage: {type(exc).__name__}: {exc}")
            counts, rejected = storage.store_batch([item])
            totals["poison"] += 1
        totals.update(counts)
        dead += rejected
    return dict(totals), dead


class DeadLetterLog:
    """Logs dead letters as one line per reason per interval with a count, so a flood of
    hostile messages cannot flood the log."""

    def __init__(self, interval: float = DEAD_LETTER_LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def add(self, topic: str, reason: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        key = reason.split(":", 1)[0][:60]
        if now - self._last.get(key, -self.interval) >= self.interval:
            more = self._held.pop(key, 0)
            extra = f" (and {more} more since the last line)" if more else ""
            log.warning("dead letter on %r: %s%s", topic, reason, extra)
            self._last[key] = now
        else:
            self._held[key] += 1


class AckThrottle:
    """Which agents' acks to publish now: a changed one at most every ACK_INTERVAL (the first
    change after a quiet spell at once, the last one of a burst when the interval is over), an
    unchanged one again after ACK_REFRESH if the agent was heard from meanwhile."""

    def __init__(self) -> None:
        self._pending: dict[AckKey, AckState] = {}
        self._sent: dict[AckKey, tuple[AckState, float]] = {}

    def update(self, key: AckKey, state: AckState) -> None:
        self._pending[key] = state

    def due(self, now: float) -> list[tuple[AckKey, AckState]]:
        out = []
        for key, state in list(self._pending.items()):
            last = self._sent.get(key)
            if (
                last is None
                or (state != last[0] and now - last[1] >= ACK_INTERVAL)
                or now - last[1] >= ACK_REFRESH
            ):
                out.append((key, state))
                self._sent[key] = (state, now)
                del self._pending[key]
        return out


def _store_batches(settings: CentralSettings, pipe: Connection) -> None:
    """The child process: validate and store each batch sent down the pipe, reply with counts.

    A reply of ("ok", counts, dead letters, acks) means the batch is committed; `acks` holds
    what is now stored of each agent epoch the batch touched. Anything else means nothing of
    it was committed.
    """
    storage = open_storage(settings.storage, settings)
    storage.defer_gaps()
    pipe.send(("ready", storage.database_id()))
    while True:
        # Idle, holes are still swept: an agent that went silent after one leaves a gap.
        if settings.gap_grace and not pipe.poll(settings.gap_grace):
            _sweep_gaps(storage)
            continue
        if (batch := pipe.recv()) is None:
            break
        # Invalid UTF-8 becomes U+FFFD, which no topic segment may hold: dead-lettered with why.
        items = [validate(topic.decode("utf-8", "replace"), payload) for topic, payload in batch]
        try:
            counts, dead = store_isolating_poison(storage, items)
            touched = {(m.site, m.agent, m.epoch) for i in items if (m := i.message) is not None}
            acks = [(key, storage.acknowledgement(*key)) for key in sorted(touched)]
        except Exception as exc:
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        pipe.send(("ok", counts, [(i.topic[:200], i.error) for i in dead], acks))
        _sweep_gaps(storage)
    storage.close()


def _sweep_gaps(storage: Storage) -> None:
    # Nothing waits on it: a failure is only logged (a broken database stops the next batch).
    try:
        storage.sweep_gaps()
    except Exception:
        log.exception("recording the seq gaps that lasted failed; trying again later")


class Ingest:
    """Receives `$share/{group}/pantau/v1/#` into the configured storage until stopped."""

    def __init__(self, settings: CentralSettings) -> None:
        self.settings = settings
        self.stats = IngestStats()
        self.subscription = f"$share/{settings.group}/{TOPIC_ROOT}/#"
        self._inbox: deque[Raw] = deque()
        self._arrived = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: multiprocessing.process.BaseProcess | None = None
        self._dead_log = DeadLetterLog()
        self._acks = AckThrottle()
        # Agents whose retained ack came from another database (paho's thread appends).
        self._stale: deque[AckKey] = deque()
        self.database_id = ""  # this database's id, from the storage process at start
        self.conn = MqttConnection(
            settings.broker,
            client_id=f"pantau-central-{settings.group}-{settings.worker}",
            clean_start=False,
            manual_ack=True,
            on_connect=self._on_connect,
            on_raw=self._receive,
            # The broker may send this many unacknowledged messages: batches can be that large.
            receive_maximum=settings.receive_maximum,
            # Room for the largest valid payload plus its topic and properties.
            max_packet_size=MAX_PAYLOAD_BYTES + 16 * 1024,
        )

    def _on_connect(self, session_present: bool) -> None:
        # Subscribing again on a resumed session is harmless and heals a lost one.
        self.conn.subscribe(self.subscription, qos=1)
        # Not shared, so that the retained acks come too (a shared subscription gets none):
        # one left by another database must not stand (see _receive).
        # QoS 0: nothing queues for a worker that is away.
        self.conn.subscribe(ACK_TOPICS, qos=0)

    def start(self) -> None:
        """Start the storage process (before any thread, so nothing is forked mid-lock), then
        the MQTT connection."""
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._worker = ctx.Process(target=_store_batches, args=(self.settings, child), daemon=True)
        self._worker.start()
        child.close()
        reply = self._pipe.recv() if self._pipe.poll(60) else ("error", "no answer")
        if reply[0] != "ready":
            raise RuntimeError(f"storage process did not start: {reply[-1]}")
        self.database_id = reply[1]
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()
        self.conn.start()

    def _receive(self, topic: bytes, payload: bytes, mid: int, qos: int, retain: bool) -> None:
        # paho's thread: append and wake the worker; no lock handoff per message.
        if topic.endswith(_ACK_SUFFIX) or (
            _EVIDENCE_PART in topic and is_evidence_topic(topic.decode("utf-8", "replace"))
        ):
            # Our own acks to agents match the subscription too (a shared subscription cannot
            # ask for No Local), and so do evidence requests and answers: they are not data.
            if qos > 0:
                self.conn.ack(mid, qos)
            if retain:
                self._stale_ack(topic.decode("utf-8", "replace"), payload)
            return
        self._inbox.append((topic, payload, mid, qos))
        if not self._arrived.is_set():
            self._arrived.set()

    def _stale_ack(self, topic: str, payload: bytes) -> None:
        """A retained ack from another database (replaced, or restored under a new id) would
        tell a reconnecting agent to delete what this one never stored: replace it with one
        that claims nothing, from this database. The agent then sends again what it holds
        unconfirmed, and this database's own acks follow as those arrive."""
        try:
            ack = decode_ack(topic, payload)
        except ProtocolError:
            return  # an empty payload (a cleared ack) or garbage: nothing an agent applies
        if ack.central != self.database_id:
            log.warning(
                "the retained ack of %s/%s is from another central database (%r): replacing it",
                ack.site, ack.agent, ack.central,
            )  # fmt: skip
            self._stale.append((ack.site, ack.agent, ack.epoch))

    def _next_batch(self, wait: float) -> list[Raw]:
        if not self._arrived.wait(wait):
            return []
        if len(self._inbox) < self.settings.batch_size // 4:
            # A trickle: let it gather into one transaction instead of one commit per message.
            # Under load the inbox refills while a batch is stored, so no waiting is needed.
            time.sleep(self.settings.batch_wait_ms / 1000)
        self._arrived.clear()
        take = min(len(self._inbox), self.settings.batch_size)
        batch = [self._inbox.popleft() for _ in range(take)]
        if self._inbox:
            self._arrived.set()
        return batch

    def _run(self) -> None:
        # Two batches in flight: the next one crosses the pipe while the child stores this one.
        outstanding: deque[list[Raw]] = deque()
        while not self._stop.is_set() or self._inbox or outstanding:
            if len(outstanding) < PIPELINE_DEPTH:
                batch = self._next_batch(wait=0.005 if outstanding else 0.2)
                if batch:
                    if not self._send([(topic, payload) for topic, payload, _, _ in batch]):
                        return self._fail(f"storage process is gone ({len(batch)} unstored)")
                    outstanding.append(batch)
                    continue
            if outstanding and self._pipe.poll(0.05):
                self._settle(outstanding.popleft())
            self._publish_acks()
        return None

    def _publish_acks(self) -> None:
        while self._stale:
            self._acks.update(self._stale.popleft(), (-1, []))
        for (site, agent, epoch), (upto, ranges) in self._acks.due(time.monotonic()):
            ack = AckMessage(
                site=site, agent=agent, epoch=epoch, upto=upto, ranges=ranges,
                created_at=utcnow(), central=self.database_id,
            )  # fmt: skip
            # Retained: an agent that (re)connects learns at once where central stands.
            self.conn.publish(ack.topic, ack.encode(), qos=1, retain=True)

    def _send(self, batch: list[tuple[bytes, bytes]]) -> bool:
        try:
            self._pipe.send(batch)
        except OSError:
            return False
        return True

    def _settle(self, batch: list[Raw]) -> None:
        """Take the child's reply for the oldest batch: acknowledge it only if committed."""
        try:
            reply = self._pipe.recv()
        except (EOFError, OSError) as exc:
            reply = ("error", f"storage process is gone: {exc!r}")
        if reply[0] != "ok":
            self._fail(f"storing a batch of {len(batch)} failed: {reply[-1]}")
            return
        _, result, dead, acks = reply
        for topic, reason in dead:
            self._dead_log.add(topic, reason)
        self.conn.ack_many([mid for _, _, mid, qos in batch if qos == 1])
        for key, state in acks:
            self._acks.update(key, state)
        s = self.stats
        s.received += len(batch)
        s.stored += result["stored"]
        s.duplicate += result["duplicate"]
        s.dead += result["dead"]
        s.poison += result["poison"]
        s.batches += 1

    def _fail(self, reason: str) -> None:
        # Nothing unstored is acknowledged: the broker redelivers it after we reconnect. Stop
        # rather than spin on a broken database.
        log.error("%s; stopping ingest", reason)
        self._stop.set()
        self._inbox.clear()
        self.conn.stop()

    @property
    def failed(self) -> bool:
        return self._stop.is_set() and self._thread is not None and not self._thread.is_alive()

    def stop(self) -> None:
        """Stop receiving, store what was received, then disconnect."""
        self.conn.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._worker is not None and self._worker.is_alive():
            with contextlib.suppress(OSError):
                self._pipe.send(None)
            self._worker.join(10)
