"""The one preprocessing path shared by training, evaluation and inference.

A face becomes 48x48 8-bit grayscale (stored and cached like that), then float32 in 0..1 with a
channel axis for the model. Serving on a different scaling than training is the classic FER bug,
so nothing else in fervid resizes or scales faces.
"""

from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 48
INPUT_SHAPE = (FACE_SIZE, FACE_SIZE, 1)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8- or 16-bit; float 0..1) as 8-bit single-channel gray."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(np.asarray(image, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"cannot read an image of shape {image.shape}")


def prepare_face(image: np.ndarray) -> np.ndarray:
    """A face crop (any size, colour or depth) as the 48x48 uint8 gray array that models see."""
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


def smooth(inputs: np.ndarray, sigma: float) -> np.ndarray:
    """Model inputs (N, 48, 48, 1) blurred by a Gaussian of ``sigma`` pixels (0 = unchanged).

    Training resamples every face (rotation, zoom and shift are bilinear warps), which low-passes it;
    a net trained so sees sharper faces at inference than it ever saw in training. A model's card
    gives the blur that matches its training faces (``inference.input_blur``, measured by
    ``fervid.training.matched_blur``), and the runtime applies it here before the model.
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    if sigma <= 0 or len(inputs) == 0:
        return inputs
    blurred = [cv2.GaussianBlur(face, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE) for face in inputs[..., 0]]
    return np.stack(blurred)[..., None]


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer labels as float32 one-hot rows."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
