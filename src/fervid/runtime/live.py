"""The live loop: frames from a source -> detect (every k-th frame) -> classify -> track -> render -> sinks."""

from __future__ import annotations

import functools
import importlib.util
import numbers
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from fervid.console import plural, progress, warn
from fervid.checks import Whole, is_number
from fervid.errors import FervidError
from fervid.fileio import NAME_BYTES, atomic_path, check_writable, cut_to_bytes, remove_temporaries, signals_deferred
from fervid.images import is_hidden
from fervid.runtime.recognizer import Recognizer
from fervid.runtime.render import annotate
from fervid.runtime.sinks import Summary, TimelineSink, VideoSink, is_live_summary, summary_plot_path
from fervid.runtime.pipeline import DETECT_EVERY, FrameProcessor
from fervid.runtime.sources import Frame, ImageFolderSource, open_source

WINDOW = "fervid (q or Esc quits)"
QUIT_KEYS = (ord("q"), ord("Q"), 27)


# Opens and closes a window in a child process: OpenCV's Qt aborts the whole process (SIGABRT, no
# exception to catch) when the display it is given cannot be opened.
WINDOW_PROBE = "import cv2; cv2.namedWindow('fervid'); cv2.waitKey(1); cv2.destroyAllWindows()"
PROBE_TIMEOUT_S = 15.0


@functools.cache
def display_problem() -> str | None:
    """Why no window can be shown here, or None: on Linux, no desktop session, or one whose display
    cannot be opened (a stale DISPLAY over SSH or in a container, or Wayland without XWayland, which
    OpenCV's Qt cannot use): either would have aborted the process, its outputs lost. A window is
    assumed possible on macOS and Windows."""
    if not sys.platform.startswith("linux") or getattr(sys, "frozen", False):  # frozen: no Python to probe with
        return None
    where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not where:
        return "no display here (DISPLAY and WAYLAND_DISPLAY are not set)"
    try:
        probe = subprocess.run([sys.executable, "-c", WINDOW_PROBE], capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"the display {where} did not answer within {PROBE_TIMEOUT_S:.0f} s"
    if b"not implemented" in probe.stderr:  # opencv-python-headless: no GUI at all
        return "this OpenCV build cannot open windows"
    if probe.returncode != 0:
        return f"the display {where} cannot be opened"
    return None


class FpsMeter:
    """Frames per second over the last ``window`` frames, measured (not guessed) with a monotonic clock."""

    def __init__(self, window: int = 30) -> None:
        self.stamps: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        self.stamps.append(time.perf_counter())
        if len(self.stamps) < 2:
            return 0.0
        return (len(self.stamps) - 1) / max(self.stamps[-1] - self.stamps[0], 1e-9)


@dataclass
class LiveReport:
    """What a run did: frames processed and dropped, faces found over all frames (one timeline row
    each, whether or not a timeline is written), average FPS, and the summary per face."""

    source: str
    frames: int = 0
    dropped: int = 0
    rows: int = 0
    seconds: float = 0.0
    faces: list[dict] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    interrupted: bool = False  # Ctrl+C (or SIGTERM through the CLI) stopped it; the outputs are finished
    shown: bool = False  # a window showed the frames

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> list[str]:
        """Lines for the end of a run: frames and speed, each face's time span and main expressions
        (those over 5% of its frames), and the files written."""
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        lines = [f"{plural(self.frames, 'frame')} in {self.seconds:.1f} s ({self.fps:.1f} FPS){dropped}; "
                 f"{plural(self.rows, 'face box', 'face boxes')}"]
        for face in self.faces:
            shares = sorted(face["shares"].items(), key=lambda kv: -kv[1])
            main = ", ".join(f"{name} {share:.0%}" for name, share in shares if share >= 0.05)
            lines.append(f"face #{face['track_id']}: {face['first_s']:.1f}-{face['last_s']:.1f} s, {face['dominant']} "
                         f"({main} of its frames)")
        if not self.outputs and not self.shown:  # a headless run over a whole file, and nothing to show for it
            lines.append("nothing was saved: add --output out.mp4 (annotated video), --jsonl out.jsonl (timeline) "
                         "or --summary s.json")
        return lines + [f"wrote {path}" for path in self.outputs]


def run_live(
    source: str | int | Path,
    recognizer: Recognizer,
    *,
    output: str | Path | None = None,
    timeline: str | Path | None = None,
    summary: str | Path | None = None,
    display: bool | None = None,
    max_frames: Whole | None = None,
    detect_every: Whole = DETECT_EVERY,
    draw: bool = True,
) -> LiveReport:
    """Recognise expressions on every frame of ``source``; write the requested outputs; return a report.

    ``display=None`` shows a window when a display exists. ``summary`` (a .json path; a .png plot is
    written beside it) defaults to beside ``output`` or ``timeline`` for video files and folders.
    """
    if not isinstance(recognizer, Recognizer):  # None failed part-way into the first frame
        raise FervidError(f"recognizer must be a fervid.Recognizer, got {type(recognizer).__name__}")
    if max_frames is not None and not (is_number(max_frames, numbers.Integral) and max_frames >= 1):  # "3" raised TypeError, 2.5 ran 3 frames
        raise FervidError(f"max_frames (--max-frames) must be a whole number, 1 or more, got {max_frames!r}")
    # ~ expanded as the checks read it, so each output goes where it was checked (--jsonl=~/t.jsonl,
    # which the shell leaves alone, was checked in the home folder and written in ./~)
    output, timeline, summary = (None if path is None else Path(path).expanduser() for path in (output, timeline, summary))
    processor = FrameProcessor(recognizer, detect_every=detect_every)
    _check_outputs(source, output, timeline, summary=summary)
    if summary is not None and Path(summary).suffix.lower() != ".json":  # its plot goes beside it as .png
        raise FervidError(f"{summary}: the summary is JSON (its plot is written beside it as .png); give a path ending in .json")
    # What a killed run (SIGKILL, a power loss) left beside these outputs: the recording's temporary
    # grows with the recording, and nothing else would ever remove it. A second run writing the same
    # outputs at this moment loses its temporary and fails at its end; the outputs stay whole.
    default_summary = _default_summary(output, timeline, summary)  # as given, else beside the first file output
    for path in (output, timeline, default_summary, default_summary and summary_plot_path(default_summary)):
        if path:
            target = Path(path).expanduser()
            remove_temporaries(target.parent, of=target)
    show = display is not False
    if show and (problem := display_problem()):  # OpenCV's Qt would abort the process, outputs and all
        if display or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):  # a window was expected
            warn(f"{problem}; running headless")
        show = False
    fps_meter = FpsMeter()
    history = Summary()
    with ExitStack() as finishing:  # closes last: see below
        with ExitStack() as stack:
            frames = stack.enter_context(open_source(source))
            report = LiveReport(frames.name)
            if summary is None and not frames.live:  # the summary goes beside the outputs: refused now, not at the end
                _check_outputs(source, summary=default_summary)
            if isinstance(frames, ImageFolderSource):
                # a rerun must not read the plot or annotated frames of the last one as frames
                frames.skip([path for path in (output, timeline, default_summary) if path])
            # a still, a 1-frame clip, or --max-frames 1: no next frame to confirm a face on (a clip cut
            # to its first frame gave no faces at all)
            def confirm_on_one_frame() -> None:
                processor.tracker.min_hits = history.min_frames = 1

            if (frames.total == 1 or max_frames == 1) and not frames.live:
                confirm_on_one_frame()
            # The timeline first, so that it closes last: a recording refused when it is read back
            # (a full disk) then leaves the timeline as it was too, not replaced by this run's.
            rows = stack.enter_context(TimelineSink(timeline)) if timeline else None
            video = stack.enter_context(VideoSink(output, frames.fps)) if output else None
            if show:
                stack.callback(cv2.destroyAllWindows)
            total = frames.total if max_frames is None or frames.total is None else min(frames.total, int(max_frames))
            if frames.live:
                iterator: Iterator[Frame] = iter(frames)
            else:  # a file that does not say how many frames it has may still hold one (a photo named .mp4)
                played = single_frame_seen(frames, confirm_on_one_frame) if frames.total is None else frames
                iterator = progress(played, total, f"{Path(frames.name).name}")
            started = time.perf_counter()
            first_s: float | None = None  # the first frame's time; the recording keeps the source's timing from it
            written = 0  # frames written to the recording, copies included
            last = None  # the last frame written, to fill the recording up to the next frame's time
            try:
                for frame in iterator:
                    faces = processor.process(frame)
                    fps = fps_meter.tick()
                    history.add(frame.time_s, faces)
                    report.rows += len(faces)
                    if rows:
                        rows.write(frame.index, frame.time_s, faces)
                    if draw and (video or show):
                        annotate(frame.image, faces, fps if frames.live or show else None)
                    if video:
                        if first_s is None:  # a file's frames that did not decode before this one: its copies stand in
                            lead = 0 if frames.live else frame.index
                            first_s = frame.time_s - lead / frames.fps
                            if lead:
                                video.write(frame.image, lead)
                                written += lead
                        slot = _slot(frame.time_s - first_s, frames.fps)
                        if slot >= written:  # else its slot is taken: left out, but a gap after it shows it
                            if last is not None and slot > written:
                                video.write(last, slot - written)
                            video.write(frame.image)
                            written = slot + 1
                        last = frame.image
                    report.frames += 1
                    if show:
                        shown = _show(frame.image)
                        if shown == "quit":
                            break
                        show = shown == "shown"  # no window could be opened: carry on headless
                    if max_frames is not None and report.frames >= max_frames:
                        break
            except KeyboardInterrupt:
                warn("interrupted; finishing the outputs")
                report.interrupted = True
            finally:
                report.seconds = time.perf_counter() - started
                report.dropped = frames.dropped
                report.shown = show
            # From here the outputs are finished (the recording and timeline closed, the summary and its
            # plot written) with Ctrl+C held back: a second one there left a new summary beside the
            # last run's plot. ``finishing`` closes after ``stack``, so it covers the sinks' closing.
            caught = finishing.enter_context(signals_deferred(raise_after=False))
            if report.frames == 0:
                if rows:
                    rows.discard()  # an empty timeline must not replace the one a previous run wrote there
                if report.interrupted:  # stopped while waiting for the first frame: nothing to finish
                    raise KeyboardInterrupt
                raise FervidError(f"{report.source}: no frame could be read")
            report.faces = history.to_dict()
            report.outputs = [str(path) for path in (output, timeline) if path]
            asked = summary is not None  # --summary given: a plot it cannot draw is worth a warning; a default one is not
            if summary is None and not frames.live:
                summary = default_summary
            # The summary and its plot are written now, into temporaries that ``finishing`` moves into
            # place only after the recording and timeline are: a summary that cannot be written (a
            # full disk, a folder made read-only) then leaves all of them as they were, and a
            # recording refused at its close leaves the summary too, never one run's beside another's.
            drawn = earlier_plot = False
            if summary is not None:
                summary = Path(summary)
                plot = summary_plot_path(summary)
                earlier_plot = plot.exists() and is_live_summary(summary)  # an earlier run's, beside its summary
                history.write_json(finishing.enter_context(atomic_path(summary)))
                if importlib.util.find_spec("matplotlib") is None:
                    history.write_plot(plot, warn_without_matplotlib=asked)  # only its note: nothing is drawn
                else:
                    drawn = history.write_plot(finishing.enter_context(atomic_path(plot)), warn_without_matplotlib=asked)
    if summary is not None:  # all in place now
        report.outputs.append(str(summary))
        if drawn:
            report.outputs.append(str(plot))
        elif earlier_plot:  # no plot this time (no matplotlib): the old one would describe other faces
            plot.unlink(missing_ok=True)
    if caught:  # a second Ctrl+C while finishing: the outputs are whole, and the run says it was cut short
        report.interrupted = True
    return report


def single_frame_seen(frames: Iterable[Frame], on_single: Callable[[], None]) -> Iterator[Frame]:
    """``frames``, read one frame ahead at the start: ``on_single`` is called before the first frame is
    given when there is no second. A face needs two frames in a row to be confirmed, so a source of
    unknown length holding a single frame (a photo named .mp4) reported no face at all."""
    ahead = iter(frames)
    first = next(ahead, None)
    if first is None:
        return
    second = next(ahead, None)
    if second is None:
        on_single()
    yield first
    if second is not None:
        yield second
        yield from ahead


def _default_summary(output: str | Path | None, timeline: str | Path | None, summary: str | Path | None) -> Path | None:
    """The summary path: as given, else beside the first file output (``out.mp4`` -> ``out-summary.json``),
    its stem cut to fit a file name (a legal 255-byte ``--output`` failed on its 264-byte summary)."""
    if summary is not None:
        return Path(summary)
    if not (given := output or timeline):
        return None
    first = Path(given)
    tail = "-summary.json"
    return first.with_name(cut_to_bytes(first.stem, NAME_BYTES - len(tail)) + tail)


def _slot(elapsed_s: float, fps: float) -> int:
    """The recording's frame number for a frame that came ``elapsed_s`` after the first, at ``fps``.

    Each frame goes to its own slot and a gap is filled with the frame before it, so the recording
    keeps the source's timing and length whatever was missing: frames a camera or stream dropped, or
    time it sent nothing (a stall, or an MJPEG camera slower than the 25 fps FFmpeg assumes for it),
    a video's damaged frames, a folder's unreadable images. A frame whose slot an earlier one took
    (a variable-frame-rate video's faster stretch, a header rate under the real one) is left out of
    the recording: written after the frame before, it put a phone clip's 30 fps stretch 1.3 s behind
    its audio by the next 15 fps one.
    """
    return round(elapsed_s * fps)


def _check_outputs(source: str | int | Path, *outputs: str | Path | None, summary: str | Path | None = None) -> None:
    """Refuse, before the first frame, an output that is a folder, inside a file, or the source file itself.

    The source: the annotated copy would replace the original video. A folder or a file in its
    path: the summary is written last, so it would fail only after the whole run. A summary's plot
    (``.png`` beside it) is checked with it.
    """
    path = Path(str(source)).expanduser()

    def check(output: str | Path) -> None:
        check_writable(output)
        if path.is_file() and Path(output).expanduser().resolve() == path.resolve():
            raise FervidError(f"{output}: is the --source itself, which would be overwritten; write the output elsewhere")

    if summary is not None:
        summary = Path(summary)
        outputs += (summary,)
    for output in outputs:  # the summary too, before its plot is looked at: a name too long is refused here
        if output is not None:
            check(output)
    if summary is not None and summary.suffix.lower() == ".json":
        plot = summary_plot_path(summary)
        if plot.is_file() and not is_live_summary(summary) and not _read_by_folder(path, plot):
            # the plot is never named by the user: only an earlier run's is replaced
            raise FervidError(f"{plot}: exists and is not the plot of a fervid live summary ({summary.name} beside it); "
                              "the summary's plot would replace it: give another --summary, or move it")
        check(plot)


def _read_by_folder(source: Path, plot: Path) -> bool:
    """Whether ``plot`` is one of the images a folder ``source`` reads: that source refuses it with its
    own message (one of the source's images); a hidden one it does not read is checked here."""
    if not source.is_dir() or not plot.resolve().is_relative_to(source.resolve()):
        return False
    return not is_hidden(plot.resolve().relative_to(source.resolve()).parts)


def _show(image) -> str:
    """Show a frame: 'shown', 'quit' (q, Esc or the window closed) or 'unavailable' (no GUI in this OpenCV)."""
    try:
        cv2.imshow(WINDOW, image)
        key = cv2.waitKey(1) & 0xFF
        if key in QUIT_KEYS or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            return "quit"
        return "shown"
    except cv2.error:
        warn("this OpenCV build cannot open windows; running headless (use --no-display to silence this)")
        return "unavailable"
