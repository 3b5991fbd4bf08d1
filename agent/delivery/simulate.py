"""Synthetic but realistic count buckets and alerts for load tests and link drills.

Generation is deterministic in (seed, camera, bucket), so a run killed half-way resumes where
its last committed batch ended and the summary always describes the whole simulated period.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.wire.protocol import AlertPayload, CountsPayload, Dwell, LineCount, ZoneStats

# Lines and zones every simulated camera has, with the classes counted on each and their
# mean crossings per minute at the busiest hour.
LINES = {
    "entrance": {"person": 6.0, "bicycle": 0.4},
    "road": {"car": 12.0, "motorcycle": 9.0, "bus": 0.5, "truck": 1.0},
}
ZONES = {"plaza": {"person": 4.0}}
CROWD_AT = 8  # occupancy above which the generator raises a crowd alert


def diurnal(hour: float) -> float:
    """Relative activity (0.05..1) at a local hour of day: morning and evening peaks."""
    morning = math.exp(-((hour - 7.5) ** 2) / 3.0)
    evening = math.exp(-((hour - 17.5) ** 2) / 4.0)
    midday = 0.45 * math.exp(-((hour - 12.5) ** 2) / 8.0)
    return max(0.05, morning + evening + midday)


@dataclass(frozen=True)
class Plan:
    """What to simulate: `cameras` cameras over `hours` hours of event time from `start`."""

    cameras: int
    hours: float
    start: datetime
    bucket_seconds: int = 60
    seed: int = 1

    @property
    def camera_names(self) -> list[str]:
        return [f"cam-{i + 1:02d}" for i in range(self.cameras)]

    @property
    def buckets(self) -> int:
        return int(self.hours * 3600 // self.bucket_seconds)

    @property
    def key(self) -> str:
        return (
            f"simulate:{format(self.start.timestamp(), '.0f')}:{self.hours}:"
            f"{self.cameras}:{self.bucket_seconds}:{self.seed}"
        )

    def bucket_start(self, index: int) -> datetime:
        return self.start + timedelta(seconds=index * self.bucket_seconds)


def _rng(plan: Plan, camera: str, index: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"{plan.seed}/{camera}/{index}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def bucket_items(plan: Plan, index: int) -> list[tuple[str, str, Any]]:
    """The messages of one bucket for every camera: one counts message each, plus alerts."""
    start = plan.bucket_start(index)
    minutes = plan.bucket_seconds / 60
    hour = start.hour + start.minute / 60
    level = diurnal(hour)
    items: list[tuple[str, str, Any]] = []
    for cam_no, camera in enumerate(plan.camera_names):
        rng = _rng(plan, camera, index)
        busy = level * (0.6 + 0.8 * ((cam_no * 7919) % 100) / 100)
        lines = {
            rule: {
                cls: LineCount(
                    **{
                        "in": int(rng.poisson(rate * busy * minutes / 2)),
                        "out": int(rng.poisson(rate * busy * minutes / 2)),
                    }
                )
                for cls, rate in classes.items()
            }
            for rule, classes in LINES.items()
        }
        zones: dict[str, dict[str, ZoneStats]] = {}
        for rule, classes in ZONES.items():
            zones[rule] = {}
            for cls, mean in classes.items():
                occ = float(rng.gamma(2.0, mean * busy / 2.0))
                peak = int(occ + rng.poisson(1 + occ / 2))
                left = int(rng.poisson(max(occ, 0.1) * minutes / 2))
                dwell = sorted(rng.exponential(45.0, left).tolist())
                zones[rule][cls] = ZoneStats(
                    occupancy_mean=round(occ, 3),
                    occupancy_max=peak,
                    dwell=Dwell(
                        count=left,
                        mean=round(float(np.mean(dwell)), 2) if left else 0.0,
                        p90=round(float(np.percentile(dwell, 90)), 2) if left else 0.0,
                        max=round(dwell[-1], 2) if left else 0.0,
                    ),
                )
                if peak > CROWD_AT and rng.random() < 0.05:
                    items.append(("alerts", camera, _crowd_alert(plan, camera, index, peak)))
        items.append(
            (
                "counts",
                camera,
                CountsPayload(
                    bucket_start=start,
                    bucket_seconds=plan.bucket_seconds,
                    observed_seconds=float(plan.bucket_seconds),
                    lines=lines,
                    zones=zones,
                ),
            )
        )
    return items


def _crowd_alert(plan: Plan, camera: str, index: int, peak: int) -> AlertPayload:
    start = plan.bucket_start(index)
    return AlertPayload(
        alert_id=f"sim-{plan.seed}-{camera}-{index}",
        type="crowd",
        state="raised",
        severity="warning",
        started_at=start,
        rule="plaza",
        details={"occupancy": peak, "max_occupancy": CROWD_AT, "simulated": True},
    )


def summarize(plan: Plan) -> dict[str, Any]:
    """Totals of everything the plan generates, recomputed from the generator itself."""
    totals: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
    messages = {"counts": 0, "alerts": 0}
    for index in range(plan.buckets):
        for kind, camera, payload in bucket_items(plan, index):
            messages[kind] += 1
            if kind != "counts":
                continue
            cam = totals.setdefault(camera, {})
            for rule, by_class in payload.lines.items():
                for cls, c in by_class.items():
                    t = cam.setdefault(rule, {}).setdefault(cls, {"in": 0, "out": 0})
                    t["in"] += c.in_
                    t["out"] += c.out
    return {
        "cameras": plan.cameras,
        "hours": plan.hours,
        "from": plan.start.isoformat().replace("+00:00", "Z"),
        "to": plan.bucket_start(plan.buckets).isoformat().replace("+00:00", "Z"),
        "bucket_seconds": plan.bucket_seconds,
        "buckets": plan.buckets * plan.cameras,
        "messages": messages,
        "totals": totals,
    }


def run(plan: Plan, outbox: Outbox, rate: float = 0.0, on_batch=None) -> Iterator[int]:
    """Enqueue the plan's buckets into the outbox, resuming after the last committed one.

    `rate` caps generated messages per second (0: as fast as the disk allows). Yields the
    number of messages enqueued per batch; `on_batch` is called after each commit.
    """
    done = int(outbox.get_meta(plan.key, "-1") or -1)
    started = time.monotonic()
    sent = 0
    batch: list[tuple[str, str, Any]] = []
    for index in range(done + 1, plan.buckets):
        batch.extend(bucket_items(plan, index))
        if len(batch) < 256 and index + 1 < plan.buckets:
            continue
        outbox.enqueue(batch, meta={plan.key: index})
        sent += len(batch)
        yield len(batch)
        batch = []
        if on_batch:
            on_batch()
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def parse_start(text: str | None, bucket_seconds: int, hours: float = 24) -> datetime:
    """A plan start from RFC 3339 text (naive means UTC), aligned down to a bucket boundary.

    Without one: the start of the current hour, minus `hours`, so that a rerun of the same
    command within the hour resumes the same plan.
    """
    if text:
        start = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
    else:
        now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        start = now - timedelta(hours=hours)
    ts = int(start.timestamp()) // bucket_seconds * bucket_seconds
    return datetime.fromtimestamp(ts, timezone.utc)
