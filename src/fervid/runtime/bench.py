"""``fervid bench``: per-face classification latency, detector time per 640x480 frame, end-to-end FPS.

The end-to-end runs need real faces (the Haar cascade ignores drawn ones), taken from a FER2013 zip
($FERVID_FER2013_ZIP or --faces-from) and composited on a textured 640x480 video. Without one a
printed table reports those rows as skipped; ``--output`` is refused, since the page's section
would lose them, and so is a zip given that yields no faces.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal, overload

import cv2
import numpy as np

from fervid.console import warn
from fervid.data.zipped import read_image_member
from fervid.errors import FervidError
from fervid.fileio import check_writable
from fervid.images import UnreadableImage, decode_image, is_hidden, is_image_name
from fervid.labels import split_folder
from fervid.markdown import read_markdown_page, replace_markdown_section
from fervid.runtime.pipeline import DETECT_EVERY, FrameProcessor
from fervid.runtime.classify import DEFAULT_MODEL, model_label
from fervid.runtime.recognizer import Recognizer
from fervid.runtime.render import annotate
from fervid.runtime.sources import VideoFileSource
from fervid.runtime.track import iou_matrix

SECTION = "## Real-time pipeline (`fervid bench`)"  # the default model's; another model's names it
MAX_FRAMES = 100_000  # about an hour of video at 30 FPS
WARMUP_FRAMES = 10  # processed untimed before each end-to-end run; the default scan interval, so scans keep their share
MIN_FRAMES = 2 * WARMUP_FRAMES  # a 1-frame run timed one unconfirmed frame: '0.00 faces reported', FPS of no classification

WIDTH, HEIGHT = 640, 480
FACE_SIDE = 140
FACES = 4  # real faces the end-to-end runs need (the 4-face video)
MATCH_IOU = 0.5  # a box this close to where a face was pasted (IoU) found that face; any other box is a false one


@dataclass
class Row:
    measure: str
    value: str
    note: str = ""


def timings_ms(call: Callable[[], object], repeats: int, warmup: int = 50) -> np.ndarray:
    """Wall-clock milliseconds of ``repeats`` calls after ``warmup`` untimed ones. ONNX Runtime's
    first few dozen calls on a fresh session are slower (one of its first 30 took 4.7 ms against
    0.47 p50 here): with 5 untimed calls, the first row's p99 was that outlier."""
    for _ in range(warmup):
        call()
    times = np.empty(repeats)
    for index in range(repeats):
        start = time.perf_counter()
        call()
        times[index] = (time.perf_counter() - start) * 1000
    return times


def background(seed: int = 0) -> np.ndarray:
    """A textured BGR 640x480 frame (blurred noise and a gradient)."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 4)
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-6)
    gray = 70 + 80 * noise + 40 * np.linspace(0, 1, WIDTH, dtype=np.float32)[None, :]
    return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


@overload
def faces_zip(faces_from: str | Path | None, *, required: Literal[True]) -> Path: ...
@overload
def faces_zip(faces_from: str | Path | None, *, required: bool = False) -> Path | None: ...
def faces_zip(faces_from: str | Path | None, *, required: bool = False) -> Path | None:
    """Where the benchmarks take real faces from: ``--faces-from``, else ``$FERVID_FER2013_ZIP``, else None
    (or, when ``required``, a FervidError saying how to give it). A path given that is no zip file, or
    a zip with no validation or test images to take faces from (Kaggle's challenge download, a zip of
    ``icml_face_data.csv``; a train split alone), is refused now, before minutes of measuring, never
    silently skipped."""
    given = faces_from or os.environ.get("FERVID_FER2013_ZIP")
    if not given:
        if required:
            raise FervidError("real faces are needed: give --faces-from FER2013.zip or set FERVID_FER2013_ZIP")
        return None
    name = faces_name(faces_from)
    path = Path(given).expanduser()
    if path.is_dir():
        raise FervidError(f"{name}: a folder; give the FER2013 zip itself")
    if not path.is_file():
        raise FervidError(f"{name}: no such file (give the FER2013 zip)")
    if not zipfile.is_zipfile(path):
        raise FervidError(f"{name}: not a zip file (give the FER2013 zip)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as error:  # the last: a name marked UTF-8 that is not
        raise FervidError(f"{name}: not a readable zip file ({error})") from None
    if not held_out_images(names)[1]:
        raise FervidError(f"{name}: {_no_held_out_why(names)}")
    return path


def faces_name(faces_from: str | Path | None) -> str:
    """How the user gave the faces zip, for an error line: ``--faces-from X`` or ``FERVID_FER2013_ZIP=X``."""
    return f"--faces-from {faces_from}" if faces_from else f"FERVID_FER2013_ZIP={os.environ.get('FERVID_FER2013_ZIP', '')}"


def held_out_images(names: list[str]) -> tuple[str, list[str]]:
    """The split faces are taken from and its images among a zip's member ``names``, in name order:
    validation (``validation/``, ``val/``, ``PublicTest/``...), else test. Faces the model was
    trained on would not show how it does on faces it has not seen."""
    images = sorted(n for n in names if is_image_name(n) and not is_hidden(PurePosixPath(n).parts))
    splits = {name: split_of(name.replace("\\", "/")) for name in images}
    held_out = "validation" if "validation" in splits.values() else "test"
    return held_out, [name for name in images if splits[name] == held_out]


def _no_held_out_why(names: list[str]) -> str:
    """Why a zip gives no faces (``held_out_images`` found none), and what to give instead."""
    wanted = "give the FER2013 zip of images (its test/ or validation/ folder is where faces are taken from)"
    images = [n for n in names if is_image_name(n) and not is_hidden(PurePosixPath(n).parts)]
    if not images:
        tables = sorted({PurePosixPath(n).name for n in names if n.lower().endswith((".csv", ".tar.gz", ".tgz", ".tar"))})
        held = f"holds {', '.join(tables[:3])}{' and more' if len(tables) > 3 else ''} but no images" if tables else "holds no images"
        return f"{held}; {wanted}"
    splits = sorted({f"{split}/" for n in images if (split := split_of(n.replace('\\', '/')))})
    where = f"only in {', '.join(splits)}" if splits else "in no split folder"
    return f"no validation or test images (its {len(images):,} images are {where}); {wanted}"


def split_of(name: str) -> str | None:
    """The split of a zip member, by its nearest folder with a split name as the dataset readers
    name them (``validation``, ``val``, ``dev``, ``PublicTest``...), or None."""
    found = split_folder(PurePosixPath(name).parts)
    return found[1] if found else None


def real_faces(zip_path: Path, count: int, recognizer: Recognizer) -> list[np.ndarray]:
    """``count`` validation faces the detector finds at FACE_SIDE pixels: every 11th validation image
    in name order, so that they come from every class (the validation split as the dataset readers
    find it: ``validation/``, ``val/``, ``PublicTest/``..., test faces where there is none).

    A face counts as found when one box lies on it (``found_on``) and no other box touches it: "one
    box in the frame" took faces the detector missed whenever the background gave a false box.
    Entries that are not images are passed over; a damaged archive is a FervidError.
    """
    found: list[np.ndarray] = []
    frame = cv2.cvtColor(background(1), cv2.COLOR_BGR2GRAY)
    place = np.array([[250, 170, FACE_SIDE, FACE_SIDE]])
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise FervidError(f"{zip_path}: not a readable zip file ({error})") from None
    with archive:
        names = held_out_images(archive.namelist())[1]
        for name in names[::11]:
            face = _decode_gray(archive, name, zip_path)
            if face is None:
                continue
            big = cv2.resize(face, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC)
            trial = frame.copy()
            trial[170 : 170 + FACE_SIDE, 250 : 250 + FACE_SIDE] = big
            boxes = recognizer.detector.detect(trial)
            if found_on(boxes, place) == 1 and int((iou_matrix(boxes, place) > 0).sum()) == 1:
                found.append(big)
            if len(found) == count:
                break
    return found


def _decode_gray(archive: zipfile.ZipFile, name: str, zip_path: Path) -> np.ndarray | None:
    """An archive's image as gray pixels, None when it is not an image (an empty or foreign file, or
    a member too large to be one: read bounded, so a zip bomb in the zip costs no memory)."""
    try:
        return decode_image(read_image_member(archive, name), cv2.IMREAD_GRAYSCALE)
    except UnreadableImage:
        return None
    except (zipfile.BadZipFile, zlib.error, OSError) as error:
        raise FervidError(f"{zip_path}: a damaged zip file ({name}: {error})") from None


def found_on(boxes: np.ndarray, places: np.ndarray) -> int:
    """How many of the faces pasted at ``places`` (N, 4) a box of ``boxes`` lies on (IoU > MATCH_IOU),
    each box taken for one face at most, the closest pairs first."""
    overlap = iou_matrix(boxes, places)
    matched = 0
    while overlap.size and overlap.max() > MATCH_IOU:
        box, place = np.unravel_index(overlap.argmax(), overlap.shape)
        overlap[box, :] = overlap[:, place] = 0.0
        matched += 1
    return matched


def face_places(count: int, index: int) -> np.ndarray:
    """Where ``face_video`` pastes ``count`` faces in frame ``index``, as (count, 4) boxes x, y, w, h:
    one face drifts across the middle, more sit in a 2x2 grid drifting less."""
    shift = int(40 * np.sin(index / 30))
    places = []
    for x, y in [(40, 40), (360, 40), (40, 280), (360, 280)][:count]:
        x = int(np.clip(x + shift + 60, 0, WIDTH - FACE_SIDE)) if count == 1 else x + shift // 2 + 20
        y = int(np.clip(y if count > 1 else 170, 0, HEIGHT - FACE_SIDE))
        places.append((x, y, FACE_SIDE, FACE_SIDE))
    return np.array(places, dtype=np.int64).reshape(-1, 4)


def face_video(target: Path, faces: list[np.ndarray], frames: int, fps: float = 30.0) -> list[np.ndarray]:
    """A 640x480 mp4 with the faces in a 2x2 grid drifting slowly, so tracking has something to follow;
    returns each frame's face boxes (``face_places``), the truth the end-to-end run is scored against."""
    base = background()
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))  # type: ignore[attr-defined]
    truth = []
    for index in range(frames):
        frame = base.copy()
        places = face_places(len(faces), index)
        for face, (x, y, side, _) in zip(faces, places):
            frame[y : y + side, x : x + side] = face[..., None]
        writer.write(frame)
        truth.append(places)
    writer.release()
    return truth


@dataclass
class EndToEnd:
    """One end-to-end run: frames per second, and per counted frame the pasted faces a shown box lay
    on and the shown boxes that lay on none (false detections, or a box left behind by a track)."""

    fps: float
    found: float
    other: float


def end_to_end(path: Path, recognizer: Recognizer, detect_every: int, truth: Sequence[np.ndarray], untimed: int = 0) -> EndToEnd:
    """Decode, detect, classify, track and draw every frame of ``path``, whose frame ``i`` shows faces
    at ``truth[i]`` (N, 4). A count of boxes shown could not say whether a face was lost: a false
    box on the background made 4.03 "faces" per frame of a 4-face video. So boxes are matched to the
    pasted faces (``found_on``) and the rest counted apart.

    The first ``untimed`` frames are processed but not counted: the decoder's and ONNX Runtime's
    first calls are slower, and a short run would count them."""
    processor = FrameProcessor(recognizer, detect_every=detect_every)
    frames = found = boxes = 0
    with VideoFileSource(path) as source:
        start = time.perf_counter()
        for frame in source:
            shown = processor.process(frame)
            annotate(frame.image, shown, 0.0)
            if untimed > 0:
                untimed -= 1
                start = time.perf_counter()
                continue
            frames += 1
            boxes += len(shown)
            found += found_on(np.array([face.box for face in shown]).reshape(-1, 4), truth[frame.index])
        seconds = time.perf_counter() - start
    counted = max(frames, 1)
    return EndToEnd(frames / seconds, found / counted, (boxes - found) / counted)


def run_bench(
    *, model: str | Path | None = None, output: str | Path | None = None, faces_from: str | Path | None = None, frames: int = 300
) -> str:
    """Measure, return the Markdown table, and write it (with a header) to ``output`` when given."""
    if not MIN_FRAMES <= frames <= MAX_FRAMES:  # each end-to-end video is written to a temporary file first
        raise FervidError(f"--frames must be {MIN_FRAMES} to {MAX_FRAMES:,}, got {frames} (the first {WARMUP_FRAMES} of each "
                          "run are untimed)")
    zip_path = faces_zip(faces_from)
    if output:
        check_writable(output, "--output")  # a page that cannot be written or read fails now, not after minutes of measuring
        read_markdown_page(output)
        if not zip_path:  # the page's section would lose its end-to-end and near-search rows to 'skipped'
            raise FervidError(f"--output {output}: the section written needs the end-to-end rows, which need real faces: give "
                              "--faces-from FER2013.zip or set FERVID_FER2013_ZIP (without --output the table is printed without them)")
    recognizer = Recognizer(model)
    faces = real_faces(zip_path, FACES, recognizer) if zip_path else []
    if zip_path and len(faces) < FACES:  # before minutes of measuring, not a table with its end-to-end rows skipped
        raise FervidError(f"{faces_name(faces_from)}: the detector finds {len(faces)} of the {FACES} faces needed among its validation "
                          f"or test images (every 11th tried, at {FACE_SIDE} px; a FER2013 zip has thousands)")
    rows: list[Row] = []
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (FACE_SIDE, FACE_SIDE), dtype=np.uint8) for _ in range(8)]
    for flip in (True, False):
        recognizer.flip_tta = flip
        for batch in (1, 8):
            per_face = timings_ms(lambda: recognizer.classify(crops[:batch]), repeats=300) / batch
            rows.append(Row(
                f"classification per face, batch {batch}, flip averaging {'on' if flip else 'off'}",
                f"p50 {np.percentile(per_face, 50):.2f} ms, p99 {np.percentile(per_face, 99):.2f} ms",
                "140x140 crop -> 48x48 preprocessing (+ the card's input blur) + one ONNX Runtime call" + (" (live default)" if flip == recognizer.classifier.flip_tta else ""),
            ))
    recognizer.flip_tta = recognizer.classifier.flip_tta
    gray = cv2.cvtColor(background(), cv2.COLOR_BGR2GRAY)
    if faces:
        gray[170 : 170 + FACE_SIDE, 250 : 250 + FACE_SIDE] = faces[0]
    default = recognizer.detector.config
    scan_ms: float = 0.0  # the default scan's p50, which the section's prose quotes
    every_frame_fps: float | None = None  # one face, a full scan every frame
    capped = replace(default, detection_width=320)
    for config, where in ((default, f"scanned as min_size {default.min_size} needs (default)"),
                          (capped, "capped at 320 px wide (detection_width=320: faces from 48 px)")):
        recognizer.detector.config = config
        times = timings_ms(lambda: recognizer.detector.detect(gray), repeats=100, warmup=5)  # ~60 ms each: a p99 would be the maximum
        scan_ms = scan_ms or round(float(np.percentile(times, 50)), 1)  # as the table shows it
        rows.append(Row(f"Haar detector per 640x480 frame, {where}", f"p50 {np.percentile(times, 50):.1f} ms, p95 {np.percentile(times, 95):.1f} ms",
                        "one face in the frame" if faces else "no face in the frame"))
    recognizer.detector.config = default
    if faces:
        box = np.array([250, 170, FACE_SIDE, FACE_SIDE])
        times = timings_ms(lambda: recognizer.detector.detect_near(gray, box), repeats=300)
        rows.append(Row("search near a tracked face (between scans)", f"p50 {np.percentile(times, 50):.2f} ms, p99 {np.percentile(times, 99):.2f} ms",
                        f"{FACE_SIDE} px face: a crop 2x its size, sizes 0.7-1.4x (a wider retry only when that finds nothing)"))
    if not faces:  # printed only: --output without faces was refused above
        why = "no FER2013 zip (set FERVID_FER2013_ZIP or --faces-from)"
        warn(f"{why}: end-to-end rows skipped")
        rows.append(Row("end-to-end FPS, 640x480 video", "skipped", f"needs {FACES} real faces: {why}"))
    else:
        with tempfile.TemporaryDirectory() as folder:
            for count in (1, FACES):
                video = Path(folder) / f"faces-{count}.mp4"
                truth = face_video(video, faces[:count], frames)
                for detect_every in (DETECT_EVERY, 2, 1):
                    run = end_to_end(video, recognizer, detect_every, truth, untimed=WARMUP_FRAMES)
                    if count == 1 and detect_every == 1:
                        every_frame_fps = run.fps
                    default_mark = " (default)" if detect_every == DETECT_EVERY else ""
                    rows.append(Row(
                        f"end-to-end, 640x480 video, {count} face{'s' if count > 1 else ''}, full scan every {detect_every} frame{'s' if detect_every > 1 else ''}{default_mark}",
                        f"{run.fps:.1f} FPS",
                        f"decode + detect + classify + track + draw; {run.found:.2f} of {count} face{'s' if count > 1 else ''} found per frame, "
                        f"{run.other:.2f} other boxes",
                    ))
    table = "| measure | result | notes |\n|---|---|---|\n" + "".join(f"| {r.measure} | {r.value} | {r.note} |\n" for r in rows)
    if output:
        heading = section_heading(model_label(recognizer.classifier))
        replace_markdown_section(output, heading,
                                 _section(table, recognizer, frames if faces else None, scan_ms, every_frame_fps, near_row=bool(faces)),
                                 table=table)
        written = f"wrote the '{heading[3:]}' section of {output}"
        print(written, file=sys.stderr)  # stdout holds the table alone
    return table


def section_heading(model: str) -> str:
    """The page section a model's results go to (``model``: its ``model_label``): the default
    model's, or one named for another model (``--model fervid-compact`` once replaced the fervid-vgg
    section)."""
    return SECTION if model == DEFAULT_MODEL else f"{SECTION[:-1]}, {model})"


def _section(table: str, recognizer: Recognizer, frames: int | None, scan_ms: float, every_frame_fps: float | None,
             *, near_row: bool) -> str:
    """The page's section: the table with its set-up, and prose that quotes this run's numbers only
    (a fixed '~45 ms' here once contradicted a table measuring 79 ms) and names only rows it has
    (it named the near-search row of a table written without it)."""
    threads = recognizer.classifier.session.get_session_options().intra_op_num_threads
    cap = f", so scanning every frame holds one face to {every_frame_fps:.1f} FPS" if every_frame_fps else ""
    near = " (the 'search\nnear a tracked face' row). Each" if near_row else ".\nEach"
    scored = (
        "In the end-to-end rows a face counts as found in a frame when a box shown lies on where it was\n"
        f"pasted (IoU > {MATCH_IOU}); 'other boxes' are the boxes shown on none of them (false detections).\n\n"
    ) if frames else ""
    return (
        f"{section_heading(recognizer.classifier.name)}\n\n"
        "Measured with `fervid bench` (the numbers below were written by it).\n\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}\n"
        f"- model: {recognizer.classifier.name} {recognizer.classifier.version} ({recognizer.classifier.path.name}), "
        f"ONNX Runtime CPU, {threads} intra-op threads\n"
        f"- OpenCV {cv2.__version__}{f', end-to-end runs of {frames} frames' if frames else ''}\n\n"
        f"{table}\n"
        f"{scored}"
        "Goals on a 2-core machine: classification p50 <= 1 ms per face (the release model's target allows\n"
        "2 ms, docs/model.md), end-to-end >= 60 FPS with one face.\n\n"
        f"A full Haar scan costs {scan_ms:.0f} ms here (p50){cap}.\n"
        f"By default the whole frame is scanned every {DETECT_EVERY}th frame while faces are shown (every 2nd while\n"
        f"none is); in between, each tracked face is searched for only near its predicted box{near} extra face adds\n"
        "one such search and one classification per frame.\n"
        "How it works: docs/realtime.md.\n"
    )
