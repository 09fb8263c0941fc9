"""Video files for batch analysis: the header's frame rate and count for planning, and frame ranges decoded one at a time."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import cv2
import numpy as np

from fervid.errors import FervidError
from fervid.runtime.sources import DAMAGED_RUN, FrameClock, frame_rate, open_capture


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
    return frame_rate(fps), (count if count > 0 else None)


class VideoReader:
    """Frames [start, end) of a video, decoded one at a time; frames skipped by ``every`` are grabbed, not converted.

    ``end`` becomes the frame where the file really ends once a read or seek finds it; a truncated file
    ends before the frame count in its header, which cut the segments. Frames past it are not an
    error, just none: a segment there gives no rows whether it was reached by reading (the local
    engine) or by seeking (a Ray worker). A damaged frame does not decode but FFmpeg goes on with the
    next: up to ``DAMAGED_RUN`` failures in a row are skipped (and listed in ``damaged``), so one bad
    frame in an archived video costs that frame, not the rest of the video.
    """

    def __init__(self, path: str, every: int, fps: float) -> None:
        self.path, self.every = path, every
        self.clock = FrameClock(fps)  # a frame's time from its timestamp: right for variable-frame-rate files too
        self.capture: cv2.VideoCapture | None = None
        self.position = 0
        self.end: int | None = None
        self.damaged: set[int] = set()  # frames that did not decode but had decodable frames after them
        self.failed: list[int] = []  # the frames read since the last one that decoded, all failed

    def frames(self, start: int, end: int | None, timings: dict[str, float]) -> Iterator[tuple[int, float, np.ndarray]]:
        """(frame number, time in seconds, BGR image) for each analysed frame in [start, end); decoding
        time is added to ``timings``."""
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
            self.position += 1
            if not ok:
                self.failed.append(index)
                if len(self.failed) > DAMAGED_RUN:  # the end of the file (or of what of it is readable)
                    self.end = self.failed[0]
                    return
                continue
            self.damaged.update(self.failed)  # a frame decoded after them: they were damaged, not the end
            self.failed = []
            time_s = self.clock.time(self.capture, index)  # skipped frames too: the clock counts on from them
            if image is not None:
                yield index, time_s, image

    def _seek(self, frame: int) -> None:
        if self.capture is not None and self.position == frame:
            return
        self.failed = []  # failures before a jump are not known to be followed by a decodable frame
        self.clock.reset()
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
        """Release the capture; a later ``frames`` call opens it again."""
        if self.capture is not None:
            self.capture.release()
            self.capture = None
