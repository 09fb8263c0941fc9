"""Rebuild fer2013.zip on the device from the extracted tree, same members in the same order (stored).

    python3 tools/device/make_zip.py EXTRACTED_FOLDER ORDER.txt.gz TARGET.zip

The zip is written beside TARGET under a temporary name and renamed into place, so a run stopped
midway leaves no partial TARGET for the next one to take as the dataset.
"""
import gzip, os, sys, tempfile, zipfile
from pathlib import Path

if len(sys.argv) != 4:
    print(f"usage: {sys.argv[0]} EXTRACTED_FOLDER ORDER.txt.gz TARGET.zip", file=sys.stderr)
    sys.exit(2)
root, order, target = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
umask = os.umask(0)
os.umask(umask)
os.chmod(temporary, 0o666 & ~umask)  # as a plain open would make it, not mkstemp's 0600
try:
    with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in gzip.open(order, "rt").read().split():
            archive.write(root / name, name)
    os.replace(temporary, target)
except BaseException:
    os.unlink(temporary)
    raise
print("zip", target, target.stat().st_size)
