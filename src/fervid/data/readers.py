"""Index a labelled face dataset as a DataFrame of (source, label, split), whatever its format.

Three formats cover what users download: a folder per class (optionally under split folders such
as Kaggle's ``images/train|validation/<class>`` or ``train|test/<class>``), the same inside a
``.zip`` (read in place, never extracted), and the FER2013 CSV (``emotion,pixels,Usage``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import pandas as pd

from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS, FER2013_CSV_CLASSES, canonical_label, normalize_name

UNKNOWN_LISTED = 8  # unknown class folders named in the error; a wrong root can hold hundreds
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "publictest": "validation",
    "test": "test",
    "testing": "test",
    "privatetest": "test",
}
CSV_USAGE = {"training": "train", "publictest": "validation", "privatetest": "test"}
CSV_COLUMNS = ("emotion", "pixels")
UnknownPolicy = Literal["error", "drop"]


@dataclass
class DatasetIndex:
    """Where a dataset lives and what it holds: one row per image (source, label, split).

    ``source`` is a path relative to ``location`` for folders, a member name for zips and the row
    number for CSV files; ``dropped`` counts what was left out (folders that are not expression
    classes, CSV rows without a valid class).
    """

    location: Path
    kind: Literal["folder", "zip", "csv"]
    frame: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split (train, validation or test)."""
        return self.frame[self.frame["split"] == name]

    @property
    def splits(self) -> list[str]:
        """Splits present, in train/validation/test order."""
        order = ["train", "validation", "test"]
        return [s for s in order if s in set(self.frame["split"])]

    def counts(self) -> pd.DataFrame:
        """Images per class (rows, canonical order) and split (columns)."""
        table = pd.crosstab(self.frame["label"], self.frame["split"])
        return table.reindex(index=list(EXPRESSIONS), columns=self.splits, fill_value=0)


def read_dataset(
    path: str | Path,
    *,
    unknown: UnknownPolicy = "error",
    mapping: Mapping[str, str] | None = None,
) -> DatasetIndex:
    """Index the dataset at ``path`` (folder, ``.zip`` or ``.csv``).

    Folders that are not one of the seven classes stop the read with an error naming them, unless
    ``unknown="drop"`` (skip them, counted in ``dropped``) or ``mapping`` says what they are.
    """
    if unknown not in ("error", "drop"):  # anything else would silently act as "drop"
        raise FervidError(f"--unknown must be 'error' or 'drop', got '{unknown}'")
    location = Path(path).expanduser()
    if not location.exists():
        raise FervidError(f"{location}: no such file or folder")
    if location.is_dir():
        names = [str(p.relative_to(location).as_posix()) for p in location.rglob("*") if p.is_file()]
        frame, dropped = _index_paths(names, location, unknown, mapping)
        return DatasetIndex(location, "folder", frame, dropped)
    suffix = location.suffix.lower()
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(location) as archive:
                names = [info.filename for info in archive.infolist() if not info.is_dir()]
        except (zipfile.BadZipFile, OSError) as error:
            raise FervidError(f"{location}: not a readable zip file ({error})") from None
        frame, dropped = _index_paths(names, location, unknown, mapping)
        return DatasetIndex(location, "zip", frame, dropped)
    if suffix == ".csv":
        frame, dropped = _index_csv(location)
        return DatasetIndex(location, "csv", frame, dropped)
    raise FervidError(f"{location}: expected a folder, a .zip or a FER2013-style .csv")


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _index_paths(
    names: list[str],
    location: Path,
    unknown: UnknownPolicy,
    mapping: Mapping[str, str] | None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Find each image's class folder and split folder from its path.

    The class is the image's parent folder; the split is the nearest ancestor with a split name
    (``train``, ``validation``/``val``, ``test``, ...), or ``train`` when there is none, in which
    case training holds out its own validation fraction.
    """
    rows: list[tuple[str, str, str]] = []
    unknown_counts: dict[str, int] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) < 2 or _is_hidden(parts) or PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        folder = parts[-2]
        split = next((SPLIT_NAMES[normalize_name(p)] for p in reversed(parts[:-2]) if normalize_name(p) in SPLIT_NAMES), "train")
        if normalize_name(folder) in SPLIT_NAMES:
            continue  # an image loose in a split folder has no class
        label = canonical_label(folder, mapping)
        if label is None:
            key = "/".join(parts[:-1])
            unknown_counts[key] = unknown_counts.get(key, 0) + 1
            continue
        rows.append((name, label, split))
    if unknown_counts and unknown == "error":
        listed = sorted(unknown_counts.items(), key=lambda kv: (-kv[1], kv[0]))  # the biggest first
        folders = ", ".join(f"{k} ({v})" for k, v in listed[:UNKNOWN_LISTED])
        if len(listed) > UNKNOWN_LISTED:
            folders += f" and {len(listed) - UNKNOWN_LISTED} more"
        raise FervidError(
            f"{location}: folders that are not expression classes: {folders}; "
            "drop them with --unknown drop or map them with --map FOLDER=CLASS"
        )
    if not rows:
        raise FervidError(
            f"{location}: no images in class folders (expected <class>/*.jpg, optionally under "
            f"train/validation/test; classes: {', '.join(EXPRESSIONS)})"
        )
    frame = pd.DataFrame(rows, columns=["source", "label", "split"])
    dropped = {PurePosixPath(k).name: v for k, v in unknown_counts.items()}
    return frame.sort_values(["split", "label", "source"], kind="stable").reset_index(drop=True), dropped


def _index_csv(location: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """FER2013's CSV: ``emotion`` is a class number in FER2013's own order, ``Usage`` the split."""
    try:
        header = pd.read_csv(location, nrows=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise FervidError(f"{location}: not a readable CSV ({error})") from None
    columns = {normalize_name(c): c for c in header.columns}
    missing = [c for c in CSV_COLUMNS if c not in columns]
    if missing:
        raise FervidError(
            f"{location}: CSV needs columns emotion,pixels[,Usage]; missing {', '.join(missing)} "
            f"(found {', '.join(map(str, header.columns))})"
        )
    usecols = [columns["emotion"]] + ([columns["usage"]] if "usage" in columns else [])
    try:
        table = pd.read_csv(location, usecols=usecols)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:  # a bad row further down than the header
        raise FervidError(f"{location}: not a readable CSV ({str(error).strip()})") from None
    emotion = pd.to_numeric(table[columns["emotion"]], errors="coerce")
    bad = emotion.isna() | ~emotion.isin(range(len(FER2013_CSV_CLASSES)))
    if bad.all():
        raise FervidError(f"{location}: no row has an emotion between 0 and 6")
    labels = emotion.where(~bad, 0).astype(int).map(dict(enumerate(FER2013_CSV_CLASSES)))
    if "usage" in columns:
        split = table[columns["usage"]].astype(str).map(lambda u: CSV_USAGE.get(normalize_name(u), "train"))
    else:
        split = pd.Series("train", index=table.index)
    frame = pd.DataFrame({"source": table.index.astype(str), "label": labels, "split": split})
    dropped = {"rows with an emotion outside 0-6": int(bad.sum())} if bad.any() else {}
    return frame[~bad].reset_index(drop=True), dropped
