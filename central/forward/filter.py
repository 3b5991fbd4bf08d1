"""Which events a forwarder sends: a Scope (the cameras it may see, as API tokens define it)
plus kinds, alert types and a minimum severity."""

from __future__ import annotations

from dataclasses import dataclass

from pantau.central.config import SEVERITIES, ForwarderSettings
from pantau.central.events import Event
from pantau.central.scope import Scope


@dataclass(frozen=True)
class EventFilter:
    scope: Scope
    kinds: frozenset[str] | None = None
    alert_types: frozenset[str] | None = None
    min_severity: str = "info"

    @classmethod
    def of(cls, settings: ForwarderSettings) -> EventFilter:
        f = settings.filter
        kinds = ["alerts"] if settings.type == "cap" else f.kinds
        return cls(
            Scope.of(f.sites, f.jurisdictions, f.cameras),
            frozenset(kinds) if kinds else None,
            frozenset(f.alert_types) if f.alert_types else None,
            f.min_severity,
        )

    def matches(self, event: Event) -> bool:
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        if not self.scope.covers(event.site, event.agent, event.camera, event.jurisdiction):
            return False
        if event.kind != "alerts":
            return True
        if self.alert_types is not None and event.body.get("type") not in self.alert_types:
            return False
        severity = event.body.get("severity", "warning")
        # An unknown severity is let through: better one alert too many than one missed.
        return severity not in SEVERITIES or SEVERITIES.index(severity) >= SEVERITIES.index(
            self.min_severity
        )
