"""The delivery loops: one thread per forwarder, each with its own storage connection, sending
its queue oldest first while it holds the forwarder's lease.

Order: a forwarder's queue is sent in the order it was filled (so each camera's events arrive
in order). A failure worth retrying (target down, 5xx, 408, 429, timeout) is taken as the
target's, not one event's: the whole forwarder waits (exponential backoff with jitter) and
sends again from the oldest unconfirmed event, as sending other cameras' events to a sick
target would only add to its load. A permanent rejection concerns one event: it is
dead-lettered with the answer and the queue moves on. Forwarders never wait on each other.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

from pantau.agent.wire.backoff import Backoff
from pantau.agent.wire.console import setup_logging
from pantau.central.config import CentralSettings, ForwarderSettings
from pantau.central.forward import cap, queue
from pantau.central.forward.queue import Outcome, Queued
from pantau.central.forward.webhook import HttpSender
from pantau.central.storage import Storage, open_storage
from pantau.central.storage.base import _iso

log = logging.getLogger(__name__)

# Events read from the queue per round (at least the forwarder's batch).
ROUND = 200
# Dead letters past retention (dead_letters.max_days) are dropped this often (seconds).
PRUNE_INTERVAL = 3600.0


class Sender(Protocol):
    def send(self, items: Sequence[Queued], deadline: float) -> Outcome:
        """Send `items` in order, stopping at the first failure worth retrying or once
        time.monotonic() passes `deadline` (the rest stays queued)."""
        ...

    def close(self) -> None: ...


def _one(items: Sequence[Queued]) -> bytes:
    return queue.encode(items[0].event)


def _array(items: Sequence[Queued]) -> bytes:
    return b"[" + b",".join(queue.encode(q.event) for q in items) + b"]"


def make_sender(
    name: str, settings: ForwarderSettings, central: CentralSettings, storage: Storage
) -> Sender:
    """The sender of a forwarder's type."""
    if settings.type == "mqtt":
        from pantau.central.forward.mqtt import MqttSender

        return MqttSender(name, settings)
    if settings.type == "webhook":
        # Always an array in batch mode, even of one event, so receivers parse one shape.
        render = _array if settings.batch > 1 else _one
        return HttpSender(settings, render, "application/json", settings.batch)

    def render_cap(items: Sequence[Queued]) -> bytes:
        e = items[0].event
        place = None
        if e.camera is not None:
            found = storage.fetch(
                "SELECT lat, lon, address, description FROM cameras WHERE site = ? AND "
                "agent = ? AND camera = ?",
                (e.site, e.agent, e.camera),
            )
            place = cap.Place(*found[0]) if found else None
        return cap.render(e, place, settings.cap, central.zone(e.site))

    return HttpSender(settings, render_cap, cap.CONTENT_TYPE, 1)


def setup_problems(settings: CentralSettings) -> list[str]:
    """What keeps an enabled forwarder from sending: a signing key or password that cannot be
    read now (events are still queued, and go once it is fixed)."""
    problems = []
    for name, f in settings.forwarders.items():
        try:
            if f.enabled and f.type in ("webhook", "cap"):
                f.signing_key()
            elif f.enabled and f.mqtt is not None:
                f.mqtt.resolved()
        except (OSError, ValueError) as exc:
            problems.append(f"forwarders.{name}: {exc}")
    return problems


class Forwarder:
    """Delivers one forwarder's queue until stopped."""

    def __init__(self, name: str, settings: ForwarderSettings, central: CentralSettings) -> None:
        self.name = name
        self.settings = settings
        self.central = central
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.delivered = 0
        self._held_until = 0.0  # epoch: when this process's lease runs out

    def _hold(self, storage: Storage) -> bool:
        """Whether this process holds the lease, renewing it once a third of it is used (not
        on every round: each renewal is a write transaction beside ingest's)."""
        now, lease = time.time(), self.settings.lease_seconds
        if now < self._held_until - lease * 2 / 3:
            return True
        if queue.acquire(storage, self.name, self.owner, lease, now):
            self._held_until = now + lease
            return True
        self._held_until = 0.0
        return False

    def run(self, stop: threading.Event) -> None:
        storage = open_storage(self.central.storage, self.central)
        sender: Sender | None = None
        delays = Backoff(self.settings.backoff.initial, self.settings.backoff.max, jitter=True)
        lease = self.settings.lease_seconds
        self._held_until = 0.0
        pruned = 0.0
        try:
            while not stop.is_set():
                if not self._hold(storage):
                    stop.wait(min(lease / 3, 5.0))
                    continue
                if time.monotonic() - pruned > PRUNE_INTERVAL:
                    keep = self.central.dead_letters.max_days * 86400
                    queue.prune_dead(storage, self.name, _iso(time.time() - keep))
                    pruned = time.monotonic()
                items = queue.oldest(storage, self.name, max(ROUND, self.settings.batch))
                if not items:
                    stop.wait(self.settings.poll_interval)
                    continue
                # A round ends well within the lease, so no other process takes over mid-round.
                deadline = time.monotonic() + lease / 3
                try:
                    if sender is None:
                        sender = make_sender(self.name, self.settings, self.central, storage)
                    outcome = sender.send(items, deadline)
                except (OSError, ValueError) as exc:  # a key file or CA that cannot be read
                    outcome = Outcome([], [], f"cannot send: {exc}")
                wait = 0.0
                if outcome.retry is not None:
                    wait = max(next(delays), min(outcome.retry_after or 0.0,
                                                 self.settings.backoff.max))  # fmt: skip
                    log.warning("forwarder %s: %s; retrying in %.1f s", self.name,
                                outcome.retry, wait)  # fmt: skip
                elif outcome.delivered:
                    delays.reset()
                for ident, status, answer in outcome.rejected:
                    log.warning("forwarder %s: event %d rejected for good (%s): %s", self.name,
                                ident, status, answer[:200])  # fmt: skip
                now = time.time()
                queue.settle(storage, self.name, items, outcome, _iso(now),
                             _iso(now + wait) if wait else None)  # fmt: skip
                self.delivered += len(outcome.delivered)
                # Keep the lease while waiting: the target is down, not this process.
                end = time.monotonic() + wait
                while not stop.is_set() and time.monotonic() < end:
                    self._hold(storage)
                    stop.wait(min(lease / 3, end - time.monotonic()))
        finally:
            if sender is not None:
                sender.close()
            try:
                queue.release(storage, self.name, self.owner)
            finally:
                storage.close()


class Forwarding:
    """Every enabled forwarder of a configuration, each in its own thread."""

    def __init__(self, settings: CentralSettings) -> None:
        self.settings = settings
        self.forwarders = [
            Forwarder(name, s, settings) for name, s in settings.forwarders.items() if s.enabled
        ]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for f in self.forwarders:
            t = threading.Thread(target=self._guard, args=(f,), name=f"forward-{f.name}",
                                 daemon=True)  # fmt: skip
            t.start()
            self._threads.append(t)

    def _guard(self, forwarder: Forwarder) -> None:
        """Run a forwarder; after a storage error, open storage again a little later."""
        while not self._stop.is_set():
            try:
                forwarder.run(self._stop)
            except Exception:
                log.exception("forwarder %s failed; starting it again in 5 s", forwarder.name)
                self._stop.wait(5.0)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)


class _Waitable(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...


def run_forwarding(settings: CentralSettings, stop: _Waitable) -> None:
    """Deliver until `stop` is set: `pantau-central forward`, and the child process that
    `pantau-central run` starts beside ingest (its own process, so delivery never takes
    ingest's CPU or GIL)."""
    forwarding = Forwarding(settings)
    forwarding.start()
    stop.wait()
    forwarding.stop()


def forward_process(settings: CentralSettings, stop: _Waitable, verbose: bool) -> None:
    """The child process of `pantau-central run`: the parent handles signals and sets `stop`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(verbose)
    run_forwarding(settings, stop)


class ForwardProcess:
    """Forwarding in a child process beside ingest, for `pantau-central run`."""

    def __init__(self, settings: CentralSettings) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
        self._process = ctx.Process(
            target=forward_process, args=(settings, self._stop, verbose), name="forward",
            daemon=True,
        )  # fmt: skip

    def start(self) -> None:
        self._process.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
