"""``Recognizer``: detect faces, crop them, classify them all in one batched call, return ``Face`` results."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from fervid.errors import FervidError
from fervid.preprocess import to_gray
from fervid.runtime.classify import ExpressionClassifier
from fervid.runtime.detect import DetectorConfig, FaceDetector
from fervid.runtime.face import Face
from fervid.runtime.sources import VIDEO_SUFFIXES

Color = Literal["bgr", "rgb"]


def read_image(path: str | Path) -> np.ndarray:
    """An image file as a BGR array, turned upright by its EXIF orientation (OpenCV's IMREAD_COLOR does that)."""
    if not Path(path).is_file():  # checked first: OpenCV would print a warning of its own about a missing file
        raise FervidError(f"{path}: {'a folder, not an image' if Path(path).is_dir() else 'no such file'}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        if Path(path).suffix.lower() in VIDEO_SUFFIXES:
            raise FervidError(f"{path}: a video, not an image (fervid live --source {path} reads videos)")
        raise FervidError(f"{path}: not a readable image")
    return image


def gray_frame(image: np.ndarray, color: Color = "bgr") -> np.ndarray:
    """A gray, BGR(A) or RGB(A) frame as 8-bit gray, the form both the detector and the model use."""
    if color not in ("bgr", "rgb"):
        raise FervidError(f"color must be 'bgr' or 'rgb', got '{color}'")
    if color == "rgb" and image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[..., [2, 1, 0, 3][: image.shape[2]]]
    return to_gray(image)


def crop_face(gray: np.ndarray, box, margin: float = 0.0) -> np.ndarray:
    """The box widened by ``margin`` (a fraction of its size, each side); parts outside the frame repeat the edge."""
    x, y, w, h = (int(v) for v in box)
    pad_x, pad_y = round(w * margin), round(h * margin)
    left, top, right, bottom = x - pad_x, y - pad_y, x + w + pad_x, y + h + pad_y
    height, width = gray.shape[:2]
    crop = gray[max(0, top) : min(height, bottom), max(0, left) : min(width, right)]
    if crop.size == 0:
        return np.zeros((max(1, bottom - top), max(1, right - left)), dtype=gray.dtype)
    outside = (max(0, -top), max(0, bottom - height)), (max(0, -left), max(0, right - width))
    return np.pad(crop, outside, mode="edge") if any(sum(side) for side in outside) else crop


class Recognizer:
    """Faces and their expressions in images and frames; the model and the cascade are loaded once.

    >>> recognizer = Recognizer()
    >>> for face in recognizer.predict("photo.jpg"):
    ...     print(face.box, face.expression, face.confidence)

    The default margin is 0 because OpenCV's Haar boxes already match FER2013's crops (median box
    side 0.98 of the crop, offset under 2%, measured on validation faces).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 40,
        detection_width: int | None = 320,
        margin: float = 0.0,
        flip_tta: bool | None = None,
        threads: int | None = None,
    ) -> None:
        if not 0.0 <= margin <= 1.0:
            raise FervidError(f"margin must be between 0 and 1, got {margin}")
        self.classifier = ExpressionClassifier(model, threads=threads)
        self.detector = FaceDetector(DetectorConfig(scale_factor, min_neighbors, min_size, detection_width))
        self.margin = margin
        self.flip_tta = self.classifier.flip_tta if flip_tta is None else flip_tta
        self.warm_up()

    def warm_up(self) -> None:
        """Run the model and the cascade once, so the first real frame does not pay ONNX Runtime's set-up."""
        self.classify([np.zeros((48, 48), np.uint8)] * 2)
        self.detector.detect(np.zeros((240, 320), np.uint8))

    def detect(self, image: np.ndarray | str | Path, color: Color = "bgr") -> np.ndarray:
        """Face boxes (N, 4) x, y, w, h in an image or frame."""
        return self.detector.detect(self._gray(image, color))

    def classify(self, faces: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Probabilities (N, 7) for face crops of any size (BGR or gray), in one batched model call."""
        return self.classifier.classify(faces, flip_tta=self.flip_tta)

    def classify_boxes(self, gray: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Probabilities (N, 7) for the boxes of a gray frame, all in one batched call."""
        return self.classify([crop_face(gray, box, self.margin) for box in boxes])

    def predict(self, image: np.ndarray | str | Path, boxes=None, *, color: Color = "bgr") -> list[Face]:
        """The faces in an image (a path, or a BGR, RGB or gray array), each with its expression.

        Give ``boxes`` (x, y, w, h rows) to classify known faces and skip detection.
        """
        gray = self._gray(image, color)
        boxes = self.detector.detect(gray) if boxes is None else np.asarray(boxes, dtype=np.int32).reshape(-1, 4)
        probabilities = self.classify_boxes(gray, boxes)
        return [Face.from_probabilities(box, row) for box, row in zip(boxes, probabilities)]

    @staticmethod
    def _gray(image: np.ndarray | str | Path, color: Color) -> np.ndarray:
        if isinstance(image, (str, Path)):
            return to_gray(read_image(image))
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.size == 0:
            raise FervidError(f"expected an image array (H, W) or (H, W, C), got shape {image.shape}")
        return gray_frame(image, color)
