"""What is in a dataset: counts per class and split, imbalance, unreadable files, exact duplicates,
and a grid of sample faces per class, so problems show before hours of training."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fervid.data.arrays import FaceArrays, load_arrays, readable_counts
from fervid.data.readers import DatasetIndex
from fervid.errors import FervidError
from fervid.fileio import check_writable, write_bytes_atomically
from fervid.labels import EXPRESSIONS
from fervid.preprocess import FACE_SIZE


@dataclass
class DatasetSummary:
    index: DatasetIndex
    counts: pd.DataFrame  # readable images only: what training uses (unreadable ones are listed apart)
    imbalance: float  # largest class / smallest non-empty class, over all splits
    unreadable: list[tuple[str, str]]
    duplicate_groups: list[list[str]]  # sources sharing identical bytes

    @property
    def duplicates(self) -> int:
        """Images that repeat an earlier one (a group of 3 identical files counts 2)."""
        return sum(len(group) - 1 for group in self.duplicate_groups)

    def describe(self, verbose: bool = False) -> list[str]:
        """The lines under the counts table: imbalance, what was dropped, unreadable files, duplicates;
        ``verbose`` lists each unreadable file with why, and each group of identical files."""
        empty = [str(label) for label, row in self.counts.iterrows() if row.sum() == 0]
        lines = [f"imbalance (largest / smallest class): {self.imbalance:.1f}x"
                 + (f" (without {', '.join(empty)}: no images)" if empty else "")]
        lines += [f"dropped: {name} ({count})" for name, count in self.index.dropped.items()]
        lines.append(f"unreadable files: {len(self.unreadable)}")
        groups = len(self.duplicate_groups)
        lines.append(f"exact duplicates: {self.duplicates} repeated image{'s' * (self.duplicates != 1)} "
                     f"in {groups} group{'s' * (groups != 1)} of identical files")
        if verbose:
            lines += [f"  unreadable: {source}: {reason}" for source, reason in self.unreadable]
            lines += [f"  duplicates: {', '.join(group)}" for group in self.duplicate_groups]
        return lines


def summarize(index: DatasetIndex) -> tuple[DatasetSummary, FaceArrays]:
    """Decode everything once (cached) and gather the figures ``fervid data inspect`` prints."""
    arrays = load_arrays(index)
    counts = readable_counts(index, arrays)
    totals = counts.sum(axis=1)
    nonzero = totals[totals > 0]
    imbalance = float(nonzero.max() / nonzero.min()) if len(nonzero) else 0.0
    seen = Counter(arrays.digests.tolist())
    groups: dict[str, list[str]] = {}
    for source, digest in zip(arrays.sources, arrays.digests):
        if seen[digest] > 1:
            groups.setdefault(digest, []).append(str(source))
    return DatasetSummary(index, counts, imbalance, arrays.failed, list(groups.values())), arrays


def check_grid_path(grid: Path) -> None:
    """Refuse, before any data is read, a ``--grid`` that does not end in .png (the grid is PNG bytes)
    or that cannot be written."""
    if grid.suffix.lower() != ".png":
        raise FervidError(f"--grid {grid}: the sample grid is a PNG; give a path ending in .png")
    check_writable(grid, "--grid")


def sample_grid(arrays: FaceArrays, target: Path, per_class: int = 8, seed: int = 0, scale: int = 2) -> Path:
    """A PNG with one row of random faces per class, the class name on the left."""
    rng = np.random.default_rng(seed)
    cell = FACE_SIZE * scale
    label_width = 110
    canvas = np.full((cell * len(EXPRESSIONS), label_width + cell * per_class), 255, dtype=np.uint8)
    for row, name in enumerate(EXPRESSIONS):
        cv2.putText(canvas, name, (6, row * cell + cell // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 1, cv2.LINE_AA)
        rows = np.flatnonzero(arrays.labels == row)
        for column, position in enumerate(rng.choice(rows, size=min(per_class, len(rows)), replace=False)):
            face = cv2.resize(arrays.images[position], (cell, cell), interpolation=cv2.INTER_NEAREST)
            canvas[row * cell : (row + 1) * cell, label_width + column * cell : label_width + (column + 1) * cell] = face
    ok, encoded = cv2.imencode(".png", canvas)
    write_bytes_atomically(target, encoded.tobytes())
    return target
