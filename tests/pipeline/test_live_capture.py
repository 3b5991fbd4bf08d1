"""A live camera over HTTP MJPEG (what many CCTV cameras serve): frames arrive, the reader
survives the camera going away and reconnects when it is back; a dead URL is a clear error
that does not leak the camera's password."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pantau.agent.vision.capture import CaptureError, FileReader, LiveReader
from pantau.agent.wire.backoff import Backoff
from pantau.agent.wire.paths import research_data

from tests.conftest import free_port


class MjpegCamera:
    """A tiny MJPEG-over-HTTP camera serving real frames (TUD-Campus) in a loop at ~25 fps."""

    def __init__(self, port: int, frames: list[np.ndarray]) -> None:
        self.port = port
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.on = threading.Event()
        self.server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while camera.on.is_set():
                        jpg = camera.jpegs[i % len(camera.jpegs)]
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                            + str(len(jpg)).encode()
                            + b"\r\n\r\n"
                            + jpg
                            + b"\r\n"
                        )
                        i += 1
                        time.sleep(0.04)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.on.set()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.on.clear()  # ends the streams being served
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def frames() -> list[np.ndarray]:
    folder = research_data() / "tud" / "TUD-Campus" / "img1"
    if not folder.is_dir():
        pytest.skip(f"TUD-Campus frames not found under {folder} (set PANTAU_TEST_DATA)")
    return [cv2.imread(str(p)) for p in sorted(Path(folder).glob("*.jpg"))[:20]]


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def drop_and_reconnect(camera, reader: LiveReader, timeout: float, frames_after: int) -> None:
    """Stop the camera: the reader notices and hands out nothing; start it again at the same
    address (a rebooted camera): the reader reconnects and frames flow again."""
    camera.stop()
    assert wait_for(lambda: reader.last_error is not None, timeout), "the drop must be noticed"
    while reader.read() is not None:  # drain what came before the drop
        pass
    time.sleep(1.0)
    assert reader.read() is None, "no frames while the camera is away"
    before = reader.frames_read
    camera.start()
    assert wait_for(lambda: reader.frames_read > before + frames_after, timeout), "must reconnect"
    assert reader.read() is not None


def test_live_camera_drops_and_comes_back(frames):
    port = free_port()
    camera = MjpegCamera(port, frames)
    camera.start()
    reader = LiveReader(f"http://127.0.0.1:{port}/video.mjpg", backoff_min=0.2, backoff_max=1.0)
    reader.start()
    try:
        first = reader.wait_frame(15)
        assert first.image.shape == frames[0].shape
        assert reader.size == (640, 480)

        drop_and_reconnect(camera, reader, timeout=20, frames_after=5)
    finally:
        reader.close()
        camera.stop()


def test_a_file_standing_in_for_a_camera_skips_to_now_when_read_late(shared_data: Path):
    """A realtime file is a live camera's stand-in: a slow consumer gets the frame due now,
    not the backlog (frame times behind the wall clock read as an offline camera)."""
    clip = shared_data / "videos" / "TUD-Campus.mp4"  # 25 fps, 71 frames: 2.84 s
    if not clip.is_file():
        pytest.skip(f"{clip} is missing")
    reader = FileReader(clip, 5.0, realtime=True)
    try:
        first = reader.read()
        assert first is not None
        assert reader.read() is None  # the next frame is not due yet
        time.sleep(1.0)  # the consumer is busy for five periods
        late = reader.read()
        assert late is not None
        lag = time.time() - late.t
        assert 0.0 <= lag < 0.5, f"frame time {lag:.2f} s behind the wall clock"
        assert late.t - first.t > 0.8
        time.sleep(2.5)  # past the end of the file: it loops, time goes on
        looped = reader.read()
        assert looped is not None and looped.t > late.t and time.time() - looped.t < 0.5
    finally:
        reader.close()


def test_dead_camera_is_a_clear_error_without_the_password():
    port = free_port()  # nothing listens there
    reader = LiveReader(
        f"http://admin:s3cret@127.0.0.1:{port}/video.mjpg", backoff_min=0.2, backoff_max=0.5
    ).start()
    try:
        with pytest.raises(CaptureError) as err:
            reader.wait_frame(3)
        message = str(err.value)
        assert f"127.0.0.1:{port}" in message and "no frame" in message
        assert "s3cret" not in message
    finally:
        reader.close()


RTSP_PYTHON = "/usr/bin/python3"  # the system Python, where PyGObject lives


def rtsp_server_available() -> str | None:
    """None when the RTSP test server can run here, else why not."""
    import subprocess

    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import GstRtspServer"
    )
    try:
        subprocess.run([RTSP_PYTHON, "-c", probe], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return (
            "no GStreamer RTSP server (apt-get install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)"
        )
    return None


class RtspCamera:
    """tests/pipeline/rtsp_server.py in its own process: stop() kills it like a power cut."""

    def __init__(self, port: int, video: Path) -> None:
        self.port, self.video = port, video
        self.proc = None

    def start(self) -> None:
        import subprocess

        server = Path(__file__).with_name("rtsp_server.py")
        self.proc = subprocess.Popen(
            [RTSP_PYTHON, str(server), str(self.port), str(self.video)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_rtsp_camera_over_tcp_drops_and_comes_back():
    why = rtsp_server_available()
    if why:
        pytest.skip(why)
    video = research_data() / "videos" / "one-by-one-person-detection.mp4"
    if not video.is_file():
        pytest.skip(f"{video} not found (set PANTAU_TEST_DATA)")
    port = free_port()
    camera = RtspCamera(port, video)
    camera.start()
    reader = LiveReader(
        f"rtsp://viewer:s3cret@127.0.0.1:{port}/cam", backoff_min=0.2, backoff_max=1.0
    ).start()
    try:
        first = reader.wait_frame(20)
        assert first.image.shape == (432, 768, 3) and reader.size == (768, 432)
        assert wait_for(lambda: reader.frames_read >= 20, 15), "frames must keep coming"

        drop_and_reconnect(camera, reader, timeout=30, frames_after=10)
        assert "s3cret" not in reader.last_error
    finally:
        reader.close()
        camera.stop()


def test_camera_backoff_doubles_to_its_cap_and_resets():
    delays = Backoff(0.5, 3.0)  # as LiveReader's: no jitter
    assert [next(delays) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    delays.reset()
    assert next(delays) == 0.5
