"""An evidence JPEG of one frame: heads and number plates pixelated, rules and tracked boxes
drawn, scaled and compressed until it fits one MQTT message."""

from __future__ import annotations

import cv2
import numpy as np
from pantau.agent.config.agent import CameraConfig, EvidenceSettings
from pantau.agent.vision.detections import Tracks
from pantau.agent.vision.draw import draw_rules, draw_tracks
from pantau.agent.wire.protocol import MAX_EVIDENCE_JPEG_BYTES

VEHICLES = ("car", "motorcycle", "bus", "truck")
# Where a head is in a person's box (a standing adult's head is about an eighth of the height;
# a quarter covers sitting and bending people and a loose box) and where a vehicle's number
# plate may be (front or rear, centred, low): fractions (x1, y1, x2, y2) of the box.
HEAD = (0.0, 0.0, 1.0, 0.25)
PLATE = (0.2, 0.55, 0.8, 1.0)
PIXEL_BLOCKS = 6  # blocks across the shorter side of a pixelated region
LOWEST_QUALITY = 35


def privacy_regions(
    tracks: Tracks, shape: tuple[int, ...], faces: bool, plates: bool
) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (x1, y1, x2, y2), clipped to the frame, to pixelate: the head part of every
    person's box (`faces`) and the plate part of every vehicle's (`plates`)."""
    height, width = shape[:2]
    names = tracks.names
    regions = []
    for box, cid in zip(tracks.xyxy, tracks.class_id, strict=True):
        cls = names[cid] if 0 <= cid < len(names) else ""
        part = HEAD if faces and cls == "person" else PLATE if plates and cls in VEHICLES else None
        if part is None:
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        r = (int(x1 + part[0] * w), int(y1 + part[1] * h), int(np.ceil(x1 + part[2] * w)),
             int(np.ceil(y1 + part[3] * h)))  # fmt: skip
        r = (max(r[0], 0), max(r[1], 0), min(r[2], width), min(r[3], height))
        if r[2] > r[0] and r[3] > r[1]:
            regions.append(r)
    return regions


def pixelate(image: np.ndarray, regions: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Replace each region of `image` (in place) by a few large blocks of its mean colours."""
    for x1, y1, x2, y2 in regions:
        patch = image[y1:y2, x1:x2]
        h, w = patch.shape[:2]
        k = max(1, min(h, w) // PIXEL_BLOCKS)
        small = cv2.resize(patch, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
        image[y1:y2, x1:x2] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return image


def render(
    image: np.ndarray, tracks: Tracks, camera: CameraConfig, settings: EvidenceSettings
) -> tuple[bytes, tuple[int, int]]:
    """The evidence JPEG of a frame and its (width, height): a copy pixelated as configured,
    with the camera's rules and the tracked boxes drawn, at most `max_side` pixels long and
    MAX_EVIDENCE_JPEG_BYTES large (lower quality first, then smaller)."""
    picture = pixelate(
        image.copy(),
        privacy_regions(tracks, image.shape, settings.blur_faces, settings.blur_plates),
    )
    draw_rules(picture, camera)
    draw_tracks(picture, tracks)
    scale = min(1.0, settings.max_side / max(picture.shape[:2]))
    quality = settings.jpeg_quality
    while True:
        sized = (
            picture
            if scale == 1.0
            else cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        ok, buf = cv2.imencode(".jpg", sized, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"JPEG encoding of a {sized.shape} frame failed")
        if buf.nbytes <= MAX_EVIDENCE_JPEG_BYTES:
            return buf.tobytes(), (sized.shape[1], sized.shape[0])
        if quality > LOWEST_QUALITY:
            quality = max(LOWEST_QUALITY, quality - 15)
        else:
            scale *= 0.75
