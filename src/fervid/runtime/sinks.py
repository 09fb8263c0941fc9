"""Where live results go: an annotated mp4, a per-frame timeline (JSONL or CSV) and a per-face summary.

Each sink writes to a temporary file and moves it into place when closed, also when the source
died mid-way or the user pressed Ctrl+C, so whatever was recorded is a complete, playable file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TextIO

import cv2
import numpy as np

from fervid.console import warn
from fervid.errors import FervidError, install_hint
from fervid.fileio import atomic_path, write_text_atomically
from fervid.labels import EXPRESSIONS, PROBABILITY_COLUMNS
from fervid.runtime.face import Face

TIMELINE_FIELDS = ("frame", "time_s", "track_id", "x", "y", "w", "h", "expression", "confidence", *PROBABILITY_COLUMNS)


class _AtomicFile:
    """A temporary path beside ``target`` that ``commit`` moves onto it, whatever happened meanwhile."""

    def __init__(self, target: Path) -> None:
        self._context: AbstractContextManager[Path] = atomic_path(target)
        self.path = self._context.__enter__()

    def commit(self) -> None:
        self._context.__exit__(None, None, None)

    def discard(self) -> None:
        error = FervidError("discarded")
        self._context.__exit__(FervidError, error, None)


class _DiscardOnError:
    """A ``with`` block that finishes the output (``close``) unless it ends in an error, which
    ``discard``s it: a failed run must not replace an earlier file with a part of its own. Ctrl+C is
    not an error here: what was written so far is kept. Subclasses define ``close`` and ``discard``."""

    close: Callable[[], None]
    discard: Callable[[], None]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is not None and issubclass(kind, Exception):
            self.discard()
        else:
            self.close()


def letterboxed(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` scaled to fit ``size`` (width, height) with its proportions kept, centred on black.

    A video has one frame size; an image folder played as one may mix sizes and orientations, and
    stretching a portrait photo to a landscape frame would distort the faces it shows."""
    width, height = size
    scale = min(width / frame.shape[1], height / frame.shape[0])
    inner = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    canvas = np.zeros((height, width, *frame.shape[2:]), dtype=frame.dtype)
    x, y = (width - inner[0]) // 2, (height - inner[1]) // 2
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[y : y + inner[1], x : x + inner[0]] = cv2.resize(frame, inner, interpolation=interpolation).reshape(inner[1], inner[0], *frame.shape[2:])
    return canvas


MP4_SIDES = (2, 8191)  # the frame sides OpenCV's MPEG-4 ("mp4v") writer opens for (measured with OpenCV 4.x)


def _frames_in(path: Path) -> int | None:
    """The frame count a just-written video's index gives, or None when it does not open."""
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else None
    finally:
        capture.release()


class VideoSink(_DiscardOnError):
    """An mp4 (codec 'mp4v') of the annotated frames; its writer opens on the first frame, ``close`` finalises it.

    Leaving the ``with`` block by an error (not Ctrl+C) discards it: a failed run must not replace
    an earlier recording with a part of its own.
    """

    def __init__(self, target: str | Path, fps: float) -> None:
        self.target = Path(target)
        if self.target.suffix.lower() not in (".mp4", ".m4v", ".mov"):
            raise FervidError(f"{self.target}: the video output must end in .mp4, .m4v or .mov")
        self.fps = fps
        self.frames = 0
        self._file: _AtomicFile | None = _AtomicFile(self.target)  # its folder is made now: fails before the run
        self._writer: cv2.VideoWriter | None = None

    def write(self, frame: np.ndarray, copies: int = 1) -> None:
        """Append ``frame`` ``copies`` times (a live source's dropped frames, so the file plays in real time)."""
        if self._file is None:
            raise FervidError(f"{self.target}: the video is already closed")
        if self._writer is None:
            height, width = frame.shape[:2]
            if not (MP4_SIDES[0] <= width <= MP4_SIDES[1] and MP4_SIDES[0] <= height <= MP4_SIDES[1]):
                self.discard()
                raise FervidError(f"{self.target}: the frames are {width}x{height} pixels, and the mp4 encoder takes "
                                  f"{MP4_SIDES[0]} to {MP4_SIDES[1]} a side; record a source of another size, or leave out --output")
            writer = cv2.VideoWriter(str(self._file.path), cv2.VideoWriter_fourcc(*"mp4v"),  # type: ignore[attr-defined]
                                     self.fps, (width, height))
            if not writer.isOpened():
                self.discard()
                raise FervidError(f"{self.target}: OpenCV could not open an mp4 writer")
            self._writer = writer
            self.size = (width, height)
        if (frame.shape[1], frame.shape[0]) != self.size:  # image folders may mix sizes
            frame = letterboxed(frame, self.size)
        for _ in range(max(1, copies)):
            self._writer.write(frame)
        self.frames += max(1, copies)

    def close(self) -> None:
        """Move the video into place; without a frame written there is no video, and ``target`` is left as it was."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            assert self._file is not None  # a writer is opened only on an open file
            # The index's count is the duration over the frame time, a frame off at times (70 for 69
            # written): a cut file does not open at all, or holds far fewer.
            written = _frames_in(self._file.path)
            if written is None or written < self.frames - max(2, round(self.fps)):
                # OpenCV's writer reports no error: a full disk left a file cut short (no index, unplayable)
                # that replaced an earlier recording, and the run said "wrote" it.
                self._file.discard()
                self._file = None
                seen = "could not be read back" if written is None else f"holds {written} of the {self.frames} frames written"
                raise FervidError(f"{self.target}: the recording {seen} (disk full, or a file size limit?); "
                                  "nothing was written over an earlier file")
            self._file.commit()
        elif self._file is not None:
            self._file.discard()
        self._file = None

    def discard(self) -> None:
        """Drop what was written and leave ``target`` as it was."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._file is not None:
            self._file.discard()
            self._file = None



class TimelineSink(_DiscardOnError):
    """One row per face per frame: frame, time_s, track_id, box, expression, confidence and all probabilities.

    ``.jsonl`` writes ``{"frame", "time_s", **Face.to_dict()}`` per line; ``.csv`` flattens the same fields.
    Leaving the ``with`` block by an error (not Ctrl+C) discards the rows and keeps an earlier file.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.format = self.target.suffix.lower().lstrip(".")
        if self.format not in ("jsonl", "csv"):
            raise FervidError(f"{self.target}: the timeline must end in .jsonl or .csv")
        self._file = _AtomicFile(self.target)
        self._handle: TextIO | None = open(self._file.path, "w", newline="")
        if self.format == "csv":
            self._csv = csv.writer(self._handle)
            self._csv.writerow(TIMELINE_FIELDS)

    def write(self, frame: int, time_s: float, faces: list[Face]) -> None:
        try:
            for face in faces:
                fields, seconds = face.to_dict(), round(time_s, 4)
                if self.format == "jsonl":
                    assert self._handle is not None  # written only between opening and close or discard
                    self._handle.write(json.dumps({"frame": frame, "time_s": seconds, **fields}) + "\n")
                else:
                    self._csv.writerow(
                        [frame, seconds, face.track_id, *face.box, face.expression, fields["confidence"]]
                        + [fields["probabilities"][name] for name in EXPRESSIONS]
                    )
        except OSError as error:
            raise self._failed(error) from None

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError as error:  # the last rows flushed to a full disk
                self._handle = None
                self._file.discard()  # its temporary file too
                raise self._failed(error) from None
            self._handle = None
            self._file.commit()

    def _failed(self, error: OSError) -> FervidError:
        """A write error that names the timeline ("fervid: error: File too large" named nothing); the
        ``with`` block it leaves discards the rows and keeps an earlier file."""
        return FervidError(f"{self.target}: could not be written ({error.strerror or error}); nothing was written over an earlier file")

    def discard(self) -> None:
        """Drop what was written and leave ``target`` as it was (a run that read no frame at all)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._file.discard()



@dataclass
class FaceHistory:
    """What one tracked face did: its times, smoothed probabilities and shown labels frame by frame."""

    track_id: int
    times: list[float] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # the expression drawn and written to the timeline

    def summary(self) -> dict:
        """Seconds on screen, share of frames per expression (the label shown, as on the video and in
        the timeline) and mean probabilities."""
        stacked = np.array(self.probabilities)
        shares = np.bincount(np.array(self.labels), minlength=len(EXPRESSIONS)) / len(self.labels)
        return {
            "track_id": self.track_id,
            "frames": len(self.times),
            "first_s": round(self.times[0], 3),
            "last_s": round(self.times[-1], 3),
            "dominant": EXPRESSIONS[int(np.argmax(shares))],
            "shares": {name: round(float(s), 4) for name, s in zip(EXPRESSIONS, shares)},
            "mean_probabilities": {name: round(float(p), 4) for name, p in zip(EXPRESSIONS, stacked.mean(axis=0))},
        }


def is_live_summary(path: Path) -> bool:
    """Whether ``path`` is a summary ``fervid live`` wrote (so the .png beside it is its plot, not a frame)."""
    try:
        return isinstance(json.loads(path.read_text()).get("faces"), list)
    except (OSError, ValueError, AttributeError):
        return False


def summary_plot_path(summary: str | Path) -> Path:
    """Where the plot of a live summary goes: beside its JSON, as ``.png``."""
    return Path(summary).with_suffix(".png")


class Summary:
    """Per-face expression shares over a video, written as JSON and as a plot PNG (when matplotlib is installed)."""

    def __init__(self, min_frames: int = 3) -> None:
        self.min_frames = min_frames  # shorter tracks are usually detector false positives
        self.faces: dict[int, FaceHistory] = {}

    def add(self, time_s: float, faces: list[Face]) -> None:
        for face in faces:
            if face.track_id is None:
                continue
            history = self.faces.setdefault(face.track_id, FaceHistory(face.track_id))
            history.times.append(time_s)
            history.probabilities.append(np.array([face.probabilities[name] for name in EXPRESSIONS], dtype=np.float32))
            history.labels.append(EXPRESSIONS.index(face.expression))

    def to_dict(self) -> list[dict]:
        kept = [history for history in self.faces.values() if len(history.times) >= self.min_frames]
        return [history.summary() for history in sorted(kept, key=lambda h: h.track_id)]

    def write_json(self, target: str | Path) -> None:
        write_text_atomically(target, json.dumps({"faces": self.to_dict()}, indent=2) + "\n")

    def write_plot(self, target: str | Path, max_faces: int = 6, *, warn_without_matplotlib: bool = True) -> bool:
        """A stacked-area plot of each face's smoothed probabilities over time (a line saying so when no
        face was followed long enough); False without matplotlib (with a note if ``warn_without_matplotlib``:
        a plot asked for, not one that would only have gone beside the outputs).

        Drawn on a ``Figure`` of its own, not through pyplot: ``run_live`` in a notebook or a GUI app must
        not switch the caller's matplotlib backend (``matplotlib.use``) or leave figures open.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:
            if warn_without_matplotlib:
                warn(f"matplotlib is not installed, so no summary plot; for one: {install_hint('data')}")
            return False
        from fervid.runtime.render import COLORS

        histories = sorted(
            (h for h in self.faces.values() if len(h.times) >= self.min_frames), key=lambda h: -len(h.times)
        )[:max_faces]
        if not histories:  # still a plot: one left by an earlier run there would show its faces as these
            figure = Figure(figsize=(9, 1.2))
            figure.text(0.5, 0.5, f"no face was followed for {self.min_frames} frames or more", ha="center", va="center")
            with atomic_path(target) as temporary:
                figure.savefig(temporary, dpi=110)
            return True
        histories.sort(key=lambda h: h.track_id)
        figure = Figure(figsize=(9, 1.9 * len(histories) + 0.6))
        axes = figure.subplots(len(histories), 1, squeeze=False, sharex=True)  # one time axis: who was there when
        colors = [tuple(c / 255 for c in COLORS[name][::-1]) for name in EXPRESSIONS]
        for axis, history in zip(axes[:, 0], histories):
            stacked = np.array(history.probabilities).T
            axis.stackplot(history.times, stacked, labels=EXPRESSIONS, colors=colors, linewidth=0)
            axis.set_ylim(0, 1)
            axis.set_ylabel(f"face #{history.track_id}")
        start, end = min(h.times[0] for h in histories), max(h.times[-1] for h in histories)
        axes[0, 0].set_xlim(start, max(end, start + 1e-3))  # shared: set once, over every face's span
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        axes[-1, 0].set_xlabel("time (s)")
        figure.suptitle("expression probabilities over time (smoothed)")
        figure.tight_layout()
        with atomic_path(target) as temporary:
            figure.savefig(temporary, dpi=110)
        return True
