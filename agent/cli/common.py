"""Helpers of the agent's commands that need the agent's own configuration."""

from __future__ import annotations

from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.runtime import StartError, open_outbox
from pantau.agent.wire.console import fail


def open_outbox_or_exit(settings: AgentSettings) -> Outbox:
    """The outbox the agent's settings describe, or a clear error naming the file."""
    try:
        return open_outbox(settings)
    except StartError as exc:
        fail(str(exc))
