"""Reconnect backoff: delays that double from a first to a longest value, with optional jitter,
restarted when a connection has worked; for camera streams and the MQTT connection."""

from __future__ import annotations

import random


class Backoff:
    """Endless reconnect delays: `first`, then doubling up to `longest`. With `jitter`, each
    delay d is drawn from [d/2, d] instead, so a fleet that lost its broker does not reconnect
    in lockstep. `reset` starts again from `first` (a connection that worked)."""

    def __init__(
        self, first: float, longest: float, *, jitter: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.first = first
        self.longest = longest
        self._rng = (rng or random.Random()) if jitter else None
        self._delay = first

    def __iter__(self) -> Backoff:
        return self

    def __next__(self) -> float:
        delay = self._delay
        self._delay = min(self.longest, delay * 2)
        return delay if self._rng is None else self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._delay = self.first
