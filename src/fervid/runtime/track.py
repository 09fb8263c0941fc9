"""Follow faces across frames: IoU matching for stable ids, time-based smoothing so labels do not flicker."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fervid.runtime.face import Face


def iou_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``first`` (N, 4) with every box in ``second`` (M, 4), x, y, w, h."""
    first = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    a_min, a_max = first[:, None, :2], first[:, None, :2] + first[:, None, 2:]
    b_min, b_max = second[None, :, :2], second[None, :, :2] + second[None, :, 2:]
    overlap = np.clip(np.minimum(a_max, b_max) - np.maximum(a_min, b_min), 0, None).prod(axis=2)
    union = first[:, None, 2:].prod(axis=2) + second[None, :, 2:].prod(axis=2) - overlap
    return np.where(union > 0, overlap / np.maximum(union, 1e-9), 0.0)


MAX_PREDICTION_S = 0.5  # how far ahead a track's box is moved along its velocity
KEEP_ID_S = 1.0  # a face the detector misses keeps its id for at least this long, at any frame rate (live and analyze)
BOX_SMOOTHING_FRAME_S = 1 / 30  # the frame time ``box_smoothing`` is given for
REACH_PER_S, MAX_REACH = 1.5, 3.0  # box sides a face may move per second between scans (a brisk walk at arm's length)
STALL_S, STALL_FACTOR = 0.5, 1.5  # a scan this long after the last, and this many times the interval before, follows a stall


def centre(box: np.ndarray) -> np.ndarray:
    """The centre (x, y) of an (x, y, w, h) box."""
    return box[:2] + box[2:] / 2


@dataclass
class Track:
    """One followed face: its box (float x, y, w, h), velocity (pixels per second) and smoothed probabilities.

    ``track_id`` is 0 until the tracker confirms the face, so ids number the faces a user sees (1, 2,
    3...) and a one-off false detection uses none.
    """

    box: np.ndarray
    probabilities: np.ndarray
    time_s: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    hits: int = 1
    missed: int = 0  # full scans in a row that did not find it
    lost: bool = False  # the latest look at it (a scan or a search near it) did not find it
    detected_box: np.ndarray | None = None  # where and when the detector last saw it, for the velocity
    detected_time_s: float = 0.0
    track_id: int = 0
    label: int = -1  # the expression shown (an index), held through near ties; -1 until first shown

    def __post_init__(self) -> None:
        if self.detected_box is None:
            self.detected_box, self.detected_time_s = self.box.copy(), self.time_s

    def box_at(self, time_s: float) -> np.ndarray:
        """The box moved along the track's velocity to ``time_s``, for at most ``MAX_PREDICTION_S``: a
        face is not seen to keep moving for long, so a lost track waits near where it was last seen
        (where a face that stopped or a stalled camera brings it back) instead of drifting off."""
        moved = self.box.copy()
        moved[:2] += self.velocity * min(MAX_PREDICTION_S, max(0.0, time_s - self.time_s))
        return moved


class FaceTracker:
    """Keeps ids stable across frames and smooths each face's probabilities over time.

    Call ``update`` with a full scan's boxes and their probabilities. Between scans search near each
    confirmed track (``search_boxes``; with a scan's strictness where ``search_strict`` says so),
    classify ``follow_boxes`` and call ``follow``. A track survives ``max_missed`` detector runs
    without a match, and at least ``max_missed_s`` seconds since the detector last saw it (so a face
    the cascade misses for a moment keeps its id, however often scans run), but is only reported
    while the detector keeps finding it.

    A face's shown expression changes only when another one leads it by more than ``label_margin``
    in the smoothed probabilities: a face between two expressions (neutral and sad, say) would
    otherwise flip its label several times a second while the probabilities barely move.
    """

    def __init__(
        self,
        *,
        iou_threshold: float = 0.3,
        smoothing_s: float = 0.3,
        max_missed: int = 5,
        max_missed_s: float = 0.0,
        min_hits: int = 2,
        box_smoothing: float = 0.3,
        label_margin: float = 0.1,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.smoothing_s = smoothing_s
        self.max_missed = max_missed
        self.max_missed_s = max_missed_s
        self.min_hits = min_hits
        self.box_smoothing = box_smoothing
        self.label_margin = label_margin
        self.tracks: list[Track] = []
        self.next_id = 1
        self._last_scan_s: float | None = None  # when update last ran, and the interval before it:
        self._last_interval_s: float | None = None  # a much longer gap than that is a stall (_stalled)

    def visible(self) -> list[Track]:
        """Tracks matched by the latest detector run (and confirmed by ``min_hits`` runs)."""
        return [track for track in self.tracks if not track.lost and track.missed <= 1 and track.hits >= self.min_hits]

    def confirmed(self) -> list[Track]:
        """The tracks followed between scans: found by ``min_hits`` scans, and missed by at most the
        last one (a face the cascade misses once is brought back by the search near it; one missed
        twice waits for a scan). So a false detection is never kept alive by searches near it alone."""
        return [track for track in self.tracks if track.hits >= self.min_hits and track.missed <= 1]

    def pending(self) -> bool:
        """Whether a face found by a recent scan still waits for the scan that confirms it: it gets two
        (a cascade misses a real face in one frame of many, and the next regular scan can be a
        second away), so a false detection costs two extra scans."""
        return any(track.hits < self.min_hits and track.missed <= 1 for track in self.tracks)

    def search_strict(self) -> list[bool]:
        """Per confirmed track, whether a face near it must pass a full scan's test: true once the last
        scan missed it, so the near search's laxer test alone never brings back a box a scan dropped."""
        return [track.missed > 0 for track in self.confirmed()]

    def search_boxes(self, time_s: float) -> np.ndarray:
        """Where to look for each confirmed track's face at ``time_s`` (its predicted box), in ``confirmed`` order."""
        return np.array([track.box_at(time_s) for track in self.confirmed()]).reshape(-1, 4)

    def follow_boxes(self, found: list[np.ndarray | None]) -> np.ndarray:
        """The boxes to classify on a frame between full scans: those found near their tracks, in the
        order ``follow`` expects (a box that duplicates an older track's is dropped)."""
        boxes = [box for box in self.deduplicated(found) if box is not None]
        return np.asarray(boxes, dtype=np.int32).reshape(-1, 4)

    def follow(self, found: list[np.ndarray | None], probabilities: np.ndarray, time_s: float) -> list[Face]:
        """Fold in a frame where the detector searched only near each confirmed track (``found[i]`` for
        ``confirmed()[i]``, None where it found nothing); ``probabilities`` has a row per box of ``follow_boxes``.

        A face found near its track refines it as a full detection would (and brings back a track the
        last scan missed). A track whose face is not found is hidden at once, so a face that leaves
        leaves no ghost box, but it keeps its id and smoothed probabilities until full scans have
        missed it ``max_missed`` times, so a one-frame miss does not reset its label. Only scans
        count as misses or clear them.
        """
        rows = iter(np.asarray(probabilities, dtype=np.float64))
        for track, box in zip(self.confirmed(), self.deduplicated(found)):
            if box is not None:
                self._follow(track, np.asarray(box, dtype=np.float64), next(rows), time_s)
            track.lost = box is None
        return self._faces()

    def deduplicated(self, found: list[np.ndarray | None]) -> list[np.ndarray | None]:
        """Drop a found box that mostly overlaps one found for an older track (two tracks, one face)."""
        kept: list[np.ndarray | None] = []
        for box in found:
            taken = [b for b in kept if b is not None]
            if box is not None and taken and iou_matrix(np.asarray([box]), np.asarray(taken)).max() > 0.5:
                box = None
            kept.append(box)
        return kept

    def update(self, boxes: np.ndarray, probabilities: np.ndarray, time_s: float) -> list[Face]:
        """Fold one full scan's boxes and probabilities into the tracks; returns the faces to report, by track id."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        probabilities = np.asarray(probabilities, dtype=np.float64).reshape(len(boxes), -1) if len(boxes) else np.zeros((0, 0))
        matched_tracks: set[int] = set()
        matched_boxes: set[int] = set()
        if self.tracks and len(boxes):
            predicted = np.array([track.box_at(time_s) for track in self.tracks])
            overlaps = iou_matrix(predicted, boxes)
            for flat in np.argsort(-overlaps, axis=None):  # greedy: best overlaps first
                t, b = np.unravel_index(flat, overlaps.shape)
                if overlaps[t, b] < self.iou_threshold:
                    break
                if t in matched_tracks or b in matched_boxes:
                    continue
                matched_tracks.add(int(t))
                matched_boxes.add(int(b))
                self._follow(self.tracks[t], boxes[b], probabilities[b], time_s)
            # Wider only for faces the last scan saw: a face gone for a while must not lend its id to a
            # newcomer a few sides away.
            reach = np.array([min(MAX_REACH, max(1.0, REACH_PER_S * (time_s - track.detected_time_s))) if track.missed == 0 else 1.0
                              for track in self.tracks])
            for t, b in self._nearby(predicted, boxes, matched_tracks, matched_boxes, reach, contested=self._stalled(time_s)):
                matched_tracks.add(t)
                matched_boxes.add(b)
                self._follow(self.tracks[t], boxes[b], probabilities[b], time_s)
            # A face the scans lost may come back where it was last seen rather than where its velocity
            # leads: a box the near search took for it (background texture, 50 px off in 1/30 s) gave
            # it a velocity that carried its prediction sides away, and on its return it got a new id.
            last_seen = np.array([track.detected_box for track in self.tracks])
            lost = np.array([1.0 if track.missed else -1.0 for track in self.tracks])  # -1: out of reach
            for t, b in self._nearby(last_seen, boxes, matched_tracks, matched_boxes, lost):
                matched_tracks.add(t)
                matched_boxes.add(b)
                self._follow(self.tracks[t], boxes[b], probabilities[b], time_s)
        for index, track in enumerate(self.tracks):
            found = index in matched_tracks
            track.missed, track.lost = (0, False) if found else (track.missed + 1, True)
        self.tracks = [track for track in self.tracks
                       if track.missed <= self.max_missed or time_s - track.detected_time_s <= self.max_missed_s]
        for index in range(len(boxes)):
            if index not in matched_boxes:
                self.tracks.append(Track(boxes[index].copy(), probabilities[index].copy(), time_s))
        if self._last_scan_s is not None:
            self._last_interval_s = time_s - self._last_scan_s
        self._last_scan_s = time_s
        return self._faces()

    def _stalled(self, time_s: float) -> bool:
        """Whether this scan comes after a stall: over ``STALL_S`` and ``STALL_FACTOR`` times the interval
        before it (a stream that froze, a cut in a clip). Regular scans, however sparse (``fervid analyze
        --every 60``), are not: there the closest-first match keeps walking faces' ids, where refusing
        contested matches tripled the new ids of two faces a side or two apart."""
        if self._last_scan_s is None or self._last_interval_s is None:
            return False
        gap = time_s - self._last_scan_s
        return gap > max(STALL_S, STALL_FACTOR * self._last_interval_s)

    @staticmethod
    def _nearby(
        predicted: np.ndarray, boxes: np.ndarray, matched_tracks: set[int], matched_boxes: set[int], reach: np.ndarray,
        *, contested: bool = False,
    ) -> list[tuple[int, int]]:
        """Second chance for what IoU left unmatched: a box of about the track's size whose centre is
        within ``reach[t]`` box sides of where the track was predicted. A head that starts moving fast
        (a quick turn, 70 pixels a frame from rest for a 100-pixel face: IoU 0.18) leaves its
        zero-velocity prediction with too little overlap, and would otherwise become a new face with
        a new id. The reach is one side, growing with the time between scans (``REACH_PER_S``, up
        to ``MAX_REACH``) for a face the last scan found: scans a second apart (``fervid analyze
        --every 30``) see a walking face move further than one side; a face missed since keeps one.
        After a stall (``contested``), a pair further apart than one side is kept only when neither
        has another candidate: two faces that moved a long way are not told apart by distance, and
        get new ids rather than each other's. Closest pairs first; each track and box at most once."""
        pairs = []
        for t in sorted(set(range(len(predicted))) - matched_tracks):
            side = max(predicted[t, 2], predicted[t, 3])
            centre = predicted[t, :2] + predicted[t, 2:] / 2
            for b in sorted(set(range(len(boxes))) - matched_boxes):
                distance = float(np.linalg.norm(boxes[b, :2] + boxes[b, 2:] / 2 - centre)) / side
                if distance <= reach[t] and 2 / 3 <= max(boxes[b, 2], boxes[b, 3]) / side <= 3 / 2:
                    pairs.append((distance, t, b))
        # After a stall, beyond one side a match is a guess: made only where nothing else competes for the
        # track or the box. Two faces moving apart over a stall (3 s, 360 px) each went to the other's id.
        tracks_seen = [t for _, t, _ in pairs]
        boxes_seen = [b for _, _, b in pairs]
        if contested:
            pairs = [(d, t, b) for d, t, b in pairs if d <= 1.0 or (tracks_seen.count(t) == 1 and boxes_seen.count(b) == 1)]
        chosen: list[tuple[int, int]] = []
        for _, t, b in sorted(pairs):
            if all(t != ct and b != cb for ct, cb in chosen):
                chosen.append((t, b))
        return chosen

    def _follow(self, track: Track, box: np.ndarray, row: np.ndarray, time_s: float) -> None:
        """Smooth the probabilities over time, and the box, then update the velocity from the last sighting."""
        elapsed = max(0.0, time_s - track.time_s)
        weight = 1.0 if self.smoothing_s <= 0 else 1.0 - math.exp(-elapsed / self.smoothing_s)
        track.probabilities = (1 - weight) * track.probabilities + weight * row
        # box_smoothing is the prediction's weight per 1/30 s, so boxes lag as long at any frame rate
        keep = self.box_smoothing ** (elapsed / BOX_SMOOTHING_FRAME_S) if elapsed > 0 else self.box_smoothing
        new_box = keep * track.box_at(time_s) + (1 - keep) * box
        since_detected = time_s - track.detected_time_s
        assert track.detected_box is not None  # set by Track.__post_init__
        if since_detected > 0:
            # of the centre: a box the detector gives larger or smaller moves its corner, not the face
            # (taken as motion, each such jitter sent the next search off towards that corner)
            velocity = (centre(new_box) - centre(track.detected_box)) / since_detected
            # the first estimate is taken whole: halving it against the zero it starts from lost fast faces
            track.velocity = velocity if track.hits == 1 else 0.5 * track.velocity + 0.5 * velocity
        track.box, track.detected_box, track.detected_time_s = new_box, new_box.copy(), time_s
        track.hits += 1
        track.time_s = time_s

    def _faces(self) -> list[Face]:
        for track in self.tracks:  # in the order they were first seen
            if not track.track_id and track.hits >= self.min_hits:
                track.track_id, self.next_id = self.next_id, self.next_id + 1
        faces = []
        for track in self.visible():
            best = int(np.argmax(track.probabilities))
            if track.label < 0 or track.probabilities[best] - track.probabilities[track.label] > self.label_margin:
                track.label = best
            faces.append(Face.from_probabilities(track.box, track.probabilities, track.track_id, label=track.label))
        return faces
