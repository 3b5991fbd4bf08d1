"""The counts question that `pantau-central counts` and the read API both ask: its period
checked (RFC 3339 times, or local dates for days) and turned into a storage Filter."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from pantau.agent.wire.protocol import format_time
from pantau.central.scope import EVERYTHING, Scope
from pantau.central.storage.base import GRANULARITIES, CameraRef, Filter


def utc_time(name: str, value: str) -> str:
    """An RFC 3339 time as a UTC time string (a time without an offset is UTC), or a
    ValueError naming `name`."""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return format_time(t if t.tzinfo else t.replace(tzinfo=timezone.utc))
    except (ValueError, OverflowError):  # overflow: a year-1 time with a positive offset
        raise ValueError(
            f"{name} {value!r}: not an RFC 3339 time (e.g. 2026-11-27T08:00:00Z)"
        ) from None


def local_date(name: str, value: str) -> str:
    """A YYYY-MM-DD date, or a ValueError naming `name`."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise ValueError(f"{name} {value!r}: with granularity day, a local date like 2026-11-27")


def counts_filter(
    granularity: str,
    since: str | None,
    until: str | None,
    *,
    site: str | None = None,
    camera: CameraRef | None = None,
    rule: str | None = None,
    cls: str | None = None,
    scope: Scope = EVERYTHING,
    names: tuple[str, str] = ("--from", "--to"),
    default_days: float | None = None,
    max_days: float | None = None,
    now: datetime | None = None,
) -> Filter:
    """The Filter of a counts question at `granularity` (bucket, hour: RFC 3339 times; day:
    the site's local dates). With `default_days`, a missing end is now and a missing start
    that many days before the end; with `max_days`, a longer or open period is a ValueError."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r}: one of {', '.join(GRANULARITIES)}")
    day = granularity == "day"
    parse = local_date if day else utc_time
    bounds = [None if v is None or v == "" else parse(n, v) for n, v in zip(names, (since, until),
                                                                          strict=True)]  # fmt: skip
    if default_days is not None:
        end = now or datetime.now(timezone.utc)
        last = bounds[1] = bounds[1] or (end.date().isoformat() if day else format_time(end))
        if bounds[0] is None:
            try:
                start = _point(last, day) - timedelta(days=default_days)
            except OverflowError:
                raise ValueError(f"{names[1]} {last}: too early") from None
            bounds[0] = start.date().isoformat() if day else format_time(start)
    if bounds[0] is not None and bounds[1] is not None:
        span = _point(bounds[1], day) - _point(bounds[0], day)
        if span <= timedelta(0):
            raise ValueError(f"{names[1]} must be after {names[0]}")
        if max_days is not None and span > timedelta(days=max_days):
            raise ValueError(f"{names[0]} to {names[1]} spans more than {max_days:g} days")
    elif max_days is not None:
        raise ValueError(f"give both {names[0]} and {names[1]} (at most {max_days:g} days apart)")
    return Filter(bounds[0], bounds[1], site, None, camera, rule, cls, scope)


def _point(value: str, day: bool) -> datetime:
    if day:
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
