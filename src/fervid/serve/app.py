"""The web app: the live page, the REST API and the frame WebSocket, around Recognizers loaded once at start-up.

Images are decoded in memory, classified and forgotten: nothing a client sends is written anywhere.
The routes are declared here; the work behind them is in ``pool`` (the Recognizers), ``uploads``
(reading a photo upload) and ``frames`` (the WebSocket protocol).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from pydantic import BaseModel, Field

from fervid import __version__
from fervid.errors import FervidError
from fervid.images import TooManyPixels, UnreadableImage
from fervid.labels import EXPRESSIONS
from fervid.runtime.photos import SMALL_IMAGE
from fervid.runtime.recognizer import crop_doubt
from fervid.serve.frames import DEFAULT_MAX_FRAME_BYTES, MAX_STREAMS, StreamSlots, serve_frames
from fervid.serve.guards import LOCAL_HOSTS, OneHostMiddleware, checked_origins, same_origin
from fervid.serve.pool import DEFAULT_WORKERS, ClientGone, DetectorSettings, RecognizerPool
from fervid.serve.uploads import DEFAULT_MAX_UPLOAD_BYTES, read_upload

STATIC = Path(str(resources.files("fervid.serve") / "static"))


# --- Response shapes, for the OpenAPI page at /docs (the values come from Face.to_dict) ---


class FaceResult(BaseModel):
    track_id: int | None = Field(None, description="Null for an uploaded photo; over the WebSocket, the face's id, stable across the connection's frames.")
    box: list[int] = Field(description="x, y, width, height in pixels of the upright image.", min_length=4, max_length=4)
    expression: str = Field(description=f"The most probable of: {', '.join(EXPRESSIONS)}; over the WebSocket, held through near ties "
                            "(another must lead it by more than 0.1 in the smoothed probabilities), so it may be the second most probable.")
    confidence: float = Field(description="Probability of that expression.")
    probabilities: dict[str, float] = Field(description="All seven probabilities (they sum to 1).")


class Prediction(BaseModel):
    faces: list[FaceResult] = Field(description="One entry per face found, empty when there is none: left to right for an uploaded photo, "
                                    "over the WebSocket in the order the faces were first seen.")
    width: int = Field(description="Width of the decoded image in pixels.")
    height: int = Field(description="Height of the decoded image in pixels.")
    ms: float = Field(description="Server time to decode and recognise, in milliseconds.")
    note: str | None = Field(None, description="Set when no face was found in a small photo (it may be a cropped face: ?crops=true), "
                             "or when a ?crops=true photo is hardly a face crop (under 8 pixels a side, or over 4 times as long as wide).")


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
                    "properties": {"file": {"type": "string", "format": "binary", "description": "A photo: JPEG, PNG, WebP, BMP, TIFF or GIF (its first frame)."}},
                }
            }
        },
    }
}


async def recognize_photo(pool: RecognizerPool, data: bytes, crops: bool = False,
                          gone: Callable[[], Awaitable[bool]] | None = None) -> dict:
    """The /api/predict reply for an uploaded photo; a file that is no image, or too large a one, becomes 415 or 422."""
    try:
        reply = await pool.recognize_in_turn(data, None, crops, gone)
    except ClientGone:  # nobody reads the answer; nginx's "client closed request", for the log
        raise HTTPException(499, "the client left before its photo's turn") from None
    except asyncio.CancelledError:  # a stop that waited its STOP_WAIT_S: an answer, not a traceback and a bare 500
        raise HTTPException(503, "the server is stopping; send the photo again once it is back") from None
    except TooManyPixels as error:
        raise HTTPException(422, f"the uploaded file is {error}; send a smaller one") from None
    except UnreadableImage as error:
        raise HTTPException(415, f"the uploaded file is {error}") from None
    if crops:  # as `fervid predict --crops` warns: a 1x1 or 4x100 image still gets a confident label
        if (doubt := crop_doubt(reply["width"], reply["height"])) is not None:  # a None set here was sent as "note": null
            reply["note"] = doubt
    elif not reply["faces"] and max(reply["width"], reply["height"]) <= SMALL_IMAGE:  # as `fervid predict` says it
        reply["note"] = "no face found; if the photo is a cropped face, POST it to /api/predict?crops=true to classify the whole image"
    return reply


def routes(root: str = "") -> str:
    """Where the page, the API and the WebSocket are, under ``root`` (the path the app is mounted at,
    ``main.mount("/fer", create_app())``: its addresses are /fer/..., not /...)."""
    return (f"the page is GET {root}/, the API POST {root}/api/predict, GET {root}/api/health and {root}/api/model, "
            f"the WebSocket {root}/ws (see {root}/docs)")


HEAD_PATHS = ("/", "/api/health", "/api/model")  # answered to HEAD too, each by a route of its own
ROOT_KEY = "fervid.root"


class KeepRoot:
    """Keep the path the app is mounted at as ``scope["fervid.root"]``: the app's own mount,
    ``/static``, extends ``root_path`` in place, and an error there named every address under
    /static (a POST to /static/api/predict was told to POST to /static/api/predict)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        scope.setdefault(ROOT_KEY, scope.get("root_path", ""))
        await self.app(scope, receive, send)


async def wrong_address(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Starlette's bare "Not Found" and "Method Not Allowed" as sentences that say where to go (a
    page showing ``detail`` printed just that); every other error keeps its own detail."""
    detail = error.detail
    root = request.scope.get(ROOT_KEY, request.scope.get("root_path", ""))
    if error.status_code == 404 and detail == "Not Found":
        detail = f"nothing at {request.url.path}; {routes(root)}"
    elif error.status_code == 405 and detail == "Method Not Allowed":
        headers = dict(error.headers or {})
        allow = next((name for name in headers if name.lower() == "allow"), "allow")
        methods = [method.strip() for method in headers.get(allow, "").split(",") if method.strip()]
        if request.url.path.removeprefix(root) in HEAD_PATHS and "HEAD" not in methods:  # served by a route of its own beside GET
            methods.append("HEAD")
        if methods:
            headers[allow] = ", ".join(methods)
        detail = f"{request.url.path} takes {', '.join(methods) or 'other methods'}, not {request.method}; {routes(root)}"
        return JSONResponse({"detail": detail}, status_code=error.status_code, headers=headers)
    return JSONResponse({"detail": detail}, status_code=error.status_code, headers=error.headers)


async def one_sentence(request: Request, error: RequestValidationError) -> JSONResponse:
    """A bad query parameter (``?crops=maybe``) as every other error is: ``{"detail": "<sentence>"}``,
    not FastAPI's list of objects (a front end printing ``detail`` showed ``[object Object]``)."""
    problems = [f"{'.'.join(map(str, problem['loc'][1:])) or problem['loc'][0]} ({problem['loc'][0]}): {problem['msg']}"
                for problem in error.errors()]
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)


def create_app(
    model: str | Path | None = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    workers: int = DEFAULT_WORKERS,
    allowed_hosts: Sequence[str] = LOCAL_HOSTS,
    allowed_origins: Sequence[str] = (),
    detector: DetectorSettings | None = None,
    max_streams: int = MAX_STREAMS,
) -> FastAPI:
    """The FastAPI app; the model is loaded (``workers`` times) and warmed up here, before the first request.

    Requests whose ``Host`` is not in ``allowed_hosts`` get 400 (``fervid.serve.guards`` says why;
    ``("*",)`` answers any name, for a server opened to the network). Pages of the ``allowed_origins``
    (your own front end, e.g. ``http://localhost:3000``) may call the API and open the WebSocket, with
    CORS headers; other sites' pages are refused. ``detector`` holds Haar cascade settings for
    ``Recognizer`` (``scale_factor``, ``min_neighbors``, ``min_size``). At most ``max_streams``
    WebSockets are served at once.
    """
    if max_upload_bytes < 1 or max_frame_bytes < 1 or max_streams < 1:
        raise FervidError("the upload and frame size limits and the stream limit must be positive")
    allowed_origins = checked_origins(allowed_origins)
    slots = StreamSlots(max_streams)
    # python-multipart logs a warning per malformed body straight to stderr; the 422 already says it to the client.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    pool = RecognizerPool(model, workers, detector)
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
    app.state.max_frame_bytes = max_frame_bytes
    app.state.max_upload_bytes = max_upload_bytes
    if allowed_origins:  # added first, so it runs after the Host check: a refused Host gets no CORS headers
        # Private network access: a public page the user named (https://app.example.com) may call this
        # server on their own machine; Chrome asks first, and without the answer refuses the call.
        app.add_middleware(CORSMiddleware, allow_origins=list(allowed_origins), allow_methods=["GET", "HEAD", "POST"],
                           allow_headers=["*"], allow_private_network=True)
    # www_redirect off: a Host the check refuses is 400, never a redirect to its www. name
    app.add_middleware(OneHostMiddleware, allowed_hosts=list(allowed_hosts), www_redirect=False)
    app.add_middleware(KeepRoot)
    app.add_exception_handler(RequestValidationError, one_sentence)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, wrong_address)  # type: ignore[arg-type]

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/static/index.html", include_in_schema=False)
    async def page_elsewhere() -> RedirectResponse:
        """The page's links are relative to its own address (so a prefix mount works); opened as
        /static/index.html it found no script or style, and sent frames nowhere: sent to the page."""
        return RedirectResponse("../", status_code=301)

    @app.get("/api/health", response_model=Health, summary="Liveness and the loaded model")
    async def health() -> dict:
        classifier = pool.recognizers[0].classifier
        return {"status": "ok", "model": classifier.name, "model_version": classifier.version, "fervid": __version__}

    @app.get("/api/model", summary="The model card: classes in order, input, version, training summary")
    async def model_card() -> dict:
        return pool.card

    for path, endpoint in zip(HEAD_PATHS, (page, health, model_card)):  # HEAD, for uptime checkers
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    @app.post(
        "/api/predict",
        response_model=Prediction,
        response_model_exclude_unset=True,  # ``note`` only when there is one, as over the WebSocket
        summary="Faces and their expressions in one photo",
        openapi_extra=UPLOAD_BODY,
        responses={
            403: {"description": "Sent by a page of another site (its Origin is not this server)."},
            413: {"description": f"Upload over the size limit ({max_upload_bytes:,} bytes)."},
            415: {"description": "Not multipart/form-data, or the file is not a readable image."},
            422: {"description": "No 'file' field, an empty file, a malformed multipart body, an image over the pixel limit, "
                                 "or a bad query parameter.", "content": {"application/json": {"schema": {
                                     "type": "object", "properties": {"detail": {"type": "string"}}}}}},
        },
    )
    async def predict(request: Request, crops: bool = False) -> dict:
        """``crops=true``: the photo is one already-cropped face (a dataset's 48x48 image), classified whole."""
        if not same_origin(request.headers, allowed_origins):
            raise HTTPException(403, "cross-origin upload refused: send photos from this server's own page, from a page "
                                     "of a --allow-origin, or without a browser")
        if len(request.query_params.getlist("crops")) > 1:  # FastAPI took the last silently: ?crops=maybe&crops=true passed
            raise HTTPException(422, "crops (query): given more than once; give it once, true or false")
        return await recognize_photo(pool, await read_upload(request, max_upload_bytes), crops, request.is_disconnected)

    @app.api_route("/ws", methods=["GET", "HEAD"], include_in_schema=False, status_code=426)
    async def websocket_over_http() -> None:
        raise HTTPException(426, "/ws is a WebSocket: connect with ws:// and send JPEG frames as binary messages",
                            headers={"Upgrade": "websocket", "Connection": "Upgrade"})  # RFC 9110: 426 names the protocol

    @app.websocket("/ws")
    async def frames(websocket: WebSocket) -> None:
        """One binary message per frame (JPEG bytes) in, one JSON reply (the /api/predict shape) out."""
        await serve_frames(websocket, pool, max_frame_bytes, slots, allowed_origins)

    @app.websocket("/{path:path}")
    async def no_such_websocket(websocket: WebSocket, path: str) -> None:
        """A WebSocket to another address (``/ws/``, ``/api/health``) was refused 403 at the
        handshake, as a page of another site is: a 404 that names the frame WebSocket instead."""
        await websocket.send_denial_response(JSONResponse(
            {"detail": f"no WebSocket at {websocket.url.path}; the frame WebSocket is {websocket.scope.get('root_path', '')}/ws"},
            status_code=404))

    # Mounted after the WebSocket routes: a WebSocket to /static/... reached the files and was refused 403.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
