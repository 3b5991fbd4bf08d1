"""Overlays for snapshots and annotated videos: lines with in/out arrows, zones, tracked boxes
and running counts, so a technician can see why a count is what it is."""

from __future__ import annotations

import cv2
import numpy as np
from pantau.agent.config.agent import CameraConfig
from pantau.agent.config.rules import to_pixels
from pantau.agent.vision.detections import Tracks
from pantau.agent.vision.geometry import Point
from pantau.agent.vision.tiles import TilePlan

LINE_COLOUR = (0, 255, 255)
ZONE_COLOUR = (255, 128, 0)
TILE_COLOUR = (255, 0, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label(
    image: np.ndarray,
    text: str,
    org: tuple[int, int],
    colour: tuple[int, int, int],
    scale: float = 1.0,
) -> None:
    # A dark outline keeps the text readable on any background.
    thick = max(1, round(scale))
    # Kept inside the image, so labels of rules on the frame's edge still show.
    (w, h), _ = cv2.getTextSize(text, FONT, 0.5 * scale, thick + 2)
    org = (min(max(org[0], 2), image.shape[1] - w - 2), min(max(org[1], h + 2),
                                                            image.shape[0] - 4))
    cv2.putText(image, text, org, FONT, 0.5 * scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(image, text, org, FONT, 0.5 * scale, colour, thick, cv2.LINE_AA)


def draw_rules(
    image: np.ndarray,
    config: CameraConfig,
    line_totals: dict[str, dict[str, list[int]]] | None = None,
) -> np.ndarray:
    """Draw zones and lines, with their names and arrows to the 'in' side (the left of A->B on
    screen) and 'out' side, on `image` in place, with running in/out totals when given. Rules
    in fractions of the frame are drawn where they count: scaled to this image."""
    height, width = image.shape[:2]
    # Marks and text grow with the frame so that they read alike at 320x240 and 1920x1080.
    scale = max(0.6, min(width, height) / 480)

    def pixels(points: list[Point]) -> np.ndarray:
        return np.asarray(to_pixels(points, width, height) if config.relative else points, float)

    overlay = image.copy()
    for name, zone in config.zones.items():
        pts = np.round(pixels(zone.polygon)).astype(np.int32)
        cv2.fillPoly(overlay, [pts], ZONE_COLOUR)
        cv2.polylines(image, [pts], True, ZONE_COLOUR, 2, cv2.LINE_AA)
        corner = (int(pts[:, 0].min()) + 4, int(pts[:, 1].min()) + round(16 * scale))
        _label(image, name, corner, ZONE_COLOUR, scale)
    cv2.addWeighted(overlay, 0.15, image, 0.85, 0, dst=image)
    for name, line in config.lines.items():
        a, b = pixels(line.points)
        cv2.line(image, _pt(a), _pt(b), LINE_COLOUR, 2, cv2.LINE_AA)
        mid, d = (a + b) / 2, b - a
        # In image coordinates (y down), (d_y, -d_x) points to the side where
        # cross(B-A, P-A) < 0: the 'in' side.
        normal = np.array([d[1], -d[0]]) / max(float(np.hypot(*d)), 1e-9)
        reach = 25 * scale
        cv2.arrowedLine(image, _pt(mid - reach * normal), _pt(mid + reach * normal),
                        LINE_COLOUR, 2, cv2.LINE_AA, tipLength=0.3)
        _label(image, "in", _pt(mid + 1.5 * reach * normal), LINE_COLOUR, scale)
        _label(image, "out", _pt(mid - 1.9 * reach * normal), LINE_COLOUR, scale)
        text = name
        if line_totals is not None:
            n_in = sum(v[0] for v in line_totals.get(name, {}).values())
            n_out = sum(v[1] for v in line_totals.get(name, {}).values())
            text = f"{name}: in {n_in} out {n_out}"
        _label(image, text, (int(a[0]) + 4, int(a[1]) - 6), LINE_COLOUR, scale)
    return image


def draw_tiles(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    """The detector's crops (see pantau.agent.vision.tiles), numbered in call order, on
    `image` in place; the whole-frame pass is the frame's own border."""
    scale = max(0.6, min(image.shape[:2]) / 480)
    for k, (x0, y0, x1, y1) in enumerate(plan.tiles):
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), TILE_COLOUR, 3 if k == 0 else 2)
        _label(image, f"tile {k}", (x0 + 4, y1 - 6), TILE_COLOUR, 0.8 * scale)
    return image


def draw_tracks(image: np.ndarray, tracks: Tracks) -> np.ndarray:
    """Boxes with track id and class; unconfirmed tracks thin and grey."""
    names = tracks.names
    for i in range(len(tracks)):
        x1, y1, x2, y2 = (int(v) for v in tracks.xyxy[i])
        confirmed = bool(tracks.confirmed[i])
        colour = (0, 200, 0) if confirmed else (160, 160, 160)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2 if confirmed else 1)
        cid = int(tracks.class_id[i])
        cls = names[cid] if 0 <= cid < len(names) else str(cid)
        _label(image, f"#{int(tracks.tracker_id[i])} {cls}", (x1, max(12, y1 - 4)), colour)
        cv2.circle(image, ((x1 + x2) // 2, y2), 3, colour, -1)  # the bottom-centre anchor
    return image


def _pt(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))
