"""``--boxes FILE``: precomputed face boxes per image or video frame, from CSV or JSON.

CSV: a header with ``source,frame,x,y,w,h`` (``frame`` may be left out or empty for images, meaning 0)::

    source,frame,x,y,w,h
    photos/anna.jpg,,120,80,96,96
    interview.mp4,30,200,110,150,150

JSON: a list of objects ``{"source": "interview.mp4", "frame": 30, "box": [200, 110, 150, 150]}``
(``frame`` optional; ``x``, ``y``, ``w``, ``h`` keys instead of ``box`` work too).

``source`` is matched against each source's full name (the ``source`` column), then its path inside
the input folder or zip it came from, then its file name; a name that fits two sources is refused.
With ``--boxes`` the detector never runs: images and frames without boxes give no rows, and a box
off its frame is skipped with a note in the summary.
"""

from __future__ import annotations

import csv
import hashlib
import json
import unicodedata
from collections import defaultdict
from pathlib import Path

from fervid.analyze.inputs import SourceItem
from fervid.errors import FervidError

Box = tuple[int, int, int, int]
# What a malformed entry lacks, said in the file's own form: a JSON user has no columns, a CSV user no "box".
CSV_NEEDS = "source, x, y, w, h (and optionally frame)"
JSON_NEEDS = '"source" and "box": [x, y, w, h] of four numbers (or "x", "y", "w", "h" keys; "frame" optional)'


class BoxTable:
    """Boxes by source key and frame number."""

    def __init__(self, entries: dict[str, dict[int, list[Box]]], fingerprint: str = "") -> None:
        self.entries = entries
        self.fingerprint = fingerprint

    def for_items(self, items: list[SourceItem]) -> dict[str, dict[int, list[Box]]]:
        """The boxes of each source by frame, by source name (sources the file names no box for are left out).

        Each key is matched at the most specific level it matches anything: full names, then paths
        inside the inputs, then file names. A key that matches two sources at that level
        (``a.jpg`` in two folders) is a FervidError: its boxes would be put on the wrong photo. A
        source named by two keys (``clip.mp4`` and ``videos/clip.mp4``) gets the boxes of both.
        """
        levels: list[dict[str, list[SourceItem]]] = [defaultdict(list) for _ in range(3)]
        for item in items:
            for level, name in _names(item):
                if item not in levels[level][name]:  # a link's name may repeat the file's own
                    levels[level][name].append(item)
        found: dict[str, dict[int, list[Box]]] = {}
        for key, frames in self.entries.items():
            matched = next((level[key] for level in levels if key in level), [])
            if len(matched) > 1:
                names = ", ".join(item.name for item in matched[:3]) + (", ..." if len(matched) > 3 else "")
                raise FervidError(f"--boxes: '{key}' matches {len(matched)} inputs ({names}); name the source by its path "
                                  "as the source column gives it")
            if matched:
                merged = found.setdefault(matched[0].name, {})
                for frame, boxes in frames.items():
                    merged.setdefault(frame, [])
                    merged[frame].extend(box for box in boxes if box not in merged[frame])
        return found

    def unmatched(self, items: list[SourceItem]) -> list[str]:
        """Sources named in the file that match no input (usually a typo or a different path)."""
        keys = {name for item in items for _, name in _names(item)}
        return sorted(set(self.entries) - keys)


def _names(item: SourceItem) -> list[tuple[int, str]]:
    """The names a --boxes key may give a source by, with their level (0 most specific): its own,
    and those of the links that reach the same file (analysed once, under one name)."""
    return [(level, unicodedata.normalize("NFC", name)) for full, relative in ((item.name, item.relative), *item.aliases)
            for level, name in enumerate((full, relative, Path(relative).name))]


def load_boxes(path: str | Path) -> BoxTable:
    """Read a boxes file (.csv or .json); malformed entries are one-line FervidErrors naming the entry."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # a folder is IsADirectoryError below
        # A named pipe blocked opening it until some writer came, forever, and a device is no file of boxes.
        raise FervidError(f"--boxes {path}: not a regular file (a device, pipe or socket); save the boxes to a file and give that")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel's "CSV UTF-8" starts with a byte-order mark
    except OSError as error:
        raise FervidError(f"--boxes {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise FervidError(f"--boxes {path}: not UTF-8 text (byte {error.start + 1}); save it as UTF-8 "
                          "(Excel: 'CSV UTF-8')") from None
    is_json = path.suffix.lower() == ".json"
    records = _json_records(path, text) if is_json else _csv_records(path, text)
    needs = JSON_NEEDS if is_json else CSV_NEEDS
    entries: dict[str, dict[int, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for number, record in enumerate(records, start=1):
        try:
            # NFC, as _names: a Mac writes "café" decomposed (NFD) in zips and file names, an editor composed
            source = unicodedata.normalize("NFC", str(record["source"]).strip())
            frame = _frame(record.get("frame"))
            box = record["box"] if "box" in record else [record[k] for k in ("x", "y", "w", "h")]
            x, y, w, h = (int(round(float(v))) for v in box)
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: an infinite coordinate
            raise FervidError(f"--boxes {path}: entry {number} needs {needs}") from None
        if not source or w <= 0 or h <= 0 or frame < 0:
            raise FervidError(f"--boxes {path}: entry {number} has an empty source, a non-positive size or a negative frame")
        entries[source][frame].append((x, y, w, h))
    fingerprint = hashlib.sha1(text.encode()).hexdigest()
    return BoxTable({source: dict(frames) for source, frames in entries.items()}, fingerprint)


def _frame(value: object) -> int:
    """A frame number as the file gives it: empty or absent is 0 (an image); a whole number, also
    written 30.0 in JSON. JSON's 1.7 and true were taken as frame 1, where CSV's 1.5 was refused."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"not a frame number: {value!r}")
    return int(value.strip()) if isinstance(value, str) else int(value)  # type: ignore[call-overload]


def _csv_records(path: Path, text: str) -> list[dict]:
    reader = csv.DictReader(text.splitlines())
    missing = {"source", "x", "y", "w", "h"} - set(reader.fieldnames or [])
    if missing:
        raise FervidError(f"--boxes {path}: the CSV header needs source,frame,x,y,w,h (missing {', '.join(sorted(missing))})")
    return list(reader)


def _json_records(path: Path, text: str) -> list[dict]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise FervidError(f"--boxes {path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise FervidError(f"--boxes {path}: expected a JSON list of objects with source, frame and box")
    return records
