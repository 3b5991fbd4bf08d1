"""Daily time windows such as '22:00-05:00' (wrapping midnight), read in an IANA time zone:
the agent's restricted zones and central's count-rule schedules parse them here, once."""

from __future__ import annotations

import re
from datetime import datetime, time, timezone, tzinfo
from zoneinfo import ZoneInfo

_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_daily_window(text: str) -> tuple[time, time | None]:
    """'HH:MM-HH:MM' -> (start, end); end None stands for 24:00. ValueError if malformed."""
    match = _WINDOW_RE.match(text)
    if not match:
        raise ValueError(f"schedule {text!r} is not 'HH:MM-HH:MM' (e.g. '18:00-06:00')")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"schedule {text!r} has an hour or minute out of range")
    start, end = time(h1, m1), None if h2 == 24 else time(h2, m2)
    if start == (end or time(0, 0)) and not (h1 == 0 and m1 == 0 and end is None):
        raise ValueError(f"schedule {text!r} is empty: start equals end (use '00:00-24:00')")
    return start, end


class DailyWindow:
    """A daily time window such as '18:00-06:00' (may wrap midnight; '00:00-24:00' = always),
    start included, end excluded, evaluated in `tz` (IANA name or tzinfo; None = UTC)."""

    def __init__(self, schedule: str, tz: str | tzinfo | None = None) -> None:
        self.schedule = schedule
        self.start, self.end = parse_daily_window(schedule)
        self.tz: tzinfo = ZoneInfo(tz) if isinstance(tz, str) else (tz or timezone.utc)
        self.zone_name = str(tz) if tz is not None else "UTC"

    def __str__(self) -> str:
        """The window with the zone it runs in, e.g. '18:00-06:00 Asia/Makassar'."""
        return f"{self.schedule} {self.zone_name}"

    def contains(self, when: datetime | float) -> bool:
        """Whether `when` falls in the window. A float is epoch seconds; a naive datetime is
        taken as already in the window's timezone."""
        if isinstance(when, (int, float)):
            when = datetime.fromtimestamp(float(when), self.tz)
        elif when.tzinfo is not None:
            when = when.astimezone(self.tz)
        now = when.time().replace(tzinfo=None)
        if self.end is None:
            return now >= self.start
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end
