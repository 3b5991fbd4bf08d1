"""The IANA time zones that restricted zones' daily windows are read in: checking names, and
the box's own time zone, the agent's default. The windows themselves (DailyWindow,
parse_daily_window) live in pantau.agent.wire.schedule, shared with central's count rules."""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pantau.agent.wire.schedule import DailyWindow, parse_daily_window

__all__ = ["DailyWindow", "box_timezone", "box_timezone_name", "check_timezone",
           "parse_daily_window"]  # fmt: skip

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
