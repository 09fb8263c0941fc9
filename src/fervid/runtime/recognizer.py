"""``Recognizer``: detect faces, crop them, classify them all in one batched call, return ``Face`` results."""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union, cast

import numpy as np

from fervid.checks import Flag, Real, Whole, is_number
from fervid.errors import FervidError
from fervid.pixel_limit import pixel_limit
from fervid.images import (
    Color, ImageInput, PILImage, as_bgr, channel_order, gray_frame, image_path, read_image,
)
from fervid.pil_images import is_pil_image, pil_array, pil_as_gray, pil_upright
from fervid.preprocess import FACE_SIZE, to_gray
from fervid.runtime.classify import ExpressionClassifier, available_bundled_models
from fervid.runtime.detect import DetectorConfig, FaceDetector
from fervid.runtime.face import Face


def _holds_paths(value: object) -> bool:
    """Whether ``value`` is a file path or a list or tuple of them (given where images are expected)."""
    if isinstance(value, (str, os.PathLike)):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(item, (str, os.PathLike)) for item in value)


def crop_face(gray: np.ndarray, box: Sequence[int] | np.ndarray, margin: float = 0.0) -> np.ndarray:
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


def checked_boxes(boxes: object, frame_shape: tuple[int, ...]) -> np.ndarray:
    """Boxes given to ``predict`` as (N, 4) int32 x, y, w, h rows, refusing any that cannot hold a face.

    One flat (x, y, w, h) is one box. A box with no area, or entirely outside the frame, would be
    classified as a blank crop and still get a confident label, so it is a FervidError; a box partly
    outside is kept (``crop_face`` repeats the frame's edge).
    """
    try:
        given = np.asarray(boxes)
        # text ("10"), True and None were taken as numbers (None as NaN, named as such); a True among
        # ints comes out of NumPy as the int 1, so a list is checked value by value
        values = given.flat if isinstance(boxes, np.ndarray) else np.asarray(boxes, dtype=object).flat
        if given.dtype.kind not in "iufO" or (not isinstance(boxes, np.ndarray) or given.dtype.kind == "O") and not all(
                is_number(value, numbers.Real) for value in values):
            raise TypeError
        array = given.astype(np.float64)
    except (TypeError, ValueError):
        raise FervidError("boxes must be (x, y, w, h) rows of numbers") from None
    if array.size == 0 and array.shape in ((0,), (0, 4)):  # no boxes; [[]] is a box of no numbers
        return np.zeros((0, 4), np.int32)
    if array.shape == (4,):
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise FervidError(f"boxes must be (x, y, w, h) rows, got shape {array.shape}")
    if not (np.isfinite(array).all() and np.abs(array).max() < 2**31):
        raise FervidError("boxes must be pixel coordinates, got NaN, infinity or a value past 2**31")
    array = np.rint(array)  # a detector's fractional box to the nearest pixels, not truncated towards 0
    for number, box in enumerate(array.astype(np.int64)):
        if problem := box_problem(box, frame_shape):
            raise FervidError(f"box {number} {problem}")
    return array.astype(np.int32)


def box_problem(box: np.ndarray | tuple[int, int, int, int], frame_shape: tuple[int, ...]) -> str | None:
    """Why an x, y, w, h box cannot hold a face in a frame of ``frame_shape`` ("(x, y, w, h) lies
    entirely outside the 640x480 image"), or None when it can."""
    x, y, w, h = (int(value) for value in box)
    height, width = frame_shape[:2]
    if w <= 0 or h <= 0:
        return f"({x}, {y}, {w}, {h}): width and height must be 1 or more"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"({x}, {y}, {w}, {h}) lies entirely outside the {width}x{height} image"
    if w > 4 * max(width, height) or h > 4 * max(width, height):  # its edge padding would fill memory
        return f"({x}, {y}, {w}, {h}) is over 4 times the size of the {width}x{height} image"
    return None


MAX_THREADS = 1024

# A crop under 8 pixels a side, or more than 4 times as long as wide, holds no face the model can
# read (it sees 48x48), yet gets a label like any other: every way to classify whole images
# (predict --crops, analyze --crops, the API's ?crops=true) says so instead of staying silent.
MIN_CROP_SIDE, MAX_CROP_ASPECT = 8, 4.0


def crop_doubt(width: int, height: int) -> str | None:
    """Why a ``width`` x ``height`` image taken whole as a face crop is hardly one, or None."""
    if min(width, height) >= MIN_CROP_SIDE and max(width, height) <= MAX_CROP_ASPECT * min(width, height):
        return None
    return f"a {width}x{height} image is hardly a face crop; classified anyway"


# What classify reads: one crop or a stack (an array), or a list of crops (arrays or PIL images).
FaceCrops = Union[np.ndarray, PILImage, Sequence[Union[np.ndarray, PILImage]]]
# What predict's boxes= reads: one (x, y, w, h) or rows of them, in pixels.
BoxesInput = Union[np.ndarray, Sequence[Real], Sequence[Sequence[Real]]]  # NumPy scalars count as numbers


def pil_crop(image: PILImage) -> np.ndarray:
    """A PIL image as an array fervid reads: turned upright by its EXIF orientation (as a path is),
    then gray by its own mode, or by dtype for 16/32-bit and float modes (``pil_as_gray``)."""
    image = pil_upright(image)
    gray = pil_as_gray(image)
    return pil_array(image) if gray is None else gray


class Recognizer:
    """Faces and their expressions in images and frames; the model and the cascade are loaded once.

    >>> recognizer = Recognizer()
    >>> for face in recognizer.predict("photo.jpg"):
    ...     print(face.box, face.expression, face.confidence)

    Arguments (all but ``model`` by keyword; a bad value is a ``FervidError``):

    - ``model``: a bundled model's name (``"fervid-vgg"``, the default, or ``"fervid-compact"``, the
      faster one; ``fervid models`` lists them), an ``.onnx`` file, or a ``fervid train`` run folder.
    - ``scale_factor`` (1.01 to 100, default 1.1), ``min_neighbors`` (0 to 1000, default 5),
      ``min_size`` (pixels, default 40): the Haar cascade's scan, as OpenCV's ``detectMultiScale``
      takes them; a larger ``scale_factor`` scans faster and misses more, a larger ``min_neighbors``
      finds fewer false faces, and no face smaller than ``min_size`` is looked for.
    - ``detection_width``: frames wider than this many pixels (64 or more, default 1280) are scanned
      shrunk to it, boxes given back in the frame's own pixels; None scans them whole, at any cost.
    - ``margin``: share of the box side (0 to 1, default 0) added around each face before it is
      classified. 0 because OpenCV's Haar boxes already match FER2013's crops (median box side 0.97
      of the crop, centres 2.6% of the side apart, measured on validation faces).
    - ``flip_tta``: average each face with its mirror image; None (default) does what the model
      card says (both bundled models: True).
    - ``threads``: ONNX Runtime's threads; None (default) uses up to 4 of the cores this process may
      run on. In a process pool with a worker per core, pass 1: each worker's threads otherwise
      compete for the same cores (about 40% fewer faces a second with two workers on two cores).

    One recognizer may be shared by threads: each thread scans with a cascade of its own, and ONNX
    Runtime runs a session from several threads at once. It pickles as the arguments it was made
    with and its ``margin`` and ``flip_tta`` as they are now, so a process pool's workers each load
    their own copy that gives the same results.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        scale_factor: Real = 1.1,
        min_neighbors: Whole = 5,
        min_size: Whole = 40,
        detection_width: Whole | None = 1280,
        margin: Real = 0.0,
        flip_tta: Flag | None = None,
        threads: Whole | None = None,
    ) -> None:
        pixel_limit()  # a bad OPENCV_IO_MAX_IMAGE_PIXELS set after OpenCV was imported fails here, not at a decode
        if not (is_number(margin, numbers.Real) and 0.0 <= margin <= 1.0):
            raise FervidError(f"margin must be a number from 0 to 1, got {margin!r}")
        # Past 1024 (2**40 was ONNX Runtime's pybind TypeError) no CPU has the cores to run them.
        if threads is not None and not (is_number(threads, numbers.Integral) and 1 <= threads <= MAX_THREADS):
            raise FervidError(f"threads must be None (up to 4) or a whole number from 1 to {MAX_THREADS}, got {threads!r}")
        if flip_tta is not None and not isinstance(flip_tta, (bool, np.bool_)):
            raise FervidError(f"flip_tta must be True, False or None (the model card's), got {flip_tta!r}")
        if isinstance(model, os.PathLike) and not isinstance(model, Path):
            model = Path(os.fsdecode(os.fspath(model)))
        if model is not None and not isinstance(model, (str, Path)):
            raise FervidError(f"model must be a bundled model name, an .onnx path or a run folder, got {type(model).__name__}")
        self.classifier = ExpressionClassifier(model, threads=None if threads is None else int(threads))
        self.detector = FaceDetector(DetectorConfig(scale_factor, min_neighbors, min_size, detection_width))
        self.margin = float(margin)
        self.flip_tta = self.classifier.flip_tta if flip_tta is None else bool(flip_tta)
        # a bundled model by name (another machine installs the package elsewhere), a file by its absolute path
        bundled = model is None or (isinstance(model, str) and model in available_bundled_models())
        self._arguments: tuple[str | os.PathLike[str] | None, dict[str, Any]] = (model if bundled else os.path.abspath(self.classifier.path), dict(
            scale_factor=float(scale_factor), min_neighbors=int(min_neighbors), min_size=int(min_size),
            detection_width=detection_width, margin=self.margin, flip_tta=self.flip_tta, threads=threads))
        self.warm_up()

    def __reduce__(self) -> tuple:
        """Pickled as the arguments it was made with (a bundled model by name, a file by its path; ``margin`` and
        ``flip_tta`` as they are now), so a process pool
        (``ProcessPoolExecutor``, ``multiprocessing``) gets a recognizer of its own in each worker:
        ONNX Runtime's session itself cannot be pickled."""
        path, options = self._arguments
        # margin and flip_tta as they are now: set after construction, they were lost on the way to a worker
        options = {**options, "margin": self.margin, "flip_tta": self.flip_tta}
        return (functools.partial(Recognizer, **options), (path,))

    def __repr__(self) -> str:
        return f"Recognizer(model={self.classifier.name!r}, path={str(self.classifier.path)!r}, flip_tta={self.flip_tta})"

    def warm_up(self) -> None:
        """Run the model and the cascade once, so the first real frame does not pay ONNX Runtime's set-up."""
        self.classify([np.zeros((FACE_SIZE, FACE_SIZE), np.uint8)] * 2)
        self.detector.detect(np.zeros((240, 320), np.uint8))

    def detect(self, image: ImageInput, *, color: Color = "bgr") -> np.ndarray:
        """Face boxes (N, 4) x, y, w, h in an image or frame."""
        return self.detector.detect(self._gray(image, color, "detect"))

    def classify(self, faces: FaceCrops, *, color: Color = "bgr") -> np.ndarray:
        """Probabilities (N, 7) for face crops of any size (gray, or ``color`` BGR/RGB), in one batched model call.

        ``faces`` is a list of crops, a stacked batch (N, H, W[, C]), or one crop (H, W) or (H, W, C),
        which gives one row. Crops are read by dtype as ``predict`` reads images; an empty crop is
        a FervidError. Every crop gets a label, whatever it holds (a 2x2 crop too): the model reads
        any image as a face; ``crop_doubt(width, height)`` says when one is hardly a face crop.
        """
        if _holds_paths(faces):
            raise FervidError("classify takes face crops (arrays or PIL images), not file paths: predict(path) finds and "
                              "classifies the faces in a photo (fervid.images.read_image reads one as an array)")
        if isinstance(faces, (bytes, bytearray, memoryview, dict)) or faces is None:  # iterated, bytes and keys were "crops of shape ()"
            raise FervidError(f"expected face crops (an array, a PIL image or a list of them), got {type(faces).__name__}")
        crops: np.ndarray | list[np.ndarray]
        if isinstance(faces, np.ndarray):
            crops = faces
        elif is_pil_image(faces):
            crops = pil_crop(faces)
        else:
            try:
                crops = [pil_crop(face) if is_pil_image(face) else face for face in cast(Sequence, faces)]
            except TypeError:
                raise FervidError(f"expected face crops (an array or a list of them), got {type(faces).__name__}") from None
        if channel_order(color) == "rgb":
            crops = as_bgr(crops, color) if isinstance(crops, np.ndarray) else [as_bgr(crop, color) for crop in crops]
        return self.classifier.classify(crops, flip_tta=self.flip_tta)

    def classify_boxes(self, gray: np.ndarray, boxes: BoxesInput) -> np.ndarray:
        """Probabilities (N, 7) for the boxes (x, y, w, h rows) of a 2-D uint8 gray frame, all in one
        batched call. Boxes are checked as ``predict``'s are: one with no area or entirely outside the
        frame would be classified as a blank crop with a confident label, so it is a FervidError."""
        if not (isinstance(gray, np.ndarray) and gray.ndim == 2 and gray.dtype == np.uint8 and gray.size):
            described = f"{gray.dtype} array of shape {gray.shape}" if isinstance(gray, np.ndarray) else type(gray).__name__
            raise FervidError(f"classify_boxes takes a gray frame (a 2-D uint8 array), got a {described}; "
                              "predict(image, boxes=...) reads any image")
        return self.classify([crop_face(gray, box, self.margin) for box in checked_boxes(boxes, gray.shape)])

    def predict(self, image: ImageInput, boxes: BoxesInput | None = None, *, color: Color = "bgr") -> list[Face]:
        """The faces in an image (a path, a BGR, RGB or gray array, or a PIL image), each with its expression.

        Arrays are read by dtype: uint8 0..255; uint16 0..65535; float 0..1, or 0..255 once values
        reach 2 (``image.astype(np.float32)``); other integer types (PIL mode "I") 0..255. Values
        outside those ranges, a float just above 1, NaN, bool and a uint16 image whose values are
        all 1..255 (an 8-bit picture in uint16, black to the eye) are a FervidError, never a guess.
        ``color`` is 'bgr' (OpenCV) or 'rgb' (PIL, matplotlib), in any case.

        Give ``boxes`` (x, y, w, h rows, or one such box) to classify known faces and skip
        detection; a box of no area or entirely outside the image is a FervidError.
        """
        gray = self._gray(image, color, "predict")
        boxes = self.detector.detect(gray) if boxes is None else checked_boxes(boxes, gray.shape)
        probabilities = self.classify([crop_face(gray, box, self.margin) for box in boxes])
        return [Face.from_probabilities(box, row) for box, row in zip(boxes, probabilities)]

    @staticmethod
    def _gray(image: ImageInput, color: Color, caller: str) -> np.ndarray:
        channel_order(color)  # a wrong color is refused for paths too, not ignored
        if (path := image_path(image)) is not None:
            return to_gray(read_image(path))
        assert not isinstance(image, (str, os.PathLike))  # image_path took those
        if is_pil_image(image):  # a PIL image knows its own mode: color does not apply
            pixels = pil_crop(image)
            if pixels.size == 0:
                raise FervidError(f"expected an image of at least 1x1 pixels, got an empty PIL image of shape {pixels.shape}")
            return to_gray(pixels)
        image = cast(np.ndarray, image)  # or anything else a caller passed: checked below
        if isinstance(image, (bytes, bytearray, memoryview)):
            raise FervidError(f"expected an image path or array, got {type(image).__name__}; decode the bytes first "
                              "(fervid.images.decode_image) or pass the file's path")
        if isinstance(image, (list, tuple)) and _holds_paths(image):
            raise FervidError(f"{caller} takes one image, got a list of {len(image)} paths: call it once per path "
                              "(fervid.analyze reads many files into one table)")
        try:
            if np.ndim(image) == 0:  # None, a number: say what came, not that its shape is ()
                raise FervidError(f"expected an image path or array, got {type(image).__name__}")
            image = np.asarray(image)
        except ValueError:  # a ragged nested list
            raise FervidError("expected an image array (H, W) or (H, W, C), got nested lists of unequal lengths") from None
        if image.ndim not in (2, 3) or image.size == 0:
            raise FervidError(f"expected an image array (H, W) or (H, W, C), got shape {image.shape}")
        return gray_frame(image, color)
