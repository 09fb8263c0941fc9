"""The frame WebSocket: JPEG frames in, one JSON reply per frame out, each connection tracked as a live video.

A message that breaks the protocol closes that socket only, with a close code and a reason that says
what was wrong; the server and other clients carry on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import WebSocket, WebSocketDisconnect

from fervid.images import TooManyPixels, UnreadableImage
from fervid.serve.guards import same_origin
from fervid.serve.pool import LiveStream, RecognizerPool

DEFAULT_MAX_FRAME_BYTES = 2 * 1000 * 1000
MAX_STREAMS = 48  # live WebSockets at once, so that pages and uploads keep some of the server's 64 connections

# WebSocket close codes (RFC 6455) sent when a client breaks the frame protocol.
CLOSE_POLICY = 1008
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013


class StreamSlots:
    """How many live WebSockets are open, against the most the server takes (uvicorn counts them as
    connections but never refuses an upgrade: past its limit every page and upload would get 503)."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        if limit < 1:
            raise ValueError(f"the stream limit must be 1 or more, got {limit}")
        self.limit, self.open = limit, 0


async def _next_frame(websocket: WebSocket, max_frame_bytes: int) -> bytes | None:
    """The next frame's bytes; None once the client has gone, or after closing a message that is no frame."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    data = message.get("bytes")
    if data is None:
        await websocket.close(CLOSE_UNSUPPORTED, "send each frame as one binary message of JPEG bytes, not text")
        return None
    if len(data) > max_frame_bytes:
        await websocket.close(CLOSE_TOO_BIG, f"frame larger than {max_frame_bytes:,} bytes")
        return None
    return data


async def serve_frames(websocket: WebSocket, pool: RecognizerPool, max_frame_bytes: int, slots: StreamSlots,
                       allowed_origins: Sequence[str] = ()) -> None:
    """Answer one connection's frames until the client leaves or breaks the protocol.

    A page of another site is refused before the handshake completes (HTTP 403): it must not drive
    this server's camera stream. Past ``slots.limit`` open streams a new one is closed at once with
    1013 (try again later).
    """
    if not same_origin(websocket.headers, allowed_origins):
        await websocket.close(CLOSE_POLICY)
        return
    await websocket.accept()
    if slots.open >= slots.limit:
        await websocket.close(CLOSE_TRY_AGAIN, f"{slots.limit} live streams are open; try again later")
        return
    slots.open += 1  # one event loop: no lock needed
    try:
        await _answer_frames(websocket, pool, max_frame_bytes)
    finally:
        slots.open -= 1


async def _answer_frames(websocket: WebSocket, pool: RecognizerPool, max_frame_bytes: int) -> None:
    stream = LiveStream(pool.recognizers[0])
    try:
        while (data := await _next_frame(websocket, max_frame_bytes)) is not None:
            try:
                reply = await pool.recognize_in_turn(data, stream)
            except UnreadableImage as error:
                code = CLOSE_TOO_BIG if isinstance(error, TooManyPixels) else CLOSE_INVALID
                await websocket.close(code, f"the frame: {error}"[:120])  # "the frame: empty file (0 bytes)"
                return
            await websocket.send_json(reply)
    except WebSocketDisconnect:
        return
    except asyncio.CancelledError:  # a stop that waited its STOP_WAIT_S: uvicorn has closed the socket (1012) already
        return
