import zoneinfo
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from pantau.agent.rules.schedule import DailyWindow, parse_daily_window
from pantau.agent.rules.zones import (
    CrowdRule,
    IntrusionRule,
    LoiterRule,
    ZoneMonitor,
)
from pantau.agent.vision.detections import Tracks
from pantau.agent.vision.geometry import Polygon

from .helpers import tracks

SQUARE = [(0, 0), (100, 0), (100, 100), (0, 100)]
IN_PT, OUT_PT = (50, 50), (200, 50)


def test_polygon_concave_and_outside_the_bounding_box():
    u_shape = Polygon([(0, 0), (30, 0), (30, 20), (60, 20), (60, 0), (90, 0), (90, 50), (0, 50)])
    pts = [(10, 10), (45, 10), (45, 30), (100, 10), (45, -5), (45, 60)]
    expected = [True, False, True, False, False, False]
    assert [u_shape.contains(x, y) for x, y in pts] == expected


def test_occupancy_time_weighted_mean_and_max():
    zone = ZoneMonitor(SQUARE, classes=[0])
    # 0-10 s: one inside; 10-40 s: three inside (frames 1 s apart); bucket ends at 60 s, the
    # last frame (at 40 s) holds... but frames stop at 40 s, then one more at 59 s with none.
    for t in range(0, 10):
        zone.update(tracks((1, *IN_PT)), float(t))
    for t in range(10, 40):
        zone.update(tracks((1, *IN_PT), (2, *IN_PT), (3, *IN_PT)), float(t))
    for t in range(40, 60):
        zone.update(Tracks.empty(), float(t))
    bucket = zone.close_bucket(60.0)
    stats = bucket.by_class[0]
    assert bucket.observed_seconds == pytest.approx(60.0)
    assert stats.occupancy_mean == pytest.approx((1 * 10 + 3 * 30) / 60)
    assert stats.occupancy_max == 3
    # Next bucket starts empty and closes with zeros.
    assert zone.close_bucket(120.0).by_class[0].occupancy_mean == 0.0


def test_gap_is_not_observed_time():
    zone = ZoneMonitor(SQUARE, max_gap_seconds=5)
    zone.update(tracks((1, *IN_PT)), 0.0)
    zone.update(tracks((1, *IN_PT)), 1.0)
    zone.update(tracks((1, *IN_PT)), 30.0)  # camera was down for 29 s
    assert zone.close_bucket(31.0).observed_seconds == pytest.approx(2.0)


def test_a_bucket_close_does_not_split_a_long_gap_into_short_ones():
    # Frames stop at 57 s and resume at 64 s: a 7 s gap, longer than max_gap_seconds. The
    # close at 60 s may count 57-60 (the gap could still have been short), but 60-64 must
    # not count as observed, nor the occupancy of 57 s spread over it.
    zone = ZoneMonitor(SQUARE, max_gap_seconds=5)
    for t in range(0, 58):
        zone.update(tracks((1, *IN_PT)), float(t))
    assert zone.close_bucket(60.0).observed_seconds == pytest.approx(60.0)
    zone.update(Tracks.empty(), 64.0)
    zone.update(Tracks.empty(), 65.0)
    bucket = zone.close_bucket(66.0)
    assert bucket.observed_seconds == pytest.approx(2.0)
    assert bucket.by_class[0].occupancy_mean == 0.0


def test_unconfirmed_and_other_classes_are_not_counted():
    zone = ZoneMonitor(SQUARE, classes=[0])
    zone.update(tracks((1, *IN_PT), confirmed=False), 0.0)
    zone.update(tracks((2, *IN_PT, 2)), 1.0)
    assert zone.close_bucket(2.0).by_class[0].occupancy_max == 0


def test_dwell_of_tracks_that_left_with_p90():
    zone = ZoneMonitor(SQUARE, exit_seconds=1.0)
    dwell = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # seconds, one track each
    for tid, d in enumerate(dwell):
        t0 = tid * 100.0
        for k in range(int(d * 5) + 1):
            zone.update(tracks((tid, *IN_PT)), t0 + k * 0.2)
        for k in range(1, 10):  # walks out; leaves after exit_seconds
            zone.update(tracks((tid, *OUT_PT)), t0 + d + k * 0.2)
    stats = zone.close_bucket(2000.0).by_class[0]
    assert stats.dwell_count == 10
    assert stats.dwell_mean == pytest.approx(11.0)
    assert stats.dwell_p90 == pytest.approx(np.percentile(dwell, 90))
    assert stats.dwell_max == pytest.approx(20.0)


def test_short_miss_does_not_split_a_visit_and_forget_ends_it():
    zone = ZoneMonitor(SQUARE, exit_seconds=1.0)
    zone.update(tracks((1, *IN_PT)), 0.0)
    zone.update(Tracks.empty(), 0.6)  # one missed detection
    zone.update(tracks((1, *IN_PT)), 1.2)
    zone.update(tracks((1, *IN_PT)), 3.0)
    zone.forget([1])
    stats = zone.close_bucket(10.0).by_class[0]
    assert (stats.dwell_count, stats.dwell_max) == (1, pytest.approx(3.0))


def test_entries_count_each_visit_once_across_buckets():
    zone = ZoneMonitor(SQUARE, exit_seconds=1.0)
    zone.update(tracks((1, *IN_PT)), 0.0)
    zone.update(Tracks.empty(), 0.6)  # a missed detection is no new visit
    zone.close_bucket(1.0)  # nor is a bucket boundary
    zone.update(tracks((1, *IN_PT), (2, *OUT_PT)), 1.2)
    zone.update(tracks((1, *OUT_PT), (2, *OUT_PT)), 3.0)  # 1 left ...
    zone.update(tracks((1, *IN_PT), (2, *IN_PT)), 4.0)  # ... and came back; 2 came in
    assert zone.entries == {0: 3}


def test_crowd_raises_after_hold_and_clears_with_hysteresis():
    zone = ZoneMonitor(SQUARE, rules=[CrowdRule(2, hold_seconds=5, clear_seconds=3)])
    many = tracks((1, *IN_PT), (2, *IN_PT), (3, *IN_PT))
    two = tracks((1, *IN_PT), (2, *IN_PT))
    one = tracks((1, *IN_PT))
    events = []
    for t in range(0, 5):
        events += zone.update(many, float(t))
    assert events == []
    events = zone.update(many, 5.0)
    assert [(e.type, e.state, e.started_at) for e in events] == [("crowd", "raised", 0.0)]
    raised = events[0]
    # Two inside is not above the limit but not below it with hysteresis: still raised.
    assert all(zone.update(two, float(t)) == [] for t in range(6, 20))
    assert zone.update(one, 20.0) == [] and zone.update(one, 22.0) == []
    events = zone.update(one, 23.0)
    assert [(e.state, e.ended_at, e.alert_id) for e in events] == [
        ("cleared", 20.0, raised.alert_id)
    ]


def test_loitering_per_track_raises_and_clears_when_it_leaves():
    zone = ZoneMonitor(SQUARE, exit_seconds=1.0, rules=[LoiterRule(10)])
    events = []
    for k in range(0, 50):
        events += zone.update(tracks((1, *IN_PT), (2, *OUT_PT)), k * 0.2)
    assert events == []
    events = []
    for k in range(50, 100):
        events += zone.update(tracks((1, *IN_PT)), k * 0.2)
    assert [(e.type, e.state, e.details["track_id"]) for e in events] == [
        ("loitering", "raised", 1)
    ]
    events = []
    for k in range(100, 120):
        events += zone.update(tracks((1, *OUT_PT)), k * 0.2)
    assert [(e.state, e.ended_at) for e in events] == [("cleared", pytest.approx(19.8))]


def test_intrusion_window_wraps_midnight_in_timezone():
    jakarta = ZoneInfo("Asia/Jakarta")
    window = DailyWindow("18:00-06:00", "Asia/Jakarta")
    assert window.contains(datetime(2026, 1, 1, 23, 0, tzinfo=jakarta))
    assert window.contains(datetime(2026, 1, 1, 5, 59, tzinfo=jakarta))
    assert not window.contains(datetime(2026, 1, 1, 6, 0, tzinfo=jakarta))
    assert not window.contains(datetime(2026, 1, 1, 12, 0, tzinfo=jakarta))
    # 12:00 UTC is 19:00 in Jakarta.
    assert window.contains(datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc))
    assert window.contains(datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp())
    assert DailyWindow("00:00-24:00").contains(datetime(2026, 1, 1, 13, 0))
    assert DailyWindow("08:00-17:00").contains(datetime(2026, 1, 1, 8, 0))
    for bad in ("18:00", "25:00-06:00", "18:00-18:00", "6-7"):
        with pytest.raises(ValueError):
            parse_daily_window(bad)


def test_intrusion_raises_at_night_and_clears_after_empty_hold():
    window = DailyWindow("18:00-06:00", "UTC")
    rule = IntrusionRule(window, hold_seconds=2, clear_seconds=10, rule="mine")
    zone = ZoneMonitor(SQUARE, rules=[rule])
    day = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp()
    night = datetime(2026, 1, 1, 22, 0, tzinfo=timezone.utc).timestamp()
    assert all(zone.update(tracks((1, *IN_PT)), day + k) == [] for k in range(10))
    events = []
    for k in range(0, 4):
        events += zone.update(tracks((1, *IN_PT)), night + k)
    assert [(e.type, e.state, e.severity, e.rule) for e in events] == [
        ("intrusion", "raised", "critical", "mine")
    ]
    events = []
    for k in range(4, 30):
        events += zone.update(Tracks.empty(), night + k)
    assert [(e.state, e.ended_at - night) for e in events] == [("cleared", 4.0)]


def test_intrusion_clears_when_window_ends():
    rule = IntrusionRule(DailyWindow("18:00-06:00", "UTC"), hold_seconds=0)
    zone = ZoneMonitor(SQUARE, rules=[rule])
    t = datetime(2026, 1, 2, 5, 59, 58, tzinfo=timezone.utc).timestamp()
    assert [e.state for e in zone.update(tracks((1, *IN_PT)), t)] == ["raised"]
    assert [e.state for e in zone.update(tracks((1, *IN_PT)), t + 3)] == ["cleared"]


def test_zone_needs_three_points():
    with pytest.raises(ValueError):
        ZoneMonitor([(0, 0), (1, 1)])


MAKASSAR = ZoneInfo("Asia/Makassar")  # WITA, UTC+8, no daylight saving


def _intrusions_at(settings, hour: int, minute: int) -> list[str]:
    """Alert states of a person standing 2 s in a restricted zone, from `hour:minute` on
    1 May 2024 in Makassar, through the camera pipeline with the agent's settings."""
    from pantau.agent.pipeline.camera import CameraAnalytics

    from .helpers import dets

    analytics = CameraAnalytics(
        "gate", settings.cameras["gate"], ("person",), timezone_name=settings.timezone
    )
    start = datetime(2024, 5, 1, hour, minute, tzinfo=MAKASSAR).timestamp()
    frame = np.zeros((480, 640, 3), np.uint8)
    alerts = []
    for k in range(10):
        alerts += analytics.process(start + k * 0.2, frame, dets([(300, 200, 340, 300)]))
    return [f"{a.type} {a.state} {a.details['schedule']} {a.details['timezone']}" for a in alerts]


@pytest.mark.parametrize(
    "box_zone, configured",
    [
        ("Asia/Makassar", None),  # the default: the box's own zone
        ("America/New_York", "Asia/Makassar"),  # set in the config: the box's zone is irrelevant
        ("UTC", "Asia/Makassar"),
    ],
)
def test_a_night_window_across_midnight_runs_in_local_time(monkeypatch, box_zone, configured):
    """At the capital (WITA) a '18:00-06:00' window must be 18:00-06:00 local, not UTC: an
    object at 23:30 and at 05:30 local raises an intrusion, one at 12:00 local does not."""
    from pantau.agent.config.agent import AgentSettings

    monkeypatch.setenv("TZ", box_zone)
    zone = {
        "polygon": [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]],
        "restricted": {"schedule": "18:00-06:00", "hold_seconds": 0},
    }
    extra = {} if configured is None else {"timezone": configured}
    settings = AgentSettings(cameras={"gate": {"zones": {"yard": zone}}}, **extra)
    assert settings.timezone == "Asia/Makassar"
    raised = ["intrusion raised 18:00-06:00 Asia/Makassar"]
    assert _intrusions_at(settings, 23, 30) == raised
    assert _intrusions_at(settings, 5, 30) == raised
    assert _intrusions_at(settings, 12, 0) == []
    assert _intrusions_at(settings, 6, 0) == []  # the end is excluded


def test_the_box_time_zone_is_read_from_tz_then_etc_timezone_then_localtime(tmp_path):
    from pantau.agent.rules.schedule import box_timezone

    etc_tz, localtime = tmp_path / "timezone", tmp_path / "localtime"
    zoneinfo_file = next(
        Path(root) / "Asia" / "Makassar"
        for root in zoneinfo.TZPATH
        if (Path(root) / "Asia" / "Makassar").is_file()
    )

    def read(env: dict[str, str]) -> tuple[str, str | None]:
        return box_timezone(env, etc_tz, localtime)

    assert read({}) == ("UTC", None)  # nothing to read: UTC, and the caller warns
    localtime.write_bytes(zoneinfo_file.read_bytes())  # a copy, as in many containers
    assert read({}) == ("Asia/Makassar", str(localtime))
    localtime.unlink()
    localtime.symlink_to(zoneinfo_file)
    assert read({}) == ("Asia/Makassar", str(localtime))
    etc_tz.write_text("Asia/Jayapura\n")
    assert read({}) == ("Asia/Jayapura", str(etc_tz))
    assert read({"TZ": ":Asia/Jakarta"}) == ("Asia/Jakarta", "TZ")
    assert read({"TZ": "/usr/share/zoneinfo/posix/Asia/Jakarta"}) == ("Asia/Jakarta", "TZ")
    # A POSIX rule or a typo names no IANA zone: the next source is read.
    assert read({"TZ": "WITA-8"}) == ("Asia/Jayapura", str(etc_tz))
    etc_tz.write_text("Mars/Base\n")
    assert read({"TZ": "Nowhere/City"}) == ("Asia/Makassar", str(localtime))


def test_an_unreadable_box_zone_falls_back_to_utc_with_a_warning(monkeypatch):
    from pantau.agent.config.agent import AgentSettings
    from pantau.agent.rules import schedule

    monkeypatch.setenv("TZ", "WITA-8")
    monkeypatch.setattr(schedule, "ETC_TIMEZONE", Path("/nonexistent/timezone"))
    monkeypatch.setattr(schedule, "ETC_LOCALTIME", Path("/nonexistent/localtime"))
    settings = AgentSettings()
    assert settings.timezone == "UTC" and settings.timezone_source() is None
    assert any(
        w.startswith("timezone: 'UTC' -> the box's time zone could not be read")
        for w in settings.warnings()
    )
    assert AgentSettings(timezone="Asia/Makassar").warnings() == []
