"""Polygon zone monitor: occupancy and dwell per class per bucket, and the zone alert rules
(crowd, loitering, intrusion in a daily restricted window)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from pantau.agent.config.rules import ZoneConfig, class_ids, to_pixels
from pantau.agent.rules.conditions import CLEARED, RAISED, AlertEvent, HeldAlert
from pantau.agent.rules.schedule import DailyWindow
from pantau.agent.vision.detections import Tracks
from pantau.agent.vision.geometry import Point, Polygon, Position


@dataclass
class Presence:
    """A track inside the zone: when it entered and when it was last seen inside."""

    class_id: int
    entered: float
    last_inside: float


@dataclass(frozen=True)
class ZoneFrame:
    """What a zone saw at one analysed frame, as handed to the alert rules."""

    t: float
    wall: datetime | float
    count: int
    inside: dict[int, Presence]
    left: dict[int, Presence]


@dataclass(frozen=True)
class ZoneClassStats:
    """One class in one bucket: time-weighted mean and max occupancy; dwell of the tracks that
    left during the bucket (seconds from entering to last seen inside)."""

    occupancy_mean: float = 0.0
    occupancy_max: int = 0
    dwell_count: int = 0
    dwell_mean: float = 0.0
    dwell_p90: float = 0.0
    dwell_max: float = 0.0


@dataclass(frozen=True)
class ZoneBucket:
    """Stats of a closed bucket. `observed_seconds` is the time the means are weighted over."""

    start: float
    end: float
    observed_seconds: float
    by_class: dict[int, ZoneClassStats] = field(default_factory=dict)


class ZoneRule(Protocol):
    def update(self, frame: ZoneFrame) -> list[AlertEvent]: ...


class CrowdRule:
    """'crowd' alert: more than `max_occupancy` objects inside for `hold_seconds`; clears once
    there have been at most `max_occupancy - hysteresis` for `clear_seconds`."""

    def __init__(
        self,
        max_occupancy: int,
        *,
        hold_seconds: float = 10.0,
        clear_seconds: float = 10.0,
        hysteresis: int = 1,
        rule: str | None = None,
    ) -> None:
        self.max_occupancy = max_occupancy
        self.hysteresis = hysteresis
        self._alert = HeldAlert("crowd", rule, hold_seconds, clear_seconds)

    def update(self, frame: ZoneFrame) -> list[AlertEvent]:
        return self._alert.update(
            frame.count > self.max_occupancy,
            frame.count <= self.max_occupancy - self.hysteresis,
            frame.t,
            {"max_occupancy": self.max_occupancy, "occupancy": frame.count},
        )


class LoiterRule:
    """'loitering' alert per track: inside for `seconds` or more; clears when it has left."""

    def __init__(self, seconds: float, *, rule: str | None = None) -> None:
        self.seconds = seconds
        self.rule = rule
        self._raised: dict[int, AlertEvent] = {}

    def update(self, frame: ZoneFrame) -> list[AlertEvent]:
        events = []
        for tid, p in frame.inside.items():
            if tid not in self._raised and frame.t - p.entered >= self.seconds:
                details: dict[str, Any] = {"track_id": tid, "class_id": p.class_id}
                event = AlertEvent("loitering", RAISED, self.rule, p.entered, details=details)
                self._raised[tid] = event
                events.append(event)
        for tid, p in frame.left.items():
            raised = self._raised.pop(tid, None)
            if raised is not None:
                details = {**raised.details, "dwell_seconds": p.last_inside - p.entered}
                events.append(
                    AlertEvent(
                        "loitering",
                        CLEARED,
                        self.rule,
                        raised.started_at,
                        p.last_inside,
                        raised.severity,
                        details,
                        raised.alert_id,
                    )
                )
        return events


class IntrusionRule:
    """'intrusion' alert (critical): anything inside while `window` is active, for
    `hold_seconds`; clears after the zone has been empty for `clear_seconds`, or at once when
    the window ends."""

    def __init__(
        self,
        window: DailyWindow,
        *,
        hold_seconds: float = 1.0,
        clear_seconds: float = 10.0,
        rule: str | None = None,
    ) -> None:
        self.window = window
        self._alert = HeldAlert("intrusion", rule, hold_seconds, clear_seconds, "critical")

    def update(self, frame: ZoneFrame) -> list[AlertEvent]:
        details = {"schedule": self.window.schedule, "timezone": self.window.zone_name}
        if not self.window.contains(frame.wall):
            return self._alert.force_clear(frame.t, {**details, "reason": "window ended"})
        return self._alert.update(frame.count > 0, frame.count == 0, frame.t, details)


class ZoneMonitor:
    """Watches one polygon: which confirmed tracks of `classes` (None = all) have their anchor
    inside, per analysed frame. The polygon is in frame pixels, or with `relative` in
    fractions 0-1 of the frame: such a zone is placed by `fit` once the frame size is known,
    and moved when it changes.

    - Occupancy: objects inside at each frame per class; a bucket's mean weights each frame's
      occupancy by the time until the next frame (or the bucket end), skipping gaps longer
      than `max_gap_seconds` (camera down), and its max is over the frames in the bucket.
    - Dwell: a track has left once it has not been seen inside for `exit_seconds` (so
      flicker at the border or a missed detection does not split a visit), or once `forget`
      is called for it; its dwell, last seen inside minus entered, goes to the bucket in which
      it left.
    - Entries: `entries` counts, per class and over the monitor's life, the tracks that came
      inside (a visit; one track counts once per visit, so a re-entry after it left counts
      again).
    - Alerts: each of `rules` (CrowdRule, LoiterRule, IntrusionRule) sees every frame.

    Call `close_bucket(end)` before the first `update` at or after `end`.
    """

    def __init__(
        self,
        polygon: Sequence[Sequence[float]],
        *,
        classes: Iterable[int] | None = None,
        anchor: Position | str = Position.BOTTOM_CENTER,
        exit_seconds: float = 1.0,
        max_gap_seconds: float = 5.0,
        rules: Sequence[ZoneRule] = (),
        relative: bool = False,
    ) -> None:
        self.shape = Polygon(polygon)
        self.polygon = self.shape.vertices
        self.relative = relative
        self._given: list[Point] = [(float(x), float(y)) for x, y in self.polygon]
        self._placed = not relative
        self.classes = None if classes is None else frozenset(int(c) for c in classes)
        self.anchor = Position(anchor)
        self.exit_seconds = exit_seconds
        self.max_gap_seconds = max_gap_seconds
        self.rules = list(rules)
        self.presence: dict[int, Presence] = {}
        self.occupancy: dict[int, int] = {}
        self.entries: dict[int, int] = {}
        self._last_t: float | None = None  # time of the last analysed frame
        self._counted_until = float("-inf")  # observed time is summed up to here
        self._bucket_start: float | None = None
        self._reset_bucket()

    @classmethod
    def from_config(
        cls,
        config: ZoneConfig,
        names: Sequence[str] = (),
        *,
        rule: str | None = None,
        timezone: str | None = None,
        relative: bool = False,
    ) -> ZoneMonitor:
        """The monitor and alert rules a zone's configuration describes, for a model with
        class `names`; `rule` names its alerts, `timezone` is the schedule's when the zone
        names none (None: UTC); `relative`: its polygon is in fractions of the frame (see
        `fit`)."""
        rules: list[ZoneRule] = []
        if config.max_occupancy is not None:
            rules.append(
                CrowdRule(
                    config.max_occupancy,
                    hold_seconds=config.crowd_hold_seconds,
                    hysteresis=config.crowd_hysteresis,
                    rule=rule,
                )
            )
        if config.loiter_seconds is not None:
            rules.append(LoiterRule(config.loiter_seconds, rule=rule))
        if config.restricted is not None:
            r = config.restricted
            rules.append(
                IntrusionRule(
                    DailyWindow(r.schedule, timezone if r.timezone is None else r.timezone),
                    hold_seconds=r.hold_seconds,
                    clear_seconds=r.clear_seconds,
                    rule=rule,
                )
            )
        return cls(
            config.polygon,
            classes=class_ids(config.classes, names),
            anchor=config.anchor,
            exit_seconds=config.exit_seconds,
            rules=rules,
            relative=relative,
        )

    def fit(self, width: int, height: int) -> None:
        """The frame is width x height (its first frame, or a new size after the stream
        changed): a relative zone moves to the same place in it; a zone in pixels stays."""
        if self.relative:
            self.shape = Polygon(to_pixels(self._given, width, height))
            self.polygon = self.shape.vertices
            self._placed = True

    def _reset_bucket(self) -> None:
        self._area: dict[int, float] = {}
        self._max: dict[int, int] = {}
        self._dwell: dict[int, list[float]] = {}
        self._observed = 0.0

    def inside(self, tracks: Tracks) -> np.ndarray:
        """bool (N,): tracks this zone counts now (confirmed, wanted class, anchor inside)."""
        return np.array(self._inside_rows(tracks), bool).reshape(-1)

    def _inside_rows(self, tracks: Tracks) -> list[bool]:
        if not self._placed:
            raise RuntimeError("a zone in fractions of the frame needs `fit` before use")
        _, points, classes, confirmed = tracks.rows(self.anchor)
        wanted, contains = self.classes, self.shape.contains
        return [
            ok and (wanted is None or cls in wanted) and contains(p[0], p[1])
            for p, cls, ok in zip(points, classes, confirmed, strict=True)
        ]

    def _accumulate(self, until: float) -> None:
        # Time up to `until` is observed only if the last frame is at most max_gap_seconds
        # before it: a bucket close inside a longer gap must not split it into short ones
        # that would each pass.
        last = self._last_t
        if last is None or until - last > self.max_gap_seconds:
            return
        dt = until - max(last, self._counted_until)
        if dt > 0:
            self._observed += dt
            for cls, n in self.occupancy.items():
                self._area[cls] = self._area.get(cls, 0.0) + n * dt
        self._counted_until = max(self._counted_until, until)

    def update(
        self, tracks: Tracks, t: float, wall_time: datetime | None = None
    ) -> list[AlertEvent]:
        """Observe one analysed frame at time `t`; return alert events it caused.

        `wall_time` is the frame's wall-clock time for schedules (aware, or naive in the
        schedule's timezone); when None, `t` must be epoch seconds.
        """
        if self._bucket_start is None:
            self._bucket_start = t
        self._accumulate(t)
        self._last_t = t

        occupancy: dict[int, int] = dict.fromkeys(self.classes or (), 0)
        ids, _, classes, _ = tracks.rows(self.anchor)
        for tid, cls, inside in zip(ids, classes, self._inside_rows(tracks), strict=True):
            if not inside:
                continue
            occupancy[cls] = occupancy.get(cls, 0) + 1
            p = self.presence.get(tid)
            if p is None:
                self.presence[tid] = Presence(cls, t, t)
                self.entries[cls] = self.entries.get(cls, 0) + 1
            else:
                p.last_inside = t
                p.class_id = cls
        self.occupancy = occupancy
        for cls, n in occupancy.items():
            self._max[cls] = max(self._max.get(cls, 0), n)

        gone = [tid for tid, p in self.presence.items() if t - p.last_inside > self.exit_seconds]
        left = {tid: self._leave(tid) for tid in gone}
        return self._run_rules(t, wall_time, left)

    def _run_rules(
        self, t: float, wall_time: datetime | None, left: dict[int, Presence]
    ) -> list[AlertEvent]:
        if not self.rules:
            return []
        wall = wall_time if wall_time is not None else t
        frame = ZoneFrame(t, wall, sum(self.occupancy.values()), self.presence, left)
        return [event for rule in self.rules for event in rule.update(frame)]

    def _leave(self, tid: int) -> Presence:
        p = self.presence.pop(tid)
        self._dwell.setdefault(p.class_id, []).append(p.last_inside - p.entered)
        return p

    def forget(self, tracker_ids: Iterable[int], t: float | None = None) -> list[AlertEvent]:
        """Tracks removed by the tracker leave the zone now; returns the alerts that causes
        (a loitering alert clears). `t` defaults to the last update's time."""
        left = {int(tid): self._leave(int(tid)) for tid in tracker_ids if int(tid) in self.presence}
        if not left:
            return []
        t = self._last_t if t is None else t
        assert t is not None
        return self._run_rules(t, None, left)

    def close_bucket(self, end: float) -> ZoneBucket:
        """Stats from the previous close (or the first update) to `end`; starts a new bucket."""
        self._accumulate(end)
        classes = set(self._max) | set(self._dwell) | set(self.classes or ())
        observed = self._observed
        by_class = {}
        for cls in sorted(classes):
            dwell = np.asarray(self._dwell.get(cls, []), np.float64)
            by_class[cls] = ZoneClassStats(
                occupancy_mean=self._area.get(cls, 0.0) / observed if observed > 0 else 0.0,
                occupancy_max=self._max.get(cls, 0),
                dwell_count=len(dwell),
                dwell_mean=float(dwell.mean()) if len(dwell) else 0.0,
                dwell_p90=float(np.percentile(dwell, 90)) if len(dwell) else 0.0,
                dwell_max=float(dwell.max()) if len(dwell) else 0.0,
            )
        start = self._bucket_start if self._bucket_start is not None else end
        self._bucket_start = end
        self._reset_bucket()
        return ZoneBucket(start, end, observed, by_class)
