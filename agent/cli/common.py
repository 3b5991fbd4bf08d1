"""Helpers of the agent's commands that need the agent's own configuration."""

from __future__ import annotations

from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.wire.console import fail


def open_outbox_or_exit(settings: AgentSettings) -> Outbox:
    """The outbox the agent's settings describe, or a clear error naming the file."""
    b = settings.buffer
    try:
        return Outbox(
            b.path,
            agent=settings.id,
            site=settings.site,
            max_bytes=int(b.max_mb * 1024 * 1024),
            max_age_seconds=b.max_age_hours * 3600,
        )
    except Exception as exc:  # sqlite3 and OS errors alike: say which file
        fail(f"cannot open outbox {b.path}: {exc}")
