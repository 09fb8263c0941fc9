"""Expand INPUTS (image and video files, folders, zips of them) into sources, each with a content fingerprint."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from fervid.console import warn
from fervid.data.zipped import read_image_member
from fervid.errors import FervidError
from fervid.images import FOREIGN_PHOTO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_hidden, walk_files

ZIP_SEPARATOR = "!"  # "photos.zip!faces/0001.jpg" names a member of a zip
WHOLE_FILE_LIMIT = 8 << 20  # files up to this size are hashed whole; bigger ones by size and three samples
SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class SourceItem:
    """One image or video to analyse: ``name`` is the ``source`` column, the path as given; ``relative``
    is its name inside the input it came from (used to match ``--boxes``); ``member`` is set for images
    and videos inside a zip (a video there is decoded from a temporary copy, ``video_file``). ``key``
    is the absolute path (and member), not resolved: sources are sorted by it and unit ids hold it, so
    a rerun from another folder finds its units. Which paths are one file is decided by
    ``file_identity``, not by the key (a link has a key of its own)."""

    name: str
    kind: str  # "image" or "video"
    path: str  # absolute: a Ray worker on another machine opens it from a working directory of its own
    relative: str
    fingerprint: str
    member: str | None = None
    aliases: tuple[tuple[str, str], ...] = ()  # (name, relative) of other paths to this file (links): --boxes may use them

    @property
    def key(self) -> str:
        absolute = os.path.abspath(self.path)
        return absolute if self.member is None else f"{absolute}{ZIP_SEPARATOR}{self.member}"


def shown_name(path: str | Path) -> str:
    """A path as the ``source`` column holds it: a name that is not UTF-8 (an old Latin-1 archive's
    ``caf\xe9.png``, which reaches Python with surrogate escapes) with its undecodable bytes written
    as ``\xe9``, since Parquet strings must be UTF-8 (the run stopped with a UnicodeEncodeError)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def kind_of(path: str | Path) -> str | None:
    """'image', 'video' or 'zip' by the file's suffix; None for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix in FOREIGN_PHOTO_SUFFIXES:  # a HEIC photo is named as unreadable, not left out
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix == ".zip":
        return "zip"
    return None


def file_identity(path: str | Path) -> tuple:
    """What two paths share when they reach the same file: its device and inode, so a symlink to it,
    a hard link, a symlinked folder above it or another spelling of its name (on a case-insensitive
    disk) is one file, analysed once, with a warning that counts such paths. Where the
    system gives no inode (a path it cannot stat, an inode of 0 on some network disks) the real path
    stands in."""
    try:
        status = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return (status.st_dev, status.st_ino) if status.st_ino else ("path", os.path.realpath(path))


def file_fingerprint(path: Path) -> str:
    """SHA-1 of the file (size plus first, middle and last MiB for files over 8 MiB, so hour-long
    videos are fingerprinted in milliseconds); an unreadable file fingerprints as 'unreadable'."""
    digest = hashlib.sha1()
    try:
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as handle:
            if size <= WHOLE_FILE_LIMIT:
                digest.update(handle.read())
            else:
                for offset in (0, size // 2, size - SAMPLE_BYTES):
                    handle.seek(offset)
                    digest.update(handle.read(SAMPLE_BYTES))
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def read_source_bytes(item: SourceItem, archives: dict[str, zipfile.ZipFile] | None = None) -> bytes:
    """The bytes of an image source (a file, or a member of a zip). Pass ``archives`` (path -> open zip)
    to keep zips open across calls: reopening a zip re-reads its whole directory.

    A member is read only up to ``ZIP_IMAGE_BYTES`` (``MemberTooLarge`` past it, a ``FervidError``):
    a zip bomb's gigabytes of zeros were read whole into memory before any check. Videos in zips are
    not read here but extracted to a file (``video_file``), bounded by the disk's free space."""
    if item.member is None:
        return Path(item.path).read_bytes()
    if archives is None:
        with zipfile.ZipFile(item.path) as archive:
            return read_image_member(archive, item.member)
    if item.path not in archives:
        archives[item.path] = zipfile.ZipFile(item.path)
    return read_image_member(archives[item.path], item.member)


def _zip_members(path: Path) -> tuple[list[SourceItem], list[SourceItem]]:
    """The images and videos inside a zip, and the zips in it (not opened: a zip in a zip has to be
    extracted first; named in a warning). Each member is fingerprinted by its size and CRC, from the
    zip's directory, so a video in a zip costs nothing to list.

    A member named with ``..`` or from the root (``../up.jpg``, ``/abs.jpg``) is a source like any
    other: it is only a name inside the zip, read by that name (a video copied to a temporary file of
    fervid's own naming), so it cannot reach outside the zip, and ``photos.zip!../up.jpg`` names it
    apart from ``photos.zip!up.jpg``. ``..`` is no hidden name (leaving it out silently dropped such
    photos); ``../.cache/a.jpg`` is.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            # Names with "/" whatever the zip used (PowerShell 5.1 writes "\\"); read by the real name.
            named = {info.filename.replace("\\", "/"): info for info in archive.infolist() if not info.is_dir()}
            items, skipped = [], []
            for relative in sorted(named):
                info, kind = named[relative], kind_of(relative)
                parts = tuple(part for part in PurePosixPath(relative).parts if part != "..")
                if relative.endswith("/") or is_hidden(parts) or kind is None:
                    continue
                name = f"{shown_name(path)}{ZIP_SEPARATOR}{relative}"
                if kind == "zip":  # not opened: named in a warning
                    skipped.append(SourceItem(name, kind, os.path.abspath(path), relative, "", info.filename))
                    continue
                digest = hashlib.sha1(f"{info.file_size}:{info.CRC:08x}".encode()).hexdigest()
                items.append(SourceItem(name, kind, os.path.abspath(path), relative, digest, info.filename))
            return items, skipped
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError):  # the last: a name marked UTF-8 that is not
        # A broken zip is one source that fails; the run goes on.
        return [SourceItem(shown_name(path), "zip", os.path.abspath(path), path.name, file_fingerprint(path))], []


def _file(path: Path, relative: str, kind: str) -> SourceItem:
    return SourceItem(shown_name(path), kind, os.path.abspath(path), relative, file_fingerprint(path))


def expand_inputs(inputs: Sequence[str | Path]) -> list[SourceItem]:
    """Every source in ``inputs``, sorted by name, each file once however often or by whatever path
    (relative or absolute) it was given.

    Files are taken whatever their suffix (unknown suffixes are tried as videos); folders are searched
    recursively, through symlinked folders, for images, videos and zips of them; other files in
    folders, and anything hidden in them or in a zip (``.cache/``, ``__MACOSX/._photo.jpg``), are
    ignored. Zips inside zips are not opened, and links that point nowhere are left out: a warning
    counts them, and the error when nothing else was found says so.

    Paths that reach one file (a symlink to it, a hard link, a linked folder, ``a.jpg`` and
    ``/home/me/a.jpg``) are one source, by ``file_identity``: named by the path whose absolute form
    sorts first, whatever order the inputs came in, so a rerun picks the same name and the same unit
    ids (the same path given twice keeps the name it was first given).
    """
    items: dict[tuple, SourceItem] = {}  # by file (and member)
    skipped: dict[tuple, SourceItem] = {}  # zips inside zips, likewise
    identities: dict[str, tuple] = {}  # path -> file_identity, once per file (a zip's members share it)
    broken: dict[str, Path] = {}  # links that point nowhere, named like a source, by absolute path

    aliases: dict[str, str] = {}  # a path left out because it reaches a file kept under another -> that name

    def keep(found: list[SourceItem], into: dict[tuple, SourceItem]) -> None:
        for item in found:
            if item.path not in identities:
                identities[item.path] = file_identity(item.path)
            identity = (identities[item.path], item.member)
            kept = into.get(identity)
            if kept is None:
                into[identity] = item
            elif kept.key != item.key:  # an equal key is the same path given again: first name stays
                left, named = (kept, item) if item.key < kept.key else (item, kept)
                into[identity] = replace(named, aliases=(*named.aliases, (left.name, left.relative), *left.aliases))
                if into is items:
                    aliases[left.key] = named.name

    def add(found: tuple[list[SourceItem], list[SourceItem]]) -> int:
        keep(found[0], items)
        keep(found[1], skipped)
        return len(found[0]) + len(found[1])

    empty: list[Path] = []  # inputs named that hold nothing to analyse (an empty folder, a zip of text files)
    for given in inputs:
        path = Path(given).expanduser()
        count = 0
        if path.is_dir():
            dead: list[Path] = []
            children = [p for p in walk_files(path, dead) if not is_hidden(p.relative_to(path).parts)]
            for link in dead:
                if kind_of(link) and not is_hidden(link.relative_to(path).parts):
                    broken.setdefault(os.path.abspath(link), link)
            for child in sorted(children):
                kind = kind_of(child)
                relative = child.relative_to(path).as_posix()
                count += add(_zip_members(child) if kind == "zip" else ([_file(child, relative, kind)] if kind else [], []))
        elif path.is_file():
            kind = kind_of(path)
            count += add(_zip_members(path) if kind == "zip" else ([_file(path, path.name, kind or "video")], []))
        elif path.exists():  # /dev/null, a named pipe or a socket: there, but nothing to analyse
            raise FervidError(f"{path}: not a file or folder (a device, pipe or socket); give images, videos, zips or folders of them")
        else:
            raise FervidError(f"{path}: no such file or folder")
        if not count:
            empty.append(path)
    zipped_zips = sorted(item.name for item in skipped.values())
    links = sorted(broken.values())
    if not items and zipped_zips:
        raise FervidError(f"no images or videos found; {len(zipped_zips)} zip(s) inside zips, e.g. {zipped_zips[0]}, "
                          "are not opened: extract them and give the folder")
    if not items:
        dead_note = f" ({len(links)} link(s) there point nowhere, e.g. {links[0]})" if links else ""
        raise FervidError(f"no images or videos found in the inputs{dead_note}")
    if empty:
        warn(f"{len(empty)} input(s) hold no image or video, e.g. {empty[0]}")
    if zipped_zips:
        warn(f"{len(zipped_zips)} zip(s) inside zips skipped (extract them and give the folder), e.g. {zipped_zips[0]}")
    if links:
        warn(f"{len(links)} link(s) that point nowhere skipped, e.g. {links[0]}")
    if aliases:  # hard links and symlinks: a photo library's albums, a dated folder linking to the files
        left = min(aliases)
        warn(f"{len(aliases)} path(s) reach a file already found under another name (a link), analysed once "
             f"under that name, e.g. {left} as {aliases[left]}")
    # by absolute path: image batches (and so unit ids) stay the same however the inputs are written
    return sorted(items.values(), key=lambda item: item.key)
