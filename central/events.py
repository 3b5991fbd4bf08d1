"""Central's outgoing events: one Event per change that a forwarder or a live screen may want,
written to the `events` table in the same transaction as the change itself.

Kinds and actions:
- `alerts`: `raise`, `update`, `ack`, `clear` (body: the alert object as the API shows it);
- `counts`: `bucket` (body: the stored counts payload of one camera's bucket);
- `health`: the camera's new state (`ok`, `offline`, `covered`, ...);
- `fleet`: `online` or `offline` (an agent's status).

`key` is stable: the same change recorded twice has the same key, so a receiver can use it as
an idempotency key. `jurisdiction` is the camera's, from the registry, when known.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

EVENT_KINDS: Final = ("alerts", "counts", "health", "fleet")


@dataclass(frozen=True)
class Event:
    kind: str
    action: str
    site: str
    agent: str
    camera: str | None
    at: str  # RFC 3339 UTC: when the change happened (for counts, the bucket start)
    key: str
    body: dict[str, Any] = field(default_factory=dict)
    jurisdiction: str | None = None
    id: int | None = None  # assigned by storage

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r} (one of {', '.join(EVENT_KINDS)})")

    @property
    def camera_path(self) -> str | None:
        """site/agent/camera, the name an operator uses for a camera."""
        return None if self.camera is None else f"{self.site}/{self.agent}/{self.camera}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()
