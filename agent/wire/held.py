"""A condition with hold and clear times: the state machine behind the agent's zone and health
alerts and central's count rules (one condition, one alert with a start and an end)."""

from __future__ import annotations


class HeldCondition:
    """A boolean that turns on once `on` has held for `on_seconds` and off once `off` has held
    for `off_seconds`.

    `update(on, off, t)` returns True when it turned on at this call, False when it turned
    off, None otherwise. While active, `on` is ignored; while inactive, `off` is ignored.
    `on_since` is when the on-condition began (for an alert's started_at), `off_since` when
    the off-condition began (for ended_at). Giving `off = not on` with a smaller threshold
    than `on` is how hysteresis is expressed.
    """

    def __init__(self, on_seconds: float, off_seconds: float) -> None:
        self.on_seconds = on_seconds
        self.off_seconds = off_seconds
        self.active = False
        self.on_since: float | None = None
        self.off_since: float | None = None

    def update(self, on: bool, off: bool, t: float) -> bool | None:
        if not self.active:
            if not on:
                self.on_since = None
                return None
            if self.on_since is None:
                self.on_since = t
            if t - self.on_since >= self.on_seconds:
                self.active = True
                self.off_since = None
                return True
            return None
        if not off:
            self.off_since = None
            return None
        if self.off_since is None:
            self.off_since = t
        if t - self.off_since >= self.off_seconds:
            self.active = False
            return False
        return None

    def reset(self) -> None:
        self.active = False
        self.on_since = None
        self.off_since = None
