"""The one preprocessing path shared by training, evaluation and inference.

A face becomes 48x48 8-bit grayscale (stored and cached like that), then float32 in 0..1 with a
channel axis for the model. Serving on a different scaling than training is the classic FER bug,
so nothing else in fervid resizes or scales faces.
"""

from __future__ import annotations

import cv2
import numpy as np

from fervid.errors import FervidError

FACE_SIZE = 48
INPUT_SHAPE = (FACE_SIZE, FACE_SIZE, 1)
MAX_INPUT_BLUR = 10.0  # sigma in pixels; far beyond this a 48x48 face is one flat grey (and OpenCV's kernel overflows)


# A float image is read as 0..1 unless its largest value is at least this: then as 0..255, the
# range ``image.astype(np.float32)`` keeps. Between 1 and this it is neither (a 0..1 image pushed
# past 1 by resampling or a brightness change, most likely), and guessing would misread it silently.
FLOAT_255_FROM = 2.0
FLOAT_SLACK = 1e-3  # rounding error past either end of a range is clipped, not refused
DTYPES_TO_PASS = "pass uint8 (0..255), uint16 (0..65535) or float (0..1)"
DEPTHS_TO_SAVE = "save it as 8-bit (0..255), 16-bit (0..65535) or float (0..1)"  # the same, said of a file


def to_uint8(image: np.ndarray, *, in_file: bool = False) -> np.ndarray:
    """An image of any supported dtype as uint8 0..255, refusing values whose scale is unclear.

    uint8 is 0..255 and uint16 is 0..65535 (16-bit PNG and TIFF as OpenCV reads them). Other
    integer types (int32 from a PIL mode "I" image, int64 from a list of ints) must hold 0..255.
    Floats are 0..1, or 0..255 once their largest value reaches ``FLOAT_255_FROM``. Anything else
    (negative values, NaN, a float just above 1, a 12-bit image in int32, an 8-bit image in uint16,
    bool) is a one-line
    ``FervidError``: reading it at a guessed scale gives confident wrong expressions, or no faces.
    ``in_file``: the image was decoded from a file, so the message says how to save it, not which
    NumPy call converts an array.
    """
    advice = DEPTHS_TO_SAVE if in_file else DTYPES_TO_PASS
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind == "u" and image.dtype.itemsize == 2:  # either byte order (PIL's "I;16B" is big-endian)
        # 0 < max <= 255 of 65535 is black to the eye: an 8-bit picture in uint16 (astype, or PIL's
        # convert("I;16") of an "L" image), read as 16-bit it found no face, or a confident label.
        if image.size and 0 < (top := int(image.max())) <= 255:
            held, fix = ("saved as 16-bit", "save it as 8-bit") if in_file else ("in uint16", "convert it with .astype(np.uint8)")
            raise FervidError(f"{image.dtype} image with values {int(image.min())}..{top}: 16-bit values of at most 255 "
                              f"are an 8-bit picture {held}; {fix}, or scale it to 0..65535")
        return (image >> 8).astype(np.uint8)
    if image.dtype.kind not in "iuf":
        raise FervidError(f"an array of dtype {image.dtype} is not an image; {advice}")
    if image.size == 0:
        return image.astype(np.uint8)
    low, high = image.min(), image.max()
    if image.dtype.kind in "iu":
        if low < 0 or high > 255:
            raise FervidError(f"{image.dtype} image with values {low}..{high}: integer images other than uint16 must hold 0..255; {advice}")
        return image.astype(np.uint8)
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise FervidError(f"{image.dtype} image with NaN or infinite values; {advice}")
    if low >= -FLOAT_SLACK and high <= 1 + FLOAT_SLACK:
        scale = 255.0
    elif low >= -255 * FLOAT_SLACK and FLOAT_255_FROM <= high <= 255 * (1 + FLOAT_SLACK):
        scale = 1.0
    else:
        raise FervidError(
            f"{image.dtype} image with values {low:g}..{high:g}: float images must hold 0..1, or 0..255 with values "
            f"reaching {FLOAT_255_FROM:g}; {advice}"
        )
    return np.clip(np.asarray(image, dtype=np.float32) * np.float32(scale) + 0.5, 0, 255).astype(np.uint8)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; of a dtype ``to_uint8`` reads) as 8-bit single-channel gray."""
    image = to_uint8(image)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise FervidError(f"cannot read an image of shape {image.shape}: expected (H, W) gray or (H, W, C) with 1, 3 or 4 channels")


def prepare_face(image: np.ndarray) -> np.ndarray:
    """A face crop (any size, colour or depth) as the 48x48 uint8 gray array that models see."""
    if np.size(image) == 0:  # OpenCV would fail with an opaque assertion
        raise FervidError(f"an empty crop (shape {np.shape(image)})")
    gray = to_gray(image)
    if gray.shape == (FACE_SIZE, FACE_SIZE):
        return np.ascontiguousarray(gray)
    shrinking = gray.shape[0] > FACE_SIZE or gray.shape[1] > FACE_SIZE
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(gray, (FACE_SIZE, FACE_SIZE), interpolation=interpolation)


def to_model_input(faces: np.ndarray) -> np.ndarray:
    """A batch of 48x48 uint8 faces (N, 48, 48) as the model's float32 input (N, 48, 48, 1) in 0..1."""
    faces = np.asarray(faces)
    if faces.ndim == 2:
        faces = faces[None]
    return (faces.astype(np.float32) / np.float32(255.0))[..., None]


def check_input_blur(sigma: float) -> None:
    """Refuse a blur that would turn a face into one flat grey (or overflow OpenCV's kernel), or NaN."""
    if not 0 <= sigma <= MAX_INPUT_BLUR:
        raise FervidError(f"input blur {sigma:g} is outside 0-{MAX_INPUT_BLUR:g} pixels (sigma on a {FACE_SIZE}x{FACE_SIZE} face)")


def smooth(inputs: np.ndarray, sigma: float) -> np.ndarray:
    """Model inputs (N, 48, 48, 1) blurred by a Gaussian of ``sigma`` pixels (0 = unchanged).

    Training resamples every face (rotation, zoom and shift are bilinear warps), which low-passes it;
    a net trained so sees sharper faces at inference than it ever saw in training. A model's card
    gives the blur that matches its training faces (``inference.input_blur``, measured by
    ``fervid.training.matched_blur``), and the runtime applies it here before the model.
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    check_input_blur(sigma)
    if sigma == 0 or len(inputs) == 0:
        return inputs
    blurred = [cv2.GaussianBlur(face, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE) for face in inputs[..., 0]]
    return np.stack(blurred)[..., None]


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer labels as float32 one-hot rows."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
