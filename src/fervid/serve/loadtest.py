"""``fervid serve --loadtest``: WebSocket clients on loopback sending real-face JPEG frames for a fixed time.

Each client keeps one frame in flight, as the page does: it sends the next frame when the reply to the
last one has come. The server runs in this process on a private 127.0.0.1 port; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fervid.errors import FervidError
from fervid.fileio import check_writable
from fervid.markdown import read_markdown_page, replace_markdown_section
from fervid.runtime.bench import FACE_SIDE, HEIGHT, WIDTH, background, faces_zip, real_faces
from fervid.runtime.classify import DEFAULT_MODEL, model_label
from fervid.serve.app import create_app
from fervid.serve.frames import MAX_STREAMS
from fervid.serve.pool import DEFAULT_WORKERS, DetectorSettings
from fervid.serve.server import running_server

SECTION = "## Web server load test"
DOC_COLUMNS = 100  # the docs' prose width: the section lands in docs/performance.md
JPEG_QUALITY = 80  # what the page sends (canvas.toBlob quality 0.8)
MIN_SECONDS = 1.0  # 0.001 s answered no frame and wrote "p50 nan ms" over the page's section
REPLY_TIMEOUT_S = 30.0  # a reply stuck longer is an error, not a run that never ends


@dataclass
class LoadReport:
    """Round trips (ms) and server times (ms) of answered frames, faces found, and every error seen."""

    clients: int
    seconds: float
    started: float = 0.0  # perf_counter at the start
    elapsed: float = 0.0  # from the start to the last reply: a reply to a frame sent before the deadline comes after it
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    faces: int = 0
    errors: list[str] = field(default_factory=list)
    section: str = ""  # the heading of the page section written (--output), else ""

    @property
    def frames(self) -> int:
        return len(self.latencies_ms)

    def percentile(self, values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    def table(self) -> str:
        rows = [
            ("clients", f"{self.clients} WebSocket client{'s' if self.clients != 1 else ''}, one frame in flight each", "640x480 JPEG (quality 80): one real face drifting back and forth"),
            ("duration", f"{self.seconds:g} s", ""),
            ("frames answered", f"{self.frames:,} ({self.frames / max(self.elapsed, self.seconds):.1f} frames/s in total)", f"{self.faces / max(self.frames, 1):.2f} faces found per frame"),
            ("round-trip latency", f"p50 {self.percentile(self.latencies_ms, 50):.0f} ms, p99 {self.percentile(self.latencies_ms, 99):.0f} ms", "send -> JSON reply, as the page measures it"),
            ("server time per frame", f"p50 {self.percentile(self.server_ms, 50):.0f} ms, p99 {self.percentile(self.server_ms, 99):.0f} ms", "the reply's `ms`: JPEG decode, wait for a free recognizer, detect, classify"),
            ("errors", f"{len(self.errors)}", "; ".join(sorted(set(self.errors)))[:200]),
        ]
        return "| measure | result | notes |\n|---|---|---|\n" + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in rows)


def face_frames(faces: list[np.ndarray], count: int = 8) -> list[bytes]:
    """640x480 JPEG frames of one face (FACE_SIDE pixels) drifting right over ``count`` frames and back, as a
    webcam would see it: the server tracks each connection's faces, so frames must form a continuous video."""
    frames = []
    steps = list(range(count)) + list(range(count - 2, 0, -1))
    base = background(0)
    for step in steps:
        frame = base.copy()
        x = 120 + step * 40
        y = 170 + (step % 4) * 10
        frame[y : y + FACE_SIDE, x : x + FACE_SIDE] = faces[0][..., None]
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok and frame.shape[:2] == (HEIGHT, WIDTH)
        frames.append(encoded.tobytes())
    return frames


async def _client(url: str, frames: list[bytes], deadline: float, report: LoadReport, offset: int) -> None:
    """Send, wait for the reply, repeat until ``deadline``; a failed connection is counted and reopened.
    A reply that does not come within ``REPLY_TIMEOUT_S`` is an error (it held the run past its end)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, WebSocketException

    index = offset
    while time.perf_counter() < deadline:
        try:
            async with connect(url, max_size=2**22, open_timeout=10) as socket:
                while time.perf_counter() < deadline:
                    start = time.perf_counter()
                    await socket.send(frames[index % len(frames)])
                    reply = json.loads(await asyncio.wait_for(socket.recv(), REPLY_TIMEOUT_S))
                    served, faces = float(reply["ms"]), len(reply["faces"])  # both read before either is counted
                    report.latencies_ms.append((time.perf_counter() - start) * 1000)
                    report.server_ms.append(served)
                    report.faces += faces
                    report.elapsed = max(report.elapsed, time.perf_counter() - report.started)
                    index += 1
        except ConnectionClosed as error:  # with the server's reason: 1013 "48 live streams are open" says why
            closed = error.rcvd
            report.errors.append(f"closed {closed.code}: {closed.reason}" if closed else type(error).__name__)
            await asyncio.sleep(0.1)
        except (OSError, WebSocketException, asyncio.TimeoutError, KeyError, ValueError) as error:
            report.errors.append(type(error).__name__)
            await asyncio.sleep(0.1)


async def _drive(url: str, frames: list[bytes], clients: int, seconds: float) -> LoadReport:
    report = LoadReport(clients, seconds, started=time.perf_counter())
    deadline = report.started + seconds
    await asyncio.gather(*(_client(url, frames, deadline, report, offset) for offset in range(clients)))
    return report


def run_loadtest(
    *,
    model: str | Path | None = None,
    clients: int = 4,
    seconds: float = 20.0,
    faces_from: str | Path | None = None,
    workers: int = DEFAULT_WORKERS,
    output: str | Path | None = None,
    detector: DetectorSettings | None = None,
) -> LoadReport:
    """Start the app on 127.0.0.1, drive it with ``clients`` WebSocket clients for ``seconds``, return the report.

    With ``output``, the section "Web server load test" of that Markdown file is replaced (or appended);
    with another model than the default, a section named for it.
    """
    if not 1 <= clients <= MAX_STREAMS:  # past the server's live streams, each extra client is refused (1013) and retries
        raise FervidError(f"--clients must be 1 to {MAX_STREAMS} (the live streams the server takes at once), got {clients}")
    if not math.isfinite(seconds) or seconds < MIN_SECONDS:
        raise FervidError(f"--seconds must be at least {MIN_SECONDS:g} (a shorter run may answer no frame), got {seconds}")
    zip_path = faces_zip(faces_from, required=True)  # the load test sends real faces
    if output:
        check_writable(output, "--output")  # a page that cannot be written or read fails now, not after the run
        read_markdown_page(output)
    app = create_app(model, workers=workers, detector=detector)
    faces = real_faces(zip_path, 4, app.state.pool.recognizers[0])
    if not faces:
        settings = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in (detector or {}).items() if value is not None)
        raise FervidError(f"{zip_path}: the detector finds none of its validation faces, pasted {FACE_SIDE} px wide on a "
                          f"{WIDTH}x{HEIGHT} frame" + (f", with {settings}" if settings else ""))
    frames = face_frames(faces)
    load_before = os.getloadavg()[0]
    with running_server(app) as base:
        report = asyncio.run(_drive(base.replace("http://", "ws://") + "/ws", frames, clients, seconds))
    if report.frames == 0:  # nothing measured: an earlier section is kept, not replaced by nan
        raise FervidError(f"no frame was answered in {seconds:g} s ({'; '.join(sorted(set(report.errors))) or 'no error'}); "
                          "nothing written")
    if output:
        heading = section_heading(model_label(app.state.pool.recognizers[0].classifier))
        replace_markdown_section(output, heading, section(heading, report, app.state.pool, load_before), table=report.table())
        report.section = heading
    return report


def section_heading(model: str) -> str:
    """The page section a model's load test goes to: the default model's, or one named for another
    model (``--model fervid-compact`` replaced the default model's numbers), as ``fervid bench`` does."""
    return SECTION if model == DEFAULT_MODEL else f"{SECTION} ({model})"


def section(heading: str, report: LoadReport, pool, load_before: float) -> str:
    """The Markdown section written into docs/performance.md, under ``heading``."""
    classifier = pool.recognizers[0].classifier
    return (
        f"{heading}\n\n"
        + textwrap.fill(
            "Measured with `fervid serve --loadtest` (the numbers below were written by it): the server on a private "
            "127.0.0.1 port in the same process as the clients, each client sending the next frame only when the "
            "reply to the last one came back, as the page does.", DOC_COLUMNS)
        + "\n\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores; load average {load_before:.1f} just before the run\n"
        f"- model: {classifier.name} {classifier.version}; {len(pool.recognizers)} recognizer workers\n\n"
        f"{report.table()}\n"
        + textwrap.fill(
            "Each connection is tracked like a live video (a full scan every 10th frame, a search near each known "
            "face in between; see docs/realtime.md), so most frames cost a JPEG decode and a few milliseconds per "
            "face; the p99 is a full scan while the other clients wait for a worker. The face moves 40 px per "
            "frame and turns back at both ends, where a search near its predicted box can miss it until the next "
            "scan.", DOC_COLUMNS)
        + "\n"
    )
