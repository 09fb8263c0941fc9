"""``AnalyzeOptions``: what ``fervid analyze`` does to each source, checked before any input is read."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Integral, Real

from fervid.checks import Real as RealNumber, Whole
from fervid.errors import FervidError
from fervid.runtime.detect import DetectorConfig

# Bumped whenever the same detector settings find other faces (2: frames scanned at the scale
# min_size needs, capped at 1280 px wide, instead of shrunk to 320 px; 2026-12-05).
DETECTOR_SCAN = 2

# A segment becomes a frame count (segment_s * fps, rounded): 1e308 was an OverflowError traceback.
# A million seconds is 11.6 days of video in one segment, far beyond any useful setting. (The
# detector's own bounds, --scale-factor's among them, are DetectorConfig's.)
MAX_SEGMENT_S = 1_000_000.0


@dataclass(frozen=True)
class AnalyzeOptions:
    """What ``fervid analyze`` does to each source; everything here that changes rows is part of unit ids."""

    every: Whole = 1  # analyse every K-th video frame
    largest_only: bool = False  # keep only the largest face per frame
    crops: bool = False  # inputs are already-cropped faces: no detector, the whole image is the face
    segment_s: RealNumber = 300.0  # video time segment: the unit of parallel work, resume and tracking
    image_batch: Whole = 64  # images per unit
    model: str | None = None
    # Haar cascade settings, as `fervid predict` and `live` take them (DetectorConfig's defaults)
    scale_factor: RealNumber = 1.1
    min_neighbors: Whole = 5
    min_size: Whole = 40

    def validate(self) -> None:
        """Refuse options that would plan no work, loop forever or overflow a count, before any input is read."""
        for name in ("largest_only", "crops"):  # the string "false" is true: it classified whole images unasked
            if not isinstance(getattr(self, name), bool):
                raise FervidError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("every", "image_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise FervidError(f"{name} must be a whole number, got {value!r}")
        if isinstance(self.segment_s, bool) or not isinstance(self.segment_s, Real) or not math.isfinite(self.segment_s):
            raise FervidError(f"segment_s must be a finite number of seconds, got {self.segment_s!r}")
        if self.every < 1:
            raise FervidError(f"--every must be 1 or more, got {self.every}")
        if self.segment_s <= 0:
            raise FervidError(f"--segment-s must be above 0, got {self.segment_s}")
        if self.segment_s > MAX_SEGMENT_S:
            raise FervidError(f"--segment-s must be at most {MAX_SEGMENT_S:,.0f} s (11.6 days), got {self.segment_s}")
        if self.image_batch < 1:
            raise FervidError(f"the image batch must be 1 or more, got {self.image_batch}")
        self.detector().validate()

    def detector(self) -> DetectorConfig:
        """The detector settings, as the Recognizer of each engine builds its detector from them."""
        return DetectorConfig(self.scale_factor, self.min_neighbors, self.min_size)

    def recognizer_settings(self) -> dict:
        """Keyword arguments for ``Recognizer`` (besides the model and threads): the detector's settings."""
        return asdict(self.detector())

    def key(self, kind: str = "video") -> dict:
        """The options that change a ``kind`` of unit's rows (the batch size does not).

        ``every`` and ``segment_s`` only cut videos, so an image batch's id leaves them out: changing
        them does not redo the photos.
        """
        key: dict = {"largest_only": self.largest_only, "crops": self.crops}
        if not self.crops:
            key["scan"] = DETECTOR_SCAN  # the detector's own version: rows found the old way are not reused
        # As Python's numbers (NumPy's int64 is no JSON, and failed as a TypeError), and floats as floats:
        # the API's 300 and the CLI's 300.0 cut the same units (an id of 300 redid them all)
        if not self.crops and self.detector() != DetectorConfig():  # the defaults keep earlier runs' ids
            key["detector"] = [float(self.scale_factor), int(self.min_neighbors), int(self.min_size)]
        return key if kind == "image" else {**key, "every": int(self.every), "segment_s": float(self.segment_s)}
