"""``fervid predict``: faces and expressions in photos, annotated copies in a folder, one record per face."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fervid.console import plural, progress, warn
from fervid.errors import FervidError
from fervid.fileio import (
    NAME_BYTES, check_writable, check_writable_folder, cut_to_bytes, symlink_loop, write_bytes_atomically, write_text_atomically,
)
from fervid.images import (
    ANNOTATED_LIST, IMAGE_SUFFIXES, VIDEO_SUFFIXES, NotAnImage, annotated_copies, find_images, image_path, is_image_name, read_image,
)
from fervid.runtime.face import Face
from fervid.runtime.recognizer import Recognizer, crop_doubt
from fervid.runtime.render import annotate


@dataclass
class PhotoReport:
    """Images processed, without a face, unreadable; the per-face records and the annotated files."""

    processed: int = 0
    without_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)  # videos and zips named as inputs: other commands read them
    records: list[dict] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    not_written: list[str] = field(default_factory=list)  # photos whose annotated copy could not be encoded (too large)
    out_dir: str | None = None  # where annotated copies go
    records_path: str | None = None  # where the records were written (None: not written to a file)
    interrupted: bool = False  # Ctrl+C: the report holds the images done so far

    def describe(self) -> list[str]:
        """The line for the end of a run: what was recognised and where it went."""
        notes = [f"{self.processed} image(s), {len(self.records)} face(s)"]
        if self.without_face:
            notes.append(f"{len(self.without_face)} without a face")
        if self.unreadable:
            notes.append(f"{len(self.unreadable)} unreadable")
        if self.not_images:
            notes.append(f"{len(self.not_images)} not an image (video or zip)")
        if self.written:
            notes.append(f"annotated images in {self.out_dir}")
        if self.not_written:
            copies = plural(len(self.not_written), "annotated copy", "annotated copies")
            notes.append(f"{copies} not written (too large to encode)")
        if self.records_path:
            notes.append(f"records in {self.records_path}")
        return ["; ".join(notes)]


LINE_BREAKING = ("Cc", "Zl", "Zp")  # control characters (newline, U+0085) and line/paragraph separators

SMALL_IMAGE = 160  # pixels: an image no larger is more likely a cropped face than a photo with one in it


def annotated_before(out_dir: str | Path) -> set[Path]:
    """The annotated copies earlier runs wrote in ``out_dir`` (as listed in its ``.fervid-predict``).

    Lines that cannot be a copy's name are left out: the list is appended to, and a crash or power
    loss mid-append leaves a tail of NUL bytes, which stopped every later run into the folder with
    ``ValueError: embedded null byte``. The list only records what fervid wrote, so a damaged line
    means that one file is not recognised as a copy, never a failed run."""
    folder = Path(out_dir).expanduser()
    return {identity(folder / name) for name in annotated_copies(folder) if could_be_copy_name(name)}


def could_be_copy_name(line: str) -> bool:
    """Whether a line of ``.fervid-predict`` can name a copy ``_write_copy`` wrote: one file name (no
    ``/``, not ``.`` or ``..``), no NUL byte (no file system takes one), at most ``NAME_BYTES`` long.
    A name whose bytes are not UTF-8 is a name (listed with surrogate escapes, as it was written)."""
    if not line or "\0" in line or "/" in line or line in (".", ".."):
        return False
    return len(line.encode("utf-8", "surrogateescape")) <= NAME_BYTES


def identity(path: Path) -> Path:
    """``path`` with its links followed, to tell two spellings of one file apart; a symlink loop, which
    names no file (``read_image`` says so), as it is, made absolute: ``Path.resolve`` raised
    ``RuntimeError`` on it (Python 3.12 and older), a traceback in the CLI."""
    if symlink_loop(path):
        return path.absolute()
    return path.resolve()


def expand_images(inputs: Sequence[str | Path], *, skip: set[Path] | None = None) -> Iterator[Path]:
    """Files as given (whatever their suffix) and the images inside folders (``fervid.images.find_images``).

    Folders are searched without the files in ``skip`` (resolved paths: the annotated copies an
    earlier run wrote into ``--out``, outputs, not photos to recognise again); only those, so a
    photo that merely sits in ``--out`` is still an input, and is refused there. A photo named twice
    (a folder and a file in it) is recognised once.
    """
    skip = skip or set()
    seen: set[Path] = set()
    for item in inputs:
        path = image_path(item)  # a URL is named as one: as a Path, https://x/a.jpg was "https:/x/a.jpg: no such file"
        if path is None:
            raise FervidError(f"{item!r}: not an image path")
        if str(item) == "-" and not path.exists():
            raise FervidError("-: fervid predict reads image files, not standard input; save the image to a file first")
        if path.is_dir():
            images = [image for image in find_images(path) if identity(image) not in skip]
            if not images:
                warn(f"{path}: no images in this folder")
        else:
            images = [path]
        for image in images:
            if identity(image) not in seen:
                seen.add(identity(image))
                yield image


def predict_images(
    inputs: Sequence[str | Path],
    recognizer: Recognizer,
    *,
    out_dir: str | Path | None = None,
    on_record: Callable[[dict], None] | None = None,
    records_to: str | Path | None = None,
    crops: bool = False,
    copies_in: str | Path | None = None,
) -> PhotoReport:
    """Recognise every face in ``inputs``; ``on_record(record)`` is called per face as it is found.

    With ``crops`` each image is taken as one already-cropped face (a dataset's 48x48 faces, the
    output of another detector) and classified whole: a cascade finds no face in a face with no
    context around it.

    A record is ``{"image": path, **Face.to_dict()}``. Unreadable files and images without a face
    get a one-line note on stderr; if no image at all could be read, FervidError. With
    ``records_to`` the records are written there at the end (``write_records``), a path checked
    before the first photo: not a folder, not one of the inputs. Ctrl+C stops the run, writes the
    records so far and returns what was done (``interrupted``); a run stopped before its first photo
    leaves an earlier records file as it was. ``copies_in``: a folder whose earlier annotated copies
    are not inputs although nothing is written there now (``--no-save`` with the default ``--out``).
    """
    # ~ expanded as the checks read it, so the copies and records go where the checks looked
    # (--out=~/res, which the shell leaves alone, was checked in the home folder and written in ./~/res)
    out_dir, records_to, copies_in = (None if given is None else Path(given).expanduser() for given in (out_dir, records_to, copies_in))
    report = PhotoReport(out_dir=None if out_dir is None else str(out_dir))
    names: set[str] = set()
    written_to = out_dir if out_dir is not None else copies_in
    listed = annotated_before(written_to) if written_to is not None else set()
    paths = list(expand_images(inputs, skip=listed))
    if out_dir is not None:
        _check_out_dir(Path(out_dir), paths)
        _check_copy_targets(Path(out_dir), paths)
    if records_to is not None:
        _check_records_path(Path(records_to), paths, None if out_dir is None else Path(out_dir))
    try:
        _predict_each(paths, recognizer, report, names, out_dir, on_record, listed, crops)
    except KeyboardInterrupt:
        warn(f"interrupted after {report.processed} image(s); keeping their results")
        report.interrupted = True
    except BrokenPipeError:  # the reader of the records on stdout closed it (| head): click ends quietly, status 1
        raise
    except (FervidError, OSError) as error:  # a copy that cannot be written (a full disk): keep what was done
        if not report.processed:
            raise
        raise _stopped_by(error, report, records_to) from None
    if report.processed == 0 and not report.interrupted:
        raise FervidError("no image could be read" if report.unreadable else "no images found in the inputs")
    if records_to is not None and report.processed:
        write_records(report.records, records_to)
        report.records_path = str(records_to)
    return report


def _stopped_by(error: FervidError | OSError, report: PhotoReport, records_to: str | Path | None) -> FervidError:
    """The one-line error that ends a run part-way, the records of the photos done written first
    (when they go to a file), as Ctrl+C keeps them."""
    if isinstance(error, OSError):
        message = f"{error.filename}: {error.strerror or error}" if error.filename else str(error.strerror or error)
    else:
        message = str(error)
    if records_to is not None:
        try:
            write_records(report.records, records_to)
            message += f"; the records of the {plural(report.processed, 'image')} done are in {records_to}"
        except OSError:
            pass
    return FervidError(message)


def _predict_each(paths: list[Path], recognizer: Recognizer, report: PhotoReport, names: set[str], out_dir, on_record,
                  listed: set[Path], crops: bool) -> None:
    # a bar with an ETA on a terminal, as live has (2,500 photos ran a minute with no sign of progress)
    for path in progress(paths, len(paths), "photos") if len(paths) > 1 else paths:
        try:
            image = read_image(path)
        except FervidError as error:
            if len(paths) == 1:  # the only photo: its own one-line error, not a note and then "no image could be read"
                raise
            warn(str(error))
            (report.not_images if isinstance(error, NotAnImage) else report.unreadable).append(str(path))
            continue
        doubt = crop_doubt(image.shape[1], image.shape[0]) if crops else None
        if doubt:
            warn(f"{path}: {doubt}")
        faces = recognizer.predict(image, boxes=[0, 0, image.shape[1], image.shape[0]] if crops else None)
        # The copy first: a photo whose copy could not be written is not done, and gets no records.
        copy = None if out_dir is None else _write_copy(path, image, faces, Path(out_dir), names, listed)
        report.processed += 1
        if copy is not None:
            report.written.append(str(copy))
        elif out_dir is not None:
            height, width = image.shape[:2]  # JPEG, the copies' format unless the photo is a PNG, takes 65,500 a side
            warn(f"{path}: no annotated copy written: OpenCV could not encode its {width}x{height} pixels")
            report.not_written.append(str(path))
        for face in faces:
            # "annotated" ties the record to its copy, whose name can differ (photo-2.jpg for a second photo.jpg)
            record = {"image": str(path), **({"annotated": str(copy)} if copy is not None else {}), **face.to_dict()}
            report.records.append(record)
            if on_record is not None:
                on_record(record)
        if not faces:
            small = max(image.shape[:2]) <= SMALL_IMAGE
            warn(f"{path}: no face found" + ("; if it is a cropped face, --crops classifies the whole image" if small else ""))
            report.without_face.append(str(path))


def _write_copy(path: Path, image: np.ndarray, faces: list[Face], out_dir: Path, names: set[str], listed: set[Path]) -> Path | None:
    """The annotated copy of ``path`` written in ``out_dir``; None if it could not be encoded (a JPEG
    over 65,500 pixels a side), which the caller notes: nothing is written or listed for it."""
    target = out_dir / _unique_name(path, names)
    try:
        ok, encoded = cv2.imencode(target.suffix, annotate(image, faces))
    except cv2.error:  # a size or depth OpenCV's encoder refuses, raised rather than returned by some versions
        ok = False
    if not ok:  # a JPEG over 65,500 pixels a side
        return None
    if identity(target) not in listed:  # listed before it exists: a copy is never taken for a photo
        out_dir.mkdir(parents=True, exist_ok=True)
        append_line(out_dir / ANNOTATED_LIST, target.name)
        listed.add(identity(target))
    write_bytes_atomically(target, encoded.tobytes())
    return target


def append_line(listing: Path, name: str) -> None:
    """Add ``name`` as a line to ``listing`` whole or not at all, an error naming ``listing``: a full
    disk said "No space left on device" of no file, and a line written in part (``photo.j``) would
    run into the next name appended, both copies then read as photos by a later run. What a failed
    write added is cut off again."""
    line = (name + "\n").encode("utf-8", "surrogateescape")
    if not _ends_a_line(listing):  # a crash's unfinished tail (NUL bytes): the name starts a line of its own
        line = b"\n" + line
    try:
        handle = os.open(listing, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(listing)) from None
    try:
        size = os.fstat(handle).st_size
        try:
            while line:  # a short write (the disk full within the line): the next one says why
                written = os.write(handle, line)
                if not written:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                line = line[written:]
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(handle, size)
            raise OSError(error.errno, error.strerror, str(listing)) from None
    finally:
        os.close(handle)


def _ends_a_line(listing: Path) -> bool:
    """Whether ``listing`` is empty, missing or ends in a newline. A crash mid-append can leave a tail
    without one (NUL bytes where the name never reached the disk); a name appended straight after it
    would share its line, and be ignored with it (``could_be_copy_name``): that copy would then be
    taken for a photo by the next run. An unreadable list is left to the append to report."""
    try:
        with open(listing, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return True
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    except OSError:
        return True


def _check_records_path(target: Path, images: list[Path], out_dir: Path | None) -> None:
    """Refuse a ``--json`` that is a folder, inside a file, one of the photos, or where this run's own
    outputs go in ``out_dir`` (an annotated copy's name, the list of copies): the records are written
    at the end, so it would fail or replace the file only after every photo was recognised."""
    check_writable(target, "--json")  # a symlink loop refused here, before it is resolved
    resolved = target.expanduser().resolve()
    if out_dir is not None and resolved.parent == out_dir.expanduser().resolve() and (
        resolved.name == ANNOTATED_LIST or is_image_name(resolved.name)
    ):
        raise FervidError(f"--json {target}: is named like an annotated copy or their list in --out {out_dir}, "
                          "which the records would replace; give the records another name")
    for image in images:
        if identity(image) == resolved:
            raise FervidError(f"--json {target}: is the input {image}, which the records would overwrite; write them elsewhere")


FILE_SUFFIXES = (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES, ".json", ".jsonl", ".csv", ".parquet", ".txt", ".zip")


def _named_like_a_file(path: Path) -> bool:
    """Whether ``path`` ends like a file fervid reads or writes (``out.jpg``, ``faces.json``); a
    dated or versioned folder (``2024.05.01``, ``v1.2``) does not."""
    return path.suffix.lower() in FILE_SUFFIXES


def _check_out_dir(out_dir: Path, images: list[Path]) -> None:
    """Refuse an ``--out`` that cannot be written (else the first annotated copy fails mid-run), or that
    holds a photo named as an input: its annotated copy would replace it."""
    check_writable_folder(out_dir, "--out")  # a symlink loop refused here, before it is resolved
    if _named_like_a_file(out_dir) and not out_dir.is_dir():  # annotated.jpg would silently become a folder
        raise FervidError(f"--out {out_dir}: give a folder for the annotated copies (to use a folder named like a file, "
                          "create it first)")
    folder = out_dir.resolve()
    for image in images:
        if image.is_file() and image.resolve().parent == folder:
            raise FervidError(
                f"--out {out_dir}: holds the input {image}, which its annotated copy would overwrite; "
                "give another folder (or --no-save)"
            )


def _check_copy_targets(out_dir: Path, images: list[Path]) -> None:
    """Refuse, before the first photo, a folder or device where an annotated copy goes (``--out
    col`` holding a folder ``col/p3.jpg``): the run stopped at that photo with the others done, the
    one output not checked up front. Every name a copy can take is checked (``p3-2.jpg`` for a
    second ``p3.jpg``)."""
    if not out_dir.is_dir():
        return
    taken: set[str] = set()
    for image in images:
        target = out_dir / _unique_name(image, taken)
        if target.is_dir() or (target.exists() and not target.is_file()):
            kind = "a folder" if target.is_dir() else "not a regular file"
            raise FervidError(f"--out {out_dir}: {target} is {kind}, where the annotated copy of {image} goes; "
                              "move it or give another --out")


def _unique_name(path: Path, taken: set[str]) -> str:
    """The file's name (as .jpg unless it is .png), with -2, -3... when two inputs share a name.

    Line breaks and other control characters (a newline, U+2028) become ``_``: the copy is listed
    one name per line in ``.fervid-predict``. The name is cut to fit ``NAME_BYTES`` with its number:
    ``-2`` on a 253-byte name would fail after the first photo.
    """
    suffix = ".png" if path.suffix.lower() == ".png" else ".jpg"
    stem = "".join("_" if unicodedata.category(char) in LINE_BREAKING else char for char in path.stem)
    number = 1
    while True:
        tail = (f"-{number}" if number > 1 else "") + suffix
        name = cut_to_bytes(stem, NAME_BYTES - len(tail.encode())) + tail
        if name not in taken:
            taken.add(name)
            return name
        number += 1


def write_records(records: list[dict], target: str | Path) -> None:
    """Records as a JSON array (``.json``) or JSON Lines (any other suffix)."""
    if Path(target).suffix.lower() == ".json":
        write_text_atomically(target, json.dumps(records, indent=2) + "\n")
    else:
        write_text_atomically(target, "".join(json.dumps(record) + "\n" for record in records))
