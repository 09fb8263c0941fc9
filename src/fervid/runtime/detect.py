"""Haar cascade face detection (OpenCV's bundled frontal-face model), optionally on a shrunk frame."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fervid.checks import Real, Whole
from fervid.errors import FervidError
from fervid.runtime.track import iou_matrix

CASCADE = "haarcascade_frontalface_default.xml"
CASCADE_PATH = Path(cv2.data.haarcascades) / CASCADE  # type: ignore[attr-defined]
CASCADE_WINDOW = 24  # the frontal-face cascade's own window: the smallest face it can see, in scanned pixels
PANORAMA = 2.0  # frames wider than this many heights are scanned to an area cap, not a width cap
NEAR_FACE_SIDE = 56  # a face searched for near its last box is scaled to about this many pixels
NEAR_MIN_NEIGHBORS = 3  # evidence needed there: less than a full scan, which must also rule out the rest of the frame
# A face found near a box must overlap it this much (IoU): the crop around one face can hold the
# next face, which the search once returned as "nearest" when its own face sat outside the sizes
# searched (it overlapped the box by 0.04-0.09). 0.1 still takes a face that moved four fifths of
# its side straight, or over half of it diagonally, past its predicted box (a head that turns back).
NEAR_MIN_IOU = 0.1


# OpenCV takes these as C ints: a larger number was a cv2.error traceback. A face needs a handful
# of neighbouring hits (3-10); no image is a million pixels wide.
MAX_NEIGHBORS = 1000
MAX_SIDE = 1_000_000
# Each step of OpenCV's pyramid shrinks the frame by the scale factor: at 1.0000000001 it planned
# billions of steps (std::bad_alloc), and even 1.001 takes minutes a frame. 1.01 is already far
# finer than the 1.05-1.4 used in practice. Past 100 the second window (2,400 px) is wider than any
# scan (1,280 px): a larger factor scans the same single window size, but OpenCV's window side
# overflowed a C int at 1e308.
MIN_SCALE_FACTOR = 1.01
MAX_SCALE_FACTOR = 100.0


@dataclass(frozen=True)
class DetectorConfig:
    """Haar cascade settings; sizes are in pixels of the original frame.

    ``min_size`` is the smallest face found: the frame is scanned shrunk only as far as a
    ``min_size`` face still fills the cascade's 24-pixel window, so up to 1920x1080 faces of
    ``min_size`` or more can be found. Not all that OpenCV finds in the whole frame: its pyramid
    slides the window 2 pixels at a time while the window is under twice its own size and 1 pixel
    from there (cascadedetect.cpp: ``yStep = factor > 2 ? 1 : 2``), so faces of 1-2x ``min_size``
    are scanned in coarser steps than at full resolution. Of 100 FER2013 validation faces pasted
    into 640x480 frames of textured noise the default finds 39 at 52 px and 59 at 80 (69 at 120);
    ``min_size=24``, which scans such frames whole, finds 63 and 70, but takes 2.5x the time (167
    against 67 ms a frame, measured together on a 2-core CPU) and put a false box on 17 of 80
    empty frames of that noise, against 2: the default favours speed and few false faces.
    ``detection_width`` caps the scanned width, so that a 12-megapixel photo costs about what a
    1280-wide frame does; beyond it the smallest face is 24 x width / ``detection_width`` pixels
    (76 px in a 4032-wide photo). A panorama wider than 2:1 is capped by area instead, to as many
    pixels as a 2:1 frame at that width: a 40000x3000 strip is scanned at 3305x248 (faces from 290
    px), not 1280x96 (750 px). A fixed 320-pixel scan, fervid's earlier default, lost faces
    under 144 px in 1920-wide frames: 23 of 60 found at 150 px, against 45 of 60 now.
    """

    scale_factor: Real = 1.1
    min_neighbors: Whole = 5
    min_size: Whole = 40
    detection_width: Whole | None = 1280  # the widest scan (None: min_size alone decides, at any cost)

    def refuse_unused(self, why: str) -> None:
        """Refuse settings given where no detector runs (``--crops``, ``--boxes``): accepted without a
        word, they looked applied. Given means other than the defaults."""
        default = DetectorConfig()
        given = [option for option, field in (("--scale-factor", "scale_factor"), ("--min-neighbors", "min_neighbors"),
                                             ("--min-size", "min_size")) if getattr(self, field) != getattr(default, field)]
        if given:
            one = len(given) == 1
            raise FervidError(f"{', '.join(given)}: the face detector does not run with {why}, so "
                              f"{'it does' if one else 'they do'} nothing; leave {'it' if one else 'them'} out")

    def validate(self) -> None:
        for name in ("min_neighbors", "min_size", "detection_width"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)) and not (name == "detection_width" and value is None):
                raise FervidError(f"{name} must be a whole number, got {value!r}")
        if isinstance(self.scale_factor, bool) or not isinstance(self.scale_factor, (int, float, np.floating)):
            raise FervidError(f"scale factor must be a number from {MIN_SCALE_FACTOR:g} to {MAX_SCALE_FACTOR:g}, got {self.scale_factor!r}")
        if not MIN_SCALE_FACTOR <= self.scale_factor <= MAX_SCALE_FACTOR:  # `not <=` also refuses nan
            raise FervidError(f"scale factor must be {MIN_SCALE_FACTOR:g} to {MAX_SCALE_FACTOR:g}, got {self.scale_factor}")
        if not 0 <= self.min_neighbors <= MAX_NEIGHBORS:
            raise FervidError(f"min neighbours must be 0 to {MAX_NEIGHBORS}, got {self.min_neighbors}")
        if not 1 <= self.min_size <= MAX_SIDE:
            raise FervidError(f"min size must be 1 to {MAX_SIDE:,} pixels, got {self.min_size}")
        if self.detection_width is not None and not 64 <= self.detection_width <= MAX_SIDE:
            raise FervidError(f"detection width must be 64 to {MAX_SIDE:,} pixels, got {self.detection_width}")


class FaceDetector:
    """Finds frontal faces in 8-bit gray frames; ``detect`` returns (N, 4) int boxes x, y, w, h sorted left to right.

    Safe to share between threads: OpenCV's CascadeClassifier is not (two threads' scans mix their
    results), so each thread gets its own, loaded on its first scan.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.config.validate()
        self._local = threading.local()
        if self.cascade.empty():
            raise FervidError(f"{CASCADE_PATH}: OpenCV's face cascade could not be loaded (is opencv-python installed?)")

    @property
    def cascade(self) -> cv2.CascadeClassifier:
        """This thread's cascade."""
        if getattr(self._local, "cascade", None) is None:
            self._local.cascade = cv2.CascadeClassifier(str(CASCADE_PATH))
        return self._local.cascade

    def detect(self, gray: np.ndarray) -> np.ndarray:
        """Face boxes in ``gray`` (a 2-D uint8 frame), in the frame's own pixel coordinates."""
        config = self.config
        height, width = gray.shape[:2]
        scale = min(1.0, CASCADE_WINDOW / config.min_size)  # smaller scans could not see a min_size face anyway
        if config.detection_width is not None:
            cap = config.detection_width / width
            if width > PANORAMA * height:  # capped by area instead: at the width cap a 40000x3000 strip was
                # scanned 96 px tall and missed its 500 px face; now as many pixels as a 2:1 frame at the cap
                cap = math.sqrt(config.detection_width ** 2 / PANORAMA / (width * height))
            scale = min(scale, cap)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(1, round(config.min_size * scale))
        found = self.cascade.detectMultiScale(
            gray, scaleFactor=float(config.scale_factor), minNeighbors=int(config.min_neighbors), minSize=(min_side, min_side)
        )
        if len(found) == 0:
            return np.zeros((0, 4), dtype=np.int32)
        boxes = np.rint(np.asarray(found, dtype=np.float64) / scale).astype(np.int32)
        return boxes[np.argsort(boxes[:, 0], kind="stable")]

    def detect_near(self, gray: np.ndarray, box: np.ndarray, strict: bool = False) -> np.ndarray | None:
        """The face nearest ``box`` (x, y, w, h), searched for only around it and only at sizes close to it.

        A full scan of a 640x480 frame costs about 50-63 ms on a 2-core CPU (docs/performance.md); this search, on a crop half a box wider on
        each side, scaled so the face is ~56 px, over sizes 0.7-1.4x the box, costs about 2.4 ms. If it
        finds nothing it looks once more, wider and over sizes 0.5-2x (Haar boxes jitter in size).
        It is what lets the live loop follow every face on every frame between full scans. With 3
        neighbours instead of a scan's 5 it found 75 of 75 test faces and none of 15 empty places;
        ``strict`` asks for a scan's neighbours (``FaceTracker.search_strict``: a track the last scan
        missed). Returns None when no face is found there.
        """
        neighbours = int(self.config.min_neighbors) if strict else NEAR_MIN_NEIGHBORS
        found = self._search_near(gray, box, 0.5, 0.7, 1.4, neighbours)
        return found if found is not None else self._search_near(gray, box, 0.8, 0.5, 2.0, neighbours)

    def _search_near(self, gray: np.ndarray, box: np.ndarray, margin: float, smaller: float, larger: float,
                     neighbours: int) -> np.ndarray | None:
        height, width = gray.shape[:2]
        x, y, w, h = (float(value) for value in box)
        side = max(w, h)
        x0, y0 = max(0, int(x - margin * side)), max(0, int(y - margin * side))
        x1, y1 = min(width, int(np.ceil(x + w + margin * side))), min(height, int(np.ceil(y + h + margin * side)))
        if side < 8 or x1 - x0 < side / 2 or y1 - y0 < side / 2:
            return None
        crop = gray[y0:y1, x0:x1]
        scale = min(1.0, NEAR_FACE_SIDE / side)
        if scale < 1.0:
            crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        smallest = max(1, int(side * scale * smaller))
        largest = max(smallest + 1, int(np.ceil(side * scale * larger)))
        found = self.cascade.detectMultiScale(
            cv2.equalizeHist(crop), scaleFactor=float(self.config.scale_factor), minNeighbors=neighbours,
            minSize=(smallest, smallest), maxSize=(largest, largest),
        )
        if len(found) == 0:
            return None
        boxes = np.asarray(found, dtype=np.float64) / scale + np.array([x0, y0, 0, 0])
        overlaps = iou_matrix(np.array([x, y, w, h]), boxes)[0]
        best = int(np.argmax(overlaps))  # the most overlapping: nearest in place and in size alike
        return np.rint(boxes[best]).astype(np.int32) if overlaps[best] >= NEAR_MIN_IOU else None
