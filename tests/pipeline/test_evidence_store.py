"""The agent's evidence, without a broker: privacy pixelation touches only heads and plates,
every kept JPEG fits one MQTT message, the store keeps to its retention and size cap (and says
`expired` afterwards), and the recorder keeps the frames around a raise from real footage."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pantau.agent.config.agent import CameraConfig, EvidenceSettings
from pantau.agent.evidence.frames import pixelate, privacy_regions, render
from pantau.agent.evidence.recorder import EvidenceRecorder, EvidenceWriter
from pantau.agent.evidence.store import EvidenceStore
from pantau.agent.vision.capture import Frame
from pantau.agent.vision.detections import DEFAULT_CLASSES, Tracks
from pantau.agent.wire.paths import research_data
from pantau.agent.wire.protocol import MAX_EVIDENCE_JPEG_BYTES, AlertPayload, utcnow

CAMPUS = research_data() / "tud" / "TUD-Campus"
# COCO ids 0-7 by name (4 and 6 are classes Pantau does not count).
NAMES = tuple(next((n for n, i in DEFAULT_CLASSES.items() if i == k), "other") for k in range(8))


def campus_frame(number: int = 1) -> tuple[np.ndarray, Tracks]:
    """A real TUD-Campus frame and its ground-truth people as confirmed tracks."""
    image = cv2.imread(str(CAMPUS / "img1" / f"{number:06d}.jpg"))
    if image is None:
        pytest.skip(f"TUD-Campus frames not found under {CAMPUS} (set PANTAU_TEST_DATA)")
    rows = np.loadtxt(CAMPUS / "gt" / "gt.txt", delimiter=",")
    rows = rows[rows[:, 0] == number]
    boxes = np.column_stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4],
                             rows[:, 3] + rows[:, 5]]).astype(np.float32)  # fmt: skip
    return image, tracks_of(boxes, ["person"] * len(boxes))


def tracks_of(boxes: np.ndarray, classes: list[str]) -> Tracks:
    n = len(boxes)
    return Tracks(
        np.arange(1, n + 1, dtype=np.int64),
        np.asarray(boxes, np.float32).reshape(n, 4),
        np.array([NAMES.index(c) for c in classes], np.int32),
        np.ones(n, np.float32),
        np.ones(n, bool),
        NAMES,
    )


def test_pixelation_changes_heads_and_plates_only() -> None:
    image, people = campus_frame()
    car = np.array([[10, 380, 200, 470]], np.float32)  # a vehicle box on the pavement
    tracks = tracks_of(np.vstack([people.xyxy, car]), ["person"] * len(people) + ["car"])
    regions = privacy_regions(tracks, image.shape, faces=True, plates=True)
    assert len(regions) == len(tracks)
    blurred = pixelate(image.copy(), regions)
    changed = np.any(blurred != image, axis=2)
    inside = np.zeros(changed.shape, bool)
    for x1, y1, x2, y2 in regions:
        inside[y1:y2, x1:x2] = True
        # Each region really is scrambled, not nudged: most of its pixels differ.
        assert changed[y1:y2, x1:x2].mean() > 0.5
    assert not changed[~inside].any()  # nothing outside the regions moved
    # Heads are the top of a person's box, the plate the lower middle of the car's.
    x1, y1, x2, y2 = people.xyxy[0]
    assert regions[0][1] == int(y1) and regions[0][3] <= y1 + 0.26 * (y2 - y1) + 1
    cx1, cy1, cx2, _ = regions[-1]
    assert cy1 >= 380 + 0.5 * 90 and cx1 > 10 and cx2 < 200
    # Switched off, nothing is blurred.
    assert privacy_regions(tracks, image.shape, faces=False, plates=False) == []
    assert len(privacy_regions(tracks, image.shape, faces=False, plates=True)) == 1


def test_render_draws_and_fits_one_message() -> None:
    image, tracks = campus_frame()
    jpeg, size = render(image, tracks, CameraConfig(), EvidenceSettings())
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[1::-1] == size == (640, 480)
    # Noise does not compress: a 4K frame of it is brought under the message limit.
    noise = np.random.default_rng(1).integers(0, 256, (2160, 3840, 3), np.uint8)
    jpeg, size = render(noise, Tracks.empty(NAMES), CameraConfig(), EvidenceSettings())
    assert len(jpeg) <= MAX_EVIDENCE_JPEG_BYTES
    assert max(size) <= 1280 and cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1) is not None


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def fill(store: EvidenceStore, alert_id: str, at: float, frames: int = 2, size: int = 1000
         ) -> None:  # fmt: skip
    store.add_alert(alert_id, "cam", "intrusion", at)
    for i in range(frames):
        assert store.add_frame(alert_id, i, at + i, float(i), (64, 48), bytes([i]) * size)


def test_store_keeps_to_retention_and_size_cap(tmp_path: Path) -> None:
    clock = Clock()
    store = EvidenceStore(tmp_path / "ev", max_bytes=5000, retention_seconds=3600, clock=clock)
    fill(store, "a1", clock.t)
    clock.t += 1800
    fill(store, "a2", clock.t)
    found = store.lookup("a1")
    assert found.status == "ok" and [f.jpeg[:1] for f in found.frames] == [b"\0", b"\1"]
    assert found.camera == "cam" and found.alert_type == "intrusion"
    assert store.lookup("a1", camera="other").status == "not_found"
    assert store.lookup("nope").status == "not_found"
    assert store.lookup("../etc").status == "not_found"  # ids never reach the file system

    # Retention: a1 is past it an hour after it was raised; its folder goes with it.
    clock.t += 1801
    gone = store.lookup("a1")
    assert gone.status == "expired" and "retention" in gone.detail
    assert not (tmp_path / "ev" / "a1").exists() and (tmp_path / "ev" / "a2").is_dir()
    assert store.lookup("a2").status == "ok"

    # Size cap: a3 and a4 (2,000 bytes each) with a2 exceed 5,000: the oldest, a2, goes.
    fill(store, "a3", clock.t)
    fill(store, "a4", clock.t + 1)
    assert store.alerts() == ["a3", "a4"] and store.size_bytes() <= 5000
    assert store.lookup("a2").status == "expired" and "full" in store.lookup("a2").detail
    assert not store.add_frame("a2", 5, clock.t, 0.0, (64, 48), b"x")  # dropped stays dropped
    store.close()

    # Reopened, the index and files agree; a folder the index does not know is removed.
    (tmp_path / "ev" / "stray").mkdir()
    store = EvidenceStore(tmp_path / "ev", max_bytes=5000, retention_seconds=3600, clock=clock)
    assert store.alerts() == ["a3", "a4"] and not (tmp_path / "ev" / "stray").exists()
    assert len(store.lookup("a4").frames) == 2
    store.close()


def alert(alert_id: str, state: str = "raised") -> AlertPayload:
    return AlertPayload(alert_id=alert_id, type="intrusion", state=state, started_at=utcnow())


def test_recorder_keeps_frames_before_at_and_after_the_raise(tmp_path: Path) -> None:
    """Analysed frames every 0.5 s; an alert raised at t=5 keeps t=3, 4 (held at 1 s spacing),
    5 and then 6, 7; a frame of the real footage, boxes drawn."""
    image, tracks = campus_frame()
    store = EvidenceStore(tmp_path / "ev", 10**8, 3600 * 72, clock=Clock(0.0))
    settings = EvidenceSettings(frames_before=2, frames_after=2, interval_seconds=1.0)
    writer = EvidenceWriter(store, settings)
    recorder = EvidenceRecorder("cam", CameraConfig(), writer)
    for k in range(21):
        t = 0.5 * k
        raised = [alert("e1")] if t == 5.0 else [alert("e1", "cleared")] if t == 9.0 else []
        recorder(Frame(image.copy(), t), tracks, raised)
    writer.close()  # rendered on its thread: wait for it
    assert recorder.failures == writer.failures == writer.dropped == 0
    found = store.lookup("e1")
    assert found.status == "ok"
    assert [f.taken_at for f in found.frames] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert [f.offset_seconds for f in found.frames] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    picture = cv2.imdecode(np.frombuffer(found.frames[2].jpeg, np.uint8), cv2.IMREAD_COLOR)
    # The tracks' green boxes are drawn on it.
    x1, y1, _, y2 = (int(v) for v in tracks.xyxy[0])
    edge = picture[y1 + 20 : y2 - 20, x1].astype(int)
    assert (edge[:, 1] - edge[:, [0, 2]].max(axis=1) > 60).mean() > 0.8
    store.close()
