"""Rebuild fer2013.zip on the device from the extracted tree, same members in the same order (stored)."""
import gzip, sys, zipfile
from pathlib import Path
root, order, target = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
    for name in gzip.open(order, "rt").read().split():
        archive.write(root / name, name)
print("zip", target, target.stat().st_size)
