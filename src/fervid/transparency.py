"""Transparent images read as a viewer shows them: on white.

A cut-out portrait (a PNG or WebP with its background removed) is seen in a browser or file viewer
on white, but OpenCV's colour decode drops the alpha channel and keeps whatever pixels lie under
it, often black or leftover background: the face detector and the model then see a picture nobody
saw. So a file that can hold transparency is decoded a second time with its alpha, laid on white,
and turned the way OpenCV turned the colour decode (``IMREAD_UNCHANGED`` ignores the EXIF
orientation that ``IMREAD_COLOR`` applies). Only files whose header says they may be transparent
pay for the second decode.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from fervid.preprocess import to_gray, to_uint8

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_ALPHA_COLOR_TYPES = (4, 6)  # gray + alpha, RGB + alpha; a palette or plain image may add a tRNS chunk
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
MATCH_SIDE = 32  # images are compared at this size to find the turn: cheap for a 12-megapixel photo


def may_be_transparent(data: bytes) -> bool:
    """Whether encoded image bytes can hold transparency, from their header alone (PNG colour type
    or ``tRNS`` chunk, WebP alpha flags; TIFF and GIF are always checked)."""
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
    return data[:4] in (b"II*\x00", b"MM\x00*") or data[:4] == b"GIF8"


def on_white(image: np.ndarray) -> np.ndarray:
    """A BGRA image (any depth ``to_uint8`` reads) as 8-bit BGR laid on white by its alpha."""
    image = to_uint8(image)
    alpha = image[:, :, 3:].astype(np.float32) / 255.0
    return (image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)


def turn_between(image: np.ndarray, reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    """The turn that makes ``image`` look most like ``reference`` (the same picture, with an EXIF
    turn applied or not; both gray); None if no turn gives ``reference``'s size."""
    small = cv2.resize(reference, (MATCH_SIDE, MATCH_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    best, best_difference = None, np.inf
    for turn in TURNS:
        turned = turn(image)
        if turned.shape[:2] != reference.shape[:2]:
            continue
        candidate = cv2.resize(turned, (MATCH_SIDE, MATCH_SIDE), interpolation=cv2.INTER_AREA)
        difference = float(np.abs(candidate.astype(np.float32) - small).mean())
        if difference < best_difference:
            best, best_difference = turn, difference
    return best


def decode_on_white(data: bytes, decoded: np.ndarray) -> np.ndarray:
    """``decoded`` (a decode of ``data`` that dropped its alpha, upright by its EXIF orientation)
    with ``data``'s transparent parts white, in 8 bits; ``decoded`` itself when ``data`` has no
    alpha channel."""
    if not may_be_transparent(data):
        return decoded
    try:
        full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return decoded
    if full is None or full.ndim != 3 or full.shape[2] != 4:
        return decoded
    turn = turn_between(to_gray(full), to_gray(decoded))
    if turn is None:
        return decoded
    white = turn(on_white(full))
    return white if decoded.ndim == 3 and decoded.shape[2] == 3 else cv2.cvtColor(white, cv2.COLOR_BGR2GRAY)
