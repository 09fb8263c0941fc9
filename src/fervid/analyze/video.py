"""Video files for batch analysis: the header's frame rate and count for planning, and frame ranges decoded one at a time."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import PurePosixPath

import cv2
import numpy as np

from fervid.errors import FervidError
from fervid.runtime.sources import DAMAGED_RUN, FrameClock, frame_rate, open_capture


STEADY_RUNS = ((0.0, 60), (0.25, 30), (0.5, 30), (0.75, 30))  # (where, as a share of the video; frames read there)
STEADY_TOLERANCE = 0.1  # a frame's time may differ from one frame period after the last by this share of a period
EXTRACT_ROOM = 256 << 20  # what a video extracted from a zip must leave free on the temporary disk
EXTRACT_CHUNK = 1 << 20
# Every error of a video that could not be extracted starts so: the unit is analysed again by the next
# run (ResultStore.completed), since the cause (a full disk, copies of other workers) may be gone.
EXTRACT_FAILED = "not extracted from its zip"
COPY_PREFIX = "fervid-video-"  # then host-pid-: what a later run may sweep once that process is gone
_swept: set[str] = set()  # temporary folders swept by this process


@contextmanager
def video_file(path: str, member: str | None = None) -> Iterator[str]:
    """A path OpenCV can open for a video: ``path`` itself, or for a video inside a zip (``member``)
    the member extracted to a temporary file, deleted when the block ends. FFmpeg decodes files, not
    a zip's streams, and an archive of interview recordings is as common as a folder of them; each
    reader extracts its own copy (planning once, then the local engine once per video, a Ray worker
    once per segment), so nothing is shared between processes or machines.

    FervidError with a one-line reason, starting with ``EXTRACT_FAILED``, when it cannot be extracted:
    the zip is damaged or changed, the member is encrypted, or the temporary disk (``TMPDIR``) lacks
    room for it, checked from the size the zip declares before anything is written (``zipfile``
    unpacks no more than that size, and a member whose data runs past it fails its CRC check: a zip
    bomb cannot fill the disk). A copy is named for its host and process: one left by a process that
    was killed (SIGKILL, or a Ray worker stopped by Ctrl+C) is deleted by the next extraction on
    that host (``sweep_copies``)."""
    if member is None:
        yield path
        return
    target = _extract(path, member)
    try:
        yield target
    finally:
        with suppress(OSError):
            os.unlink(target)


def _host() -> str:
    """This host's name in letters, digits and dots (no dash: it ends the name in a copy's): a shared
    TMPDIR holds other hosts' copies, whose processes this one cannot see."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _copy_owner() -> str:
    return f"{_host()}-{os.getpid()}-"


def sweep_copies(folder: str | None = None) -> int:
    """Delete the video copies in ``folder`` (the temporary folder by default) left by processes of
    this host that are gone; returns how many. A live process's copies, and other hosts', stay."""
    folder = folder or tempfile.gettempdir()
    mine = f"{COPY_PREFIX}{_host()}-"
    swept = 0
    try:
        names = [name for name in os.listdir(folder) if name.startswith(mine)]
    except OSError:
        return 0
    for name in names:
        pid = name[len(mine):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        with suppress(OSError):
            os.unlink(os.path.join(folder, name))
            swept += 1
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _extract(path: str, member: str) -> str:
    folder = tempfile.gettempdir()
    if folder not in _swept:  # once per process and folder: copies of killed runs would fill the disk
        _swept.add(folder)
        sweep_copies(folder)
    try:
        with zipfile.ZipFile(path) as archive:
            size = archive.getinfo(member).file_size
            free = shutil.disk_usage(folder).free
            if size + EXTRACT_ROOM > free:
                mib = 1 << 20
                raise FervidError(f"{EXTRACT_FAILED}: it needs {(size + EXTRACT_ROOM) / mib:,.0f} MiB free in {folder} "
                                  f"(its {size / mib:,.0f} MiB and {EXTRACT_ROOM / mib:,.0f} MiB to spare), which has "
                                  f"{free / mib:,.0f} MiB (set TMPDIR to a disk with room, or extract it); the next run tries again")
            suffix = PurePosixPath(member.replace("\\", "/")).suffix
            handle, target = tempfile.mkstemp(suffix=suffix, prefix=f"{COPY_PREFIX}{_copy_owner()}", dir=folder)
            try:
                with os.fdopen(handle, "wb") as out, archive.open(member) as source:
                    shutil.copyfileobj(source, out, EXTRACT_CHUNK)
            except BaseException:
                with suppress(OSError):
                    os.unlink(target)
                raise
            return target
    except FervidError:
        raise
    except Exception as error:  # zipfile raises several types for damaged archives; OSError for a full disk
        raise FervidError(f"{EXTRACT_FAILED} ({type(error).__name__}: {error}); the next run tries again") from None


def video_probe(path: str) -> tuple[float, int | None]:
    """(fps, frame count or None) of a video; FervidError with the reason when it does not open."""
    if os.path.getsize(path) == 0:
        raise FervidError("empty file (0 bytes)")
    capture = open_capture(path)
    if capture is None:
        raise FervidError("not a readable video (it could not be opened; truncated or not a video?)")
    try:
        fps = frame_rate(capture.get(cv2.CAP_PROP_FPS))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return fps, (count if count > 0 else None)


def video_is_steady(path: str, fps: float, count: int | None) -> bool:
    """Whether the frames are one period apart (a constant frame rate), so that seeking to a frame
    number lands on that frame. In a variable-frame-rate file (phones) OpenCV turns the number into a
    time at the average rate and lands on another frame: such a file is planned as one unit, read
    straight through, or a Ray worker would analyse other frames than the local engine under the
    same numbers. Judged from runs of frames at the start and at a quarter, half and three quarters
    of the file (a seek by time lands somewhere there; consecutive frames from it show the rate): a
    rate that varies only between those places goes unseen.
    """
    capture = open_capture(path)
    if capture is None:
        raise FervidError("not a readable video (it could not be opened; truncated or not a video?)")
    try:
        return _steady(capture, fps, count or 0)
    finally:
        capture.release()


def _steady(capture: cv2.VideoCapture, fps: float, count: int) -> bool:
    period_ms = 1000 / fps
    diffs: list[float] = []
    for where, frames in STEADY_RUNS:
        if where:
            if count <= 0:
                break
            capture.set(cv2.CAP_PROP_POS_MSEC, where * count * period_ms)
        stamps = []
        for _ in range(frames):
            if not capture.grab():
                break
            stamps.append(capture.get(cv2.CAP_PROP_POS_MSEC))
        diffs.extend(np.diff(stamps))
    gaps = np.asarray(diffs)
    gaps = gaps[gaps > 0]  # a file without timestamps reports 0 throughout: frame / fps is all there is
    return bool(len(gaps) == 0 or np.abs(gaps - period_ms).max() <= STEADY_TOLERANCE * period_ms)


class VideoReader:
    """Frames [start, end) of a video, decoded one at a time; frames skipped by ``every`` are grabbed, not converted.

    ``end`` becomes the frame where the file really ends once a read or seek finds it; a truncated file
    ends before the frame count in its header, which cut the segments. Frames past it are not an
    error, just none: a segment there gives no rows whether it was reached by reading (the local
    engine) or by seeking (a Ray worker). A damaged frame does not decode but FFmpeg goes on with the
    next: failures short of the header's frame count (``count``; without one, up to ``DAMAGED_RUN``
    in a row) are skipped and listed in ``damaged``, so bad frames in an archived video cost those
    frames, not the rest of the video.
    """

    def __init__(self, path: str, every: int, fps: float, seekable: bool = True, count: int | None = None) -> None:
        self.path, self.every, self.seekable = path, every, seekable  # not seekable: read up to a frame, never jump
        self.count = count  # the header's frame count: a run of failures short of it is damage, not the end
        self.clock = FrameClock(fps)  # a frame's time from its timestamp: right for variable-frame-rate files too
        self.capture: cv2.VideoCapture | None = None
        self.position = 0
        self.end: int | None = None
        self.damaged: set[int] = set()  # frames that did not decode but had decodable frames after them
        self.failed: list[int] = []  # the frames read since the last one that decoded, all failed
        self.decoded = 0  # frames read that decoded (analysed or only grabbed)

    def frames(self, start: int, end: int | None, timings: dict[str, float], analyse: bool = True) -> Iterator[tuple[int, float, np.ndarray]]:
        """(frame number, time in seconds, BGR image) for each analysed frame in [start, end); decoding
        time is added to ``timings``. ``analyse=False`` only moves through them (grabbed, not converted)."""
        if self.end is None or start < self.end:
            self._seek(start)
        elif self.seekable and start > self.end:
            self._past_the_end(start)
        while (end is None or self.position < end) and (self.end is None or self.position < self.end):
            assert self.capture is not None
            started = time.perf_counter()
            index = self.position
            if index % self.every or not analyse:
                ok, image = self.capture.grab(), None
            else:
                ok, image = self.capture.read()
            timings["decode"] += time.perf_counter() - started
            self.position += 1
            if not ok:
                self.failed.append(index)
                if self._ended():  # the end of the file (or of what of it is readable)
                    self.end = self.failed[0]
                    return
                continue
            self.damaged.update(self.failed)  # a frame decoded after them: they were damaged, not the end
            self.failed = []
            self.decoded += 1
            time_s = self.clock.time(self.capture, index)  # skipped frames too: the clock counts on from them
            if image is not None:
                yield index, time_s, image
        if analyse and self.failed and self.end is None:
            self._read_ahead(timings)

    def _read_ahead(self, timings: dict[str, float]) -> None:
        """The segment ended on frames that failed: read on until one decodes (they were damaged, and
        this segment's note says so) or the run of failures is too long (the end). Decided here, not
        by the next segment, which a Ray worker reads without knowing of them: frames 28-29 damaged
        before a segment starting at 30 went unnoted, and the note differed with --segment-s."""
        assert self.capture is not None
        while self.failed and self.end is None:
            started = time.perf_counter()
            ok = self.capture.grab()
            timings["decode"] += time.perf_counter() - started
            if ok:
                self.damaged.update(self.failed)
                self.failed = []
            else:
                self.failed.append(self.position)
                if self._ended():
                    self.end = self.failed[0]
            self.position += 1

    def _ended(self) -> bool:
        """Whether the failed frames since the last good one are the end: more than ``DAMAGED_RUN``
        of them, reaching the header's frame count where it gives one. Short of the count they are
        damage: ending there made the rows depend on --segment-s (a later segment's seek reached
        frames a straight read had given up on) and dropped the frames after a long damaged run."""
        return len(self.failed) > DAMAGED_RUN and (self.count is None or self.position >= self.count)

    def _past_the_end(self, start: int) -> None:
        """A run of failed frames ended an earlier segment: this later one is read if a checked jump
        reaches it, as a Ray worker, which starts at this segment, reads it (and where the jump fails,
        its read from the start meets the same run, and ends there too)."""
        if self.capture is None:
            self.capture = open_capture(self.path)
            if self.capture is None:
                raise FervidError("not a readable video (it could not be opened)")
        self.clock.reset()
        if self._jump(start):
            self.position, self.end, self.failed = start, None, []

    def _seek(self, frame: int) -> None:
        if self.capture is not None and self.position == frame:
            return
        self.failed = []  # failures before a jump are not known to be followed by a decodable frame
        self.clock.reset()
        if self.capture is None or frame < self.position:
            self._reopen()
        if frame > self.position and self.seekable:
            if self._jump(frame):
                self.position = frame
                return
            self._reopen()  # where the capture stands is not known: from the start
        if frame > self.position:  # decode up to it (grab only), as a straight read would
            for _ in self.frames(self.position, frame, {"decode": 0.0}, analyse=False):
                pass

    def _reopen(self) -> None:
        """The video opened again, at its first frame."""
        self.close()
        self.capture = open_capture(self.path)
        self.position = 0
        if self.capture is None:
            raise FervidError("not a readable video (it could not be opened)")

    def _jump(self, frame: int) -> bool:
        """Seek to ``frame`` and check that it is there: its timestamp one period per frame from the
        start. After a damaged frame OpenCV reports the frame number asked for while standing on
        another (frame 30 held frame 44, 1.4 s later), or stops short (at 96 for 120) as at the end of
        the file: a Ray worker took frame 44's face for frame 30's, or dropped its segment as
        truncated. False: read up to the frame instead, as the local engine does, counting the same."""
        assert self.capture is not None
        self.capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        if int(self.capture.get(cv2.CAP_PROP_POS_FRAMES)) != frame or not self.capture.grab():
            return False
        stamp = self.capture.get(cv2.CAP_PROP_POS_MSEC)  # 0: a file without timestamps, nothing to check
        if stamp > 0 and abs(stamp - frame * 1000 / self.clock.fps) > 500 / self.clock.fps:
            return False
        self.capture.set(cv2.CAP_PROP_POS_FRAMES, frame)  # back onto it: frames() reads it next
        return int(self.capture.get(cv2.CAP_PROP_POS_FRAMES)) == frame

    def close(self) -> None:
        """Release the capture; a later ``frames`` call opens it again."""
        if self.capture is not None:
            self.capture.release()
            self.capture = None
