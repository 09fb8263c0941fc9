"""``fervid analyze``: an archive the tests build (photos with real faces, two short videos, broken files)
analysed to Parquet and CSV; rows checked against ``Recognizer`` itself, error rows, options, resuming."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="fervid analyze needs pyarrow (the 'scale' extra)")
pd = pytest.importorskip("pandas", reason="fervid analyze needs pandas (the 'scale' extra)")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from conftest import PEAK_MIB_SOURCE, detectable_faces, face_video_frames, fer2013_zip, paste_face, textured_background, write_video  # noqa: E402
from fervid.analyze import ROW_SCHEMA, SCHEMA_VERSION, SUMMARY_SCHEMA, AnalyzeInterrupted, AnalyzeOptions, analyze  # noqa: E402
from fervid.analyze.analyzer import SEGMENT_ID_STRIDE, Analyzer  # noqa: E402
from fervid.analyze.boxes import load_boxes  # noqa: E402
from fervid.analyze.inputs import expand_inputs  # noqa: E402
from fervid.analyze.units import plan_units  # noqa: E402
from fervid.errors import FervidError  # noqa: E402
from fervid.labels import EXPRESSIONS  # noqa: E402
from fervid.runtime.recognizer import Recognizer  # noqa: E402

FERVID = str(Path(sys.executable).parent / "fervid")
PROBABILITIES = [f"prob_{name}" for name in EXPRESSIONS]
FPS = 15.0
BROKEN = ("broken/corrupt.jpg", "broken/empty.mp4", "broken/truncated.mp4")


def build_archive(root: Path) -> Path:
    """Photos (one face, two faces, none, one nested), two mp4s (40 frames with two faces, 30 with one), and
    a corrupt JPEG, a zero-byte video and a truncated video. Faces are real FER2013 faces the detector finds."""
    faces = detectable_faces(4)
    (root / "photos" / "nested").mkdir(parents=True)
    (root / "clips").mkdir()
    (root / "broken").mkdir()
    one = textured_background(360, 480, seed=0)
    paste_face(one, faces[0], 20, 30, 130)
    cv2.imwrite(str(root / "photos" / "one.png"), one)
    two = textured_background(360, 480, seed=3)
    paste_face(two, faces[1], 20, 30, 130)
    paste_face(two, faces[2], 480 - 130 - 20, 360 - 130 - 20, 130)
    cv2.imwrite(str(root / "photos" / "two.jpg"), two, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(root / "photos" / "none.png"), textured_background(240, 320, seed=7))
    nested = textured_background(360, 480, seed=5)
    paste_face(nested, faces[3], (480 - 130) // 2, (360 - 130) // 2, 130)
    cv2.imwrite(str(root / "photos" / "nested" / "deeper.png"), nested)
    write_video(root / "clips" / "a.mp4", face_video_frames(faces[:2], frames=40)[0], fps=FPS)
    write_video(root / "clips" / "b.mp4", face_video_frames(faces[2:3], frames=30, empty=(3, 3))[0], fps=FPS)
    (root / "broken" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG" * 20)
    (root / "broken" / "empty.mp4").write_bytes(b"")
    data = (root / "clips" / "a.mp4").read_bytes()
    (root / "broken" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not an image or a video: ignored")
    return root


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fer2013_zip()
    return build_archive(tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer()


@pytest.fixture(scope="module")
def full_run(archive: Path, tmp_path_factory: pytest.TempPathFactory):
    """The whole archive analysed once with the defaults into a Parquet folder."""
    out = tmp_path_factory.mktemp("full") / "results"
    report = analyze([archive], out)
    return out, report


def rows_of(table_or_path) -> pd.DataFrame:
    frame = pd.read_parquet(table_or_path) if isinstance(table_or_path, (str, Path)) else table_or_path.to_pandas()
    return frame.sort_values(["source", "frame", "face_id"]).reset_index(drop=True)


def video_frames(path: Path):
    capture = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        yield index, image
        index += 1
    capture.release()


def assert_faces_match(rows: pd.DataFrame, faces) -> None:
    """The rows of one image or frame hold exactly ``faces`` (from Recognizer.predict), in left-to-right order."""
    rows = rows.sort_values(["x", "y"])
    faces = sorted(faces, key=lambda face: face.box[:2])
    assert [tuple(row) for row in rows[["x", "y", "w", "h"]].to_numpy()] == [face.box for face in faces]
    assert list(rows["expression"]) == [face.expression for face in faces]
    expected = np.array([[face.probabilities[name] for name in EXPRESSIONS] for face in faces]).reshape(-1, 7)
    np.testing.assert_allclose(rows[PROBABILITIES].to_numpy(), expected, atol=1e-5)


def test_expands_folders_zips_and_skips_what_is_not_media(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "sub" / "b.png"), np.zeros((8, 8), np.uint8))
    (folder / ".hidden.png").write_bytes(b"x")
    (folder / ".thumbnails").mkdir()
    cv2.imwrite(str(folder / ".thumbnails" / "b.png"), np.zeros((8, 8), np.uint8))  # a hidden folder's photo
    (folder / "readme.md").write_text("x")
    with zipfile.ZipFile(folder / "faces.zip", "w") as bundle:
        bundle.writestr("happy/1.png", cv2.imencode(".png", np.zeros((48, 48), np.uint8))[1].tobytes())
        bundle.writestr("__MACOSX/happy/._1.png", b"resource fork")  # macOS zips carry these beside each file
        bundle.writestr("happy/.2.png", b"x")
        bundle.writestr("labels.csv", "x")
    items = expand_inputs([folder, folder / "sub" / "b.png"])  # the duplicate is dropped
    assert [(item.name, item.kind, item.relative) for item in items] == [
        (f"{folder / 'faces.zip'}!happy/1.png", "image", "happy/1.png"),
        (str(folder / "sub" / "b.png"), "image", "sub/b.png"),
    ]
    assert all(len(item.fingerprint) == 40 for item in items)
    with pytest.raises(FervidError, match="no such file or folder"):
        expand_inputs([tmp_path / "missing"])
    os.mkfifo(tmp_path / "pipe.jpg")  # there (it was called missing), but nothing to read as an image
    for special in (tmp_path / "pipe.jpg", Path("/dev/null")):
        with pytest.raises(FervidError, match=r"not a file or folder \(a device, pipe or socket\)"):
            expand_inputs([special])


def test_a_file_given_by_two_paths_is_one_source_and_a_rerun_from_elsewhere_resumes(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``photos/one.png`` and its absolute path are one source (analysed once, under the first name);
    unit ids hold the absolute path, so the same command run from another folder skips every unit."""
    monkeypatch.chdir(archive)
    items = expand_inputs(["photos/one.png", archive / "photos" / "one.png", "./photos/../photos/one.png"])
    assert [item.name for item in items] == ["photos/one.png"]
    # opened by its absolute path: a Ray worker on another machine reads from a working folder of its own
    assert [item.path for item in items] == [str(archive / "photos" / "one.png")]
    assert [item.path for item in expand_inputs(["photos"]) if item.member is None][0].startswith(str(archive))
    out = tmp_path / "r.parquet"
    first = analyze(["photos"], out, AnalyzeOptions(image_batch=2))
    assert first.skipped_units == 0 and first.units == 2
    monkeypatch.chdir(tmp_path)
    again = analyze([archive / "photos"], out, AnalyzeOptions(image_batch=2))
    assert again.skipped_units == again.units == 2 and again.frames == 0
    # The kept rows take this run's names: one name per file in the summary and the table, never two.
    names = sorted(str(archive / name) for name in first.summary["source"].to_pylist())
    assert sorted(again.summary["source"].to_pylist()) == names
    assert set(pd.read_parquet(out)["source"]) <= set(names) and len(pd.read_parquet(out)) == sum(first.summary["faces"].to_pylist())
    # Names that sort in another order (`../b` before `x.png`) cut the same image batches: nothing is redone.
    photos = [archive / "photos" / name for name in ("one.png", "two.jpg", "none.png")]
    for folder, chosen in (("a", photos[:2]), ("b", photos[2:])):
        (tmp_path / folder).mkdir()
        for photo in chosen:
            shutil.copyfile(photo, tmp_path / folder / photo.name)
    first = analyze(["a", "b"], tmp_path / "ab.parquet", AnalyzeOptions(image_batch=2))
    monkeypatch.chdir(tmp_path / "a")
    again = analyze([".", "../b"], tmp_path / "ab.parquet", AnalyzeOptions(image_batch=2))
    assert first.units == 2 and again.skipped_units == again.units == 2 and again.frames == 0


def test_a_file_reached_by_a_link_is_one_source_named_by_the_path_sorting_first(tmp_path: Path, capsys) -> None:
    """A symlink to a photo, a hard link, a linked folder and a linked zip reach files already found:
    each file is one source (a link once doubled its faces), named by the path that sorts first
    whatever the order given, and a rerun resumes every unit with no row twice."""
    folder = tmp_path / "f4"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), textured_background(60, 60, seed=1))
    (folder / "alias.jpg").symlink_to("a.jpg")
    os.link(folder / "a.jpg", folder / "hard.jpg")
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "b.png"), textured_background(60, 60, seed=2))
    (folder / "z-linked-sub").symlink_to("sub")
    with zipfile.ZipFile(folder / "bundle.zip", "w") as bundle:
        bundle.writestr("c.png", cv2.imencode(".png", textured_background(60, 60, seed=3))[1].tobytes())
        bundle.writestr("clip.mp4", b"not read")
    (folder / "linked.zip").symlink_to("bundle.zip")
    expected = [f"{folder / 'a.jpg'}", f"{folder / 'bundle.zip'}!c.png", f"{folder / 'bundle.zip'}!clip.mp4", f"{folder / 'sub' / 'b.png'}"]
    capsys.readouterr()
    assert [item.name for item in expand_inputs([folder])] == expected  # the linked zip's video too: once
    err = capsys.readouterr().err
    assert (f"5 path(s) reach a file already found under another name (a link), analysed once under that name, "
            f"e.g. {folder / 'alias.jpg'} as {folder / 'a.jpg'}") in err  # alias, hard link, linked folder, the zip's two
    for given in ([folder / "alias.jpg", folder / "a.jpg"], [folder / "a.jpg", folder / "alias.jpg"]):
        assert [item.name for item in expand_inputs(given)] == [str(folder / "a.jpg")]
    out = tmp_path / "f4.csv"
    first = analyze([folder], out, AnalyzeOptions(crops=True, image_batch=2))
    assert first.summary["source"].to_pylist() == expected and first.faces == 3
    assert first.summary["status"].to_pylist() == ["ok", "ok", "error", "ok"]  # "not read": no video
    again = analyze([folder / "sub", folder], out, AnalyzeOptions(crops=True, image_batch=2))
    assert again.skipped_units == again.units == first.units and again.frames == 0
    assert sorted(pd.read_csv(out)["source"]) == [name for name in expected if not name.endswith("clip.mp4")]  # one face per crop


def test_a_renaming_killed_half_way_is_finished_by_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rerun from elsewhere, a unit's sources ``a`` and ``b`` are now named ``b`` and ``c``: renamed
    twice (once before a kill, once after), the rows must read b, c, not c, c."""
    import fervid.analyze.writer as writer
    from fervid.analyze.inputs import SourceItem
    from fervid.analyze.schema import LEDGER_SCHEMA
    from fervid.analyze.units import Unit

    store = writer.ResultStore(tmp_path / "out")
    store.open()
    old = [SourceItem(name, "image", f"/data/{name}.jpg", name, "f") for name in ("a", "b")]
    template = {name: 0 for name in ROW_SCHEMA.names} | {"expression": "happy", "model_name": "m", "model_version": "v"}
    rows = pa.Table.from_pylist([template | {"source": "a"}, template | {"source": "b"}], schema=ROW_SCHEMA)
    ledger_row = {name: None for name in LEDGER_SCHEMA.names} | {"kind": "image", "unit": "u" * 20, "status": "ok", "frames": 1, "faces": 1}
    ledger = pa.Table.from_pylist([ledger_row | {"source": "a"}, ledger_row | {"source": "b"}], schema=LEDGER_SCHEMA)
    unit = Unit("u" * 20, "image", tuple(old))
    store.write(type("Result", (), {"unit": unit, "rows": rows, "ledger": ledger})())
    renamed = Unit(unit.id, "image", tuple(SourceItem(name, "image", item.path, name, "f") for name, item in zip(("b", "c"), old)))
    write = writer._write_parquet

    def killed_at_the_ledger(table, target):
        if target.parent == store.ledger:
            raise KeyboardInterrupt
        write(table, target)

    monkeypatch.setattr(writer, "_write_parquet", killed_at_the_ledger)
    with pytest.raises(KeyboardInterrupt):
        store.rename(renamed)
    monkeypatch.setattr(writer, "_write_parquet", write)
    assert store.rename(renamed) and not store.rename(renamed)
    assert pq.read_table(store.parts / f"part-{unit.id}.parquet")["source"].to_pylist() == ["b", "c"]
    assert pq.read_table(store.ledger / f"{unit.id}.parquet")["source"].to_pylist() == ["b", "c"]


def scratch_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder that ``tempfile`` uses for this test, to see what is left in it."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def zip_of(path: Path, members: dict[str, Path]) -> Path:
    """A zip at ``path`` holding each file of ``members`` under its name there."""
    with zipfile.ZipFile(path, "w") as zipped:
        for name, source in members.items():
            zipped.write(source, name)
    return path


def test_videos_inside_zips_are_analysed_as_the_same_videos_out_of_them(archive: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A video in a zip was skipped with a warning (FFmpeg reads files): it is extracted to a temporary
    file, analysed as the file would be (segments, seeks, tracks), and the copy is deleted."""
    scratch = scratch_tempdir(tmp_path, monkeypatch)
    bundle = zip_of(tmp_path / "interviews.zip", {"day1/a.mp4": archive / "clips" / "a.mp4", "one.png": archive / "photos" / "one.png"})
    options = AnalyzeOptions(segment_s=1.0)  # 15-frame segments: a.mp4's 40 frames in 3, read across seeks
    zipped_run = analyze([bundle], tmp_path / "zipped", options)
    alone = analyze([archive / "clips" / "a.mp4"], tmp_path / "alone", options)
    video = f"{bundle}!day1/a.mp4"
    summary = zipped_run.summary.to_pandas().set_index("source")
    assert list(summary.index) == [video, f"{bundle}!one.png"]
    assert summary.loc[video, "kind"] == "video" and summary.loc[video, "status"] == "ok"
    assert summary.loc[video, "segments"] == 3 and summary.loc[video, "frames"] == 40
    rows = rows_of(tmp_path / "zipped")
    from_zip = rows[rows.source == video].drop(columns="source").reset_index(drop=True)
    from_file = rows_of(tmp_path / "alone").drop(columns="source")
    assert len(from_file) > 40, "both faces tracked through the clip"
    pd.testing.assert_frame_equal(from_zip, from_file)
    assert alone.faces == summary.loc[video, "faces"]
    assert list(scratch.iterdir()) == [], "the extracted copies are deleted"


def test_a_video_in_a_zip_that_cannot_be_extracted_is_an_error_row(archive: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import fervid.analyze.video as video

    scratch = scratch_tempdir(tmp_path, monkeypatch)
    bundle = zip_of(tmp_path / "clips.zip", {"b.mp4": archive / "clips" / "b.mp4", "one.png": archive / "photos" / "one.png"})
    # No room on the temporary disk: said before anything is written, by the size the zip declares.
    monkeypatch.setattr(video, "EXTRACT_ROOM", 1 << 60)
    report = analyze([bundle], tmp_path / "full-disk")
    summary = report.summary.to_pandas().set_index("source")
    assert summary.loc[f"{bundle}!one.png", "status"] == "ok"
    assert summary.loc[f"{bundle}!b.mp4", "status"] == "error"
    assert re.fullmatch(rf"not extracted from its zip: it needs [\d,]+ MiB free in {re.escape(str(scratch))} \(its 0 MiB and "
                        r"[\d,]+ MiB to spare\), which has [\d,]+ MiB \(set TMPDIR to a disk with room, or extract it\); "
                        r"the next run tries again", summary.loc[f"{bundle}!b.mp4", "error"])
    # Room made, the rerun analyses the video (its error was not taken as a finished unit); the photo is kept.
    monkeypatch.setattr(video, "EXTRACT_ROOM", 0)
    again = analyze([bundle], tmp_path / "full-disk")
    assert again.skipped_units == 1 and again.faces > 0 and again.summary["status"].to_pylist() == ["ok", "ok"]
    # The zip changed between planning and reading (the video gone from it): each segment an error row.
    units = plan_units(expand_inputs([bundle]), AnalyzeOptions(segment_s=1.0), "model")
    zip_of(bundle, {"one.png": archive / "photos" / "one.png"})
    analyzer = Analyzer(AnalyzeOptions(segment_s=1.0), Recognizer())
    results = list(analyzer.run_video([unit for unit in units if unit.kind == "video"]))
    assert len(results) == 2 and all(result.rows.num_rows == 0 for result in results)
    assert {row["error"] for result in results for row in result.ledger.to_pylist()} == {
        "not extracted from its zip (KeyError: \"There is no item named 'b.mp4' in the archive\"); the next run tries again"}
    assert list(scratch.iterdir()) == []


def test_video_copies_left_by_killed_processes_are_swept(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGKILL, or Ray's shutdown of its workers on Ctrl+C, left each extracted copy in TMPDIR for good."""
    from fervid.analyze.video import COPY_PREFIX, _host

    scratch = scratch_tempdir(tmp_path, monkeypatch)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = scratch / f"{COPY_PREFIX}{_host()}-{gone}-abc.mp4"
    living = scratch / f"{COPY_PREFIX}{_host()}-{os.getppid()}-def.mp4"  # a run still going
    elsewhere = scratch / f"{COPY_PREFIX}otherhost-{gone}-ghi.mp4"  # a shared TMPDIR: that host's processes are not seen here
    for path in (stale, living, elsewhere):
        path.write_bytes(b"copy")
    bundle = zip_of(tmp_path / "clips.zip", {"b.mp4": archive / "clips" / "b.mp4"})
    assert analyze([bundle], tmp_path / "out").faces > 0
    assert sorted(path.name for path in scratch.iterdir()) == sorted([living.name, elsewhere.name])

def test_zip_members_named_with_dot_dot_or_from_the_root_are_read_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``../up.jpg`` and ``/abs.jpg`` inside a zip are names, not places: each is a source of its own
    (they were silently dropped as hidden), read from the zip, and nothing is written outside --out."""
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    photo = cv2.imencode(".png", textured_background(60, 60, seed=4))[1].tobytes()
    with zipfile.ZipFile("f5.zip", "w") as bundle:
        for name in ("../up.png", "ok.png", "/abs.png", "../../twice.png", "../.cache/hidden.png"):
            bundle.writestr(name, photo)
    items = expand_inputs(["f5.zip"])
    assert [item.relative for item in items] == ["../../twice.png", "../up.png", "/abs.png", "ok.png"]
    before = sorted(tmp_path.rglob("*"))
    report = analyze(["f5.zip"], "f5.csv", AnalyzeOptions(crops=True))
    assert report.summary["source"].to_pylist() == [f"f5.zip!{item.relative}" for item in items] and report.ok == 4
    assert sorted(pd.read_csv("f5.csv")["source"]) == sorted(f"f5.zip!{item.relative}" for item in items)
    written = {path for path in tmp_path.rglob("*") if path not in before}
    assert written and all(path.name.startswith("f5.") or work / "f5.csv.parts" in path.parents for path in written), written


def test_fingerprints_see_every_byte_of_small_files_and_the_samples_of_big_ones(tmp_path: Path) -> None:
    """Up to 8 MiB a file is hashed whole; above, its size and first, middle and last MiB, so an hour of
    video costs three reads, and an edit inside a sample (or a new size) still means new content."""
    from fervid.analyze.inputs import SAMPLE_BYTES, WHOLE_FILE_LIMIT, file_fingerprint

    def changed(path: Path, offset: int) -> bool:
        before = file_fingerprint(path)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        return file_fingerprint(path) != before

    small = tmp_path / "small.mp4"
    small.write_bytes(np.random.default_rng(0).bytes(WHOLE_FILE_LIMIT))
    assert all(changed(small, offset) for offset in (0, SAMPLE_BYTES + 5, WHOLE_FILE_LIMIT - 1))
    big = tmp_path / "big.mp4"
    size = WHOLE_FILE_LIMIT + 3 * SAMPLE_BYTES
    big.write_bytes(np.random.default_rng(1).bytes(size))
    assert all(changed(big, offset) for offset in (10, size // 2 + 10, size - 10))
    assert not changed(big, SAMPLE_BYTES + 10)  # between the samples: documented as not seen
    before = file_fingerprint(big)
    with big.open("ab") as handle:
        handle.write(b"\0")
    assert file_fingerprint(big) != before
    assert file_fingerprint(tmp_path / "gone.mp4") == "unreadable"


def test_rows_follow_the_schema_and_match_the_recognizer(archive: Path, full_run, recognizer: Recognizer) -> None:
    out, report = full_run
    assert pq.read_schema(next(out.glob("part-*.parquet"))).equals(ROW_SCHEMA, check_metadata=False)
    rows = rows_of(out)
    assert list(rows.columns) == ROW_SCHEMA.names
    assert set(rows["model_name"]) == {recognizer.classifier.name}
    assert set(rows["model_version"]) == {recognizer.classifier.version}
    assert set(rows["schema_version"]) == {SCHEMA_VERSION}
    np.testing.assert_allclose(rows[PROBABILITIES].sum(axis=1), 1.0, atol=1e-4)
    assert (rows["expression"] == [EXPRESSIONS[i] for i in rows[PROBABILITIES].to_numpy().argmax(axis=1)]).all()
    np.testing.assert_allclose(rows["confidence"], rows[PROBABILITIES].max(axis=1), atol=1e-7)

    # Photos: exactly what Recognizer.predict finds; the one-face photos have one face, the empty one none.
    for name in ("one.png", "two.jpg", "none.png", "nested/deeper.png"):
        path = archive / "photos" / name
        mine = rows[rows["source"] == str(path)]
        assert_faces_match(mine, recognizer.predict(path))
        assert (mine["frame"] == 0).all() and (mine["time_s"] == 0).all()
        assert sorted(mine["face_id"]) == list(range(1, len(mine) + 1))
    assert (rows["source"] == str(archive / "photos" / "one.png")).sum() == 1
    assert (rows["source"] == str(archive / "photos" / "nested" / "deeper.png")).sum() == 1
    assert (rows["source"] == str(archive / "photos" / "none.png")).sum() == 0

    # Videos: every frame, each frame's rows exactly the recognizer's faces, ids stable within the video.
    for name, frames in (("a.mp4", 40), ("b.mp4", 30)):
        path = archive / "clips" / name
        mine = rows[rows["source"] == str(path)]
        seen = 0
        for index, image in video_frames(path):
            assert_faces_match(mine[mine["frame"] == index], recognizer.predict(image))
            seen += 1
        assert seen == frames
        shown = {"a.mp4": 2 * 28, "b.mp4": 24}[name]  # faces x frames with them (the clips start and end empty)
        assert len(mine) >= 0.9 * shown, "the faces were found: rows equal to an empty prediction prove nothing"
        np.testing.assert_allclose(mine["time_s"], mine["frame"] / FPS, rtol=0, atol=5e-7)  # to the microsecond
        assert not mine.duplicated(["frame", "face_id"]).any()
        assert (mine["segment"] == 0).all()
    two_faces = rows[rows["source"] == str(archive / "clips" / "a.mp4")]
    assert two_faces["face_id"].nunique() <= 4, "two faces drifting slowly keep (nearly) stable track ids"


def test_a_variable_frame_rate_video_is_timed_by_its_timestamps(tmp_path: Path) -> None:
    """``time_s`` is the frame's timestamp, not frame / average fps, however the video is cut into
    segments and whatever --every skips (the clock counts the skipped frames too)."""
    clip = Path(__file__).parent / "data" / "vfr.mp4"  # 10 frames, tools/make_vfr_clip.py
    times = [0.0, 0.1, 0.2, 0.5, 0.6, 1.5, 1.6, 1.7, 3.0, 3.1]
    for options in (AnalyzeOptions(crops=True), AnalyzeOptions(crops=True, segment_s=1.0, every=2)):
        rows = rows_of(analyze([clip], tmp_path / f"{options.every}.parquet", options).outputs[0])
        assert list(rows["frame"]) == list(range(0, 10, options.every))
        np.testing.assert_allclose(rows["time_s"], times[:: options.every], atol=1e-6)
    # In a variable-frame-rate file a seek by frame number lands on another frame (OpenCV converts the
    # number at the average rate): such a video is one unit, read straight through, whatever
    # --segment-s, so a Ray worker analyses the frames the local engine does.
    from fervid.analyze.video import video_is_steady, video_probe

    steady = write_video(tmp_path / "steady.mp4", [textured_background(48, 64, seed=i) for i in range(20)], fps=15.0)
    assert video_is_steady(str(steady), *video_probe(str(steady))) and not video_is_steady(str(clip), *video_probe(str(clip)))
    clip = Path(__file__).parent / "data" / "vfr-gops.mp4"  # 48 frames, a keyframe every 6, 60 then 20 fps
    options = AnalyzeOptions(crops=True, segment_s=0.25, every=2)  # 7-frame segments, were it steady
    local = rows_of(analyze([clip], tmp_path / "gops.parquet", options).outputs[0])
    (unit,) = plan_units(expand_inputs([clip]), options, "model")
    assert unit.start_frame == 0 and unit.end_frame is None and unit.frames == 24
    alone = rows_of(Analyzer(options, Recognizer()).run(unit).rows)  # a reader of its own, as on Ray
    pd.testing.assert_frame_equal(alone, local)
    assert list(local["frame"]) == list(range(0, 48, 2)) and set(local["segment"]) == {0}
    expected = [n / 60 if n < 24 else 0.4 + 0.05 * (n - 24) for n in range(0, 48, 2)]
    np.testing.assert_allclose(local["time_s"], expected, atol=1e-3)
    assert len(plan_units(expand_inputs([steady]), AnalyzeOptions(segment_s=0.5), "model")) == 3, "a steady video is still cut"


def test_frame_times_are_clean_numbers_a_table_can_be_filtered_on(tmp_path: Path) -> None:
    """The decoder's milliseconds carry float noise: frame 3 of a 10 fps video came out as
    0.30000000000000004 s, so rows[rows.time_s == 0.3] found nothing (live's timeline said 0.3)."""
    clip = write_video(tmp_path / "ten.mp4", [textured_background(48, 64, seed=i) for i in range(20)], fps=10.0)
    rows = rows_of(analyze([clip], tmp_path / "ten.parquet", AnalyzeOptions(crops=True)).outputs[0])
    assert list(rows["frame"]) == list(range(20))
    assert list(rows["time_s"]) == [n / 10 for n in range(20)]  # exactly the numbers written as 0.0, 0.1, ...
    assert len(rows[rows["time_s"] == 0.3]) == 1


def test_summary_has_one_row_per_source_with_error_rows(archive: Path, full_run) -> None:
    out, report = full_run
    summary = pd.read_parquet(out / "_summary.parquet")
    assert pq.read_schema(out / "_summary.parquet").equals(SUMMARY_SCHEMA, check_metadata=False)
    rows = rows_of(out)
    assert len(summary) == 9  # 4 photos, 2 clips, 3 broken files; notes.txt is not a source
    by_source = summary.set_index("source")
    for name in BROKEN:
        entry = by_source.loc[str(archive / name)]
        assert entry["status"] == "error" and entry["frames"] == 0 and entry["faces"] == 0
        assert entry["error"] and "\n" not in entry["error"]
    assert "0 bytes" in by_source.loc[str(archive / "broken/empty.mp4"), "error"]
    ok = summary[summary["status"] == "ok"]
    assert len(ok) == 6 and ok["error"].isna().all()
    assert dict(zip(ok["source"], ok["frames"])) == {
        **{str(archive / "photos" / name): 1 for name in ("one.png", "two.jpg", "none.png", "nested/deeper.png")},
        str(archive / "clips" / "a.mp4"): 40,
        str(archive / "clips" / "b.mp4"): 30,
    }
    assert dict(zip(summary["source"], summary["faces"])) == {
        source: int((rows["source"] == source).sum()) for source in summary["source"]
    }
    shares = ok[ok["faces"] > 0][[f"share_{name}" for name in EXPRESSIONS]].sum(axis=1)
    np.testing.assert_allclose(shares, 1.0)
    for source in ok[ok["faces"] > 0]["source"]:  # each class's share is that class's, not another's
        own = rows[rows["source"] == source]["expression"]
        for name in EXPRESSIONS:
            assert by_source.loc[source, f"share_{name}"] == pytest.approx((own == name).mean(), abs=1e-6), (source, name)
    assert summary.loc[summary["source"] == str(archive / "photos" / "none.png"), "share_happy"].isna().all()
    assert report.ok == 6 and len(report.errors) == 3 and report.frames == 74 and report.faces == len(rows)


def test_every_and_largest_only(archive: Path, full_run, tmp_path: Path) -> None:
    clip = archive / "clips" / "a.mp4"
    full = rows_of(full_run[0])
    full = full[full["source"] == str(clip)]
    report = analyze([clip], tmp_path / "every.parquet", AnalyzeOptions(every=3))
    every = rows_of(tmp_path / "every.parquet")
    assert set(every["frame"]) <= set(range(0, 40, 3)) and report.summary["frames"].to_pylist() == [math.ceil(40 / 3)]
    kept = full[full["frame"] % 3 == 0].sort_values(["frame", "x"])
    every = every.sort_values(["frame", "x"])
    assert list(every["frame"]) == list(kept["frame"]) and list(every["x"]) == list(kept["x"])
    np.testing.assert_allclose(every[PROBABILITIES].to_numpy(), kept[PROBABILITIES].to_numpy(), atol=1e-5)

    analyze([clip], tmp_path / "largest.parquet", AnalyzeOptions(largest_only=True))
    largest = rows_of(tmp_path / "largest.parquet")
    assert not largest["frame"].duplicated().any()
    assert set(largest["frame"]) == set(full["frame"])
    area = full.assign(area=full["w"] * full["h"])
    biggest = area.sort_values(["frame", "area"], ascending=[True, False]).drop_duplicates("frame")
    assert [tuple(b) for b in largest[["x", "y", "w", "h"]].to_numpy()] == [tuple(b) for b in biggest[["x", "y", "w", "h"]].to_numpy()]


def test_crops_classify_whole_images_without_the_detector(tmp_path: Path, recognizer: Recognizer) -> None:
    faces = detectable_faces(3)
    bundle = tmp_path / "crops.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for number, face in enumerate(faces):
            archive.writestr(f"faces/{number}.png", cv2.imencode(".png", face)[1].tobytes())
        archive.writestr("faces/blank.png", cv2.imencode(".png", np.full((48, 48), 128, np.uint8))[1].tobytes())
    analyze([bundle], tmp_path / "crops.csv", AnalyzeOptions(crops=True))
    rows = pd.read_csv(tmp_path / "crops.csv")
    assert list(rows["source"]) == [f"{bundle}!faces/{n}.png" for n in range(3)] + [f"{bundle}!faces/blank.png"]
    assert (rows[["x", "y", "w", "h"]].to_numpy() == [0, 0, 48, 48]).all() and (rows["face_id"] == 1).all()
    expected = recognizer.classify([*faces, np.full((48, 48), 128, np.uint8)])
    np.testing.assert_allclose(rows[PROBABILITIES].to_numpy(), expected, atol=1e-5)


def test_boxes_from_csv_and_json_replace_the_detector(archive: Path, tmp_path: Path, recognizer: Recognizer) -> None:
    photo, clip = archive / "photos" / "none.png", archive / "clips" / "b.mp4"
    (tmp_path / "boxes.csv").write_text(
        "source,frame,x,y,w,h\n"
        "none.png,,10,20,60,60\n"          # by file name; a photo where the detector finds nothing
        "none.png,,100,40,80,80\n"
        f"{clip},5,200,100,90,90\n"        # by full name, one frame of a video
        "missing.jpg,,1,1,10,10\n"         # matches nothing: a warning, not an error
    )
    analyze([photo, clip], tmp_path / "boxes.parquet", boxes=tmp_path / "boxes.csv")
    rows = rows_of(tmp_path / "boxes.parquet")
    assert list(zip(rows["source"], rows["frame"], rows["x"], rows["y"], rows["w"], rows["h"])) == [
        (str(clip), 5, 200, 100, 90, 90), (str(photo), 0, 10, 20, 60, 60), (str(photo), 0, 100, 40, 80, 80)
    ]
    image = cv2.imread(str(photo))
    assert_faces_match(rows[rows["source"] == str(photo)], recognizer.predict(image, boxes=[[10, 20, 60, 60], [100, 40, 80, 80]]))

    (tmp_path / "boxes.json").write_text(json.dumps([{"source": "clips/b.mp4", "frame": 5, "box": [200, 100, 90, 90]}]))
    analyze([archive], tmp_path / "json.parquet", boxes=tmp_path / "boxes.json")  # matched by its path inside the folder
    from_json = rows_of(tmp_path / "json.parquet")
    assert len(from_json) == 1 and from_json.loc[0, "source"] == str(clip)
    np.testing.assert_allclose(from_json[PROBABILITIES].to_numpy(), rows.loc[[0], PROBABILITIES].to_numpy(), atol=1e-6)

    (tmp_path / "bad.csv").write_text("source,x,y,w,h\nnone.png,1,2,zero,4\n")
    with pytest.raises(FervidError, match="entry 1 needs source, x, y, w, h"):
        analyze([photo], tmp_path / "bad.parquet", boxes=tmp_path / "bad.csv")
    # A JSON user is told what the JSON entry lacks, not the CSV's columns.
    (tmp_path / "bad.json").write_text(json.dumps([{"source": "none.png", "box": [1, 2, 3]}]))
    with pytest.raises(FervidError, match=r'entry 1 needs "source" and "box": \[x, y, w, h\] of four numbers') as error:
        analyze([photo], tmp_path / "bad.parquet", boxes=tmp_path / "bad.json")
    assert "\n" not in str(error.value) and not (tmp_path / "bad.parquet.parts").exists()
    # Excel's "CSV UTF-8" (a byte-order mark, CRLF) reads; its Latin-1 "CSV" is refused in one line.
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbfsource,frame,x,y,w,h\r\nnone.png,,10,20,60,60\r\n")
    analyze([photo], tmp_path / "excel.parquet", boxes=tmp_path / "excel.csv")
    assert rows_of(tmp_path / "excel.parquet")["x"].tolist() == [10]
    (tmp_path / "latin1.csv").write_bytes(b"source,frame,x,y,w,h\ncaf\xe9.png,,10,20,60,60\n")
    with pytest.raises(FervidError, match=r"latin1.csv: not UTF-8 text \(byte 25\); save it as UTF-8"):
        analyze([photo], tmp_path / "bad.parquet", boxes=tmp_path / "latin1.csv")



def test_a_box_off_its_frame_is_skipped_with_a_note_and_the_rest_still_give_rows(archive: Path, tmp_path: Path) -> None:
    """A box off the frame would get a confident label for a blank crop, so it gives no row; the
    photo's other boxes and the video's other frames do, and the summary's note says what was left out."""
    photo, clip = archive / "photos" / "none.png", archive / "clips" / "b.mp4"
    (tmp_path / "off.csv").write_text(
        "source,frame,x,y,w,h\nnone.png,,5000,5000,10,10\nnone.png,,10,20,60,60\n"
        "b.mp4,3,200,100,90,90\nb.mp4,4,-900,100,90,90\nb.mp4,5,200,100,90,90\nb.mp4,5000,200,100,90,90\n"
    )
    report = analyze([photo, clip], tmp_path / "off.parquet", boxes=tmp_path / "off.csv")
    summary = report.summary.to_pandas().set_index("source")
    assert (summary["status"] == "ok").all()
    assert summary.loc[str(photo), "note"] == "1 box(es) from --boxes skipped, e.g. (5000, 5000, 10, 10) lies entirely outside the 320x240 image"
    assert summary.loc[str(clip), "note"].startswith("1 box(es) from --boxes skipped, e.g. frame 4: (-900, 100, 90, 90) lies entirely")
    assert summary.loc[str(clip), "note"].endswith(
        "; --boxes gives boxes for 1 frame(s) not analysed, e.g. frame 5000 (past the video's end or damaged)")
    rows = rows_of(tmp_path / "off.parquet")
    assert list(zip(rows["source"], rows["frame"], rows["x"])) == [(str(clip), 3, 200), (str(clip), 5, 200), (str(photo), 0, 10)]


def test_a_boxes_name_that_fits_two_sources_is_refused_and_two_names_for_one_source_are_merged(archive: Path, tmp_path: Path) -> None:
    twin = tmp_path / "elsewhere"
    twin.mkdir()
    (twin / "none.png").write_bytes((archive / "photos" / "none.png").read_bytes())
    (tmp_path / "both.csv").write_text("source,x,y,w,h\nnone.png,10,20,60,60\n")
    with pytest.raises(FervidError, match=r"^--boxes: 'none\.png' matches 2 inputs \(.*none\.png, .*none\.png\); name the source by its path"):
        analyze([archive / "photos", twin], tmp_path / "both.parquet", boxes=tmp_path / "both.csv")
    assert not (tmp_path / "both.parquet.parts").exists()
    # A full name settles it; the same photo also named by its path inside the folder gets both boxes.
    (tmp_path / "named.csv").write_text(f"source,x,y,w,h\n{twin / 'none.png'},10,20,60,60\nnone.png,100,40,80,80\n")
    rows = rows_of(analyze([twin], tmp_path / "named.parquet", boxes=tmp_path / "named.csv").outputs[0])
    assert sorted(rows["x"]) == [10, 100] and set(rows["source"]) == {str(twin / "none.png")}
    # A link to the photo is analysed once, under the photo's name; boxes named by the link's path
    # (or its name) still reach it, and are not reported as matching no input.
    (twin / "z-link.png").symlink_to("none.png")
    (tmp_path / "linked.csv").write_text(f"source,x,y,w,h\n{twin / 'z-link.png'},10,20,60,60\nz-link.png,100,40,80,80\n")
    report = analyze([twin], tmp_path / "linked.parquet", boxes=tmp_path / "linked.csv")
    rows = rows_of(report.outputs[0])
    assert sorted(rows["x"]) == [10, 100] and set(rows["source"]) == {str(twin / "none.png")}
    assert load_boxes(tmp_path / "linked.csv").unmatched(expand_inputs([twin])) == []



def test_boxes_name_a_source_however_its_accents_are_encoded(archive: Path, tmp_path: Path) -> None:
    """A Mac writes "café" decomposed (NFD) in zips and file names; a boxes file typed in an editor has
    it composed (NFC): the two looked alike and matched nothing ("1 source(s) match no input")."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "café.png")
    bundle = tmp_path / "mac.zip"
    with zipfile.ZipFile(bundle, "w") as zipped:
        zipped.write(archive / "photos" / "none.png", decomposed)
    (tmp_path / "boxes.csv").write_text("source,x,y,w,h\ncafé.png,10,20,60,60\n", encoding="utf-8")
    items = expand_inputs([bundle])
    assert items[0].relative == decomposed and load_boxes(tmp_path / "boxes.csv").unmatched(items) == []
    rows = rows_of(analyze([bundle], tmp_path / "mac.parquet", boxes=tmp_path / "boxes.csv").outputs[0])
    assert list(rows["x"]) == [10] and list(rows["source"]) == [f"{bundle}!{decomposed}"]  # named as the zip names it

def test_resume_skips_complete_units_and_redoes_changed_sources(archive: Path, full_run, tmp_path: Path) -> None:
    clips = archive / "clips"
    options = AnalyzeOptions(segment_s=1.0)  # 15-frame segments: a.mp4 has 3, b.mp4 has 2
    reference = rows_of(analyze([clips], tmp_path / "reference.parquet", options).outputs[0])
    assert set(reference["segment"]) == {0, 1, 2}
    # Track ids restart per segment and stay unique within a video.
    seams = reference.groupby(["source", "face_id"])["segment"].nunique()
    assert (seams == 1).all() and (reference["face_id"] // SEGMENT_ID_STRIDE == reference["segment"]).all()

    out = tmp_path / "resumed.parquet"

    def interrupt(result) -> None:
        raise KeyboardInterrupt  # as if the run were killed right after its first unit was written

    with pytest.raises(AnalyzeInterrupted, match=r"^1 of 5 units are complete and kept in .*resumed\.parquet\.parts; rerun the same command"):
        analyze([clips], out, options, on_result=interrupt)
    assert not out.exists() and len(list((tmp_path / "resumed.parquet.parts" / "_sources").glob("*.parquet"))) == 1
    processed = []
    report = analyze([clips], out, options, on_result=processed.append)
    assert report.skipped_units == 1 and len(processed) == report.units - 1 == 4
    pd.testing.assert_frame_equal(rows_of(out), reference)

    again = analyze([clips], out, options, on_result=processed.append)
    assert again.skipped_units == again.units and len(processed) == 4 and again.frames == 0

    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (changed / name).write_bytes((clips / name).read_bytes())
    moved = tmp_path / "moved.parquet"
    analyze([changed], moved, options)
    (changed / "b.mp4").write_bytes((clips / "a.mp4").read_bytes())  # new content under the same name
    redone = []
    report = analyze([changed], moved, options, on_result=redone.append)
    assert {result.unit.sources[0].name for result in redone} == {str(changed / "b.mp4")} and report.removed_parts == 2
    assert pd.read_parquet(tmp_path / "moved.summary.parquet").set_index("source").loc[str(changed / "b.mp4"), "frames"] == 40


def test_another_model_or_crops_redoes_every_unit(archive: Path, tmp_path: Path) -> None:
    """Rows made by one model (or with the detector) must never be kept for a run that asks for another."""
    photos, out = [archive / "photos"], tmp_path / "r.parquet"
    first = analyze(photos, out)
    assert first.units >= 1 and first.skipped_units == 0
    assert analyze(photos, out).skipped_units == first.units  # the same command: nothing to redo
    for options in (AnalyzeOptions(model="fervid-compact"), AnalyzeOptions(crops=True)):
        assert analyze(photos, out, options).skipped_units == 0, options
    report = analyze(photos, out)
    assert report.skipped_units == 0, "back to the first model: its parts were replaced, so redone"
    expected = rows_of(out)
    pd.testing.assert_frame_equal(rows_of(analyze(photos, tmp_path / "fresh.parquet").outputs[0]), expected)


def test_detector_settings_reach_the_detector_and_their_rows_are_not_reused(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--min-size and the other cascade settings work as in predict and live; rows made with other
    settings, or by an earlier version of the detector's scan, are redone."""
    photos, out = [archive / "photos"], tmp_path / "r.parquet"
    default = analyze(photos, out)
    assert len(rows_of(out)) > 0
    huge = analyze(photos, out, AnalyzeOptions(min_size=2000))  # no face is 2000 px: the setting reached the cascade
    assert huge.skipped_units == 0 and len(rows_of(out)) == 0
    assert analyze(photos, out).skipped_units == 0, "back to the defaults: those rows were replaced, so redone"
    assert AnalyzeOptions().key() == {"largest_only": False, "crops": False, "scan": 2, "every": 1, "segment_s": 300.0}
    assert json.dumps(AnalyzeOptions(segment_s=300).key()) == json.dumps(AnalyzeOptions().key()), "the API's 300 is the CLI's 300.0"
    assert "scan" not in AnalyzeOptions(crops=True).key(), "crops are never scanned: their rows stay valid"
    assert default.units >= 1
    with pytest.raises(FervidError, match="scale factor must be 1.01 to 100, got 1.0"):
        AnalyzeOptions(scale_factor=1.0).validate()
    for options, message in (({"every": "5"}, "every must be a whole number, got '5'"),
                             ({"segment_s": float("inf")}, "segment_s must be a finite number of seconds, got inf"),
                             ({"crops": "false"}, "crops must be True or False, got 'false'"),  # was true: whole images
                             ({"largest_only": 0}, "largest_only must be True or False, got 0")):
        with pytest.raises(FervidError, match=message):
            AnalyzeOptions(**options).validate()
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(FervidError, match="^out is empty: give a folder, a .parquet or a .csv file$"):
        analyze(photos, "")  # Path("") is ".": the results were written into the current folder
    assert list(here.iterdir()) == []
    with pytest.raises(FervidError, match="^--crops and --boxes both say where the faces are: give one of them$"):
        analyze(photos, tmp_path / "both.parquet", AnalyzeOptions(crops=True), boxes=tmp_path / "boxes.csv")
    one = analyze(str(archive / "photos"), tmp_path / "one.parquet")  # one input as a string: that input, not its characters
    assert one.units == default.units and rows_of(tmp_path / "one.parquet").equals(rows_of(out))


def test_photos_are_batched_apart_from_the_videos_beside_them(tmp_path: Path) -> None:
    """Batches were cut at each video in path order: a folder of photos and clips gave many small
    batches, and a clip added or removed re-cut (and redid) the photo batches after it."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a.png", "b.png", "x.png", "y.png"):
        cv2.imwrite(str(folder / name), textured_background(60, 80))
    write_video(folder / "m.mp4", [textured_background(60, 80, seed=i) for i in range(3)])
    options = AnalyzeOptions(image_batch=4)
    with_clip = plan_units(expand_inputs([folder]), options, "model")
    batches = [[source.relative for source in unit.sources] for unit in with_clip if unit.kind == "image"]
    assert batches == [["a.png", "b.png", "x.png", "y.png"]]
    (folder / "m.mp4").unlink()
    alone = plan_units(expand_inputs([folder]), options, "model")
    assert [unit.id for unit in alone] == [unit.id for unit in with_clip if unit.kind == "image"], "the photos' unit kept"


def test_a_second_run_into_the_same_out_is_refused_while_the_first_writes(archive: Path, tmp_path: Path) -> None:
    """Two runs into one --out: the second pruned the first one's finished results, and the first
    then failed on its own ledger, leaving a summary that did not cover the rows beside it."""
    from fervid.training.lock import RunLock

    out = tmp_path / "r"
    analyze([archive / "photos"], out)
    before = sorted(path.name for path in out.rglob("*") if path.is_file())
    with RunLock(out, "busy {owner}") as first:  # as the first run holds it while it writes
        first.acquire()
        with pytest.raises(FervidError, match=f"^{re.escape(str(out))}: is being written by another fervid analyze "
                                              rf"\(process {os.getpid()}\) now; wait for it to end, or give another --out$"):
            analyze([archive / "clips"], out)
        assert sorted(path.name for path in out.rglob("*") if path.is_file()) == before, "nothing pruned or written"
    assert analyze([archive / "clips"], out).units >= 1, "once the first has ended"


def test_an_interrupt_before_the_first_unit_does_not_promise_a_resume(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fervid.analyze.local

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, as the engine is

    monkeypatch.setattr(fervid.analyze.local, "run_local", interrupted)
    with pytest.raises(AnalyzeInterrupted, match="^none of the 2 units was complete yet; rerunning the same command starts again$"):
        analyze([archive / "clips"], tmp_path / "r.csv")

def test_a_stopped_rerun_into_a_folder_leaves_no_summary_of_other_rows(archive: Path, tmp_path: Path) -> None:
    """A rerun into a folder --out stopped with Ctrl+C showed its complete units' rows beside the
    earlier run's summary, which counted a changed source's old rows; the rerun writes the new one."""
    photos = tmp_path / "photos"
    shutil.copytree(archive / "photos", photos)
    out = tmp_path / "results"
    options = AnalyzeOptions(image_batch=1)  # a unit per photo
    analyze([photos], out, options)
    before = pd.read_parquet(out / "_summary.parquet")
    shutil.copy(photos / "two.jpg", photos / "one.png.jpg")  # a new source
    shutil.copy(photos / "two.jpg", photos / "one.png")  # a changed one: two faces where one was

    def stop(result) -> None:
        raise KeyboardInterrupt

    with pytest.raises(AnalyzeInterrupted):
        analyze([photos], out, options, on_result=stop)
    assert not (out / "_summary.parquet").exists(), "the earlier summary counts rows the folder no longer holds"
    stopped = rows_of(out)
    assert (stopped["source"] == str(photos / "one.png")).sum() in (0, 2), "the changed photo's old row is never shown"
    report = analyze([photos], out, options)
    after = pd.read_parquet(out / "_summary.parquet").set_index("source")
    assert after.loc[str(photos / "one.png"), "faces"] == 2 and str(photos / "one.png.jpg") in after.index
    assert len(after) == len(before) + 1 and report.summary.num_rows == len(after)
    assert [path.name for path in out.iterdir() if path.name.endswith(".stale")] == []


def test_a_killed_run_resumes_where_it_stopped(archive: Path, tmp_path: Path) -> None:
    """SIGKILL mid-run: what was written stays readable, and the rerun does only the rest."""
    video = tmp_path / "long.mp4"
    images = face_video_frames(detectable_faces(1), frames=40, empty=(0, 0))[0]
    write_video(video, images * 3, fps=FPS)  # 120 frames, eight 1-second segments
    out = tmp_path / "killed"
    command = [FERVID, "analyze", str(video), "--out", str(out), "--segment-s", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, ledger = time.monotonic() + 120, out / "_sources"
        while not (ledger.is_dir() and visible(ledger)):
            assert process.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    complete = len(visible(out / "_sources"))  # the kill may also leave a hidden half-written temporary file
    assert 1 <= complete < 8
    for part in out.glob("part-*.parquet"):
        assert pq.read_schema(part).equals(ROW_SCHEMA, check_metadata=False)  # no half-written part is visible
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{complete} of 8 units already complete" in result.stderr
    rows = rows_of(out)
    assert rows["frame"].max() <= 119 and not rows.duplicated(["frame", "face_id"]).any()
    summary = pd.read_parquet(out / "_summary.parquet")
    assert summary["frames"].tolist() == [120] and summary["segments"].tolist() == [8]
    assert not [path for path in out.rglob("*") if ".tmp" in path.name]


def visible(folder: Path) -> list[Path]:
    """Ledger files, without the hidden temporary files of an atomic write (pathlib's glob matches those too)."""
    return [path for path in folder.glob("*.parquet") if not path.name.startswith(".")]


def test_a_half_written_temporary_file_is_not_a_complete_unit(archive: Path, tmp_path: Path) -> None:
    """A run killed mid-write leaves ``.<unit>.<random>.tmp.parquet`` beside the ledger: the rerun must not
    take it for a unit (nor report it as a removed part), and must clean it up."""
    out = tmp_path / "results"
    first = analyze([archive / "photos"], out)
    before = rows_of(out)
    ledger = out / "_sources"
    unit = visible(ledger)[0]
    leftovers = [ledger / f".{unit.stem}.k3j2x9.tmp.parquet", out / f".part-{unit.stem}.a8b7c6.tmp.parquet"]
    for leftover in leftovers:
        leftover.write_bytes(b"PAR1 half a file")
    again = analyze([archive / "photos"], out)
    assert again.skipped_units == again.units == first.units and again.removed_parts == 0 and again.frames == 0
    assert not any(leftover.exists() for leftover in leftovers)
    pd.testing.assert_frame_equal(rows_of(out), before)


def test_csv_output_matches_parquet(archive: Path, full_run, tmp_path: Path) -> None:
    target = tmp_path / "faces.csv"
    analyze([archive / "photos", archive / "broken"], target)
    rows = pd.read_csv(target)
    parquet = rows_of(full_run[0])
    parquet = parquet[parquet["source"].str.contains(os.sep + "photos" + os.sep, regex=False)].reset_index(drop=True)
    assert list(rows.columns) == ROW_SCHEMA.names and len(rows) == len(parquet)
    assert list(rows["source"]) == list(parquet["source"]) and list(rows["expression"]) == list(parquet["expression"])
    np.testing.assert_allclose(rows[PROBABILITIES].to_numpy(), parquet[PROBABILITIES].to_numpy(), atol=1e-6)
    summary = pd.read_csv(tmp_path / "faces.summary.csv")
    assert list(summary.columns) == SUMMARY_SCHEMA.names and sorted(summary["status"]) == ["error"] * 3 + ["ok"] * 4


def test_cli_reports_errors_in_one_line_and_fails_only_when_nothing_worked(archive: Path, tmp_path: Path) -> None:
    mixed = subprocess.run([FERVID, "analyze", str(archive / "photos"), str(archive / "broken"), "--out", str(tmp_path / "m.parquet")],
                           capture_output=True, text=True, timeout=120)
    assert mixed.returncode == 0, mixed.stderr
    assert "7 sources: 4 ok, 3 errors" in mixed.stderr and mixed.stderr.count("error: ") == 3
    assert pd.read_parquet(tmp_path / "m.parquet")["source"].nunique() == 3
    assert (f"wrote {tmp_path / 'm.parquet'} (summary: {tmp_path / 'm.summary.parquet'}; {tmp_path / 'm.parquet.parts'}/ keeps "
            "the parts to resume or extend the run: delete it when done)") in " ".join(mixed.stderr.split()), "the folder it left is named"

    broken = subprocess.run([FERVID, "analyze", str(archive / "broken"), "--out", str(tmp_path / "b.parquet")],
                            capture_output=True, text=True, timeout=120)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert broken.stderr.strip().splitlines()[-1].startswith("fervid: error: nothing could be processed (3 error(s)")
    assert len(pd.read_parquet(tmp_path / "b.summary.parquet")) == 3  # the error rows are still written

    missing = subprocess.run([FERVID, "analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "n")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip() == f"fervid: error: {tmp_path / 'nope'}: no such file or folder"

    named_like_a_file = subprocess.run([FERVID, "analyze", str(archive / "photos"), "--out", str(tmp_path / "r.json")],
                                       capture_output=True, text=True, timeout=120)
    assert named_like_a_file.returncode == 2 and "give a folder, a .parquet or a .csv file" in named_like_a_file.stderr
    assert not (tmp_path / "r.json").exists(), "no folder of parts named like a JSON file"
    dotted = tmp_path / "results.v2"
    dotted.mkdir()
    assert subprocess.run([FERVID, "analyze", str(archive / "photos"), "--out", str(dotted)], timeout=120).returncode == 0
    assert (dotted / "_summary.parquet").exists()


def test_cli_detector_options_reach_the_cascade(archive: Path, tmp_path: Path) -> None:
    """--min-size, --scale-factor and --min-neighbors on the command line, as predict and live take them."""
    out = tmp_path / "huge.parquet"
    huge = subprocess.run([FERVID, "analyze", str(archive / "photos"), "--out", str(out), "--min-size", "2000",
                           "--scale-factor", "1.2", "--min-neighbors", "3"], capture_output=True, text=True, timeout=120)
    assert huge.returncode == 0, huge.stderr
    assert len(pd.read_parquet(out)) == 0 and len(pd.read_parquet(tmp_path / "huge.summary.parquet")) > 0  # read, no face that big
    for option, value, message in (("--scale-factor", "1.0", "scale factor must be 1.01 to 100, got 1.0"),
                                   ("--min-neighbors", "-1", "min neighbours must be 0 to 1000, got -1")):
        refused = subprocess.run([FERVID, "analyze", str(archive / "photos"), "--out", str(tmp_path / "x.parquet"), option, value],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_float_options_too_big_to_count_frames_or_pixels_are_refused_in_one_line(tmp_path: Path) -> None:
    """--segment-s 1e308 made a frame count of inf and --scale-factor 1e308 a window side past a C int:
    tracebacks (OverflowError, cv2.error). Both have an upper bound now, checked before any input is read."""
    clip = write_video(tmp_path / "clip.mp4", [textured_background(64, 64, seed=index) for index in range(4)])
    for option, value, message in (("--segment-s", "1e308", "--segment-s must be at most 1,000,000 s (11.6 days), got 1e+308"),
                                   ("--segment-s", "1000001", "--segment-s must be at most 1,000,000 s"),
                                   ("--scale-factor", "1e308", "scale factor must be 1.01 to 100, got 1e+308")):
        refused = subprocess.run([FERVID, "analyze", str(clip), "--out", str(tmp_path / "x.csv"), option, value],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and refused.stderr.startswith(f"fervid: error: {message}"), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not list(tmp_path.glob("x.*"))
    with pytest.raises(FervidError, match="scale factor must be 1.01 to 100"):
        analyze([clip], tmp_path / "y.csv", AnalyzeOptions(scale_factor=1e9))
    AnalyzeOptions(segment_s=1_000_000, scale_factor=100).validate()  # the bounds themselves are allowed
    report = analyze([clip], tmp_path / "z.csv", AnalyzeOptions(segment_s=1_000_000))
    assert report.ok == 1 and report.summary["segments"].to_pylist() == [1]


def test_options_that_would_do_nothing_are_refused_not_taken_silently(tmp_path: Path) -> None:
    """--ray-address without --engine ray ran in one local process, the cluster never asked; detector
    settings with --crops or --boxes, where no detector runs, looked applied."""
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), textured_background(48, 48))
    (tmp_path / "boxes.csv").write_text(f"source,frame,x,y,w,h\n{photo},0,0,0,48,48\n")
    for args, message in (
        (["--ray-address", "10.0.0.1:6379"], "--ray-address 10.0.0.1:6379 joins a Ray cluster only with --engine ray"),
        (["--crops", "--min-size", "500"], "--min-size: the face detector does not run with --crops, so it does nothing"),
        (["--boxes", str(tmp_path / "boxes.csv"), "--scale-factor", "2", "--min-neighbors", "9"],
         "--scale-factor, --min-neighbors: the face detector does not run with --boxes, so they do nothing"),
    ):
        refused = subprocess.run([FERVID, "analyze", str(photo), "--out", str(tmp_path / "x.csv"), *args],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and refused.stderr.startswith(f"fervid: error: {message}"), refused.stderr
    assert not list(tmp_path.glob("x.*"))
    predicted = subprocess.run([FERVID, "predict", str(photo), "--crops", "--no-save", "--min-size", "500"],
                               capture_output=True, text=True, timeout=120)
    assert predicted.returncode == 2 and "--min-size: the face detector does not run with --crops" in predicted.stderr
    kept = subprocess.run([FERVID, "analyze", str(photo), "--out", str(tmp_path / "x.csv"), "--crops", "--min-size", "40"],
                          capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, "the default value, given, does no harm"
    with pytest.raises(FervidError, match="--ray-address auto joins a Ray cluster only with --engine ray"):  # Python too
        analyze([photo], tmp_path / "y.csv", ray_address="auto")
    with pytest.raises(FervidError, match="--min-size: the face detector does not run with --crops"):
        analyze([photo], tmp_path / "y.csv", AnalyzeOptions(crops=True, min_size=500))
    assert not list(tmp_path.glob("y.*"))
    # The summary, written last, is checked with the table: another user's in a sticky folder (/tmp)
    # was accepted, and the run failed at its end
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    analyze([photo], sticky / "z.csv")
    (sticky / "z.csv").unlink()
    sticky.chmod(0o1777)
    import os

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "geteuid", lambda: 1000)  # not root, not the owner of the summary or the folder
        with pytest.raises(FervidError, match=r"z.csv: its summary .*z.summary.csv: belongs to another user, in the sticky folder"):
            analyze([photo], sticky / "z.csv")
    assert not (sticky / "z.csv").exists()


def test_an_input_no_longer_given_loses_its_parts_so_out_mirrors_the_inputs(tmp_path: Path) -> None:
    folders = {name: tmp_path / name for name in ("a", "b")}
    for seed, folder in enumerate(folders.values()):
        folder.mkdir()
        for index in range(2):
            cv2.imwrite(str(folder / f"{index}.png"), textured_background(48, 48, seed=10 * seed + index))
    out, options = tmp_path / "faces", AnalyzeOptions(crops=True, image_batch=2)  # a batch per folder
    both = analyze(list(folders.values()), out, options)
    assert both.removed_parts == 0 and set(rows_of(out)["source"].map(lambda name: Path(name).parent.name)) == {"a", "b"}
    only_a = analyze([folders["a"]], out, options)
    assert only_a.skipped_units == only_a.units and only_a.removed_parts >= 1
    assert "removed the results of 1 unit of an earlier run that this run does not hold" in only_a.describe()[-2]
    assert only_a.describe()[-1] == f"wrote {out} (summary: {out / '_summary.parquet'})", "a folder --out holds its parts itself"
    assert set(rows_of(out)["source"].map(lambda name: Path(name).parent.name)) == {"a"}
    pd.testing.assert_frame_equal(rows_of(out), rows_of(analyze([folders["a"]], tmp_path / "fresh", options).outputs[0]))


@pytest.mark.parametrize("out_name", ["faces.csv", "faces.parquet", "faces"])
def test_a_run_where_nothing_could_be_processed_leaves_earlier_results_as_they_were(tmp_path: Path, out_name: str) -> None:
    """A wrong input on a rerun must not replace the results in --out (nor prune their parts) with an empty table."""
    good, broken = tmp_path / "good", tmp_path / "broken"
    good.mkdir()
    broken.mkdir()
    for index in range(3):
        cv2.imwrite(str(good / f"{index}.png"), textured_background(48, 48, seed=index))
    (broken / "corrupt.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    out = tmp_path / out_name
    analyze([good], out, AnalyzeOptions(crops=True))
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and not path.is_relative_to(good)}
    with pytest.raises(FervidError, match="nothing could be processed.*nothing written over"):
        analyze([broken], out, AnalyzeOptions(crops=True))
    for path, data in before.items():
        assert path.read_bytes() == data, path
    assert len(pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)) == 3

    fresh = tmp_path / f"fresh-{out_name}"
    with pytest.raises(FervidError, match="summary in"):
        analyze([broken], fresh, AnalyzeOptions(crops=True))
    summary = fresh / "_summary.parquet" if fresh.suffix == "" else fresh.with_name(f"{fresh.stem}.summary{fresh.suffix}")
    assert summary.exists() and not (fresh.suffix and fresh.exists())  # the error rows, and no empty table


def test_video_only_options_do_not_redo_the_photos(archive: Path, tmp_path: Path) -> None:
    inputs = [archive / "photos" / "one.png", archive / "clips" / "b.mp4"]
    out = tmp_path / "r.parquet"
    analyze(inputs, out, AnalyzeOptions(segment_s=1.0))
    redone = []
    report = analyze(inputs, out, AnalyzeOptions(segment_s=2.0, every=3), on_result=redone.append)
    assert report.skipped_units == 1 and {result.unit.kind for result in redone} == {"video"}
    rows = rows_of(out)
    assert set(rows["source"]) <= {str(path) for path in inputs} and (rows.loc[rows["frame"] > 0, "frame"] % 3 == 0).all()
    redone.clear()
    analyze(inputs, out, AnalyzeOptions(segment_s=2.0, every=3, largest_only=True), on_result=redone.append)
    assert {result.unit.kind for result in redone} == {"image", "video"}  # an option that changes photo rows redoes them


def truncated_video(folder: Path) -> tuple[Path, int]:
    """An MJPG .avi of 60 frames (one face, 15 FPS) cut to half its bytes: the header still says 60 frames.
    Returns the path and how many frames OpenCV really decodes from it."""
    whole = folder / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (480, 360))
    for image in face_video_frames(detectable_faces(1), frames=60)[0]:
        writer.write(image)
    writer.release()
    data = whole.read_bytes()
    cut = folder / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    capture = cv2.VideoCapture(str(cut))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 60
    capture.release()
    decoded = sum(1 for _ in video_frames(cut))
    assert 0 < decoded < 60 - FPS
    return cut, decoded


def test_a_truncated_video_gives_the_same_result_whatever_the_segments(tmp_path: Path, recognizer: Recognizer,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    """The header's frame count cuts the segments; those past the real end give no rows and no error, and
    the summary notes the shortfall, whether the end is reached by reading (local) or by seeking (Ray)."""
    video, decoded = truncated_video(tmp_path)
    whole = analyze([video], tmp_path / "whole.csv")
    segmented = analyze([video], tmp_path / "segmented.csv", AnalyzeOptions(segment_s=1.0))  # 4 segments of 15 frames
    note = f"the video ends at frame {decoded}, before the 60 frames its header gives (truncated?)"
    for report in (whole, segmented):
        assert report.ok == 1 and report.errors == [] and report.notes == [(str(video), note)]
        assert report.summary["frames"].to_pylist() == [decoded]
    assert capfd.readouterr().err.count(f"warning: 1 source(s) with a note in the summary, e.g. {video}: {note}") == 2
    columns = ["source", "status", "error", "note", "frames", "faces"]
    summaries = [pd.read_csv(tmp_path / f"{name}.summary.csv") for name in ("whole", "segmented")]
    pd.testing.assert_frame_equal(summaries[0][columns], summaries[1][columns])
    assert [summary["segments"].tolist() for summary in summaries] == [[1], [4]]
    rows, segment_rows = pd.read_csv(tmp_path / "whole.csv"), pd.read_csv(tmp_path / "segmented.csv")
    assert len(rows) > 0 and rows["frame"].max() < decoded
    same = ["frame", "x", "y", "w", "h", "expression"]  # face_id and segment differ at the seams, by design
    pd.testing.assert_frame_equal(rows[same], segment_rows[same])
    np.testing.assert_allclose(rows[PROBABILITIES].to_numpy(), segment_rows[PROBABILITIES].to_numpy(), atol=1e-5)

    # A Ray worker seeks to each segment's first frame with a reader of its own: past the end, no rows and no error.
    options = AnalyzeOptions(segment_s=1.0)
    analyzer = Analyzer(options, recognizer)
    results = [analyzer.run(unit) for unit in plan_units(expand_inputs([video]), options, "model")]
    ledgers = pa.concat_tables([result.ledger for result in results])
    assert ledgers["status"].to_pylist() == ["ok"] * 4 and sum(result.frames for result in results) == decoded
    assert [result.rows.num_rows for result in results][2:] == [0, 0] and ledgers["note"].to_pylist() == [None, None, note, note]


def damaged_video(path: Path, damaged: list[int], frames: int = 100, fps: float = 10.0) -> Path:
    """An MJPG .avi of distinct frames whose JPEG data is zeroed for the ``damaged`` frames (they fail
    to decode; FFmpeg goes on with the next)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (96, 72))
    for number in range(frames):
        writer.write(textured_background(72, 96, seed=number))
    writer.release()
    data = bytearray(path.read_bytes())
    chunks = [at for at in range(len(data) - 10) if data[at:at + 4] == b"00dc" and data[at + 8:at + 10] == b"\xff\xd8"]
    assert len(chunks) == frames
    for number in damaged:
        size = int.from_bytes(data[chunks[number] + 4:chunks[number] + 8], "little")
        data[chunks[number] + 8:chunks[number] + 8 + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("damaged", "every", "rows", "note"), [
    ([0], 1, 99, "1 damaged frame(s) skipped (0)"),  # Ray's frame 30 held frame 44, and its later segments "ended"
    ([28, 29], 1, 98, "2 damaged frame(s) skipped (28, 29)"),  # at a segment's end: were never noted
    ([50], 1, 99, "1 damaged frame(s) skipped (50)"),  # a seek to 60 failed: the whole source was an error
    # six in a row, short of the header's count: damage, not the end (the rows changed with --segment-s)
    ([27, 28, 29, 30, 31, 32], 1, 94, "6 damaged frame(s) skipped (27, 28, 29, 30, 31, ...)"),
    ([0], 40, 2, "1 damaged frame(s) skipped (0)"),  # segment 0 analysed only frame 0: "not a readable video"
])
def test_a_damaged_video_gives_the_same_rows_and_notes_on_both_engines(tmp_path: Path, recognizer: Recognizer,
                                                                        damaged: list[int], every: int, rows: int, note: str) -> None:
    """The local engine reads segments in turn; a Ray worker seeks to its segment's first frame with a
    reader of its own. After a damaged frame OpenCV's seek landed elsewhere while reporting the frame
    asked for: wrong frames under right numbers, or segments dropped as truncated."""
    from fervid.analyze.local import run_local
    from fervid.analyze.writer import summarize

    video = damaged_video(tmp_path / "d.avi", damaged)
    options = AnalyzeOptions(crops=True, segment_s=3.0, every=every)  # 30-frame segments
    units = plan_units(expand_inputs([video]), options, "model")
    assert len(units) == 4 and all(unit.seekable for unit in units)
    local = list(run_local(units, options))
    alone = [Analyzer(options, recognizer).run(unit) for unit in units]  # a reader of its own per segment, as on Ray
    tables = [pa.concat_tables([result.rows for result in results]).sort_by("frame").to_pandas() for results in (local, alone)]
    assert len(tables[0]) == rows
    same = ["frame", "time_s", "x", "y", "w", "h", "expression"]
    pd.testing.assert_frame_equal(tables[0][same], tables[1][same])
    np.testing.assert_allclose(tables[0][PROBABILITIES].to_numpy(), tables[1][PROBABILITIES].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(tables[0]["time_s"], tables[0]["frame"] / 10.0, atol=1e-6)  # each row is its own frame
    summaries = [summarize(pa.concat_tables([result.ledger for result in results])).to_pylist()[0] for results in (local, alone)]
    for summary in summaries:
        assert (summary["status"], summary["error"], summary["note"], summary["frames"]) == ("ok", None, note, rows)
    other = AnalyzeOptions(crops=True, segment_s=5.0, every=every)  # other segments: the same rows
    cut = pa.concat_tables([result.rows for result in run_local(plan_units(expand_inputs([video]), other, "model"), other)])
    assert cut.sort_by("frame")["frame"].to_pylist() == tables[0]["frame"].tolist()


def test_a_source_in_error_with_rows_is_not_nothing_processed(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A video whose later segments fail (a seek in a damaged file) still gave rows: the run writes them and succeeds."""
    from fervid.analyze.video import VideoReader

    frames = VideoReader.frames

    def failing(self, start, end, timings):
        if start > 0:
            raise FervidError(f"could not seek to frame {start} (a variable-frame-rate or damaged file?)")
        yield from frames(self, start, end, timings)

    monkeypatch.setattr(VideoReader, "frames", failing)
    clip = archive / "clips" / "a.mp4"
    report = analyze([clip], tmp_path / "r.csv", AnalyzeOptions(segment_s=1.0))
    assert report.ok == 0 and report.errors == [(str(clip), "could not seek to frame 15 (a variable-frame-rate or damaged file?)")]
    assert report.summary["frames"].to_pylist() == [15] and len(pd.read_csv(tmp_path / "r.csv")) == report.faces > 0


def test_an_out_that_is_or_holds_an_input_is_refused_before_anything_is_written(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The parts would be mixed with the inputs (pandas.read_parquet(OUT) then fails on a photo), or replace one."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(2):
        cv2.imwrite(str(photos / f"{index}.png"), textured_background(48, 48, seed=index))
    (tmp_path / "odd.parquet").write_bytes(b"a file with any suffix is tried as a video")
    before = sorted(tmp_path.rglob("*"))
    for out, inputs in (
        (photos, [photos]),                                             # the input folder itself
        (tmp_path, [photos / "0.png"]),                                 # a folder that holds an input
        (tmp_path / "odd.parquet", [photos, tmp_path / "odd.parquet"]),  # an input the output file would replace
    ):
        relation = "is" if out in inputs else "holds"
        with pytest.raises(FervidError, match=f"^--out {out}: {relation} the input .*; give an --out outside the inputs$"):
            analyze(inputs, out, AnalyzeOptions(crops=True))
        assert sorted(tmp_path.rglob("*")) == before, "nothing written"

    # An --out inside an input folder is fine: its .parquet/.csv files are never taken as inputs.
    inside = photos / "results"
    first = analyze([photos], inside, AnalyzeOptions(crops=True))
    again = analyze([photos], inside, AnalyzeOptions(crops=True))
    assert first.summary.num_rows == again.summary.num_rows == 2 and again.skipped_units == again.units
    assert len(pd.read_parquet(inside)) == 2

    # But not a subfolder of photos: pandas would fail on the photos beside the parts.
    (photos / "more").mkdir()
    cv2.imwrite(str(photos / "more" / "2.png"), textured_background(48, 48, seed=2))
    with pytest.raises(FervidError, match=r"more already holds 2.png, not a part of a fervid analysis; .* give a new or empty folder"):
        analyze([photos], photos / "more", AnalyzeOptions(crops=True))
    assert sorted(path.name for path in (photos / "more").iterdir()) == ["2.png"]
    spark = tmp_path / "spark"  # another tool's Parquet folder: its part files look like ours but are not
    spark.mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(spark / "part-00000-1234.snappy.parquet")
    with pytest.raises(FervidError, match=r"already holds part-00000-1234.snappy.parquet, not a part of a fervid analysis"):
        analyze([photos], spark, AnalyzeOptions(crops=True))
    assert [path.name for path in spark.iterdir()] == ["part-00000-1234.snappy.parquet"]
    # A file --out, or the summary beside it, that no analysis wrote (no parts folder) is the user's data.
    for name, summary in (("participants.csv", "participants.summary.csv"), ("mine.parquet", "mine.summary.parquet")):
        for existing in (tmp_path / name, tmp_path / summary):
            existing.write_text("participant,age\nP1,23\n")
            with pytest.raises(FervidError, match=f"{existing} already exists and is not a fervid analysis (table|summary)"):
                analyze([photos], tmp_path / name, AnalyzeOptions(crops=True))
            assert existing.read_text() == "participant,age\nP1,23\n"
            existing.unlink()
    # Another run's summary is fervid's, but not face rows: taken as --out, it was replaced by them.
    analyze([photos], tmp_path / "s1.parquet", AnalyzeOptions(crops=True))
    kept = (tmp_path / "s1.summary.parquet").read_bytes()
    with pytest.raises(FervidError, match="s1.summary.parquet already exists and is not a fervid analysis table"):
        analyze([photos], tmp_path / "s1.summary.parquet", AnalyzeOptions(crops=True))
    shutil.copy(tmp_path / "s1.parquet", tmp_path / "t.summary.parquet")  # face rows where t.parquet's summary would go
    with pytest.raises(FervidError, match="t.summary.parquet already exists and is not a fervid analysis summary"):
        analyze([photos], tmp_path / "t.parquet", AnalyzeOptions(crops=True))
    assert (tmp_path / "s1.summary.parquet").read_bytes() == kept
    analyze([photos], tmp_path / "r.csv", AnalyzeOptions(crops=True))
    assert analyze([photos], tmp_path / "r.csv", AnalyzeOptions(crops=True)).skipped_units >= 1, "its own results: a rerun resumes"
    # Its own results with the parts folder deleted once done (as the docs allow): analysed again, replaced.
    for out, read in ((tmp_path / "r.csv", pd.read_csv), (tmp_path / "r.parquet", pd.read_parquet)):
        analyze([photos], out, AnalyzeOptions(crops=True))
        expected = read(out)
        shutil.rmtree(out.with_name(out.name + ".parts"))
        capsys.readouterr()
        assert analyze([photos], out, AnalyzeOptions(crops=True)).skipped_units == 0
        assert f"no {out.name}.parts beside it to resume from (deleted?): every source is analysed again" in capsys.readouterr().err
        pd.testing.assert_frame_equal(read(out), expected)
    for out in ("/proc/r.parquet", "/proc/results"):  # refused before any input is read
        with pytest.raises(FervidError, match=f"--out {out}: cannot write in /proc"):
            analyze([photos], Path(out), AnalyzeOptions(crops=True))


def test_ctrl_c_says_what_is_kept_and_how_to_resume(tmp_path: Path) -> None:
    video = tmp_path / "long.mp4"
    write_video(video, face_video_frames(detectable_faces(1), frames=40, empty=(0, 0))[0] * 3, fps=FPS)
    out = tmp_path / "r.csv"
    command = [FERVID, "analyze", str(video), "--out", str(out), "--segment-s", "1"]
    # A shell's background job (`nohup pytest &`) starts with Ctrl+C ignored, which Python and its
    # children keep: give the run the default handling a terminal gives it.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, ledger = time.monotonic() + 120, tmp_path / "r.csv.parts" / "_sources"
    while not (ledger.is_dir() and visible(ledger)):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fervid: interrupted; ")
    assert f"of 8 units are complete and kept in {out}.parts; rerun the same command to resume" in lines[0]


def test_small_images_without_a_face_point_to_crops(tmp_path: Path) -> None:
    """48x48 dataset faces run without --crops find nothing; the summary says why, as predict does."""
    folder = tmp_path / "faces"
    folder.mkdir()
    cv2.imwrite(str(folder / "small.png"), textured_background(48, 48, seed=1))
    cv2.imwrite(str(folder / "photo.png"), textured_background(360, 480, seed=2))
    report = analyze([folder], tmp_path / "r.csv")
    notes = dict(zip(report.summary["source"].to_pylist(), report.summary["note"].to_pylist()))
    assert "--crops classifies the whole image" in notes[str(folder / "small.png")]
    assert not notes[str(folder / "photo.png")], "a photo-sized image without a face is just that"
    with_crops = analyze([folder], tmp_path / "c.csv", AnalyzeOptions(crops=True))
    assert not any(with_crops.summary["note"].to_pylist())


def test_crops_too_small_or_too_long_for_a_face_are_classified_with_a_note(tmp_path: Path) -> None:
    """A 1x1 or 4x100 image taken whole still gets a confident label; its note says so, as predict warns."""
    folder = tmp_path / "crops"
    folder.mkdir()
    for name, shape in (("dot.png", (1, 1)), ("strip.png", (4, 100)), ("face.png", (48, 48))):
        cv2.imwrite(str(folder / name), np.full(shape, 128, np.uint8))
    clip = write_video(tmp_path / "thin.mp4", [np.full((16, 96, 3), 128, np.uint8)] * 3)
    report = analyze([folder, clip], tmp_path / "c.csv", AnalyzeOptions(crops=True))
    notes = dict(zip(report.summary["source"].to_pylist(), report.summary["note"].to_pylist()))
    assert notes[str(folder / "dot.png")] == "a 1x1 image is hardly a face crop; classified anyway"
    assert notes[str(folder / "strip.png")] == "a 100x4 image is hardly a face crop; classified anyway"
    assert notes[str(clip)] == "a 96x16 image is hardly a face crop; classified anyway"
    assert not notes[str(folder / "face.png")]
    assert len(pd.read_csv(tmp_path / "c.csv")) == 6, "each image and each frame still gets its row"


def test_zips_inside_zips_and_links_that_point_nowhere_are_named_not_dropped_silently(tmp_path: Path, capsys,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), textured_background(60, 60, seed=1))
    with zipfile.ZipFile(tmp_path / "inner.zip", "w") as inner:
        inner.write(tmp_path / "a.png", "a.png")
    with zipfile.ZipFile(folder / "outer.zip", "w") as outer:
        outer.write(tmp_path / "inner.zip", "inner.zip")
        outer.write(tmp_path / "a.png", "b.png")
    (folder / "dead.jpg").symlink_to(tmp_path / "gone.jpg")
    items = expand_inputs([folder])
    assert [item.relative for item in items] == ["b.png"]
    err = capsys.readouterr().err
    assert f"1 zip(s) inside zips skipped (extract them and give the folder), e.g. {folder / 'outer.zip'}!inner.zip" in err
    assert f"1 link(s) that point nowhere skipped, e.g. {folder / 'dead.jpg'}" in err
    with zipfile.ZipFile(tmp_path / "only.zip", "w") as only:
        only.write(tmp_path / "inner.zip", "inner.zip")
    with pytest.raises(FervidError, match=r"^no images or videos found; 1 zip\(s\) inside zips, e\.g\. .*only\.zip!inner\.zip, "
                                          r"are not opened: extract them and give the folder$"):
        expand_inputs([tmp_path / "only.zip"])
    with zipfile.ZipFile(tmp_path / "only.zip", "a") as only:
        only.writestr("clip.MP4", b"a video, by its name")
    assert [item.relative for item in expand_inputs([tmp_path / "only.zip"])] == ["clip.MP4"]
    # The same folder named three ways, from a folder beside it: one link, counted once; a dead link
    # not named like a source (a lock file) is not one the run would have read.
    (folder / "lock").symlink_to("host:123")
    (tmp_path / "beside").mkdir()
    monkeypatch.chdir(tmp_path / "beside")
    capsys.readouterr()
    expand_inputs(["../in", str(folder), "../in/"])
    assert "1 link(s) that point nowhere skipped, e.g. ../in/dead.jpg" in capsys.readouterr().err
    (folder / "outer.zip").unlink()
    with pytest.raises(FervidError, match=r"^no images or videos found in the inputs \(1 link\(s\) there point nowhere, e\.g\. "):
        expand_inputs(["../in"])


def test_a_file_name_that_is_not_utf8_is_analysed_and_named_with_its_bytes_escaped(tmp_path: Path) -> None:
    """Parquet strings are UTF-8: an old Latin-1 archive's caf\\xe9.png stopped the whole run (and every
    rerun) with a UnicodeEncodeError. It is now analysed, named with the byte escaped, and resumed."""
    folder = tmp_path / "latin"
    folder.mkdir()
    latin = os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png")
    cv2.imwrite(str(folder / "plain.png"), textured_background(48, 48, seed=1))
    shutil.copy(folder / "plain.png", latin)
    options = AnalyzeOptions(crops=True)
    first = analyze([folder], tmp_path / "faces.parquet", options)
    rows = rows_of(tmp_path / "faces.parquet")
    assert list(rows["source"]) == [f"{folder}/caf\\xe9.png", f"{folder}/plain.png"] and first.ok == 2
    np.testing.assert_allclose(rows[PROBABILITIES].to_numpy()[0], rows[PROBABILITIES].to_numpy()[1], atol=1e-6)
    again = analyze([folder], tmp_path / "faces.parquet", options)
    assert again.skipped_units == again.units


def test_a_damaged_results_file_is_analysed_again_not_a_traceback_on_every_rerun(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part or ledger emptied (a power loss after the rename, or by hand) made every rerun stop with
    pyarrow's 'Parquet file size is 0 bytes' traceback; its unit is now analysed again."""
    folders = {name: tmp_path / name for name in ("a", "b")}
    for seed, folder in enumerate(folders.values()):
        folder.mkdir()
        cv2.imwrite(str(folder / "0.png"), textured_background(48, 48, seed=seed))
    out, options = tmp_path / "faces.parquet", AnalyzeOptions(crops=True, image_batch=1)
    analyze(list(folders.values()), out, options)
    expected = rows_of(out)
    ledgers = sorted((tmp_path / "faces.parquet.parts" / "_sources").glob("*.parquet"))
    parts = sorted((tmp_path / "faces.parquet.parts").glob("part-*.parquet"))
    assert len(ledgers) == len(parts) == 2
    ledgers[0].write_bytes(b"")
    parts[1].write_bytes(parts[1].read_bytes()[:100])
    capsys.readouterr()
    again = analyze(list(folders.values()), out, options)
    assert again.skipped_units == 0 and again.ok == 2
    assert "2 unit(s) with a damaged results file (unreadable Parquet, or not the table fervid writes there) or a missing one are analysed again" in capsys.readouterr().err
    pd.testing.assert_frame_equal(rows_of(out), expected)
    # A file that cannot be read for another reason (a permission, a network disk) is not damage: kept.
    import pyarrow.parquet

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pyarrow.parquet, "read_metadata", refused)
    kept = sorted(path.name for path in (tmp_path / "faces.parquet.parts").rglob("*.parquet"))
    with pytest.raises(FervidError, match="could not be read \\(Permission denied\\); the results there are kept"):
        analyze(list(folders.values()), out, options)
    assert sorted(path.name for path in (tmp_path / "faces.parquet.parts").rglob("*.parquet")) == kept

    def garbled(path, *args, **kwargs):  # pyarrow's own OSError, with no errno, for a footer it cannot parse
        raise OSError("Couldn't deserialize thrift: TProtocolException: Invalid data")

    monkeypatch.setattr(pyarrow.parquet, "read_metadata", garbled)
    from fervid.analyze.writer import _readable

    assert _readable(ledgers[0]) is False


def test_an_out_with_a_tilde_or_a_colon_is_a_local_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--out=~/r.parquet reached fervid unexpanded: the parts went to ./~/, pyarrow read them back from
    $HOME, and the run failed at its end; a relative file:r.parquet was read as a URI."""
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), textured_background(48, 48))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    analyze([folder], "~/r.parquet", AnalyzeOptions(crops=True))
    assert len(rows_of(tmp_path / "home" / "r.parquet")) == 1 and not (tmp_path / "~").exists()
    for _ in range(2):  # the second run resumes from the parts it reads back
        report = analyze([folder], "file:r.parquet", AnalyzeOptions(crops=True))
    assert report.skipped_units == report.units and len(rows_of(tmp_path / "file:r.parquet")) == 1


def test_the_summary_note_merges_every_segments_note_whatever_their_order() -> None:
    """The summary took the alphabetically first segment note: a truncated video's 'the video ends
    at ...' was lost behind a segment's '1 damaged frame(s) ...', and which note survived
    depended on --segment-s."""
    from fervid.analyze.schema import COUNT_COLUMNS, LEDGER_SCHEMA
    from fervid.analyze.writer import summarize

    ends = "the video ends at frame 116, before the 250 frames its header gives (truncated?)"
    notes = {2: f"1 damaged frame(s) skipped (200); 1 box(es) from --boxes skipped, e.g. frame 201: off; {ends}",
             0: "5 damaged frame(s) skipped (1, 2, 3, 4, 5)", 1: None, 3: ends}
    blank = dict.fromkeys(COUNT_COLUMNS, 0)
    ledger = pa.Table.from_pylist([
        {"source": "v.avi", "kind": "video", "unit": f"u{segment}", "segment": segment, "status": "ok", "error": None,
         "note": note, "frames": 10, "faces": 0, **blank, "fingerprint": "f", "model_name": "m", "model_version": "1",
         "schema_version": 2}
        for segment, note in notes.items()
    ], schema=LEDGER_SCHEMA)
    summary = summarize(ledger).to_pylist()
    assert len(summary) == 1 and summary[0]["segments"] == 4 and summary[0]["frames"] == 40
    assert summary[0]["note"] == ("6 damaged frame(s) skipped (1, 2, 3, 4, 5, ...); "
                                  f"1 box(es) from --boxes skipped, e.g. frame 201: off; {ends}")


def test_a_face_the_detector_misses_for_under_a_second_keeps_its_id(tmp_path: Path) -> None:
    """analyze's tracker dropped a face after 5 missed analysed frames (0.2 s at 25 fps), where live
    keeps its id for a second: the same face came back as a second face_id."""
    face = detectable_faces(1)[0]
    frames = []
    for index in range(60):
        frame = textured_background(360, 480)
        if not 20 <= index < 30:  # gone for 0.4 s
            paste_face(frame, face, 170, 110, 130)
        frames.append(frame)
    video = write_video(tmp_path / "gap.mp4", frames, fps=25.0)
    analyze([video], tmp_path / "gap.parquet", AnalyzeOptions())
    rows = rows_of(tmp_path / "gap.parquet")
    assert rows["frame"].min() < 20 and rows["frame"].max() >= 50
    assert rows["face_id"].nunique() == 1, rows.groupby("face_id")["frame"].agg(["min", "max"])


def test_an_images_boxes_are_numbered_left_to_right_and_frames_it_lacks_are_noted(archive: Path, tmp_path: Path) -> None:
    """--boxes face ids followed the file's order (face_id 1 at x=100 here), boxes for frame 3 of a
    photo gave nothing without a word, and JSON's frame 1.7 or true was taken as frame 1."""
    photo = archive / "photos" / "none.png"
    (tmp_path / "boxes.csv").write_text("source,frame,x,y,w,h\nnone.png,,100,40,80,80\nnone.png,,10,20,60,60\nnone.png,3,5,5,40,40\n")
    analyze([photo], tmp_path / "b.parquet", boxes=tmp_path / "boxes.csv")
    rows = rows_of(tmp_path / "b.parquet")
    assert list(zip(rows["face_id"], rows["x"])) == [(1, 10), (2, 100)]
    note = pd.read_parquet(tmp_path / "b.summary.parquet")["note"].tolist()
    assert note == ["--boxes gives boxes for frame 3 of an image (not used: an image is frame 0, so leave frame empty)"]
    for frame in (1.7, True, "x"):
        (tmp_path / "bad.json").write_text(json.dumps([{"source": "none.png", "frame": frame, "box": [1, 2, 30, 30]}]))
        with pytest.raises(FervidError, match="entry 1 needs"):
            load_boxes(tmp_path / "bad.json")
    (tmp_path / "whole.json").write_text(json.dumps([{"source": "none.png", "frame": 30.0, "box": [1, 2, 30, 30]}]))
    assert load_boxes(tmp_path / "whole.json").entries == {"none.png": {30: [(1, 2, 30, 30)]}}


def test_an_input_that_holds_nothing_is_named_and_a_folder_named_like_a_csv_is_a_folder(tmp_path: Path, capsys) -> None:
    """An empty folder or a zip of text files given by name added nothing without a word, and
    --out results.csv/, a folder created first as the docs say, was 'not a fervid analysis table'."""
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), textured_background(48, 48))
    (tmp_path / "empty").mkdir()
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as bundle:
        bundle.writestr("readme.txt", "x")
    items = expand_inputs([photo, tmp_path / "empty", tmp_path / "notes.zip", photo])
    assert [item.name for item in items] == [str(photo)]
    assert "warning: 2 input(s) hold no image or video, e.g. " + str(tmp_path / "empty") in capsys.readouterr().err
    (tmp_path / "results.csv").mkdir()
    analyze([photo], tmp_path / "results.csv", AnalyzeOptions(crops=True))
    assert len(pd.read_parquet(tmp_path / "results.csv")) == 1


def _two_folders(root: Path) -> dict[str, Path]:
    """Folders a/ and b/ of two 48x48 crops each: with ``image_batch=2``, one unit per folder."""
    folders = {name: root / name for name in ("a", "b")}
    for seed, folder in enumerate(folders.values()):
        folder.mkdir()
        for index in range(2):
            cv2.imwrite(str(folder / f"{index}.png"), textured_background(48, 48, seed=10 * seed + index))
    return folders


def test_a_stopped_rerun_into_a_folder_never_reads_as_old_rows_beside_new(tmp_path: Path) -> None:
    """A folder --out is its parts: a changed input's old part was deleted only at the run's end, so a
    run stopped part-way left old and new rows of the same source side by side (duplicates)."""
    folders = _two_folders(tmp_path)
    out, options = tmp_path / "faces", AnalyzeOptions(crops=True, image_batch=2)
    analyze(list(folders.values()), out, options)
    assert len(rows_of(out)) == 4
    cv2.imwrite(str(folders["b"] / "0.png"), textured_background(48, 48, seed=99))  # b's unit is redone

    def stop(result) -> None:
        raise KeyboardInterrupt

    with pytest.raises(AnalyzeInterrupted):
        analyze(list(folders.values()), out, options, on_result=stop)
    rows = rows_of(out)
    assert len(rows) == 4 and not rows.duplicated(["source", "frame", "face_id"]).any(), rows
    fresh = analyze(list(folders.values()), tmp_path / "fresh", options).outputs[0]
    pd.testing.assert_frame_equal(rows_of(out), rows_of(fresh))
    finished = analyze(list(folders.values()), out, options)
    assert finished.skipped_units == 2 and not [path for path in out.iterdir() if path.name.endswith(".stale")]
    pd.testing.assert_frame_equal(rows_of(out), rows_of(fresh))


def test_a_unit_whose_part_was_deleted_is_analysed_again(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Its ledger alone made it complete: its faces went missing from the table without a word."""
    folders = _two_folders(tmp_path)
    out, options = tmp_path / "faces.parquet", AnalyzeOptions(crops=True, image_batch=2)
    analyze(list(folders.values()), out, options)
    parts = sorted((tmp_path / "faces.parquet.parts").glob("part-*.parquet"))
    assert len(parts) == 2
    parts[0].unlink()
    again = analyze(list(folders.values()), out, options)
    assert again.skipped_units == 1 and len(pd.read_parquet(out)) == 4
    assert "1 unit(s) with a damaged results file (unreadable Parquet, or not the table fervid writes there) or a missing one are analysed again" in capsys.readouterr().err


def test_an_out_inside_another_analysis_results_is_refused(tmp_path: Path) -> None:
    """pandas reads every file below a Parquet folder: a table written into a folder --out (or a
    .parts folder) became rows of that table, 118 duplicates in one case, or made it unreadable (.csv)."""
    folders = _two_folders(tmp_path)
    options = AnalyzeOptions(crops=True, image_batch=2)
    analyze([folders["a"]], tmp_path / "res", options)
    analyze([folders["a"]], tmp_path / "r.parquet", options)
    for inside in (tmp_path / "res" / "videos.parquet", tmp_path / "res" / "deeper" / "v.csv", tmp_path / "r.parquet.parts" / "x"):
        with pytest.raises(FervidError, match=rf"inside {re.escape(str(inside.parent if inside.parent.name != 'deeper' else inside.parent.parent))}, "
                                              "the results of another fervid analysis"):
            analyze([folders["b"]], inside, options)
    assert len(rows_of(tmp_path / "res")) == 2 and analyze([folders["a"]], tmp_path / "res", options).skipped_units == 1


def test_a_killed_runs_temporary_table_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """A kill while the final table was written left a hidden file as large as the table beside it,
    which no later run removed; another program's hidden file there is left alone."""
    folders = _two_folders(tmp_path)
    out, options = tmp_path / "faces.parquet", AnalyzeOptions(crops=True, image_batch=2)
    leftovers = [tmp_path / ".faces.k1ll3d_x.tmp.parquet", tmp_path / ".faces.summary.k1ll3d_x.tmp.parquet"]
    for leftover in leftovers:
        leftover.write_bytes(b"half a table")
    # another program's hidden file, and the temporary of another run's --out faces.2024.parquet in the
    # same folder (deleted, that run failed at its end): neither is this run's
    others = [tmp_path / ".other.tmp.parquet", tmp_path / ".faces.2024.abcd1234.tmp.parquet", tmp_path / ".faces.v2.keepme.tmp.parquet"]
    for other in others:
        other.write_bytes(b"not ours")
    analyze(list(folders.values()), out, options)
    assert not any(leftover.exists() for leftover in leftovers) and all(other.exists() for other in others)


def test_a_failed_final_write_leaves_the_earlier_table_and_summary_as_a_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table was moved into place before the summary was written: a failure (or a kill) while
    writing the summary left the new table beside the old summary, which counted other faces."""
    import fervid.analyze.writer as writer

    folders = _two_folders(tmp_path)
    out, options = tmp_path / "faces.parquet", AnalyzeOptions(crops=True, image_batch=2)
    analyze(list(folders.values()), out, options)
    table, summary = out.read_bytes(), (tmp_path / "faces.summary.parquet").read_bytes()
    cv2.imwrite(str(folders["b"] / "0.png"), textured_background(48, 48, seed=99))  # b's rows change
    write_table = writer.pq.write_table

    def full_disk_at_the_summary(rows: pa.Table, where: object, **kwargs: object) -> None:
        if ".summary." in str(where):
            raise OSError(28, "No space left on device", str(where))
        write_table(rows, where, **kwargs)

    monkeypatch.setattr(writer.pq, "write_table", full_disk_at_the_summary)
    with pytest.raises((OSError, FervidError)):
        analyze(list(folders.values()), out, options)
    assert out.read_bytes() == table and (tmp_path / "faces.summary.parquet").read_bytes() == summary
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".faces")], "no temporary file is left"
    monkeypatch.undo()
    again = analyze(list(folders.values()), out, options)
    assert again.skipped_units == 2 and out.read_bytes() != table, "the failed run's analysis is kept, only written out"


@pytest.mark.parametrize("moment", ["flush", "move"])
def test_ctrl_c_while_the_table_and_summary_are_finished_leaves_them_a_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str) -> None:
    """Each file was flushed (slow for a large table) just before its own move, the summary first: a
    Ctrl+C during the table's flush left the new summary beside the old table, and said nothing of
    the units kept. Now a stop while they are flushed keeps the old pair, one while they move
    finishes both moves first, and either way says that every unit is kept."""
    import fervid.fileio as fileio

    folders = _two_folders(tmp_path)
    out, options = tmp_path / "faces.parquet", AnalyzeOptions(crops=True, image_batch=2)
    analyze(list(folders.values()), out, options)
    summary_path = tmp_path / "faces.summary.parquet"
    old = (out.read_bytes(), summary_path.read_bytes())
    cv2.imwrite(str(folders["b"] / "0.png"), textured_background(48, 48, seed=99))  # b's rows change
    flush, replace = fileio._flush_to_disk, os.replace

    def ctrl_c_at_the_table(function):
        def wrapped(*args: object) -> object:
            if Path(str(args[0])).name.startswith(".faces.") and ".summary." not in str(args[0]):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # delivered here
            return function(*args)
        return wrapped

    if moment == "flush":
        monkeypatch.setattr(fileio, "_flush_to_disk", ctrl_c_at_the_table(flush))
    else:
        monkeypatch.setattr(fileio.os, "replace", ctrl_c_at_the_table(replace))
    with pytest.raises(AnalyzeInterrupted, match="2 of 2 units are complete"):
        analyze(list(folders.values()), out, options)
    monkeypatch.undo()
    pair = (out.read_bytes(), summary_path.read_bytes())
    fresh = analyze(list(folders.values()), tmp_path / "fresh.parquet", options)
    if moment == "flush":
        assert pair == old
    else:
        assert pair[0] != old[0] and pair[1] != old[1]
        pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(fresh.outputs[0]))
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".faces")], "no temporary file is left"


def test_the_python_api_takes_numpy_numbers_and_generators_and_refuses_other_types(tmp_path: Path) -> None:
    """NumPy's int64 options failed as a TypeError (no JSON) deep in the unit plan; a generator of inputs
    was used up by the check of out and read as no inputs; bytes paths and a dict of options were
    TypeError/AttributeError tracebacks."""
    folders = _two_folders(tmp_path)
    out = tmp_path / "faces.parquet"
    first = analyze((folder for folder in folders.values()), out, AnalyzeOptions(image_batch=2, min_size=30, scale_factor=1.25))
    assert (first.units, first.skipped_units) == (2, 0)
    numpy_options = AnalyzeOptions(image_batch=np.int64(2), min_size=np.int64(30), scale_factor=np.float32(1.25), every=np.int64(5))
    again = analyze(list(folders.values()), out, numpy_options)
    assert again.skipped_units == 2, "the same settings as NumPy numbers are the same units"
    for call, message in (
        (lambda: analyze([os.fsencode(folders["a"])], tmp_path / "x.parquet"), "each input must be a path"),
        (lambda: analyze([folders["a"]], os.fsencode(tmp_path / "x.parquet")), "out must be a path"),
        (lambda: analyze([folders["a"]], tmp_path / "x.parquet", {"crops": True}), "options must be an AnalyzeOptions"),
    ):
        with pytest.raises(FervidError, match=message):
            call()
    assert not (tmp_path / "x.parquet").exists()


def test_ffmpegs_own_lines_stay_off_the_terminal_from_the_python_api_too(tmp_path: Path) -> None:
    """The CLI kept FFmpeg's lines ("moov atom not found") off the terminal, the API printed them."""
    broken = tmp_path / "cut.mp4"
    data = write_video(tmp_path / "whole.mp4", [textured_background(48, 64, seed=i) for i in range(20)], fps=10.0).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    code = ("from fervid.analyze import analyze\nfrom fervid.errors import FervidError\n"
            f"try:\n    analyze([{str(broken)!r}], {str(tmp_path / 'out')!r})\nexcept FervidError as error:\n    print(error)\n")
    env = {key: value for key, value in os.environ.items() if key != "OPENCV_FFMPEG_LOGLEVEL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert "nothing could be processed" in result.stdout, result.stdout + result.stderr
    assert "moov atom" not in result.stderr and "@ 0x" not in result.stderr, result.stderr


def test_a_zip_bomb_image_is_an_error_row_never_read_into_memory(tmp_path: Path) -> None:
    """A zipped image unpacking to gigabytes of zeros (1.5 MB deflated) was read whole before any check
    (3.2 GB of memory for 1.5 GB): it is refused by the size the zip declares, an error row with the
    reason, and the zip's other photos are analysed."""
    archive = tmp_path / "z.zip"
    ok, encoded = cv2.imencode(".png", textured_background(48, 48))
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bundle:
        bundle.writestr("photos/0.png", encoded.tobytes())
        with bundle.open("photos/bomb.jpg", "w") as member:  # 520 MiB of zeros, over the 512 MiB an image may unpack to
            for _ in range(520):
                member.write(bytes(1 << 20))
    out = tmp_path / "r.csv"
    code = ("import sys\n" + PEAK_MIB_SOURCE +
            "from fervid.analyze import AnalyzeOptions, analyze\n"
            "analyze([sys.argv[1]], sys.argv[2], AnalyzeOptions(crops=True))\n"
            "print(peak_mib())\n")
    result = subprocess.run([sys.executable, "-c", code, str(archive), str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = pd.read_csv(tmp_path / "r.summary.csv").set_index("source")
    assert summary.loc[f"{archive}!photos/0.png", "status"] == "ok"
    assert summary.loc[f"{archive}!photos/bomb.jpg", "status"] == "error"
    assert summary.loc[f"{archive}!photos/bomb.jpg", "error"] == ("over 512 MiB unpacked, more than fervid reads of one image in "
                                                                  "a zip (a zip bomb?); extract it to read it as a file")
    assert int(result.stdout.strip().splitlines()[-1]) < 500, "the 520 MiB member was read into memory"


@pytest.mark.parametrize("name", ["boxes.csv", "boxes.json"])
def test_a_named_pipe_as_boxes_is_refused_not_waited_on_forever(tmp_path: Path, name: str) -> None:
    """``--boxes`` naming a pipe with no writer (mkfifo) blocked reading it, forever."""
    cv2.imwrite(str(tmp_path / "a.png"), textured_background(48, 48))
    pipe = tmp_path / name
    os.mkfifo(pipe)
    # In a child first, with a timeout: read in this process, the old wait would hang the test run.
    result = subprocess.run([FERVID, "analyze", str(tmp_path / "a.png"), "--out", str(tmp_path / "r.csv"), "--boxes", str(pipe)],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stderr.strip() == (
        f"fervid: error: --boxes {pipe}: not a regular file (a device, pipe or socket); save the boxes to a file and give that"), result.stderr
    assert not (tmp_path / "r.csv").exists()
    with pytest.raises(FervidError, match="not a regular file"):
        load_boxes(pipe)


def test_a_part_holding_another_table_is_analysed_again_not_merged_as_empty_rows(tmp_path: Path, capsys) -> None:
    """A valid Parquet file of another table ({a: [1, 2]}) under a part's name was taken as a complete
    unit: "already complete", and its faces came out as two all-empty rows (read with the row schema,
    every column it lacks is null). A ledger holding another table is no proof of a unit either."""
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(3):
        cv2.imwrite(str(folder / f"{seed}.png"), textured_background(48, 48, seed=seed))
    out, options = tmp_path / "faces.csv", AnalyzeOptions(crops=True, image_batch=1)
    analyze([folder], out, options)
    expected = pd.read_csv(out)
    parts_folder = tmp_path / "faces.csv.parts"
    parts, ledgers = sorted(parts_folder.glob("part-*.parquet")), sorted((parts_folder / "_sources").glob("*.parquet"))
    assert len(parts) == len(ledgers) == 3
    pq.write_table(pa.table({"a": [1, 2]}), parts[0])
    pq.write_table(pa.table({"source": ["x"], "faces": [0]}), ledgers[1])
    capsys.readouterr()
    again = analyze([folder], out, options)
    assert again.skipped_units == 1 and again.ok == 3
    assert ("2 unit(s) with a damaged results file (unreadable Parquet, or not the table fervid writes there) or a missing one "
            "are analysed again") in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(out), expected)
    assert pq.read_schema(parts[0]).names == ROW_SCHEMA.names


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_file_where_the_parts_folder_goes_is_refused_in_one_line_and_kept(tmp_path: Path, suffix: str) -> None:
    """``r.csv.parts`` a file: the run failed with "r.csv.parts/_sources: Not a directory"."""
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), textured_background(48, 48))
    out = tmp_path / f"r{suffix}"
    (tmp_path / f"r{suffix}.parts").write_text("notes")
    with pytest.raises(FervidError) as refused:
        analyze([folder], out, AnalyzeOptions(crops=True))
    assert str(refused.value) == (f"--out {out}: {out}.parts exists and is not a folder, where the run keeps its parts; "
                                  "move it or give another --out")
    assert (tmp_path / f"r{suffix}.parts").read_text() == "notes" and not out.exists()


def test_a_users_file_named_like_a_part_in_a_plain_folder_is_refused_not_replaced(tmp_path: Path) -> None:
    """A folder --out is fervid's parts folder only where fervid made ``_sources/`` in it: a user's own
    part-<unit>.parquet (or _summary.parquet) in a plain folder was replaced by the run's part (or hidden
    and deleted as a stale one) without a word. A fervid table there (a run whose _sources/ was deleted)
    is still analysed again and replaced."""
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), textured_background(48, 48))
    analyze([folder], tmp_path / "first", AnalyzeOptions(crops=True))
    (name,) = [path.name for path in (tmp_path / "first").glob("part-*.parquet")]
    mine = tmp_path / "mine"
    mine.mkdir()
    pq.write_table(pa.table({"participant": ["P1", "P2"]}), mine / name)
    before = (mine / name).read_bytes()
    with pytest.raises(FervidError, match=rf"^--out {mine}: {mine} already holds {name}, named like a part of a fervid analysis "
                                          r"but not one \(not a fervid face table\), which the results would replace"):
        analyze([folder], mine, AnalyzeOptions(crops=True))
    assert [path.name for path in mine.iterdir()] == [name] and (mine / name).read_bytes() == before
    (mine / name).unlink()
    pq.write_table(pa.table({"participant": ["P1"]}), mine / "_summary.parquet")
    with pytest.raises(FervidError, match=r"_summary.parquet already exists and is not a fervid analysis summary"):
        analyze([folder], mine, AnalyzeOptions(crops=True))
    assert [path.name for path in mine.iterdir()] == ["_summary.parquet"]
    shutil.rmtree(tmp_path / "first" / "_sources")  # fervid's own parts and summary, without their ledgers
    again = analyze([folder], tmp_path / "first", AnalyzeOptions(crops=True))
    assert again.skipped_units == 0 and again.ok == 1 and len(pd.read_parquet(tmp_path / "first")) == 1
