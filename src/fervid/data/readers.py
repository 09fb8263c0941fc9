"""Index a labelled face dataset as a DataFrame of (source, label, split), whatever its format.

Three formats cover what users download: a folder per class (optionally under split folders such
as Kaggle's ``images/train|validation/<class>`` or ``train|test/<class>``), the same inside a
``.zip`` (read in place, never extracted), and the FER2013 CSV (``emotion,pixels,Usage``).
"""

from __future__ import annotations

import hashlib
import csv
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd

from fervid.console import warn
from fervid.errors import FervidError
from fervid.images import is_hidden, is_image_name, walk_files
from fervid.labels import EXPRESSIONS, FER2013_CSV_CLASSES, SPLIT_NAMES, canonical_label, folder_split, normalize_name, split_folder

UNKNOWN_LISTED = 8  # unknown class folders named in the error; a wrong root can hold hundreds
CSV_COLUMNS = ("emotion", "pixels")
USAGES_LISTED = 5  # unknown Usage values named in the error
SUFFIXES_LISTED = 3  # suffixes named in the dropped line for files without an image suffix
ARCHIVES_LISTED = 4  # CSV files and tarballs named when a download holds no images in class folders
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
UnknownPolicy = Literal["error", "drop"]


@dataclass
class DatasetIndex:
    """Where a dataset lives and what it holds: one row per image (source, label, split).

    ``source`` is a path relative to ``location`` for folders, a member name for zips and ``line N``
    for CSV rows (the line an editor shows; the frame's ``row`` column is the data row pandas reads
    it as); ``dropped`` counts what was left out (folders that are not expression
    classes, images in a split folder with no class folder, files in class folders without an image
    suffix, CSV rows without a valid class);
    ``unreadable`` names the rows the reader already knows cannot be decoded (a CSV row with more
    fields than the header), with why: they stay in the frame so that loading lists them.
    ``members`` maps a zip's ``source`` to its real member name where the two differ (Windows
    tools write ``train\\happy\\0.jpg``; the index always uses ``/``).
    """

    location: Path
    kind: Literal["folder", "zip", "csv"]
    frame: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)

    def dropped_note(self) -> str | None:
        """What the read left out, in one line, or None: a model trained or scored on fewer faces than
        the dataset holds must say so (``data inspect`` lists the same on its ``dropped:`` lines)."""
        if not self.dropped:
            return None
        return "left out: " + "; ".join(f"{name} ({count})" for name, count in self.dropped.items())

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split: train, validation or test, or any alias of them (``val``, ``dev``...)."""
        return self.frame[self.frame["split"] == split_name(name)]

    @property
    def splits(self) -> list[str]:
        """Splits present, in train/validation/test order."""
        order = ["train", "validation", "test"]
        return [s for s in order if s in set(self.frame["split"])]

    def counts(self, keep: np.ndarray | None = None) -> pd.DataFrame:
        """Images per class (rows, canonical order) and split (columns), of the rows ``keep`` selects.

        Every split present keeps its column even when ``keep`` (e.g. the readable rows) empties it.
        """
        frame = self.frame if keep is None else self.frame[np.asarray(keep, dtype=bool)]
        table = pd.crosstab(frame["label"], frame["split"])
        return table.reindex(index=list(EXPRESSIONS), columns=self.splits, fill_value=0)


def split_name(name: str) -> str:
    """The split ``name`` stands for (``val`` and ``Validation`` are ``validation``), as folder names
    are read (``train_set``, ``Public_Test``); an unknown name is an error, since selecting it would
    silently give no images."""
    split = folder_split(str(name))
    if split is None:
        aliases = ", ".join(alias for alias in SPLIT_NAMES if alias not in ("train", "validation", "test"))
        raise FervidError(f"unknown split '{name}': use train, validation or test (or an alias: {aliases})")
    return split


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
    if not location.is_dir() and not location.is_file():
        # A named pipe (mkfifo data.zip) blocked opening it until some writer came, forever; a device
        # or a pipe has no size, and a dataset is read more than once (index, fingerprint, decode).
        raise FervidError(f"{location}: not a regular file (a device, pipe or socket); give a folder, a .zip or a .csv file")
    if location.is_dir():
        broken: list[Path] = []
        names = [p.relative_to(location).as_posix() for p in walk_files(location, broken)]  # symlinked folders too
        frame, dropped = _index_paths(names, location, unknown, mapping, lambda name: _file_identity(location / name))
        if pointless := [link for link in broken if is_image_name(link.name) and not is_hidden(link.relative_to(location).parts)]:
            dropped["links that point nowhere"] = len(pointless)
        return DatasetIndex(location, "folder", frame, dropped)
    suffix = location.suffix.lower()
    if suffix == ".zip":
        members, stored, repeated, links = _zip_members(location)
        frame, dropped = _index_paths(list(members), location, unknown, mapping, lambda name: stored.get(name, object()))
        if repeated:  # one row per name: the other entries of a name are never read
            dropped["zip entries whose name an earlier entry already has (the last entry of each name is read)"] = repeated
        if links:
            dropped["symbolic links stored in the zip (zip -y stores a link, not the files it points to: zip without -y)"] = links
        renamed = {name: real for name, real in members.items() if name != real}
        return DatasetIndex(location, "zip", frame, dropped, members=renamed)
    if suffix == ".csv":
        _warn_unused_mapping(location, mapping, set())  # a CSV's classes are numbers in FER2013's order
        frame, dropped, unreadable = _index_csv(location)
        return DatasetIndex(location, "csv", frame, dropped, unreadable)
    raise FervidError(f"{location}: expected a folder, a .zip or a FER2013-style .csv")


def _file_identity(path: Path) -> tuple[int, str] | object:
    """A file's size and content hash, what tells a copy of a file from another file of the same name,
    or a fresh object where it cannot be read (a link pointing nowhere): never equal to another's.

    The size alone said every same-named 48x48 BMP of two collections was a copy (an uncompressed
    format's files all have one size), and one collection was left out. Only files whose folders
    repeat another's names are compared, so a dataset without such folders reads no file here.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return object()
    return len(data), hashlib.blake2b(data, digest_size=16).hexdigest()


def _zip_members(location: Path) -> tuple[dict[str, str], dict[str, tuple[int, int]], int, int]:
    """A zip's files as {name with ``/`` separators: real member name}, each name's size and CRC-32
    (what tells a copy of a file from another file of the same name), how many entries repeat a
    name (a zip appended to: Python's zipfile reads the last entry of a name, so its size and CRC
    are the ones kept), and how many are symbolic links (``zip -y``: the entry holds the link's
    target path, which was read as a corrupt image, and a linked folder's images vanished without a
    word); an encrypted zip is refused.

    Windows PowerShell 5.1's Compress-Archive writes ``\\`` separators, which would hide every class
    folder. Python's zipfile cannot decrypt without a password (and then only slowly), so a
    password-protected zip stops here rather than failing on every image.
    """
    try:
        with zipfile.ZipFile(location) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise FervidError(f"{location}: not a readable zip file ({error})") from None
    except UnicodeDecodeError:  # Python's zipfile reads no entry of such a zip: a traceback before
        raise FervidError(f"{location}: not a readable zip file (a file name in it is marked as UTF-8 but is not; "
                          "extract it with unzip and zip the folder again)") from None
    if any(info.flag_bits & 0x1 for info in infos):
        raise FervidError(f"{location}: password-protected (encrypted) zip: extract it first and pass the folder")
    members: dict[str, str] = {}
    stored: dict[str, tuple[int, int]] = {}
    repeated = links = 0
    for info in infos:
        name = info.filename.replace("\\", "/")
        if name.endswith("/"):
            continue
        if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a Unix symlink, as zip -y stores it
            links += 1
            continue
        repeated += name in members
        members[name] = info.filename  # the last entry of a name, in both: zipfile reads that one
        # keyed as the readers rebuild names from their parts too ("./images/a.png" is "images/a.png")
        for key in (name, "/".join(PurePosixPath(name).parts)):
            stored[key] = (info.file_size, info.CRC)
    return members, stored, repeated, links


def _without_copies(location: Path, images: list, identity: Callable[[str], object]) -> list:
    """The images, less those under split folders that repeat another set of split folders file for file.

    Kaggle's face-expression download holds ``images/train|validation`` and again
    ``images/images/train|validation`` with the same files; read twice, every count doubles and every
    face is its own duplicate. The shallower copy is read; different collections (``2019/train``,
    ``2020/train``) are both kept, even when their files have the same names (``0.png``,
    ``1.png``...): a copy must also match in each file's ``identity`` (in a folder, size and content
    hash; in a zip, size and CRC).
    """
    roots: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for _, parts, found in images:
        if found:
            roots.setdefault(parts[: found[0]], set()).add(parts[found[0] :])
    copies: set[tuple[str, ...]] = set()
    ordered = sorted(roots, key=lambda root: (len(root), root))
    for number, root in enumerate(ordered):
        for other in ordered[number + 1 :]:
            if root not in copies and other not in copies and roots[other] == roots[root] and all(
                identity("/".join(root + inside)) == identity("/".join(other + inside)) for inside in roots[root]
            ):
                copies.add(other)
                warn(f"{location}: {'/'.join(other)}/ repeats {'/'.join(root) + '/' if root else 'its top level'} "
                     f"file for file ({len(roots[root]):,} images); read once")
    return [image for image in images if not (image[2] and image[1][: image[2][0]] in copies)]


def _beside_splits(parts: tuple[str, ...], split_parents: set[tuple[str, ...]]) -> int | None:
    """Where ``parts`` (an image under no split folder) passes a folder that sits beside split folders
    but is neither a split nor a class (``extra/`` next to ``train/``), or None.

    Taking its images as training data would train on whatever it holds (a test set under a name
    fervid does not know). ``--map`` renames class folders only: ``--map holdout=happy`` made
    ``holdout/sad/`` pass as a class folder here, and its faces were read as train's sad ones.
    """
    for position in range(len(parts) - 2):
        if parts[:position] in split_parents and canonical_label(parts[position], None) is None:
            return position
    return None


def _warn_unused_mapping(location: Path, mapping: Mapping[str, str] | None, folders: set[str]) -> None:
    """A ``--map`` whose class folder is not in the data maps nothing: most likely a misspelt folder
    name, which would otherwise pass unnoticed while its images stay dropped or refused."""
    for source, target in (mapping or {}).items():
        if normalize_name(source) not in folders:
            warn(f"--map {source}={target}: {location} has no '{source}' class folder, so it maps nothing")


def _index_paths(
    names: list[str],
    location: Path,
    unknown: UnknownPolicy,
    mapping: Mapping[str, str] | None,
    identity: Callable[[str], object],
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Find each image's class folder and split folder from its path.

    The class is the image's parent folder; the split is the nearest ancestor with a split name
    (``train``, ``validation``/``val``/``dev``, ``test``, ...), or ``train`` when there is none, in
    which case training holds out its own validation fraction.
    """
    images = []
    other_suffixes: dict[str, int] = {}  # files in class folders that are not images, by suffix
    not_utf8 = 0  # names no table, cache or report can hold (a Latin-1 name on a UTF-8 system)
    top_level = 0  # images beside the class folders, in none: left out, and said (they were not)
    for name in names:
        parts = PurePosixPath(name).parts
        if is_hidden(parts):
            continue
        if len(parts) < 2:  # fervid's own sample grid (data inspect's default, NAME-samples.png) is no stray face
            top_level += is_image_name(name) and not name.endswith("-samples.png")
            continue
        if is_image_name(name) and not name.isascii() and not _is_utf8(name):
            not_utf8 += 1
        elif is_image_name(name):
            images.append((name, parts, split_folder(parts)))
        elif canonical_label(parts[-2], mapping) is not None:
            suffix = PurePosixPath(name).suffix.lower() or "no suffix"
            other_suffixes[suffix] = other_suffixes.get(suffix, 0) + 1
    images = _without_copies(location, images, identity)
    split_parents = {parts[:found[0]] for _, parts, found in images if found and found[0] < len(parts) - 2}
    # folders holding class folders: an image beside them (mydata/preview.jpg by mydata/happy/) is loose,
    # not a class of its own ("folders that are not expression classes: mydata" stopped the read)
    class_parents = {parts[:-2] for _, parts, _ in images if len(parts) > 2 and canonical_label(parts[-2], mapping) is not None}
    rows: list[tuple[str, str, str]] = []
    unknown_counts: dict[str, int] = {}
    beside_counts: dict[str, int] = {}
    classless: dict[str, int] = {}  # split folder -> images loose in it
    loose_classes: dict[str, int] = {}  # class folder beside split folders -> its images
    for name, parts, found in images:
        folder = parts[-2]
        if found and found[0] == len(parts) - 2:
            key = "/".join(parts[:-1])
            classless[key] = classless.get(key, 0) + 1  # an image loose in a split folder has no class
            continue
        if not found and (parts[:-1] in split_parents or (parts[:-1] in class_parents and canonical_label(folder, mapping) is None)):
            top_level += not name.endswith("-samples.png")  # beside the split (or class) folders in a folder that wraps them
            continue
        beside = None if found else _beside_splits(parts, split_parents)
        if beside is not None:
            key = "/".join(parts[: beside + 1])
            beside_counts[key] = beside_counts.get(key, 0) + 1
            continue
        label = canonical_label(folder, mapping)
        if label is None:
            key = "/".join(parts[:-1])
            unknown_counts[key] = unknown_counts.get(key, 0) + 1
            continue
        if not found and parts[:-2] in split_parents:  # happy/ next to train/ and val/: which split was meant?
            key = "/".join(parts[:-1])
            loose_classes[key] = loose_classes.get(key, 0) + 1
        rows.append((name, label, found[1] if found else "train"))
    if loose_classes:
        warn(f"{location}: class folders beside the split folders, read as train: {_listed(loose_classes)} "
             "(move them into a split folder to say which split they are)")
    _warn_unused_mapping(location, mapping, {normalize_name(parts[-2]) for _, parts, _ in images})
    if unknown == "error":
        _refuse_unknown(location, unknown_counts, beside_counts)
    if not rows:
        _refuse_empty(location, classless, mapping, names, top_level, unknown_counts, not_utf8)
    frame = pd.DataFrame(rows, columns=["source", "label", "split"])
    dropped: dict[str, int] = {}
    for key, count in {**unknown_counts, **beside_counts}.items():  # train/contempt and test/contempt add up
        dropped[PurePosixPath(key).name] = dropped.get(PurePosixPath(key).name, 0) + count
    for key, count in classless.items():
        dropped[f"{key} (images in a split folder with no class folder)"] = count
    if other_suffixes:
        key = f"files in class folders without an image suffix ({_suffixes(other_suffixes)})"
        dropped[key] = sum(other_suffixes.values())
    if top_level:
        dropped["images at the top level, in no class folder"] = top_level
    if not_utf8:
        dropped["images whose paths are not UTF-8, in a file or folder name (rename them, e.g. with convmv, to read them)"] = not_utf8
    return frame.sort_values(["split", "label", "source"], kind="stable").reset_index(drop=True), dropped


def _is_utf8(name: str) -> bool:
    """Whether a file name decoded from the file system is UTF-8 (undecodable bytes come as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _listed(counts: dict[str, int]) -> str:
    """'a (5), b (1) and 3 more': the biggest first, as many as a one-line error holds."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    listed = ", ".join(f"{k} ({v})" for k, v in ordered[:UNKNOWN_LISTED])
    return listed + (f" and {len(ordered) - UNKNOWN_LISTED} more" if len(ordered) > UNKNOWN_LISTED else "")


def _suffixes(counts: dict[str, int]) -> str:
    """'.txt, .heic and 2 more': the most common suffixes first, so a dropped line stays short."""
    ordered = sorted(counts, key=lambda suffix: (-counts[suffix], suffix))
    listed = ", ".join(ordered[:SUFFIXES_LISTED])
    return listed + (f" and {len(ordered) - SUFFIXES_LISTED} more" if len(ordered) > SUFFIXES_LISTED else "")


def _refuse_unknown(location: Path, unknown_counts: dict[str, int], beside_counts: dict[str, int]) -> None:
    """Stop on folders that are not classes (or, beside split folders, not splits either), naming them
    all in one message, so one fix-and-rerun round finds every kind."""
    problems = []
    if beside_counts:
        problems.append(
            "folders beside the split folders that are neither a split (train, validation, test) "
            f"nor an expression class: {_listed(beside_counts)}; rename them or drop them with --unknown drop"
        )
    if unknown_counts:
        problems.append(
            f"folders that are not expression classes: {_listed(unknown_counts)}; "
            "drop them with --unknown drop or map them with --map FOLDER=CLASS"
        )
    if problems:
        raise FervidError(f"{location}: " + "; and ".join(problems))


def _refuse_empty(
    location: Path, classless: dict[str, int], mapping: Mapping[str, str] | None, names: list[str], top_level: int = 0,
    unknown_counts: dict[str, int] | None = None, not_utf8: int = 0,
) -> None:
    """No image is in a class folder: explain a class-first layout (``happy/train/``), the usual cause,
    or name the CSV files and tarballs it holds (Kaggle's FER2013 challenge download is a zip of
    ``icml_face_data.csv`` and ``fer2013.tar.gz``)."""
    inverted = next((key for key in sorted(classless) if len(PurePosixPath(key).parts) >= 2
                     and canonical_label(PurePosixPath(key).parts[-2], mapping)), None)
    if inverted:
        raise FervidError(
            f"{location}: found split folders inside class folders ({inverted}/...): fervid expects "
            f"<split>/<class>/ or <class>/ (classes: {', '.join(EXPRESSIONS)})"
        )
    _refuse_archives(location, names)
    hidden = sorted(PurePosixPath(name) for name in names if is_image_name(name) and is_hidden(PurePosixPath(name).parts)
                    and "__MACOSX" not in PurePosixPath(name).parts)
    note = ""
    if hidden:  # a dataset kept in .faces/ (or the like) would otherwise look like an empty download
        folder = next(part for part in hidden[0].parts if part.startswith("."))
        note = f"; {len(hidden)} image(s) in hidden folders such as {folder}/ were left out (names starting with '.' are never read)"
    if classless:  # images straight in train/: the class folders between were never made
        note += f"; images lie in split folders with no class folder: {_listed(classless)} (move each into its class's folder)"
    if top_level:  # a class folder passed itself, or photos not yet sorted
        note += f"; {top_level:,} image(s) lie at the top level, in no class folder (give the folder that holds the class folders)"
    if unknown_counts:  # --unknown drop left every folder out: "no images" alone hid why
        note += (f"; all {sum(unknown_counts.values()):,} other image(s) are in folders that are not expression classes, "
                 f"left out by --unknown drop: {_listed(unknown_counts)} (read them as classes with --map)")
    if not_utf8:  # a folder named in Latin-1 above them: counted, and the count was never shown
        note += f"; {not_utf8:,} image(s) have paths that are not UTF-8, in a file or folder name (rename them, e.g. with convmv, to read them)"
    raise FervidError(
        f"{location}: no images in class folders (expected <class>/*.jpg, optionally under "
        f"train/validation/test; classes: {', '.join(EXPRESSIONS)}){note}"
    )


def _refuse_archives(location: Path, names: list[str]) -> None:
    """Stop, naming them, when the input holds CSV files, zips or tarballs: the data is inside those."""
    found = sorted(
        PurePosixPath(name).name for name in names
        if not is_hidden(PurePosixPath(name).parts) and name.lower().endswith((".csv", ".zip", *TAR_SUFFIXES))
    )
    if not found:
        return
    more = len(found) - ARCHIVES_LISTED
    listed = ", ".join(found[:ARCHIVES_LISTED]) + (f" and {more} more" if more > 0 else "")
    if any(name.lower().endswith(".csv") for name in found):
        advice = "pass the .csv (fervid reads FER2013's CSV directly)"
    elif any(name.lower().endswith(".zip") for name in found):
        advice = "pass the .zip (fervid reads a zip of class folders directly)"
    else:
        advice = "extract the tarball and pass the folder it makes"
    if location.is_file():  # a zip: its members cannot be passed as they are
        advice = f"extract it and {advice}"
    raise FervidError(f"{location}: holds {listed} but no images in class folders; {advice}")


def _shown_columns(columns: Sequence[object], limit: int = 80) -> str:
    """A header's columns for an error line: printable, and short (a binary file's "header" is a
    screenful of control bytes that would garble the terminal)."""
    text = ", ".join(map(str, columns))
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _index_csv(location: Path) -> tuple[pd.DataFrame, dict[str, int], dict[str, str]]:
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
            f"(found {_shown_columns(header.columns)})"
        )
    usage = columns.get("usage")
    usecols = [columns["emotion"], *([usage] if usage else [])]
    try:
        # index_col=False: with more fields on its first row than the header, pandas took the first
        # column for the index, and read every emotion from the pixels column
        table = pd.read_csv(location, usecols=usecols, index_col=False)
        lines, extra = _scan_rows(location, len(header.columns))
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as error:  # a bad row further down than the header
        raise FervidError(f"{location}: not a readable CSV ({str(error).strip()})") from None
    emotion = pd.to_numeric(table[columns["emotion"]], errors="coerce")
    bad = emotion.isna() | ~emotion.isin(range(len(FER2013_CSV_CLASSES)))
    if bad.all():
        raise FervidError(f"{location}: no row has an emotion between 0 and 6")
    labels = emotion.where(~bad, 0).astype(int).map(dict(enumerate(FER2013_CSV_CLASSES)))
    reasons = pd.Series("", index=table.index)
    if len(lines) == len(table):  # the rows line up; otherwise an index could name another row
        reasons.iloc[extra] = f"more fields than the header's {len(header.columns)}"
    if usage:
        split = _csv_splits(location, table[usage], reasons, bad)
    else:
        split = pd.Series("train", index=table.index)
    names = pd.Series([f"line {number}" for number in lines], index=table.index) if len(lines) == len(table) else \
        "row " + table.index.astype(str).to_series(index=table.index)
    frame = pd.DataFrame({"source": names, "label": labels, "split": split, "row": table.index})
    dropped = {"rows without an emotion 0-6 (out of range, empty or not a number)": int(bad.sum())} if bad.any() else {}
    unreadable = {names[row]: reason for row, reason in reasons[~bad & (reasons != "")].items()}
    return frame[~bad].reset_index(drop=True), dropped, unreadable


def _scan_rows(location: Path, width: int) -> tuple[list[int], list[int]]:
    """Each data row's line in the file (1-based, as an editor shows it; the row pandas numbers 0 is
    usually line 2) and the data rows (0-based, as pandas numbers them) with more fields than the
    header's ``width``.

    pandas reading only some columns cuts such rows silently, so a face with a stray ``,x`` would
    train as if it were whole; counting fields costs a second pass (about 1.5 s over FER2013's CSV).
    """
    lines: list[int] = []
    extra: list[int] = []
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a big face's pixels: 200x200 is 181,000 characters
    with open(location, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header_read = False
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return lines, extra
            if not row or (len(row) == 1 and row[0] and not row[0].strip(" \t")):  # the lines pandas skips:
                continue  # empty or only spaces and tabs (a quoted "" or a form feed is a row to pandas)
            if header_read:
                if len(row) > width:
                    extra.append(len(lines))
                lines.append(start)
            header_read = True


def _csv_splits(location: Path, usage: pd.Series, reasons: pd.Series, bad: pd.Series) -> pd.Series:
    """Each row's split from its ``Usage``: FER2013's Training/PublicTest/PrivateTest or a folder split name.

    Any other value stops the read, naming it: taking it for ``train`` once trained on a whole CSV
    whose rows said ``Validation``/``Test``. A row without a Usage, or with more fields than the
    header (its Usage is then some other field), is unreadable instead (``reasons`` gets why) and
    listed under train unless its Usage names a split.
    """
    names = usage.map(lambda value: normalize_name(str(value)) if pd.notna(value) else "")
    reasons[(names == "") & (reasons == "")] = "no Usage value"
    split = names.map(lambda name: folder_split(name) if name else None)  # as split folders are read: train_set too
    unknown = usage[split.isna() & (reasons == "") & ~bad].astype(str).value_counts()
    if len(unknown):
        values = ", ".join(f"'{value}'" for value in unknown.index[:USAGES_LISTED])
        more = f" and {len(unknown) - USAGES_LISTED} more" if len(unknown) > USAGES_LISTED else ""
        raise FervidError(
            f"{location}: Usage {values}{more} {'is not a split' if len(unknown) == 1 else 'are not splits'}: "
            "use Training, PublicTest, PrivateTest (or train, validation, test)"
        )
    return split.fillna("train")
