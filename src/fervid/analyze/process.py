"""Per-source work shared by both engines: plan units (image batches, video time segments), turn them into rows.

A *unit* is the smallest piece of work that is written and resumed as a whole: a batch of images or
one time segment of one video. Its id hashes everything its rows depend on (the sources' content
fingerprints, the segment, the options and the model), so a rerun skips exactly the units whose
rows it already has.

Videos are decoded frame by frame and never held whole. Each segment starts a fresh ``FaceTracker``,
so the local engine (one pass over the video) and the Ray engine (one worker per segment, seeking to
its first frame) give the same rows. Track ids are therefore consistent within a segment only: a
face crossing a segment boundary gets a new ``face_id`` (see docs/batch.md, "The seam").
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from fervid.analyze.boxes import BoxTable
from fervid.analyze.inputs import SourceItem, kind_of, read_source_bytes
from fervid.analyze.schema import COUNT_COLUMNS, LEDGER_SCHEMA, PROBABILITY_COLUMNS, ROW_SCHEMA, SCHEMA_VERSION
from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS
from fervid.images import decode_image, gray_frame
from fervid.runtime.recognizer import Recognizer, checked_boxes
from fervid.runtime.sources import DEFAULT_FPS, open_capture
from fervid.runtime.track import FaceTracker

SEGMENT_ID_STRIDE = 1_000_000  # face_id = segment * stride + track id, so ids are unique within a video
STAGES = ("decode", "detect", "classify", "write")


@dataclass(frozen=True)
class AnalyzeOptions:
    """What ``fervid analyze`` does to each source; everything here that changes rows is part of unit ids."""

    every: int = 1  # analyse every K-th video frame
    largest_only: bool = False  # keep only the largest face per frame
    crops: bool = False  # inputs are already-cropped faces: no detector, the whole image is the face
    segment_s: float = 300.0  # video time segment: the unit of parallel work, resume and tracking
    image_batch: int = 64  # images per unit
    model: str | None = None

    def validate(self) -> None:
        """Refuse options that would plan no work or loop forever, before any input is read."""
        if self.every < 1:
            raise FervidError(f"--every must be 1 or more, got {self.every}")
        if self.segment_s <= 0:
            raise FervidError(f"--segment-s must be above 0, got {self.segment_s}")
        if self.image_batch < 1:
            raise FervidError(f"the image batch must be 1 or more, got {self.image_batch}")

    def key(self, kind: str = "video") -> dict:
        """The options that change a ``kind`` of unit's rows (the batch size does not).

        ``every`` and ``segment_s`` only cut videos, so an image batch's id leaves them out: changing
        them does not redo the photos.
        """
        key = {"largest_only": self.largest_only, "crops": self.crops}
        return key if kind == "image" else {**key, "every": self.every, "segment_s": self.segment_s}


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


def video_probe(path: str) -> tuple[float, int | None]:
    """(fps, frame count or None) of a video; FervidError with the reason when it does not open."""
    if os.path.getsize(path) == 0:
        raise FervidError("empty file (0 bytes)")
    capture = open_capture(path)
    if capture is None:
        raise FervidError("not a readable video (it could not be opened; truncated or not a video?)")
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return (fps if 1 <= fps <= 1000 else DEFAULT_FPS), (count if count > 0 else None)


def analysed_frames(start: int, end: int, every: int) -> int:
    """How many frame numbers in [start, end) are multiples of ``every``."""
    return max(0, (end - 1) // every - (start - 1) // every) if end > start else 0


def plan_units(items: list[SourceItem], options: AnalyzeOptions, model_key: str, boxes: BoxTable | None = None) -> list[Unit]:
    """Image batches and video segments for ``items``, in source order; ids are content-addressed."""
    options.validate()
    salts = {
        kind: json.dumps({"options": options.key(kind), "model": model_key, "boxes": boxes.fingerprint if boxes else None,
                          "schema": SCHEMA_VERSION}, sort_keys=True)
        for kind in ("image", "video")
    }

    def make(kind: str, sources: list[SourceItem], **fields) -> Unit:
        described = [(s.name, s.fingerprint) for s in sources], fields.get("segment", 0), fields.get("start_frame", 0), fields.get("end_frame")
        unit_id = hashlib.sha1(f"{salts[kind]}|{json.dumps(described)}".encode()).hexdigest()[:20]
        unit_boxes = {s.name: table for s in sources if (table := boxes.for_item(s))} if boxes else None
        return Unit(unit_id, kind, tuple(sources), boxes=unit_boxes, **fields)

    units: list[Unit] = []
    images: list[SourceItem] = []

    def flush_images() -> None:
        for start in range(0, len(images), options.image_batch):
            batch = images[start : start + options.image_batch]
            units.append(make("image", batch, frames=len(batch)))
        images.clear()

    for item in items:
        if item.kind == "image":
            images.append(item)
            continue
        flush_images()
        try:
            fps, count = video_probe(item.path)
        except FervidError as error:
            units.append(make("video", [item], error=str(error), frames=0))
            continue
        length = max(1, round(options.segment_s * fps))
        # The header's count cuts the segments; a truncated file ends before it, and the segments past
        # its real end give no rows (and a note), not an error: see VideoReader.
        segments = math.ceil(count / length) if count else 1
        for segment in range(segments):
            start, end = segment * length, (segment + 1) * length if segment < segments - 1 else None
            expected = analysed_frames(start, end if end is not None else (count or start + 1), options.every)
            units.append(make("video", [item], segment=segment, start_frame=start, end_frame=end, fps=fps, frames=expected,
                              frame_count=count))
    flush_images()
    return units


class RowBuffer:
    """Columns of face rows, appended one frame at a time and turned into an Arrow table at the end."""

    def __init__(self, model_name: str, model_version: str) -> None:
        self.model_name, self.model_version = model_name, model_version
        self.columns: dict[str, list] = {name: [] for name in ("source", "segment", "frame", "time_s", "face_id", "x", "y", "w", "h")}
        self.probabilities: list[np.ndarray] = []

    def add(self, source: str, segment: int, frame: int, time_s: float, face_ids: Iterable[int], boxes: np.ndarray, probabilities: np.ndarray) -> None:
        for face_id, box in zip(face_ids, boxes):
            for name, value in zip(self.columns, (source, segment, frame, time_s, face_id, *(int(v) for v in box))):
                self.columns[name].append(value)
        self.probabilities.append(np.asarray(probabilities, dtype=np.float32).reshape(-1, len(EXPRESSIONS)))

    def table(self) -> pa.Table:
        probabilities = np.concatenate(self.probabilities) if self.probabilities else np.zeros((0, len(EXPRESSIONS)), np.float32)
        best = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, np.int64)
        count = len(probabilities)
        data = {
            **self.columns,
            "expression": [EXPRESSIONS[i] for i in best],
            "confidence": probabilities[np.arange(count), best] if count else np.zeros(0, np.float32),
            **{name: probabilities[:, i] for i, name in enumerate(PROBABILITY_COLUMNS)},
            "model_name": [self.model_name] * count,
            "model_version": [self.model_version] * count,
            "schema_version": [SCHEMA_VERSION] * count,
        }
        return pa.Table.from_pydict(data, schema=ROW_SCHEMA).sort_by([("source", "ascending"), ("frame", "ascending"), ("face_id", "ascending")])


class Analyzer:
    """Turns units into rows with one ``Recognizer`` (model and cascade loaded once per process or worker)."""

    def __init__(self, options: AnalyzeOptions, recognizer: Recognizer) -> None:
        options.validate()
        self.options = options
        self.recognizer = recognizer
        self.model_name = recognizer.classifier.name
        self.model_version = recognizer.classifier.version
        self.timings = dict.fromkeys(STAGES, 0.0)

    # --- one frame ---

    def faces(self, gray: np.ndarray, given: list | None) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) and probabilities (N, 7) for one gray frame."""
        started = time.perf_counter()
        if self.options.crops:
            boxes = np.array([[0, 0, gray.shape[1], gray.shape[0]]], dtype=np.int32)
        elif given is not None:  # a box off the frame is this source's error, not a confident label for a blank crop
            boxes = checked_boxes(given, gray.shape)
        else:
            boxes = self.recognizer.detector.detect(gray)
        if self.options.largest_only and len(boxes) > 1:
            areas = boxes[:, 2].astype(np.int64) * boxes[:, 3]
            boxes = boxes[[int(np.argmax(areas))]]
        classified = time.perf_counter()
        probabilities = self.recognizer.classify_boxes(gray, boxes)
        self.timings["detect"] += classified - started
        self.timings["classify"] += time.perf_counter() - classified
        return boxes, probabilities

    @staticmethod
    def _given(unit: Unit, item: SourceItem, frame: int) -> list | None:
        """Boxes from --boxes for this frame ([] when none given), or None when the detector should run."""
        return None if unit.boxes is None else unit.boxes.get(item.name, {}).get(frame, [])

    # --- units ---

    def run(self, unit: Unit) -> UnitResult:
        """Rows for any unit (the Ray engine's entry point; the local engine uses it for images)."""
        if unit.kind == "image":
            return self.run_images(unit)
        return next(iter(self.run_video([unit])))

    def run_images(self, unit: Unit) -> UnitResult:
        """Rows and ledger of one batch of images; an image that cannot be read is an error row, not a failed unit."""
        rows, ledger = RowBuffer(self.model_name, self.model_version), self._ledger()
        frames, archives = 0, {}
        try:
            for item in unit.sources:
                started = time.perf_counter()
                try:
                    gray = gray_frame(read_item_image(item, archives))
                    self.timings["decode"] += time.perf_counter() - started
                    boxes, probabilities = self.faces(gray, self._given(unit, item, 0))
                except FervidError as error:
                    ledger.add(item, unit, error=str(error))
                    continue
                rows.add(item.name, 0, 0, 0.0, range(1, len(boxes) + 1), boxes, probabilities)
                ledger.add(item, unit, frames=1, counts=expression_counts(probabilities))
                frames += 1
        finally:
            for archive in archives.values():
                archive.close()
        return UnitResult(unit, rows.table(), ledger.table(), frames, self._take_timings())

    def run_video(self, units: list[Unit], on_frames: Callable[[int], None] | None = None) -> Iterator[UnitResult]:
        """Results for consecutive segments of one video, decoded in one pass (seeking over gaps);
        ``on_frames(count)`` reports progress as frames are analysed."""
        item = units[0].sources[0]
        if units[0].error is not None:
            ledger = self._ledger()
            ledger.add(item, units[0], error=units[0].error)
            yield UnitResult(units[0], RowBuffer(self.model_name, self.model_version).table(), ledger.table(), 0, self._take_timings())
            return
        reader = VideoReader(item.path, self.options.every)
        try:
            for unit in units:
                rows, ledger = RowBuffer(self.model_name, self.model_version), self._ledger()
                tracker = FaceTracker(smoothing_s=0.0, min_hits=1, box_smoothing=0.0)  # raw rows, ids only
                frames, error, counts = 0, None, np.zeros(len(EXPRESSIONS), np.int64)
                try:
                    for index, image in reader.frames(unit.start_frame, unit.end_frame, self.timings):
                        time_s = index / unit.fps
                        boxes, probabilities = self.faces(gray_frame(image), self._given(unit, item, index))
                        faces = tracker.update(boxes, probabilities, time_s)
                        ids = [unit.segment * SEGMENT_ID_STRIDE + face.track_id for face in faces]
                        tracked = np.array([face.box for face in faces], dtype=np.int32).reshape(-1, 4)
                        tracked_probabilities = np.array([[face.probabilities[name] for name in EXPRESSIONS] for face in faces], np.float32)
                        rows.add(item.name, unit.segment, index, time_s, ids, tracked, tracked_probabilities.reshape(-1, len(EXPRESSIONS)))
                        counts += expression_counts(tracked_probabilities)
                        frames += 1
                        if on_frames is not None:
                            on_frames(1)
                except FervidError as failure:  # a seek that fails, in a damaged or variable-frame-rate file
                    error = str(failure)
                if error is None and unit.segment == 0 and frames == 0:
                    error = "not a readable video (no frame could be decoded)"
                ledger.add(item, unit, frames=frames, counts=counts, error=error, note=ended_early(reader.end, unit))
                yield UnitResult(unit, rows.table(), ledger.table(), frames, self._take_timings())
        finally:
            reader.close()

    def _ledger(self) -> LedgerBuffer:
        return LedgerBuffer(self.model_name, self.model_version)

    def _take_timings(self) -> dict[str, float]:
        taken, self.timings = self.timings, dict.fromkeys(STAGES, 0.0)
        return taken


def ended_early(end: int | None, unit: Unit) -> str | None:
    """A note when the video ended (at frame ``end``) within ``unit`` and short of its header's frame count.

    Only units that reach the real end say so, and each says the same, so the summary's note does not
    depend on --segment-s or the engine. A header count estimated from the duration can be a frame or
    two off in a healthy file; a shortfall of more than a second's worth of frames is beyond that.
    """
    if end is None or unit.frame_count is None or (unit.end_frame is not None and end >= unit.end_frame):
        return None
    if unit.frame_count - end <= max(1, round(unit.fps)):
        return None
    return f"the video ends at frame {end}, before the {unit.frame_count} frames its header gives (truncated?)"


def expression_counts(probabilities: np.ndarray) -> np.ndarray:
    """How many of the rows of ``probabilities`` (N, 7) each expression wins."""
    probabilities = np.asarray(probabilities).reshape(-1, len(EXPRESSIONS))
    return np.bincount(probabilities.argmax(axis=1), minlength=len(EXPRESSIONS)) if len(probabilities) else np.zeros(len(EXPRESSIONS), np.int64)


class LedgerBuffer:
    """Ledger rows of one unit: status, frames, faces and expression counts per source."""

    def __init__(self, model_name: str, model_version: str) -> None:
        self.model_name, self.model_version = model_name, model_version
        self.records: list[dict] = []

    def add(self, item: SourceItem, unit: Unit, *, frames: int = 0, counts: np.ndarray | None = None, error: str | None = None,
            note: str | None = None) -> None:
        counts = np.zeros(len(EXPRESSIONS), np.int64) if counts is None else counts
        self.records.append({
            "source": item.name, "kind": item.kind, "unit": unit.id, "segment": unit.segment,
            "status": "error" if error else "ok", "error": error, "note": note, "frames": frames,
            "faces": int(counts.sum()),
            **{column: int(count) for column, count in zip(COUNT_COLUMNS, counts)},
            "fingerprint": item.fingerprint, "model_name": self.model_name, "model_version": self.model_version,
            "schema_version": SCHEMA_VERSION,
        })

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.records, schema=LEDGER_SCHEMA)


def read_item_image(item: SourceItem, archives: dict | None = None) -> np.ndarray:
    """A BGR image from a file or zip member; FervidError with a one-line reason when it cannot be read."""
    if item.member is None and kind_of(item.path) == "zip":
        raise FervidError("not a readable zip file")
    try:
        data = read_source_bytes(item, archives)
    except (OSError, KeyError, ValueError) as error:
        raise FervidError(f"could not be read ({error})") from None
    except Exception as error:  # zipfile raises several types for damaged archives
        raise FervidError(f"could not be read ({type(error).__name__}: {error})") from None
    return decode_image(data)


class VideoReader:
    """Frames [start, end) of a video, decoded one at a time; frames skipped by ``every`` are grabbed, not converted.

    ``end`` becomes the frame where the file really ends once a read or seek finds it; a truncated file
    ends before the frame count in its header, which cut the segments. Frames past it are not an
    error, just none: a segment there gives no rows whether it was reached by reading (the local
    engine) or by seeking (a Ray worker).
    """

    def __init__(self, path: str, every: int) -> None:
        self.path, self.every = path, every
        self.capture: cv2.VideoCapture | None = None
        self.position = 0
        self.end: int | None = None

    def frames(self, start: int, end: int | None, timings: dict[str, float]) -> Iterator[tuple[int, np.ndarray]]:
        if self.end is None or start < self.end:
            self._seek(start)
        while (end is None or self.position < end) and (self.end is None or self.position < self.end):
            assert self.capture is not None
            started = time.perf_counter()
            index = self.position
            if index % self.every:
                ok, image = self.capture.grab(), None
            else:
                ok, image = self.capture.read()
            timings["decode"] += time.perf_counter() - started
            if not ok:
                self.end = self.position
                return
            self.position += 1
            if image is not None:
                yield index, image

    def _seek(self, frame: int) -> None:
        if self.capture is not None and self.position == frame:
            return
        if self.capture is None or frame < self.position:
            self.close()
            self.capture = open_capture(self.path)
            self.position = 0
            if self.capture is None:
                raise FervidError("not a readable video (it could not be opened)")
        if frame > self.position:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
            landed = int(self.capture.get(cv2.CAP_PROP_POS_FRAMES))
            if landed < frame and not self.capture.grab():  # the file ends before ``frame``: no frames, not an error
                self.position = self.end = landed
                return
            if landed != frame:
                raise FervidError(f"could not seek to frame {frame} (a variable-frame-rate or damaged file?)")
            self.position = frame

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None
