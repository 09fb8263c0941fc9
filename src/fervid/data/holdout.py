"""The validation faces a run sets aside when its dataset has no validation split.

Training draws them, and ``evaluate`` and ``export --int8`` draw the very same faces again from the
run's seed and fraction, so a run's scores can be reproduced without a copy of the split.
"""

from __future__ import annotations

import numpy as np

from fervid.data.arrays import FaceArrays


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded, per-class fraction of the rows (at least one per class with >1 rows)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        take = int(round(len(rows) * fraction))
        take = min(max(take, 1 if len(rows) > 1 else 0), len(rows) - 1) if len(rows) > 1 else 0
        mask[rng.choice(rows, size=take, replace=False)] = True
    return mask


def subset(arrays: FaceArrays, mask: np.ndarray) -> FaceArrays:
    """The faces ``mask`` selects (their failures stay with the whole split)."""
    return FaceArrays(arrays.images[mask], arrays.labels[mask], arrays.sources[mask], arrays.digests[mask], [])
