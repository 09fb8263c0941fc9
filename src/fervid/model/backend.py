"""Import Keras once, on the TensorFlow backend unless KERAS_BACKEND says otherwise, without the
screenful of C++ log lines TensorFlow prints to stderr while it loads."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from collections.abc import Iterator


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null (C++ logging bypasses Python's sys.stderr)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
with _stderr_silenced():
    import keras  # noqa: E402

__all__ = ["keras"]
