"""``OPENCV_IO_MAX_IMAGE_PIXELS``, the pixel limit OpenCV applies before it unpacks an image, read as
OpenCV reads it. OpenCV parses the variable in C++ (4.14: as ``import cv2`` loads it; older: at its
first decode) and, for a value it cannot parse (``64M``, ``1e9``, `` 5``), aborts the whole process
(SIGABRT, no exception to catch): fervid checks it first, without importing OpenCV, so a bad value
is one line in the CLI and a ``FervidError`` in Python."""

from __future__ import annotations

import importlib.abc
import os
import re
import sys

from fervid.errors import FervidError

VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
OPENCV_DEFAULT = 1 << 30
# OpenCV's own form: ASCII digits, optionally one of its six size suffixes (KB/Kb/kb x1024, MB/Mb/mb x1024^2).
FORM = re.compile(r"([0-9]+)(KB|Kb|kb|MB|Mb|mb)?")
SCALE = {None: 1, "KB": 1 << 10, "Kb": 1 << 10, "kb": 1 << 10, "MB": 1 << 20, "Mb": 1 << 20, "mb": 1 << 20}


def parsed_by_opencv(value: str) -> bool:
    """Whether OpenCV parses ``value`` rather than aborting (0 included: it parses, and reads no image)."""
    found = FORM.fullmatch(value)
    return found is not None and int(found[1]) < 1 << 64


def pixel_limit() -> int:
    """The limit in pixels (OpenCV's default, 2^30, when the variable is unset), or a FervidError
    naming a value OpenCV could not parse (it would abort), 0, or a value whose size suffix takes it
    to 2^64 or more (OpenCV wraps it round, to 0 for 2^64): no image could be read, or not the
    limit meant."""
    value = os.environ.get(VARIABLE)
    if value is None:
        return OPENCV_DEFAULT
    found = FORM.fullmatch(value)
    if found is None or int(found[1]) >= 1 << 64 or int(found[1]) == 0:
        raise FervidError(f"{VARIABLE}={value!r}: give a whole number of pixels, 1 or more, such as 100000000 "
                          "(OpenCV also reads 64MB as 64 x 1024 x 1024 pixels)")
    limit = int(found[1]) * SCALE[found[2]]
    if limit >= 1 << 64:  # OpenCV multiplies by the suffix in 64 bits, unchecked: 2^64 pixels became a limit of 0
        raise FervidError(f"{VARIABLE}={value!r}: {limit:,} pixels, 2^64 or more, which OpenCV wraps round to "
                          f"{limit % (1 << 64):,}; give a smaller limit")
    return limit


class _CheckedOpenCV(importlib.abc.MetaPathFinder):
    """Checks the variable as OpenCV is first imported, by any module, and finds nothing itself: the
    Python API (``from fervid.runtime.recognizer import Recognizer``) imports cv2 before any fervid
    code could check it, and ``import cv2`` aborted the interpreter."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "cv2" and (value := os.environ.get(VARIABLE)) is not None and not parsed_by_opencv(value):
            pixel_limit()  # the one-line FervidError; 0, which OpenCV parses, is refused only where images are read


def check_before_opencv() -> None:
    """Install the check once (``import fervid`` does), ahead of the finders that would load OpenCV."""
    if not any(isinstance(finder, _CheckedOpenCV) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CheckedOpenCV())
