"""A real RTSP server for the capture tests: GStreamer's gst-rtsp-server streaming an H.264 MP4
file as it is (no re-encoding), in real time, at rtsp://127.0.0.1:PORT/cam, over TCP only
(interleaved RTP, as the agent asks for: UDP is lost too easily on site links).

It runs under a Python that has PyGObject and the GStreamer RTSP bindings (Debian:
python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good and -bad), which is the
system Python, not the project's venv:

    /usr/bin/python3 tests/pipeline/rtsp_server.py PORT FILE

It prints "ready" once it listens, and serves until killed.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main() -> None:
    port, path = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( filesrc location={path} ! qtdemux ! h264parse "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)  # one stream for every client, as a camera does
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)  # the agent must ask for TCP
    server.get_mount_points().add_factory("/cam", factory)
    if not server.attach(None):
        sys.exit(f"cannot listen on port {port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
