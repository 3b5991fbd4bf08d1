"""Per-camera analytics: tracker, line counters, zone monitors, health monitor and the bucket
they fill, turned into wire payloads (CountsPayload, AlertPayload, HealthPayload)."""

from __future__ import annotations

import logging
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from pantau.agent.config.agent import CameraConfig
from pantau.agent.pipeline.rate import AnalysisRate
from pantau.agent.rules.conditions import AlertEvent
from pantau.agent.rules.health import HealthMonitor, HealthThresholds
from pantau.agent.rules.lines import Crossing, LineCounter
from pantau.agent.rules.riders import RiderMatcher, Riders
from pantau.agent.rules.zones import ZoneMonitor
from pantau.agent.vision.detections import DEFAULT_CLASSES, Detections, Tracks
from pantau.agent.vision.motion import MotionGate
from pantau.agent.vision.tiles import Tiler
from pantau.agent.vision.track.tracker import ByteTracker
from pantau.agent.wire.protocol import (
    AlertPayload,
    CountsPayload,
    Dwell,
    HealthPayload,
    LineCount,
    ZoneStats,
)

log = logging.getLogger(__name__)

# Health checks cost ~3 ms a frame (thumbnail of a full frame); twice a second is plenty for
# alerts held for seconds, and keeps them off the budget at high analysis rates.
HEALTH_PERIOD = 0.5
MAX_GAP_SECONDS = 5.0  # as ZoneMonitor: a longer gap between analysed frames is not observed


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def alert_payload(event: AlertEvent) -> AlertPayload:
    """An AlertEvent (epoch-second times) as the wire's AlertPayload (UTC datetimes)."""
    return AlertPayload(
        alert_id=event.alert_id,
        type=event.type,
        state=event.state,
        severity=event.severity,
        started_at=utc(event.started_at),
        ended_at=None if event.ended_at is None else utc(event.ended_at),
        rule=event.rule,
        details=_plain(event.details),
    )


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    # numpy scalars would not serialise to JSON
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in details.items()}


def _class_names(classes: list[str] | None, names: tuple[str, ...]) -> list[str]:
    wanted = classes if classes is not None else list(DEFAULT_CLASSES)
    return [c for c in wanted if not names or c in names]


@dataclass
class Totals:
    """Running totals over the whole run (for `analyze` and the live terminal view)."""

    lines: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # rule->class->[in,out]
    zone_area: dict[str, dict[str, float]] = field(default_factory=dict)  # occupancy x seconds
    zone_max: dict[str, dict[str, int]] = field(default_factory=dict)
    zone_peak: dict[str, int] = field(default_factory=dict)  # all classes together
    # rule -> class -> [visits that ended, their summed dwell seconds]
    zone_dwell: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    observed: float = 0.0
    alerts_raised: int = 0
    # Every alert for `analyze` (a file ends); only the newest for a live agent, which runs
    # for months.
    alerts: deque[AlertPayload] = field(default_factory=deque)

    @classmethod
    def zeroed(
        cls,
        line_classes: dict[str, list[str]],
        zone_classes: dict[str, list[str]],
        alert_history: int | None,
    ) -> Totals:
        """Totals with every rule and class at zero, keeping the newest `alert_history`
        alerts (None: all)."""
        return cls(
            lines={n: {c: [0, 0] for c in cs} for n, cs in line_classes.items()},
            zone_area={n: dict.fromkeys(cs, 0.0) for n, cs in zone_classes.items()},
            zone_max={n: dict.fromkeys(cs, 0) for n, cs in zone_classes.items()},
            zone_dwell={n: {c: [0, 0.0] for c in cs} for n, cs in zone_classes.items()},
            alerts=deque(maxlen=alert_history),
        )


class CameraAnalytics:
    """Everything one camera computes from its analysed frames.

    `process(t, frame, detections)` observes one analysed frame (detections None: the motion
    gate skipped it and tracks coast); `close_bucket` returns the bucket's CountsPayload with
    every configured rule and class, zeros included.
    """

    def __init__(
        self,
        name: str,
        config: CameraConfig,
        names: tuple[str, ...] = (),
        *,
        timezone_name: str = "UTC",
        reference: np.ndarray | None = None,
        tracker: ByteTracker | None = None,
        alert_history: int | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.names = names
        self.tracker = tracker or ByteTracker.from_config(config.tracker)
        self.riders = RiderMatcher(names)
        self.lines: dict[str, LineCounter] = {
            n: LineCounter.from_config(c, names, relative=config.relative)
            for n, c in config.lines.items()
        }
        self.zones: dict[str, ZoneMonitor] = {
            n: ZoneMonitor.from_config(c, names, rule=n, timezone=timezone_name,
                                       relative=config.relative)
            for n, c in config.zones.items()
        }
        self.line_classes = {n: _class_names(c.classes, names) for n, c in config.lines.items()}
        self.zone_classes = {n: _class_names(c.classes, names) for n, c in config.zones.items()}
        thresholds = HealthThresholds.from_config(config.health)
        self.health = HealthMonitor(thresholds, reference=reference)
        self.gate = MotionGate(config.motion)
        self.tiler = Tiler(config)
        phase = zlib.crc32(name.encode()) % 1000 / 1000  # cameras' probes spread, repeatably
        self.rate = AnalysisRate(config.fixed_fps, config.min_fps, config.max_fps, phase)
        self.totals = Totals.zeroed(self.line_classes, self.zone_classes, alert_history)
        self.tracks = Tracks.empty(names)
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the last frame
        self.config_errors: list[str] = []  # rules outside that frame
        self.frames_analyzed = 0
        self.frames_detected = 0
        self._bucket_frames = 0
        self._observed = 0.0
        self._last_t: float | None = None  # time of the last analysed frame
        self._counted_until = float("-inf")  # observed time is summed up to here
        self._health_t = float("-inf")
        self._clock_jump = 0.0  # seconds the wall clock jumped since the last health message

    def frame_errors(self, width: int, height: int) -> list[str]:
        """Rule points outside a width x height frame, one line each."""
        errors = []
        for n, line in self.config.lines.items():
            errors += line.frame_errors(width, height, f"cameras.{self.name}.lines.{n}")
        for n, zone in self.config.zones.items():
            errors += zone.frame_errors(width, height, f"cameras.{self.name}.zones.{n}")
        return errors

    def process(
        self, t: float, frame: np.ndarray | None, detections: Detections | None
    ) -> list[AlertPayload]:
        """Observe the analysed frame at `t`; return the alerts raised or cleared."""
        if frame is not None and frame.shape[1::-1] != self.frame_size:
            self._check_frame_size(frame.shape[1], frame.shape[0])
        self._observe_until(t)
        self._last_t = t
        self.frames_analyzed += 1
        self._bucket_frames += 1
        self.tracks = tracks = self._track(t, detections)
        if detections is not None:  # coasted tracks did not move: no measure of speed
            self.rate.observe(tracks, t)
            self.tiler.observe(tracks, t)
        removed = self.tracker.removed_ids
        riders = self._riders(tracks, removed)
        self._count_lines(tracks, riders, removed, t)
        events = self._watch_zones(tracks, removed, t)
        events += self._check_health(t, frame)
        return self._alerts(events)

    def _track(self, t: float, detections: Detections | None) -> Tracks:
        """The tracks at `t`: updated with the detections, or coasted when the gate skipped
        the frame."""
        if detections is None:
            return self.tracker.coast(t)
        self.frames_detected += 1
        return self.tracker.update(self.riders.promote_machines(detections), t)

    def _riders(self, tracks: Tracks, removed: np.ndarray) -> Riders:
        """The persons riding two-wheelers in this frame (see pantau.agent.rules.riders)."""
        self.riders.forget(removed)
        return self.riders.update(tracks)

    def _count_lines(
        self, tracks: Tracks, riders: Riders, removed: np.ndarray, t: float
    ) -> None:
        """Feed every line the tracks (and the ended ones) and tally its crossings. A line
        that counts a two-wheeler's class does not see its rider: the vehicle is counted once,
        and the rider as a person only on lines that count persons but not that vehicle."""
        for rule, line in self.lines.items():
            seen = riders.visible(tracks, line.classes)
            self._tally(rule, line.forget(removed) + line.update(seen, t))

    def _watch_zones(self, tracks: Tracks, removed: np.ndarray, t: float) -> list[AlertEvent]:
        """Feed every zone the tracks (and the ended ones); note its peaks; return its alert
        events."""
        events: list[AlertEvent] = []
        for rule, zone in self.zones.items():
            events += zone.update(tracks, t)
            events += zone.forget(removed, t)
            peak = self.totals.zone_peak
            peak[rule] = max(peak.get(rule, 0), sum(zone.occupancy.values()))
            maxima = self.totals.zone_max[rule]
            for cls, n in zone.occupancy.items():
                key = self._name(cls)
                maxima[key] = max(maxima.get(key, 0), n)
        return events

    def _check_health(self, t: float, frame: np.ndarray | None) -> list[AlertEvent]:
        """Health events of the frame, checked at most every HEALTH_PERIOD seconds."""
        if frame is None or t - self._health_t < HEALTH_PERIOD:
            return []
        self._health_t = t
        return self.health.update(t, frame)

    def _check_frame_size(self, width: int, height: int) -> None:
        # A live camera's size is known only from its first frame (and may change when the
        # camera is reconfigured): rules outside it would never count, so say so, in the log
        # and in every health message, rather than count zero in silence.
        self.frame_size = (width, height)
        # Rules in fractions of the frame move with its size.
        for line in self.lines.values():
            line.fit(width, height)
        for zone in self.zones.values():
            zone.fit(width, height)
        self.config_errors = self.frame_errors(width, height)
        for error in self.config_errors:
            log.error("camera %s: %s", self.name, error)

    def zone_entries(self, rule: str) -> dict[str, int]:
        """Tracks that came into zone `rule` since the start, per class name."""
        return {self._name(c): n for c, n in self.zones[rule].entries.items()}

    def _tally(self, rule: str, crossings: list[Crossing]) -> None:
        for crossing in crossings:
            tally = self.totals.lines[rule].setdefault(self._name(crossing.class_id), [0, 0])
            tally[0 if crossing.direction == "in" else 1] += 1

    def end_tracks(self) -> None:
        """The stream has ended: crossings that tracks still held count now (see
        LineCounter), so they reach the last bucket."""
        for rule, line in self.lines.items():
            self._tally(rule, line.finish())

    def clock_jumped(self, seconds: float) -> None:
        """The wall clock jumped by `seconds` (negative: back); the next health says so."""
        self._clock_jump += seconds

    def tick(self, t: float) -> list[AlertPayload]:
        """No new frame at `t`: lets the health monitor notice an offline camera."""
        return self._alerts(self.health.update(t, None))

    def _alerts(self, events: list[AlertEvent]) -> list[AlertPayload]:
        payloads = [alert_payload(e) for e in events]
        self.totals.alerts += payloads
        self.totals.alerts_raised += sum(1 for p in payloads if p.state == "raised")
        return payloads

    def _name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

    def _observe_until(self, t: float) -> None:
        # Time counts as observed up to `t` only if the last analysed frame is at most
        # MAX_GAP_SECONDS before it; a bucket close in between must not bridge a longer gap.
        last = self._last_t
        if last is not None and t - last <= MAX_GAP_SECONDS:
            start = max(last, self._counted_until)
            if t > start:
                self._observed += t - start
        self._counted_until = max(self._counted_until, t)

    def close_bucket(
        self, bucket_start: float, bucket_seconds: int, end: float | None = None
    ) -> CountsPayload:
        """The bucket [bucket_start, end) (end defaults to its full length; a file's last
        bucket ends at its last frame) with every rule and configured class, zeros too."""
        end = bucket_start + bucket_seconds if end is None else end
        self._observe_until(end)
        observed = min(self._observed, float(bucket_seconds))
        self._observed = 0.0
        lines = self._close_lines()
        zones = self._close_zones(end)
        self.totals.observed += observed
        return CountsPayload(
            bucket_start=utc(bucket_start),
            bucket_seconds=bucket_seconds,
            observed_seconds=observed,
            lines=lines,
            zones=zones,
        )

    def _close_lines(self) -> dict[str, dict[str, LineCount]]:
        """Every line's crossings since the last bucket, per configured class (zeros too)."""
        lines: dict[str, dict[str, LineCount]] = {}
        for rule, line in self.lines.items():
            by_class = {c: LineCount(in_=0, out=0) for c in self.line_classes[rule]}
            for cls, (n_in, n_out) in line.take_counts().items():
                by_class[self._name(cls)] = LineCount(in_=n_in, out=n_out)
            lines[rule] = by_class
        return lines

    def _close_zones(self, end: float) -> dict[str, dict[str, ZoneStats]]:
        """Every zone's bucket up to `end`, per configured class (zeros too), added to the
        running totals."""
        zones: dict[str, dict[str, ZoneStats]] = {}
        for rule, zone in self.zones.items():
            bucket = zone.close_bucket(end)
            by_zone = {c: ZoneStats() for c in self.zone_classes[rule]}
            for cls, s in bucket.by_class.items():
                key = self._name(cls)
                by_zone[key] = ZoneStats(
                    occupancy_mean=s.occupancy_mean,
                    occupancy_max=s.occupancy_max,
                    dwell=Dwell(count=s.dwell_count, mean=s.dwell_mean, p90=s.dwell_p90,
                                max=s.dwell_max),
                )
                area = self.totals.zone_area[rule]
                area[key] = area.get(key, 0.0) + s.occupancy_mean * bucket.observed_seconds
                dwell = self.totals.zone_dwell[rule].setdefault(key, [0, 0.0])
                dwell[0] += s.dwell_count
                dwell[1] += s.dwell_mean * s.dwell_count
            zones[rule] = by_zone
        return zones

    def health_payload(self, fps_target: float, seconds: float, frames_read: int) -> HealthPayload:
        """Health of the bucket just closed (`seconds` long); resets the per-bucket counts."""
        analyzed, self._bucket_frames = self._bucket_frames, 0
        last = self.health.last_frame_t
        details: dict[str, Any] = {k: round(v, 4) for k, v in self.health.metrics.items()}
        details["frames_detected"] = self.frames_detected
        details["frames_gated"] = self.gate.skipped
        details["analysis_fps"] = round(self.rate.fps, 2)
        details["analysis_fps_reason"] = self.rate.note
        plan = self.tiler.last
        if plan is not None:
            details["detector_calls_per_frame"] = plan.calls
            details["tiling"] = plan.note
        if self.config_errors:
            details["config_errors"] = self.config_errors
        if self._clock_jump:
            details["clock_jump_seconds"] = round(self._clock_jump, 3)
            self._clock_jump = 0.0
        return HealthPayload(
            state=self.health.state,
            fps_target=fps_target,
            fps_effective=round(analyzed / seconds, 3) if seconds > 0 else 0.0,
            frames_read=frames_read,
            frames_analyzed=self.frames_analyzed,
            last_frame_at=None if last is None else utc(last),
            details=details,
        )
