"""A real HTTP(S) receiver for forwarder tests: http.server on a free port in a thread, recording
every request, answering 200 or, on demand, another status (for one event key, or for the next
requests), and able to stop and start again on the same port."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import free_port, wait_port


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    def events(self) -> list[dict[str, Any]]:
        """The JSON events of a webhook request (one object, or an array)."""
        data = json.loads(self.body)
        return data if isinstance(data, list) else [data]


class Receiver:
    def __init__(self, delay: float = 0.0, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: (certificate, key) to answer HTTPS with."""
        self.port = free_port()
        self.tls = tls
        self.url = f"http{'s' if tls else ''}://127.0.0.1:{self.port}/hook"
        self.requests: list[Request] = []
        self.next_statuses: deque[int] = deque()  # answered to the next requests, in turn
        self.status_for: Callable[[bytes], int | None] = lambda body: None
        self.delay = delay
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    def _answer(self, body: bytes) -> int:
        with self._lock:
            if self.next_statuses:
                return self.next_statuses.popleft()
        return self.status_for(body) or 200

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as forwarders use it

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._connections.add(self.connection)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.delay:
                    threading.Event().wait(receiver.delay)
                status = receiver._answer(body)
                answer = b"ok" if status < 300 else f"refused with {status}: bad event".encode()
                with receiver._lock:
                    receiver.requests.append(
                        Request(self.path, dict(self.headers.items()), body, status)
                    )
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        wait_port(self.port, up=True)

    def stop(self) -> None:
        """Stop listening and cut the open connections: the target is down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def accepted(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def accepted_events(self) -> list[dict[str, Any]]:
        return [e for r in self.accepted() for e in r.events()]
