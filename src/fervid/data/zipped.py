"""Read one image out of a zip with its size bounded: datasets (``fervid data inspect``, ``train``,
``evaluate``) and ``fervid analyze`` read zip members in place, into memory.

A zip bomb, a member of a few MB that unpacks to gigabytes of zeros (``train/sad/bomb.jpg``, 1.5 GB),
was read whole before any check: 3.2 GB of memory for one file that is no image. This module only
needs the standard library and fervid's errors, so ``fervid.analyze`` imports it without pandas.
"""

from __future__ import annotations

import zipfile

from fervid.images import UnreadableImage
from fervid.pixel_limit import OPENCV_DEFAULT

# Half of OpenCV's default pixel limit (2^30 pixels), in bytes: 512 MiB. A photo at that limit, saved
# as JPEG, WebP or PNG as photos that large are, takes well under half a byte a pixel, so any image
# OpenCV decodes by default fits; over it lies only an uncompressed image (a BMP or TIFF of about 180
# megapixels or more, which decodes to gigabytes anyway) or a bomb. Such a member is one unreadable
# image, with this reason; extracted, it is a file, read as any other.
ZIP_IMAGE_BYTES = OPENCV_DEFAULT // 2


class MemberTooLarge(UnreadableImage):
    """A zip member over ``ZIP_IMAGE_BYTES`` unpacked: never read whole into memory."""


def too_large(limit: int = ZIP_IMAGE_BYTES) -> str:
    """The reason given for a member over ``limit``: the same for every such member, so they group."""
    return (f"over {limit / (1 << 20):,.0f} MiB unpacked, more than fervid reads of one image in a zip "
            "(a zip bomb?); extract it to read it as a file")


def read_image_member(archive: zipfile.ZipFile, name: str, limit: int | None = None) -> bytes:
    """The bytes of member ``name``, or ``MemberTooLarge`` when it unpacks to more than ``limit`` bytes
    (``ZIP_IMAGE_BYTES`` by default, read when called so a test can lower it).

    The size the zip declares is checked before anything is unpacked; then at most ``limit + 1``
    bytes are read, so a member whose declared size lies is bounded too. Damage (a bad CRC, an
    unknown compression) raises what ``zipfile`` raises, for the caller to report as it does.
    """
    limit = ZIP_IMAGE_BYTES if limit is None else limit
    if archive.getinfo(name).file_size > limit:
        raise MemberTooLarge(too_large(limit))
    with archive.open(name) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise MemberTooLarge(too_large(limit))
    return data
