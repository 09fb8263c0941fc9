"""The web app: the live page, the REST API and the frame WebSocket, around Recognizers loaded once at start-up.

Images are decoded in memory, classified and forgotten: nothing a client sends is written anywhere.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from fervid import __version__
from fervid.errors import FervidError
from fervid.images import TooManyPixels, UnreadableImage, decode_image
from fervid.labels import EXPRESSIONS
from fervid.runtime.face import Face
from fervid.runtime.pipeline import FrameProcessor
from fervid.runtime.recognizer import Recognizer
from fervid.runtime.sources import Frame

STATIC = Path(str(resources.files("fervid.serve") / "static"))
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1000 * 1000
DEFAULT_MAX_FRAME_BYTES = 2 * 1000 * 1000
DEFAULT_WORKERS = 2
MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers around the file in an upload

# WebSocket close codes (RFC 6455) sent when a client breaks the frame protocol.
CLOSE_POLICY = 1008
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_TOO_BIG = 1009


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


class RecognizerPool:
    """``workers`` Recognizers shared by the request threads, each used by one thread at a time.

    OpenCV's cascade classifier keeps per-call state and must not run in two threads at once, so
    parallel frames (several browser tabs) each borrow a whole Recognizer.
    """

    def __init__(self, model: str | Path | None = None, workers: int = DEFAULT_WORKERS) -> None:
        if workers < 1:
            raise FervidError(f"workers must be at least 1, got {workers}")
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.recognizers = [Recognizer(model, threads=threads) for _ in range(workers)]
        self._idle: queue.SimpleQueue[Recognizer] = queue.SimpleQueue()
        for recognizer in self.recognizers:
            self._idle.put(recognizer)

    @property
    def card(self) -> dict:
        """The model card of the loaded model (class order, version, training summary)."""
        classifier = self.recognizers[0].classifier
        return {"name": classifier.name, "version": classifier.version, "classes": list(EXPRESSIONS), **classifier.card}

    @contextmanager
    def _borrowed(self) -> Iterator[Recognizer]:
        """A Recognizer for this thread alone; blocks until one is free."""
        recognizer = self._idle.get()
        try:
            yield recognizer
        finally:
            self._idle.put(recognizer)

    def predict(self, image: np.ndarray) -> list[Face]:
        """The faces in a BGR image; blocks until a Recognizer is free."""
        with self._borrowed() as recognizer:
            return recognizer.predict(image)

    def track(self, image: np.ndarray, stream: LiveStream) -> list[Face]:
        """The faces in the next frame of a stream (tracked and smoothed); blocks until a Recognizer is free."""
        with self._borrowed() as recognizer:
            return stream.next(image, recognizer)

    def recognize(self, data: bytes, stream: LiveStream | None = None) -> dict:
        """Encoded image bytes -> ``{"faces": [Face.to_dict()...], "width", "height", "ms"}`` (ms: decode + recognition).

        With ``stream`` the image is the stream's next frame: faces keep ids and smoothed labels."""
        start = time.perf_counter()
        image = decode_image(data)
        faces = self.predict(image) if stream is None else self.track(image, stream)
        milliseconds = (time.perf_counter() - start) * 1000
        return {"faces": [face.to_dict() for face in faces], "width": image.shape[1], "height": image.shape[0], "ms": round(milliseconds, 1)}


# --- Response shapes, for the OpenAPI page at /docs (the values come from Face.to_dict) ---


class FaceResult(BaseModel):
    track_id: int | None = Field(None, description="Null for an uploaded photo; over the WebSocket, the face's id, stable across the connection's frames.")
    box: list[int] = Field(description="x, y, width, height in pixels of the upright image.", min_length=4, max_length=4)
    expression: str = Field(description=f"The most probable of: {', '.join(EXPRESSIONS)}.")
    confidence: float = Field(description="Probability of that expression.")
    probabilities: dict[str, float] = Field(description="All seven probabilities (they sum to 1).")


class Prediction(BaseModel):
    faces: list[FaceResult] = Field(description="One entry per face found, left to right; empty when there is none.")
    width: int = Field(description="Width of the decoded image in pixels.")
    height: int = Field(description="Height of the decoded image in pixels.")
    ms: float = Field(description="Server time to decode and recognise, in milliseconds.")


class Health(BaseModel):
    status: str
    model: str
    model_version: str
    fervid: str


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": "A photo: JPEG, PNG, WebP, BMP or TIFF."}},
                }
            }
        },
    }
}


async def _limited(stream: AsyncIterator[bytes], limit: int, message: str) -> AsyncIterator[bytes]:
    """The request body, cut off with 413 once it passes ``limit`` bytes (for bodies without Content-Length)."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise HTTPException(413, message)
        yield chunk


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The bytes of the multipart field ``file``, held in memory only; 413, 415 or 422 with a clear message."""
    too_big = f"the upload is larger than the limit of {max_bytes:,} bytes; send a smaller photo, or start the server with a larger --max-upload-mb"
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):  # media types ignore case
        raise HTTPException(415, "send the image as multipart/form-data in the field 'file' (curl -F file=@photo.jpg)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise HTTPException(413, too_big)
    body = _limited(request.stream(), max_bytes + MULTIPART_OVERHEAD, too_big)
    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=8)
    parser.spool_max_size = max_bytes + MULTIPART_OVERHEAD  # keep the file in memory: never spooled to disk
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if error.message.startswith("Part exceeded maximum size"):  # a part without a filename is a text field, limited to 1 MB
            raise HTTPException(422, "the field 'file' came as a text field (no filename); send it as a file: curl -F file=@photo.jpg") from None
        raise HTTPException(422, f"malformed multipart body ({error.message.rstrip('.')}); send the photo as one file field: curl -F file=@photo.jpg") from None
    try:
        upload = form.get("file")
        if upload is None:
            raise HTTPException(422, "no multipart field 'file'; send the photo in it: curl -F file=@photo.jpg")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "the field 'file' came as a text field (no filename); send it as a file: curl -F file=@photo.jpg")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise HTTPException(413, too_big)
    if not data:
        raise HTTPException(422, "the uploaded file is empty; send the photo's bytes: curl -F file=@photo.jpg")
    return data


def same_origin(websocket: WebSocket) -> bool:
    """Browsers send Origin; refuse pages of other sites (a page elsewhere must not drive this server). Non-browser clients send none."""
    origin = websocket.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == websocket.headers.get("host")


def create_app(
    model: str | Path | None = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    workers: int = DEFAULT_WORKERS,
) -> FastAPI:
    """The FastAPI app; the model is loaded (``workers`` times) and warmed up here, before the first request."""
    if max_upload_bytes < 1 or max_frame_bytes < 1:
        raise FervidError("the upload and frame size limits must be positive")
    # python-multipart logs a warning per malformed body straight to stderr; the 422 already says it to the client.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    pool = RecognizerPool(model, workers)
    app = FastAPI(
        title="fervid",
        version=__version__,
        summary="Facial expressions in photos and live webcam frames.",
        description=(
            "POST a photo to `/api/predict` for its faces and expressions, or open the WebSocket `/ws` and send "
            "JPEG frames as binary messages, one at a time: each gets a JSON reply of the same shape. "
            "Nothing sent is stored."
        ),
    )
    app.state.pool = pool
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health", response_model=Health, summary="Liveness and the loaded model")
    async def health() -> dict:
        classifier = pool.recognizers[0].classifier
        return {"status": "ok", "model": classifier.name, "model_version": classifier.version, "fervid": __version__}

    for path, endpoint in (("/", page), ("/api/health", health)):  # HEAD, for uptime checkers
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    @app.get("/api/model", summary="The model card: classes in order, input, version, training summary")
    async def model_card() -> dict:
        return pool.card

    @app.post(
        "/api/predict",
        response_model=Prediction,
        summary="Faces and their expressions in one photo",
        openapi_extra=UPLOAD_BODY,
        responses={
            413: {"description": f"Upload over the size limit ({max_upload_bytes:,} bytes)."},
            415: {"description": "Not multipart/form-data, or the file is not a readable image."},
            422: {"description": "No 'file' field, an empty file, a malformed multipart body, or an image over the pixel limit."},
        },
    )
    async def predict(request: Request) -> dict:
        data = await read_upload(request, max_upload_bytes)
        try:
            return await run_in_threadpool(pool.recognize, data)
        except TooManyPixels as error:
            raise HTTPException(422, f"the uploaded file is {error}; send a smaller one") from None
        except UnreadableImage as error:
            raise HTTPException(415, f"the uploaded file is {error}") from None

    @app.get("/ws", include_in_schema=False, status_code=426)
    async def websocket_over_http() -> None:
        raise HTTPException(426, "/ws is a WebSocket: connect with ws:// and send JPEG frames as binary messages")

    @app.websocket("/ws")
    async def frames(websocket: WebSocket) -> None:
        """One binary message per frame (JPEG bytes) in, one JSON reply (the /api/predict shape) out.

        A message that breaks the protocol closes this socket only, with a close code and a reason.
        """
        await websocket.accept()
        if not same_origin(websocket):
            await websocket.close(CLOSE_POLICY, "cross-origin WebSocket refused: open the page from this server")
            return
        stream = LiveStream(pool.recognizers[0])
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is None:
                    await websocket.close(CLOSE_UNSUPPORTED, "send each frame as one binary message of JPEG bytes, not text")
                    return
                if len(data) > max_frame_bytes:
                    await websocket.close(CLOSE_TOO_BIG, f"frame larger than {max_frame_bytes:,} bytes")
                    return
                try:
                    reply = await run_in_threadpool(pool.recognize, data, stream)
                except UnreadableImage as error:
                    code = CLOSE_TOO_BIG if isinstance(error, TooManyPixels) else CLOSE_INVALID
                    await websocket.close(code, f"frame is {error}"[:120])
                    return
                await websocket.send_json(reply)
        except WebSocketDisconnect:
            return

    return app
