"""Decode a dataset index into arrays, cached on disk by a fingerprint of the data's content.

FER2013 decodes in seconds; the cache turns every later load into one ``np.load`` (well under 2 s),
which matters because training, evaluation and inspection all start by loading.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fervid.console import progress, warn
from fervid.data.decode import UnreadableImage, decode_image_bytes, decode_pixel_string
from fervid.data.readers import SPLIT_NAMES, DatasetIndex, split_name
from fervid.data.zipped import MemberTooLarge, read_image_member
from fervid.errors import FervidError
from fervid.fileio import atomic_path
from fervid.images import TooManyPixels
from fervid.labels import EXPRESSIONS, normalize_name
from fervid.preprocess import FACE_SIZE, one_hot, to_model_input

# How cached faces were decoded; a new format decodes every dataset afresh. 2: CSV rows with extra
# fields are unreadable; 3: JPEGs upright by EXIF; 4: transparent parts white, PNG and WebP upright;
# 5: 16-bit images holding only 0..255 unreadable (they were read as black faces); 6: the transparent
# parts of gray PNGs (their tRNS key) and of AVIFs white.
CACHE_FORMAT = 6
# The dataset fingerprint (what a run's state and a model card record, what --resume and evaluate
# compare) hashed the cache format until format 3; it stays at 3, so a new decoder neither refuses
# to resume a run nor scores a model's own data as another dataset.
FINGERPRINT_FORMAT = 3
CACHE_KEYS = ("images", "reasons", "digests")


@dataclass
class FaceArrays:
    """Decoded faces of one selection of a dataset, with what could not be read."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64, index into EXPRESSIONS
    sources: np.ndarray  # (N,) str
    digests: np.ndarray  # (N,) str, hash of each entry's raw bytes (exact-duplicate detection)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self) -> np.ndarray:
        """The model's float32 input, (N, 48, 48, 1) in 0..1."""
        return to_model_input(self.images)

    def one_hot(self) -> np.ndarray:
        """One-hot float32 labels in canonical class order."""
        return one_hot(self.labels, len(EXPRESSIONS))

    def common_failure(self) -> str:
        """The most common reason an entry could not be read, e.g. 'most often: no Usage value (5 of 5)'.

        When nothing could be read, "none could be read" alone sends users guessing; the reason that
        covers most entries usually names the one fix.
        """
        if not self.failed:
            return "nothing failed to read"
        reason, count = Counter(reason for _, reason in self.failed).most_common(1)[0]
        if count == 1 and len(self.failed) > 1:  # every reason differs: none is "most often"
            return f"each for its own reason, e.g. {reason}"
        return f"most often: {reason} ({count} of {len(self.failed)})"


def cache_dir() -> Path:
    """``$FERVID_CACHE_DIR``, else ``$XDG_CACHE_HOME/fervid``, else ``~/.cache/fervid``."""
    if os.environ.get("FERVID_CACHE_DIR"):
        return Path(os.environ["FERVID_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fervid"


def fingerprint(index: DatasetIndex) -> str:
    """A hash of the dataset's content and of the index built from it.

    Zips are fingerprinted by their members' CRC-32 and sizes (content, read from the central
    directory without decompressing), CSV files by their bytes, folders by each file's size and
    modification time (reading every byte would cost more than the decode the cache saves).
    """
    digest = hashlib.sha256(f"fervid-data-{FINGERPRINT_FORMAT}-{FACE_SIZE}".encode())
    if index.kind == "zip":
        with zipfile.ZipFile(index.location) as archive:
            for info in archive.infolist():
                digest.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\n".encode())
    elif index.kind == "csv":
        with open(index.location, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    else:
        for source in index.frame["source"]:
            stat = (index.location / source).stat()
            digest.update(f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(pd.util.hash_pandas_object(index.frame, index=False).values.tobytes())
    return digest.hexdigest()[:20]


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes | UnreadableImage:
    """One zip member's bytes, or why it cannot be read: one damaged member is one unreadable image,
    like a corrupt file in a folder, not a failed load. So is one over ``ZIP_IMAGE_BYTES`` unpacked
    (a zip bomb was read whole, gigabytes, before any check): never read past that bound."""
    try:
        return read_image_member(archive, name)
    except MemberTooLarge as error:
        return error
    except NotImplementedError as error:  # e.g. Deflate64 (method 9), which Python's zipfile lacks
        return UnreadableImage(f"compressed in a way Python's zipfile cannot read ({error})")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError) as error:
        detail = str(error).split(" for file ")[0]  # the same reason for every member, so they group
        return UnreadableImage(f"damaged in the zip ({detail or type(error).__name__})")


def _entries(index: DatasetIndex) -> Iterator[bytes | str | UnreadableImage]:
    """Raw entries in index order: file bytes, pixel strings for CSV datasets, or why an entry
    could not be read at all."""
    if index.kind == "zip":
        with zipfile.ZipFile(index.location) as archive:
            for name in index.frame["source"]:
                yield _read_member(archive, index.members.get(name, name))
    elif index.kind == "csv":
        header = pd.read_csv(index.location, nrows=0).columns
        column = next(c for c in header if c.strip().lower() == "pixels")
        # Only the pixels column, as the index read only its own: a row with extra fields is then one
        # unreadable face (the index marks it), not a parser error for the whole file.
        pixels = pd.read_csv(index.location, usecols=[column], index_col=False)[column]
        for row in index.frame["row"]:
            value = pixels.iat[int(row)]
            yield value if isinstance(value, str) else ""  # an empty field reads as NaN
    else:
        for source in index.frame["source"]:
            try:
                yield (index.location / source).read_bytes()
            except OSError as error:
                yield NotReadNow(f"could not be read ({error.strerror or type(error).__name__})")


class NotReadNow(UnreadableImage):
    """A file that could not be read this time (permissions, an I/O error): not its bytes' doing."""


def _decode_all(index: DatasetIndex) -> tuple[dict[str, np.ndarray], bool]:
    """Every entry decoded, and whether the result may be cached: not when a failure came from this
    machine rather than the bytes (a file not readable now, an image over this run's pixel limit),
    or the cache, keyed by content, would keep the face out after a chmod or with the limit unset."""
    count = len(index.frame)
    cacheable = True
    images = np.zeros((count, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    reasons = np.full(count, "", dtype=object)
    digests = np.full(count, "", dtype=object)
    entries = progress(_entries(index), total=count, description=f"decoding {index.location.name}")
    known = index.unreadable
    for position, (source, entry) in enumerate(zip(index.frame["source"], entries)):
        if isinstance(entry, UnreadableImage):  # no bytes to decode or to hash
            reasons[position] = str(entry)
            cacheable = cacheable and not isinstance(entry, NotReadNow)
            continue
        raw = entry.encode() if isinstance(entry, str) else entry
        digests[position] = hashlib.blake2b(raw, digest_size=10).hexdigest()
        if source in known:  # malformed before decoding (a CSV row with extra fields): its pixels mean nothing
            reasons[position] = known[source]
            continue
        try:
            images[position] = decode_pixel_string(entry) if isinstance(entry, str) else decode_image_bytes(entry)
        except UnreadableImage as error:
            reasons[position] = str(error)
            cacheable = cacheable and not isinstance(error, TooManyPixels)
    return {"images": images, "reasons": reasons.astype(str), "digests": digests.astype(str)}, cacheable


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, **arrays)  # type: ignore[arg-type]


def _matches(arrays: dict[str, np.ndarray], count: int) -> bool:
    """Whether cached arrays are whole: every key, one entry per index row, 48x48 uint8 faces.

    A cache file can be a valid npz and still not ours to trust (cut short, written by other code).
    """
    if any(key not in arrays or len(arrays[key]) != count for key in CACHE_KEYS):
        return False
    return arrays["images"].shape[1:] == (FACE_SIZE, FACE_SIZE) and arrays["images"].dtype == np.uint8


def _load_cached(path: Path, count: int) -> dict[str, np.ndarray] | None:
    """The cached arrays at ``path``, or None (and the file removed) when missing or damaged."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as cached:
            arrays = {key: cached[key] for key in cached.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        arrays = {}
    if _matches(arrays, count):
        return arrays
    path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    return None


def cache_path(index: DatasetIndex) -> Path:
    """Where the decoded faces of ``index`` are cached: its content and the decoder's format."""
    return cache_dir() / f"{fingerprint(index)}-{CACHE_FORMAT}.npz"


def decoded(index: DatasetIndex, *, use_cache: bool = True) -> dict[str, np.ndarray]:
    """Every entry of the index decoded (images, failure reasons, digests), from cache when possible."""
    path = cache_path(index) if use_cache else None
    cached = _load_cached(path, len(index.frame)) if path is not None else None
    if cached is not None:
        return cached
    arrays, cacheable = _decode_all(index)
    if path is not None and cacheable:
        try:
            _save_atomically(path, arrays)
        except OSError:
            pass  # a read-only or full cache disk only costs speed
    return arrays


def readable_counts(index: DatasetIndex, arrays: FaceArrays | None = None, *, use_cache: bool = True) -> pd.DataFrame:
    """Images per class and split that decode: what training uses, unreadable files left out.

    Given ``arrays``, ``load_arrays(index)`` of every split, its list of failures says which, so the
    decoded dataset is not loaded a second time.
    """
    if arrays is not None:
        return index.counts(~index.frame["source"].isin([source for source, _ in arrays.failed]).to_numpy())
    return index.counts(decoded(index, use_cache=use_cache)["reasons"] == "")


def load_arrays(index: DatasetIndex, split: str | None = None, *, use_cache: bool = True) -> FaceArrays:
    """Faces and labels of one split (or all), unreadable entries left out and listed in ``failed``.

    ``split`` takes the aliases split folders do (``val``, ``dev``, ``Validation``...); an unknown
    name is an error, not an empty selection.
    """
    split = None if split is None else split_name(split)  # before decoding: a typo costs nothing
    arrays = decoded(index, use_cache=use_cache)
    selected = np.ones(len(index.frame), dtype=bool) if split is None else (index.frame["split"] == split).to_numpy()
    readable = arrays["reasons"] == ""
    keep = selected & readable
    sources = index.frame["source"].to_numpy().astype(str)
    failed = [(sources[i], str(arrays["reasons"][i])) for i in np.flatnonzero(selected & ~readable)]
    labels = index.frame["label"].map({name: i for i, name in enumerate(EXPRESSIONS)}).to_numpy(dtype=np.int64)
    return FaceArrays(
        images=arrays["images"][keep],
        labels=labels[keep],
        sources=sources[keep],
        digests=arrays["digests"][keep],
        failed=failed,
    )


def load_split(index: DatasetIndex, split: str) -> FaceArrays:
    """The faces of one split that must be there and hold readable images (training's train split,
    the split ``evaluate`` scores); FervidError saying what the dataset has instead."""
    name = split_name(split)
    if name not in index.splits:
        held_out = [other for other in index.splits if other != "train"]  # faces no model trained on, if there are any
        hint = f"; --split {(held_out or index.splits)[0]} scores the model on those" if name != "train" else ""
        if index.splits == ["train"] and SPLIT_NAMES.get(normalize_name(index.location.stem)) == name:
            # `evaluate MODEL images/validation`: splits are folders inside DATA, so its class folders are one split
            hint = (f"; {index.location.name} is read as one set of class folders, counted as 'train' (splits are "
                    "folders inside DATA): --split train scores the model on them")
        raise FervidError(f"{index.location}: no '{name}' split (found: {', '.join(index.splits)}){hint}")
    arrays = load_arrays(index, name)
    if len(arrays) == 0:
        raise FervidError(f"{index.location}: none of the '{name}' images could be read; {arrays.common_failure()}")
    if note := unreadable_note(arrays, name):
        warn(f"{index.location}: {note}")
    return arrays


def unreadable_note(arrays: FaceArrays, split: str) -> str | None:
    """How many of a split's images were left out as unreadable, or None: a model trained or scored on
    fewer faces than the dataset holds must say so, not only ``data inspect``."""
    if not arrays.failed:
        return None
    return (f"{len(arrays.failed)} unreadable '{split}' image(s) left out ({arrays.common_failure()}); "
            "`fervid data inspect DATA --verbose` lists them")
