"""Run units, shared by both engines: a batch of images or one video segment in, face rows and a ledger out.

Videos are decoded frame by frame and never held whole. Each segment starts a fresh ``FaceTracker``,
so the local engine (one pass over the video) and the Ray engine (one worker per segment, seeking to
its first frame) give the same rows. Track ids are therefore consistent within a segment only: a
face crossing a segment boundary gets a new ``face_id`` (see docs/batch.md, "The seam").
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import cast

import numpy as np

from fervid.analyze.inputs import SourceItem, kind_of, read_source_bytes
from fervid.analyze.options import AnalyzeOptions
from fervid.analyze.rows import LedgerBuffer, RowBuffer, expression_counts
from fervid.analyze.units import Unit, UnitResult
from fervid.analyze.video import VideoReader, video_file
from fervid.errors import FervidError
from fervid.images import decode_image, gray_frame
from fervid.labels import EXPRESSIONS
from fervid.runtime.photos import SMALL_IMAGE
from fervid.runtime.recognizer import Recognizer, box_problem, crop_doubt
from fervid.runtime.track import KEEP_ID_S, FaceTracker

SEGMENT_ID_STRIDE = 1_000_000  # face_id = segment * stride + track id, so ids are unique within a video
STAGES = ("decode", "detect", "classify", "write")


class Analyzer:
    """Turns units into rows with one ``Recognizer`` (model and cascade loaded once per process or worker)."""

    def __init__(self, options: AnalyzeOptions, recognizer: Recognizer) -> None:
        options.validate()
        self.options = options
        self.recognizer = recognizer
        self.model_name = recognizer.classifier.name
        self.model_version = recognizer.classifier.version
        self.timings = dict.fromkeys(STAGES, 0.0)
        self.skipped: list[str] = []  # why --boxes boxes were left out, since the last note was taken

    # --- one frame ---

    def faces(self, gray: np.ndarray, given: list | None, where: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) and probabilities (N, 7) for one gray frame; ``where`` ("frame 30: ") prefixes
        the reason a --boxes box is skipped."""
        started = time.perf_counter()
        if self.options.crops:
            boxes = np.array([[0, 0, gray.shape[1], gray.shape[0]]], dtype=np.int32)
        elif given is not None:
            boxes = self._usable(given, gray.shape, where)
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

    def _usable(self, given: list, shape: tuple[int, ...], where: str) -> np.ndarray:
        """The --boxes boxes that can hold a face; one off the frame (or with no area) would get a
        confident label for a blank crop, so it is left out and listed in ``self.skipped`` for the
        source's note, and the frame's other boxes, and the video's other frames, still give rows."""
        kept = []
        for box in given:
            if problem := box_problem(box, shape):
                self.skipped.append(f"{where}{problem}")
            else:
                kept.append(box)
        boxes = np.array(kept, dtype=np.int32).reshape(-1, 4)
        return boxes[np.argsort(boxes[:, 0], kind="stable")]  # left to right, as the detector's: an image's face_id 1 is leftmost

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
        rows, ledger = self._rows(), self._ledger()
        frames = 0
        archives: dict[str, zipfile.ZipFile] = {}  # path -> open zip
        try:
            for item in unit.sources:
                started = time.perf_counter()
                try:
                    gray = gray_frame(read_item_image(item, archives))
                    self.timings["decode"] += time.perf_counter() - started
                    given = self._given(unit, item, 0)
                    boxes, probabilities = self.faces(gray, given)
                except FervidError as error:
                    self.skipped.clear()
                    ledger.add(item, unit, error=str(error))
                    continue
                rows.add(item.name, 0, 0, 0.0, range(1, len(boxes) + 1), boxes, probabilities)
                notes = [self._skipped_note() or self._crop_hint(gray, boxes, given), image_frames_given(unit, item)]
                note = "; ".join(note for note in notes if note) or None
                ledger.add(item, unit, frames=1, counts=expression_counts(probabilities), note=note)
                frames += 1
        finally:
            for archive in archives.values():
                archive.close()
        return UnitResult(unit, rows.table(), ledger.table(), frames, self._take_timings())

    def _crop_hint(self, gray: np.ndarray, boxes: np.ndarray, given: list | None) -> str | None:
        """A note for a small image where the detector found no face: it is likely a cropped face, as
        a dataset's 48x48 images are, which the cascade cannot see without the frame around it; with
        --crops, a note for an image too small or too long to be a face crop."""
        if self.options.crops:
            return crop_doubt(gray.shape[1], gray.shape[0])
        if len(boxes) or given is not None or max(gray.shape[:2]) > SMALL_IMAGE:
            return None
        return "no face found in a small image; if it is a cropped face, --crops classifies the whole image"

    def run_video(self, units: list[Unit], on_frames: Callable[[int], None] | None = None) -> Iterator[UnitResult]:
        """Results for consecutive segments of one video, decoded in one pass (seeking over gaps);
        ``on_frames(count)`` reports progress as frames are analysed."""
        if units[0].error is not None:  # the video did not open while planning: one error row, no reading
            yield self._failed(units[0], units[0].error)
            return
        item = units[0].sources[0]
        with ExitStack() as stack:
            try:
                path = stack.enter_context(video_file(item.path, item.member))
            except FervidError as error:  # a video in a zip that no longer extracts (the zip changed, the disk filled)
                for unit in units:
                    yield self._failed(unit, str(error))
                return
            reader = VideoReader(path, int(self.options.every), units[0].fps, units[0].seekable, units[0].frame_count)
            stack.callback(reader.close)
            for unit in units:
                yield self._run_segment(unit, reader, on_frames)

    def _failed(self, unit: Unit, error: str) -> UnitResult:
        """A video unit that could not be read at all: one error row, no face rows."""
        ledger = self._ledger()
        ledger.add(unit.sources[0], unit, error=error)
        return UnitResult(unit, self._rows().table(), ledger.table(), 0, self._take_timings())

    def _run_segment(self, unit: Unit, reader: VideoReader, on_frames: Callable[[int], None] | None) -> UnitResult:
        """Rows and ledger of one video segment read from ``reader``, tracked from scratch (see "the seam" above).

        A failed seek is this segment's error, not the run's; a first segment without a single decoded
        frame means the file is not a readable video.
        """
        item = unit.sources[0]
        rows, ledger = self._rows(), self._ledger()
        # Raw rows, ids only; an id kept through a miss of up to a second, as live keeps it (a face the
        # detector missed for 5 analysed frames, 0.2 s at 25 fps, came back under a new id).
        tracker = FaceTracker(smoothing_s=0.0, min_hits=1, box_smoothing=0.0, label_margin=0.0, max_missed_s=KEEP_ID_S)
        frames, error, counts, seen = 0, None, np.zeros(len(EXPRESSIONS), np.int64), set()
        shape: tuple[int, ...] | None = None
        decoded = reader.decoded
        try:
            for index, time_s, image in reader.frames(unit.start_frame, unit.end_frame, self.timings):
                seen.add(index)
                shape = image.shape
                boxes, probabilities = self.faces(gray_frame(image), self._given(unit, item, index), f"frame {index}: ")
                faces = tracker.update(boxes, probabilities, time_s)
                ids = [unit.segment * SEGMENT_ID_STRIDE + cast(int, face.track_id) for face in faces]  # tracked faces have ids
                tracked = np.array([face.box for face in faces], dtype=np.int32).reshape(-1, 4)
                tracked_probabilities = np.array([[face.probabilities[name] for name in EXPRESSIONS] for face in faces], np.float32)
                rows.add(item.name, unit.segment, index, time_s, ids, tracked, tracked_probabilities.reshape(-1, len(EXPRESSIONS)))
                counts += expression_counts(tracked_probabilities)
                frames += 1
                if on_frames is not None:
                    on_frames(1)
        except FervidError as failure:  # a seek that fails, in a damaged or variable-frame-rate file
            error = str(failure)
        # decoded, not analysed: with --every 40 the first segment analyses frame 0 alone, and a video
        # whose frame 0 was damaged was called unreadable beside the rows of its other frames
        if error is None and unit.segment == 0 and reader.decoded == decoded:
            error = "not a readable video (no frame could be decoded)"
        notes = [damaged_frames(reader.damaged, unit), ended_early(reader.end, unit), self._skipped_note()]
        if self.options.crops and shape is not None:
            notes.append(crop_doubt(shape[1], shape[0]))
        if error is None:
            notes.append(unread_boxes(unit, item, seen, int(self.options.every)))
        kept_notes = [note for note in notes if note]
        ledger.add(item, unit, frames=frames, counts=counts, error=error, note="; ".join(kept_notes) or None)
        return UnitResult(unit, rows.table(), ledger.table(), frames, self._take_timings())

    def _skipped_note(self) -> str | None:
        """A note on the --boxes boxes left out since the last note (the first reason shown), or None."""
        skipped, self.skipped = self.skipped, []
        if not skipped:
            return None
        return f"{len(skipped)} box(es) from --boxes skipped, e.g. {skipped[0]}"

    def _rows(self) -> RowBuffer:
        return RowBuffer(self.model_name, self.model_version)

    def _ledger(self) -> LedgerBuffer:
        return LedgerBuffer(self.model_name, self.model_version)

    def _take_timings(self) -> dict[str, float]:
        """This unit's stage timings, starting the next unit's at zero."""
        taken, self.timings = self.timings, dict.fromkeys(STAGES, 0.0)
        return taken


def damaged_frames(damaged: set[int], unit: Unit) -> str | None:
    """A note naming the frames of ``unit`` that did not decode while later ones did (skipped, no rows)."""
    inside = sorted(frame for frame in damaged if frame >= unit.start_frame and (unit.end_frame is None or frame < unit.end_frame))
    if not inside:
        return None
    shown = ", ".join(map(str, inside[:5])) + (", ..." if len(inside) > 5 else "")
    return f"{len(inside)} damaged frame(s) skipped ({shown})"


def image_frames_given(unit: Unit, item: SourceItem) -> str | None:
    """A note when --boxes gives an image boxes for frames other than 0 (an image's only frame):
    they give no rows, which went unsaid, where a video's frames never analysed are noted."""
    frames = sorted(frame for frame in (unit.boxes or {}).get(item.name, {}) if frame != 0)
    if not frames:
        return None
    return f"--boxes gives boxes for frame {frames[0]}{' and others' if len(frames) > 1 else ''} of an image (not used: an image is frame 0, so leave frame empty)"


def unread_boxes(unit: Unit, item: SourceItem, seen: set[int], every: int) -> str | None:
    """A note on the --boxes frames of this segment that gave no rows because no such frame was
    analysed: past the video's end, damaged, or between the frames --every reads."""
    given = (unit.boxes or {}).get(item.name, {})
    missed = sorted(frame for frame in given
                    if frame >= unit.start_frame and (unit.end_frame is None or frame < unit.end_frame) and frame not in seen)
    if not missed:
        return None
    why = "past the video's end or damaged" + (f", or between the frames --every {every} reads" if every > 1 else "")
    return f"--boxes gives boxes for {len(missed)} frame(s) not analysed, e.g. frame {missed[0]} ({why})"


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


def read_item_image(item: SourceItem, archives: dict[str, zipfile.ZipFile] | None = None) -> np.ndarray:
    """A BGR image from a file or zip member; FervidError with a one-line reason when it cannot be read."""
    if item.member is None and kind_of(item.path) == "zip":
        raise FervidError("not a readable zip file")
    try:
        data = read_source_bytes(item, archives)
    except FervidError:  # its own one-line reason (a member too large to read): not "could not be read (MemberTooLarge: ...)"
        raise
    except (OSError, KeyError, ValueError) as error:
        raise FervidError(f"could not be read ({error})") from None
    except Exception as error:  # zipfile raises several types for damaged archives
        raise FervidError(f"could not be read ({type(error).__name__}: {error})") from None
    return decode_image(data)
