"""Checks of values that come from Python callers as well as the command line (light: NumPy only)."""

from __future__ import annotations

from typing import Any, Union

import numpy as np

# What the public API's number arguments are typed as: NumPy scalars are taken at run time (np.int64
# from an array's .max(), np.float32 from a model), so type checkers must let them through too.
Whole = Union[int, "np.integer[Any]"]
Real = Union[float, "np.floating[Any]", "np.integer[Any]"]
Flag = Union[bool, "np.bool_"]


def is_number(value: object, kind: type) -> bool:
    """Whether ``value`` is a number of ``kind`` (``numbers.Real``, ``numbers.Integral``), NumPy scalars
    included (np.float32(0.1), np.int64(2)), as DetectorConfig takes them; never a bool."""
    return isinstance(value, kind) and not isinstance(value, (bool, np.bool_))
