"""Run the web app with uvicorn: in the foreground (``fervid serve``) or on a private loopback port in a thread."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from fervid.errors import FervidError
from fervid.fileio import leave_closed_terminal, stopping_signals
from fervid.serve.app import create_app
from fervid.serve.frames import DEFAULT_MAX_FRAME_BYTES
from fervid.serve.guards import allowed_hosts_for, checked_origins, is_loopback
from fervid.serve.pool import DEFAULT_WORKERS, DetectorSettings
from fervid.serve.protocol import IdleTimeoutProtocol, request_deadline
from fervid.serve.uploads import DEFAULT_MAX_UPLOAD_BYTES

MAX_CONNECTIONS = 64  # open connections and WebSockets together; a local app has a few tabs
STOP_WAIT_S = 5  # a stop (Ctrl+C, SIGTERM) waits this long for requests in progress, then ends them
WS_QUEUED_FRAMES = 4  # frames a socket may have waiting, where uvicorn's protocol queues them at all
BUSY_NOTICE_S = 10  # connections refused past MAX_CONNECTIONS are counted, and said at most this often
WILDCARD = ("0.0.0.0", "::", "")


def unbracketed(host: str) -> str:
    """``[::1]`` (an IPv6 address as URLs and fervid's own messages write it) as the address itself."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; a taken port or a bad address becomes one clear FervidError. An IPv6
    address may come in the brackets of a URL (``[::1]``), as the address printed shows it."""
    host = unbracketed(host)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as error:
        shown = f"[{host}]" if ":" in host else host
        raise FervidError(f"cannot listen on {shown}:{port} ({error.strerror or error}); pick another --port or --host") from None
    return listener


def server_config(app: FastAPI) -> uvicorn.Config:
    """uvicorn settings that bound what clients can make the server hold: at most
    ``MAX_CONNECTIONS`` connections (more get 503), each closed once its client has sent nothing
    for ``IDLE_S`` while the server waited for it; WebSocket messages over the app's frame limit
    refused (1009) before they are buffered, few queued per socket; and a stop that waits at most
    ``STOP_WAIT_S`` for the requests in progress."""
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, limit_concurrency=MAX_CONNECTIONS,
        http=type("Protocol", (IdleTimeoutProtocol,), {"request_s": request_deadline(getattr(app.state, "max_upload_bytes", 0))}),
        # uvicorn's sans-I/O WebSocket protocol (its default with websockets >= 14) stops reading a
        # socket once a read gave a whole message, until the app takes it, and ignores ws_max_queue;
        # the legacy protocol of older uvicorn queues up to ws_max_queue messages (32 by default).
        ws_max_size=getattr(app.state, "max_frame_bytes", DEFAULT_MAX_FRAME_BYTES), ws_max_queue=WS_QUEUED_FRAMES,
        timeout_graceful_shutdown=STOP_WAIT_S,
        # The app has no start-up or shutdown step; uvicorn's lifespan task only waited, and a second
        # Ctrl+C during the stop printed its CancelledError traceback.
        lifespan="off",
    )
    errors = logging.getLogger("uvicorn.error")  # configured by uvicorn.Config: the filters go on after it
    for notice in (StopNotice, BusyNotice):
        if not any(isinstance(existing, notice) for existing in errors.filters):
            errors.addFilter(notice())
    return config


class BusyNotice(logging.Filter):
    """uvicorn's "WARNING: Exceeded concurrency limit." for each connection refused (503) past
    ``MAX_CONNECTIONS``: a flood or a retrying client filled the terminal with it. Said once per
    ``BUSY_NOTICE_S``, with how many were refused since; those refused after a line are said when
    the interval ends (a timer) or the server stops (``flush``), not only if another comes later."""

    def __init__(self) -> None:
        super().__init__()
        self.last: float | None = None
        self.refused = 0
        self.timer: threading.Timer | None = None
        self.lock = threading.Lock()  # the event loop counts, the timer's thread says

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg) != "Exceeded concurrency limit.":
            return True
        with self.lock:
            self.refused += 1
            now = time.monotonic()
            if self.last is None or now - self.last >= BUSY_NOTICE_S:
                self._say(now)
            elif self.timer is None:
                self.timer = threading.Timer(self.last + BUSY_NOTICE_S - now, self.flush)
                self.timer.daemon = True
                self.timer.start()
        return False

    def flush(self) -> None:
        """Say the refusals not yet said."""
        with self.lock:
            self.timer = None
            if self.refused:
                self._say(time.monotonic())

    def _say(self, now: float) -> None:
        print(f"fervid: {self.refused} connection(s) refused (503): {MAX_CONNECTIONS} are open, the most this server "
              f"keeps (said at most every {BUSY_NOTICE_S} s)", file=sys.stderr)
        self.last, self.refused = now, 0


class StopNotice(logging.Filter):
    """uvicorn's "ERROR: Cancel 2 running task(s), timeout graceful shutdown exceeded", said in fervid's
    words: those requests are answered 503 by the app, and nothing went wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Cancel %s running task(s)"):
            running = record.args[0] if isinstance(record.args, tuple) and record.args else "the"
            print(f"fervid: stopping: {running} request(s) still running after {STOP_WAIT_S} s were ended "
                  "(photos answered 503 'the server is stopping')", file=sys.stderr)
            return False
        return True


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | Path | None = None,
    workers: int = DEFAULT_WORKERS,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    detector: DetectorSettings | None = None,
    allow_hosts: Sequence[str] = (),
    allow_origins: Sequence[str] = (),
) -> None:
    """Serve until Ctrl+C. The port is taken before the model loads, so a busy port fails at once;
    port 0 takes any free one, and the address printed says which."""
    if not 0 <= port <= 65535:
        raise FervidError(f"port must be between 1 and 65535 (or 0 for any free one), got {port}")
    checked_origins(allow_origins)  # a bad origin fails before the port is taken and the model loads
    host = unbracketed(host)
    listener = bind(host, port)
    app = create_app(model, workers=workers, max_upload_bytes=max_upload_bytes, allowed_hosts=allowed_hosts_for(host, allow_hosts),
                     allowed_origins=allow_origins, detector=detector)
    server = uvicorn.Server(server_config(app))
    if threading.current_thread() is threading.main_thread():
        # Ctrl+C or SIGTERM before uvicorn installs its own handlers (a client may connect, and a
        # supervisor stop, the moment the address is printed) asks it to stop, as after: raised as
        # KeyboardInterrupt inside its start-up instead, it could leave the server hanging. A hang-up
        # (the terminal closed; not under nohup) stops it the same way, uvicorn leaving SIGHUP to us.
        def stop(signum: int, frame: object) -> None:
            if signum == signal.SIGHUP:
                leave_closed_terminal()
            server.should_exit = True

        for number in stopping_signals():
            signal.signal(number, stop)
    shown = f"[{host}]" if ":" in host else host
    print(f"fervid: serving on http://{shown}:{listener.getsockname()[1]}  (API docs at /docs; Ctrl+C stops)", file=sys.stderr)
    if not is_loopback(host):
        print("fervid: note: reachable from the network; browsers give pages the webcam only on localhost or HTTPS", file=sys.stderr)
    if host in WILDCARD:  # http://0.0.0.0 is not an address a browser treats as this machine
        print(f"fervid: on this machine open http://127.0.0.1:{listener.getsockname()[1]} (the webcam needs it)", file=sys.stderr)
    try:
        server.run(sockets=[listener])
    finally:
        for notice in logging.getLogger("uvicorn.error").filters:
            if isinstance(notice, BusyNotice):
                notice.flush()


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` from a thread on a free port of ``host`` while the block runs; yields the base URL."""
    listener = bind(host, 0)
    server = uvicorn.Server(server_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="fervid-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            listener.close()
            raise FervidError(f"the web server did not start on {host} within {timeout:.0f} s")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        listener.close()
