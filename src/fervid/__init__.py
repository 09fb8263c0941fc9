"""fervid: real-time facial expression recognition.

The inference API (``Recognizer``, ``Face``) needs only NumPy, OpenCV and ONNX Runtime;
training lives in ``fervid.training`` behind the ``train`` extra.
"""

from importlib.metadata import PackageNotFoundError, version

from fervid.labels import EXPRESSIONS

try:
    __version__ = version("fervid")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["EXPRESSIONS", "Face", "Recognizer", "__version__"]


def __getattr__(name: str):
    """``fervid.Recognizer`` and ``fervid.Face`` load on first use, so ``import fervid`` stays light."""
    if name == "Recognizer":
        from fervid.runtime.recognizer import Recognizer

        return Recognizer
    if name == "Face":
        from fervid.runtime.face import Face

        return Face
    raise AttributeError(f"module 'fervid' has no attribute '{name}'")
