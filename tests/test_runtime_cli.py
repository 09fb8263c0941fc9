"""``fervid predict``, ``fervid live`` and bad inputs through the real console script (one line, exit 2)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import detectable_faces, face_video_frames, paste_face, textured_background, write_folder_dataset, write_non_face_onnx, write_video
from fervid.images import UNREADABLE_WHY

FERVID = str(Path(sys.executable).parent / "fervid")


def fervid(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FERVID, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fervid: error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_names_with_brackets_are_printed_as_they_are(tmp_path: Path) -> None:
    """Rich reads "[summer]" as markup: a path or an install hint in a message must not lose its brackets."""
    photo = tmp_path / "holiday[summer].png"
    cv2.imwrite(str(photo), textured_background(200, 200, seed=1))
    result = fervid("predict", str(photo), "--no-save", "--json", str(tmp_path / "records[out].json"))
    assert result.returncode == 0, result.stderr
    assert f"warning: {photo}: no face found" in result.stderr
    assert (tmp_path / "records[out].json").exists()


def test_predict_crops_classifies_each_image_whole(tmp_path: Path) -> None:
    """Already-cropped faces (a dataset's 48x48 images) have no context for the cascade: without --crops they
    are faceless and the note says what to do; with it each image is one face, classified as the API does."""
    import numpy as np

    from fervid.runtime.recognizer import Recognizer

    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (48, 48), dtype=np.uint8), rng.integers(0, 256, (64, 56), dtype=np.uint8)]
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, crop in zip(paths, crops):
        cv2.imwrite(str(path), crop)
    detected = fervid("predict", *map(str, paths), "--no-save")
    assert detected.returncode == 0 and detected.stdout == "", detected.stderr
    assert f"{paths[0]}: no face found; if it is a cropped face, --crops classifies the whole image" in detected.stderr

    result = fervid("predict", *map(str, paths), "--crops", "--out", str(tmp_path / "annotated"))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["box"] for r in records] == [[0, 0, 48, 48], [0, 0, 56, 64]]
    expected = Recognizer().classify([cv2.imread(str(path)) for path in paths])
    for record, row in zip(records, expected):
        assert list(record["probabilities"].values()) == pytest.approx(row.tolist(), abs=1e-4)
    assert cv2.imread(str(tmp_path / "annotated" / "b.png")).shape[:2] == (64, 56)
    assert "hardly a face crop" not in result.stderr
    for name, shape in (("dot.png", (1, 1)), ("strip.png", (2, 300)), ("long.png", (20, 100))):
        cv2.imwrite(str(tmp_path / name), np.full(shape, 128, np.uint8))
        odd = fervid("predict", str(tmp_path / name), "--crops", "--no-save")
        assert odd.returncode == 0 and len(odd.stdout.splitlines()) == 1, odd.stderr  # still classified, as asked
        assert f"{tmp_path / name}: a {shape[1]}x{shape[0]} image is hardly a face crop; classified anyway" in odd.stderr


def test_predict_writes_records_annotated_images_and_notes_faceless_ones(tmp_path: Path) -> None:
    photo = textured_background(300, 400, seed=5)
    box = paste_face(photo, detectable_faces(1)[0], 120, 80, 130)
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "face.jpg"), photo)
    cv2.imwrite(str(folder / "empty.png"), textured_background(200, 200, seed=1))
    (folder / "broken.jpg").write_bytes(b"nope")
    result = fervid("predict", str(folder), "--out", str(tmp_path / "annotated"))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 1
    assert records[0]["image"].endswith("face.jpg")
    x, y, w, h = records[0]["box"]
    assert abs(x - box[0]) < 30 and abs(y - box[1]) < 30 and 0.7 < w / box[2] < 1.4
    assert "empty.png: no face found" in result.stderr
    assert "broken.jpg: not a readable image" in result.stderr
    annotated = sorted(p.name for p in (tmp_path / "annotated").iterdir() if not p.name.startswith("."))
    assert annotated == ["empty.png", "face.jpg"]
    assert sorted((tmp_path / "annotated" / ".fervid-predict").read_text().split()) == annotated  # what a rerun skips
    assert cv2.imread(str(tmp_path / "annotated" / "face.jpg")).shape == photo.shape
    # A later run over the folder that holds them skips the annotated copies, with --no-save too.
    again = fervid("predict", str(tmp_path), "--no-save", "--out", str(tmp_path / "annotated"))
    assert [json.loads(line)["image"] for line in again.stdout.splitlines()] == [str(folder / "face.jpg")], again.stderr

    to_file = fervid("predict", str(folder / "face.jpg"), "--no-save", "--json", str(tmp_path / "faces.json"))
    assert to_file.returncode == 0 and to_file.stdout == ""
    assert json.loads((tmp_path / "faces.json").read_text())[0]["box"] == records[0]["box"]
    dash = fervid("predict", str(folder / "face.jpg"), "--no-save", "--json", "-", cwd=tmp_path)  # '-' is stdout
    assert [json.loads(line)["box"] for line in dash.stdout.splitlines()] == [records[0]["box"]]
    assert not (tmp_path / "-").exists()
    named_dash = fervid("predict", str(folder / "face.jpg"), "--no-save", "--json", "./-", cwd=tmp_path)  # a file named '-'
    assert named_dash.returncode == 0 and named_dash.stdout == "", named_dash.stderr
    assert [json.loads(line)["box"] for line in (tmp_path / "-").read_text().splitlines()] == [records[0]["box"]]

    (tmp_path / "other").mkdir()  # a second photo named face.jpg: its annotated copy must not replace the first's
    cv2.imwrite(str(tmp_path / "other" / "face.jpg"), photo)
    both = fervid("predict", str(folder / "face.jpg"), str(tmp_path / "other" / "face.jpg"), "--out", str(tmp_path / "both"),
                  "--json", str(tmp_path / "faces.jsonl"))
    assert both.returncode == 0, both.stderr
    assert sorted(p.name for p in (tmp_path / "both").iterdir() if not p.name.startswith(".")) == ["face-2.jpg", "face.jpg"]
    lines = (tmp_path / "faces.jsonl").read_text().splitlines()  # any suffix but .json: JSON Lines
    assert [json.loads(line)["image"] for line in lines] == [str(folder / "face.jpg"), str(tmp_path / "other" / "face.jpg")]
    assert [json.loads(line)["annotated"] for line in lines] == [str(tmp_path / "both" / "face.jpg"), str(tmp_path / "both" / "face-2.jpg")]
    assert "annotated" not in json.loads(dash.stdout.splitlines()[0])  # --no-save: no copy to name


def test_predict_with_nothing_readable_fails_in_one_line(two_face_video, tmp_path: Path) -> None:
    video, _ = two_face_video
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    result = fervid("predict", str(tmp_path / "broken.jpg"), str(tmp_path / "missing.jpg"), str(video), "--no-save")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [  # fervid's lines only: no warning from OpenCV's own logging
        f"warning: {tmp_path / 'broken.jpg'}: not a readable image ({UNREADABLE_WHY})",
        f"warning: {tmp_path / 'missing.jpg'}: no such file",
        f"warning: {video}: a video, not an image (fervid live --source {video} reads videos)",
        "fervid: error: no image could be read",
    ]
    cv2.imwrite(str(tmp_path / "blank.png"), textured_background(64, 64, seed=1))
    mixed = fervid("predict", str(tmp_path / "blank.png"), str(video), "--no-save")
    assert mixed.returncode == 0, mixed.stderr  # a video beside the photos is counted as what it is, not as a damaged image
    assert mixed.stderr.strip().splitlines()[-1] == "1 image(s), 0 face(s); 1 without a face; 1 not an image (video or zip)"


def test_live_on_a_video_file_headless(two_face_video, tmp_path: Path) -> None:
    video, truth = two_face_video
    result = fervid("live", "--source", str(video), "--output", str(tmp_path / "out.mp4"), "--jsonl", str(tmp_path / "out.jsonl"), "--no-display")
    assert result.returncode == 0, result.stderr
    assert f"{len(truth)} frames" in result.stderr
    assert (tmp_path / "out.mp4").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len({row["track_id"] for row in rows}) == 2
    assert f"; {len(rows)} face boxes" in result.stderr
    assert "face #" in result.stderr and (tmp_path / "out-summary.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["live", "--source", "7", "--no-display"], "camera 7 could not be opened"),
        (["live", "--source", "ftp://example.com/a.mp4", "--no-display"], "unsupported URL scheme 'ftp'"),
        (["live", "--source", "BROKEN", "--no-display"], "not a readable video"),
        (["live", "--source", "EMPTY", "--no-display"], "empty.mp4: empty file (0 bytes)"),  # as predict and analyze say
        (["live", "--source", "missing.mp4", "--no-display"], "no such file"),
        (["live", "--source", "²", "--no-display"], "no such file"),  # a digit to str.isdigit, not a camera index
    ],
)
def test_bad_live_inputs_exit_non_zero_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    (tmp_path / "empty.mp4").write_bytes(b"")
    args = [str(tmp_path / f"{arg.lower()}.mp4") if arg in ("BROKEN", "EMPTY") else arg for arg in args]
    assert_one_line_error(fervid(*args, cwd=tmp_path), message)


def test_predict_refuses_an_out_folder_that_holds_its_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), textured_background(120, 160, seed=2))
    original = (folder / "a.png").read_bytes()
    assert_one_line_error(fervid("predict", str(folder / "a.png"), "--out", str(folder)), "which its annotated copy would overwrite")
    assert (folder / "a.png").read_bytes() == original
    assert_one_line_error(fervid("predict", str(folder), "--out", str(folder)), f"holds the input {folder / 'a.png'}")
    assert (folder / "a.png").read_bytes() == original
    for _ in range(2):  # a rerun into a subfolder skips the annotated copies the first run left there
        assert fervid("predict", str(folder), "--out", str(folder / "annotated")).returncode == 0
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.*") if not p.name.startswith(".")) == [
        "a.png", "annotated/a.png"]
    # A subfolder of photos as --out: its photos are inputs, not skipped as if they were annotated copies,
    # so the one named as another input's copy is refused, not replaced.
    cv2.imwrite(str(folder / "annotated" / "b.png"), textured_background(120, 160, seed=3))
    cv2.imwrite(str(folder / "b.png"), textured_background(120, 160, seed=4))
    kept = (folder / "annotated" / "b.png").read_bytes()
    assert_one_line_error(fervid("predict", str(folder), "--out", str(folder / "annotated")),
                          f"holds the input {folder / 'annotated' / 'b.png'}, which its annotated copy would overwrite")
    assert (folder / "annotated" / "b.png").read_bytes() == kept
    (tmp_path / "notes.txt").write_text("a file")
    assert_one_line_error(fervid("predict", str(folder), "--out", str(tmp_path / "notes.txt")), "a file, not a folder")
    assert_one_line_error(fervid("predict", str(folder / "a.png"), "--out", str(tmp_path / "annotated.jpg")),
                          "give a folder for the annotated copies")  # was made as a folder named like a photo
    assert not (tmp_path / "annotated.jpg").exists()
    assert fervid("predict", str(folder / "a.png"), "--out", str(tmp_path / "v1.2")).returncode == 0  # a folder with a dot
    assert (tmp_path / "v1.2" / "a.png").is_file()
    out = folder / "annotated"
    listed = (out / ".fervid-predict").read_bytes()
    for own in ("a.png", ".fervid-predict"):  # the run's own outputs in --out: the records replaced them
        assert_one_line_error(fervid("predict", str(folder / "b.png"), "--out", str(out), "--json", str(out / own)),
                              "is named like an annotated copy or their list in --out")
    assert (out / ".fervid-predict").read_bytes() == listed
    assert fervid("predict", str(folder / "b.png"), "--out", str(out), "--json", str(out / "faces.json")).returncode == 0


def test_predict_names_copies_so_the_file_system_and_the_list_of_copies_take_them(tmp_path: Path) -> None:
    """A newline in a photo's name split the list of copies in two (the copy was then read back as a
    photo); '-2' on a 253-byte name failed after the first photo and lost every record."""
    from fervid.runtime import photos

    long_name = "x" * 251 + ".png"
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / long_name), textured_background(120, 160, seed=2))
    cv2.imwrite(str(tmp_path / "a" / "two\nlines.png"), textured_background(120, 160, seed=3))
    taken: set[str] = set()
    given = (long_name, long_name, "two\nlines.png", "two\rlines.png", "two\u2028lines.png", "é" * 130 + ".png")
    names = [photos._unique_name(Path(name), taken) for name in given]
    assert names == [long_name, "x" * 249 + "-2.png", "two_lines.png", "two_lines-2.png", "two_lines-3.png", "é" * 125 + ".png"]
    result = fervid("predict", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out"), "--json",
                    str(tmp_path / "faces.json"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([".fervid-predict", *names[:3]])
    assert sorted((tmp_path / "out" / ".fervid-predict").read_text().splitlines()) == sorted(names[:3])
    again = fervid("predict", str(tmp_path / "a"), "--out", str(tmp_path / "out"))  # the copies are not read back as photos
    assert again.returncode == 0 and again.stderr.strip().splitlines()[-1].startswith("2 image(s)"), again.stderr


def test_bad_options_are_one_line_not_a_panel(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), textured_background(120, 160, seed=2))
    assert_one_line_error(fervid("predict", str(image), "--min-size", "big"), "Invalid value for '--min-size'")
    assert_one_line_error(fervid("predict", str(image), "--colour"), "No such option: --colour")
    assert_one_line_error(fervid("predict"), "Missing argument")
    assert_one_line_error(fervid("predcit"), "No such command 'predcit'")
    bare = fervid()
    assert bare.returncode == 2 and "Usage" in bare.stdout and bare.stderr == ""


def test_a_damaged_image_header_gets_fervids_line_only(tmp_path: Path) -> None:
    (tmp_path / "damaged.jpg").write_bytes(b"GIF89a" + bytes(10))  # OpenCV logs "[ERROR] can't read header" for it
    result = fervid("predict", str(tmp_path / "damaged.jpg"), "--no-save")
    assert result.stderr.strip().splitlines() == [f"fervid: error: {tmp_path / 'damaged.jpg'}: not a readable image ({UNREADABLE_WHY})"]
    assert result.returncode == 2
    live = fervid("live", "--source", str(tmp_path / "damaged.jpg"), "--no-display")  # one image is one error too
    assert live.returncode == 2
    assert live.stderr.strip().splitlines() == [f"fervid: error: {tmp_path / 'damaged.jpg'}: not a readable image ({UNREADABLE_WHY})"]
    missing = fervid("predict", str(tmp_path / "missing.jpg"))
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [f"fervid: error: {tmp_path / 'missing.jpg'}: no such file"]
    # Taken as a Path, a URL lost a slash ("https:/example.com/a.jpg: no such file"); '-' is not stdin.
    url = fervid("predict", "https://example.com/a.jpg", "--no-save")
    assert_one_line_error(url, "https://example.com/a.jpg: a URL; fervid reads image files (download it first")
    assert_one_line_error(fervid("predict", "-", "--no-save", cwd=tmp_path), "-: fervid predict reads image files, not standard input")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "--frames", "19"], "--frames must be 20 to 100,000, got 19"),
        (["bench", "--frames", "99999999999999999999"], "--frames must be 20 to 100,000"),  # each run's video is written first
        (["bench", "--faces-from", "NOTZIP"], "not a zip file (give the FER2013 zip)"),
        (["bench", "--faces-from", "FOLDER"], "a folder; give the FER2013 zip itself"),
        (["bench", "--faces-from", "missing.zip"], "--faces-from missing.zip: no such file"),
        (["bench", "--output", "NOTZIP"], "--output NOTZIP: not a Markdown page; give a .md file"),
        (["bench", "--output", "BINARY_MD"], "--output BINARY_MD: not a text (Markdown) file"),
        (["bench", "--output", "CARD"], "--output CARD: not a Markdown page"),  # a model card: its JSON broken by a section
        (["bench", "--output", "DEVICE"], "--output DEVICE: not a regular file (a device, pipe or socket)"),
        (["bench", "--output"], "Option '--output' requires an argument. (see 'fervid bench --help')"),
        (["bench", "--output", "INSIDE_NOTZIP"], "not.zip is a file, not a folder"),
        (["evaluate", "MODEL", "DATA"], "not a fervid expression model"),
        (["evaluate", "FOLDER", "DATA"], "a folder without model.onnx"),
        (["evaluate", "fervid-vgg", "DATA", "--against", "nope"], "no bundled model named 'nope'"),
        (["evaluate", "runs/typo", "DATA"], "runs/typo: no such model file or run folder"),
        (["evaluate", "./fervid-vgg", "DATA"], "./fervid-vgg: no such model file or run folder"),  # ./NAME is a path here
        (["live", "--model", "KERAS", "--source", "0"], "a Keras model; this needs its ONNX export (fervid export"),
    ],
)
def test_bad_model_and_benchmark_inputs_fail_before_any_work(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "not.zip").write_bytes(b"\x1f\x8b binary, not a zip")
    (tmp_path / "folder").mkdir()
    (tmp_path / "model.keras").write_bytes(b"PK")
    (tmp_path / "binary.md").write_bytes(b"\xff\xfe\x00 not text")
    (tmp_path / "card.json").write_text('{"name": "fervid-vgg"}')
    os.mkfifo(tmp_path / "pipe.md")
    paths = {
        "NOTZIP": tmp_path / "not.zip",
        "BINARY_MD": tmp_path / "binary.md",
        "CARD": tmp_path / "card.json",
        "DEVICE": tmp_path / "pipe.md",  # a pipe named as a page: the real /dev/null is never put at risk
        "INSIDE_NOTZIP": tmp_path / "not.zip" / "performance.md",
        "MODEL": write_non_face_onnx(tmp_path / "flat.onnx"),
        "FOLDER": tmp_path / "folder",
        "KERAS": tmp_path / "model.keras",
        "DATA": write_folder_dataset(tmp_path / "d", 0, {"train": 1, "validation": 1}),
    }
    result = fervid(*[str(paths.get(arg, arg)) for arg in args], cwd=tmp_path)
    for name, path in paths.items():
        message = message.replace(name, str(path))
    assert_one_line_error(result, message)
    assert "accuracy" not in result.stdout  # a wrong --against is found before the first model is scored


@pytest.mark.parametrize("kind", ["not a zip", "folder", "missing", "output inside a file"])
def test_bench_refuses_bad_paths_before_loading_the_model(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fervid.errors import FervidError
    from fervid.runtime import bench

    (tmp_path / "not.zip").write_bytes(b"\x1f\x8b binary, not a zip")
    arguments = {
        "not a zip": {"faces_from": tmp_path / "not.zip"},
        "folder": {"faces_from": tmp_path},
        "missing": {"faces_from": tmp_path / "missing.zip"},
        "output inside a file": {"output": tmp_path / "not.zip" / "performance.md"},
    }[kind]
    monkeypatch.setattr(bench, "Recognizer", lambda *args, **kwargs: pytest.fail("the model was loaded before the paths were checked"))
    message = {"not a zip": "not a zip file", "folder": "a folder; give the FER2013 zip itself", "missing": "no such file",
               "output inside a file": "is a file, not a folder"}[kind]
    with pytest.raises(FervidError, match=message):
        bench.run_bench(**arguments)


def test_predict_refuses_records_over_an_input_and_reads_a_photo_named_twice_once(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), textured_background(120, 160, seed=2))
    original = (folder / "a.jpg").read_bytes()
    assert_one_line_error(fervid("predict", str(folder), "--no-save", "--json", str(folder / "a.jpg")), "which the records would overwrite")
    assert (folder / "a.jpg").read_bytes() == original
    assert_one_line_error(fervid("predict", str(folder), "--no-save", "--json", str(folder)), "a folder, not a file")
    twice = fervid("predict", str(folder), str(folder / "a.jpg"), "--out", str(tmp_path / "annotated"))
    assert twice.returncode == 0 and twice.stderr.strip().splitlines()[-1].startswith("1 image(s)"), twice.stderr
    assert [path.name for path in (tmp_path / "annotated").iterdir() if not path.name.startswith(".")] == ["a.jpg"]


def _stop_after_first_line(command: list[str], marker: str) -> tuple[subprocess.Popen, str]:
    """Run ``command``, wait until stderr shows ``marker``, then send SIGTERM (as kill, timeout and systemd do)."""
    import signal

    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = ""
    while marker not in seen:
        line = process.stderr.readline()
        assert line, f"ended before {marker!r}: {seen}"
        seen += line
    process.send_signal(signal.SIGTERM)
    seen += process.stderr.read()
    process.wait(60)
    return process, seen


def test_sigterm_mid_predict_keeps_the_records_so_far(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    face = detectable_faces(1)[0]
    for index in range(400):  # a face in the first photo: the records of the photos done are not empty
        photo = textured_background(360, 480, seed=index % 5)
        if index == 0:
            paste_face(photo, face, 175, 115, 130)
        cv2.imwrite(str(folder / f"{index:03d}.jpg"), photo)
    records = tmp_path / "records.json"
    # "no face found" is said of 001.jpg: 000.jpg, with its face, is done by then
    process, stderr = _stop_after_first_line([FERVID, "predict", str(folder), "--no-save", "--json", str(records)], "no face found")
    assert process.returncode == 130, stderr
    assert "interrupted after" in stderr and "keeping their results" in stderr
    assert stderr.strip().splitlines()[-1] == "fervid: interrupted"
    kept = json.loads(records.read_text())  # written (as JSON), with the faces of the photos done
    assert kept and Path(kept[0]["image"]).name == "000.jpg", kept
    assert all(Path(record["image"]).name == "000.jpg" for record in kept), "only the photo with a face has records"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["photos", "records.json"]  # no temporary left behind


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP", "SIGHUP under nohup"])
def test_sigterm_mid_live_finishes_a_playable_video(tmp_path: Path, stop: str) -> None:
    """SIGTERM (kill, timeout) and a hang-up (the terminal closed, SSH dropped: it killed the process,
    the recording lost) finish the outputs; under nohup a hang-up stays ignored."""
    from conftest import write_video

    frames = [textured_background(240, 320, seed=index % 7) for index in range(1500)]
    video = write_video(tmp_path / "long.mp4", frames, fps=30.0)
    out = tmp_path / "out"
    command = [FERVID, "live", "--source", str(video), "--output", str(out / "o.mp4"), "--jsonl", str(out / "o.jsonl"),
               "--no-display", "--detect-every", "1"]
    import signal
    import time

    def writing() -> bool:  # frames are going into the video's temporary file (renamed when done)
        with contextlib.suppress(FileNotFoundError):
            return any(path.stat().st_size > 100_000 for path in out.glob(".*"))
        return False

    log = tmp_path / "stderr.txt"
    nohup = stop.endswith("nohup")
    with log.open("w") as errors:  # a file, not a pipe: nothing reads it while the test waits
        # the hang-up's handling as a terminal gives it (a test run under nohup passes SIG_IGN on), or as nohup sets it
        process = subprocess.Popen(command, stderr=errors, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN if nohup else signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not writing():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "no frame written in 300 s"
        time.sleep(0.05)
    process.send_signal(getattr(signal, stop.split()[0]))
    if nohup:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(1)  # still running: the hang-up is ignored
        process.send_signal(signal.SIGTERM)
    process.wait(60)
    stderr = log.read_text()
    assert process.returncode == 130, stderr
    assert "interrupted; finishing the outputs" in stderr
    played = cv2.VideoCapture(str(out / "o.mp4"))
    assert played.isOpened() and 0 < played.get(cv2.CAP_PROP_FRAME_COUNT) < 1500
    assert (out / "o.jsonl").exists() and sorted(p.name for p in out.iterdir()) == ["o-summary.json", "o-summary.png", "o.jsonl", "o.mp4"]


def test_live_asked_for_a_window_without_a_display_runs_headless(tmp_path: Path) -> None:
    import os

    image = tmp_path / "still.png"
    cv2.imwrite(str(image), textured_background(240, 320))
    environment = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([FERVID, "live", "--source", str(image), "--display", "--jsonl", str(tmp_path / "t.jsonl")],
                            capture_output=True, text=True, timeout=120, env=environment)
    assert result.returncode == 0, result.stderr
    assert "no display here" in result.stderr and (tmp_path / "t.jsonl").exists()


@pytest.mark.parametrize("display", [{"DISPLAY": ":97"}, {"WAYLAND_DISPLAY": "wayland-97"}])
def test_live_given_a_display_that_cannot_be_opened_runs_headless_not_aborted(tmp_path: Path, display: dict) -> None:
    """A stale DISPLAY (SSH forwarding gone, a container) or Wayland without XWayland: OpenCV's Qt
    aborted the process (SIGABRT), outputs lost and temporary files left behind."""
    import os

    video = write_video(tmp_path / "clip.mp4", [textured_background(240, 320, seed=i) for i in range(5)])
    environment = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([FERVID, "live", "--source", str(video), "--jsonl", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "o.mp4")],
                            capture_output=True, text=True, timeout=120, env={**environment, **display})
    assert result.returncode == 0, result.stderr
    where = next(iter(display.values()))
    assert f"the display {where} cannot be opened; running headless" in result.stderr
    assert (tmp_path / "t.jsonl").exists() and (tmp_path / "o.mp4").exists()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_bench_with_a_zip_whose_faces_the_detector_misses_is_refused_before_measuring(tmp_path: Path) -> None:
    """It warned "fewer than 4 validation faces", exited 0 and wrote a section with its end-to-end
    rows 'skipped' over the page's full table; a zip given is never silently skipped."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "crops.zip", "w") as archive:
        image = cv2.imencode(".png", textured_background(48, 48))[1].tobytes()
        contents = {0: b"", 11: b"not a png", 22: image}  # it reads every 11th name: an empty and a foreign file are passed over
        for index in range(23):
            archive.writestr(f"crops/validation/happy/{index:02d}.png", contents.get(index, image))
    page = tmp_path / "perf.md"
    page.write_text("# Perf\n\n## Real-time pipeline (`fervid bench`)\n\nthe full table\n")
    result = fervid("bench", "--faces-from", str(tmp_path / "crops.zip"), "--frames", "20", "--output", str(page))
    assert_one_line_error(result, f"--faces-from {tmp_path / 'crops.zip'}: the detector finds 0 of the 4 faces needed among its "
                                  "validation or test images")
    assert result.stdout == "" and page.read_text() == "# Perf\n\n## Real-time pipeline (`fervid bench`)\n\nthe full table\n"


def test_a_zip_bomb_among_the_bench_faces_is_passed_over_never_read_into_memory(tmp_path: Path) -> None:
    """The bench and the load test read each faces-zip member whole (``archive.read``): a member of
    2 MB that unpacks to 520 MiB of zeros took that much memory before it was found to be no image.
    It is read bounded now, as datasets' members are, and passed over as any foreign file."""
    import zipfile

    from conftest import PEAK_MIB_SOURCE

    image = cv2.imencode(".png", textured_background(48, 48))[1].tobytes()
    with zipfile.ZipFile(tmp_path / "faces.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("faces/validation/happy/00.jpg", "w") as member:  # the first name read
            block = bytes(1 << 20)
            for _ in range(520):
                member.write(block)
        for index in range(1, 23):
            archive.writestr(f"faces/validation/happy/{index:02d}.png", image)
    code = ("import json, sys\n" + PEAK_MIB_SOURCE +
            "from fervid import Recognizer\n"
            "from fervid.runtime.bench import real_faces\n"
            "faces = real_faces(sys.argv[1], 4, Recognizer())\n"
            "print(json.dumps({'faces': len(faces), 'rss_mib': peak_mib()}))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "faces.zip")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["faces"] == 0  # the bomb and the textured squares hold no face
    assert found["rss_mib"] < 450, "the 520 MiB member was read into memory"


@pytest.mark.parametrize("kind", ["challenge csv", "train only", "no images", "environment"])
def test_bench_refuses_a_faces_zip_without_validation_or_test_images_before_loading_the_model(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kaggle's challenge download (icml_face_data.csv in a zip) or a train split alone gave no face:
    the bench warned and exited 0 after minutes of measuring, its end-to-end rows 'skipped'."""
    import zipfile

    from fervid.errors import FervidError
    from fervid.runtime import bench

    image = cv2.imencode(".png", textured_background(48, 48))[1].tobytes()
    with zipfile.ZipFile(tmp_path / "faces.zip", "w") as archive:
        if kind == "challenge csv":
            archive.writestr("icml_face_data.csv", "emotion, Usage, pixels\n0,Training,1 2 3\n")
            archive.writestr("fer2013.tar.gz", b"\x1f\x8b")
        elif kind == "no images":
            archive.writestr("README.txt", "nothing here")
        else:
            for index in range(30):
                archive.writestr(f"fer2013/train/happy/{index:02d}.png", image)
    arguments: dict[str, Path] = {}
    if kind == "environment":
        monkeypatch.setenv("FERVID_FER2013_ZIP", str(tmp_path / "faces.zip"))
    else:
        arguments["faces_from"] = tmp_path / "faces.zip"
    monkeypatch.setattr(bench, "Recognizer", lambda *args, **kwargs: pytest.fail("the model was loaded before the zip was checked"))
    given = f"FERVID_FER2013_ZIP={tmp_path / 'faces.zip'}" if kind == "environment" else f"--faces-from {tmp_path / 'faces.zip'}"
    why = {
        "challenge csv": "holds fer2013.tar.gz, icml_face_data.csv but no images; give the FER2013 zip of images",
        "train only": "no validation or test images (its 30 images are only in train/); give the FER2013 zip of images",
        "no images": "holds no images; give the FER2013 zip of images",
        "environment": "no validation or test images (its 30 images are only in train/)",
    }[kind]
    with pytest.raises(FervidError) as raised:
        bench.run_bench(**arguments, frames=20)
    assert str(raised.value).startswith(f"{given}: {why}") and "\n" not in str(raised.value)


def test_bench_output_without_faces_is_refused_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--output without a faces zip measured for minutes, then replaced the page's full table with one
    whose end-to-end rows said 'skipped' (and whose prose named a near-search row it no longer had)."""
    from fervid.errors import FervidError
    from fervid.runtime import bench

    monkeypatch.delenv("FERVID_FER2013_ZIP", raising=False)
    page = tmp_path / "perf.md"
    page.write_text("# Perf\n\n## Real-time pipeline (`fervid bench`)\n\nthe full table\n")
    monkeypatch.setattr(bench, "Recognizer", lambda *args, **kwargs: pytest.fail("the model was loaded before --output was checked"))
    with pytest.raises(FervidError, match=rf"^--output {page}: the section written needs the end-to-end rows, which need real faces: "
                                          r"give --faces-from FER2013.zip or set FERVID_FER2013_ZIP"):
        bench.run_bench(output=page, frames=20)
    assert page.read_text() == "# Perf\n\n## Real-time pipeline (`fervid bench`)\n\nthe full table\n"
    monkeypatch.undo()
    monkeypatch.delenv("FERVID_FER2013_ZIP", raising=False)  # through the CLI: one line, exit 2
    assert_one_line_error(fervid("bench", "--output", str(page)), "the section written needs the end-to-end rows")
    assert page.read_text() == "# Perf\n\n## Real-time pipeline (`fervid bench`)\n\nthe full table\n"


def test_bench_output_counts_faces_found_apart_from_other_boxes_and_keeps_the_rest_of_the_page(tmp_path: Path) -> None:
    """The end-to-end rows said "4.03 faces reported per frame" for 4 faces: a false box counted as a
    face, so no row could show that none was lost. And the section ran to the next '## ', deleting a
    '# Appendix' after it."""
    import re

    from conftest import fer2013_zip
    from fervid.runtime.bench import run_bench

    zip_path = fer2013_zip()
    page = tmp_path / "perf.md"
    page.write_text("# Perf\n\n## Real-time pipeline (`fervid bench`)\n\nold table\n\n# Appendix\n\nimportant notes\n")
    table = run_bench(faces_from=zip_path, output=page, frames=20)
    rows = re.findall(r"(\d) faces?, full scan every \d+ frames?.*; ([\d.]+) of (\d) faces? found per frame, ([\d.]+) other boxes \|", table)
    assert len(rows) == 6 and "faces reported" not in table
    for count, found, of, other in rows:
        assert of == count and 0.0 <= float(found) <= int(count) and float(other) >= 0.0
    text = page.read_text()
    assert text.startswith("# Perf\n\n## Real-time pipeline (`fervid bench`)\n") and table in text and "old table" not in text
    assert text.endswith("\n# Appendix\n\nimportant notes\n")
    assert "'other boxes' are the boxes shown on none of them" in text
    assert "| search near a tracked face (between scans) |" in text and "the 'search\nnear a tracked face' row" in text
    scan_ms = float(re.search(r"scanned as min_size 40 needs \(default\) \| p50 ([\d.]+) ms", text).group(1))
    assert f"A full Haar scan costs {scan_ms:.0f} ms here (p50)," in text  # this run's number, not one from another day


@pytest.mark.parametrize("after", ["# Appendix\n\nimportant notes\n", "Appendix\n========\n\nimportant notes\n",
                                   "Appendix\n--------\n\nimportant notes\n", "## Later section\n\nstays\n"])
def test_a_replaced_section_ends_at_the_next_level_1_or_2_heading_outside_code(after: str, tmp_path: Path) -> None:
    """The section ran to the next '## ' only: a '# Appendix' after it, and its text, were deleted by
    every `fervid bench --output`. A '# comment' or '## ' line in a fenced code block is no heading
    (it must not end the section, nor a heading quoted in a fence before it start it)."""
    from fervid.markdown import replace_markdown_section

    heading = "## Real-time pipeline (`fervid bench`)"
    before = f"# Perf\n\nRun it so:\n\n```bash\n{heading}\n# not the section\n```\n\n"
    page = tmp_path / "perf.md"
    page.write_text(f"{before}{heading}\n\nold table\n\n```bash\n# a shell comment\n## not a heading\n```\n\n~~~\n# tilde fence\n~~~\n\n"
                    f"### Old notes\n\n- old\n---\n\n***\n\n{after}")  # rules, not headings
    replace_markdown_section(page, heading, f"{heading}\n\nnew table\n")
    assert page.read_text() == f"{before}{heading}\n\nnew table\n\n{after}"
    replace_markdown_section(page, heading, f"{heading}\n\nnewer table\n")  # and again: nothing after it is lost
    assert page.read_text() == f"{before}{heading}\n\nnewer table\n\n{after}"


def test_a_page_that_cannot_be_written_at_the_end_still_gets_the_table_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A page made immutable (``chattr +i``) during a bench or load test failed after the run with
    "perf.md: Operation not permitted" and the minutes of measurements were lost: the table is
    printed first, the error names --output, and the page stays as it was."""
    import errno

    from fervid import markdown
    from fervid.cli import _table_kept

    page = tmp_path / "perf.md"
    page.write_text("# Perf\n\n## X\n\nold\n")

    def refused(path, text):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    monkeypatch.setattr(markdown, "write_text_atomically", refused)
    with pytest.raises(markdown.SectionNotWritten) as failed, _table_kept():
        markdown.replace_markdown_section(page, "## X", "## X\n\nnew\n", table="| measure | result |\n")
    assert str(failed.value) == f"--output {page}: Operation not permitted; the section was not written"
    assert capsys.readouterr().out == "| measure | result |\n"
    assert page.read_text() == "# Perf\n\n## X\n\nold\n"


def test_bench_takes_validation_faces_by_the_readers_split_names_and_names_a_section_per_model() -> None:
    """Faces were taken only from '/validation/' paths (none in a val/ or PublicTest/ zip), and
    --model fervid-compact --output replaced the fervid-vgg section."""
    from fervid.runtime.bench import SECTION, section_heading, split_of

    for name, split in (("fer2013/validation/happy/1.png", "validation"), ("images/val/sad/2.jpg", "validation"),
                        ("PublicTest/angry/3.png", "validation"), ("fer2013/train/happy/1.png", "train"),
                        ("test/fear/1.png", "test"), ("happy/1.png", None), ("validation/train/happy/1.png", "train")):
        assert split_of(name) == split, name
    assert section_heading("fervid-vgg") == SECTION == "## Real-time pipeline (`fervid bench`)"
    assert section_heading("fervid-compact") == "## Real-time pipeline (`fervid bench`, fervid-compact)"


def test_predict_refuses_outputs_inside_a_file_before_the_first_photo(tmp_path: Path) -> None:
    """Else every photo is recognised first and the records are lost when they are written at the end."""
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), textured_background(120, 160, seed=2))
    for args in (["--no-save", "--json", str(photo / "faces.json")], ["--out", str(photo / "annotated")]):
        result = fervid("predict", str(photo), *args)
        assert_one_line_error(result, f"{photo} is a file, not a folder")
        assert result.stdout == ""


def test_predict_refuses_a_folder_where_an_annotated_copy_goes_before_the_first_photo(tmp_path: Path) -> None:
    """``--out col`` holding a folder ``col/p2.jpg`` (or ``p2-2.jpg``, the second photo named p2): the
    run recognised and copied the photos before it, then stopped there; every other output is
    checked before the work."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for index in range(3):
            cv2.imwrite(str(tmp_path / folder / f"p{index}.png"), textured_background(120, 160, seed=index))
    for taken in ("p2.png", "p2-2.png"):
        out = tmp_path / f"col-{taken}"
        (out / taken).mkdir(parents=True)
        result = fervid("predict", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--json", str(tmp_path / "r.json"))
        image = tmp_path / ("a" if taken == "p2.png" else "b") / "p2.png"
        assert_one_line_error(result, f"--out {out}: {out / taken} is a folder, where the annotated copy of {image} goes; "
                                      "move it or give another --out")
        assert sorted(path.name for path in out.iterdir()) == [taken], "nothing written before the refusal"
        assert not (tmp_path / "r.json").exists()


def write_video_with_a_damaged_frame(target: Path, frames: int = 10, damaged: int = 4) -> Path:
    """An MJPG AVI of noise frames whose frame ``damaged`` lost its JPEG headers (zeroed in place, sizes kept)."""
    import numpy as np

    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), 15, (320, 240))
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    writer.release()
    video = bytearray(target.read_bytes())
    starts = [i for i in range(len(video) - 1) if video[i : i + 2] == b"\xff\xd8"]  # each frame's JPEG
    video[starts[damaged] + 2 : starts[damaged] + 600] = bytes(598)
    target.write_bytes(bytes(video))
    return target


def test_ffmpegs_own_decoder_errors_stay_off_stderr(tmp_path: Path) -> None:
    """A damaged frame makes FFmpeg print "[mjpeg @ 0x...] No JPEG data found in image" beside fervid's own
    lines; the command quiets it unless the user asks for FFmpeg's level."""
    import os

    video = write_video_with_a_damaged_frame(tmp_path / "damaged.avi")
    env = {key: value for key, value in os.environ.items() if key != "OPENCV_FFMPEG_LOGLEVEL"}

    def analyze(out: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([FERVID, "analyze", str(video), "--out", str(tmp_path / out)],
                              capture_output=True, text=True, timeout=120, env={**env, **extra})

    loud = analyze("loud.parquet", OPENCV_FFMPEG_LOGLEVEL="16")
    assert loud.returncode == 0 and "No JPEG data found" in loud.stdout + loud.stderr, "the damaged frame makes FFmpeg complain"
    quiet = analyze("quiet.parquet")
    assert quiet.returncode == 0 and "JPEG" not in quiet.stdout + quiet.stderr, quiet.stdout + quiet.stderr


@pytest.mark.parametrize("every", [1, 3])
def test_analyze_skips_a_damaged_frame_and_reads_the_rest(tmp_path: Path, every: int) -> None:
    """FFmpeg fails on a damaged frame and goes on with the next: the analysis reads on (it used to stop
    there, the rest of the video unread and the source "ok") and notes the frame it skipped."""
    import pyarrow.parquet as pq

    video = write_video_with_a_damaged_frame(tmp_path / "damaged.avi", frames=12, damaged=3)
    result = fervid("analyze", str(video), "--every", str(every), "--out", str(tmp_path / "out.parquet"))
    assert result.returncode == 0, result.stderr
    summary = pq.read_table(tmp_path / "out.summary.parquet").to_pylist()[0]
    analysed = [frame for frame in range(12) if frame % every == 0 and frame != 3]
    assert summary["status"] == "ok" and summary["frames"] == len(analysed), summary
    assert summary["note"] == "1 damaged frame(s) skipped (3)", summary


@pytest.mark.parametrize("damaged", [5, 0])  # 0: the whole file was refused, "no frame could be decoded"
def test_live_on_a_file_skips_a_damaged_frame_with_a_note(tmp_path: Path, damaged: int) -> None:
    video = write_video_with_a_damaged_frame(tmp_path / "damaged.avi", frames=12, damaged=damaged)
    result = fervid("live", "--source", str(video), "--no-display", "--output", str(tmp_path / "out.mp4"))
    assert result.returncode == 0, result.stderr
    assert f"warning: {video}: frame {damaged} could not be decoded (damaged?), skipped" in result.stderr
    assert "11 frames" in result.stderr, "the frames after the damaged one are read too"
    capture = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12, "the damaged frame is filled: the recording keeps the length"
    capture.release()


def test_a_copy_that_cannot_be_written_stops_predict_with_the_records_done_kept(tmp_path: Path, monkeypatch) -> None:
    """A full disk on the third copy ended the run with 'No space left on device' (no path) and no
    records file, though two photos were done."""
    import errno

    import fervid.fileio
    from fervid.errors import FervidError
    from fervid.runtime import photos
    from fervid.runtime.recognizer import Recognizer

    face = detectable_faces(1)[0]
    for index in range(3):  # faces in 0 and 2: the records kept are 0's, and 2's, whose copy failed, are not claimed
        photo = textured_background(360, 480, seed=index)
        if index != 1:
            paste_face(photo, face, 175, 115, 130)
        cv2.imwrite(str(tmp_path / f"{index}.png"), photo)
    real_write, calls = photos.write_bytes_atomically, []

    def fills_up(target, data):
        calls.append(target)
        if len(calls) == 3:
            with fervid.fileio.atomic_path(target):  # as a write on a full disk fails
                raise OSError(errno.ENOSPC, "No space left on device")
        real_write(target, data)

    monkeypatch.setattr(photos, "write_bytes_atomically", fills_up)
    with pytest.raises(FervidError) as stopped:
        photos.predict_images([tmp_path], Recognizer(), out_dir=tmp_path / "out", records_to=tmp_path / "faces.json")
    assert str(stopped.value) == (f"{tmp_path / 'out' / '2.png'}: No space left on device; the records of the 2 images "
                                  f"done are in {tmp_path / 'faces.json'}")
    records = json.loads((tmp_path / "faces.json").read_text())
    assert [Path(record["image"]).name for record in records] == ["0.png"], records
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".fervid-predict", "0.png", "1.png"]


def test_a_file_name_with_a_newline_keeps_warnings_and_errors_on_one_line(tmp_path: Path) -> None:
    """A newline in a name split 'warning: ...' in two, the second half read as a message of its own."""
    (tmp_path / "bad\nname.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(tmp_path / "good.png"), textured_background(120, 160, seed=2))
    run = fervid("predict", str(tmp_path), "--no-save")
    assert run.returncode == 0, run.stderr
    assert f"warning: {tmp_path}/bad\\nname.jpg: not a readable image" in run.stderr.splitlines()[0], run.stderr
    alone = fervid("predict", str(tmp_path / "bad\nname.jpg"), "--no-save")
    assert_one_line_error(alone, f"{tmp_path}/bad\\nname.jpg: not a readable image")


def test_a_photo_named_in_bytes_that_are_not_utf8_is_read_copied_and_listed(tmp_path: Path) -> None:
    """Linux names are bytes: 'caf\\xe9.png' (Latin-1) reached Python with a surrogate escape and
    crashed the copy's name, the list of copies and the --json check with UnicodeEncodeError."""
    import os

    folder = os.path.join(os.fsencode(tmp_path), b"in")
    os.mkdir(folder)
    cv2.imwrite(str(tmp_path / "x.png"), textured_background(120, 160, seed=2))
    os.rename(tmp_path / "x.png", os.path.join(folder, b"caf\xe9.png"))
    records = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"r\xe9sults.jsonl"))
    first = fervid("predict", os.fsdecode(folder), "--out", str(tmp_path / "out"), "--json", records)
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(os.path.join(os.fsencode(tmp_path), b"out"))) == [b".fervid-predict", b"caf\xe9.png"]
    assert "caf\\udce9.png: no face found" in first.stderr  # named in one readable line
    again = fervid("predict", str(tmp_path), "--no-save")  # the copy below is listed, so not read back as a photo
    assert again.returncode == 0 and again.stderr.strip().splitlines()[-1].startswith("1 image(s)"), again.stderr


def test_bench_end_to_end_leaves_its_warm_up_frames_out_of_the_count(tmp_path: Path) -> None:
    """The first frames (slow first calls) were timed and counted; now ``untimed`` of them are not:
    a video blank for 10 frames, then with a face for 10, reports a face in every counted frame."""
    from fervid.runtime.bench import end_to_end
    from fervid.runtime.recognizer import Recognizer

    face = detectable_faces(1)[0]
    blank = textured_background(480, 640)
    writer = cv2.VideoWriter(str(tmp_path / "v.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    truth = []
    for index in range(20):
        frame = blank.copy()
        truth.append(np.array([paste_face(frame, face, 250, 170, 140)]) if index >= 10 else np.empty((0, 4)))
        writer.write(frame)
    writer.release()
    recognizer = Recognizer()
    assert end_to_end(tmp_path / "v.mp4", recognizer, 1, truth).found <= 0.6
    run = end_to_end(tmp_path / "v.mp4", recognizer, 1, truth, untimed=10)
    assert run.found >= 0.75 and run.fps > 0  # 9 of the 10 at best (a face is shown once a second scan confirms it)


def test_bench_end_to_end_counts_a_box_on_no_pasted_face_apart_from_the_faces_found(tmp_path: Path) -> None:
    """A false box on the background made "4.03 faces reported per frame" of a 4-face video, which
    could hide a face lost. A box is a face found only where it lies on a face pasted (IoU > 0.5):
    here a real face that the truth leaves out stands for a false detection."""
    from fervid.runtime.bench import end_to_end, face_places, face_video
    from fervid.runtime.recognizer import Recognizer

    faces = [cv2.resize(face, (140, 140), interpolation=cv2.INTER_CUBIC) for face in detectable_faces(2)]
    truth = face_video(tmp_path / "v.mp4", faces, 30)
    assert len(truth) == 30 and all((places == face_places(2, index)).all() for index, places in enumerate(truth))
    recognizer = Recognizer()
    both = end_to_end(tmp_path / "v.mp4", recognizer, 1, truth, untimed=10)
    one = end_to_end(tmp_path / "v.mp4", recognizer, 1, [places[:1] for places in truth], untimed=10)
    assert both.found >= 1.75 and one.found >= 0.9, (both, one)  # each face is found in (nearly) every counted frame
    assert one.found == pytest.approx(both.found - 1, abs=0.1)  # the face left out of the truth is no face found...
    assert one.other == pytest.approx(both.other + 1, abs=0.1)  # ...but a box on none of them


def test_a_summary_plot_never_replaces_a_png_that_is_not_an_earlier_runs_plot(tmp_path: Path) -> None:
    """--summary one.json wrote its plot over one.png, a photo of the user's, without a word (and
    -o talk.mp4 over talk-summary.png); a plot an earlier run left beside its summary is still replaced."""
    video = write_video(tmp_path / "clip.mp4", [textured_background(240, 320, seed=i) for i in range(4)])
    photo = tmp_path / "one.png"
    cv2.imwrite(str(photo), textured_background(60, 80))
    kept = photo.read_bytes()
    for args in (["--summary", str(tmp_path / "one.json")], ["-o", str(tmp_path / "one.mp4")]):
        if args[0] == "-o":
            photo = photo.rename(tmp_path / "one-summary.png")
        result = fervid("live", "--source", str(video), "--no-display", *args)
        assert_one_line_error(result, f"{photo}: exists and is not the plot of a fervid live summary")
        assert photo.read_bytes() == kept and not (tmp_path / "one.mp4").exists()
    photo.unlink()
    plot, files = tmp_path / "s.png", []
    for _ in range(2):  # the second run replaces the first run's plot
        result = fervid("live", "--source", str(video), "--no-display", "--summary", str(tmp_path / "s.json"))
        assert result.returncode == 0 and plot.exists(), result.stderr
        files.append(plot.stat().st_ino)  # written atomically: a new file each time
    assert files[0] != files[1], "the earlier run's plot was replaced"


def test_a_recording_or_timeline_cut_short_by_a_full_disk_is_refused_and_the_earlier_one_kept(tmp_path: Path) -> None:
    """OpenCV's writer reports no write error: a disk that filled (here, a file size limit) left an
    mp4 without its index, unplayable, in place of the earlier recording, and the run said "wrote"."""
    import resource

    noise = np.random.default_rng(0)
    video = write_video(tmp_path / "noise.mp4", [noise.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(30)])
    earlier = tmp_path / "rec.mp4"
    earlier.write_bytes(b"an earlier recording")

    def small_files() -> None:  # in the child: writes past 300 KB fail (EFBIG; Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    result = subprocess.run([FERVID, "live", "--source", str(video), "--output", str(earlier), "--no-display"],
                            capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert_one_line_error(result, f"{earlier}: the recording could not be read back (disk full, or a file size limit?); "
                                  "nothing was written over an earlier file")
    assert earlier.read_bytes() == b"an earlier recording" and not (tmp_path / "rec-summary.json").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["noise.mp4", "rec.mp4"], "no temporary file left"

    faces, _ = face_video_frames(detectable_faces(1), frames=120)  # a face in each frame: a row each, ~300 bytes
    clip = write_video(tmp_path / "face.mp4", faces)
    timeline = tmp_path / "t.jsonl"
    timeline.write_text("the rows of an earlier run\n")

    def tiny_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))

    result = subprocess.run([FERVID, "live", "--source", str(clip), "--jsonl", str(timeline), "--no-display"],
                            capture_output=True, text=True, timeout=120, preexec_fn=tiny_files)
    assert_one_line_error(result, f"{timeline}: could not be written (File too large); nothing was written over an earlier file")
    assert timeline.read_text() == "the rows of an earlier run\n"
    assert not list(tmp_path.glob(".*")), "no temporary file left"
    # Both outputs: the recording refused when read back, after the timeline had been finished, left
    # the earlier timeline replaced.
    result = subprocess.run([FERVID, "live", "--source", str(video), "--output", str(earlier), "--jsonl", str(timeline),
                             "--no-display"], capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert_one_line_error(result, "the recording could not be read back")
    assert timeline.read_text() == "the rows of an earlier run\n" and earlier.read_bytes() == b"an earlier recording"


def test_predict_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """`fervid predict photos/ | head -1` printed "fervid: error: Broken pipe": the closed pipe was
    taken for a failed output. 300 records (about 90 KB) are more than a pipe holds, so the pipe closes
    before the last is written."""
    image = cv2.imencode(".png", textured_background(48, 48))[1].tobytes()
    for index in range(300):
        (tmp_path / f"{index:03d}.png").write_bytes(image)
    result = subprocess.run(f"'{FERVID}' predict '{tmp_path}' --crops --no-save | head -1", shell=True,
                            capture_output=True, text=True, timeout=120, executable="/bin/bash")
    assert json.loads(result.stdout)["image"].endswith("000.png")
    assert result.stderr == ""


def test_a_summary_plot_in_a_hidden_folder_of_the_source_is_checked_too(tmp_path: Path) -> None:
    """A plot inside the folder source was left to that source's check, which reads no hidden
    folder: photos/.x/s.png, a file of the user's, was replaced without a word."""
    photos = tmp_path / "photos"
    (photos / ".x").mkdir(parents=True)
    for index in range(2):
        cv2.imwrite(str(photos / f"{index}.png"), textured_background(120, 160, seed=index))
    mine = photos / ".x" / "s.png"
    cv2.imwrite(str(mine), textured_background(30, 40))
    kept = mine.read_bytes()
    result = fervid("live", "--source", str(photos), "--no-display", "--summary", str(photos / ".x" / "s.json"))
    assert_one_line_error(result, f"{mine}: exists and is not the plot of a fervid live summary")
    assert mine.read_bytes() == kept


def test_symlink_loops_as_photos_or_outputs_are_one_line_errors(tmp_path: Path) -> None:
    """`ln -s loop2.jpg loop1.jpg; ln -s loop1.jpg loop2.jpg; fervid predict loop1.jpg` ended in
    Path.resolve's RuntimeError traceback; so did a --json or --out that loops."""
    cv2.imwrite(str(tmp_path / "photo.png"), textured_background(60, 80))
    for first, second in (("loop1.jpg", "loop2.jpg"), ("l1.json", "l2.json"), ("od1", "od2")):
        (tmp_path / first).symlink_to(second)
        (tmp_path / second).symlink_to(first)
    loop = "a symlink loop (links that lead back to each other, never to a file"
    assert_one_line_error(fervid("predict", "loop1.jpg", "--no-save", cwd=tmp_path), f"loop1.jpg: {loop})")
    assert_one_line_error(fervid("predict", "photo.png", "--no-save", "--json", "l1.json", cwd=tmp_path), f"--json l1.json: {loop} or folder)")
    assert_one_line_error(fervid("predict", "photo.png", "--out", "od1", cwd=tmp_path), f"--out od1: {loop} or folder)")
    both = fervid("predict", "photo.png", "loop1.jpg", "--no-save", cwd=tmp_path)  # among other photos: a note, as any unreadable one
    assert both.returncode == 0 and f"warning: loop1.jpg: {loop})" in both.stderr, both.stderr
    # where no check names it first (analyze's --boxes file), the CLI still says it in one line
    boxes = fervid("analyze", "photo.png", "--out", "faces.csv", "--boxes", "loop1.jpg", cwd=tmp_path)
    assert_one_line_error(boxes, f"loop1.jpg: {loop} or folder)")


def test_an_output_below_a_symlink_to_nothing_is_refused_before_the_first_photo(tmp_path: Path) -> None:
    """`ln -s /not_mounted/out dl`: `--json dl/faces.json` failed after every photo ("File exists"),
    the records lost, and `--out dl/ann` after the first."""
    cv2.imwrite(str(tmp_path / "photo.png"), textured_background(60, 80))
    (tmp_path / "dl").symlink_to(tmp_path / "not_mounted" / "out")
    named = f"dl is a symlink to {tmp_path / 'not_mounted' / 'out'}, which does not exist (not mounted?)"
    result = fervid("predict", "photo.png", "--no-save", "--json", "dl/faces.json", cwd=tmp_path)
    assert_one_line_error(result, f"--json dl/faces.json: {named}; make its target, or write the output elsewhere")
    assert "no face found" not in result.stderr, "refused before the first photo"
    result = fervid("predict", "photo.png", "--out", "dl/ann", cwd=tmp_path)
    assert_one_line_error(result, f"--out dl/ann: {named}")
    assert "no face found" not in result.stderr


def test_tilde_outputs_are_written_in_the_home_folder_where_they_were_checked(tmp_path: Path) -> None:
    """`--out=~/res --json=~/res.json` (the shell leaves a ~ after '=' alone) were checked in the home
    folder and written in ./~/res; live's --jsonl and --summary likewise."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    cv2.imwrite(str(work / "photo.png"), textured_background(60, 80))
    env = {**os.environ, "HOME": str(home)}
    result = subprocess.run([FERVID, "predict", "photo.png", "--out=~/res", "--json=~/res.json"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (home / "res" / "photo.png").is_file() and json.loads((home / "res.json").read_text()) == []
    assert (home / "res" / ".fervid-predict").read_text() == "photo.png\n"
    assert f"annotated images in {home / 'res'}" in result.stderr
    result = subprocess.run([FERVID, "live", "--source", "photo.png", "--no-display", "--jsonl=~/t.jsonl", "--summary=~/s.json"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (home / "t.jsonl").is_file() and "faces" in json.loads((home / "s.json").read_text())
    assert sorted(path.name for path in work.iterdir()) == ["photo.png"], "nothing in ./~"


def test_an_annotated_copy_too_large_to_encode_is_noted_and_not_claimed(tmp_path: Path) -> None:
    """A 70000x20 photo's copy (JPEG takes 65,500 pixels a side) was silently not written."""
    cv2.imwrite(str(tmp_path / "wide.bmp"), np.full((20, 70000, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "small.bmp"), textured_background(60, 80))
    out = tmp_path / "annotated"
    result = fervid("predict", str(tmp_path / "wide.bmp"), str(tmp_path / "small.bmp"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"warning: {tmp_path / 'wide.bmp'}: no annotated copy written: OpenCV could not encode its 70000x20 pixels" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == [".fervid-predict", "small.jpg"]
    assert result.stderr.strip().splitlines()[-1] == (f"2 image(s), 0 face(s); 2 without a face; annotated images in {out}; "
                                                      "1 annotated copy not written (too large to encode)")
    alone = fervid("predict", str(tmp_path / "wide.bmp"), "--out", str(tmp_path / "none"))
    assert alone.returncode == 0 and "annotated images in" not in alone.stderr, alone.stderr


def test_a_list_of_copies_that_cannot_grow_is_named_and_left_whole(tmp_path: Path) -> None:
    """A full disk said "fervid: error: No space left on device" of no file, and a name appended in
    part to .fervid-predict ran into the next one. A file size limit fails the same write (EFBIG)."""
    import resource

    cv2.imwrite(str(tmp_path / "photo.png"), textured_background(60, 80))
    out = tmp_path / "annotated"
    out.mkdir()
    listing = out / ".fervid-predict"
    listing.write_text("x" * 4090 + ".png\n")  # 4,095 bytes: one more name crosses 4,096

    def small_files() -> None:  # in the child: writes past 4 KB fail (EFBIG; Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    result = subprocess.run([FERVID, "predict", str(tmp_path / "photo.png"), "--out", str(out)], capture_output=True, text=True,
                            timeout=120, preexec_fn=small_files, env={**os.environ, "HOME": str(tmp_path)})
    assert_one_line_error(result, f"{listing}: File too large")
    assert listing.read_text() == "x" * 4090 + ".png\n", "no name in part"
    assert sorted(path.name for path in out.iterdir()) == [".fervid-predict"]


def test_a_list_of_copies_damaged_by_a_crash_is_read_around_not_a_traceback(tmp_path: Path) -> None:
    """A crash mid-append leaves NUL bytes at the end of .fervid-predict: every later predict into that
    folder (--no-save too, which still skips the default --out's copies) stopped with "ValueError:
    embedded null byte". A line that cannot be a name is ignored, and the next name gets a line of its own."""
    from fervid.runtime.photos import annotated_before

    cv2.imwrite(str(tmp_path / "photo.png"), textured_background(60, 80))
    default = tmp_path / "runs" / "predict"
    default.mkdir(parents=True)
    cv2.imwrite(str(default / "earlier.png"), textured_background(60, 80, seed=2))
    (default / ".fervid-predict").write_bytes(b"earlier.png\n\0\0\0\0\n\xff\xfe/..\n" + b"\0" * 10)  # no newline at the end
    result = fervid("predict", "photo.png", "--no-save", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    result = fervid("predict", "photo.png", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (default / ".fervid-predict").read_bytes().endswith(b"\0" * 10 + b"\nphoto.png\n")
    assert annotated_before(default) == {(default / name).resolve() for name in ("earlier.png", "photo.png")}
    again = fervid("predict", str(default), "--no-save", cwd=tmp_path)  # both are copies: nothing left to read
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"warning: {default}: no images in this folder", "fervid: error: no images found in the inputs"]


def test_a_models_results_section_is_named_for_its_file_unless_it_is_bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A float and an int8 export of one run share their card's name: benchmarked one after the other,
    the second replaced the first's section without a word (and a run named fervid-vgg the shipped one's)."""
    import shutil

    from fervid.runtime.classify import ExpressionClassifier, bundled_model_path, model_label

    assert model_label(ExpressionClassifier("fervid-compact")) == "fervid-compact"
    for name in ("mine.onnx", "mine-int8.onnx"):
        shutil.copy(bundled_model_path("fervid-compact"), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    labels = {model_label(ExpressionClassifier(str(tmp_path / name))) for name in ("mine.onnx", "mine-int8.onnx")}
    assert labels == {"mine.onnx", "mine-int8.onnx"}, "a card named fervid-compact, not the bundled file: named by its file"
    monkeypatch.chdir(tmp_path.parent.parent)
    assert model_label(ExpressionClassifier(str(tmp_path / "mine.onnx"))) == os.path.relpath(tmp_path / "mine.onnx")


def test_predict_over_many_photos_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """2,500 photos ran a minute with nothing on the terminal but warnings; live had a bar with an ETA."""
    import pty
    import select

    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.png"), textured_background(60, 80, seed=index))
    pid, terminal = pty.fork()
    if pid == 0:  # the child: stdout and stderr are the terminal
        os.environ["COLUMNS"] = "120"
        os.execv(FERVID, [FERVID, "predict", str(folder), "--no-save"])
    shown = b""
    while True:
        ready, _, _ = select.select([terminal], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.waitpid(pid, 0)
    text = shown.decode(errors="replace")
    assert "photos" in text and "3/3" in text and "eta" in text, text[-2000:]
    assert "3 image(s), 0 face(s)" in text
