"""PIL images in, arrays out: a PIL image is recognised by its interface and read by its own mode
(EXIF orientation, palette, transparency, 16-bit and float modes), so fervid never imports PIL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeGuard, TypeVar, overload

import numpy as np

from fervid.images import UnreadableImage
from fervid.preprocess import to_gray
from fervid.transparency import on_white

if TYPE_CHECKING:  # for annotations only
    from PIL import Image


def is_pil_image(image: object) -> TypeGuard[Image.Image]:
    """Whether ``image`` is a PIL image, known by its interface, so that fervid never imports PIL."""
    return not isinstance(image, np.ndarray) and hasattr(image, "mode") and callable(getattr(image, "convert", None))


_T = TypeVar("_T")


@overload
def pil_upright(image: Image.Image) -> Image.Image: ...
@overload
def pil_upright(image: _T) -> _T: ...
def pil_upright(image: object) -> object:
    """A PIL image turned by its EXIF orientation, as ``read_image`` turns a file: a phone's portrait
    photo opened with ``Image.open`` is stored on its side, where no face is found and any box would
    be in the stored pixels' coordinates. Anything else comes back as it is."""
    if not is_pil_image(image) or not callable(getattr(image, "getexif", None)):
        return image
    from PIL import ImageOps  # present: this is a PIL image

    with pil_errors():
        return ImageOps.exif_transpose(image)


@contextmanager
def pil_errors() -> Iterator[None]:
    """PIL's own exceptions while it reads a PIL image (a truncated file, a mode it cannot convert,
    a closed file) as one-line ``UnreadableImage`` errors, as the same file given by path gives."""
    try:
        yield
    except (OSError, ValueError, AssertionError, AttributeError) as error:
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise UnreadableImage(f"a PIL image that PIL cannot read or convert ({reason})") from None


def pil_as_gray(image: object) -> np.ndarray | None:
    """A PIL image as 8-bit gray by its own mode (transparent parts white), or None for anything else.

    ``np.asarray`` of a palette ("P"), CMYK or YCbCr image gives numbers that are not BGR or RGB
    colours, and would be classified without a word; PIL's own conversion knows each mode. PIL is
    recognised by its interface, so fervid never imports it.
    """
    if not is_pil_image(image):
        return None
    if image.mode in PIL_MODES_BY_DTYPE:
        return None
    with pil_errors():
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in getattr(image, "info", {}):
            bgra = np.asarray(image.convert("RGBA"))[:, :, [2, 1, 0, 3]]
            if bgra[:, :, 3].any():  # as a file is read: an alpha never set is ignored
                return to_gray(on_white(bgra))
        return np.asarray(image.convert("L"))


# 16/32-bit integer and 32-bit float gray: PIL's "L" would clip them (a 0..1 float picture to black),
# so they are read as arrays, by dtype, as np.asarray gives them.
PIL_MODES_BY_DTYPE = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def pil_array(image: Image.Image) -> np.ndarray:
    """A PIL image of a mode read by dtype as its array (``PIL_MODES_BY_DTYPE``)."""
    with pil_errors():
        return np.asarray(image)
