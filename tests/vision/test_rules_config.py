import pytest
from pantau.agent.config.agent import CameraConfig
from pantau.agent.config.rules import LineConfig, ZoneConfig, class_ids
from pantau.agent.config.tuning import HealthConfig, MotionConfig, TrackerConfig
from pantau.agent.pipeline.camera import CameraAnalytics
from pantau.agent.rules.lines import LineCounter
from pantau.agent.rules.zones import CrowdRule, IntrusionRule, LoiterRule, ZoneMonitor
from pydantic import ValidationError


def errors(cls, **data) -> str:
    with pytest.raises(ValidationError) as info:
        cls(**data)
    return str(info.value)


def test_line_config_and_build():
    cfg = LineConfig(points=[[300, 140], [300, 440]], classes=["person"])
    counter = LineCounter.from_config(cfg, ("person", "bicycle", "car"))
    assert isinstance(counter, LineCounter) and counter.classes == {0}
    every_class = LineCounter.from_config(LineConfig(points=[[0, 0], [1, 1]])).classes
    assert every_class == {0, 1, 2, 3, 5, 7}
    assert cfg.frame_errors(640, 480) == []
    assert "outside the 200x200 frame" in cfg.frame_errors(200, 200, "cameras.plaza.lines.w")[0]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"points": [[1, 1]]}, "exactly 2 points"),
        ({"points": [[1, 1], [1, 1]]}, "must differ"),
        ({"points": [[0, 0], [1, 1]], "classes": ["unicorn"]}, "unknown classes"),
        ({"points": [[0, 0], [1, 1]], "colour": "red"}, "Extra inputs"),
        ({"points": [[0, 0], [1, 1]], "min_frames": 0}, "greater than or equal"),
    ],
)
def test_line_config_errors(data, message):
    assert message in errors(LineConfig, **data)


def test_zone_config_and_build():
    cfg = ZoneConfig(
        polygon=[[450, 200], [767, 200], [767, 480], [450, 380]],
        classes=["person", "car"],
        max_occupancy=20,
        loiter_seconds=120,
        restricted={"schedule": "18:00-06:00", "timezone": "Asia/Jakarta"},
    )
    zone = ZoneMonitor.from_config(cfg, rule="road")
    assert isinstance(zone, ZoneMonitor) and zone.classes == {0, 2}
    assert [type(r) for r in zone.rules] == [CrowdRule, LoiterRule, IntrusionRule]
    assert cfg.frame_errors(768, 480) == []
    assert cfg.frame_errors(640, 480)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"polygon": [[0, 0], [1, 1]]}, "at least 3 points"),
        ({"polygon": [[0, 0], [1, 1], [2, 2]]}, "no area"),
        ({"polygon": [[0, 0], [10, 10], [10, 0], [0, 10]]}, "crosses itself"),
        ({"polygon": [[0, 0], [9, 0], [0, 9]], "restricted": {"schedule": "late"}}, "HH:MM"),
        (
            {
                "polygon": [[0, 0], [9, 0], [0, 9]],
                "restricted": {"schedule": "18:00-06:00", "timezone": "Mars/Base"},
            },
            "unknown timezone",
        ),
        ({"polygon": [[0, 0], [9, 0], [0, 9]], "classes": []}, "must not be empty"),
    ],
)
def test_zone_config_errors(data, message):
    assert message in errors(ZoneConfig, **data)


def test_every_field_is_described():
    for model in (LineConfig, ZoneConfig, TrackerConfig, MotionConfig, HealthConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_class_ids_against_model_names():
    assert class_ids(["car"], ("person", "car")) == [1]
    with pytest.raises(KeyError):
        class_ids(["truck"], ("person", "car"))


def test_camera_tracker_settings_reach_the_tracker():
    camera = CameraConfig(tracker={"high_score": 0.3, "new_score": 0.35, "lost_seconds": 4})
    tracker = CameraAnalytics("overpass", camera, ("person",)).tracker
    assert (tracker.high_score, tracker.new_score, tracker.lost_seconds) == (0.3, 0.35, 4.0)
    assert "low_score 0.4 is above high_score 0.3" in errors(
        TrackerConfig, high_score=0.3, low_score=0.4
    )
    assert "greater than or equal to 0.1" in errors(TrackerConfig, new_score=0.05)


def test_a_live_cameras_first_frame_checks_the_rules(caplog):
    """A live camera's size is known from its first frame only: rules outside it are logged
    and reported in every health message (a line there would count zero in silence)."""
    import numpy as np

    camera = CameraConfig(lines={"gate": {"points": [[10, 10], [900, 10]]}})
    analytics = CameraAnalytics("plaza", camera, ("person",))
    analytics.process(0.0, np.zeros((480, 640, 3), np.uint8), None)
    assert analytics.frame_size == (640, 480)
    assert analytics.config_errors == [
        "cameras.plaza.lines.gate.points: [(900.0, 10.0)] -> outside the 640x480 frame"
    ]
    assert "outside the 640x480 frame" in caplog.text
    health = analytics.health_payload(5.0, 60.0, frames_read=1)
    assert health.details["config_errors"] == analytics.config_errors
    analytics.process(0.2, np.zeros((720, 1280, 3), np.uint8), None)  # reconfigured camera
    assert analytics.config_errors == []


def test_a_live_agent_keeps_only_its_newest_alerts():
    """Months of alerts must not pile up in a live agent's memory: it keeps the newest
    `alert_history` (all of them still leave on MQTT) and a running count."""
    import numpy as np

    analytics = CameraAnalytics(
        "plaza", CameraConfig(health={"offline_seconds": 1}), (), alert_history=3
    )
    frame = np.zeros((48, 64, 3), np.uint8)
    alerts = analytics.process(0.0, frame, None)
    for k in range(10):  # the camera goes offline and comes back, ten times
        alerts += analytics.tick(10.0 * k + 5.0)
        alerts += analytics.process(10.0 * k + 6.0, frame, None)
    offline = [a for a in alerts if a.type == "camera_offline" and a.state == "raised"]
    assert len(offline) == 10
    assert analytics.totals.alerts_raised == sum(a.state == "raised" for a in alerts)
    assert len(analytics.totals.alerts) == 3


def test_a_zone_in_fractions_of_the_frame_covers_that_part_of_the_frame():
    """Regression: a zone written as fractions 0-1 of the frame (as Frigate allows) used to
    validate and then sit in the top-left pixel, counting nothing, in silence."""
    import numpy as np

    from tests.vision.helpers import tracks

    camera = CameraConfig(zones={"left": {"polygon": [[0, 0.5], [0.5, 0.5], [0.5, 1], [0, 1]]}})
    analytics = CameraAnalytics("plaza", camera, ("person",))
    analytics.process(0.0, np.zeros((480, 640, 3), np.uint8), None)
    zone = analytics.zones["left"]
    assert zone.inside(tracks((1, 160, 400))).tolist() == [True]  # feet in the lower left
    assert zone.inside(tracks((2, 480, 400), (3, 160, 100))).tolist() == [False, False]


HALF_LINE = {"points": [[0.5, 0], [0.5, 1]]}
LEFT_HALF = {"polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}


def test_a_camera_reads_its_rules_as_fractions_only_when_every_point_lies_within_0_1():
    assert CameraConfig(lines={"m": HALF_LINE}, zones={"l": LEFT_HALF}).units_in_force == "relative"
    mixed = CameraConfig(
        lines={"m": HALF_LINE}, zones={"l": {"polygon": [[0, 0], [320, 0], [320, 480]]}}
    )
    assert mixed.units_in_force == "pixels" and not mixed.relative
    assert CameraConfig().units_in_force is None
    # The explicit setting wins over the reading.
    assert CameraConfig(lines={"m": HALF_LINE}, units="pixels").units_in_force == "pixels"
    assert CameraConfig(lines={"m": {"points": [[0, 0], [0.5, 0.5]]}}, units="relative").relative


def test_rules_degenerate_as_read_are_warned_and_fractions_beyond_1_refused():
    mixed = CameraConfig(
        lines={"m": HALF_LINE}, zones={"l": {"polygon": [[0, 0], [320, 0], [320, 480]]}}
    )
    assert mixed.rule_warnings("cameras.c") == [
        "cameras.c.lines.m.points: [(0.5, 0.0), (0.5, 1.0)] -> read as pixels (another rule "
        "of this camera has points beyond 1), so this rule covers about one pixel; write "
        "every rule of the camera as fractions 0-1, or all in pixels"
    ]
    forced = CameraConfig(zones={"l": LEFT_HALF}, units="pixels").rule_warnings("cameras.c")
    assert len(forced) == 1 and "(units is pixels)" in forced[0]
    assert CameraConfig(zones={"l": LEFT_HALF}).rule_warnings("cameras.c") == []
    message = errors(CameraConfig, lines={"m": {"points": [[0, 0], [640, 1]]}}, units="relative")
    assert "lines.m.points has [(640.0, 1.0)] outside 0-1" in message


def test_relative_rules_follow_the_frame_size_and_pixel_rules_stay():
    """A stream switched from 640x480 to its 1280x720 main stream: the relative line stays
    in the middle of the view, and the counter keeps its tracks' state."""
    import numpy as np

    camera = CameraConfig(lines={"m": HALF_LINE}, zones={"l": LEFT_HALF})
    analytics = CameraAnalytics("plaza", camera, ("person",))
    analytics.process(0.0, np.zeros((480, 640, 3), np.uint8), None)
    line, zone = analytics.lines["m"], analytics.zones["l"]
    assert line.start.tolist() == [320, 0] and line.end.tolist() == [320, 480]
    assert zone.polygon.tolist() == [[0, 0], [320, 0], [320, 480], [0, 480]]
    analytics.process(0.2, np.zeros((720, 1280, 3), np.uint8), None)
    assert line.start.tolist() == [640, 0] and line.end.tolist() == [640, 720]
    assert zone.polygon.tolist() == [[0, 0], [640, 0], [640, 720], [0, 720]]
    assert analytics.config_errors == []
    pixels = CameraAnalytics("p", CameraConfig(lines={"m": {"points": [[320, 0], [320, 480]]}}))
    pixels.process(0.0, np.zeros((720, 1280, 3), np.uint8), None)
    assert pixels.lines["m"].start.tolist() == [320, 0]


def test_a_relative_rule_is_never_used_before_it_knows_the_frame():
    from tests.vision.helpers import tracks

    line = LineCounter.from_config(LineConfig(**HALF_LINE), relative=True)
    with pytest.raises(RuntimeError, match="fit"):
        line.update(tracks((1, 10, 10)), 0.0)
    zone = ZoneMonitor.from_config(ZoneConfig(**LEFT_HALF), relative=True)
    with pytest.raises(RuntimeError, match="fit"):
        zone.update(tracks((1, 10, 10)), 0.0)
