"""Builds, runs and stops a live agent: every camera of the settings through the detectors and
rules into the outbox and on to MQTT. Shared by `pantau-agent run`, the tests and a service
wrapper."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pantau.agent.allocator import limit_heap_growth
from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import REANNOUNCE_SECONDS, Outbox, OutboxFullError
from pantau.agent.delivery.publisher import Publisher
from pantau.agent.wire.errors import PantauError

if TYPE_CHECKING:
    from pantau.agent.pipeline.camera import CameraAnalytics
    from pantau.agent.pipeline.scheduler import CameraRunner, Item, Pipeline
    from pantau.agent.vision.detect.runtime import Detector
    from pantau.agent.vision.isolated import DecoderLimits

log = logging.getLogger(__name__)

# How long start-up waits for the first frame of the file cameras (to check their rules
# against it); a decoder that crashes or hangs meanwhile leaves its camera offline, not the
# agent unstarted.
FIRST_FRAME_SECONDS = 15.0
LIVE_ALERT_HISTORY = 100  # alerts a live agent keeps in memory per camera (all go out on MQTT)
# Messages held in memory while the outbox refuses writes (a full disk): 40 cameras' counts and
# health for an hour of 60 s buckets would be 4,800.
MAX_WAITING = 5000


class StartError(PantauError):
    """A live agent that cannot start as configured; the message says what to fix."""


def reference_path(settings: AgentSettings, camera: str) -> Path:
    """Where `cameras reference` keeps a camera's health reference (next to the outbox)."""
    return settings.buffer.path.parent / f"reference-{camera}.png"


def load_detectors(settings: AgentSettings, models: set[str]) -> dict[str, Detector]:
    """One detector per model name, with the agent's `detector` section."""
    from pantau.agent.pipeline import scheduler
    from pantau.agent.vision.detect.runtime import DetectorError
    from pantau.agent.vision.detect.store import StoreError

    try:
        return scheduler.load_detectors(models, settings=settings.detector)
    except (DetectorError, StoreError) as exc:
        raise StartError(f"{exc} (build it with: pantau-agent models build NAME)") from None


def decoder_limits(settings: AgentSettings) -> DecoderLimits | None:
    """The decoder processes' limits of the `decoders` section; None when isolation is off."""
    from pantau.agent.vision.isolated import DecoderLimits

    d = settings.decoders
    if not d.isolate:
        return None
    return DecoderLimits(hang_seconds=d.hang_seconds, memory_mb=d.memory_mb,
                         restart_min=d.restart_min, restart_max=d.restart_max)


def check_frame(analytics: CameraAnalytics, size: tuple[int, int] | None) -> None:
    """Refuse rules that lie outside a camera frame of `size` (width, height), when known."""
    if size is None:
        return
    errors = analytics.frame_errors(*size)
    if errors:
        raise StartError("rules outside the camera frame:\n  " + "\n  ".join(errors))


def open_outbox(settings: AgentSettings, *, reannounce: bool = False) -> Outbox:
    """The outbox the agent's settings describe; with `reannounce` (the live agent) it keeps
    the open alerts, to continue them after a restart (see Outbox.settle)."""
    b = settings.buffer
    try:
        return Outbox(
            b.path,
            agent=settings.id,
            site=settings.site,
            max_bytes=int(b.max_mb * 1024 * 1024),
            max_age_seconds=b.max_age_hours * 3600,
            reannounce_seconds=REANNOUNCE_SECONDS if reannounce else None,
        )
    except PantauError as exc:  # says which file already
        raise StartError(str(exc)) from None
    except Exception as exc:  # sqlite3 and OS errors alike: say which file
        raise StartError(f"cannot open outbox {b.path}: {exc}") from None


class OutboxSink:
    """Puts the pipeline's messages into the outbox and wakes the publisher.

    While the outbox refuses writes (a disk it cannot free), messages wait in memory and are
    retried with the next ones, at most `limit` of them: beyond that the oldest counts and
    health messages are dropped first, alerts only when nothing else is left. Each episode is
    logged when it starts, when dropping starts, and with the number dropped when it ends.
    """

    def __init__(self, outbox: Outbox, notify: Callable[[], None], limit: int = MAX_WAITING
                 ) -> None:
        self.outbox = outbox
        self.notify = notify
        self.limit = limit
        self.waiting: list[Item] = []
        self.dropped = 0  # in the current episode

    def __call__(self, items: list[Item]) -> None:
        self.waiting.extend(items)
        try:
            self.outbox.enqueue(self.waiting)
        except OutboxFullError as exc:
            if len(self.waiting) == len(items):  # say it once per episode, not every bucket
                log.warning("%s; keeping up to %d messages in memory", exc, self.limit)
            self._bound()
            return
        if self.dropped:
            log.warning("the outbox takes messages again; %d were dropped while it could not",
                        self.dropped)
        self.waiting.clear()
        self.dropped = 0
        self.notify()

    def _bound(self) -> None:
        excess = len(self.waiting) - self.limit
        if excess <= 0:
            return
        if not self.dropped:
            log.warning("%d messages wait for the outbox: dropping the oldest counts and health "
                        "from now on", len(self.waiting))
        data = [i for i, (kind, _, _) in enumerate(self.waiting) if kind != "alerts"]
        alerts = [i for i, (kind, _, _) in enumerate(self.waiting) if kind == "alerts"]
        drop = set((data + alerts)[:excess])
        self.waiting = [item for i, item in enumerate(self.waiting) if i not in drop]
        self.dropped += excess


class LiveAgent:
    """The live agent of `settings`: `start()` opens the cameras, detectors and outbox and
    starts publishing (StartError when the settings cannot run), `run_until(stop)` analyses
    until `stop` is set, and `stop()` closes everything and returns the messages still waiting
    in the outbox."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.pipeline: Pipeline | None = None
        self.publisher: Publisher | None = None
        self.outbox: Outbox | None = None
        self.sink: OutboxSink | None = None

    def start(self) -> None:
        limit_heap_growth()  # before any capture or inference thread starts
        settings = self.settings
        if not settings.cameras:
            raise StartError("the config has no cameras")
        missing = [n for n, c in settings.cameras.items() if not c.source]
        if missing:
            raise StartError(f"cameras without a source: {', '.join(missing)}")
        for warning in settings.warnings():  # a service has no terminal to print them on
            log.warning("%s", warning)
        from pantau.agent.pipeline.scheduler import Pipeline

        detectors = load_detectors(settings, {c.model or settings.model
                                              for c in settings.cameras.values()})
        runners = self._open_cameras(detectors)
        try:
            self.outbox = open_outbox(settings, reannounce=True)
        except StartError:
            for runner in runners:
                runner.reader.close()
            raise
        self.publisher = Publisher(settings, self.outbox, cameras=len(runners))
        self.sink = OutboxSink(self.outbox, self.publisher.notify)
        self.pipeline = Pipeline(runners, detectors, bucket_seconds=settings.bucket_seconds,
                                 sink=self.sink, live=True)
        self.publisher.start()

    def _open_cameras(self, detectors: dict[str, Detector]) -> list[CameraRunner]:
        # OpenCV and the pipeline are imported here, after `start` has tuned malloc.
        import cv2
        from pantau.agent.pipeline.camera import CameraAnalytics
        from pantau.agent.pipeline.scheduler import CameraRunner
        from pantau.agent.vision.capture import CaptureError, FileReader
        from pantau.agent.vision.isolated import IsolatedReader, open_camera

        settings = self.settings
        limits = decoder_limits(settings)
        runners: list[CameraRunner] = []
        try:
            for name, cam in settings.cameras.items():
                model = cam.model or settings.model
                ref_file = reference_path(settings, name)
                reference = cv2.imread(str(ref_file)) if ref_file.is_file() else None
                analytics = CameraAnalytics(name, cam, detectors[model].names,
                                            timezone_name=settings.timezone, reference=reference,
                                            alert_history=LIVE_ALERT_HISTORY)
                try:
                    # Opened at the highest rate the camera may ask for; an adaptive rate
                    # hands out fewer (see Pipeline and the readers' set_fps).
                    reader = open_camera(str(cam.source), cam.fixed_fps or cam.max_fps,
                                         limits=limits, name=name)
                    reader.set_fps(analytics.rate.fps)
                except CaptureError as exc:
                    raise StartError(f"camera {name}: {exc}") from None
                runners.append(CameraRunner(analytics, reader, model, analytics.rate.fps,
                                            cam.input_size))
                if isinstance(reader, FileReader):
                    check_frame(analytics, reader.size)
            # Isolated file cameras decode their first frames in parallel; then each is
            # checked like a FileReader above.
            deadline = time.monotonic() + FIRST_FRAME_SECONDS
            for runner in runners:
                reader = runner.reader
                if isinstance(reader, IsolatedReader) and not reader.live:
                    try:
                        size = reader.wait_ready(max(0.0, deadline - time.monotonic()))
                    except CaptureError as exc:
                        raise StartError(f"camera {runner.name}: {exc}") from None
                    check_frame(runner.analytics, size)
        except StartError:
            for runner in runners:
                runner.reader.close()
            raise
        return runners

    def run_until(self, stop: threading.Event, duration: float | None = None) -> None:
        """Analyse until `stop` is set (or `duration` seconds passed, or every file source
        ended), then close the open buckets into the outbox."""
        if self.pipeline is None:
            raise RuntimeError("LiveAgent.run_until before start")
        self.pipeline.run(stop, duration)

    def stop(self) -> int:
        """Close the cameras, stop publishing and close the outbox; the messages still in the
        outbox (sent by the next run)."""
        if self.pipeline is not None:
            self.pipeline.close()
        if self.publisher is not None:
            self.publisher.stop()
        pending = 0
        if self.outbox is not None:
            pending = len(self.outbox)
            self.outbox.close()
        if self.sink is not None and self.sink.waiting:
            log.warning("%d messages the outbox refused are lost", len(self.sink.waiting))
        return pending
