"""Delivery by HTTP POST (webhook and CAP forwarders): signed, TLS-verified, one connection
kept alive; 2xx confirms, 408/429/5xx and transport errors are retried, any other answer
rejects the event for good."""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Callable, Sequence

import httpx
from pantau.agent.wire.errors import PantauError
from pantau.central.config import ForwarderSettings
from pantau.central.forward.queue import Outcome, Queued
from pantau.central.forward.signing import signed_headers

RETRYABLE_STATUS = frozenset({408, 429})
ANSWER_BYTES = 500


class Rejected(PantauError):
    """The target answered with a status that will not change on retry."""

    def __init__(self, status: int, answer: str) -> None:
        super().__init__(f"{status}: {answer}")
        self.status = status
        self.answer = answer


class Retry(PantauError):
    """The target failed in a way worth retrying (down, overloaded, throttling)."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


class HttpSender:
    """POSTs rendered events to one URL. `render(items)` gives the body of one request for
    some events; `batch` events go in one request (one at a time when a batch is rejected, to
    find the event the target refuses)."""

    def __init__(
        self,
        settings: ForwarderSettings,
        render: Callable[[Sequence[Queued]], bytes],
        content_type: str,
        batch: int,
    ) -> None:
        assert settings.url is not None
        self.url = settings.url
        self.key = settings.signing_key()
        self.render = render
        self.content_type = content_type
        self.batch = batch
        verify: bool | ssl.SSLContext = settings.verify_tls
        if settings.verify_tls and settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        self.client = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            headers={"User-Agent": "pantau-central"},
        )

    def _post(self, items: Sequence[Queued]) -> None:
        body = self.render(items)
        if len(items) == 1:
            ident = items[0].event.key
        else:
            # A resent batch of the same events has the same key; receivers dedupe per event.
            ident = "batch:" + hashlib.sha256("\n".join(q.event.key for q in items).encode()
                                              ).hexdigest()  # fmt: skip
        headers = signed_headers(self.key, body, int(time.time()), ident, self.content_type)
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Retry(f"POST {self.url}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        answer = response.text[:ANSWER_BYTES]
        if status in RETRYABLE_STATUS or status >= 500:
            raise Retry(f"POST {self.url}: {status} {answer[:200]}", _retry_after(response))
        raise Rejected(status, answer)

    def send(self, items: Sequence[Queued], deadline: float) -> Outcome:
        """Send in order; stop at the first failure worth retrying, or past `deadline`."""
        out = Outcome([], [])
        for i in range(0, len(items), self.batch):
            if time.monotonic() > deadline:
                break
            chunk = items[i : i + self.batch]
            try:
                try:
                    self._post(chunk)
                    out.delivered += [q.id for q in chunk]
                except Rejected as exc:
                    if len(chunk) == 1:
                        out.rejected.append((chunk[0].id, exc.status, exc.answer))
                        continue
                    for q in chunk:
                        try:
                            self._post([q])
                            out.delivered.append(q.id)
                        except Rejected as one:
                            out.rejected.append((q.id, one.status, one.answer))
            except Retry as exc:
                out.retry, out.retry_after = str(exc), exc.after
                return out
        return out

    def close(self) -> None:
        self.client.close()
