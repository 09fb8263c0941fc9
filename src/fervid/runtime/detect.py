"""Haar cascade face detection (OpenCV's bundled frontal-face model), optionally on a shrunk frame."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fervid.errors import FervidError

CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class DetectorConfig:
    """Haar cascade settings; sizes are in pixels of the original frame."""

    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 40
    detection_width: int | None = 320  # wider frames are shrunk to this width before detecting (None = never)

    def validate(self) -> None:
        if self.scale_factor <= 1.0:
            raise FervidError(f"scale factor must be above 1.0, got {self.scale_factor}")
        if self.min_neighbors < 0:
            raise FervidError(f"min neighbours must be 0 or more, got {self.min_neighbors}")
        if self.min_size < 1:
            raise FervidError(f"min size must be at least 1 pixel, got {self.min_size}")
        if self.detection_width is not None and self.detection_width < 64:
            raise FervidError(f"detection width must be at least 64 pixels, got {self.detection_width}")


class FaceDetector:
    """Finds frontal faces in 8-bit gray frames; ``detect`` returns (N, 4) int boxes x, y, w, h sorted left to right."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.config.validate()
        path = Path(cv2.data.haarcascades) / CASCADE
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise FervidError(f"{path}: OpenCV's face cascade could not be loaded (is opencv-python installed?)")

    def detect(self, gray: np.ndarray) -> np.ndarray:
        """Face boxes in ``gray`` (a 2-D uint8 frame), in the frame's own pixel coordinates."""
        config = self.config
        height, width = gray.shape[:2]
        scale = 1.0
        if config.detection_width is not None and width > config.detection_width:
            scale = config.detection_width / width
            gray = cv2.resize(gray, (config.detection_width, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(1, round(config.min_size * scale))
        found = self.cascade.detectMultiScale(
            gray, scaleFactor=config.scale_factor, minNeighbors=config.min_neighbors, minSize=(min_side, min_side)
        )
        if len(found) == 0:
            return np.zeros((0, 4), dtype=np.int32)
        boxes = np.rint(np.asarray(found, dtype=np.float64) / scale).astype(np.int32)
        return boxes[np.argsort(boxes[:, 0], kind="stable")]
