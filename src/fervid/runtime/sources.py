"""One ``open_source`` for webcams, video files, image folders and network streams.

Cameras and streams are read on a thread that keeps only the newest frame (a slow consumer drops
frames, it never falls behind); files are read ahead on a thread into a small queue and deliver
every frame. Captures are always released.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np

from fervid.console import warn
from fervid.errors import FervidError
from fervid.images import (FOREIGN_PHOTO_SUFFIXES, FOREIGN_PHOTO_WHY, IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_hidden, is_image_name,
                           is_photo_name, read_image, walk_files)
from fervid.runtime.sinks import is_live_summary, summary_plot_path

# FFmpeg inside OpenCV prints its own lines for broken videos ("moov atom not found"); fervid says
# what went wrong itself (one error line, the summary's note), from the Python API as from the CLI.
# OpenCV reads this as its FFmpeg backend opens the first video, so it is set before any capture;
# a level the user set is kept (OPENCV_FFMPEG_LOGLEVEL=16 shows FFmpeg's lines).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
DEFAULT_FPS = 30.0
MIN_FPS, MAX_FPS = 0.01, 1000.0  # a header outside these (0, NaN, a 90000 time base) says nothing: DEFAULT_FPS is used


def frame_rate(reported: float) -> float:
    """A video's frame rate as its header gives it, or DEFAULT_FPS where the header says nothing usable.

    Time-lapse cameras record at 1 frame in 2 s or slower: such rates are real and keep every
    ``time_s`` right (a floor of 1 fps once made a 0.5 fps video 40 s long read as 0.67 s).
    """
    return reported if MIN_FPS <= reported <= MAX_FPS else DEFAULT_FPS


TIME_DECIMALS = 6  # frame times to the microsecond


class FrameClock:
    """Each decoded frame's time in seconds, from the container's timestamp for it.

    Phones record at a variable frame rate, so ``frame / fps`` (the header's average rate) drifts
    from the real time; OpenCV gives the presentation time of the frame just read as
    ``CAP_PROP_POS_MSEC``. Where that says nothing (0 past the first frame, or not after the last
    time), the frame is placed by its number, at the header's rate, after the last stamped frame
    (``frame / fps`` where none was), so times always move forward, a constant-rate file keeps
    ``frame / fps``, and a file read straight through and one sought into get the same times.
    Times are rounded to the microsecond: the decoder's milliseconds carry float noise (frame 7 of
    a 10 fps file read as 0.7000000000000001 s), and a table filtered on ``time_s == 0.7`` found
    nothing.
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.last: float | None = None
        self.anchor: tuple[int, float | None] = (0, None)  # the last stamped frame and its time; None: frame / fps

    def reset(self) -> None:
        """Forget the last time: the next frame is not the one after it (a seek)."""
        self.last = None
        self.anchor = (0, None)

    def time(self, capture: cv2.VideoCapture, index: int) -> float:
        """The time of frame ``index``, just read from ``capture``."""
        msec = capture.get(cv2.CAP_PROP_POS_MSEC)
        stamped = msec / 1000 if math.isfinite(msec) and (msec > 0 or (msec == 0 and index == 0)) else None
        if stamped is not None and (self.last is None or stamped > self.last):
            self.anchor = (index, stamped)
            self.last = stamped
        else:
            anchored, at = self.anchor
            self.last = index / self.fps if at is None else at + (index - anchored) / self.fps
        return round(self.last, TIME_DECIMALS)


URL_TIMEOUT_S = 10.0  # how long a URL may take to open, and a read from it to answer
DAMAGED_RUN = 5  # video frames in a row that may fail to decode with decodable ones after them; one more is the end


@dataclass(frozen=True)
class Frame:
    """A BGR frame, its number in the source (gaps mean dropped frames) and its time in seconds."""

    image: np.ndarray
    index: int
    time_s: float


class Source:
    """Frames from somewhere; iterate it, then ``close`` it (or use it as a context manager)."""

    name: str = ""
    live: bool = False  # a camera or stream: frames may be dropped, time is wall-clock time
    fps: float = DEFAULT_FPS
    total: int | None = None  # frames expected, when known
    dropped: int = 0

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading and release the capture; safe to call twice."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines while probing a capture; our error is the one line users see."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def open_capture(target: int | str) -> cv2.VideoCapture | None:
    """An opened ``cv2.VideoCapture``, or None when it does not open."""
    with quiet_opencv():
        capture = cv2.VideoCapture(target)
        if capture.isOpened():
            return capture
        capture.release()
    return None


def open_url(url: str, timeout_s: float | None = None) -> cv2.VideoCapture:
    """A stream or a video at a URL, opened within ``timeout_s`` (FFmpeg's own wait is 30 s, and a
    read that stalls waits as long), with Ctrl+C working while it connects.

    OpenCV blocks in C while it connects, where Python cannot deliver Ctrl+C; so the open runs on a
    thread and this one waits for it in short steps. An open abandoned by Ctrl+C is released by its
    thread when it ends.
    """
    timeout_s = URL_TIMEOUT_S if timeout_s is None else timeout_s
    milliseconds = int(timeout_s * 1000)
    parameters = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds, cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds]
    result: list[cv2.VideoCapture] = []
    abandoned = threading.Event()

    def connect() -> None:
        with quiet_opencv():
            capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, parameters)
        if abandoned.is_set() or not capture.isOpened():
            capture.release()
            return
        result.append(capture)

    started = time.monotonic()
    thread = threading.Thread(target=connect, name="fervid-connect", daemon=True)
    thread.start()
    try:
        # FFmpeg's own timeout does not cover every step (a name lookup, some protocols): stop waiting anyway
        while thread.is_alive() and time.monotonic() - started < timeout_s + 2:
            thread.join(timeout=0.1)
    except BaseException:
        abandoned.set()
        raise
    if thread.is_alive():
        abandoned.set()  # the thread releases the capture if it still opens
    if result:
        return result[0]
    if time.monotonic() - started >= timeout_s - 0.5:
        raise FervidError(f"{url} could not be opened (no answer within {timeout_s:g} s)")
    raise FervidError(f"{url} could not be opened (a wrong address, a refused connection, or not a video)")


# OpenCV's largest indices add a backend's base to the device number (1400 + n: Media Foundation);
# beyond a C int the index was a traceback, so anything past this is refused as a typo.
MAX_CAMERA_INDEX = 99_999


def open_source(source: str | int | Path) -> Source:
    """A webcam index (0), a video or image file, a folder of images, or a stream URL (rtsp://, http://...)."""
    text = str(source).strip()
    if not text:  # an empty "$VIDEO" would otherwise be the current folder, read recursively
        raise FervidError("the source is empty: give a webcam index, a video file, an image folder or a stream URL")
    if isinstance(source, int) or _camera_index(text):
        # Not -1, OpenCV's "any camera": with no camera attached its V4L backend crashed the process (SIGSEGV).
        if not 0 <= int(text) <= MAX_CAMERA_INDEX:
            raise FervidError(f"camera {text}: cameras are numbered from 0 (0 is the first), up to {MAX_CAMERA_INDEX}")
        return LiveSource(int(text), f"camera {text}")
    if "://" in text:
        scheme = urlparse(text).scheme.lower()
        if scheme not in STREAM_SCHEMES:
            raise FervidError(f"{text}: unsupported URL scheme '{scheme}' (use one of {', '.join(STREAM_SCHEMES)})")
        capture = open_url(text)
        # A recorded video at a URL (a web server, a bucket link) has a frame count; a camera or live
        # stream has none. Read as a stream, a file would be read at network speed and all but a
        # few of its frames dropped.
        if capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0:
            return VideoFileSource(text, capture=capture)
        return LiveSource(text, text, capture=capture)
    path = Path(text).expanduser()
    if path.is_dir():
        images, videos = _folder_media(path)
        return ImageFolderSource(sorted(images, key=frame_order), str(path), videos=videos)
    if not path.exists():
        raise FervidError(f"{path}: no such file, folder or camera")
    if path.suffix.lower() == ".gif":
        return _gif_source(path)
    if path.suffix.lower() in FOREIGN_PHOTO_SUFFIXES:  # FFmpeg opened an iPhone's HEIC as a video of its first 512x512 tile
        raise FervidError(f"{path}: not a readable image ({FOREIGN_PHOTO_WHY})")
    if is_image_name(path):
        return ImageFolderSource([path], str(path))
    return VideoFileSource(path)


def _gif_source(path: Path) -> Source:
    """An animated GIF plays as the video it is (read as an image, only its first frame would be
    seen); a still GIF, or one FFmpeg cannot open, is read as an image like any photo."""
    capture = open_capture(str(path))
    if capture is not None and capture.get(cv2.CAP_PROP_FRAME_COUNT) > 1:
        return VideoFileSource(path, capture=capture)
    if capture is not None:
        capture.release()
    return ImageFolderSource([path], str(path))


def _folder_media(folder: Path) -> tuple[list[Path], list[Path]]:
    """A folder's images, the frames of a folder source, and its videos, which are not played (a
    source is one video): a folder of videos only is an error that says what to run."""
    files = [path for path in walk_files(folder) if not is_hidden(path.relative_to(folder).parts)]
    images = [path for path in files if is_photo_name(path)]  # a HEIC photo is skipped with a warning, not left out unsaid
    videos = sorted(path for path in files if path.suffix.lower() in VIDEO_SUFFIXES)
    if videos and not images:
        raise FervidError(f"{folder}: holds {len(videos)} video(s) and no images; play one with --source {videos[0]}, "
                          f"or analyse them all with fervid analyze {folder}")
    return images, videos


def _camera_index(text: str) -> bool:
    """Whether ``text`` names a webcam: ASCII digits ('²' is a digit to str.isdigit, not to int()), a
    minus sign allowed so that -1 is refused as a camera number, that are not the name of a file or
    folder here (a folder of photos called 2024 is that folder)."""
    digits = text.removeprefix("-")
    return text.isascii() and digits.isdigit() and not Path(text).exists()


def frame_order(path: Path) -> tuple:
    """Name order with numbers compared as numbers: frame_2.png plays before frame_10.png, as
    tools that number frames without leading zeros mean it (plain text order puts 10 first)."""
    return tuple((int(part), part) if part.isdecimal() else (-1, part) for part in re.split(r"(\d+)", path.as_posix()))


FAILED_READS_S = 2.0  # a camera or stream whose reads fail this long in a row has ended


class LiveSource(Source):
    """A camera or network stream read on its own thread, keeping only the latest frame."""

    live = True
    close_wait_s = 2.0  # how long ``close`` waits for a read in progress

    def __init__(self, target: int | str, name: str, *, stall_s: float = 10.0, capture: cv2.VideoCapture | None = None) -> None:
        self.name = name
        self.stall_s = stall_s
        capture = capture if capture is not None else open_capture(target)
        if capture is None:
            hint = (" (no webcam here? try --source clip.mp4 --output out.mp4 --no-display, or fervid predict photo.jpg)"
                    if isinstance(target, int) else "")
            raise FervidError(f"{name} could not be opened{hint}")
        self.capture = capture
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = frame_rate(fps)
        self._condition = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._read, name=f"fervid-capture-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        index, failing_since = 0, None
        try:
            while not self._stop.is_set():
                ok, image = self.capture.read()
                if not ok or image is None:
                    # A webcam warming up, a V4L2 read that timed out, a lossy RTSP link: one failed read
                    # ended the run. The source ends once reads have failed for FAILED_READS_S in a row.
                    failing_since = failing_since if failing_since is not None else time.monotonic()
                    if time.monotonic() - failing_since >= min(FAILED_READS_S, self.stall_s):
                        break
                    self._stop.wait(0.05)
                    continue
                failing_since = None
                with self._condition:
                    if self._latest is not None:
                        self.dropped += 1  # never consumed: the newest frame replaces it
                    self._latest = Frame(image, index, time.monotonic() - self._start)
                    self._condition.notify()
                index += 1
        finally:
            with self._condition:
                self._ended = True
                self._condition.notify_all()
            if self._stop.is_set():
                self.capture.release()  # close() gave it to this thread: no read is running now

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._condition:
                if not self._condition.wait_for(lambda: self._latest is not None or self._ended, timeout=self.stall_s):
                    warn(f"{self.name}: no frame for {self.stall_s:.0f} s, stopping")
                    return
                frame, self._latest = self._latest, None
            if frame is None:  # the capture gave no more frames: on a server, say so (the camera or stream died)
                warn(f"{self.name}: the stream ended (no more frames)")
                return
            yield frame

    def close(self) -> None:
        """Stop the reader; release the capture here only when no read is running: releasing it under
        a read that a stalled stream keeps blocked can crash OpenCV (the reader then releases it)."""
        self._stop.set()
        self._thread.join(timeout=self.close_wait_s)
        if not self._thread.is_alive():
            self.capture.release()


class VideoFileSource(Source):
    """Every frame of a video file, decoded ahead on a thread into a small queue."""

    def __init__(self, path: Path | str, *, read_ahead: int = 4, capture: cv2.VideoCapture | None = None) -> None:
        """``capture``: one already open (a video at a URL, opened by ``open_url``, or an animated
        GIF); else ``path`` is opened."""
        self.name = str(path)
        self.remote = "://" in self.name  # read over a network: a read that times out is a dead link
        capture = capture if capture is not None else open_capture(str(path))
        if capture is None:
            empty = not self.remote and Path(path).is_file() and Path(path).stat().st_size == 0
            raise FervidError(f"{path}: {'empty file (0 bytes)' if empty else 'not a readable video or image'}")
        self.capture = capture
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = frame_rate(fps)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total = count if count > 0 else None
        # A damaged first frame is skipped like any other (up to DAMAGED_RUN in a row): the whole
        # file was refused for it, where OpenCV decodes the frames after it.
        first_index, (ok, first) = 0, self.capture.read()
        while (not ok or first is None) and not self.remote and first_index < DAMAGED_RUN:
            first_index += 1
            ok, first = self.capture.read()
        if not ok or first is None:
            self.capture.release()
            raise FervidError(f"{path}: not a readable video (no frame could be decoded)")
        for number in range(first_index):
            warn(f"{self.name}: frame {number} could not be decoded (damaged?), skipped")
        self.first_index = first_index
        self.clock = FrameClock(self.fps)
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=read_ahead)
        self._queue.put(Frame(first, first_index, self.clock.time(self.capture, first_index)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="fervid-video-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        """Decode frames into the queue, each with its time (``FrameClock``). A damaged frame fails to
        decode and FFmpeg goes on with the next: up to ``DAMAGED_RUN`` failures in a row are skipped
        with a note (frame numbers and times stay the file's), one more is the end of the file."""
        index, failed = self.first_index, []
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                ok, image = self.capture.read()
                index += 1
                if not ok or image is None:
                    if self.remote and time.monotonic() - started >= 0.8 * URL_TIMEOUT_S:  # a dead link, not damage
                        warn(f"{self.name}: no data for {URL_TIMEOUT_S:g} s, stopping")
                        break
                    failed.append(index)
                    if len(failed) > DAMAGED_RUN:
                        break
                    continue
                for number in failed:
                    warn(f"{self.name}: frame {number} could not be decoded (damaged?), skipped")
                failed = []
                frame = Frame(image, index, self.clock.time(self.capture, index))
                while not self._stop.is_set():
                    try:
                        self._queue.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            end = failed[0] if failed else None  # the first frame that did not come: where the file ended
            if not self._stop.is_set() and end is not None and self.total and self.total - end > max(1, round(self.fps)):
                # as analyze notes it: a header count estimated from the duration can be a frame or two off
                warn(f"{self.name}: the video ends at frame {end}, before the {self.total} frames its header gives (truncated?)")
        finally:
            self._put_end()
            if self._stop.is_set():
                self.capture.release()  # close() gave it to this thread: no read is running now

    def _put_end(self) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(None, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self._queue.get()) is not None:
            yield frame

    def close(self) -> None:
        """Stop the reader; release the capture here only when no read is running (a read from a URL
        can block for seconds, and releasing under it can crash OpenCV): else the reader releases it."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self.capture.release()


class ImageFolderSource(Source):
    """Image files as frames, in name order; unreadable ones are skipped with a warning (a lone one is the error)."""

    def __init__(self, paths: list[Path], name: str, videos: list[Path] | None = None) -> None:
        if not paths:
            raise FervidError(f"{name}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
        self.paths = paths
        self.name = name
        self.total = len(paths)
        self.videos = videos or []  # in the folder but not played: named in a warning when playing starts

    def skip(self, outputs: list[str | Path]) -> None:
        """Leave out this run's outputs and earlier runs' summary plots that sit among the images.

        A ``x.png`` is a summary plot when a live summary ``x.json`` (``{"faces": [...]}``) is beside
        it. This run's plot that would land on an image without one is an input, and is refused.
        """
        own = {Path(path).expanduser().resolve() for path in outputs}
        images = {path.resolve() for path in self.paths}
        for summary in [path for path in own if path.suffix.lower() == ".json"]:
            plot = summary_plot_path(summary)
            if plot in images and not is_live_summary(summary):
                raise FervidError(f"{plot}: one of the source's images, which the summary's plot would replace; "
                                  "give --summary another name")
            own.add(plot)
        own |= {image for image in images if image.suffix.lower() == ".png" and is_live_summary(image.with_suffix(".json"))}
        kept = [path for path in self.paths if path.resolve() not in own]
        if not kept:
            raise FervidError(f"{self.name}: no images found besides this run's own outputs")
        self.paths, self.total = kept, len(kept)
        self.videos = [path for path in self.videos if path.resolve() not in own]  # a rerun's own recording

    def __iter__(self) -> Iterator[Frame]:
        if self.videos:
            warn(f"{self.name}: its {len(self.videos)} video(s) are not played, only its images "
                 f"(play one with --source {self.videos[0]})")
        for index, path in enumerate(self.paths):
            try:
                image = read_image(path)
            except FervidError as error:
                if self.total == 1:  # one image that cannot be read: its own error, not a note and then another
                    raise
                warn(f"{error}, skipped")
                continue
            yield Frame(image, index, index / self.fps)
