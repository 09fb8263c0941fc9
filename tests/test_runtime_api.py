"""fervid.Recognizer and Face: inputs of every kind, the shared preprocessing, one batched call, EXIF."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest

import fervid
from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS
from fervid.runtime import classify as classify_module
from fervid.runtime.face import Face
from fervid.runtime.classify import bundled_model_path
from fervid.runtime.recognizer import Recognizer, crop_face
from fervid.runtime.track import iou_matrix

from conftest import detectable_faces, exif_oriented_jpeg, fer2013_zip, paste_face, textured_background, write_nan_onnx, write_non_face_onnx


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer()


@pytest.fixture(scope="module")
def photo() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A 560x360 BGR photo with three real faces at known boxes, apart (the cascade misses crowded faces)."""
    frame = textured_background(360, 560, seed=3)
    faces = detectable_faces(3, size=130)
    boxes = [paste_face(frame, face, x, y, 130) for face, (x, y) in zip(faces, [(20, 40), (215, 190), (410, 40)])]
    return frame, boxes


def assert_matches(found: list[Face], truth: list[tuple[int, int, int, int]]) -> None:
    assert len(found) == len(truth)
    overlaps = iou_matrix(np.array([face.box for face in found]), np.array(truth))
    assert (overlaps.max(axis=1) > 0.5).all(), overlaps


def test_import_fervid_exposes_the_api_lazily() -> None:
    assert fervid.Recognizer is Recognizer and fervid.Face is Face
    with pytest.raises(AttributeError):
        fervid.NoSuchThing  # noqa: B018


def test_the_inference_path_imports_neither_tensorflow_nor_keras() -> None:
    code = (
        "import sys, numpy as np, fervid; from fervid import cli; "
        "from fervid.runtime import live, bench, photos; "
        "fervid.Recognizer().predict(np.zeros((120, 160, 3), np.uint8)); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')); "
        "print('HEAVY', heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout


def test_face_to_dict_schema() -> None:
    probabilities = np.linspace(1, 7, 7) / 28
    face = Face.from_probabilities(np.array([1.6, 2.2, 30.0, 31.0]), probabilities, track_id=4)
    record = face.to_dict()
    assert record["box"] == [2, 2, 30, 31] and all(isinstance(v, int) for v in record["box"])
    assert record["expression"] == EXPRESSIONS[-1]
    assert record["confidence"] == pytest.approx(0.25, abs=1e-4)
    assert list(record["probabilities"]) == list(EXPRESSIONS)
    assert record["track_id"] == 4


def test_predict_finds_every_face_with_all_probabilities(recognizer: Recognizer, photo) -> None:
    frame, truth = photo
    faces = recognizer.predict(frame)
    assert_matches(faces, truth)
    assert [face.box[0] for face in faces] == sorted(face.box[0] for face in faces)
    for face in faces:
        assert list(face.probabilities) == list(EXPRESSIONS)
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert face.expression == max(face.probabilities, key=face.probabilities.get)
        assert face.confidence == pytest.approx(max(face.probabilities.values()))
        assert face.track_id is None


def test_paths_bgr_rgb_and_gray_agree(recognizer: Recognizer, photo, tmp_path: Path) -> None:
    frame, truth = photo
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), frame)
    reference = recognizer.predict(frame)
    assert_matches(reference, truth)  # else every variant agreeing on no faces would pass
    variants = {
        "path": recognizer.predict(path),
        "str": recognizer.predict(str(path)),
        "rgb": recognizer.predict(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), color="rgb"),
        "gray": recognizer.predict(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)),
        "bgra": recognizer.predict(cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)),
    }
    for name, faces in variants.items():
        assert [f.box for f in faces] == [f.box for f in reference], name
        for face, expected in zip(faces, reference):
            assert face.probabilities == pytest.approx(expected.probabilities, abs=1e-3), name


def test_one_recognizer_shared_by_threads_gives_each_image_its_own_faces(recognizer: Recognizer, photo) -> None:
    """OpenCV's cascade mixes the results of two threads' scans; each thread must get its own."""
    from concurrent.futures import ThreadPoolExecutor

    frame, _ = photo
    images = [frame, cv2.flip(frame, 1), frame[:, :300].copy(), cv2.flip(frame, 0)]  # different boxes in each
    serial = [[face.to_dict() for face in recognizer.predict(image)] for image in images]
    assert len({str(faces) for faces in serial}) == len(images)
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda image: [face.to_dict() for face in recognizer.predict(image)], images * 10))
    assert threaded == serial * 10


def test_rgb_is_not_read_as_bgr(recognizer: Recognizer) -> None:
    """A pure red RGB image must give a different gray level than if its channels were taken as BGR."""
    from fervid.images import gray_frame

    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255  # red in RGB order
    assert gray_frame(red, "rgb")[0, 0] == 76 and gray_frame(red, "bgr")[0, 0] == 29
    with pytest.raises(FervidError, match="color must be 'bgr' or 'rgb'"):
        recognizer.predict(red, color="hsv")


def test_rgb_crops_are_classified_as_their_bgr_twins(recognizer: Recognizer, photo) -> None:
    frame, truth = photo
    crops = [frame[y : y + h, x : x + w] for x, y, w, h in truth]
    tinted = [crop * np.array([0.4, 0.8, 1.0]) for crop in crops]  # unequal channels: the order matters
    expected = recognizer.classify(tinted)
    as_rgb = [crop[..., ::-1] for crop in tinted]
    assert np.allclose(recognizer.classify(as_rgb, color="rgb"), expected, atol=1e-6)
    assert np.allclose(recognizer.classify(np.stack(as_rgb), color="RGB"), expected, atol=1e-6)
    assert not np.allclose(recognizer.classify(as_rgb), expected, atol=1e-3), "read as BGR, the gray differs"
    with pytest.raises(FervidError, match="color must be"):
        recognizer.classify(crops, color="hsv")


def test_all_faces_go_through_the_shared_preprocessing_in_one_model_call(recognizer: Recognizer, photo, monkeypatch) -> None:
    frame, truth = photo
    prepared: list[tuple[int, ...]] = []
    real_prepare = classify_module.prepare_face
    monkeypatch.setattr(classify_module, "prepare_face", lambda crop: prepared.append(crop.shape) or real_prepare(crop))
    runs: list[int] = []
    session = recognizer.classifier.session

    class CountingSession:
        def run(self, outputs, feeds):
            runs.append(len(next(iter(feeds.values()))))
            return session.run(outputs, feeds)

    monkeypatch.setattr(recognizer.classifier, "session", CountingSession())
    monkeypatch.setattr("onnxruntime.InferenceSession", lambda *a, **k: pytest.fail("a model was loaded per call"))
    faces = recognizer.predict(frame)
    assert len(faces) == 3
    assert len(prepared) == 3  # fervid.preprocess.prepare_face, once per face
    flips = 2 if recognizer.flip_tta else 1
    assert runs == [3 * flips]  # one batched ONNX Runtime call for the whole frame


def test_given_boxes_skip_detection(recognizer: Recognizer, photo) -> None:
    frame, truth = photo
    faces = recognizer.predict(frame, boxes=[truth[0], (0, 0, 30, 30)])
    assert [face.box for face in faces] == [truth[0], (0, 0, 30, 30)]
    assert recognizer.predict(frame, boxes=[]) == []


def write_graph_onnx(target: Path, inputs: list[tuple]) -> Path:
    """A valid ONNX model with the given (shape, name) inputs and one (N, 7) output of constants."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    constant = numpy_helper.from_array(np.full((1, 7), 1 / 7, np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["y"])], "odd",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for shape, name in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])], initializer=[constant],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(target))
    return target


def found_of(found: list[Face], truth: list[tuple[int, int, int, int]]) -> int:
    """How many of the true boxes some found face overlaps by IoU > 0.5."""
    if not found:
        return 0
    return int((iou_matrix(np.array([face.box for face in found]), np.array(truth)).max(axis=0) > 0.5).sum())


def test_a_face_is_found_near_its_last_box_and_nowhere_else(recognizer: Recognizer, photo) -> None:
    frame, truth = photo
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    x, y, w, h = truth[1]
    for moved in [(x, y, w, h), (x + 25, y - 20, w, h), (x - 10, y + 5, int(w * 1.1), int(h * 1.1))]:
        found = recognizer.detector.detect_near(gray, np.array(moved))
        assert found is not None, moved
        assert iou_matrix(np.array([found]), np.array([truth[1]]))[0, 0] > 0.55, (moved, found)
    assert recognizer.detector.detect_near(gray, np.array([200, 20, 60, 60])) is None  # no face there
    assert recognizer.detector.detect_near(gray, np.array([x, y, w // 3, h // 3])) is None  # wrong size for this face
    assert recognizer.detector.detect_near(gray, np.array([5000, 5000, 100, 100])) is None  # off the frame


@pytest.mark.parametrize(
    ("frame", "min_size", "width", "scanned", "smallest"),
    [((480, 640), 40, 1280, (288, 384), 24),   # shrunk only as far as a 40 px face fills the 24 px window
     ((1080, 1920), 40, 1280, (648, 1152), 24),
     ((3024, 4032), 40, 1280, (960, 1280), 13),  # the cap: faces from 24 * 4032 / 1280 = 76 px
     ((480, 640), 20, 1280, (480, 640), 20),     # never enlarged, scanned as it is
     ((1080, 1920), 40, 320, (180, 320), 7),     # the old default: faces from 144 px
     ((3000, 40000), 40, 1280, (248, 3305), 3),  # a panorama: 1280x96 missed its 500 px face; as many pixels as 1280x640
     ((640, 1280), 40, 1280, (384, 768), 24)],   # 2:1, the widest frame the width cap still holds
)
def test_frames_are_scanned_as_small_as_min_size_allows_up_to_the_width_cap(frame, min_size, width, scanned, smallest) -> None:
    from fervid.runtime.detect import DetectorConfig, FaceDetector

    class Cascade:
        def detectMultiScale(self, gray, **settings):  # noqa: N802 - OpenCV's name
            seen.append((gray.shape, settings["minSize"][0]))
            return ()

    seen: list = []
    detector = FaceDetector(DetectorConfig(min_size=min_size, detection_width=width))
    detector._local.cascade = Cascade()
    detector.detect(np.zeros(frame, np.uint8))
    assert seen == [(scanned, smallest)]


def test_a_smaller_min_size_finds_the_faces_just_over_40_px_that_the_default_scan_steps_past() -> None:
    """What DetectorConfig's docstring says: the default scan (shrunk until a 40 px face fills the
    cascade's window) steps past some faces of 1-2x min_size that OpenCV finds in the whole frame;
    min_size=24 scans a frame whole and finds them as OpenCV does. (A 320x240 frame: the faces
    missed are a 640x480 one's, the default finding 12 of these 40 where OpenCV finds 26, against 13
    of 26 at 640x480, in a seventh of the time.)"""
    import zipfile

    from fervid.runtime.detect import CASCADE_PATH

    with zipfile.ZipFile(fer2013_zip()) as archive:
        names = sorted(n for n in archive.namelist() if "/validation/" in n and n.endswith(".jpg"))[5::60][:40]
        faces = [cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_GRAYSCALE) for name in names]
    cascade = cv2.CascadeClassifier(str(CASCADE_PATH))
    default, small = Recognizer(), Recognizer(min_size=24)
    background = cv2.cvtColor(textured_background(240, 320, seed=2), cv2.COLOR_BGR2GRAY)
    found = {"default": 0, "min_size=24": 0, "opencv": 0}
    for index, face in enumerate(faces):
        frame = background.copy()
        x, y = 20 + index * 97 % 240, 20 + index * 61 % 160
        frame[y : y + 52, x : x + 52] = cv2.resize(face, (52, 52), interpolation=cv2.INTER_CUBIC)
        for name, boxes in (("default", default.detect(frame)), ("min_size=24", small.detect(frame)),
                            ("opencv", cascade.detectMultiScale(cv2.equalizeHist(frame), 1.1, 5, minSize=(40, 40)))):
            found[name] += found_of([Face.from_probabilities(box, np.full(7, 1 / 7)) for box in boxes], [(x, y, 52, 52)])
    assert found["opencv"] >= 20, "the faces chosen are ones OpenCV's cascade mostly finds"
    assert found["min_size=24"] >= found["opencv"] - 2 and found["default"] < found["opencv"] - 5, found


def test_faces_in_large_photos_are_found_at_the_default_settings() -> None:
    """A 320-pixel scan, the earlier default, lost 150 px faces in 1920x1080 photos and every face in a phone's."""
    faces = detectable_faces(6, size=130)
    for (height, width), side in [((1080, 1920), 150), ((3024, 4032), 300)]:
        frame = textured_background(height, width, seed=7)
        step = width // len(faces)
        truth = [paste_face(frame, face, k * step + (step - side) // 2, height // 3, side) for k, face in enumerate(faces)]
        # The cascade misses the odd face at any one size (5 of these 6 are found at 1920 and 4032 px
        # wide); its false alarms on this synthetic noise (a few small boxes) are not the point here.
        assert found_of(Recognizer().predict(frame), truth) >= 5, (width, side)
        assert found_of(Recognizer(detection_width=320).predict(frame), truth) <= 2, "what the cap would have cost"


def test_no_face_gives_an_empty_list(recognizer: Recognizer) -> None:
    assert recognizer.predict(textured_background(240, 320)) == []


def test_a_recognizers_margin_widens_the_boxes_it_classifies(photo) -> None:
    """Recognizer(margin=...) for another detector's tight boxes: each box is widened before its crop."""
    frame, truth = photo
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    boxes = np.array(truth)
    wide = Recognizer(margin=0.2)
    expected = wide.classify([crop_face(gray, box, 0.2) for box in boxes])
    assert np.allclose(wide.classify_boxes(gray, boxes), expected, atol=1e-6)
    assert not np.allclose(Recognizer().classify_boxes(gray, boxes), expected, atol=1e-3)


def test_crop_margin_and_frame_edges() -> None:
    gray = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    assert crop_face(gray, (10, 20, 30, 40)).shape == (40, 30)
    assert crop_face(gray, (10, 20, 30, 40), margin=0.1).shape == (48, 36)
    edge = crop_face(gray, (-10, 90, 40, 40))  # partly outside: padded with the edge, same size
    assert edge.shape == (40, 40)
    assert (edge[:, :10] == edge[:, 10:11]).all()


def test_exif_orientation_is_honoured(recognizer: Recognizer, tmp_path: Path) -> None:
    frame = textured_background(300, 300, seed=5)
    paste_face(frame, detectable_faces(1, size=150)[0], 70, 70, 150)
    sideways = cv2.rotate(frame, cv2.ROTATE_90_COUNTERCLOCKWISE)  # as a camera held on its side stores it
    plain = tmp_path / "sideways.jpg"
    cv2.imwrite(str(plain), sideways)
    tagged = tmp_path / "tagged.jpg"
    tagged.write_bytes(exif_oriented_jpeg(sideways, orientation=6))  # 6: show rotated 90 degrees clockwise
    assert recognizer.predict(plain) == []  # the cascade cannot see a sideways face
    found = recognizer.predict(tagged)
    assert len(found) == 1
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(tagged) as opened:  # Image.open keeps the stored pixels: the tag must still be applied
        assert recognizer.predict(opened) == found
        assert np.allclose(recognizer.classify(opened), recognizer.classify(cv2.imread(str(tagged))), atol=0.02)


def test_a_recognizer_says_which_model_it_runs(recognizer: Recognizer) -> None:
    assert repr(recognizer).startswith("Recognizer(model='fervid-vgg', path='") and "fervid-vgg.onnx" in repr(recognizer)


def test_bad_inputs_are_clear_errors(recognizer: Recognizer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(FervidError, match="not a readable image"):
        recognizer.predict(broken)
    with pytest.raises(FervidError, match="no such file"):
        recognizer.predict(tmp_path / "missing.jpg")
    with pytest.raises(FervidError, match="a folder, not an image"):
        recognizer.predict(tmp_path)
    with pytest.raises(FervidError, match="image array"):
        recognizer.predict(np.zeros((3,), np.uint8))
    with pytest.raises(FervidError, match="margin"):
        Recognizer(margin=2.0)
    with pytest.raises(FervidError, match="not a fervid expression model"):
        Recognizer(write_non_face_onnx(tmp_path / "flat.onnx"))
    with pytest.raises(FervidError, match=r"nan.onnx: gives NaN or infinite outputs for a plain gray face"):  # passed as probabilities
        Recognizer(write_nan_onnx(tmp_path / "nan.onnx"))
    for name, inputs in (("none", []), ("scalar", [((), "x")]), ("two", [(["N", 48, 48, 1], "x"), (["N", 48, 48, 1], "z")])):
        with pytest.raises(FervidError, match=r"not a fervid expression model \(inputs: "):  # IndexError tracebacks
            Recognizer(write_graph_onnx(tmp_path / f"{name}.onnx", inputs))
    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(FervidError, match="pipe.onnx: not a regular file"):  # ONNX Runtime waited forever
        Recognizer(tmp_path / "pipe.onnx")
    with pytest.raises(FervidError, match="a folder without model.onnx"):
        Recognizer(tmp_path)
    for thing, kind in ((None, "NoneType"), (42, "int"), (b"\xff\xd8 jpeg bytes", r"bytes; decode the bytes first"),
                        (bytearray(b"\xff\xd8"), r"bytearray; decode the bytes first")):
        with pytest.raises(FervidError, match=f"expected an image path or array, got {kind}"):
            recognizer.predict(thing)
    with pytest.raises(FervidError, match=r"^https://example.com/a.jpg: a URL; fervid reads image files"):
        recognizer.predict("https://example.com/a.jpg")
    for bad in (None, 5):
        with pytest.raises(FervidError, match="expected face crops"):
            recognizer.classify(bad)
    for paths in ("photo.png", [Path("a.png"), Path("b.png")]):  # a path's characters were taken for crops of shape ()
        with pytest.raises(FervidError, match=r"^classify takes face crops \(arrays or PIL images\), not file paths"):
            recognizer.classify(paths)
    with pytest.raises(FervidError, match=r"^predict takes one image, got a list of 2 paths: call it once per path"):
        recognizer.predict(["a.jpg", "b.jpg"])
    with pytest.raises(FervidError, match=r"^detect takes one image, got a list of 2 paths"):  # it said "predict takes"
        recognizer.detect(["a.jpg", "b.jpg"])
    with pytest.raises(FervidError, match=r"got nested lists of unequal lengths$"):
        recognizer.predict([[1, 2], [3]])
    with pytest.raises(FervidError, match=r"^face 0: expected a crop \(H, W\) or \(H, W, C\), got nested lists of unequal lengths$"):
        recognizer.classify([[[1, 2], [3]]])
    with pytest.raises(FervidError, match="^the image path is an empty string$"):  # was read as the current folder
        recognizer.predict("")
    for options, message in (({"threads": 0}, r"threads must be None \(up to 4\) or a whole number from 1 to 1024, got 0"),
                             ({"threads": 2**40}, r"threads must be None \(up to 4\) or a whole number from 1 to 1024, got 1099511627776"),
                             ({"flip_tta": "yes"}, "flip_tta must be True, False or None"),
                             ({"model": 5}, "model must be a bundled model name"),
                             ({"min_neighbors": 2.5}, "min_neighbors must be a whole number, got 2.5"),
                             ({"min_size": "a"}, "min_size must be a whole number, got 'a'"),
                             ({"min_neighbors": 3_000_000_000}, "min neighbours must be 0 to 1000, got 3000000000"),
                             ({"min_size": 2**40}, "min size must be 1 to 1,000,000 pixels"),
                             ({"detection_width": 2**40}, "detection width must be 64 to 1,000,000 pixels"),
                             ({"scale_factor": "1.2"}, "scale factor must be a number from 1.01 to 100"),
                             ({"scale_factor": float("nan")}, "scale factor must be 1.01 to 100, got nan"),
                             ({"scale_factor": 1.0000000001}, "scale factor must be 1.01 to 100, got 1.0000000001"),
                             ({"scale_factor": 1e308}, r"scale factor must be 1.01 to 100, got 1e\+308"),
                             ({"margin": "0.2"}, "margin must be a number from 0 to 1, got '0.2'"),
                             ({"margin": np.True_}, "margin must be a number from 0 to 1, got np.True_"),
                             ({"threads": np.float64(2)}, "threads must be None"),
                             ({"model": ""}, "^model is an empty string; give a bundled model name"),
                             ({"model": "fervid-vgg.onnx"}, r"^fervid-vgg.onnx: no such model file \(the bundled model is named fervid-vgg, without .onnx\)$")):
        with pytest.raises(FervidError, match=message):
            Recognizer(**options)


def test_any_path_like_and_a_home_relative_path_are_read(recognizer: Recognizer, photo, tmp_path: Path, monkeypatch) -> None:
    frame, truth = photo
    cv2.imwrite(str(tmp_path / "photo.png"), frame)

    class Where:  # an os.PathLike that is not a pathlib.Path
        def __fspath__(self) -> str:
            return str(tmp_path / "photo.png")

    monkeypatch.setenv("HOME", str(tmp_path))
    for given in (Where(), "~/photo.png"):
        assert_matches(recognizer.predict(given), truth)


def test_pil_images_are_read_by_their_own_mode(recognizer: Recognizer, photo) -> None:
    """np.asarray of a palette, CMYK or YCbCr image is not BGR; such images were classified wrongly without a word."""
    image_module = pytest.importorskip("PIL.Image")
    frame, truth = photo
    rgb = image_module.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    expected = [face.expression for face in recognizer.predict(frame)]
    for mode in ("RGB", "L", "RGBA", "CMYK", "YCbCr", "P"):
        found = recognizer.predict(rgb.convert(mode))
        assert_matches(found, truth)
        if mode != "P":  # a 256-colour palette changes the pixels a little
            assert [face.expression for face in found] == expected, mode
    crops = [rgb.crop((x, y, x + w, y + h)).convert("YCbCr") for x, y, w, h in truth]
    assert np.allclose(recognizer.classify(crops), recognizer.classify_boxes(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), np.array(truth)), atol=0.02)


def test_pil_images_of_deep_modes_are_read_by_dtype_by_predict_and_classify(recognizer: Recognizer, photo, tmp_path: Path) -> None:
    """A float 0..1 picture (mode "F", as Pillow opens a 32-bit float TIFF) went through PIL's "L",
    which clipped it to black; a single 16-bit crop was refused by classify; big-endian 16 bit
    ("I;16B") was refused as an integer type other than uint16."""
    image_module = pytest.importorskip("PIL.Image")
    frame, truth = photo
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    expected = [face.expression for face in recognizer.predict(gray)]
    sixteen = gray.astype(">u2") * 257
    deep = {
        "F 0..1": image_module.fromarray(gray.astype(np.float32) / 255),
        "F 0..255": image_module.fromarray(gray.astype(np.float32)),
        "I;16": image_module.fromarray(gray.astype(np.uint16) * 257),
        "I;16B": image_module.frombytes("I;16B", gray.shape[::-1], sixteen.tobytes()),
        "I": image_module.fromarray(gray.astype(np.int32)),
    }
    assert deep["I;16B"].mode == "I;16B" and deep["F 0..1"].mode == "F"
    x, y, w, h = truth[0]
    one_crop = recognizer.classify(gray[y : y + h, x : x + w])
    for name, image in deep.items():
        found = recognizer.predict(image)
        assert_matches(found, truth)
        assert [face.expression for face in found] == expected, name
        single = recognizer.classify(image.crop((x, y, x + w, y + h)))
        assert single.shape == (1, 7) and single == pytest.approx(one_crop, abs=0.02), name
    with pytest.raises(FervidError, match=r"^float32 image with values 0\.\.1020: float images must hold 0\.\.1"):
        recognizer.predict(image_module.fromarray(gray.astype(np.float32) * 4))


def test_what_pil_cannot_read_is_a_one_line_error(recognizer: Recognizer, photo, tmp_path: Path) -> None:
    """PIL's own ValueError, OSError and AssertionError came through as tracebacks."""
    image_module = pytest.importorskip("PIL.Image")
    frame, _ = photo
    cv2.imwrite(str(tmp_path / "photo.jpg"), frame)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "photo.jpg").read_bytes()[:3000])
    with image_module.open(tmp_path / "photo.jpg") as closed:
        pass
    unreadable = {"LAB": image_module.new("LAB", (64, 64)), "cut short": image_module.open(tmp_path / "cut.jpg"), "closed": closed}
    for name, image in unreadable.items():
        for call in (recognizer.predict, recognizer.classify, lambda image: recognizer.classify([image])):
            with pytest.raises(FervidError, match=r"^a PIL image that PIL cannot read or convert \(.+\)$"):
                call(image)


def test_classify_refuses_a_gray_and_alpha_crop_rather_than_read_48_faces_2_pixels_wide(recognizer: Recognizer) -> None:
    with pytest.raises(FervidError, match=r"^cannot read a crop of shape \(48, 48, 2\): 2 channels \(gray \+ alpha\?\)"):
        recognizer.classify(np.zeros((48, 48, 2), np.uint8))


def test_numpy_scalars_and_path_likes_are_taken_as_settings(photo) -> None:
    frame, truth = photo

    class Where:  # an os.PathLike that is not a pathlib.Path
        def __fspath__(self) -> str:
            return str(bundled_model_path("fervid-compact"))

    recognizer = Recognizer(Where(), margin=np.float32(0.0), threads=np.int64(1), flip_tta=np.True_)
    assert recognizer.classifier.name == "fervid-compact" and recognizer.flip_tta is True
    assert type(recognizer.margin) is float
    assert_matches(recognizer.predict(frame), truth)


def test_faces_are_values_that_hash_and_need_seven_probabilities() -> None:
    row = np.array([0.1, 0.0, 0.1, 0.6, 0.1, 0.05, 0.05])
    first, again = Face.from_probabilities((1, 2, 3, 4), row), Face.from_probabilities((1, 2, 3, 4), row.copy())
    assert first == again and hash(first) == hash(again) and len({first, again}) == 1
    assert Face.from_probabilities((1, 2, 3, 5), row) not in {first}
    reordered = Face(first.box, first.expression, first.confidence, dict(reversed(first.probabilities.items())))
    assert reordered == first and hash(reordered) == hash(first), "equal dicts in another order are equal faces"
    with pytest.raises(FervidError, match=r"^expected 7 probabilities, one per expression \(angry, .+\), got shape \(2,\)$"):
        Face.from_probabilities((1, 2, 3, 4), [0.5, 0.5])


def test_a_faces_probabilities_are_read_only_and_its_arguments_checked() -> None:
    """A Face hashed by its probabilities could be changed in place: it left its set, and its
    expression and confidence no longer matched. A label index out of range, NaN probabilities or
    a box of NaN or three numbers were IndexError/ValueError tracebacks, label -1 silently 'surprise'."""
    import copy
    import pickle

    row = [0.1, 0.0, 0.1, 0.6, 0.1, 0.05, 0.05]
    face = Face.from_probabilities((1, 2, 3, 4), row)
    held = {face}
    with pytest.raises(TypeError, match="read-only"):
        face.probabilities["sad"] = 0.9
    for change in (lambda p: p.update(sad=0.9), lambda p: p.pop("sad"), lambda p: p.clear(), lambda p: p.setdefault("x", 1.0)):
        with pytest.raises(TypeError, match="read-only"):
            change(face.probabilities)
    assert face in held and face.probabilities["sad"] == 0.05 and face.to_dict()["probabilities"]["sad"] == 0.05
    assert Face(face.box, face.expression, face.confidence, dict(face.probabilities)).probabilities.get("happy") == 0.6
    for twin in (pickle.loads(pickle.dumps(face)), copy.deepcopy(face)):
        assert twin == face and hash(twin) == hash(face)
    assert json.loads(json.dumps(face.probabilities)) == dict(face.probabilities)
    for bad, message in (({"label": 9}, "label must be an index from 0 to 6"), ({"label": -1}, "label must be an index"),
                         ({"label": 1.5}, "label must be an index"), ({"label": True}, "label must be an index")):
        with pytest.raises(FervidError, match=message):
            Face.from_probabilities((1, 2, 3, 4), row, **bad)
    assert Face.from_probabilities((1, 2, 3, 4), row, label=np.int64(0)).expression == "angry"
    with pytest.raises(FervidError, match="probabilities must be finite numbers"):
        Face.from_probabilities((1, 2, 3, 4), [np.nan] * 7)
    for box in ((1, 2, np.nan, 4), (1, 2, 3)):
        with pytest.raises(FervidError, match="box must be 4 finite numbers"):
            Face.from_probabilities(box, row)
    # scores that are not a softmax row gave a Face with a confidence of 5.0 and a negative probability
    for scores in ([5, -3, 0, 0, 0, 0, 0], [0.5] * 7, [1.2, -0.2, 0, 0, 0, 0, 0]):
        with pytest.raises(FervidError, match="must be 0 to 1 and sum to 1"):
            Face.from_probabilities((1, 2, 3, 4), scores)
    assert Face.from_probabilities((1, 2, 3, 4), np.float32(row) * np.float32(1 + 1e-7)).expression == "happy"
    with pytest.raises(FervidError, match="track_id must be None or a whole number"):
        Face.from_probabilities((1, 2, 3, 4), row, track_id="x")  # type: ignore[arg-type]
    assert Face.from_probabilities((1, 2, 3, 4), row, track_id=np.int64(3)).to_dict()["track_id"] == 3
    for digits in ("2", 2.5, -1, True):
        with pytest.raises(FervidError, match="digits must be None"):
            face.to_dict(digits)  # type: ignore[arg-type]
    assert face.to_dict(np.int64(1))["probabilities"]["sad"] == 0.1 and face.to_dict(0)["confidence"] == 1.0


def test_a_recognizer_pickles_as_its_arguments_for_process_pools(photo, tmp_path: Path) -> None:
    """ONNX Runtime's session cannot be pickled, so ProcessPoolExecutor and multiprocessing failed
    with its TypeError; a bundled model travels by name, another by its file's absolute path."""
    import copy
    import pickle
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    frame = photo[0]
    named = Recognizer("fervid-compact", min_size=60, flip_tta=False)
    twin = pickle.loads(pickle.dumps(named))
    assert twin.classifier.name == "fervid-compact" and twin.flip_tta is False and twin.detector.config.min_size == 60
    assert named.__reduce__()[1] == ("fervid-compact",)
    assert [f.to_dict() for f in twin.predict(frame)] == [f.to_dict() for f in named.predict(frame)]
    shutil.copy(bundled_model_path("fervid-compact"), tmp_path / "mine.onnx")
    shutil.copy(bundled_model_path("fervid-compact").with_suffix(".json"), tmp_path / "mine.json")
    mine = Recognizer(tmp_path / "mine.onnx")
    assert mine.__reduce__()[1] == (str(tmp_path / "mine.onnx"),) and copy.deepcopy(mine).classifier.path == mine.classifier.path
    # a relative path travels as the absolute one: a worker starts in another folder (Ray's do)
    (tmp_path / "elsewhere").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        pickled = pickle.dumps(Recognizer("mine.onnx"))
        patch.chdir(tmp_path / "elsewhere")
        assert pickle.loads(pickled).classifier.path == tmp_path / "mine.onnx"
    with ProcessPoolExecutor(1) as pool:
        assert pool.submit(named.classify, frame[40:170, 20:150]).result() == pytest.approx(named.classify(frame[40:170, 20:150]), abs=1e-6)
    # Settings changed after construction travel too: the worker's copy was rebuilt without them.
    named.flip_tta, named.margin = True, 0.2
    changed = pickle.loads(pickle.dumps(named))
    assert (changed.flip_tta, changed.margin) == (True, 0.2)
    assert [f.to_dict() for f in changed.predict(frame)] == [f.to_dict() for f in named.predict(frame)]


def test_the_default_threads_fit_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned to one core (taskset, a container's cpuset), a recognizer still ran os.cpu_count()
    threads on it, at half the speed of one."""
    from fervid.runtime.classify import ExpressionClassifier

    def threads() -> int:
        return ExpressionClassifier("fervid-compact").session.get_session_options().intra_op_num_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert threads() == 4, "at most 4 as before"
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    assert threads() == 4


def test_the_recognizers_help_explains_every_argument() -> None:
    """help(fervid.Recognizer) named no argument: what a model may be, or what threads=None does,
    was only in docs/realtime.md."""
    import inspect

    documented = Recognizer.__doc__ or ""
    for name in inspect.signature(Recognizer).parameters:
        assert f"``{name}``" in documented, name


def test_using_the_api_leaves_the_environment_as_it_was() -> None:
    """The CLI drops a COLUMNS no text fits in (rich printed nothing at COLUMNS=0); importing the
    library did it too, to the app that embeds it."""
    code = "import os, fervid; fervid.Recognizer; from fervid.console import warn; warn('x'); print(repr(os.environ.get('COLUMNS')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "0"})
    assert result.stdout.strip() == "'0'" and "warning: x" in result.stderr, result.stdout + result.stderr


def test_unrounded_face_dicts_keep_the_probabilities() -> None:
    face = Face.from_probabilities((1, 2, 3, 4), np.array([0.123456789, 0.5, 0.1, 0.1, 0.1, 0.05, 0.026543211]))
    assert face.to_dict(None)["probabilities"]["angry"] == 0.123456789 and face.to_dict(None)["confidence"] == 0.5
    assert face.to_dict()["probabilities"]["angry"] == 0.1235


def test_fervid_exports_its_error_and_lists_the_lazy_api() -> None:
    assert fervid.FervidError is FervidError and "FervidError" in fervid.__all__
    assert {"Recognizer", "Face", "FervidError"} <= set(dir(fervid)) and "TYPE_CHECKING" not in dir(fervid)
    source = ast.parse(Path(fervid.__file__).read_text())
    checked = [node for node in source.body if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"]
    seen = {alias.name for node in checked for statement in node.body for alias in getattr(statement, "names", [])}
    assert {"Recognizer", "Face"} <= seen  # what type checkers and IDEs resolve fervid.Recognizer to
    assert (resources.files("fervid") / "py.typed").is_file()
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["fervid"]  # so the wheel ships it


def test_import_fervid_stays_light() -> None:
    code = "import sys, fervid; print('LOADED', sorted(m for m in sys.modules if m in ('cv2', 'onnxruntime', 'fervid.runtime')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in result.stdout, result.stdout + result.stderr


def test_every_dtype_is_read_at_its_documented_scale(recognizer: Recognizer, photo) -> None:
    """float 0..255 (``astype(np.float32)``) and int32/int64 (PIL mode "I") used to give no faces."""
    frame, truth = photo
    reference = recognizer.predict(frame)
    assert_matches(reference, truth)
    variants = {
        "float32 0..255": frame.astype(np.float32),
        "float64 0..1": frame / 255.0,
        "float16 0..1": (frame / 255.0).astype(np.float16),
        "int32": frame.astype(np.int32),
        "int64": frame.astype(np.int64),
        "uint16": frame.astype(np.uint16) * 257,
    }
    for name, image in variants.items():
        faces = recognizer.predict(image)
        assert [f.box for f in faces] == [f.box for f in reference], name
        for face, expected in zip(faces, reference):
            assert face.probabilities == pytest.approx(expected.probabilities, abs=1e-3), name
    x, y, w, h = truth[1]
    crop = frame[y : y + h, x : x + w]
    expected = recognizer.classify([crop])
    for image in (crop.astype(np.float32), crop.astype(np.int64), crop / 255.0):
        assert recognizer.classify([image]) == pytest.approx(expected, abs=1e-3), image.dtype


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((60, 60), 1.3, np.float32), r"float32 image with values 1\.3\.\.1\.3: .*pass uint8"),  # 0..1 pushed past 1
        (np.full((60, 60), -10.0), r"float64 image with values -10\.\.-10"),
        (np.full((60, 60), 300.0), r"float64 image with values 300\.\.300"),
        (np.full((60, 60), np.nan, np.float32), "NaN or infinite"),
        (np.full((60, 60), 4095, np.int32), r"int32 image with values 4095\.\.4095: .*uint16 \(0\.\.65535\)"),  # 12-bit
        (np.full((60, 60), -1, np.int16), r"int16 image with values -1\.\.-1"),
        (np.arange(3600, dtype=np.uint16).reshape(60, 60) % 200, r"uint16 image with values 0\.\.199: .*8-bit picture in uint16"),
        (np.ones((60, 60), bool), "dtype bool is not an image"),
        (np.zeros((60, 60, 2), np.uint8), r"image of shape \(60, 60, 2\)"),
    ],
)
def test_arrays_of_unclear_scale_or_shape_are_refused(recognizer: Recognizer, image: np.ndarray, message: str) -> None:
    with pytest.raises(FervidError, match=message):
        recognizer.predict(image)
    with pytest.raises(FervidError, match="face 0: .*" + message):
        recognizer.classify([image])


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([(5000, 5000, 10, 10)], r"box 0 \(5000, 5000, 10, 10\) lies entirely outside the 560x360 image"),
        ([(20, 40, 130, 130), (-100, 10, 100, 50)], r"box 1 \(-100, 10, 100, 50\) lies entirely outside"),
        ([(30, 96, 0, 0)], r"box 0 \(30, 96, 0, 0\): width and height must be 1 or more"),
        ([(30, 96, -5, 40)], "width and height must be 1 or more"),
        ([(30, 96, 160)], r"\(x, y, w, h\) rows, got shape \(1, 3\)"),
        ([1, 2, 3, 4, 5, 6, 7, 8], r"got shape \(8,\)"),
        ([(1, 2, 3, 4), (1, 2, 3)], "rows of numbers"),
        ([("a", 2, 3, 4)], "rows of numbers"),
        ([("20", "40", "130", "130")], "rows of numbers"),  # text, True and None were read as numbers
        ([(True, True, True, True)], "rows of numbers"),
        ([(10, True, 50, 50)], "rows of numbers"),  # NumPy made the True among ints a 1
        ([(None, 1, 2, 3)], "rows of numbers"),
        ([(20, 40, 130, 2**70)], "NaN, infinity or a value past 2"),  # a Python int past int64: still a number
        ([(np.nan, 2, 30, 40)], "NaN, infinity"),
        ([(0, 0, 10**9, 10**9)], "over 4 times the size of the 560x360 image"),
        ([[]], r"\(x, y, w, h\) rows, got shape \(1, 0\)"),  # a box of no numbers was no boxes: []
    ],
)
def test_malformed_boxes_are_clear_errors(recognizer: Recognizer, photo, boxes, message: str) -> None:
    """Boxes off the image or without area used to be classified as blank crops, with a confident
    label; classify_boxes (public too) did so until 2026-12-06, and read a negative size as a slice
    of most of the frame."""
    with pytest.raises(FervidError, match=message):
        recognizer.predict(photo[0], boxes=boxes)
    with pytest.raises(FervidError, match=message):
        recognizer.classify_boxes(cv2.cvtColor(photo[0], cv2.COLOR_BGR2GRAY), boxes)


def test_classify_boxes_takes_a_gray_frame_and_matches_predict(recognizer: Recognizer, photo) -> None:
    frame, truth = photo
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    expected = [list(face.probabilities.values()) for face in recognizer.predict(frame, boxes=truth)]
    assert recognizer.classify_boxes(gray, truth) == pytest.approx(np.array(expected), abs=1e-6)
    assert recognizer.classify_boxes(gray, truth[0]).shape == (1, 7)  # one flat box, as predict reads it
    for bad in (frame, gray.astype(np.float32), gray[:0], "photo.jpg"):
        with pytest.raises(FervidError, match="classify_boxes takes a gray frame"):
            recognizer.classify_boxes(bad, truth)  # type: ignore[arg-type]


def test_public_type_hints_resolve_at_run_time() -> None:
    """Runtime checkers and Sphinx read hints with typing.get_type_hints: 'Image.Image' (PIL, imported
    only for type checkers) was a NameError for predict, classify and detect."""
    import inspect
    import typing

    for method in (Recognizer.__init__, Recognizer.predict, Recognizer.classify, Recognizer.classify_boxes,
                   Recognizer.detect, Face.from_probabilities, Face.to_dict):
        assert "return" in typing.get_type_hints(method), method
    # color is keyword-only everywhere, as predict and classify had it
    assert all(inspect.signature(method).parameters["color"].kind is inspect.Parameter.KEYWORD_ONLY
               for method in (Recognizer.predict, Recognizer.classify, Recognizer.detect))


def test_one_flat_box_and_boxes_partly_outside_are_kept(recognizer: Recognizer, photo) -> None:
    frame, truth = photo
    assert [f.box for f in recognizer.predict(frame, boxes=truth[0])] == [truth[0]]
    assert recognizer.predict(frame, boxes=[]) == [] and recognizer.predict(frame, boxes=np.zeros((0, 4))) == []
    assert [f.box for f in recognizer.predict(frame, boxes=[(-50, -50, 100, 100)])] == [(-50, -50, 100, 100)]
    x, y, w, h = truth[0]  # another detector's fractional box: the nearest pixels, not truncated
    assert [f.box for f in recognizer.predict(frame, boxes=(x + 0.6, y - 0.6, w + 0.7, h - 0.2))] == [(x + 1, y - 1, w + 1, h)]


def test_classify_counts_a_single_crop_as_one_face(recognizer: Recognizer, photo) -> None:
    """A lone crop used to be iterated row by row: an error for gray, one 'face' per row for BGR."""
    frame, truth = photo
    x, y, w, h = truth[0]
    crop = frame[y : y + h, x : x + w]
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    for single in (crop, gray, gray[..., None], cv2.cvtColor(crop, cv2.COLOR_BGR2BGRA)):
        probabilities = recognizer.classify(single)
        assert probabilities.shape == (1, 7), single.shape
        assert probabilities == pytest.approx(recognizer.classify([single]), abs=1e-6)
    stack = np.stack([cv2.resize(gray, (48, 48))] * 5)  # a stacked batch (N, H, W) is still N faces
    assert recognizer.classify(stack).shape == (5, 7)
    assert recognizer.classify(stack[..., None]).shape == (5, 7)
    assert recognizer.classify(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


def test_classify_refuses_crops_that_are_not_images(recognizer: Recognizer) -> None:
    face = np.full((48, 48), 128, np.uint8)
    with pytest.raises(FervidError, match=r"face 1: an empty crop \(shape \(0, 0\)\)"):
        recognizer.classify([face, np.zeros((0, 0), np.uint8)])
    with pytest.raises(FervidError, match=r"face 0: an empty crop"):
        recognizer.classify([np.zeros((0, 40, 3), np.uint8)])
    with pytest.raises(FervidError, match=r"face 1: expected a crop \(H, W\) or \(H, W, C\), got shape \(150,\)"):
        recognizer.classify([face, np.zeros(150, np.uint8)])
    with pytest.raises(FervidError, match=r"a list of \(H, W\) or \(H, W, C\) arrays"):
        recognizer.classify(np.zeros(150, np.uint8))
    for given in (b"\xff\xd8 jpeg bytes", bytearray(4), {"a": face}, None):  # iterated: "face 0: ... got shape ()"
        with pytest.raises(FervidError, match=rf"^expected face crops \(an array, a PIL image or a list of them\), got {type(given).__name__}$"):
            recognizer.classify(given)


def test_color_is_read_in_any_case(recognizer: Recognizer, photo, tmp_path: Path) -> None:
    frame, truth = photo
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    expected = recognizer.predict(rgb, color="rgb")
    for color in ("RGB", "Rgb"):
        assert recognizer.predict(rgb, color=color) == expected  # type: ignore[arg-type]
    assert recognizer.predict(frame, color="BGR") == recognizer.predict(frame)
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), frame)
    with pytest.raises(FervidError, match="color must be 'bgr' or 'rgb'"):
        recognizer.predict(path, color="hsv")  # type: ignore[arg-type]


def _tiny_onnx(target: Path, *, card: str | None = None, softmax: bool = True, batch: object = "N",
               element=None, outputs: int = 1, classes: int = 7, width: object = 7) -> Path:
    """A face model by hand: (batch, 48, 48, 1) in, a linear layer of ``classes`` (declared ``width``
    wide), a softmax unless told not."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    element = element or TensorProto.FLOAT
    weights = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.01, (2304, classes)).astype(np.float32), "w")
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT), helper.make_node("Flatten", ["xf"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    last = "y" if isinstance(width, int) else "probabilities"  # a named width: reshaped, so no shape inference fixes it
    nodes.append(helper.make_node("Softmax", ["logits"], [last]) if softmax else helper.make_node("Identity", ["logits"], [last]))
    initializers = [weights]
    if last != "y":  # to (batch, -1) with the batch taken from the input at run time: inference cannot fold it
        nodes += [helper.make_node("Shape", ["x"], ["batch"], start=0, end=1),
                  helper.make_node("Concat", ["batch", "rest"], ["rows"], axis=0),
                  helper.make_node("Reshape", ["probabilities", "rows"], ["y"])]
        initializers.append(numpy_helper.from_array(np.array([-1], np.int64), "rest"))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])]
    if outputs == 2:
        outs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 7]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", element, [batch, 48, 48, 1])], outs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])  # Shape(start, end) is opset 15
    model.ir_version = 8
    if card is not None:
        helper.set_model_props(model, {"fervid": card})
    onnx.save(model, str(target))
    return target


def test_a_hand_made_model_is_checked_before_it_gives_silently_wrong_probabilities(tmp_path: Path) -> None:
    """A card or a graph that would run, but wrongly (NaN confidences, a flipped ranking, logits
    printed as probabilities, flip averaging from the string "false"), is one clear error at load."""
    from onnx import TensorProto

    from fervid.runtime.classify import ExpressionClassifier

    def card(**inference: object) -> str:
        return json.dumps({"classes": list(EXPRESSIONS), "inference": inference})

    good = ExpressionClassifier(_tiny_onnx(tmp_path / "good.onnx", card=card(flip_tta=True, temperature=0.8)))
    assert good.flip_tta is True and good.temperature == 0.8
    assert np.allclose(good.classify([np.zeros((48, 48), np.uint8)]).sum(axis=1), 1, atol=1e-5)
    refused = {
        "string flip": (dict(card=card(flip_tta="false")), "flip_tta must be true or false, got 'false'"),
        "zero temperature": (dict(card=card(temperature=0)), "temperature must be a number above 0, got 0"),
        "negative temperature": (dict(card=card(temperature=-1)), "temperature must be a number above 0"),
        "text blur": (dict(card=card(input_blur="abc")), "input_blur must be a number of pixels"),
        "inference list": (dict(card=json.dumps({"inference": []})), "'inference' must be a JSON object"),
        "not JSON": (dict(card="{not json"), "is not valid JSON"),
        "not an object": (dict(card="null"), "is not a JSON object"),
        "no class list": (dict(card=json.dumps({"classes": None})), "differ from fervid's"),
        "logits": (dict(softmax=False), "its outputs are not probabilities"),
        "fixed batch": (dict(batch=1), "its batch size is fixed to 1"),
        "uint8 input": (dict(element=TensorProto.UINT8), "not a fervid expression model"),
        "two outputs": (dict(outputs=2), "not a fervid expression model"),
        # a width known only when it ran passed the shape check: 6 probabilities sat under 7 class names
        "six named": (dict(classes=6, width="K"), "one face gave outputs of shape [1, 6]; expected one row of 7 probabilities"),
        "eight named": (dict(classes=8, width="K"), "one face gave outputs of shape [1, 8]"),
    }
    for name, (settings, message) in refused.items():
        with pytest.raises(FervidError, match=re.escape(message)):
            ExpressionClassifier(_tiny_onnx(tmp_path / f"{name}.onnx", **settings))


def test_a_channels_first_net_with_named_dimensions_is_refused_at_load(tmp_path: Path) -> None:
    """Named dimensions pass the shape check; the one face run at load finds the layout fervid cannot feed."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from fervid.runtime.classify import ExpressionClassifier

    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(rng.normal(0, 0.1, (4, 1, 3, 3)).astype(np.float32), "k"),
                    numpy_helper.from_array(rng.normal(0, 0.1, (4, 7)).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["l"]),
             helper.make_node("Softmax", ["l"], ["y"])]
    graph = helper.make_graph(nodes, "nchw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "nchw.onnx"))
    with pytest.raises(FervidError, match=re.escape("nchw.onnx: not a fervid expression model (one [1, 48, 48, 1] face failed to run: ")):
        ExpressionClassifier(tmp_path / "nchw.onnx")


def test_a_keras_models_card_is_the_json_of_its_own_name(tmp_path: Path) -> None:
    """A run folder's model.json describes its model.keras only: another .keras file there (a copy
    of other weights) gets no card rather than the run's, and a damaged card is one clear error."""
    from fervid.runtime.classify import card_beside

    run = tmp_path / "run"
    run.mkdir()
    card = {"name": "the-run", "classes": ["angry"], "input": {"shape": [None, 48, 48, 1]}, "inference": {"input_blur": 0.7}}
    (run / "model.json").write_text(json.dumps(card))
    assert card_beside(run / "model.keras") == card
    assert card_beside(run / "other.keras") is None
    (run / "other.json").write_text("[1, 2]")
    with pytest.raises(FervidError, match=re.escape("other.json: the model card beside other.keras is not a JSON object")):
        card_beside(run / "other.keras")
    (run / "other.json").write_text("{cut short")
    with pytest.raises(FervidError, match=re.escape("other.json: the model card beside other.keras is not valid JSON")):
        card_beside(run / "other.keras")
    # evaluate's metrics over a run's card were taken for it: flip averaging went off without a word
    (run / "other.json").write_text(json.dumps({"model": "x", "accuracy": 0.5, "classes": ["angry"]}))
    with pytest.raises(FervidError, match=re.escape("other.json: the JSON beside other.keras is not a model card")):
        card_beside(run / "other.keras")


def test_a_bundled_name_is_not_shadowed_by_a_folder_of_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fervid.runtime.classify import DEFAULT_MODEL, bundled_model_path, resolve_model

    (tmp_path / DEFAULT_MODEL).mkdir()  # e.g. a run folder someone named after the model
    monkeypatch.chdir(tmp_path)
    assert resolve_model(DEFAULT_MODEL) == bundled_model_path()
    with pytest.raises(FervidError, match="a folder without model.onnx"):
        resolve_model(f"./{DEFAULT_MODEL}")  # written as a path: that folder
    for missing in ("nothere.ONNX", "gone.keras"):
        with pytest.raises(FervidError, match=f"{missing}: no such model file"):
            resolve_model(missing)


def test_an_upper_case_keras_suffix_is_told_to_be_renamed_everywhere(tmp_path: Path) -> None:
    """evaluate said to run `fervid export M.KERAS`, and export then said it expected a .keras model:
    Keras itself reads only the lower-case suffix."""
    from fervid.model.architectures import keras_model_path
    from fervid.runtime.classify import resolve_model

    model = tmp_path / "M.KERAS"
    model.write_bytes(b"PK")
    with pytest.raises(FervidError, match=re.escape("(rename it to M.keras first: Keras reads only that suffix)")):
        resolve_model(model)
    with pytest.raises(FervidError, match=re.escape("M.KERAS: Keras reads a model only from a name ending in .keras (lower case); rename it")):
        keras_model_path(model)
