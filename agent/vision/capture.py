"""Camera readers: one per camera, OpenCV with FFmpeg. Files are read at `analysis_fps` of
their own timeline (stream PTS); live streams keep only their newest frame and reconnect."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from pantau.agent.wire.backoff import Backoff
from pantau.agent.wire.errors import PantauError
from pantau.agent.wire.settings import redact_url

log = logging.getLogger(__name__)

LIVE_PREFIXES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


class CaptureError(PantauError):
    """A source that cannot be opened or read."""


class Clock(Protocol):
    """Wall and monotonic time in seconds: the `time` module, or a test's clock that jumps."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


@dataclass
class Pacer:
    """The schedule of a file camera's analysed frames on the file's own timeline (stream
    seconds): the next frame is due at `due`. Paced (`elapsed_if_due`), frames are released no
    earlier than their stream time after the first call, on the monotonic clock."""

    clock: Clock
    due: float = 0.0
    start: float | None = None  # monotonic time of the first paced call

    def elapsed_if_due(self, period: float) -> float | None:
        """Stream seconds since the first call when a frame is due now, else None."""
        now = self.clock.monotonic()
        if self.start is None:
            self.start = now
        elapsed = now - self.start
        if elapsed < self.due:
            return None
        # A reader that fell behind takes the newest due frame, not every one it missed.
        self.due = max(self.due, elapsed - 0.5 * period)
        return elapsed

    def took(self, t: float, period: float) -> None:
        """The frame at stream time `t` was handed out: never fall behind the timeline, the
        next one is due one period after it."""
        self.due = max(self.due + period, t + 0.5 * period)


@dataclass(frozen=True)
class Frame:
    """A decoded BGR frame and its time in seconds (epoch for live sources, base + PTS for
    files)."""

    image: np.ndarray
    t: float
    prepared: Any = None  # the detector's input for this frame, when a Prefetcher made it


def is_live(source: str) -> bool:
    return source.isdigit() or source.lower().startswith(LIVE_PREFIXES)


def _open(source: str) -> cv2.VideoCapture:
    # RTSP over UDP loses packets on busy links and smears frames. OpenCV's FFmpeg backend
    # reads this at every open, so setting it here, before the first one, is enough.
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source, cv2.CAP_ANY)
    if not cap.isOpened():
        cap.release()
        raise CaptureError(f"cannot open video source {redact_url(source)}")
    return cap


class FileReader:
    """A recorded file read at `fps` frames per second of its own timeline: frames in between
    are grabbed (decoded by FFmpeg, never converted), so reading is as cheap as the codec
    allows. Each frame's time is `base` + its PTS.

    With `realtime`, the file stands in for a live camera: frames are released no earlier
    than their PTS after the first read (by the monotonic clock), the file loops with
    timestamps going on, and a reader that is read late skips to the frame due now, as a
    live camera's newest frame would be. (Frame times that fell behind the wall clock made a
    slow box's file cameras flap offline and back at every frame.) Its frame times follow the
    wall clock, jumps included, as a live camera's do. `loop` (default: as `realtime`) loops
    without the pacing, for a decoder process whose reader paces instead (vision.isolated).
    """

    def __init__(
        self, path: str | Path, fps: float, *, base: float = 0.0, realtime: bool = False,
        loop: bool | None = None, clock: Clock = time,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise CaptureError(f"video file not found: {path}")
        self.path = path
        self.cap = _open(str(path))
        ok, probe = self.cap.read()
        if not ok:
            raise CaptureError(f"cannot decode video {path} (not a video, or an unknown codec)")
        self.size = (probe.shape[1], probe.shape[0])  # width, height
        self.source_fps = self.cap.get(cv2.CAP_PROP_FPS) or fps
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self.period = 1.0 / fps
        self.base = base
        self.realtime = realtime
        self.loop = realtime if loop is None else loop
        self.clock = clock
        self.frames_read = 0
        self.ended = False
        self._pacer = Pacer(clock)
        self._offset = 0.0  # stream time added by earlier loops
        self._last_pts = 0.0

    def read(self) -> Frame | None:
        """The next frame to analyse; None at the end (then `ended`), or, with `realtime`,
        when the next one is not due yet."""
        if self.ended:
            return None
        base = self.base
        if self.realtime:
            elapsed = self._pacer.elapsed_if_due(self.period)
            if elapsed is None:
                return None
            # Stream time 0 on the wall clock as it reads now, not as it read at the start:
            # a jump of the wall clock moves the frames along, and pacing, on the monotonic
            # clock, never decodes its way through the jump.
            base = self.clock.time() - elapsed
        while True:
            if not self.cap.grab():
                if self.loop and self.frames_read:
                    self._offset = self._last_pts + self.period
                    self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self.ended = True
                return None
            self.frames_read += 1
            pts = self._offset + self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            self._last_pts = pts
            # A quarter period of tolerance keeps 10 fps footage at exactly every 2nd frame
            # for 5 fps despite rounded PTS.
            if pts < self._pacer.due - 0.25 * self.period:
                continue
            ok, image = self.cap.retrieve()
            if not ok:
                continue
            self._pacer.took(pts, self.period)
            return Frame(image, base + pts)

    def set_fps(self, fps: float) -> None:
        """Read at `fps` from the next frame on (an adaptive analysis rate)."""
        self.period = 1.0 / fps

    @property
    def frame_count(self) -> int:
        """Frames in the file, as its container says."""
        return int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))

    def close(self) -> None:
        self.cap.release()


class LiveReader:
    """A live stream read by its own thread, which keeps only the newest frame (so a slow
    consumer never builds a queue) and reconnects with exponential backoff. `start` starts
    the thread."""

    def __init__(
        self, source: str, *, backoff_min: float = 0.5, backoff_max: float = 30.0,
        clock: Clock = time,
    ) -> None:
        self.source = source
        self.clock = clock
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.frames_read = 0
        self.connected = False
        self.last_error: str | None = None
        self.ended = False  # a live source never ends by itself
        self.size: tuple[int, int] | None = None
        self._latest: Frame | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_fps(self, fps: float) -> None:
        """Nothing to do: a live stream is always read at its own rate, keeping the newest
        frame; the pipeline paces its analysis."""

    def start(self) -> LiveReader:
        """Start reading the stream (once); returns the reader."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"capture-{redact_url(self.source)}", daemon=True
            )
            self._thread.start()
        return self

    def read(self) -> Frame | None:
        """The newest frame not handed out yet, or None."""
        with self._lock:
            frame, self._latest = self._latest, None
        return frame

    def wait_frame(self, timeout: float) -> Frame:
        """Block until a frame arrives; CaptureError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.read()
            if frame is not None:
                return frame
            time.sleep(0.02)
        why = f": {self.last_error}" if self.last_error else ""
        raise CaptureError(f"no frame from {redact_url(self.source)} in {timeout:.0f}s{why}")

    def _run(self) -> None:
        delays = Backoff(self.backoff_min, self.backoff_max)
        while not self._stop.is_set():
            try:
                cap = _open(self.source)
            except CaptureError as exc:
                self.last_error = str(exc)
                delay = next(delays)
                log.warning("%s; retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
                continue
            self.connected = True
            while not self._stop.is_set():
                ok, image = cap.read()
                if not ok:
                    self.last_error = f"stream {redact_url(self.source)} stopped delivering frames"
                    break
                delays.reset()  # a delivering stream resets the backoff
                self.frames_read += 1
                self.size = (image.shape[1], image.shape[0])
                with self._lock:
                    self._latest = Frame(image, self.clock.time())
            self.connected = False
            cap.release()
            if not self._stop.is_set():
                delay = next(delays)
                log.warning("%s; reconnecting in %.1fs", self.last_error, delay)
                self._stop.wait(delay)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class FrameSource(Protocol):
    """What a Prefetcher reads ahead: a FileReader, or a file decoded in a child process."""

    ended: bool
    frames_read: int

    def read(self) -> Frame | None: ...

    def set_fps(self, fps: float) -> None: ...

    def close(self) -> None: ...


class Prefetcher:
    """Reads a file ahead in its own thread, up to `depth` frames, and runs `prepare` (the
    detector's preprocessing) there too: decoding and resizing overlap with inference, which,
    like OpenCV, releases the GIL. For offline analysis; after `start`, `read` blocks until
    the next frame."""

    def __init__(
        self, reader: FrameSource, prepare: Callable[[np.ndarray], Any] | None = None,
        depth: int = 4,
    ) -> None:
        self.reader = reader
        self.prepare = prepare
        self.ended = False
        self._queue: queue.Queue[Frame | BaseException | None] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Prefetcher:
        """Start reading ahead (once); returns the prefetcher."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
            self._thread.start()
        return self

    def set_fps(self, fps: float) -> None:
        """The wrapped reader reads at `fps` once the frames already fetched are taken."""
        self.reader.set_fps(fps)

    def __getattr__(self, name: str) -> Any:  # size, cap, path, source_fps, base...
        return getattr(self.reader, name)

    @property
    def frames_read(self) -> int:
        return self.reader.frames_read

    def _put(self, item: Frame | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.reader.read()
                if frame is None:
                    if self.reader.ended:
                        break
                    time.sleep(0.005)
                    continue
                if self.prepare is not None:
                    frame = Frame(frame.image, frame.t, self.prepare(frame.image))
                if not self._put(frame):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(None)

    def read(self) -> Frame | None:
        if self.ended:
            return None
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.ended = True
            raise item
        if item is None:
            self.ended = True
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.reader.close()


def open_source(
    source: str, fps: float, *, realtime: bool = True, base: float = 0.0
) -> FileReader | LiveReader:
    """A reader for a camera's `source`: live URLs and device indexes get a LiveReader, paths
    a FileReader (realtime and looping for the live agent, as fast as possible offline).
    A LiveReader comes started."""
    if is_live(source):
        return LiveReader(source).start()
    return FileReader(source, fps, base=base, realtime=realtime)


def grab_one(source: str, timeout: float = 15.0) -> Frame:
    """One frame of a camera's source (the first of a file), for snapshots and references."""
    reader = open_source(source, 1.0, realtime=False)
    try:
        if isinstance(reader, LiveReader):
            return reader.wait_frame(timeout)
        frame = reader.read()
        if frame is None:
            raise CaptureError(f"no frame in {source}")
        return frame
    finally:
        reader.close()


def read_image(path: Path) -> np.ndarray:
    """One image file as a BGR frame; CaptureError naming the file when it cannot be read."""
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise CaptureError(f"cannot read image {path} (missing, or not an image OpenCV reads)")
    return frame
