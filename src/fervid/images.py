"""Images in, arrays out: which files are images, finding them in folders, decoding them, channel order
(PIL images: ``fervid.pil_images``).

One place for every path that reads a photo (predict, live, analyze, serve, bench and dataset
loading), so they agree on what an image is, skip the same hidden files and fail the same way.
Needs only NumPy and OpenCV (not pandas), so the inference path can use it.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import cv2
import numpy as np

from fervid.console import warn
from fervid.errors import FervidError
from fervid.fileio import symlink_loop
from fervid.pixel_limit import pixel_limit
from fervid.preprocess import to_gray, to_uint8
from fervid.transparency import decode_on_white, on_white

if TYPE_CHECKING:  # for annotations only: fervid never imports PIL
    from PIL.Image import Image as PILImage
else:  # run-time hints (typing.get_type_hints, typeguard, Sphinx) resolve without PIL: any object there
    PILImage = Any

# .jfif and .jpe are JPEG under other names (Windows saves browser downloads as .jfif); .avif needs an
# OpenCV built with it, and otherwise is listed as unreadable, never silently left out; .pfm (float)
# is read by fervid's float rule.
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".webp", ".avif", ".tif", ".tiff", ".jp2", ".pgm", ".ppm", ".gif",
    ".pfm",
)
# Photos OpenCV cannot decode (iPhones save HEIC): listed with a folder's images, so that each is
# named as unreadable, with what to do, never silently left out. Datasets count them as dropped.
FOREIGN_PHOTO_SUFFIXES = (".heic", ".heif")
FOREIGN_PHOTO_WHY = "a HEIC/HEIF photo, a format OpenCV cannot read; convert it to JPEG or PNG"
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")

UNREADABLE_WHY = "corrupt, cut short, or a format OpenCV cannot read"

Color = Literal["bgr", "rgb", "BGR", "RGB"]  # any case is accepted; these are the spellings type checkers know
# What predict and detect read: a path, an array (by dtype) or a PIL image (by its mode); nested
# lists of numbers are read as the array they make (``np.asarray``).
ImageInput = Union[np.ndarray, str, "os.PathLike[str]", PILImage, Sequence[Sequence[Any]]]


class NotAnImage(FervidError):
    """A file of another kind (a video, a zip) given where an image is read: a pointer to the command
    that reads it, not a damaged image."""


class UnreadableImage(FervidError):
    """Bytes or a file that OpenCV cannot decode as an image."""


class TooManyPixels(UnreadableImage):
    """A real image over the pixel limit (``OPENCV_IO_MAX_IMAGE_PIXELS``), refused before it is unpacked."""


def is_hidden(parts: tuple[str, ...]) -> bool:
    """Whether a path (as its parts) lies in or is a hidden file or folder, or a macOS ``__MACOSX``
    folder: copies, caches and the ``._name`` resource forks macOS puts in zips, never photos."""
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def is_image_name(name: str | Path) -> bool:
    """Whether a file name has one of the image suffixes (any case)."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def is_photo_name(name: str | Path) -> bool:
    """Whether a folder walk lists the file as a photo: an image suffix, or a photo format OpenCV
    cannot read (``FOREIGN_PHOTO_SUFFIXES``), which is then reported as unreadable."""
    return Path(name).suffix.lower() in (*IMAGE_SUFFIXES, *FOREIGN_PHOTO_SUFFIXES)


ANNOTATED_LIST = ".fervid-predict"  # in a predict --out folder: the annotated copies written there, one name per line


def annotated_copies(folder: str | Path) -> set[str]:
    """The names of the annotated copies ``fervid predict`` wrote in ``folder`` (its ``.fervid-predict``
    list), none if it has no list."""
    try:
        listed = (Path(folder) / ANNOTATED_LIST).read_text(encoding="utf-8", errors="surrogateescape")
        return {name for name in listed.split("\n") if name}  # not splitlines: U+2028 is no line break here
    except (OSError, UnicodeDecodeError):
        return set()


def walk_files(folder: str | Path, broken: list[Path] | None = None) -> Iterator[Path]:
    """Every file under ``folder``, recursively, following symlinked folders (``Path.rglob`` on
    Python 3.11 does not, which silently left out a dataset's linked ``validation/``).

    Paths are ``folder`` joined with the path walked (never resolved), so ``relative_to(folder)``
    works. A link back to a folder it is already inside (a cycle) is not entered again: that would
    walk forever. Broken links and links to anything but a file are not files. The annotated copies
    ``fervid predict`` listed in a folder below ``folder`` are its outputs, not more photos: left
    out, so that ``fervid predict .`` followed by ``fervid analyze .`` does not count every face
    twice (a folder given itself, ``fervid analyze runs/predict``, is read whole). ``broken``, if
    given, collects the links that point nowhere, for a caller that says what it left out. A folder
    that cannot be listed (no permission) gets a one-line warning, as an unreadable file does: it
    was left out without a word.
    """
    root = os.fspath(folder)
    chains: dict[str, tuple[str, ...]] = {root: (os.path.realpath(root),)}  # each folder walked -> real paths of it and its ancestors
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_unlisted):
        chain = chains.pop(dirpath)
        if dirpath != root and ANNOTATED_LIST in filenames:
            copies = annotated_copies(dirpath)
            filenames = [name for name in filenames if name not in copies]
        entered = []
        for name in sorted(dirnames):
            child = os.path.join(dirpath, name)
            real = os.path.realpath(child)
            if real not in chain:
                chains[child] = (*chain, real)
                entered.append(name)
        dirnames[:] = entered  # os.walk descends only into what is left here
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                yield Path(path)
            elif broken is not None and os.path.islink(path) and not os.path.exists(path):
                broken.append(Path(path))


def _unlisted(error: OSError) -> None:
    """Say which folder a walk could not list, and why; its files are left out."""
    warn(f"{error.filename}: could not be read ({error.strerror or error}); the files in it are left out")


def find_images(folder: str | Path) -> list[Path]:
    """The photo files under ``folder`` (recursively, in name order, through symlinked folders),
    without hidden files and folders: images, and photos OpenCV cannot read (``is_photo_name``),
    which reading names as unreadable."""
    folder = Path(folder)
    return sorted(
        path for path in walk_files(folder)
        if is_photo_name(path) and not is_hidden(path.relative_to(folder).parts)
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# libpng's default user limit on a side (PNG_USER_WIDTH_MAX): past it libpng prints "libpng warning:
# Image width exceeds user limit in IHDR" and "libpng error: Invalid IHDR data" on stderr
PNG_MAX_SIDE = 1_000_000


def checked_png(data: bytes) -> bytes:
    """A PNG's bytes as OpenCV should decode them, or an ``UnreadableImage`` when it cannot be decoded
    (cut short, or a critical chunk's checksum wrong), found before OpenCV decodes it: libpng prints
    its own "libpng error: ..." line on stderr for these, past OpenCV's log level, beside fervid's
    one-line error. An ancillary chunk (text, colour profile, EXIF) that fails its checksum is
    dropped: libpng would skip it and decode the image, printing "libpng warning: tEXt: CRC error"."""
    view, at = memoryview(data), len(PNG_SIGNATURE)
    damaged: list[tuple[int, int]] = []
    while at + 12 <= len(data):
        length = int.from_bytes(view[at : at + 4], "big")
        kind = bytes(view[at + 4 : at + 8])
        end = at + 12 + length
        if end > len(data):
            break
        if zlib.crc32(view[at + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            if kind[:1].isupper():
                raise UnreadableImage(f"not a readable image (a damaged PNG: its {kind.decode('latin-1')} chunk fails its checksum)")
            damaged.append((at, end))
        if kind == b"IHDR" and length >= 8:
            width, height = int.from_bytes(view[at + 8 : at + 12], "big"), int.from_bytes(view[at + 12 : at + 16], "big")
            if not (0 < width <= PNG_MAX_SIDE and 0 < height <= PNG_MAX_SIDE):
                raise UnreadableImage(f"not a readable image (a PNG whose header says {width:,}x{height:,} pixels; "
                                      f"libpng reads 1 to {PNG_MAX_SIDE:,} a side)")
        if kind == b"IEND":
            if not damaged:
                return data
            kept, start = bytearray(), 0
            for first, last in damaged:
                kept += view[start:first]
                start = last
            return bytes(kept + view[start:])
        at = end
    raise UnreadableImage("not a readable image (a PNG cut short)")


def decode_image(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, WebP, BMP, TIFF...) as an array; BGR and upright by default.

    ``flags`` are OpenCV's ``imdecode`` flags. Transparent parts come out white, as a viewer shows
    them (``fervid.transparency``), unless ``flags`` is ``IMREAD_UNCHANGED``. Every failure,
    including OpenCV's own exceptions for a header it rejects or an image over its pixel limit, is
    an ``UnreadableImage`` with a short reason.
    """
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    if data[:2] in (b"PF", b"Pf") and data[2:3] in (b"\n", b"\r") and flags >= 0:
        return _float_map(data, flags)
    if bytes(data[:8]) == PNG_SIGNATURE:
        data = checked_png(data)
    if flags >= 0 and is_float_tiff(data):
        return _float_map(data, flags)  # not tried at 8 bits first: OpenCV warned on stderr at each such photo
    image = _imdecode(np.frombuffer(data, np.uint8), flags)
    if (image is None or image.size == 0) and data[:4] in (b"II*\0", b"MM\0*") and flags >= 0:
        return _float_map(data, flags)  # a 32-bit float TIFF: OpenCV decodes it only at its own depth
    if image is None or image.size == 0:
        raise UnreadableImage(f"not a readable image ({_why_unreadable(data)})")
    if flags < 0:  # IMREAD_UNCHANGED, alpha kept
        return image
    if not flags & cv2.IMREAD_ANYDEPTH and image.dtype == np.uint8:
        _refuse_8_bits_saved_as_16(data, image)
    try:
        return decode_on_white(data, image)
    except UnreadableImage:
        raise
    except FervidError as error:  # values no rule reads (a 16-bit image holding 0..255): said of the file
        raise UnreadableImage(str(error)) from None


def _refuse_8_bits_saved_as_16(data: bytes, decoded: np.ndarray) -> None:
    """An ``UnreadableImage`` when ``data`` is a 16-bit PNG or TIFF holding only 0..255: OpenCV's
    8-bit decode (``decoded``) keeps the high byte, so such a picture came out all 0s (or 0..1) and
    was classified, or found faceless, without a word. Only a nearly black decode is read again."""
    if not (bytes(data[:8]) == PNG_SIGNATURE or data[:4] in (b"II*\0", b"MM\0*")) or decoded.size == 0 or decoded.max() > 1:
        return
    stored = _imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # alpha too: all the values stored
    if stored is not None and stored.dtype == np.uint16:
        try:
            to_uint8(stored, in_file=True)
        except FervidError as error:
            raise UnreadableImage(str(error)) from None


# ISO base media brands of HEIC/HEIF stills and sequences, which OpenCV has no decoder for.
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def _why_unreadable(data: bytes) -> str:
    """Why OpenCV decoded nothing: a format it lacks, said as such where the header tells, else
    ``UNREADABLE_WHY``."""
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "an AVIF image this OpenCV cannot decode (built without AVIF, or a damaged file); convert it to JPEG or PNG"
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return FOREIGN_PHOTO_WHY
    return UNREADABLE_WHY


TIFF_SAMPLE_FORMAT, TIFF_FLOAT = 339, 3  # the SampleFormat tag, and its value for IEEE floats


def is_float_tiff(data: bytes) -> bool:
    """Whether ``data`` is a classic TIFF whose first image holds floating-point samples (its
    SampleFormat tag says 3), read from the header: OpenCV decodes such a file only at its own depth,
    and an 8-bit try first printed "TIFFRGBAImageOK: Sorry, can not handle images with 32-bit
    samples" on the caller's stderr for every one. Anything it cannot read says False."""
    order = {b"II*\0": "<", b"MM\0*": ">"}.get(bytes(data[:4]))
    if order is None or len(data) < 8:
        return False
    offset = int.from_bytes(data[4:8], "little" if order == "<" else "big")
    if offset + 2 > len(data):
        return False
    header = np.frombuffer(data, np.dtype(f"{order}u2"), 1, offset)
    entries = int(header[0])
    if offset + 2 + 12 * entries > len(data):
        return False
    for index in range(entries):
        start = offset + 2 + 12 * index
        tag, kind = np.frombuffer(data, np.dtype(f"{order}u2"), 2, start)
        if tag == TIFF_SAMPLE_FORMAT and kind == 3:  # SHORT values: the first one inline, or at an offset
            count = int(np.frombuffer(data, np.dtype(f"{order}u4"), 1, start + 4)[0])
            where = start + 8 if count <= 2 else int(np.frombuffer(data, np.dtype(f"{order}u4"), 1, start + 8)[0])
            return where + 2 <= len(data) and int(np.frombuffer(data, np.dtype(f"{order}u2"), 1, where)[0]) == TIFF_FLOAT
    return False


def _imdecode(encoded: np.ndarray, flags: int) -> np.ndarray | None:
    """``cv2.imdecode``, None where OpenCV cannot decode; its exceptions (a header it rejects, such
    as a PFM's "abc def" size) are None too, and an image over its pixel limit ``TooManyPixels``."""
    limit = pixel_limit()  # a value OpenCV cannot parse would abort the process in imdecode
    try:
        return cv2.imdecode(encoded, flags)
    except cv2.error as error:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(error):
            raise TooManyPixels(f"an image over {limit:,} pixels, the limit set by OPENCV_IO_MAX_IMAGE_PIXELS") from None
        return None


def _float_map(data: bytes, flags: int) -> np.ndarray:
    """A PFM image or a float TIFF in 8 bits by fervid's float rule (0..1, or 0..255): OpenCV's 8-bit
    decode truncated a PFM's 0..1 to 0 and 1, a black picture classified without a word, and refused
    a float TIFF."""
    encoded = np.frombuffer(data, np.uint8)
    image = _imdecode(encoded, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None or image.size == 0:  # a float TIFF with alpha decodes only as it is stored
        image = _imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise UnreadableImage(f"not a readable image ({UNREADABLE_WHY})")
    try:
        image = to_uint8(image, in_file=True)
    except FervidError as error:
        raise UnreadableImage(str(error)) from None
    if flags & cv2.IMREAD_ANYCOLOR:  # the channels as stored
        return image
    if image.ndim == 3 and image.shape[2] == 2:  # gray + alpha: as BGRA
        image = np.dstack([image[:, :, 0]] * 3 + [image[:, :, 1]])
    if image.ndim == 3 and image.shape[2] == 4:  # transparent parts white, as every other format's (an alpha never set ignored)
        image = on_white(image) if image[:, :, 3].any() else np.ascontiguousarray(image[:, :, :3])
    if flags & cv2.IMREAD_COLOR:
        return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return to_gray(image)  # IMREAD_GRAYSCALE


def read_image(path: str | Path) -> np.ndarray:
    """An image file as a BGR array, turned upright by its EXIF orientation."""
    path = Path(path)
    if not path.is_file():
        raise FervidError(f"{path}: {_not_a_file(path)}")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        raise NotAnImage(f"{path}: a video, not an image (fervid live --source {path} reads videos)")
    if path.suffix.lower() == ".zip":
        raise NotAnImage(f"{path}: a zip, not an image (fervid analyze {path} reads the images in a zip)")
    try:
        return decode_image(path.read_bytes())
    except OSError as error:
        raise FervidError(f"{path}: could not be read ({error.strerror or error})") from None
    except UnreadableImage as error:
        raise type(error)(f"{path}: {error}") from None  # TooManyPixels stays TooManyPixels


def _not_a_file(path: Path) -> str:
    """What ``path`` is, where it is not a regular file to read: a device, a pipe (``<(cat x.png)``) or
    a socket is not "no such file", though it has no image to read whole (a pipe's bytes can only be
    read once, with no size known: save them to a file)."""
    if path.is_dir():
        return "a folder, not an image"
    if symlink_loop(path):
        return "a symlink loop (links that lead back to each other, never to a file)"
    if path.is_symlink() and not path.exists():
        return f"a symlink to {os.readlink(path)}, which does not exist"
    if path.exists():
        return "not a regular file (a device, pipe or socket); save the image to a file and give that"
    return "no such file"


def image_path(image: object) -> Path | None:
    """``image`` as a file path if it names one (str or any os.PathLike, ``~`` expanded), else None;
    a URL is a FervidError (fervid reads files; streams go to ``fervid live --source URL``)."""
    if not isinstance(image, (str, os.PathLike)):
        return None
    text = os.fspath(image)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text:  # an unset variable: not the current folder
        raise FervidError("the image path is an empty string")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise FervidError(f"{text}: a URL; fervid reads image files (download it first; fervid live --source URL reads streams)")
    return Path(text).expanduser()


def channel_order(color: Color) -> str:
    """``color`` as 'bgr' or 'rgb', in any case ('RGB' is how PIL names its mode)."""
    order = color.lower() if isinstance(color, str) else color
    if order not in ("bgr", "rgb"):
        raise FervidError(f"color must be 'bgr' or 'rgb' (any case), got {color!r}")
    return order


def as_bgr(image: np.ndarray, color: Color) -> np.ndarray:
    """An image, crop or stack of crops whose last axis holds ``color`` channels, as BGR(A) for OpenCV."""
    image = np.asarray(image)
    if channel_order(color) == "rgb" and image.ndim >= 3 and image.shape[-1] in (3, 4):
        return image[..., [2, 1, 0, 3][: image.shape[-1]]]
    return image


def gray_frame(image: np.ndarray, color: Color = "bgr") -> np.ndarray:
    """A gray, BGR(A) or RGB(A) frame as 8-bit gray, the form both the detector and the model use.

    Its dtype is read as ``fervid.preprocess.to_uint8`` says: uint8 0..255, uint16 0..65535, float
    0..1 (or 0..255 once values reach 2), other integers 0..255; anything else is a FervidError.
    """
    return to_gray(as_bgr(image, color))
