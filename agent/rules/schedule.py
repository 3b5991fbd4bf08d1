"""Daily time windows of restricted zones and the IANA time zones they are read in: parsing,
shared by the configuration's validators and the zone rules, and the box's own time zone,
the agent's default."""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping
from datetime import datetime, time, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ETC_TIMEZONE = Path("/etc/timezone")
ETC_LOCALTIME = Path("/etc/localtime")


def check_timezone(value: str | None) -> str | None:
    """`value` unchanged if it is None or an IANA time zone name; ValueError otherwise."""
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r} (use an IANA name)") from None
    return value


def _zone_name(text: str) -> str | None:
    """The IANA name in `text` (a name, ':name', or a path into a zoneinfo folder such as
    /usr/share/zoneinfo/posix/Asia/Makassar); None if it names no known zone."""
    name = text.strip().removeprefix(":")
    if "zoneinfo/" in name:
        name = name.rsplit("zoneinfo/", 1)[1]
        for variant in ("posix/", "right/"):
            name = name.removeprefix(variant)
    if not name or name.startswith("/"):
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return name


def _zone_of_copy(path: Path) -> str | None:
    """The zone whose zoneinfo file has the same bytes as `path` (an /etc/localtime copied
    rather than linked, as in many containers); None if none has."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    # Prefer the canonical names (zone.tab's, and Etc/UTC) to their aliases: Asia/Makassar,
    # not Asia/Ujung_Pandang.
    canonical = {"Etc/UTC"}
    for root in zoneinfo.TZPATH:
        try:
            table = (Path(root) / "zone.tab").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        canonical |= {f[2] for f in (r.split("\t") for r in table.splitlines()) if len(f) > 2}
    names = sorted(zoneinfo.available_timezones(), key=lambda n: (n not in canonical, n))
    for name in names:
        for root in zoneinfo.TZPATH:
            try:
                if (Path(root) / name).read_bytes() == data:
                    return name
            except OSError:
                continue
    return None


def box_timezone(
    env: Mapping[str, str] | None = None,
    etc_timezone: Path | None = None,
    localtime: Path | None = None,
) -> tuple[str, str | None]:
    """(IANA name, where it was read) of this machine's own time zone, from the first of: the
    TZ environment variable, /etc/timezone, /etc/localtime (a link into zoneinfo, or a copy
    of a zoneinfo file); None arguments stand for those. ("UTC", None) when none names a
    known zone."""
    env = os.environ if env is None else env
    etc_timezone = ETC_TIMEZONE if etc_timezone is None else etc_timezone
    localtime = ETC_LOCALTIME if localtime is None else localtime
    if env.get("TZ") and (name := _zone_name(env["TZ"])):
        return name, "TZ"
    try:
        first = etc_timezone.read_text(encoding="utf-8").strip().splitlines()[:1]
    except (OSError, UnicodeDecodeError):
        first = []
    if first and (name := _zone_name(first[0])):
        return name, str(etc_timezone)
    if localtime.is_symlink() and (name := _zone_name(os.path.realpath(localtime))):
        return name, str(localtime)
    if localtime.is_file() and (name := _zone_of_copy(localtime)):
        return name, str(localtime)
    return "UTC", None


def box_timezone_name() -> str:
    """The IANA name of this machine's own time zone (UTC when it cannot be read)."""
    return box_timezone()[0]


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
