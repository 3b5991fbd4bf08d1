"""Visit patterns ("pola kunjungan"): per local hour of week, the spread of an hour's counts
over the last N weeks, from the hourly rollups."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

# Weekday names, Monday first, in Bahasa Indonesia (the operators' language) and English.
WEEKDAYS = ("Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu")
WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def p90(values: list[float]) -> float:
    """The 90th percentile, linearly interpolated between the nearest ranks."""
    ordered = sorted(values)
    pos = 0.9 * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _spread(prefix: str, values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"{prefix}mean": None, f"{prefix}median": None, f"{prefix}p90": None}
    return {
        f"{prefix}mean": round(statistics.fmean(values), 3),
        f"{prefix}median": round(float(statistics.median(values)), 3),
        f"{prefix}p90": round(p90(values), 3),
    }


def hour_of_week(
    hours: Iterable[tuple[int, int, int, float, bool, bool]], zone: ZoneInfo
) -> list[dict[str, object]]:
    """168 slots (Monday 00 first) from `(utc hour start, crossings, entries, dwell seconds,
    has lines, has zones)` per UTC hour with data. Each UTC hour lands in the local hour of week
    its start falls in; a slot's values are one per week, and `weeks` says how many weeks had
    data there. Crossings are line in + out; entries and mean dwell come from zones."""
    # slot -> local date -> [crossings, entries, dwell, has lines, has zones]: a local hour a
    # daylight-saving change repeats is still one week's value.
    slots: dict[tuple[int, int], dict[str, list]] = {}
    for hour, crossings, entries, dwell, lines, zones in hours:
        local = datetime.fromtimestamp(hour, zone)
        week = slots.setdefault((local.weekday(), local.hour), {})
        acc = week.setdefault(local.date().isoformat(), [0, 0, 0.0, False, False])
        acc[0] += crossings
        acc[1] += entries
        acc[2] += dwell
        acc[3] |= lines
        acc[4] |= zones
    out: list[dict[str, object]] = []
    for day in range(7):
        for h in range(24):
            got = list(slots.get((day, h), {}).values())
            entries = sum(g[1] for g in got if g[4])
            dwell = sum(g[2] for g in got if g[4])
            out.append({
                "weekday": WEEKDAYS[day], "weekday_en": WEEKDAYS_EN[day], "hour": h,
                "weeks": len(got),
                **_spread("", [float(g[0]) for g in got if g[3]]),
                **_spread("entries_", [float(g[1]) for g in got if g[4]]),
                "dwell_mean": round(dwell / entries, 3) if entries else None,
            })  # fmt: skip
    return out
