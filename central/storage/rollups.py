"""Hourly and daily rollups of count rows: what one stored bucket adds to them.

A bucket counts in full towards the UTC hour it starts in, also when the outbox merged it from
several (up to a day): counts cannot be split without inventing where in the bucket they
happened, and attributing whole buckets keeps every total an exact sum of stored rows. A day
is the site's local day of that UTC hour (its start read in the site's time zone), so a zone
whose offset is not a whole hour (Asia/Kolkata) still gives every hour one local day, hour and
weekday.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from pantau.agent.wire.protocol import format_time

# Summed per (site, agent, camera, rule, class, period), in this order after rule_type.
MEASURES = ("in", "out", "entries", "dwell_seconds", "occupancy_seconds", "observed_seconds",
            "rows")  # fmt: skip
KEY = ("site", "agent", "camera", "rule", "class")
HOUR = 3600


def hour_start(epoch: float) -> int:
    return int(epoch // HOUR * HOUR)


def local_day(hour: int, zone: ZoneInfo) -> str:
    """The site-local date (YYYY-MM-DD) of the UTC hour starting at `hour`."""
    return datetime.fromtimestamp(hour, zone).date().isoformat()


def measures(row: Sequence[Any]) -> list[Any]:
    """What one count row (as stored: _COUNT_COLUMNS order) adds to its rollups."""
    observed, in_, out, occ_mean, _, d_count, d_mean = row[8:15]
    entries = d_count or 0
    return [in_ or 0, out or 0, entries, (d_mean or 0.0) * entries, (occ_mean or 0.0) * observed,
            observed, 1]  # fmt: skip


Deltas = dict[tuple[Any, ...], list[Any]]


def add(into: Deltas, key: tuple[Any, ...], rule_type: str, values: list[Any]) -> None:
    have = into.get(key)
    if have is None:
        into[key] = [rule_type, *values]
    else:
        for i, v in enumerate(values, 1):
            have[i] += v


def deltas(
    rows: Iterable[tuple[Sequence[Any], float]], zone_of: Callable[[str], ZoneInfo]
) -> tuple[Deltas, Deltas]:
    """Hourly and daily increments of `(count row, bucket start epoch)` pairs, keyed
    (site, agent, camera, rule, class, hour start | local day)."""
    hourly: Deltas = {}
    daily: Deltas = {}
    periods: dict[tuple[str, int], tuple[str, str]] = {}  # (site, hour): hour's text, local day
    for row, start in rows:
        site, agent, camera, rule, rule_type, cls = row[:6]
        hour = hour_start(start)
        period = periods.get((site, hour))
        if period is None:
            period = periods[(site, hour)] = (iso(hour), local_day(hour, zone_of(site)))
        values = measures(row)
        add(hourly, (site, agent, camera, rule, cls, period[0]), rule_type, values)
        add(daily, (site, agent, camera, rule, cls, period[1]), rule_type, values)
    return hourly, daily


def iso(epoch: float) -> str:
    return format_time(datetime.fromtimestamp(epoch, timezone.utc))


def upsert_sql(table: str, period: str) -> tuple[list[str], str]:
    """Columns and ON CONFLICT clause of an upsert into a rollup table that adds to what is
    there."""
    sets = ", ".join(f'"{m}" = {table}."{m}" + excluded."{m}"' for m in MEASURES)
    conflict = ", ".join(f'"{c}"' for c in (*KEY, period))
    return [*KEY, period, "rule_type", *MEASURES], f"ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
