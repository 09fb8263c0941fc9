"""Turn one dataset entry (file bytes or a CSV pixel string) into a 48x48 uint8 face."""

from __future__ import annotations

import math

import cv2
import numpy as np

from fervid.errors import FervidError
from fervid.images import UnreadableImage, decode_image
from fervid.preprocess import FACE_SIZE, prepare_face

MIN_CSV_SIDE = FACE_SIZE  # CSV datasets in FER2013's format (FER2013, FER+) are 48x48, the model's input

__all__ = ["UnreadableImage", "decode_image_bytes", "decode_pixel_string"]


def decode_image_bytes(data: bytes) -> np.ndarray:
    """Decode any image OpenCV reads (8/16-bit, gray, RGB, RGBA, palette) into a 48x48 uint8 face.

    An ``UnreadableImage`` is one entry the loader skips and counts, not a failed load.
    """
    # Any depth and colour, turned upright by its EXIF orientation (IMREAD_UNCHANGED would leave a
    # phone's portrait shot on its side), transparent parts white as a viewer shows them.
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    try:
        return prepare_face(decode_image(data, flags))
    except UnreadableImage:
        raise
    except FervidError as error:  # e.g. a TIFF of negative int16 or floats past 255: this file only, not the whole load
        raise UnreadableImage(str(error)) from None


def decode_pixel_string(pixels: str) -> np.ndarray:
    """FER2013 CSV pixels ('70 80 82 ...', a square image row by row) into a 48x48 uint8 face."""
    try:
        values = np.array(str(pixels).split(), dtype=np.int64)
    except (ValueError, OverflowError):  # OverflowError: a 19-20 digit run where spaces were lost
        raise UnreadableImage("pixels are not integers") from None
    side = math.isqrt(values.size)
    if values.size == 0 or side * side != values.size:
        raise UnreadableImage(f"{values.size} pixels is not a square image (FER2013 rows have 2304 = 48x48)")
    if side < MIN_CSV_SIDE:  # a cut-short row; upscaled to 48x48 it would train as a blur of a few values
        raise UnreadableImage(f"{values.size} pixels is smaller than a 48x48 face (FER2013 rows have 2304)")
    if values.min() < 0 or values.max() > 255:
        raise UnreadableImage("pixel values outside 0-255")
    return prepare_face(values.astype(np.uint8).reshape(side, side))
