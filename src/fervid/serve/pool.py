"""The Recognizers the web app lends to requests and WebSockets, and each WebSocket's live-video state."""

from __future__ import annotations

import asyncio
import os
import queue
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import TypedDict

import anyio
import numpy as np

from fervid.errors import FervidError
from fervid.images import decode_image
from fervid.labels import EXPRESSIONS
from fervid.runtime.face import Face
from fervid.runtime.pipeline import FrameProcessor
from fervid.runtime.recognizer import Recognizer
from fervid.runtime.sources import Frame

DEFAULT_WORKERS = 2
# Each worker holds a model and can unpack one photo at a time: more than the server's 64 connections
# could never be busy, and --workers 100000 spent minutes loading models, memory growing.
MAX_WORKERS = 64
TRAINING_PATHS = ("data", "teacher", "init_from", "mapping")  # card["training"] keys that may hold local paths


def _file_names(value: object) -> object:
    """A path, or a list of them, as file names only (``/home/me/data/fer.zip`` -> ``fer.zip``)."""
    if isinstance(value, str):
        return PurePath(value.replace("\\", "/")).name if ("/" in value or "\\" in value) else value
    if isinstance(value, list):
        return [_file_names(item) for item in value]
    return value


class DetectorSettings(TypedDict, total=False):
    """Haar cascade settings, as ``Recognizer`` takes them (``fervid.runtime.detect.DetectorConfig``)."""

    scale_factor: float
    min_neighbors: int
    min_size: int
    detection_width: int | None


class LiveStream:
    """One WebSocket's frames as a live video: its own tracks, smoothing and scan schedule
    (``fervid.runtime.pipeline.FrameProcessor``), timed by when each frame arrives."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.processor = FrameProcessor(recognizer)
        self.started = time.monotonic()
        self.frames = 0

    def next(self, image: np.ndarray, recognizer: Recognizer) -> list[Face]:
        frame = Frame(image, self.frames, time.monotonic() - self.started)
        self.frames += 1
        return self.processor.process(frame, recognizer)


class ClientGone(Exception):
    """The client left while its photo waited for a Recognizer: it is not recognized (a queue of
    abandoned 8000x8000 uploads kept the next client waiting 10 s for answers nobody read)."""


class RecognizerPool:
    """``workers`` Recognizers shared by the request threads, each used by one thread at a time.

    OpenCV's cascade classifier keeps per-call state and must not run in two threads at once, so
    parallel frames (several browser tabs) each borrow a whole Recognizer.
    """

    def __init__(self, model: str | Path | None = None, workers: int = DEFAULT_WORKERS,
                 detector: DetectorSettings | None = None) -> None:
        """``detector``: Haar cascade settings for every Recognizer (``scale_factor``, ``min_neighbors``, ``min_size``)."""
        if not 1 <= workers <= MAX_WORKERS:
            raise FervidError(f"workers must be 1 to {MAX_WORKERS}, got {workers}")
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.recognizers = [Recognizer(model, threads=threads, **(detector or {})) for _ in range(workers)]
        self._idle: queue.SimpleQueue[Recognizer] = queue.SimpleQueue()
        for recognizer in self.recognizers:
            self._idle.put(recognizer)
        # per event loop: the turns, and the threads recognitions run on (a limiter of their own)
        self._turns: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore, anyio.CapacityLimiter] | None = None

    @property
    def card(self) -> dict:
        """The model card of the loaded model (class order, version, training summary), with the
        training's file paths cut to their names: the server may answer the network, and a model
        trained here would tell it where the user keeps their data and runs (/home/...)."""
        classifier = self.recognizers[0].classifier
        card = {"name": classifier.name, "version": classifier.version, "classes": list(EXPRESSIONS), **classifier.card}
        if isinstance(training := card.get("training"), dict):
            card["training"] = {key: _file_names(value) if key in TRAINING_PATHS else value for key, value in training.items()}
        return card

    async def recognize_in_turn(self, data: bytes, stream: LiveStream | None = None, crop: bool = False,
                                gone: Callable[[], Awaitable[bool]] | None = None) -> dict:
        """``recognize`` on a worker thread once a Recognizer is free. Requests wait their turn here,
        on the event loop: waiting on a thread held one of the 40 threads that also serve the page
        and its files, so 40 queued photos kept ``GET /`` waiting for seconds. The recognitions run
        on threads of their own (a limiter of ``workers``), not those 40: with more than 40 workers
        they took them all again. ``gone``, asked once the turn comes: whether the client has left
        (then ``ClientGone``, and the Recognizer goes to the next in line)."""
        loop = asyncio.get_running_loop()
        if self._turns is None or self._turns[0] is not loop:  # a semaphore serves the loop it first waited on
            self._turns = (loop, asyncio.Semaphore(len(self.recognizers)), anyio.CapacityLimiter(len(self.recognizers)))
        start = time.perf_counter()
        async with self._turns[1]:
            if gone is not None and await gone():
                raise ClientGone
            reply = await anyio.to_thread.run_sync(self.recognize, data, stream, crop, limiter=self._turns[2])
        reply["ms"] = round((time.perf_counter() - start) * 1000, 1)  # the wait for a Recognizer included, as before
        return reply

    @contextmanager
    def _borrowed(self) -> Iterator[Recognizer]:
        """A Recognizer for this thread alone; blocks until one is free."""
        recognizer = self._idle.get()
        try:
            yield recognizer
        finally:
            self._idle.put(recognizer)

    def recognize(self, data: bytes, stream: LiveStream | None = None, crop: bool = False) -> dict:
        """Encoded image bytes -> ``{"faces": [Face.to_dict()...], "width", "height", "ms"}`` (ms: decode + recognition).

        With ``stream`` the image is the stream's next frame: faces keep ids and smoothed labels.
        With ``crop`` the whole image is one already-cropped face (no detector)."""
        start = time.perf_counter()
        with self._borrowed() as recognizer:  # decoded here too: a small PNG can unpack to hundreds of MB,
            image = decode_image(data)        # so at most ``workers`` images are unpacked at once
            if stream is not None:
                faces = stream.next(image, recognizer)
            else:
                faces = recognizer.predict(image, boxes=[0, 0, image.shape[1], image.shape[0]] if crop else None)
        milliseconds = (time.perf_counter() - start) * 1000
        return {"faces": [face.to_dict() for face in faces], "width": image.shape[1], "height": image.shape[0], "ms": round(milliseconds, 1)}
