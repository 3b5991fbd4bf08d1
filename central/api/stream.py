"""The live stream: server-sent events from central's event log (alerts raised, updated,
acknowledged and cleared; each camera's buckets as they are stored), only those in the
caller's scope, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pantau.central.events import Event
from pantau.central.scope import Scope
from pantau.central.storage import Storage
from starlette.concurrency import run_in_threadpool

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
BATCH = 500
RETRY_MS = 3000  # how soon a browser's EventSource reconnects


def frame(event: Event) -> str:
    """One event as an SSE frame: its log id (for Last-Event-ID), its kind, its JSON."""
    data = json.dumps(event.to_json(), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n"


def _after(storage: Callable[[], Storage], after: int, kinds: list[str]) -> list[Event]:
    # In the worker thread: `storage()` is that thread's own connection.
    return storage().events_after(after, BATCH, kinds)


async def events(
    storage: Callable[[], Storage],
    scope: Scope,
    kinds: list[str],
    after: int,
    disconnected: Callable[[], Awaitable[bool]],
    poll: float = POLL_SECONDS,
) -> AsyncIterator[str]:
    """SSE frames of the events in `scope` logged after id `after`, until the client goes
    away. Out-of-scope events advance the cursor and are never sent."""
    yield f"retry: {RETRY_MS}\n\n"
    quiet_since = time.monotonic()
    while not await disconnected():
        batch = await run_in_threadpool(_after, storage, after, kinds)
        for event in batch:
            after = event.id or after
            if scope.covers(event.site, event.agent, event.camera, event.jurisdiction):
                yield frame(event)
                quiet_since = time.monotonic()
        if len(batch) < BATCH:
            if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(poll)
