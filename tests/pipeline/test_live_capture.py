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

from agent.capture import CaptureError, LiveReader
from tests.conftest import data_dir, free_port


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
    folder = data_dir() / "tud" / "TUD-Campus" / "img1"
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


def test_live_camera_drops_and_comes_back(frames):
    port = free_port()
    camera = MjpegCamera(port, frames)
    camera.start()
    reader = LiveReader(f"http://127.0.0.1:{port}/video.mjpg", backoff_min=0.2, backoff_max=1.0)
    try:
        first = reader.wait_frame(15)
        assert first.image.shape == frames[0].shape
        assert reader.size == (640, 480)

        camera.stop()
        assert wait_for(lambda: reader.last_error is not None, 15), "the drop must be noticed"
        while reader.read() is not None:  # drain what came before the drop
            pass
        time.sleep(1.0)
        assert reader.read() is None, "no frames while the camera is away"

        before = reader.frames_read
        camera.start()  # same address, as a rebooted camera
        assert wait_for(lambda: reader.frames_read > before + 5, 20), "must reconnect"
        assert reader.read() is not None
    finally:
        reader.close()
        camera.stop()


def test_dead_camera_is_a_clear_error_without_the_password():
    port = free_port()  # nothing listens there
    reader = LiveReader(
        f"http://admin:s3cret@127.0.0.1:{port}/video.mjpg", backoff_min=0.2, backoff_max=0.5
    )
    try:
        with pytest.raises(CaptureError) as err:
            reader.wait_frame(3)
        message = str(err.value)
        assert f"127.0.0.1:{port}" in message and "no frame" in message
        assert "s3cret" not in message
    finally:
        reader.close()
