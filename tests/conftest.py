"""Builders of tiny datasets, images and videos that the tests draw themselves (no real data needed)."""

from __future__ import annotations

import os
import signal
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from fervid.labels import EXPRESSIONS, FER2013_CSV_CLASSES

# A suite started in the background by a non-interactive shell (`nohup bash .ci/run &`) inherits
# SIGINT ignored (POSIX), so the Ctrl+C tests saw nothing. Python's own handler here, and the
# default in the commands the tests start (a handled signal is reset at exec; an ignored one is not).
signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pattern_face(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A learnable 'face' for class ``label``: a class-specific shape at a jittered place, plus noise.

    Every shape is mirror-symmetric, so horizontal-flip augmentation keeps classes apart.
    """
    image = rng.normal(110, 12, (size, size)).clip(0, 255).astype(np.uint8)
    cx, cy = size // 2 + int(rng.integers(-3, 4)), size // 2 + int(rng.integers(-3, 4))
    r = size // 4
    shapes = [
        lambda: (cv2.line(image, (cx - r, cy - r), (cx + r, cy + r), 250, 4), cv2.line(image, (cx - r, cy + r), (cx + r, cy - r), 250, 4)),
        lambda: (cv2.line(image, (cx - r, cy - 5), (cx + r, cy - 5), 250, 3), cv2.line(image, (cx - r, cy + 5), (cx + r, cy + 5), 250, 3)),
        lambda: cv2.circle(image, (cx, cy), r, 250, 3),
        lambda: cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), 250, -1),
        lambda: cv2.line(image, (cx - r, cy), (cx + r, cy), 250, 4),
        lambda: cv2.line(image, (cx, cy - r), (cx, cy + r), 250, 4),
        lambda: cv2.circle(image, (cx, cy), r // 2, 20, -1),
    ]
    shapes[label]()
    return image


def write_folder_dataset(root: Path, per_class: int, splits: dict[str, int] | None = None, seed: int = 0, ext: str = ".png") -> Path:
    """``root/<split>/<class>/*.png`` with ``splits`` mapping split names to images per class."""
    rng = np.random.default_rng(seed)
    splits = splits or {"train": per_class}
    for split, count in splits.items():
        for label, name in enumerate(EXPRESSIONS):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                cv2.imwrite(str(folder / f"{i:04d}{ext}"), pattern_face(label, rng))
    return root


def zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def write_fer_csv(target: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """A FER2013-style CSV: emotion numbered in FER2013's own order, pixels, Usage."""
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for usage, count in per_class.items():
        for fer_number, name in enumerate(FER2013_CSV_CLASSES):
            for _ in range(count):
                pixels = pattern_face(EXPRESSIONS.index(name), rng)
                lines.append(f"{fer_number},{' '.join(map(str, pixels.ravel()))},{usage}")
    target.write_text("\n".join(lines) + "\n")
    return target


# Python source for a child process's peak memory, in MiB: VmHWM is its own address space's peak.
# getrusage's ru_maxrss keeps the larger of the parent's peak across fork and exec on Linux, so in a
# full test run a child reported the pytest process's 2 GB, whatever it read itself.
PEAK_MIB_SOURCE = ("def peak_mib():\n"
                   "    status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
                   "    return int(status.split()[0]) // 1024\n")


def write_non_face_onnx(target: Path) -> Path:
    """A valid ONNX model that is not a face classifier: (N, 48, 48, 1) in, (N, 2304) out (a Flatten)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["y"])], "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2304])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(target))
    return target


def write_nan_onnx(target: Path) -> Path:
    """A face classifier's shape, (N, 48, 48, 1) in and (N, 7) out, whose outputs are all NaN (as a
    net whose training diverged gives)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((2304, 7), np.nan, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["y"])], "nan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7])], initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(target))
    return target


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own decode cache, so cached results never leak between tests."""
    monkeypatch.setenv("FERVID_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def pattern_dataset(tmp_path: Path) -> Path:
    return write_folder_dataset(tmp_path / "patterns", 0, {"train": 40, "validation": 10})


# --- Real faces and synthetic videos for the runtime tests (the Haar cascade needs real faces) ---

FER2013_ZIP_VARIABLE = "FERVID_FER2013_ZIP"


def fer2013_zip() -> Path:
    """The FER2013 zip named by $FERVID_FER2013_ZIP, or skip the test with the reason."""
    location = os.environ.get(FER2013_ZIP_VARIABLE)
    if not location or not Path(location).is_file():
        pytest.skip(f"set {FER2013_ZIP_VARIABLE} to the FER2013 zip to run tests that need real faces")
    return Path(location)


def textured_background(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A BGR background with blurred noise and a gradient, so the detector has texture to reject."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 4)
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-6)
    gradient = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    gray = 70 + 80 * noise + 40 * gradient
    tint = np.array([1.0, 0.95, 0.85], dtype=np.float32)
    return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)


_DETECTABLE: dict[tuple[str, int, int], list[np.ndarray]] = {}


def detectable_faces(count: int, size: int = 130) -> list[np.ndarray]:
    """The first ``count`` FER2013 validation faces (every 11th name, in name order) that fervid's default
    detector finds when upscaled to ``size`` pixels at four places of textured 480x360 frames.

    Deterministic for a given zip and OpenCV. The cascade misses about a third of FER2013's tight
    crops, so the tests pick faces it can see; what they then check is everything around it.
    """
    from fervid.runtime.detect import FaceDetector

    zip_path = fer2013_zip()
    key = (str(zip_path), count, size)
    if key not in _DETECTABLE:
        detector = FaceDetector()
        backgrounds = [cv2.cvtColor(textured_background(360, 480, seed=seed), cv2.COLOR_BGR2GRAY) for seed in (0, 3, 5, 11)]
        places = [(20, 30), (480 - size - 20, 360 - size - 20), ((480 - size) // 2, (360 - size) // 2), (20, 360 - size - 20)]
        found: list[np.ndarray] = []
        with zipfile.ZipFile(zip_path) as archive:
            names = sorted(n for n in archive.namelist() if "/validation/" in n and n.lower().endswith((".jpg", ".png")))
            for name in names[::11]:
                face = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_GRAYSCALE)
                big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
                seen = 0
                for background, (x, y) in zip(backgrounds, places):
                    frame = background.copy()
                    frame[y : y + size, x : x + size] = big
                    seen += len(detector.detect(frame)) == 1
                if seen == len(places):
                    found.append(face)
                if len(found) == count:
                    break
        assert len(found) == count, f"only {len(found)} of {count} faces of {zip_path} are found by OpenCV {cv2.__version__}'s detector"
        _DETECTABLE[key] = found
    return _DETECTABLE[key]


def paste_face(frame: np.ndarray, face: np.ndarray, x: int, y: int, size: int) -> tuple[int, int, int, int]:
    """Paste a gray face upscaled to ``size`` at (x, y) into a BGR frame; returns its box."""
    big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    frame[y : y + size, x : x + size] = big[..., None]
    return (x, y, size, size)


def face_video_frames(
    faces: list[np.ndarray], frames: int = 48, width: int = 480, height: int = 360, size: int = 130, empty: tuple[int, int] = (6, 6)
) -> tuple[list[np.ndarray], list[list[tuple[int, int, int, int]]]]:
    """Frames with ``faces`` side by side drifting right and down (no faces in the first ``empty[0]`` and
    last ``empty[1]`` frames) and the true box of each face per frame, in face order."""
    background = textured_background(height, width)
    spacing = (width - size) // max(1, len(faces))
    images, truth = [], []
    for index in range(frames):
        frame = background.copy()
        boxes = []
        if empty[0] <= index < frames - empty[1]:
            step = index - empty[0]
            for number, face in enumerate(faces):
                x = 10 + number * spacing + step
                y = 20 + (step // 2) + number * 30
                boxes.append(paste_face(frame, face, x, y, size))
        images.append(frame)
        truth.append(boxes)
    return images, truth


def write_video(path: Path, images: list[np.ndarray], fps: float = 15.0) -> Path:
    """Frames as an mp4 ('mp4v')."""
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for image in images:
        writer.write(image)
    writer.release()
    return path


def exif_oriented_jpeg(image: np.ndarray, orientation: int) -> bytes:
    """JPEG bytes of ``image`` carrying an EXIF Orientation tag (6 = display rotated 90 degrees clockwise)."""
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    data = encoded.tobytes()
    # Little-endian TIFF: header, one IFD with one entry (tag 0x0112 Orientation, SHORT, count 1), no next IFD.
    tiff = b"II*\x00" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little")
    tiff += (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little")
    tiff += orientation.to_bytes(2, "little") + b"\x00\x00" + (0).to_bytes(4, "little")
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + segment + data[2:]


@pytest.fixture(scope="session")
def two_face_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[tuple[int, int, int, int]]]]:
    """A 48-frame 480x360 mp4 at 15 FPS: 6 empty frames, 36 with two moving FER2013 faces, 6 empty."""
    images, truth = face_video_frames(detectable_faces(2))
    path = write_video(tmp_path_factory.mktemp("video") / "two-faces.mp4", images)
    return path, truth


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """With FERVID_REQUIRE_ALL=1 (set by .ci/run, which installs everything) a skipped test fails the run.

    Every skip here has a reason (no FER2013 zip, an extra not installed, no Chromium); in CI each of
    those means a broken install, which must not pass as green with part of the suite left out.
    """
    skipped = terminalreporter.stats.get("skipped", [])
    if os.environ.get("FERVID_REQUIRE_ALL") != "1" or not skipped:
        return
    terminalreporter.write_line(f"FERVID_REQUIRE_ALL=1: {len(skipped)} test(s) skipped, which this run does not allow:", red=True)
    for report in skipped[:20]:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.write_line(f"  {report.nodeid}: {reason}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("FERVID_REQUIRE_ALL") == "1" and reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
