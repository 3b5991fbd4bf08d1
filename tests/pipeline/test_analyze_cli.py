"""`pantau-agent analyze` end to end on real footage with the built default model, and the
clean one-line errors of the vision commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import pytest

from tests.conftest import cli

CONFIG = """
buffer: {path: %(tmp)s/outbox.db}
cameras:
  campus:
    analysis_fps: 25
    lines:
      middle: {points: [[320, 200], [320, 479]], classes: [person]}
    zones:
      left: {polygon: [[0, 150], [320, 150], [320, 479], [0, 479]], classes: [person],
             max_occupancy: 1, crowd_hold_seconds: 0.2}
"""


def _model_built() -> bool:
    from pantau.agent.vision.detect.store import ModelStore

    return "nanodet-m" in ModelStore().names()


@pytest.fixture
def video(shared_data: Path) -> Path:
    path = shared_data / "videos" / "TUD-Campus.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(CONFIG % {"tmp": tmp_path})
    return path


@pytest.mark.skipif(
    not _model_built(), reason="nanodet-m is not built: run `pantau-agent models build nanodet-m`"
)
def test_analyze_writes_counts_json_and_annotated_video(
    tmp_path: Path, video: Path, config: Path
) -> None:
    out, mp4 = tmp_path / "out.json", tmp_path / "out.mp4"
    r = cli(
        "pantau-agent",
        "analyze",
        str(video),
        "--config",
        str(config),
        "--camera",
        "campus",
        "--json",
        str(out),
        "--annotated",
        str(mp4),
        "--start",
        "2024-05-01T12:00:00Z",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert set(d) == {
        "camera",
        "frames_read",
        "frames_analyzed",
        "analysis_fps",
        "analysis_fps_reason",
        "wall_seconds",
        "lines",
        "zones",
        "alerts",
    }
    assert d["analysis_fps"] == 25 and d["analysis_fps_reason"] == "fixed"
    assert d["camera"] == "campus" and d["frames_read"] == 71 and d["frames_analyzed"] == 71
    line = d["lines"]["middle"]
    assert set(line) == {"in", "out", "by_class"}
    assert line["by_class"]["person"] == {"in": line["in"], "out": line["out"]}
    # TUD-Campus: a handful of people cross the middle of the view in 2.8 s.
    assert 1 <= line["in"] + line["out"] <= 10
    zone = d["zones"]["left"]
    assert 0.5 < zone["mean_occupancy"] <= zone["max_occupancy"] <= 8
    assert zone["by_class"]["person"]["max_occupancy"] == zone["max_occupancy"]
    crowd = [a for a in d["alerts"] if a["type"] == "crowd"]
    assert crowd and crowd[0]["zone"] == "left"
    assert crowd[0]["started_at"].startswith("2024-05-01T12:00:0")

    cap = cv2.VideoCapture(str(mp4))
    ok, frame = cap.read()
    assert ok and frame.shape == (480, 640, 3)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 71


def _error(r) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stderr


def test_points_outside_the_frame_exit_2(tmp_path: Path, video: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "cameras:\n  campus:\n    lines:\n      far: {points: [[100, 100], [900, 100]]}\n"
    )
    r = cli(
        "pantau-agent",
        "analyze",
        str(video),
        "--config",
        str(cfg),
        "--camera",
        "campus",
        "--json",
        str(tmp_path / "o.json"),
    )
    if "not in the store" in r.stderr:
        pytest.skip("no model built")
    err = _error(r)
    assert "cameras.campus.lines.far.points" in err and "outside the 640x480 frame" in err


def test_duplicate_rule_names_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(
        "cameras:\n  c:\n    lines:\n      door: {points: [[1, 1], [5, 5]]}\n"
        "    zones:\n      door: {polygon: [[0, 0], [9, 0], [9, 9]]}\n"
    )
    err = _error(
        cli(
            "pantau-agent",
            "analyze",
            "x.mp4",
            "--config",
            str(cfg),
            "--camera",
            "c",
            "--json",
            str(tmp_path / "o.json"),
        )
    )
    assert "duplicate rule names ['door']" in err


def test_missing_video_and_unknown_camera_exit_2(tmp_path: Path, config: Path) -> None:
    err = _error(
        cli(
            "pantau-agent",
            "analyze",
            str(tmp_path / "nope.mp4"),
            "--config",
            str(config),
            "--camera",
            "campus",
            "--json",
            str(tmp_path / "o.json"),
        )
    )
    assert "video file not found" in err
    err = _error(
        cli(
            "pantau-agent",
            "snapshot",
            "plaza",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "s.jpg"),
        )
    )
    assert "unknown camera 'plaza'" in err


def test_snapshot_and_reference(tmp_path: Path, video: Path) -> None:
    cfg = tmp_path / "a.yaml"
    cfg.write_text(
        f"buffer: {{path: {tmp_path}/var/outbox.db}}\ncameras:\n  campus:\n"
        f"    source: {video}\n    lines:\n"
        "      middle: {points: [[320, 200], [320, 479]]}\n"
    )
    r = cli(
        "pantau-agent", "snapshot", "campus", "--config", str(cfg), "--out", str(tmp_path / "s.jpg")
    )
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(tmp_path / "s.jpg")).shape == (480, 640, 3)
    r = cli("pantau-agent", "cameras", "reference", "campus", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "var" / "reference-campus.png").is_file()


def test_the_detector_section_reaches_the_detector(tmp_path: Path, video: Path) -> None:
    """`detector:` in the agent config sets the runtime of every camera: asking for CUDA on
    this CPU-only box is a clear one-line error, not a silent fallback to the CPU."""
    if not _model_built():
        pytest.skip("no model built")
    cfg = tmp_path / "cuda.yaml"
    cfg.write_text("detector: {provider: cuda}\ncameras:\n  campus: {}\n")
    err = _error(
        cli(
            "pantau-agent",
            "analyze",
            str(video),
            "--config",
            str(cfg),
            "--camera",
            "campus",
            "--json",
            str(tmp_path / "o.json"),
        )
    )
    assert "execution provider 'cuda'" in err and "not available" in err
    cfg.write_text("detector: {model: yolov3-tiny}\ncameras:\n  campus: {}\n")
    err = _error(
        cli(
            "pantau-agent",
            "analyze",
            str(video),
            "--config",
            str(cfg),
            "--camera",
            "campus",
            "--json",
            str(tmp_path / "o.json"),
        )
    )
    assert "detector: " in err and "set the model with `model`" in err


def test_cars_from_above_each_count_once(tmp_path: Path, shared_data: Path) -> None:
    """`car-detection.mp4` (30 s, road seen from straight above): four cars cross the middle
    of the frame, counted by eye frame by frame: two upwards ("in" for a line drawn left to
    right), two downwards. COCO models score cars from above at 0.2-0.5, so this camera
    lowers its tracker scores (as the example config shows). The detector's car, bus and
    truck boxes on one vehicle are merged by NMS: before that the first car counted twice.
    Measured at 5 fps: in 2, out 1 (the last car is first seen as a person)."""
    if not _model_built():
        pytest.skip("no model built")
    clip = shared_data / "videos" / "car-detection.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is missing")
    cfg = tmp_path / "road.yaml"
    cfg.write_text(
        "cameras:\n  road:\n    tracker: {high_score: 0.25, new_score: 0.25}\n"
        "    lines:\n      middle: {points: [[0, 216], [767, 216]], "
        "classes: [car, bus, truck, motorcycle]}\n"
    )
    out = tmp_path / "road.json"
    r = cli(
        "pantau-agent",
        "analyze",
        str(clip),
        "--config",
        str(cfg),
        "--camera",
        "road",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    middle = json.loads(out.read_text())["lines"]["middle"]
    assert middle["in"] == 2, middle  # no car counted twice
    assert 1 <= middle["out"] <= 2, middle


# `one-by-one-person-detection.mp4` (139.4 s, 10 fps, indoor camera behind a standing table):
# six people come in one at a time from below the frame, stand at the table and leave to the
# bottom right. Frames where each one's feet enter and leave the `table` zone below, read by
# eye at 0.5 s steps: (67, 190), (232, 438), (507, 692), (750, 857), (927, 1188), (1237, 1348).
VISITS = ((67, 190), (232, 438), (507, 692), (750, 857), (927, 1188), (1237, 1348))
VISIT_SECONDS = [(b - a) / 10 for a, b in VISITS]


def test_visits_one_at_a_time_are_each_counted_once(tmp_path: Path, shared_data: Path) -> None:
    """Entries, time inside and dwell of a zone against the hand-read visits above, at the
    default 5 fps. Measured: 6 entries, mean occupancy 0.693 (truth 0.712), mean dwell 16.0 s
    (truth 16.55 s)."""
    if not _model_built():
        pytest.skip("no model built")
    clip = shared_data / "videos" / "one-by-one-person-detection.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is missing")
    cfg = tmp_path / "room.yaml"
    cfg.write_text(
        "cameras:\n  room:\n    zones:\n      table:\n"
        "        polygon: [[230, 250], [560, 250], [560, 431], [230, 431]]\n"
        "        classes: [person]\n"
    )
    out = tmp_path / "room.json"
    r = cli(
        "pantau-agent",
        "analyze",
        str(clip),
        "--config",
        str(cfg),
        "--camera",
        "room",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    table = json.loads(out.read_text())["zones"]["table"]
    assert table["entries"] == len(VISITS), table
    assert table["max_occupancy"] == 1, table
    assert table["mean_occupancy"] == pytest.approx(sum(VISIT_SECONDS) / 139.4, abs=0.05)
    mean_dwell = sum(VISIT_SECONDS) / len(VISITS)
    assert table["mean_dwell_seconds"] == pytest.approx(mean_dwell, abs=1.5), table
    assert table["by_class"]["person"]["entries"] == len(VISITS)


# The plaza clip of Debian's opencv-doc (768x576, 795 frames, 10 fps) with two lines across the
# walkway, x = 320 (y 130..400) and x = 500 (y 130..420; people on the grass below pass under
# their ends): every crossing, read by eye frame by frame (frames where the feet pass the line;
# 'in' is walking right). Several people turn back; at x = 320 one stands 10 px from the line
# for 4 s (frames 405-447) before crossing; at x = 500 one walks down the line itself with his
# feet on it (frames 440-452, no crossing) and another steps 7 px over it and back (714, 720);
# a woman hidden behind a man until about frame 692 crosses x = 500 in at 704 (first missed by
# the reading, found when our one "extra" count was checked on a 4x zoom).
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
PLAZA = {
    "x320": (
        [[320, 130], [320, 400]],
        (9, 95, 302, 321, 335, 340, 449, 667, 686, 731, 771, 779),
        (68, 167, 187, 230, 266, 290, 304, 376, 502, 577, 653, 697, 719, 762, 781),
    ),
    "x500": (
        [[500, 130], [500, 420]],
        (91, 99, 118, 164, 179, 352, 368, 371, 484, 605, 683, 704, 720, 724, 766),
        (6, 16, 56, 68, 145, 163, 201, 234, 261, 269, 466, 522, 615, 645, 677, 685, 714, 733, 755),
    ),
}


@pytest.mark.parametrize(("fps", "max_error"), [(5, 0.10), (2, 0.15)])
def test_walkway_crossings_match_the_hand_count(tmp_path: Path, fps: int, max_error: float) -> None:
    """Counting error (sum over lines and directions of |counted - true|, over the true
    crossings) on the 61 hand-read crossings above, at the default 5 fps (target <= 10 %)
    and at 2 fps. Measured: x320 12 / 15 and x500 15 / 18 at 5 fps (1 error, 1.6 %: a
    crossing hidden by a man crossing the other way); 12 / 12 and 14 / 18 at 2 fps (5 errors,
    8.2 %; 32 before unconfirmed tracks were matched by centre distance: at 2 fps a walker's
    boxes no longer overlap)."""
    if not _model_built():
        pytest.skip("no model built")
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} is missing (Debian package opencv-doc)")
    lines = "".join(
        f"      {name}:\n        points: {points}\n        classes: [person]\n"
        for name, (points, _, _) in PLAZA.items()
    )
    cfg = tmp_path / "plaza.yaml"
    cfg.write_text(f"cameras:\n  plaza:\n    analysis_fps: {fps}\n    lines:\n{lines}")
    out = tmp_path / "plaza.json"
    r = cli(
        "pantau-agent",
        "analyze",
        str(VTEST),
        "--config",
        str(cfg),
        "--camera",
        "plaza",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    counted = json.loads(out.read_text())["lines"]
    errors = sum(
        abs(counted[name]["in"] - len(ins)) + abs(counted[name]["out"] - len(outs))
        for name, (_, ins, outs) in PLAZA.items()
    )
    true = sum(len(ins) + len(outs) for _, ins, outs in PLAZA.values())
    assert errors / true <= max_error, counted


# One camera's rules twice: in pixels of the 640x480 TUD-Campus frame, and as fractions of it
# (chosen exact in binary, so both forms place the rules on the very same pixels).
TWO_FORMS = """
buffer: {path: %(tmp)s/outbox.db}
cameras:
  px:
    source: %(video)s
    analysis_fps: 25
    lines:
      middle: {points: [[320, 210], [320, 480]], classes: [person]}
    zones:
      left: {polygon: [[0, 150], [320, 150], [320, 480], [0, 480]], classes: [person],
             restricted: {schedule: "18:00-06:00", hold_seconds: 0}}
  rel:
    source: %(video)s
    analysis_fps: 25
    lines:
      middle: {points: [[0.5, 0.4375], [0.5, 1]], classes: [person]}
    zones:
      left: {polygon: [[0, 0.3125], [0.5, 0.3125], [0.5, 1], [0, 1]], classes: [person],
             restricted: {schedule: "18:00-06:00", hold_seconds: 0}}
"""


@pytest.fixture
def two_forms(tmp_path: Path, video: Path) -> Path:
    path = tmp_path / "forms.yaml"
    path.write_text(TWO_FORMS % {"tmp": tmp_path, "video": video})
    return path


def test_rules_in_pixels_and_in_fractions_count_the_same(
    tmp_path: Path, video: Path, two_forms: Path
) -> None:
    """The same line and zone written in pixels and as fractions of the frame give identical
    counts, occupancy and alerts on real footage; at 23:00 in Makassar (WITA, the box's zone
    here by TZ) the night window is on, and the alert says in which zone it runs."""
    if not _model_built():
        pytest.skip("no model built")
    results = {}
    for camera in ("px", "rel"):
        out = tmp_path / f"{camera}.json"
        r = cli(
            "pantau-agent",
            "analyze",
            str(video),
            "--config",
            str(two_forms),
            "--camera",
            camera,
            "--json",
            str(out),
            "--start",
            "2024-05-01T23:00:00",
            env={**os.environ, "TZ": "Asia/Makassar"},
        )
        assert r.returncode == 0, r.stderr
        results[camera] = {
            k: v
            for k, v in json.loads(out.read_text()).items()
            if k not in ("camera", "wall_seconds")
        }
    assert results["rel"] == results["px"]
    line, zone = results["px"]["lines"]["middle"], results["px"]["zones"]["left"]
    assert line["in"] + line["out"] >= 1 and zone["entries"] >= 1  # a comparison of counts
    intrusion = [a for a in results["px"]["alerts"] if a["type"] == "intrusion"]
    # 23:00 WITA is 15:00 UTC.
    assert intrusion and intrusion[0]["started_at"].startswith("2024-05-01T15:00:0")


def test_snapshot_draws_rules_in_fractions_where_they_count(
    tmp_path: Path, two_forms: Path
) -> None:
    """`snapshot` draws rules written as fractions scaled to the frame: the very same image
    as the rules in pixels, with the lines and zones (names, in/out arrows) on it."""
    images = {}
    for camera in ("px", "rel"):
        shot = tmp_path / f"{camera}.png"
        r = cli("pantau-agent", "snapshot", camera, "--config", str(two_forms), "--out", str(shot))
        assert r.returncode == 0, r.stderr
        images[camera] = cv2.imread(str(shot))
    assert "rule points: relative (every point within 0-1" in r.stdout
    assert images["rel"].shape == (480, 640, 3)
    assert (images["rel"] == images["px"]).all()
    # The line is drawn down the middle of the frame, in the line colour (BGR yellow).
    column = images["rel"][300:470, 319:322].reshape(-1, 3).astype(int)
    assert ((column[:, 0] < 80) & (column[:, 1] > 200) & (column[:, 2] > 200)).mean() > 0.9


def test_config_shows_the_units_and_time_zone_in_force(tmp_path: Path, two_forms: Path) -> None:
    r = cli(
        "pantau-agent", "config", "-c", str(two_forms), env={**os.environ, "TZ": "Asia/Makassar"}
    )
    assert r.returncode == 0, r.stderr
    settings = json.loads(r.stdout)
    assert settings["timezone"] == "Asia/Makassar"
    assert settings["cameras"]["rel"]["units"] == "relative"
    assert settings["cameras"]["px"]["units"] == "pixels"
    assert settings["cameras"]["rel"]["zones"]["left"]["restricted"]["timezone"] == "Asia/Makassar"
    for line in (
        "timezone: Asia/Makassar (the box's own, from TZ)",
        "cameras.rel: rule points relative (every point within 0-1",
        "cameras.px: rule points pixels (points beyond 1)",
        "cameras.rel.zones.left: restricted 18:00-06:00 Asia/Makassar",
    ):
        assert line in r.stderr, r.stderr
    assert "warning" not in r.stderr


def test_rules_in_two_forms_on_one_camera_are_warned_and_bad_fractions_refused(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "mixed.yaml"
    cfg.write_text(
        "cameras:\n  c:\n    lines:\n      m: {points: [[320, 0], [320, 480]]}\n"
        "    zones:\n      z: {polygon: [[0, 0.5], [0.5, 0.5], [0.5, 1]]}\n"
    )
    r = cli("pantau-agent", "config", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert (
        "warning: cameras.c.zones.z.polygon: [(0.0, 0.5), (0.5, 0.5), (0.5, 1.0)] -> read "
        "as pixels (another rule of this camera has points beyond 1)" in r.stderr
    )
    cfg.write_text(
        "cameras:\n  c:\n    units: relative\n"
        "    lines:\n      m: {points: [[320, 0], [320, 480]]}\n"
    )
    err = _error(cli("pantau-agent", "config", "-c", str(cfg)))
    assert "cameras.c:" in err
    assert "lines.m.points has [(320.0, 0.0), (320.0, 480.0)] outside 0-1" in err
