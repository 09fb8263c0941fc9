"""Detect -> classify -> track, frame after frame: what ``live``, the web server's streams and ``bench`` share."""

from __future__ import annotations

import numbers
from dataclasses import replace

import numpy as np

from fervid.checks import Whole, is_number
from fervid.errors import FervidError
from fervid.images import gray_frame
from fervid.runtime.face import Face
from fervid.runtime.recognizer import Recognizer
from fervid.runtime.sources import Frame
from fervid.runtime.track import KEEP_ID_S, FaceTracker

DETECT_EVERY = 10


def inside(face: Face, shape: tuple[int, ...]) -> Face:
    """``face`` with its box cut to the frame: a tracked box is smoothed towards where the face is
    going, and at an edge it reached past the frame ([-9, 108, 178, 178] in a 640x480 frame), so a
    client cropping ``image[y:y+h, x:x+w]`` got a wrong or empty crop. The track keeps the whole box."""
    x, y, w, h = face.box
    left, top = min(max(0, x), shape[1] - 1), min(max(0, y), shape[0] - 1)
    right, bottom = max(left + 1, min(shape[1], x + w)), max(top + 1, min(shape[0], y + h))
    if (left, top, right - left, bottom - top) == (x, y, w, h):
        return face
    return replace(face, box=(left, top, right - left, bottom - top))


class FrameProcessor:
    """A full-frame detector scan every ``detect_every`` frames while faces are shown, every 2nd frame
    while none is, and on the next frame when a new face waits for its confirming scan (so a face that
    walks in is boxed within a few frames). In between, each tracked face is searched
    for only near where it is going (``FaceDetector.detect_near``: ~1.8 ms instead of a ~48 ms scan), so
    boxes follow moving faces on every frame; when a face is not found near its box, that frame gets a
    full scan, so a face that leaves loses its box at once and one the near search missed keeps it."""

    def __init__(self, recognizer: Recognizer, tracker: FaceTracker | None = None, detect_every: Whole = DETECT_EVERY) -> None:
        given: object = detect_every  # from Python, anything: checked as such
        if not (is_number(given, numbers.Integral) and int(given) >= 1):  # type: ignore[call-overload]
            raise FervidError(f"detect_every (--detect-every) must be a whole number, 1 or more, got {detect_every!r}")
        self.recognizer = recognizer
        self.tracker = tracker or FaceTracker(max_missed_s=KEEP_ID_S)
        self.detect_every = int(detect_every)
        self.since_scan = self.detect_every

    def process(self, frame: Frame, recognizer: Recognizer | None = None) -> list[Face]:
        """The faces of the next frame, their boxes inside it. ``recognizer`` lends another Recognizer
        with the same model for this frame (the web server shares a pool of them between connections,
        each with its own tracks)."""
        gray = gray_frame(frame.image)
        return [inside(face, gray.shape) for face in self._faces(gray, frame, recognizer or self.recognizer)]

    def _faces(self, gray: np.ndarray, frame: Frame, recognizer: Recognizer) -> list[Face]:
        if self.tracker.pending():
            period = 1  # confirm a new face on the very next frame
        else:
            period = self.detect_every if self.tracker.visible() else min(2, self.detect_every)
        detector, tracker = recognizer.detector, self.tracker
        if self.since_scan >= period:
            self.since_scan = 1
            boxes = detector.detect(gray)
            return tracker.update(boxes, recognizer.classify_boxes(gray, boxes), frame.time_s)
        self.since_scan += 1
        searches = zip(tracker.search_boxes(frame.time_s), tracker.search_strict())
        # Checked after dropping a box found for two tracks: the face that lost it was missed too.
        found = tracker.deduplicated([detector.detect_near(gray, box, strict) for box, strict in searches])
        if any(box is None for box in found):
            # Left, or missed by the near search (a face near the detector's threshold)? A scan of this
            # frame tells: a face still there stays boxed instead of blinking out for a frame, and one
            # that left is hidden now, as before. It costs a scan only on the frames with a miss.
            self.since_scan = 1
            boxes = detector.detect(gray)
            return tracker.update(boxes, recognizer.classify_boxes(gray, boxes), frame.time_s)
        return tracker.follow(found, recognizer.classify_boxes(gray, tracker.follow_boxes(found)), frame.time_s)
