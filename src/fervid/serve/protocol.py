"""uvicorn's HTTP protocol with an idle timeout, so silent clients cannot hold the server's connections.

uvicorn times out only a kept-alive connection between requests. A client that connects and sends
nothing, or stops part-way through an upload, holds its connection for good: 64 of them fill the
server's connection limit (everyone else gets 503), and one of them keeps ``fervid serve`` from
stopping on Ctrl+C, since a stop waits for the requests in progress.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.auto import AutoHTTPProtocol

IDLE_S = 15.0  # seconds a client may send nothing while the server waits for its request or body
REQUEST_S = 120.0  # seconds a client may take to send one request, headers and body (10 MB at 1 Mbit/s: 80 s)
MAX_HEADER_BYTES = 64 * 1024  # a request's line and headers (browsers send a few KB; h11's own limit is 16 KB)
SLOWEST_UPLOAD_BYTES_PER_S = 1_000_000 / 8 / 1.5  # a larger upload limit gets the time 1 Mbit/s needs, and half again


def request_deadline(max_upload_bytes: int) -> float:
    """Seconds a request may take to arrive: ``REQUEST_S``, or longer for a server that takes larger
    uploads (``--max-upload-mb 50``: 600 s), so the limit it allows can be sent over a slow link."""
    return max(REQUEST_S, max_upload_bytes / SLOWEST_UPLOAD_BYTES_PER_S)


class IdleTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """Closes a connection whose client sent nothing for ``IDLE_S`` while the server waited for it
    (before a request, or during its body), or took over ``REQUEST_S`` to send one request (a byte
    now and then keeps a connection from idling); never while the app works on a request or answers
    it, and never a WebSocket (the upgrade hands the connection on). A server stopping closes at
    once the connections still waiting for a client."""

    idle_s = IDLE_S
    request_s = REQUEST_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._last_data = self.loop.time()
        self._request_started: float | None = None  # the first byte of the request being received
        self._in_headers = False  # between a request's first byte and the end of its headers
        self._in_message = False  # between a request's first byte and its last (its body read)
        self._header_bytes = 0  # of the request line and headers being received
        self._tail = b""  # the last bytes counted, to find a CRLF CRLF split across two reads
        self._idle_check: asyncio.TimerHandle | None = self.loop.call_later(self.idle_s, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        if self._request_started is None and self._waiting_for_client():
            self._request_started = self._last_data
        if self._in_headers or not self._in_message:  # a request line and headers: counted before the parser reads them
            self._header_bytes += self._header_part(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse_headers()
                return
        super().data_received(data)

    def _header_part(self, data: bytes) -> int:
        """How many bytes of ``data`` belong to the headers being received: up to the CRLF CRLF that
        ends them (found across two reads too), or all of it. Counting whole reads let a request whose
        headers ended in the read that carried them past the limit through (64 KB plus one read)."""
        joined = self._tail + data
        end = joined.find(b"\r\n\r\n")
        self._tail = joined[-3:]
        return len(data) if end < 0 else max(0, end + 4 - (len(joined) - len(data)))

    # httptools calls these as it parses (h11 never does: it refuses headers over 16 KB itself). Only
    # what arrives outside a message's body is counted: not the rest of a body the app answered early
    # (a 413 before the upload is read), and also a request pipelined behind one still running.
    def on_message_begin(self) -> None:
        self._in_headers = self._in_message = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_headers, self._header_bytes, self._tail = False, 0, b""
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def _refuse_headers(self) -> None:
        """431 and close: uvicorn's httptools parser buffers headers of any size (a 100 MB header
        was read whole, and 64 such connections could take gigabytes)."""
        body = b'{"detail":"the request headers are over 64 KB; send a smaller request"}'
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()

    def on_response_complete(self) -> None:
        self._request_started = None  # the next request on a kept-alive connection has its own deadline
        super().on_response_complete()

    def _waiting_for_client(self) -> bool:
        cycle = self.cycle
        return cycle is None or cycle.response_complete or cycle.more_body

    def _check_idle(self) -> None:
        self._idle_check = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        quiet = now - self._last_data
        if not self._waiting_for_client():
            self._request_started = None  # the request is in: the app has it
        elif quiet >= self.idle_s or (self._request_started is not None and now - self._request_started >= self.request_s):
            self.transport.close()
            return
        self._idle_check = self.loop.call_later(min(max(self.idle_s - quiet, 0.5), self.request_s), self._check_idle)

    def _cancel_idle_check(self) -> None:
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None

    def handle_websocket_upgrade(self, *args) -> None:
        self._cancel_idle_check()
        super().handle_websocket_upgrade(*args)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_idle_check()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete and self.cycle.more_body:
            self.transport.close()  # a client still sending its request would hold the stop
            return
        super().shutdown()
