"""Checks of values that come from Python callers as well as the command line (light: NumPy only)."""

from __future__ import annotations

import numpy as np


def is_number(value: object, kind: type) -> bool:
    """Whether ``value`` is a number of ``kind`` (``numbers.Real``, ``numbers.Integral``), NumPy scalars
    included (np.float32(0.1), np.int64(2)), as DetectorConfig takes them; never a bool."""
    return isinstance(value, kind) and not isinstance(value, (bool, np.bool_))
