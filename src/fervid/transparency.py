"""Transparent images read as a viewer shows them: on white.

A cut-out portrait (a PNG or WebP with its background removed) is seen in a browser or file viewer
on white, but OpenCV's colour decode drops the alpha channel and keeps whatever pixels lie under
it, often black or leftover background: the face detector and the model then see a picture nobody
saw. So a file that can hold transparency is decoded a second time with its alpha, laid on white,
and turned the way OpenCV turned the colour decode (``IMREAD_UNCHANGED`` ignores the EXIF
orientation that ``IMREAD_COLOR`` applies). Only files whose header says they may be transparent
pay for the second decode.

Two kinds of transparency OpenCV's decode with alpha leaves out are added here: a gray PNG's
``tRNS`` key (one gray value that stands for "transparent"; OpenCV expands it to an alpha channel
for palette and RGB PNGs only) and an AVIF's alpha, which it decodes once the header says there
is one.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from fervid.preprocess import to_gray, to_uint8

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_ALPHA_COLOR_TYPES = (4, 6)  # gray + alpha, RGB + alpha; a palette or plain image may add a tRNS chunk
PNG_GRAY = 0  # the colour type of plain gray, whose tRNS chunk holds the one gray value that is transparent
AVIF_BRANDS = (b"avif", b"avis")  # the ftyp brands of an AVIF still and sequence
# The auxC types of an AVIF's alpha plane (the second, HEVC's, from encoders before the AVIF spec settled).
AVIF_ALPHA_TYPES = (b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha", b"urn:mpeg:hevc:2015:auxid:1")
WEBP_VP8X_ALPHA = 0x10  # the VP8X flags byte's alpha bit
WEBP_VP8L_ALPHA = 0x10  # the alpha_is_used bit of a lossless WebP's header, in its fifth byte

# The eight ways an EXIF orientation can turn an image, identity first so that it wins a tie
# (an image that looks the same turned, where the turn cannot be told and does not matter much).
TURNS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    lambda image: image,
    lambda image: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
    lambda image: cv2.rotate(image, cv2.ROTATE_180),
    lambda image: cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE),
    lambda image: cv2.flip(image, 1),
    lambda image: cv2.flip(image, 0),
    lambda image: cv2.transpose(image),
    lambda image: cv2.flip(cv2.transpose(image), -1),
)
BAND_ROWS = 256  # rows laid on white at once: the 16-bit temporaries stay a few MB
SIDEWAYS = (1, 3, 6, 7)  # the turns above that swap width and height
MATCH_SIDE = 32  # images are compared at this size to find the turn: cheap for a 12-megapixel photo


def may_be_transparent(data: bytes) -> bool:
    """Whether encoded image bytes can hold transparency, from their header alone (PNG colour type
    or ``tRNS`` chunk, WebP alpha flags, an AVIF's alpha plane; TIFF and GIF are always checked)."""
    if data[:8] == PNG_SIGNATURE:
        first_pixels = data.find(b"IDAT")
        return len(data) > 25 and (
            data[25] in PNG_ALPHA_COLOR_TYPES or b"tRNS" in data[: first_pixels if first_pixels >= 0 else len(data)]
        )
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) > 24:
        if data[12:16] == b"VP8X":
            return bool(data[20] & WEBP_VP8X_ALPHA)
        if data[12:16] == b"VP8L":
            return bool(data[24] & WEBP_VP8L_ALPHA)
        return False
    if data[4:8] == b"ftyp" and data[8:12] in AVIF_BRANDS:
        return _avif_alpha(data)
    return data[:4] in (b"II*\x00", b"MM\x00*") or data[:4] == b"GIF8"


def _avif_alpha(data: bytes) -> bool:
    """Whether an AVIF's ``meta`` box declares an alpha plane (an auxiliary image of an alpha type)."""
    at = data.find(b"meta")
    if at < 4:
        return False
    end = at - 4 + int.from_bytes(data[at - 4 : at], "big")
    return any(kind in data[at:end] for kind in AVIF_ALPHA_TYPES)


def png_gray_key(data: bytes) -> int | None:
    """The gray value a plain gray PNG's ``tRNS`` chunk marks transparent, as OpenCV decodes that
    gray (1, 2 and 4-bit stretched to 0..255; 16-bit kept), else None. OpenCV's decode with alpha
    leaves such a key out, so its transparent parts kept their stored gray (often black), where a
    viewer shows white. A key out of the depth's range is ignored, as libpng ignores it."""
    if data[:8] != PNG_SIGNATURE or len(data) < 33 or data[25] != PNG_GRAY:
        return None
    depth, at = data[24], len(PNG_SIGNATURE)
    if depth not in (1, 2, 4, 8, 16):
        return None
    while at + 10 <= len(data):
        length, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
        if kind in (b"IDAT", b"IEND"):  # tRNS comes before the pixels
            return None
        if kind == b"tRNS" and length >= 2:
            key, top = int.from_bytes(data[at + 8 : at + 10], "big"), (1 << depth) - 1
            if key > top:
                return None
            return key * (255 // top) if depth < 8 else key
        at += 12 + length
    return None


def keyed_alpha(gray: np.ndarray, key: int) -> np.ndarray:
    """A gray image as BGRA whose alpha is 0 where the gray is ``key`` and opaque elsewhere."""
    opaque = np.iinfo(gray.dtype).max
    alpha = np.where(gray == key, 0, opaque).astype(gray.dtype)
    return np.dstack([gray, gray, gray, alpha])


def on_white(image: np.ndarray) -> np.ndarray:
    """A BGRA image (any depth ``to_uint8`` reads) as 8-bit BGR laid on white by its alpha.

    In 16-bit integers, a band of rows at a time: c * a + 255 * (255 - a), that is
    65,025 - a * (255 - c), fits them, and float32 copies of a whole 67-megapixel upload took
    2.7 GB and 5 s where this needs little beyond the input and the result.
    """
    image = to_uint8(image)
    laid = np.empty(image.shape[:2] + (3,), np.uint8)
    for top in range(0, image.shape[0], BAND_ROWS):
        band = image[top : top + BAND_ROWS]
        alpha = band[:, :, 3].astype(np.uint16)
        for channel in range(3):
            hidden = 255 - band[:, :, channel].astype(np.uint16)  # how far from white the colour is
            hidden *= alpha
            laid[top : top + BAND_ROWS, :, channel] = (255 * 255 + 127 - hidden) // 255
    return laid


def turn_between(image: np.ndarray, reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    """The turn that makes ``image`` look most like ``reference`` (the same picture, with an EXIF
    turn applied or not; both gray); None if no turn gives ``reference``'s size.

    Both are shrunk to ``MATCH_SIDE`` pixels square first and the small copy is turned: area
    resampling works along each axis, so shrinking and turning commute. Where turns tie (a picture
    whose colours look the same turned, such as one flat colour with its shape in the alpha alone)
    the first wins, no turn: such an image holds no face either way.
    """
    square = (MATCH_SIDE, MATCH_SIDE)
    small = cv2.resize(reference, square, interpolation=cv2.INTER_AREA).astype(np.float32)
    height, width = image.shape[:2]
    # A side under MATCH_SIDE is stretched, not shrunk, and stretching does not commute with turning:
    # such a (small) image is turned whole first.
    thin = min(height, width) < MATCH_SIDE
    shrunk = image if thin else cv2.resize(image, square, interpolation=cv2.INTER_AREA)
    best, best_difference = None, np.inf
    for index, turn in enumerate(TURNS):
        sides = (width, height) if index in SIDEWAYS else (height, width)
        if sides != reference.shape[:2]:
            continue
        candidate = cv2.resize(turn(image), square, interpolation=cv2.INTER_AREA) if thin else turn(shrunk)
        difference = float(np.abs(candidate.astype(np.float32) - small).mean())
        if difference < best_difference:
            best, best_difference = turn, difference
    return best


def decode_on_white(data: bytes, decoded: np.ndarray) -> np.ndarray:
    """``decoded`` (a decode of ``data`` that dropped its alpha, upright by its EXIF orientation)
    with ``data``'s transparent parts white, in 8 bits; ``decoded`` itself when ``data`` has no
    alpha channel, or an alpha of all zeros (never set, as some exporters leave it: laid on white,
    the picture would vanish)."""
    if not may_be_transparent(data):
        return decoded
    try:
        full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return decoded
    if full is not None and full.ndim == 2 and full.dtype.kind == "u" and (key := png_gray_key(data)) is not None:
        full = keyed_alpha(full, key)
    if full is None or full.ndim != 3 or full.shape[2] != 4 or not full[:, :, 3].any():
        return decoded
    full = to_uint8(full, in_file=True)  # once, and the 16-bit copy let go: two more 16-bit copies took 1.7 GB for 67 MP
    turn = turn_between(to_gray(full), to_gray(decoded))
    if turn is None:
        return decoded
    white = turn(on_white(full))
    return white if decoded.ndim == 3 and decoded.shape[2] == 3 else cv2.cvtColor(white, cv2.COLOR_BGR2GRAY)
