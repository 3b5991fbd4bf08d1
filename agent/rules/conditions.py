"""Alert events, and held alerts (pantau.agent.wire.held's state machine) shared by zone rules
and camera health."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pantau.agent.wire.held import HeldCondition

RAISED: Final = "raised"
CLEARED: Final = "cleared"


@dataclass(frozen=True)
class AlertEvent:
    """An alert raised or cleared. Times are float seconds in the caller's clock (the one it
    passes to `update`); the data path converts them for the wire (wire.protocol.AlertPayload).

    The raised and the cleared event of one episode share `alert_id`. `started_at` is when the
    condition began (before the hold time ran), `ended_at` (cleared only) when it ended (before
    the clear hold ran).
    """

    type: str
    state: Literal["raised", "cleared"]
    rule: str | None
    started_at: float
    ended_at: float | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    details: dict[str, Any] = field(default_factory=dict)
    alert_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class HeldAlert:
    """A HeldCondition that emits AlertEvents of one `type` for one `rule`."""

    def __init__(
        self,
        type: str,
        rule: str | None,
        on_seconds: float,
        off_seconds: float,
        severity: Literal["info", "warning", "critical"] = "warning",
    ) -> None:
        self.type = type
        self.rule = rule
        self.severity = severity
        self.condition = HeldCondition(on_seconds, off_seconds)
        self._raised: AlertEvent | None = None

    @property
    def active(self) -> bool:
        return self.condition.active

    def update(
        self, on: bool, off: bool, t: float, details: dict[str, Any] | None = None
    ) -> list[AlertEvent]:
        """Advance the condition; return the raised or cleared event if it switched."""
        switched = self.condition.update(on, off, t)
        if switched is True:
            started = self.condition.on_since if self.condition.on_since is not None else t
            self._raised = AlertEvent(
                self.type, RAISED, self.rule, started, None, self.severity, dict(details or {})
            )
            return [self._raised]
        if switched is False:
            return [self._clear(t, details)]
        return []

    def force_clear(self, t: float, details: dict[str, Any] | None = None) -> list[AlertEvent]:
        """Clear now if active (e.g. the condition no longer applies at all)."""
        if not self.condition.active:
            self.condition.reset()
            return []
        event = self._clear(t, details, ended=t)
        self.condition.reset()
        return [event]

    def _clear(
        self, t: float, details: dict[str, Any] | None, ended: float | None = None
    ) -> AlertEvent:
        raised = self._raised
        if ended is None:
            ended = self.condition.off_since if self.condition.off_since is not None else t
        self._raised = None
        return AlertEvent(
            self.type,
            CLEARED,
            self.rule,
            raised.started_at if raised else ended,
            ended,
            self.severity,
            {**(raised.details if raised else {}), **(details or {})},
            raised.alert_id if raised else uuid.uuid4().hex,
        )
