"""Riders: which person tracks ride which two-wheeler (bicycle, motorcycle) tracks, so that a
rule counting the two-wheeler does not count its rider a second time.

A person rides a two-wheeler when, in `hold_frames` consecutive analysed frames, the
two-wheeler's box top lies in the person box's lower part (below `top_fraction` of its height,
above its bottom) with their horizontal overlap over `min_overlap` of the narrower box, and
over those frames the two-wheeler moved at least `min_move` of its own width with the person
moving along (their displacements differ by at most half the two-wheeler's width). The motion
test is what tells a rider from a pedestrian who walks past, or stands by, a parked bike.

Once a rider, a person track stays one for its lifetime (a rider whose machine the detector
then loses, common at night, must not turn back into a pedestrian and be counted twice). A
person overlapping a two-wheeler but not yet held as its rider is a *candidate*: rules that
count the two-wheeler's class do not see it until it is either held as a rider or apart
again, so a rider is not counted as a person in the frames before the hold (a pedestrian
hidden that way is seen again once apart, and a line still counts the crossing it made in
between; see LineCounter on gaps).

A person seen with no two-wheeler under it (the machine undetected) is simply a person.

Before tracking, `promote_machines` lends a rider's score to the machine under it: detectors
see a rider more clearly than a scooter (nanodet-m scores most scooters 0.2-0.45, their riders
0.5-0.8), and a box below the tracker's `new_score` never starts a track, so the scooter
would never be counted while its rider is hidden as one. A two-wheeler box that sits under a
person box (the geometry above, the person's feet not below the machine's bottom; its
best-scored one where several partial boxes are) gets the person's score when that is
higher; it then
starts its own track, and the rider steps above keep the rider from counting twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from pantau.agent.vision.detections import DEFAULT_CLASSES, Detections, Tracks

TWO_WHEELERS = ("bicycle", "motorcycle")


@dataclass
class _Pair:
    frames: int
    person_start: np.ndarray  # box centres when the overlap began
    vehicle_start: np.ndarray


@dataclass(frozen=True)
class Riders:
    """One frame's riders: `held` maps a rider's track id to its two-wheeler's class id;
    `candidates` maps a person overlapping two-wheelers (not yet held) to their class ids."""

    held: dict[int, int] = field(default_factory=dict)
    candidates: dict[int, frozenset[int]] = field(default_factory=dict)

    def hidden(self, classes: frozenset[int] | None) -> set[int]:
        """Person track ids that a rule counting `classes` (None: every class) must not see:
        riders and candidates on a two-wheeler of a class it counts."""
        if classes is None:
            return set(self.held) | set(self.candidates)
        hidden = {tid for tid, cls in self.held.items() if cls in classes}
        return hidden | {tid for tid, cs in self.candidates.items() if cs & classes}

    def visible(self, tracks: Tracks, classes: frozenset[int] | None) -> Tracks:
        """`tracks` as a rule counting `classes` sees them (the same object when it hides
        none)."""
        hidden = self.hidden(classes)
        if not hidden:
            return tracks
        return tracks[~np.isin(tracks.tracker_id, list(hidden))]


class RiderMatcher:
    """Pairs person tracks with the two-wheeler tracks they ride, frame by frame (see the
    module docs). Feed `update` every analysed frame's tracks and `forget` the tracker's
    removed ids."""

    def __init__(
        self,
        names: Sequence[str] = (),
        *,
        hold_frames: int = 3,
        top_fraction: float = 0.25,
        min_overlap: float = 0.5,
        min_move: float = 0.25,
    ) -> None:
        index = {n: i for i, n in enumerate(names)} if names else DEFAULT_CLASSES
        self.person = index.get("person")
        self.two_wheelers = [index[n] for n in TWO_WHEELERS if n in index]
        self.hold_frames = hold_frames
        self.top_fraction = top_fraction
        self.min_overlap = min_overlap
        self.min_move = min_move
        self._pairs: dict[tuple[int, int], _Pair] = {}
        self._riders: dict[int, int] = {}  # person track id -> two-wheeler class id

    def overlaps(self, people: np.ndarray, vehicles: np.ndarray) -> np.ndarray:
        """bool (P, V): person box p sits on two-wheeler box v (geometry alone)."""
        p, v, height, abreast = self._pairs_of(people, vehicles)
        top_ok = (v[..., 1] >= p[..., 1] + self.top_fraction * height) & (v[..., 1] <= p[..., 3])
        result: np.ndarray = top_ok & abreast
        return result

    def _pairs_of(
        self, people: np.ndarray, vehicles: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Broadcast (P, 1, 4) and (1, V, 4) boxes, the person heights, and whether each
        pair overlaps horizontally by over `min_overlap` of the narrower box."""
        p = people[:, None, :].astype(np.float64)
        v = vehicles[None, :, :].astype(np.float64)
        inter = np.minimum(p[..., 2], v[..., 2]) - np.maximum(p[..., 0], v[..., 0])
        narrower = np.minimum(p[..., 2] - p[..., 0], v[..., 2] - v[..., 0])
        return p, v, p[..., 3] - p[..., 1], inter > self.min_overlap * narrower

    def promote_machines(self, detections: Detections) -> Detections:
        """`detections` with every two-wheeler box that a person box sits on (`overlaps`, the
        feet not below the machine) scored as high as that person (the best one); the same
        object when none changes."""
        if self.person is None or not self.two_wheelers or not len(detections):
            return detections
        people = np.flatnonzero(detections.class_id == self.person)
        machines = np.flatnonzero(np.isin(detections.class_id, self.two_wheelers))
        if not len(people) or not len(machines):
            return detections
        p, v = detections.xyxy[people], detections.xyxy[machines]
        # A rider's feet are on the machine, not on the ground below it: a pedestrian in
        # front of a parked bicycle reaches lower, and lends it nothing.
        feet_on = p[:, None, 3] <= v[None, :, 3] + 0.1 * (v[None, :, 3] - v[None, :, 1])
        sits = self.overlaps(p, v) & feet_on
        # Each person lends to one machine, its best-scored: detectors give a scooter
        # several overlapping partial boxes, and lending to all would start a track on each.
        own = detections.confidence[machines]
        best = np.where(sits, own[None, :], -1.0).argmax(axis=1)
        lent = np.zeros(len(machines), np.float32)
        for i in np.flatnonzero(sits.any(axis=1)):
            lent[best[i]] = max(lent[best[i]], detections.confidence[people[i]])
        raise_ = lent > own
        if not raise_.any():
            return detections
        confidence = detections.confidence.copy()
        confidence[machines[raise_]] = lent[raise_]
        return replace(detections, confidence=confidence)

    def update(self, tracks: Tracks) -> Riders:
        """This frame's riders and candidates."""
        if self.person is None or not self.two_wheelers:
            return Riders(dict(self._riders))
        is_person = tracks.class_id == self.person
        is_vehicle = np.isin(tracks.class_id, self.two_wheelers)
        people, vehicles = tracks[is_person], tracks[is_vehicle]
        pairs: dict[tuple[int, int], _Pair] = {}
        candidates: dict[int, set[int]] = {}
        if len(people) and len(vehicles):
            centres_p = (people.xyxy[:, :2] + people.xyxy[:, 2:]) / 2
            centres_v = (vehicles.xyxy[:, :2] + vehicles.xyxy[:, 2:]) / 2
            for i, j in np.argwhere(self.overlaps(people.xyxy, vehicles.xyxy)):
                pid, vid = int(people.tracker_id[i]), int(vehicles.tracker_id[j])
                cls = int(vehicles.class_id[j])
                pair = self._pairs.get((pid, vid))
                if pair is None:
                    pair = _Pair(0, centres_p[i].copy(), centres_v[j].copy())
                pair.frames += 1
                pairs[pid, vid] = pair
                if pid in self._riders:
                    continue
                width = float(vehicles.xyxy[j, 2] - vehicles.xyxy[j, 0])
                moved = centres_v[j] - pair.vehicle_start
                along = centres_p[i] - pair.person_start - moved
                if (
                    pair.frames >= self.hold_frames
                    and np.hypot(*moved) >= self.min_move * width
                    and np.hypot(*along) <= 0.5 * width
                ):
                    self._riders[pid] = cls
                else:
                    candidates.setdefault(pid, set()).add(cls)
        self._pairs = pairs  # a pair apart in this frame starts over
        return Riders(
            dict(self._riders),
            {pid: frozenset(cs) for pid, cs in candidates.items() if pid not in self._riders},
        )

    def forget(self, tracker_ids: Iterable[int]) -> None:
        """Drop the riders among tracks that ended."""
        for tid in tracker_ids:
            self._riders.pop(int(tid), None)
