"""Import Keras once, on the TensorFlow backend unless KERAS_BACKEND says otherwise, without the
screenful of C++ log lines TensorFlow prints to stderr while it loads."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from collections.abc import Iterator

from fervid.errors import FervidError
from fervid.model.specs import MODEL_BACKENDS


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


# The package each Keras backend needs (KERAS_BACKEND=jax without JAX failed with Keras's traceback).
BACKEND_PACKAGES = {"tensorflow": "tensorflow-cpu (the 'train' extra)", "jax": "jax", "torch": "torch", "numpy": "numpy"}

if not os.environ.get("KERAS_BACKEND", "").strip():  # set but empty (ENV KERAS_BACKEND= in a Dockerfile): Keras's default
    os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_backend = os.environ["KERAS_BACKEND"]
if _backend not in MODEL_BACKENDS:
    raise FervidError(f"KERAS_BACKEND={_backend}: not a Keras backend (use {', '.join(MODEL_BACKENDS)}, or unset it for tensorflow)")
try:
    with _stderr_silenced():
        import keras  # noqa: E402
except ImportError as error:
    if error.name in ("keras", None):
        raise
    wanted = BACKEND_PACKAGES.get(_backend, error.name) if error.name.split(".")[0] == _backend else error.name
    raise FervidError(f"KERAS_BACKEND={_backend}: a package it needs is not installed ({error.name}); install "
                      f"{wanted}, or unset KERAS_BACKEND for tensorflow") from None

__all__ = ["keras"]
