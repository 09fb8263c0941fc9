"""Datasets: find labelled faces in folders, zips and the FER2013 CSV, and load them as arrays.

The names below are loaded on first use (PEP 562), not as the package is imported: ``fervid analyze``
reads zipped images through ``fervid.data.zipped``, which needs neither pandas nor the readers, and
importing the package ran both (pandas alone costs a noticeable part of a second, in every Ray worker too).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fervid.data.arrays import FaceArrays, load_arrays, load_split
    from fervid.data.readers import DatasetIndex, read_dataset

__all__ = ["DatasetIndex", "FaceArrays", "load_arrays", "load_split", "read_dataset"]
_HOMES = {"FaceArrays": "arrays", "load_arrays": "arrays", "load_split": "arrays", "DatasetIndex": "readers", "read_dataset": "readers"}


def __getattr__(name: str) -> Any:
    """``from fervid.data import read_dataset`` and the like, imported from their module when first asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
