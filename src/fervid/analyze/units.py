"""Plan the work: image batches and video time segments, each a unit with a content-addressed id.

A *unit* is the smallest piece of work that is written and resumed as a whole: a batch of images or
one time segment of one video. Its id hashes everything its rows depend on (the sources' content
fingerprints, the segment, the options and the model), so a rerun skips exactly the units whose
rows it already has.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import pyarrow as pa

from fervid.analyze.boxes import BoxTable
from fervid.analyze.inputs import SourceItem
from fervid.analyze.options import AnalyzeOptions
from fervid.analyze.schema import SCHEMA_VERSION
from fervid.analyze.video import video_file, video_is_steady, video_probe
from fervid.errors import FervidError
from fervid.runtime.sources import DEFAULT_FPS


BOXES_READER = 2  # how --boxes boxes are used: 2 since 2026-12-05 (an image's boxes numbered left to right, not in the file's order)
VIDEO_READER = 6  # how video segments are read and tracked: 2 since 2026-12-05 (frame timestamps; variable-rate videos whole), 3 ids kept through a 1 s miss, 4 seeks checked by timestamp (damaged files), 5 a lost face matched where last seen too, 6 times to the microsecond
# how images are decoded: 2 since 2026-12-05 (transparent parts white, PNG/WebP upright by EXIF), 3 float TIFFs read,
# 4 the transparent parts of gray PNGs (their tRNS key) and of AVIFs white too, 5 opaque 16-bit PNGs/TIFFs of 0..255 refused
IMAGE_READER = 5


@dataclass(frozen=True)
class Unit:
    """A batch of images or one segment [start_frame, end_frame) of a video (end None: to the end)."""

    id: str
    kind: str
    sources: tuple[SourceItem, ...]
    segment: int = 0
    start_frame: int = 0
    end_frame: int | None = None
    fps: float = DEFAULT_FPS
    frames: int = 0  # frames it is expected to analyse, for the progress bar
    frame_count: int | None = None  # the video's frame count as its header gives it (None: unknown)
    seekable: bool = True  # a constant frame rate: a frame number can be sought (see video_probe)
    boxes: dict | None = None  # {source name: {frame: [box, ...]}} with --boxes; None: run the detector
    error: str | None = None  # a video that could not be opened while planning


@dataclass
class UnitResult:
    """A unit's face rows, its ledger (one row per source: status, frames, faces, counts) and stage timings."""

    unit: Unit
    rows: pa.Table
    ledger: pa.Table
    frames: int
    timings: dict[str, float]


def analysed_frames(start: int, end: int, every: int) -> int:
    """How many frame numbers in [start, end) are multiples of ``every``."""
    return max(0, (end - 1) // every - (start - 1) // every) if end > start else 0


def plan_units(items: list[SourceItem], options: AnalyzeOptions, model_key: str, boxes: BoxTable | None = None) -> list[Unit]:
    """Video segments for ``items`` in source order, then the image batches; ids are content-addressed."""
    options.validate()
    salts = {
        kind: json.dumps({"options": options.key(kind), "model": model_key, "boxes": [BOXES_READER, boxes.fingerprint] if boxes else None,
                          "schema": SCHEMA_VERSION, "reader": VIDEO_READER if kind == "video" else IMAGE_READER}, sort_keys=True)
        for kind in ("image", "video")
    }

    given = boxes.for_items(items) if boxes else None

    def make(kind: str, sources: list[SourceItem], **fields) -> Unit:
        described = [(s.key, s.fingerprint) for s in sources], fields.get("segment", 0), fields.get("start_frame", 0), fields.get("end_frame")
        unit_id = hashlib.sha1(f"{salts[kind]}|{json.dumps(described)}".encode()).hexdigest()[:20]
        unit_boxes = {s.name: given[s.name] for s in sources if s.name in given} if given is not None else None
        return Unit(unit_id, kind, tuple(sources), boxes=unit_boxes, **fields)

    units: list[Unit] = []
    images: list[SourceItem] = []

    def flush_images() -> None:
        for start in range(0, len(images), options.image_batch):
            batch = images[start : start + options.image_batch]
            units.append(make("image", batch, frames=len(batch)))
        images.clear()

    for item in items:
        # Images (and a zip that could not be read: its batch records the error) are batched together
        # after the videos: cut at each video, a folder of photos and clips gave many small batches,
        # and a video added or removed re-cut the photo batches after it (redone for nothing).
        if item.kind != "video":
            images.append(item)
            continue
        try:
            with video_file(item.path, item.member) as path:
                fps, count = video_probe(path)
                length = max(1, round(options.segment_s * fps))
                # The header's count cuts the segments; a truncated file ends before it, and the segments past
                # its real end give no rows (and a note), not an error: see VideoReader.
                segments = math.ceil(count / length) if count else 1
                # A variable frame rate cannot be sought by frame number: such a video is one unit, read
                # straight through (a reader per segment would decode all the frames before its own).
                steady = segments == 1 or video_is_steady(path, fps, count)
        except FervidError as error:
            units.append(make("video", [item], error=str(error), frames=0))
            continue
        if not steady:
            segments, length = 1, count or 1
        for segment in range(segments):
            start, end = segment * length, (segment + 1) * length if segment < segments - 1 else None
            expected = analysed_frames(start, end if end is not None else (count or start + 1), int(options.every))
            units.append(make("video", [item], segment=segment, start_frame=start, end_frame=end, fps=fps, frames=expected,
                              frame_count=count, seekable=steady))
    flush_images()
    return units
