"""The packed form of a stored counts bucket: one `buckets` row holds the bucket's count rows
(one per rule and class) as two compact JSON arrays, instead of a `counts` row each.

`lines` is `[[rule, class, in, out], ...]` and `zones` is `[[rule, class, occupancy_mean,
occupancy_max, dwell_count, dwell_mean, dwell_p90, dwell_max], ...]`; either is NULL when it
would be empty, and a bucket with neither is the one row of rule type 'none' (a camera with no
rules still proves it was watched). The `counts` view of each schema unnests them to the
columns `counts` had; central itself unpacks them here.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pantau.agent.wire.protocol import CountsPayload

_COMPACT = (",", ":")
# Columns that were REAL in `counts`: a whole number packed as one comes back as a float.
_ZONE_FLOATS = (0, 3, 4, 5)  # occupancy_mean, dwell_mean, dwell_p90, dwell_max


def pack(p: CountsPayload) -> tuple[str | None, str | None]:
    """The `lines` and `zones` values of a bucket."""
    lines = [
        [rule, cls, c.in_, c.out]
        for rule, by_class in p.lines.items()
        for cls, c in by_class.items()
    ]
    zones = [
        [rule, cls, z.occupancy_mean, z.occupancy_max, z.dwell.count, z.dwell.mean, z.dwell.p90,
         z.dwell.max]
        for rule, by_class in p.zones.items()
        for cls, z in by_class.items()
    ]  # fmt: skip
    return (
        json.dumps(lines, separators=_COMPACT) if lines else None,
        json.dumps(zones, separators=_COMPACT) if zones else None,
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def unpack(
    site: str,
    agent: str,
    camera: str,
    start_s: int,
    end_s: int,
    observed: float,
    lines: Any,
    zones: Any,
) -> list[tuple[Any, ...]]:
    """The count rows (COUNT_COLUMNS order) of one `buckets` row. `lines` and `zones` are the
    JSON text, or (PostgreSQL's json loader) already parsed."""
    start, seconds = format_time_s(int(start_s)), int(end_s) - int(start_s)
    observed = float(observed)

    def row(rule: str, kind: str, cls: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
        return (site, agent, camera, rule, kind, cls, start, seconds, observed, *values)

    out = [
        row(rule, "line", cls, (i, o, None, None, None, None, None, None))
        for rule, cls, i, o in _parsed(lines)
    ]
    for rule, cls, *v in _parsed(zones):
        v = [_float(x) if n in _ZONE_FLOATS else x for n, x in enumerate(v)]
        out.append(row(rule, "zone", cls, (None, None, *v)))
    if not out:
        out.append(row("", "none", "", (None,) * 8))
    return out


def _parsed(value: Any) -> list[Any]:
    if value is None:
        return []
    return json.loads(value) if isinstance(value, str | bytes) else list(value)


def format_time_s(epoch: int) -> str:
    """A bucket start (whole epoch seconds) as protocol.format_time writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def rows_sql(greatest: str) -> str:
    """SQL for the number of count rows a `buckets` row holds (`greatest`: MAX on SQLite,
    GREATEST on PostgreSQL)."""
    return (
        f"{greatest}(1, COALESCE(json_array_length(lines), 0) + "
        "COALESCE(json_array_length(zones), 0))"
    )
