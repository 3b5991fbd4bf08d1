"""Camera decoding in supervised child processes, one per camera, so that a decoder that
crashes (a damaged stream that aborts FFmpeg), hangs or grows without bound takes down only
its own camera.

The child (`python -m pantau.agent.vision.isolated`) decodes with OpenCV through
vision.capture and writes each frame once into a ring of frame slots in shared memory; the
parent's IsolatedReader hands out views of those slots with the reader API of vision.capture,
and its supervisor thread kills a child that died, stopped delivering or outgrew its memory
limit and restarts it with backoff, keeping the reason for the camera's health.

Parent and child talk over a socket pair (multiprocessing Connection). Child to parent:
("ready", width, height, source_fps, frame_count), ("frame", slot, pts, frames_read),
("error", message), ("end",). Parent to child: ("ring", shm_name, free_slots) once after
"ready", then the number of each slot it gives back.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
from pantau.agent.vision.capture import (
    CaptureError,
    Clock,
    FileReader,
    Frame,
    LiveReader,
    Pacer,
    Prefetcher,
    _open,
    is_live,
    open_source,
)
from pantau.agent.wire.backoff import Backoff
from pantau.agent.wire.settings import redact_url

log = logging.getLogger(__name__)

SLOTS = 4  # frame slots per camera: one held by the pipeline, the rest decoded ahead
EXIT_SOURCE = 3  # the child could not open or read its source, and said why first
EXIT_RESIZED = 4  # the stream changed resolution: restart at once with a ring of the new size
POLL = 0.1  # seconds between the supervisor's checks


class DecoderError(CaptureError):
    """A decoder process that crashed, hung or outgrew its memory limit."""


@dataclass(frozen=True)
class DecoderLimits:
    """When a decoder process is killed and how soon it is restarted."""

    hang_seconds: float = 10.0  # no frame this long, while a slot was free: hung
    memory_mb: float = 1024.0  # resident memory above this: killed
    restart_min: float = 0.5  # first restart delay; doubles up to restart_max
    restart_max: float = 30.0


# ---------------------------------------------------------------------------------- child


class _Source:
    """What the child decodes: a live stream (every frame) or a file at `fps` of its
    timeline, looping when `loop`."""

    def __init__(self, source: str, fps: float, loop: bool) -> None:
        self.source = source
        self.live = is_live(source)
        if self.live:
            self.cap = _open(source)
            self.fps = self.cap.get(5) or 0.0  # cv2.CAP_PROP_FPS
            self.count = 0
            self.read = 0
        else:
            self.file = FileReader(source, fps, loop=loop)
            self.fps = self.file.source_fps
            self.count = self.file.frame_count

    def next(self) -> tuple[np.ndarray, float, int] | None:
        """The next frame, its PTS (0 for a live stream) and the frames decoded so far."""
        if self.live:
            ok, image = self.cap.read()
            if not ok:
                raise CaptureError(
                    f"stream {redact_url(self.source)} stopped delivering frames")
            self.read += 1
            return image, 0.0, self.read
        frame = self.file.read()
        return None if frame is None else (frame.image, frame.t, self.file.frames_read)


def _attach(name: str, size: int) -> mmap.mmap:
    # Not SharedMemory: in the child it would start a resource tracker of its own, which
    # unlinks the parent's ring when the child dies.
    fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def child_main(fd: int, source: str, fps: float, loop: bool) -> int:
    """Decode `source` into the parent's ring until it ends or the parent goes; the exit
    code (0, EXIT_SOURCE, EXIT_RESIZED)."""
    conn = Connection(fd)
    try:
        src = _Source(source, fps, loop)
        item = src.next()
        if item is None:
            conn.send(("end",))
            return 0
        live = src.live
        shape = item[0].shape
        conn.send(("ready", shape[1], shape[0], src.fps, src.count))
        ring = conn.recv()
        while not isinstance(ring, tuple):  # slots given back before the ring list them
            ring = conn.recv()
        _, name, free_slots = ring
        free = set(free_slots)
        buffer = _attach(name, SLOTS * int(np.prod(shape)))
        slots = np.ndarray((SLOTS, *shape), np.uint8, buffer)
        while item is not None:
            image, pts, read = item
            if image.shape != shape:
                return EXIT_RESIZED
            while conn.poll():
                free.add(conn.recv())
            if not free and not live:
                free.add(conn.recv())  # a file waits for the pipeline (backpressure)
            if free:  # a live stream's frame with no free slot is dropped, as newer ones come
                slot = free.pop()
                slots[slot] = image
                conn.send(("frame", slot, pts, read))
            item = src.next()
        conn.send(("end",))
        return 0
    except CaptureError as exc:
        conn.send(("error", str(exc)))
        return EXIT_SOURCE
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 0  # the parent is gone


# --------------------------------------------------------------------------------- parent


def _describe(returncode: int) -> dict[str, Any]:
    if returncode < 0:
        try:
            return {"signal": signal.Signals(-returncode).name}
        except ValueError:
            return {"signal": -returncode}
    return {"exit_code": returncode}


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class _Pending:
    slot: int
    t: float  # PTS on the reader's timeline (files) or wall time at arrival (live)


class IsolatedReader:
    """A camera decoded in a supervised child process; the reader API of vision.capture.

    A live stream hands out its newest frame. A file camera (`realtime`) is paced like
    capture.FileReader(realtime=True): the child decodes ahead at `fps` of the file's timeline
    and waits when the ring is full, the reader releases each frame at its time, skips to the
    frame due now when read late, and the file loops with time going on. Both restart their
    child with backoff when it crashes, hangs or outgrows its memory limit, and say so in
    `take_fault`. A frame they hand out is a view of the ring, valid until the next `read`.

    Offline (`realtime` False, a file analysed as fast as it decodes) the reader blocks for
    each frame, copies it out (a Prefetcher reads ahead of the pipeline), returns None at the
    end and raises DecoderError when the child died, CaptureError when the file cannot be
    decoded. There is no restart then. `start` starts the child; the reader comes started
    from `open_camera`.
    """

    def __init__(
        self, source: str, fps: float, *, realtime: bool = True,
        limits: DecoderLimits | None = None, clock: Clock = time, name: str | None = None,
    ) -> None:
        self.source = source
        self.name = name or redact_url(source)
        self.live = is_live(source)
        self.realtime = realtime or self.live
        self.period = 1.0 / fps
        self._decode_period = self.period  # the child decodes at the rate it was opened with
        self._offline = Pacer(clock)  # offline: which frames, never when
        self.fps = fps
        self.limits = limits or DecoderLimits()
        self.clock = clock
        self.base = 0.0
        self.size: tuple[int, int] | None = None
        self.source_fps = fps
        self.frame_count = 0
        self.frames_read = 0
        self.ended = False
        self.restarts = 0
        self.last_error: str | None = None
        self.pid: int | None = None
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._shm: SharedMemory | None = None
        self._ring: np.ndarray | None = None
        self._retired: list[SharedMemory] = []
        self._pending: collections.deque[_Pending] = collections.deque()
        self._held: int | None = None
        self._read_base = 0  # frames read by earlier children
        self._child_read = 0
        self._pts_offset = 0.0  # timeline of earlier children and loops (files)
        self._last_pts = 0.0
        self._pacer = Pacer(clock)
        self._progress = 0.0  # monotonic time of the last frame (or start of the child)
        self._eof = False
        self._failure: CaptureError | None = None
        self._down = False  # the child is down, or restarted and not delivering yet
        self._fault: dict[str, Any] | None = None  # the last fault not reported yet
        self._last_fault: dict[str, Any] | None = None

    # ----------------------------------------------------------------- the pipeline's side

    def start(self) -> IsolatedReader:
        """Start the decoder and its supervisor (once); returns the reader."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._supervise, name=f"decoder-{self.name}", daemon=True)
            self._thread.start()
        return self

    def wait_ready(self, timeout: float) -> tuple[int, int] | None:
        """The frame size once the child has decoded its first frame; None if it has not
        within `timeout` (still starting, or its decoder crashed or hung). CaptureError when
        a file is no video it can decode (that will not change with retries), DecoderError
        offline when the decoder died."""
        self._ready.wait(timeout)
        with self._cond:
            if self._failure is not None:
                raise self._failure
            fault = self._last_fault
            if (self.size is None and not self.live and fault is not None
                    and fault["reason"] == "source_error"):
                raise CaptureError(fault.get("error") or f"cannot decode {self.name}")
        return self.size

    def read(self) -> Frame | None:
        """The next frame (see the class); None when there is none yet, or at the end."""
        if not self.realtime:
            return self._read_offline()
        with self._cond:
            self._give_back_held()
            if not self._pending or self._ring is None:
                return None
            if self.live:
                item = self._pending.popleft()  # the supervisor keeps only the newest
                return self._hand_out(item, item.t)
            elapsed = self._pacer.elapsed_if_due(self.period)
            if elapsed is None:
                return None
            # Read late, skip to the newest frame that is due; never past the decoded ones
            # (dropping them all would leave the pipeline waiting for the decoder).
            while (len(self._pending) > 1
                   and self._pending[1].t <= elapsed + 0.25 * self.period):
                self._give_back(self._pending.popleft().slot)
            item = self._pending.popleft()
            self._pacer.took(item.t, self.period)
            return self._hand_out(item, self.clock.time() - elapsed + item.t)

    def _hand_out(self, item: _Pending, t: float) -> Frame:
        assert self._ring is not None
        self._held = item.slot
        return Frame(self._ring[item.slot], t)

    def set_fps(self, fps: float) -> None:
        """Hand out frames at `fps` of the source's timeline from now on (an adaptive analysis
        rate), at most at the rate the child decodes: open at the highest rate wanted."""
        self.period = max(1.0 / fps, self._decode_period)

    def _read_offline(self) -> Frame | None:
        with self._cond:
            while True:
                while not (self._pending or self._eof or self._failure or self._stop.is_set()):
                    self._cond.wait(0.5)
                if not (self._pending and self._ring is not None):
                    break
                item = self._pending.popleft()
                if item.t + 1e-6 < self._offline.due:  # between analysed frames at `period`
                    self._give_back(item.slot)
                    continue
                self._offline.took(item.t, self.period)
                image = self._ring[item.slot].copy()
                self._give_back(item.slot)
                return Frame(image, self.base + item.t)
            self.ended = True
            if self._failure is not None:
                raise self._failure
            return None

    def take_fault(self) -> tuple[bool, dict[str, Any] | None]:
        """Whether the decoder is down now, and the last fault since the previous call (its
        `reason`, exit code or signal, restarts so far), for a health message."""
        with self._cond:
            fault, self._fault = self._fault, None
            if fault is None and self._down:
                fault = self._last_fault
            return self._down, fault

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._cond:
            self._pending.clear()
            self._held = None
            self._ring = None
            for shm in [*self._retired, *([self._shm] if self._shm else [])]:
                _release(shm)
            self._retired.clear()
            self._shm = None

    # ----------------------------------------------------------------- slots

    def _give_back_held(self) -> None:
        if self._held is not None:
            self._give_back(self._held)
            self._held = None
        for shm in list(self._retired):  # rings of another size, once no view is left
            if _release(shm):
                self._retired.remove(shm)

    def _give_back(self, slot: int) -> None:
        self._send(slot)

    def _send(self, message: Any) -> None:
        conn = self._conn
        if conn is None:
            return
        # A child that is gone misses nothing: the next one gets its slots with its ring.
        with self._send_lock, contextlib.suppress(OSError):
            conn.send(message)

    def _child_owns_a_slot(self) -> bool:
        return len(self._pending) + (self._held is not None) < SLOTS

    # ----------------------------------------------------------------- the supervisor

    def _spawn(self) -> subprocess.Popen[bytes]:
        parent, child = socket.socketpair()
        with parent, child:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pantau.agent.vision.isolated", str(child.fileno()),
                 self.source, repr(self.fps), "1" if self.realtime else "0"],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
            )
            self._conn = Connection(os.dup(parent.fileno()))
        self.pid = proc.pid
        return proc

    def _supervise(self) -> None:
        delays = Backoff(self.limits.restart_min, self.limits.restart_max)
        while not self._stop.is_set():
            proc = self._spawn()
            delivered_before = self.frames_read
            fault = self._watch(proc)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            with self._cond:
                self._read_base = self.frames_read
                self._child_read = 0
                if not self.live and self.frames_read:
                    # The next child starts the file again: its time goes on from now.
                    start = self._pacer.start
                    elapsed = 0.0 if start is None else self.clock.monotonic() - start
                    self._pts_offset = max(self._last_pts + self.period, elapsed)
            if fault is None:  # stopped, the file ended, or a new resolution
                if self._stop.is_set() or self._eof:
                    return
                continue
            self.restarts += 1
            fault["decoder_restarts"] = self.restarts
            with self._cond:
                self._down = True
                self._fault = self._last_fault = fault
                if not self.realtime:
                    self._failure = self._offline_error(fault)
                    self._cond.notify_all()
            self._ready.set()
            if not self.realtime:
                return
            if self.frames_read > delivered_before:
                delays.reset()  # it worked for a while: a fresh failure, not a loop
            delay = next(delays)
            log.warning("camera %s: decoder %s; restarting in %.1fs", self.name,
                        _summary(fault), delay)
            self._stop.wait(delay)

    def _offline_error(self, fault: dict[str, Any]) -> CaptureError:
        if fault["reason"] == "source_error":
            return CaptureError(fault.get("error") or f"cannot decode {self.name}")
        return DecoderError(f"the decoder of {self.name} {_summary(fault)}")

    def _watch(self, proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
        """Serve the child until it exits or is killed; the fault, or None for a clean end."""
        conn = self._conn
        assert conn is not None
        self._progress = time.monotonic()
        next_memory_check = self._progress + 1.0
        killed: str | None = None
        while True:
            if self._stop.is_set():
                _kill(proc)
                return None
            try:
                while conn.poll(POLL):
                    self._handle(conn.recv())
                    if self._stop.is_set():
                        break
            except (EOFError, OSError):
                break  # the child closed its end: it is exiting
            now = time.monotonic()
            with self._cond:
                waiting = self._child_owns_a_slot() and not self._eof
                if not waiting:
                    self._progress = now  # the pipeline holds every slot: not a hang
            if now - self._progress > self.limits.hang_seconds:
                killed = "decoder_hung"
                break
            if now >= next_memory_check:
                next_memory_check = now + 1.0
                if _rss_mb(proc.pid) > self.limits.memory_mb:
                    killed = "decoder_memory"
                    break
            if proc.poll() is not None:
                break
        if killed is not None:
            _kill(proc)
        code = proc.wait()
        if killed == "decoder_hung":
            return {"reason": killed, "seconds": self.limits.hang_seconds, **_describe(code)}
        if killed == "decoder_memory":
            return {"reason": killed, "limit_mb": self.limits.memory_mb, **_describe(code)}
        if code == 0 or code == EXIT_RESIZED:
            return None
        if code == EXIT_SOURCE:
            return {"reason": "source_error", "error": self.last_error}
        return {"reason": "decoder_crashed", **_describe(code)}

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "frame":
            _, slot, pts, read = message
            now = time.monotonic()
            with self._cond:
                self._progress = now
                self.frames_read = self._read_base + read
                if self.live:
                    for old in self._pending:
                        self._give_back(old.slot)
                    self._pending.clear()
                    self._pending.append(_Pending(slot, self.clock.time()))
                else:
                    self._last_pts = pts + self._pts_offset
                    self._pending.append(_Pending(slot, self._last_pts))
                if self._down:
                    log.warning("camera %s: decoder back", self.name)
                    self._down = False
                self._cond.notify_all()
        elif kind == "ready":
            self._on_ready(*message[1:])
        elif kind == "error":
            self.last_error = message[1]
        elif kind == "end":
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _on_ready(self, width: int, height: int, source_fps: float, count: int) -> None:
        with self._cond:
            shape = (SLOTS, height, width, 3)
            if self._ring is None or self._ring.shape != shape:
                if self._shm is not None:
                    self._retired.append(self._shm)
                self._pending.clear()
                self._held = None  # its view stays valid: the old ring is kept until freed
                self._shm = SharedMemory(create=True, size=int(np.prod(shape)))
                self._ring = np.ndarray(shape, np.uint8, self._shm.buf)
            busy = {p.slot for p in self._pending} | {self._held}
            free = [i for i in range(SLOTS) if i not in busy]
            self.size = (width, height)
            self.source_fps = source_fps or self.fps
            self.frame_count = count
            assert self._shm is not None
            self._send(("ring", self._shm.name, free))
        self._ready.set()


def _release(shm: SharedMemory) -> bool:
    """Close and unlink a ring; False while a frame still views it."""
    try:
        shm.close()
    except BufferError:
        return False
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()
    return True


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _summary(fault: dict[str, Any]) -> str:
    what = {"decoder_crashed": "crashed", "decoder_hung": "hung",
            "decoder_memory": "outgrew its memory limit", "source_error": "failed"}
    how = ", ".join(f"{k} {v}" for k, v in fault.items()
                    if k in ("exit_code", "signal", "error"))
    return what.get(fault["reason"], fault["reason"]) + (f" ({how})" if how else "")


Reader = FileReader | LiveReader | Prefetcher | IsolatedReader


def open_camera(
    source: str, fps: float, *, limits: DecoderLimits | None, realtime: bool = True,
    name: str | None = None,
) -> Reader:
    """A live agent's (or `analyze`'s, with `realtime` False) reader for a camera's `source`:
    decoded in a supervised child process with `limits` (named `name` in logs), or in this
    process (capture's readers) when `limits` is None (isolation off). A missing file is a
    CaptureError."""
    if limits is None:
        return open_source(source, fps, realtime=realtime)
    if not is_live(source) and not os.path.isfile(source):
        raise CaptureError(f"video file not found: {source}")
    return IsolatedReader(source, fps, realtime=realtime, limits=limits, name=name).start()


if __name__ == "__main__":
    sys.exit(child_main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]),
                        sys.argv[4] == "1"))
