"""fervid: real-time facial expression recognition.

The inference API (``Recognizer``, ``Face``) needs only NumPy, OpenCV and ONNX Runtime;
training lives in ``fervid.training`` behind the ``train`` extra. Problems a caller can cause
(an unreadable image, a malformed box, an array of an unclear dtype) raise ``FervidError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS
from fervid.pixel_limit import check_before_opencv

check_before_opencv()  # a bad OPENCV_IO_MAX_IMAGE_PIXELS: a FervidError at `import cv2`, not OpenCV's abort

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these on first use
    from fervid.runtime.face import Face
    from fervid.runtime.recognizer import Recognizer

    __version__: str

__all__ = ["EXPRESSIONS", "Face", "FervidError", "Recognizer", "__version__"]

_LAZY = ("Face", "Recognizer")


def __getattr__(name: str) -> object:
    """``fervid.Recognizer``, ``fervid.Face`` and ``__version__`` load on first use, so ``import fervid``
    stays light (reading the installed version alone took 51 of its 58 ms)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("fervid")
        except PackageNotFoundError:  # running from a source tree that was never installed
            return "0.0.0"
    if name == "Recognizer":
        from fervid.runtime.recognizer import Recognizer

        return Recognizer
    if name == "Face":
        from fervid.runtime.face import Face

        return Face
    raise AttributeError(f"module 'fervid' has no attribute '{name}'")


def __dir__() -> list[str]:
    """The public names, lazy ones included, so ``dir(fervid)`` and completion list them before first
    use (and not this module's own imports, such as ``TYPE_CHECKING``)."""
    return sorted(__all__)
