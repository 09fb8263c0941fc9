"""The live loop on synthetic videos of real FER2013 faces: detection, ids, timeline, mp4, summary, streams."""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS
from fervid.runtime.live import run_live
from fervid.runtime.recognizer import Recognizer
from fervid.runtime.sinks import TIMELINE_FIELDS, VideoSink
from fervid.runtime.sources import Frame, LiveSource, Source, open_source
from fervid.runtime.track import iou_matrix

from conftest import detectable_faces, face_video_frames, paste_face, textured_background, write_video


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer()


@pytest.fixture(scope="module")
def video_run(two_face_video, recognizer: Recognizer, tmp_path_factory: pytest.TempPathFactory):
    """One headless run over the two-face video with every output requested."""
    video, truth = two_face_video
    folder = tmp_path_factory.mktemp("live")
    report = run_live(video, recognizer, output=folder / "out.mp4", timeline=folder / "out.jsonl", display=False)
    rows = [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]
    return report, rows, truth, folder


def frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_faces_are_detected_in_most_frames(video_run) -> None:
    report, rows, truth, _ = video_run
    by_frame = defaultdict(list)
    for row in rows:
        by_frame[row["frame"]].append(row["box"])
    face_frames = [index for index, boxes in enumerate(truth) if boxes]
    hits = total = 0
    for index in face_frames:
        found = np.array(by_frame.get(index, []), dtype=float).reshape(-1, 4)
        overlaps = iou_matrix(np.array(truth[index]), found)
        hits += int((overlaps.max(axis=1, initial=0) > 0.4).sum())
        total += len(truth[index])
    assert hits / total >= 0.8, f"{hits}/{total} faces found"
    assert report.frames == len(truth)


def test_no_face_frames_give_no_rows(video_run) -> None:
    _, rows, truth, _ = video_run
    empty = {index for index, boxes in enumerate(truth) if not boxes}
    assert empty and not [row for row in rows if row["frame"] in empty]


def test_track_ids_are_stable(video_run) -> None:
    _, rows, truth, _ = video_run
    ids_by_face: dict[int, set[int]] = defaultdict(set)
    for row in rows:
        overlaps = iou_matrix(np.array([row["box"]]), np.array(truth[row["frame"]]))[0]
        assert overlaps.max() > 0.3, f"a row matches no face: {row}"
        ids_by_face[int(overlaps.argmax())].add(row["track_id"])
    assert set(ids_by_face) == {0, 1}
    assert all(len(ids) == 1 for ids in ids_by_face.values()), ids_by_face
    assert ids_by_face[0] != ids_by_face[1]


def test_timeline_schema(video_run) -> None:
    _, rows, _, _ = video_run
    assert rows
    for row in rows:
        assert list(row) == ["frame", "time_s", "track_id", "box", "expression", "confidence", "probabilities"]
        assert isinstance(row["frame"], int) and isinstance(row["track_id"], int)
        assert row["time_s"] == pytest.approx(row["frame"] / 15.0, abs=1e-3)
        assert len(row["box"]) == 4 and all(isinstance(v, int) for v in row["box"])
        assert list(row["probabilities"]) == list(EXPRESSIONS)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        # the shown label is held through near ties: within label_margin (0.1) of the most probable
        assert row["probabilities"][row["expression"]] >= max(row["probabilities"].values()) - 0.1
        assert row["confidence"] == pytest.approx(row["probabilities"][row["expression"]], abs=1e-4)
    frames = [row["frame"] for row in rows]
    assert frames == sorted(frames)


def test_output_mp4_reads_back_with_every_frame(video_run) -> None:
    report, _, truth, folder = video_run
    output = folder / "out.mp4"
    assert frame_count(output) == len(truth) == report.frames
    capture = cv2.VideoCapture(str(output))
    assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 480 and int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == 360
    capture.release()
    assert not list(folder.glob(".*tmp*")), "temporary files were left behind"


def test_faces_are_counted_without_a_timeline(video_run, two_face_video, recognizer: Recognizer, tmp_path: Path) -> None:
    report, rows, _, _ = video_run
    assert report.rows == len(rows) > 0
    video, _ = two_face_video
    without = run_live(video, recognizer, output=tmp_path / "out.mp4", display=False)
    assert without.rows == report.rows


def test_summary_per_face(video_run) -> None:
    report, rows, _, folder = video_run
    summary = json.loads((folder / "out-summary.json").read_text())["faces"]
    assert summary and rows, "the video's faces: else the checks below check nothing"
    assert sorted(face["track_id"] for face in summary) == sorted({row["track_id"] for row in rows})
    for face in summary:
        assert sum(face["shares"].values()) == pytest.approx(1.0, abs=1e-3)
        assert face["frames"] == sum(row["track_id"] == face["track_id"] for row in rows)
        assert face["dominant"] == max(face["shares"], key=face["shares"].get)
        own = [row for row in rows if row["track_id"] == face["track_id"]]
        shown = [row["expression"] for row in own]  # the labels drawn
        assert face["shares"] == {name: pytest.approx(shown.count(name) / len(shown), abs=1e-4) for name in EXPRESSIONS}
        assert (face["first_s"], face["last_s"]) == (pytest.approx(own[0]["time_s"], abs=1e-3), pytest.approx(own[-1]["time_s"], abs=1e-3))
        assert face["mean_probabilities"] == {
            name: pytest.approx(np.mean([row["probabilities"][name] for row in own]), abs=2e-4) for name in EXPRESSIONS
        }
    pytest.importorskip("matplotlib")
    plot = cv2.imread(str(folder / "out-summary.png"))
    assert plot is not None and plot.shape[0] > 100


def test_the_summary_leaves_out_faces_followed_for_fewer_than_three_frames() -> None:
    """Shorter tracks are usually the detector's false positives."""
    from fervid.runtime.face import Face
    from fervid.runtime.sinks import Summary

    summary = Summary()
    probabilities = np.eye(len(EXPRESSIONS))[3]
    for time_s in (0.0, 0.1, 0.2):
        faces = [Face.from_probabilities((0, 0, 10, 10), probabilities, track_id=1)]
        if time_s < 0.2:
            faces.append(Face.from_probabilities((20, 0, 10, 10), probabilities, track_id=2))
        summary.add(time_s, faces)
    assert [face["track_id"] for face in summary.to_dict()] == [1]
    assert summary.to_dict()[0] | {"shares": None, "mean_probabilities": None} == {
        "track_id": 1, "frames": 3, "first_s": 0.0, "last_s": 0.2, "dominant": EXPRESSIONS[3], "shares": None,
        "mean_probabilities": None}


def test_csv_timeline_and_max_frames(two_face_video, recognizer: Recognizer, tmp_path: Path) -> None:
    video, truth = two_face_video
    report = run_live(video, recognizer, timeline=tmp_path / "out.csv", display=False, max_frames=20, detect_every=3)
    assert report.frames == 20
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == TIMELINE_FIELDS
    assert list(rows[0])[-7:] == [f"prob_{name}" for name in EXPRESSIONS]  # as in `fervid analyze`'s table
    assert max(int(row["frame"]) for row in rows) <= 19
    assert len({row["track_id"] for row in rows}) == 2
    assert all(abs(sum(float(row[f"prob_{name}"]) for name in EXPRESSIONS) - 1) < 1e-3 for row in rows)
    at_once = write_video(tmp_path / "at-once.mp4", face_video_frames(detectable_faces(2), frames=12, empty=(0, 0))[0])
    first = run_live(at_once, recognizer, timeline=tmp_path / "one.jsonl", display=False, max_frames=1)  # gave no faces
    assert first.frames == 1 and first.rows >= 1 and len(first.faces) == first.rows, "the first frame alone is a still: its faces shown"


def test_a_video_without_faces_gives_no_rows_and_no_error(recognizer: Recognizer, tmp_path: Path) -> None:
    images, _ = face_video_frames([], frames=8)
    video = write_video(tmp_path / "empty.mp4", images)
    report = run_live(video, recognizer, output=tmp_path / "out.mp4", timeline=tmp_path / "out.jsonl", display=False)
    assert report.frames == 8 and report.rows == 0 and report.faces == []
    assert (tmp_path / "out.jsonl").read_text() == ""
    assert frame_count(tmp_path / "out.mp4") == 8


def test_a_stream_that_ends_mid_way_still_leaves_a_playable_file(
    two_face_video, recognizer: Recognizer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A LiveSource over a file behaves like a stream that dies after its last frame: it says so."""
    video, truth = two_face_video
    source = LiveSource(str(video), "stream")
    with source, VideoSink(tmp_path / "recording.mp4", source.fps) as sink:
        delivered = 0
        for frame in source:
            sink.write(frame.image)
            delivered += 1
    assert 0 < delivered <= len(truth)
    assert frame_count(tmp_path / "recording.mp4") == delivered
    assert "stream: the stream ended (no more frames)" in capsys.readouterr().err


class FakeCapture:
    """cv2.VideoCapture's interface for a LiveSource: 15 fps; subclasses say what ``read`` gives."""

    def __init__(self) -> None:
        self.frames = 0

    def get(self, prop: int) -> float:
        return 15.0

    def release(self) -> None:
        pass


def test_a_camera_read_that_fails_once_does_not_end_the_run(capsys: pytest.CaptureFixture) -> None:
    """A webcam warming up or a lossy RTSP link fails a read now and then: the first failure ended
    the run. Reads failing for 2 s in a row still end it."""

    class Hiccups(FakeCapture):  # frames 0-1, a failed read, frames 2-4, then nothing
        def read(self):
            self.frames += 1
            if self.frames == 3 or self.frames > 6:
                return False, None
            time.sleep(0.02)
            return True, textured_background(60, 80, seed=self.frames)

    started = time.monotonic()
    with LiveSource(0, "camera 9", capture=Hiccups()) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            time.sleep(0.001)
    assert len(frames) >= 3 and frames[-1].index >= 3, "frames after the failed read were delivered"
    assert 1.5 < time.monotonic() - started < 10, "failing reads ended it after 2 s"
    assert "camera 9: the stream ended (no more frames)" in capsys.readouterr().err


def test_live_sources_drop_frames_instead_of_queueing(two_face_video) -> None:
    """A consumer busy with one frame gets the newest frame next, not the ones decoded meanwhile
    (waiting on the reader's drop count, not on a guess of how fast this machine decodes)."""
    video, truth = two_face_video
    with LiveSource(str(video), "stream") as source:
        frames = iter(source)
        indexes = [next(frames).index]
        deadline = time.monotonic() + 30
        while source.dropped < 3 and time.monotonic() < deadline:  # a slow consumer: the reader runs on
            time.sleep(0.01)
        indexes += [frame.index for frame in frames]
    assert source.dropped >= 3
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
    assert indexes[1] - indexes[0] > 1, "the frames decoded while the consumer was busy were skipped"
    assert len(indexes) < len(truth) and len(indexes) + source.dropped <= len(truth)


def test_video_files_deliver_every_frame(two_face_video) -> None:
    video, truth = two_face_video
    with open_source(video) as source:
        indexes = [frame.index for frame in source]
    assert indexes == list(range(len(truth)))
    assert source.fps == pytest.approx(15.0)


def test_an_animated_gif_plays_as_a_video_and_a_still_one_as_an_image(tmp_path: Path) -> None:
    from PIL import Image

    frames = [Image.fromarray(np.full((32, 40), 30 * index, np.uint8)) for index in range(6)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(tmp_path / "still.gif")
    with open_source(tmp_path / "anim.gif") as source:
        played = [frame.image[0, 0, 0] for frame in source]
    assert len(played) == 6 and played[0] < played[-1]  # every frame, in order
    with open_source(tmp_path / "still.gif") as source:
        assert [frame.index for frame in source] == [0]


def test_a_video_cut_short_is_played_to_its_end_and_said_to_end_early(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """analyze notes a truncated file; live used to play the part that is left without a word."""
    full = tmp_path / "full.avi"  # MJPG in AVI: the header's frame count survives a cut-off tail
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48))
    for index in range(90):
        writer.write(np.full((48, 64, 3), index, np.uint8))
    writer.release()
    data = full.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 3])
    with open_source(tmp_path / "cut.avi") as source:
        played = sum(1 for _ in source)
    assert 10 < played < 60
    assert f"cut.avi: the video ends at frame {played}, before the 90 frames its header gives (truncated?)" in capsys.readouterr().err
    with open_source(full) as source:
        assert sum(1 for _ in source) == 90
    assert "the video ends" not in capsys.readouterr().err


def test_image_folders_are_sources(tmp_path: Path, recognizer: Recognizer) -> None:
    images, _ = face_video_frames(detectable_faces(1), frames=4, empty=(0, 0))
    for index, image in enumerate(images):
        cv2.imwrite(str(tmp_path / f"{index:02d}.png"), image)
    (tmp_path / "zz-broken.png").write_bytes(b"broken")
    report = run_live(tmp_path, recognizer, timeline=tmp_path / "out" / "t.jsonl", display=False, detect_every=1)
    assert report.frames == 4 and report.rows >= 2
    assert (tmp_path / "out" / "t-summary.png").exists()
    report = run_live(tmp_path, recognizer, timeline=tmp_path / "out" / "t.jsonl", display=False, detect_every=1)
    assert report.frames == 4, "the summary plot written into the folder is not read back as a frame on a rerun"
    before = (tmp_path / "00.png").read_bytes()
    with pytest.raises(FervidError, match="00.png: one of the source's images"):  # its plot would be 00.png
        run_live(tmp_path, recognizer, summary=tmp_path / "00.json", display=False)
    assert (tmp_path / "00.png").read_bytes() == before and not (tmp_path / "00.json").exists()
    (tmp_path / "01.json").write_text("{}")  # a sidecar of the photo's own, not a summary: 01.png is still an input
    with pytest.raises(FervidError, match="01.png: one of the source's images"):
        run_live(tmp_path, recognizer, summary=tmp_path / "01.json", display=False)
    report = run_live(tmp_path, recognizer, timeline=tmp_path / "out" / "u.jsonl", display=False, detect_every=1)
    assert report.frames == 4, "an earlier run's plot (out/t-summary.png, under another name) is not a frame either"


def test_a_single_image_source_shows_its_faces(tmp_path: Path, recognizer: Recognizer) -> None:
    """A still has no next frame to confirm a face on: its faces are shown from the one frame."""
    image = textured_background(360, 480)
    paste_face(image, detectable_faces(1)[0], 150, 100, 130)
    cv2.imwrite(str(tmp_path / "still.png"), image)
    report = run_live(tmp_path / "still.png", recognizer, timeline=tmp_path / "t.jsonl", display=False)
    assert report.frames == 1 and report.rows == 1 and len(report.faces) == 1


@pytest.mark.parametrize(
    ("source", "message"),
    [("7", "camera 7 could not be opened"), ("ftp://host/clip.mp4", "unsupported URL scheme"), ("missing.mp4", "no such file"),
     ("", "the source is empty"), ("²", "no such file"), ("99999999999999999999", "cameras are numbered from 0"),
     (-2, "cameras are numbered from 0"), (-1, "cameras are numbered from 0"),  # -1 ("any camera") crashed OpenCV
     ("-1", "camera -1: cameras are numbered from 0")],  # as `fervid live -s -1` gives it: was "no such file"
)
def test_bad_sources_are_clear_errors(source: str, message: str) -> None:
    with pytest.raises(FervidError, match=message):
        open_source(source)


def test_a_run_without_a_readable_frame_leaves_an_existing_timeline_as_it_was(recognizer: Recognizer, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"broken")
    timeline = tmp_path / "t.jsonl"
    timeline.write_text("the rows of an earlier run\n")
    with pytest.raises(FervidError, match="broken.png: not a readable image"):  # a lone image is its own error
        run_live(folder, recognizer, timeline=timeline, display=False)
    assert timeline.read_text() == "the rows of an earlier run\n"
    (folder / "broken2.png").write_bytes(b"broken")
    with pytest.raises(FervidError, match="no frame could be read"):
        run_live(folder, recognizer, timeline=timeline, display=False)
    assert timeline.read_text() == "the rows of an earlier run\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frames", "t.jsonl"]  # no temporary file left


def test_an_output_onto_the_source_video_is_refused(recognizer: Recognizer, tmp_path: Path) -> None:
    images, _ = face_video_frames([], frames=4)
    video = write_video(tmp_path / "clip.mp4", images)
    original = video.read_bytes()
    for outputs in ({"output": tmp_path / "." / "clip.mp4"}, {"summary": video}):
        with pytest.raises(FervidError, match="is the --source itself"):
            run_live(video, recognizer, display=False, **outputs)
    assert video.read_bytes() == original
    with pytest.raises(FervidError, match="a folder, not a file"):  # the summary is written last: refused before the run
        run_live(video, recognizer, display=False, output=tmp_path / "out.mp4", summary=tmp_path)
    with pytest.raises(FervidError, match="ending in .json"):  # s.png: the plot beside it would overwrite it
        run_live(video, recognizer, display=False, output=tmp_path / "out.mp4", summary=tmp_path / "s.png")
    assert not (tmp_path / "out.mp4").exists()


def test_an_output_that_cannot_be_written_is_refused_before_the_first_frame(recognizer: Recognizer, tmp_path: Path) -> None:
    """A file where a folder must be, or a folder where the default summary goes, would fail only at the end."""
    images, _ = face_video_frames([], frames=4)
    video = write_video(tmp_path / "clip.mp4", images)
    timeline = tmp_path / "t.jsonl"
    timeline.write_text("the rows of an earlier run\n")
    for outputs in ({"output": video / "out.mp4"}, {"summary": video / "s.json"}):
        with pytest.raises(FervidError, match="clip.mp4 is a file, not a folder"):
            run_live(video, recognizer, display=False, timeline=timeline, **outputs)
    (tmp_path / "t-summary.json").mkdir()
    with pytest.raises(FervidError, match="t-summary.json: a folder"):
        run_live(video, recognizer, display=False, timeline=timeline)
    (tmp_path / "s.png").mkdir()
    with pytest.raises(FervidError, match="s.png: a folder"):  # the summary's plot
        run_live(video, recognizer, display=False, timeline=timeline, summary=tmp_path / "s.json")
    assert timeline.read_text() == "the rows of an earlier run\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4", "s.png", "t-summary.json", "t.jsonl"]


def test_a_run_removes_what_a_killed_run_left_beside_its_outputs(recognizer: Recognizer, tmp_path: Path) -> None:
    """A SIGKILL left the hidden temporaries of the recording (as large as the recording) and of the
    timeline, and no later run removed them; another file's temporaries and the user's files stay."""
    images, _ = face_video_frames([], frames=4)
    video = write_video(tmp_path / "clip.mp4", images)
    out = tmp_path / "out"
    out.mkdir()
    left = [out / ".o.k3x9q2ab.tmp.mp4", out / ".t.a1b2c3d4.tmp.jsonl", out / ".o-summary.zz99yy88.tmp.json",
            out / ".o-summary.qq11ww22.tmp.png"]
    kept = [out / ".other.k3x9q2ab.tmp.mp4", out / ".o.mp4.bak", out / "notes.txt"]
    for path in left + kept:
        path.write_bytes(b"partial")
    run_live(video, recognizer, display=False, output=out / "o.mp4", timeline=out / "t.jsonl")
    assert [path.name for path in left if path.exists()] == []
    assert all(path.read_bytes() == b"partial" for path in kept)
    assert sorted(path.name for path in out.iterdir() if not path.name.startswith(".")) == [
        "notes.txt", "o-summary.json", "o-summary.png", "o.mp4", "t.jsonl"]


def test_a_run_that_fails_keeps_the_earlier_outputs(recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed run must not replace an earlier timeline with the rows of its first frames."""
    images, _ = face_video_frames([], frames=4)
    video = write_video(tmp_path / "clip.mp4", images)
    timeline = tmp_path / "t.jsonl"
    timeline.write_text("the rows of an earlier run\n")

    class Closed:
        def __init__(self, *args) -> None:
            pass

        def isOpened(self) -> bool:
            return False

    monkeypatch.setattr("fervid.runtime.sinks.cv2.VideoWriter", Closed)
    with pytest.raises(FervidError, match="could not open an mp4 writer"):
        run_live(video, recognizer, display=False, timeline=timeline, output=tmp_path / "o.mp4")
    assert timeline.read_text() == "the rows of an earlier run\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4", "t.jsonl"]  # no temporary file left


class FakeLive(Source):
    """A camera that delivered the frames numbered ``indexes`` (the gaps were dropped), then stopped;
    ``stop`` is raised instead of the first frame."""

    live = True
    fps = 15.0

    def __init__(self, indexes: list[int], stop: type[BaseException] | None = None) -> None:
        self.name, self.indexes, self.stop = "camera 9", indexes, stop

    def __iter__(self):
        if self.stop is not None:
            raise self.stop
        for index in self.indexes:
            yield Frame(textured_background(120, 160), index, index / self.fps)


def test_ctrl_c_before_the_first_frame_is_an_interrupt_not_an_error(recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fervid.runtime.live.open_source", lambda source: FakeLive([], stop=KeyboardInterrupt))
    timeline = tmp_path / "t.jsonl"
    timeline.write_text("the rows of an earlier run\n")
    with pytest.raises(KeyboardInterrupt):
        run_live(0, recognizer, display=False, timeline=timeline)
    assert timeline.read_text() == "the rows of an earlier run\n"


def test_a_camera_recording_plays_at_the_real_speed(recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames dropped while processing are filled in with the frame before them, so 1 s stays 1 s."""
    monkeypatch.setattr("fervid.runtime.live.open_source", lambda source: FakeLive([2, 3, 7, 8]))
    report = run_live(0, recognizer, display=False, output=tmp_path / "rec.mp4")
    assert report.frames == 4
    assert frame_count(tmp_path / "rec.mp4") == 7  # capture numbers 2 to 8
    assert sorted(path.name for path in tmp_path.iterdir()) == ["rec.mp4"], "a camera's summary only with --summary"


def test_a_stream_that_stops_sending_ends_the_run_with_its_outputs_finished(
    recognizer: Recognizer, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A camera unplugged or a stream that stalls without closing: after stall_s without a frame the
    run ends with a warning, and the recording is whole."""
    import threading

    class Stalls(FakeCapture):  # two frames, then a read that never returns
        released = threading.Event()

        def read(self):
            self.frames += 1
            if self.frames > 2:
                self.released.wait(30)
                return False, None
            return True, textured_background(120, 160, seed=self.frames)

        def release(self) -> None:
            self.released.set()

    monkeypatch.setattr("fervid.runtime.live.open_source", lambda source: LiveSource(0, "camera 9", stall_s=1.0, capture=Stalls()))
    started = time.monotonic()
    report = run_live(0, recognizer, display=False, output=tmp_path / "rec.mp4")
    assert report.frames >= 1 and time.monotonic() - started < 15  # a live source keeps only the newest frame
    assert "warning: camera 9: no frame for 1 s, stopping" in capsys.readouterr().err
    assert frame_count(tmp_path / "rec.mp4") >= 1 and not list(tmp_path.glob(".*tmp*"))


class FakeFile(FakeLive):
    """A video file whose frames ``indexes`` decoded (the gaps were damaged frames FFmpeg skipped)."""

    live = False


def test_a_video_recording_fills_damaged_frames_so_it_keeps_the_sources_length(recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fervid.runtime.live.open_source", lambda source: FakeFile([0, 1, 4, 5]))
    report = run_live("clip.mp4", recognizer, display=False, output=tmp_path / "annotated.mp4")
    assert report.frames == 4 and frame_count(tmp_path / "annotated.mp4") == 6


def test_a_one_frame_video_shows_its_faces(tmp_path: Path, recognizer: Recognizer) -> None:
    """As for a still: no later frame can confirm a face, so the one frame's faces are shown."""
    image = textured_background(360, 480)
    paste_face(image, detectable_faces(1)[0], 150, 100, 130)
    write_video(tmp_path / "one.mp4", [image], fps=15.0)
    report = run_live(tmp_path / "one.mp4", recognizer, timeline=tmp_path / "t.jsonl", display=False)
    assert report.frames == 1 and report.rows == 1 and len(report.faces) == 1
    # a photo named .mp4: FFmpeg reads it as one frame of a file whose length it does not know
    cv2.imwrite(str(tmp_path / "photo.jpg"), image)
    (tmp_path / "photo.jpg").rename(tmp_path / "photo.mp4")
    with open_source(tmp_path / "photo.mp4") as source:
        assert source.total is None, "the case this covers: a frame count that is not known"
    report = run_live(tmp_path / "photo.mp4", recognizer, timeline=tmp_path / "t.jsonl", display=False)
    assert report.frames == 1 and report.rows == 1 and len(report.faces) == 1


def test_videos_in_a_folder_source_are_named_not_silently_left_out(tmp_path: Path, recognizer: Recognizer, capsys: pytest.CaptureFixture) -> None:
    write_video(tmp_path / "clip.mp4", [textured_background(120, 160)] * 3, fps=15.0)
    with pytest.raises(FervidError, match=r"holds 1 video\(s\) and no images; play one with --source .*clip\.mp4, or analyse them all with fervid analyze"):
        open_source(tmp_path)
    cv2.imwrite(str(tmp_path / "a.png"), textured_background(120, 160))
    capsys.readouterr()
    with open_source(tmp_path) as source:
        assert source.total == 1 and len(list(source)) == 1
    assert "its 1 video(s) are not played, only its images" in capsys.readouterr().err
    (tmp_path / "clip.mp4").unlink()  # a run's own recording in the folder is not warned of on a rerun
    for _ in range(2):
        run_live(tmp_path, recognizer, display=False, output=tmp_path / "out.mp4")
    assert "not played" not in capsys.readouterr().err


def test_closing_a_stalled_stream_does_not_release_the_capture_under_its_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Releasing a capture while another thread is blocked in its read can crash OpenCV's FFmpeg backend."""
    import threading

    class Stalled:
        def __init__(self) -> None:
            self.reads, self.reading, self.unblock = 0, threading.Event(), threading.Event()
            self.released = self.released_while_reading = False

        def get(self, prop: int) -> float:
            return 0.0

        def read(self):
            self.reads += 1
            if self.reads == 1:
                return True, np.zeros((8, 8, 3), np.uint8)
            self.reading.set()
            self.unblock.wait(10)
            self.reading.clear()
            return False, None

        def release(self) -> None:
            self.released_while_reading |= self.reading.is_set()
            self.released = True

    capture = Stalled()
    monkeypatch.setattr("fervid.runtime.sources.open_capture", lambda target: capture)
    source = LiveSource("rtsp://camera/stream", "stream")
    source.close_wait_s = 0.1
    assert next(iter(source)).index == 0
    assert capture.reading.wait(5)
    source.close()
    assert not capture.released
    capture.unblock.set()
    source._thread.join(5)
    assert capture.released and not capture.released_while_reading


def test_a_folder_plays_numbered_frames_in_number_order(tmp_path: Path) -> None:
    """Frames numbered without leading zeros (frame_2, frame_10) play as numbered, not as text sorts them."""
    for number in (1, 2, 10, 11):
        cv2.imwrite(str(tmp_path / f"frame_{number}.png"), np.full((8, 8, 3), number, np.uint8))
    (tmp_path / "not-an-image.png").mkdir()
    with open_source(tmp_path) as source:
        assert [int(frame.image[0, 0, 0]) for frame in source] == [1, 2, 10, 11]


def test_the_summary_plot_leaves_the_callers_matplotlib_backend_alone(tmp_path: Path) -> None:
    """run_live in a notebook or GUI app must not switch its plots to the file-only Agg backend."""
    matplotlib = pytest.importorskip("matplotlib")
    from fervid.runtime.face import Face
    from fervid.runtime.sinks import Summary

    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        summary = Summary()
        for index in range(3):
            summary.add(index / 10, [Face.from_probabilities((0, 0, 9, 9), np.eye(7)[3], track_id=1)])
        assert summary.write_plot(tmp_path / "plot.png")
        assert matplotlib.get_backend() == "pdf"
        assert cv2.imread(str(tmp_path / "plot.png")).shape[0] > 100
    finally:
        matplotlib.use(before)


def test_labels_grow_with_the_image_so_a_large_photo_stays_readable() -> None:
    """A fixed 0.5-scale label is about 1% of a 3000 px photo's height, unreadable when it is shown to fit."""
    from fervid.runtime.face import Face
    from fervid.runtime.render import annotate

    def label_height(side: int) -> int:
        image = np.zeros((side, side * 4 // 3, 3), np.uint8)
        box = (side // 4, side // 2, side // 4, side // 4)
        annotate(image, [Face.from_probabilities(box, np.eye(7)[3], track_id=1)], panel=False)
        rows = np.flatnonzero(image[: side // 2 - 1].any(axis=(1, 2)))  # the label, above the box
        return int(rows.max() - rows.min() + 1)

    small, large = label_height(480), label_height(3000)
    assert large >= 5 * small, (small, large)
    assert small < 25  # a 640x480 frame keeps its sizes


def test_a_face_at_the_right_edge_keeps_its_whole_label() -> None:
    """The label starts at the box's left edge unless that would cut it off at the frame's right edge."""
    from fervid.runtime.face import Face
    from fervid.runtime.render import annotate

    def label_pixels(x: int) -> np.ndarray:
        image = np.zeros((240, 320, 3), np.uint8)
        annotate(image, [Face.from_probabilities((x, 120, 60, 60), np.eye(7)[6], track_id=12)], panel=False)
        return image[:115].any(axis=2)  # above the box: the label alone

    middle, edge = label_pixels(100), label_pixels(300)
    assert edge.sum() == middle.sum() > 0  # the same label, whole
    assert np.flatnonzero(edge.any(axis=0)).min() < 300  # moved left of the box to fit


def test_a_folder_named_with_digits_is_that_folder_not_a_camera(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "2024").mkdir()
    cv2.imwrite(str(tmp_path / "2024" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    with open_source("2024") as source:
        assert not source.live and source.total == 1


def test_a_recording_letterboxes_frames_of_another_shape(tmp_path: Path) -> None:
    """An image folder may mix portrait and landscape photos: a frame of another shape than the first is
    fitted into the recording with its proportions kept (black bars), not stretched over it."""
    from fervid.runtime.sinks import letterboxed

    portrait = np.full((200, 100, 3), 255, dtype=np.uint8)
    fitted = letterboxed(portrait, (320, 240))
    assert fitted.shape == (240, 320, 3)
    columns = np.flatnonzero(fitted[120, :, 0] > 128)
    assert (columns[0], columns[-1]) == (100, 219), "120x240 inside 320x240, centred"
    assert fitted[:, :100].max() == 0 and fitted[:, 220:].max() == 0

    with VideoSink(tmp_path / "mixed.mp4", 30.0) as sink:
        sink.write(np.full((240, 320, 3), 60, dtype=np.uint8))
        sink.write(portrait)
    capture = cv2.VideoCapture(str(tmp_path / "mixed.mp4"))
    frames = [capture.read()[1] for _ in range(2)]
    capture.release()
    assert all(frame.shape == (240, 320, 3) for frame in frames)
    assert frames[1][120, 160].mean() > 200 and frames[1][120, 20].mean() < 30, "the portrait in the middle, bars at the sides"


@pytest.mark.parametrize(("width", "height"), [(9000, 100), (1, 1), (100, 8192)])
def test_a_recording_of_frames_the_encoder_cannot_take_says_their_size(tmp_path: Path, width: int, height: int) -> None:
    """A readable 9000x1000 panorama was 'OpenCV could not open an mp4 writer', naming no cause."""
    with pytest.raises(FervidError, match=rf"the frames are {width}x{height} pixels, and the mp4 encoder takes 2 to 8191 a side"):
        with VideoSink(tmp_path / "pano.mp4", 15.0) as sink:
            sink.write(np.zeros((height, width, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with VideoSink(tmp_path / "edge.mp4", 15.0) as sink:  # the largest side it takes
        sink.write(np.zeros((8, 8191, 3), np.uint8))
    assert (tmp_path / "edge.mp4").stat().st_size > 0


def test_the_summary_plot_shows_every_face_over_the_whole_time_it_covers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The panels share one time axis; setting it per face left every panel on the last face's span."""
    from matplotlib.figure import Figure

    from fervid.runtime.face import Face
    from fervid.runtime.sinks import Summary

    summary = Summary()
    for step in range(40):  # face 1 from 0 to 1.9 s, face 2 from 3 to 3.9 s
        time_s = step * 0.1
        faces = [Face.from_probabilities((0, 0, 10, 10), np.full(7, 1 / 7), track_id=1 if time_s < 2 else 2)]
        if time_s < 2 or time_s >= 3:
            summary.add(time_s, faces)
    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: (drawn.append(figure), save(figure, *args, **kwargs)))
    assert summary.write_plot(tmp_path / "s.png")
    limits = {tuple(np.round(axis.get_xlim(), 2)) for axis in drawn[0].axes if axis.get_ylabel().startswith("face #")}
    assert limits == {(0.0, 3.9)}


@pytest.mark.parametrize(("reported", "used"), [(0.5, 0.5), (25.0, 25.0), (0.0, 30.0), (float("nan"), 30.0), (90000.0, 30.0)])
def test_a_time_lapse_keeps_its_frame_rate_and_a_meaningless_header_gets_30(reported: float, used: float) -> None:
    from fervid.runtime.sources import frame_rate

    assert frame_rate(reported) == used


def test_a_half_frame_per_second_video_is_timed_by_its_own_rate(tmp_path: Path) -> None:
    video = write_video(tmp_path / "timelapse.mp4", [textured_background(120, 160, seed=s) for s in range(4)], fps=0.5)
    source = open_source(str(video))
    try:
        assert source.fps == pytest.approx(0.5, rel=0.01), "a 0.5 fps time-lapse was read as 30 fps: 4 frames in 0.1 s"
    finally:
        source.close()


VFR_CLIP = Path(__file__).parent / "data" / "vfr.mp4"  # tools/make_vfr_clip.py: 10 frames at these times
VFR_TIMES = [0.0, 0.1, 0.2, 0.5, 0.6, 1.5, 1.6, 1.7, 3.0, 3.1]


def test_a_variable_frame_rate_video_is_timed_by_its_timestamps() -> None:
    """Phones record at a variable rate: frame / fps (about 3.1 fps on average here) would put frame 8
    at 2.6 s; its timestamp says 3.0 s."""
    with open_source(VFR_CLIP) as source:
        frames = list(source)
    assert source.fps == pytest.approx(3.125)
    assert [frame.index for frame in frames] == list(range(10))
    np.testing.assert_allclose([frame.time_s for frame in frames], VFR_TIMES, atol=1e-6)


def test_the_clock_counts_on_where_a_capture_gives_no_timestamps() -> None:
    from fervid.runtime.sources import FrameClock

    class Silent:  # a backend that reports 0 for every frame's position
        def get(self, prop: int) -> float:
            return 0.0

    clock = FrameClock(30.0)
    straight = [clock.time(Silent(), index) for index in range(9001)]
    assert straight == [round(index / 30.0, 6) for index in range(9001)], "frame / fps, not summed steps"
    clock.reset()  # after a seek to frame 4500 (a Ray worker's segment): the same times
    assert [clock.time(Silent(), index) for index in range(4500, 9001)] == straight[4500:]


@pytest.fixture()
def http_server(tmp_path: Path):
    """A local web server: ``/clip.mp4`` (with byte ranges, as web servers and buckets serve videos),
    ``/mjpeg`` (an MJPEG camera: 20 frames at 15 fps) and ``/silent`` (accepts, then sends nothing)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    video = write_video(tmp_path / "clip.mp4", [textured_background(120, 160, seed=i) for i in range(20)], fps=15.0).read_bytes()
    jpegs = [cv2.imencode(".jpg", textured_background(120, 160, seed=i))[1].tobytes() for i in range(20)]
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/silent":
                release.wait(30)
                return
            if self.path == "/mjpeg":
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for jpeg in jpegs:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg))
                    time.sleep(1 / 15)
                return
            first, last = 0, len(video) - 1
            if ranged := self.headers.get("Range"):
                start, end = ranged.split("=")[1].split("-")
                first, last = int(start or 0), int(end) if end else len(video) - 1
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(video)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(last - first + 1))
            self.end_headers()
            self.wfile.write(video[first : last + 1])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()


def test_a_video_at_a_url_is_read_whole_and_a_camera_at_a_url_as_a_stream(http_server: str) -> None:
    """A recorded clip behind http:// has a frame count: every frame is read, none dropped (read as a
    stream, all but two of 150 frames were dropped). An MJPEG camera has none: newest frame only."""
    with open_source(f"{http_server}/clip.mp4") as source:
        frames = list(source)
    assert not source.live and source.total == 20 and [frame.index for frame in frames] == list(range(20))
    with open_source(f"{http_server}/mjpeg") as source:
        assert source.live and sum(1 for _ in source) >= 1


def test_a_url_that_does_not_answer_fails_in_time_and_ctrl_c_stops_the_wait(http_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import _thread
    import threading

    monkeypatch.setattr("fervid.runtime.sources.URL_TIMEOUT_S", 1.5)
    started = time.monotonic()
    with pytest.raises(FervidError, match=r"/silent could not be opened \(no answer within 1\.5 s\)"):
        open_source(f"{http_server}/silent")
    assert time.monotonic() - started < 6
    monkeypatch.setattr("fervid.runtime.sources.URL_TIMEOUT_S", 20.0)
    interrupt = threading.Timer(0.3, _thread.interrupt_main)  # Ctrl+C while OpenCV waits in C
    interrupt.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            open_source(f"{http_server}/silent")
    finally:
        interrupt.cancel()  # should the open fail first, the Ctrl+C must not land in the next test
    assert time.monotonic() - started < 3


def test_a_recording_keeps_the_sources_timing(recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable-frame-rate video is recorded at its average rate with each frame at its own time
    (one whose slot an earlier frame took is left out: written after it, a fast stretch drifted
    behind the audio), and a camera that sent nothing for 2 s (a stall, or fewer frames than its
    header's rate) is filled for those 2 s, so the recording lines up with the source (and its audio)."""
    output = tmp_path / "vfr.mp4"
    run_live(VFR_CLIP, recognizer, display=False, output=output)
    capture = cv2.VideoCapture(str(output))
    recorded = []
    while (read := capture.read())[0]:
        recorded.append(float(read[1].mean()))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    assert fps == pytest.approx(3.125, abs=0.01) and len(recorded) == round(3.1 * 3.125) + 1
    # the clip's frames are grey levels 0, 20, 40, ... at 0, 0.1, 0.2, 0.5, 0.6, 1.5, 1.6, 1.7, 3.0
    # and 3.1 s: slots 0, 0, 1, 2, 2, 5, 5, 5, 9 and 10 at 3.125 fps. A slot shows its first frame;
    # frames 1, 4, 6 and 7 are left out, and a gap shows the newest frame before it (4 for 3 and 4)
    expected = [0, 2, 3, 4, 4, 5, 7, 7, 7, 8, 9]  # each slot's frame number
    assert [round(shown / 20) for shown in recorded] == expected

    class Stalled(FakeLive):
        def __iter__(self):
            for index, time_s in enumerate([0.0, 1 / 15, 2 / 15, 2 + 3 / 15, 2 + 4 / 15]):
                yield Frame(textured_background(120, 160), index, time_s)

    monkeypatch.setattr("fervid.runtime.live.open_source", lambda source: Stalled([]))
    run_live(0, recognizer, display=False, output=tmp_path / "stalled.mp4")
    assert frame_count(tmp_path / "stalled.mp4") == 30 + 4 + 1  # 2 s and 4 frames at 15 fps, and the first


def test_a_rerun_without_faces_leaves_no_earlier_plot_beside_its_summary(recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    summary = tmp_path / "x-summary.json"
    summary.write_text(json.dumps({"faces": [{"track_id": 1}]}))  # an earlier run's, with its plot
    (tmp_path / "x-summary.png").write_bytes(b"the earlier run's faces")
    monkeypatch.setattr("fervid.runtime.live.open_source", lambda source: FakeFile([0, 1, 2]))
    run_live("clip.mp4", recognizer, display=False, timeline=tmp_path / "x.jsonl")
    assert json.loads(summary.read_text()) == {"faces": []}
    plot = cv2.imread(str(tmp_path / "x-summary.png"))
    assert plot is not None and plot.shape[1] > 500, "a plot saying no face was followed, not the old one"


@pytest.mark.parametrize("suffix", [".mp4", ".jsonl"])
def test_a_255_byte_output_name_gets_its_default_summary_beside_it_with_the_name_cut_to_fit(
    recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """A legal 255-byte ``--output`` (or ``--jsonl``) failed with "File name too long" on its summary,
    named ``<stem>-summary.json``, 9 bytes longer; the summary's stem is cut to fit now."""
    pytest.importorskip("matplotlib")
    monkeypatch.setattr("fervid.runtime.live.open_source", lambda source: FakeFile([0, 1, 2]))
    stem = "v" * (255 - len(suffix))
    given = {"output": tmp_path / f"{stem}{suffix}"} if suffix == ".mp4" else {"timeline": tmp_path / f"{stem}{suffix}"}
    run_live("clip.mp4", recognizer, display=False, **given)
    cut = "v" * (255 - len("-summary.json"))
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"{cut}-summary.json", f"{cut}-summary.png", f"{stem}{suffix}"]
    assert json.loads((tmp_path / f"{cut}-summary.json").read_text()) == {"faces": []}


def test_ctrl_c_while_the_outputs_are_finished_waits_for_all_of_them(recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second Ctrl+C while the summary was written stopped before its plot: the last run's plot
    stayed beside the new summary, describing other faces."""
    import os
    import signal

    from fervid.runtime.sinks import Summary

    pytest.importorskip("matplotlib")
    (tmp_path / "x-summary.json").write_text(json.dumps({"faces": [{"track_id": 1}]}))  # an earlier run's, with its plot
    (tmp_path / "x-summary.png").write_bytes(b"the earlier run's faces")
    write_json = Summary.write_json

    def interrupted_while_writing(self, path):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # delivered here
        write_json(self, path)

    monkeypatch.setattr(Summary, "write_json", interrupted_while_writing)
    monkeypatch.setattr("fervid.runtime.live.open_source", lambda source: FakeFile([0, 1, 2]))
    report = run_live("clip.mp4", recognizer, display=False, timeline=tmp_path / "x.jsonl")
    assert report.interrupted and report.outputs[-1] == str(tmp_path / "x-summary.png")
    assert json.loads((tmp_path / "x-summary.json").read_text()) == {"faces": []}
    assert cv2.imread(str(tmp_path / "x-summary.png")) is not None, "the new plot, not the old one"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_headless_run_without_outputs_says_how_to_keep_something(
    recognizer: Recognizer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("fervid.runtime.live.open_source", lambda source: FakeFile([0, 1, 2]))
    lines = run_live("clip.mp4", recognizer, display=False).describe()
    assert lines[-1].startswith("nothing was saved: add --output out.mp4")
    kept = run_live("clip.mp4", recognizer, display=False, timeline=tmp_path / "t.jsonl").describe()
    assert not any(line.startswith("nothing was saved") for line in kept) and kept[-1].startswith("wrote ")


def test_panels_of_faces_side_by_side_cover_no_face_and_no_other_panel() -> None:
    """Two faces with no room for both panels at their right: the second went left, over the first's
    panel; now it goes where it covers nothing (below), and a lone face keeps its panel at its right."""
    from fervid.runtime.render import place_panels

    def overlap(a, b) -> int:
        return max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])) * max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))

    boxes = [(60, 80, 150, 150), (380, 120, 150, 150)]
    panels = place_panels(boxes, (480, 640, 3))
    assert overlap(panels[0], panels[1]) == 0
    assert all(overlap(panel, box) == 0 for panel in panels for box in boxes)
    assert all(0 <= x and x + w <= 640 and 0 <= y and y + h <= 480 for x, y, w, h in panels)
    assert place_panels([(100, 100, 120, 120)], (480, 640, 3))[0][:2] == (226, 100)  # right of the box, 6 px apart
    # A label wider than its box: "#12 surprise 100%" over a 43-pixel face reaches past the next face's
    # right edge, where the other face's panel went (the label was taken as wide as its box).
    from fervid.runtime.render import label_rect

    small, big = (251, 220, 43, 43), (324, 196, 73, 73)
    labels = ["#12 surprise 100%", "#13 happy 90%"]
    text = label_rect(small, labels[0], (480, 640, 3))
    assert text[2] > 43 and text[0] + text[2] > 324 + 73, "the label is wider than its box, past the other face"
    placed = place_panels([small, big], (480, 640, 3), labels)
    assert all(overlap(panel, label_rect(box, label, (480, 640, 3))) == 0 for panel in placed for box, label in zip([small, big], labels))
    assert any(overlap(panel, text) for panel in place_panels([small, big], (480, 640, 3))), "without the labels it covered one"


def test_panels_are_drawn_under_every_label_and_left_off_frames_too_narrow_for_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawn face by face, a crowded frame's later panel darkened the labels drawn before it ("ha[sad]py
    94%"); every panel now goes under every box and label. On a frame under 400 px wide, as on the
    web page's narrow views, the panel found no free place and covered its own face (at 120x90 it was
    larger than the frame): panels are left off there, the label says the expression."""
    from fervid.runtime import render
    from fervid.runtime.face import Face

    first = Face.from_probabilities((300, 200, 100, 100), np.eye(7)[3])  # happy
    second = Face.from_probabilities((60, 60, 100, 100), np.eye(7)[6])  # surprise
    label = render.label_rect(first.box, render.label_text(first), (480, 640, 3))
    over_the_first_label = [(label[0], label[1], render.PANEL_WIDTH, 60), (440, 300, render.PANEL_WIDTH, 60)]
    monkeypatch.setattr(render, "place_panels", lambda boxes, shape, labels=None: over_the_first_label)
    frame = render.annotate(np.full((480, 640, 3), 128, np.uint8), [first, second])
    x, y, w, h = label
    text = frame[y : y + h, x : x + w].reshape(-1, 3)
    assert (text == render.COLORS["happy"]).all(axis=1).sum() > 20, "the label is drawn over the panel, in its own colour"
    assert (frame[y + 2 : y + 58, 414 : x + render.PANEL_WIDTH] < 128).all(), "the panel is there, under it (past the box and bars)"
    monkeypatch.undo()

    def darkened(frame: np.ndarray) -> int:  # pixels a panel darkened: 128 * 0.25
        return int((frame == 32).all(axis=2).sum())

    for width, height, box in ((320, 240, (100, 60, 120, 120)), (120, 90, (28, 13, 64, 64))):
        small = render.annotate(np.full((height, width, 3), 128, np.uint8), [Face.from_probabilities(box, np.eye(7)[3])])
        assert darkened(small) < 20, (width, "no panel")
    wide = render.annotate(np.full((480, 640, 3), 128, np.uint8), [Face.from_probabilities((100, 60, 120, 120), np.eye(7)[3])])
    assert darkened(wide) > 5000, "a 640-pixel frame keeps its panel"


def test_a_label_with_no_room_above_its_box_is_drawn_inside_it_under_the_top_line() -> None:
    """A face at the top edge had its label clamped to the frame's top, on the box's own top line
    (struck through), and panels were placed as if the label were 4 px tall."""
    from fervid.runtime import render
    from fervid.runtime.face import Face

    face = Face.from_probabilities((20, 4, 70, 70), np.eye(7)[3], track_id=12)
    frame = render.annotate(np.full((480, 640, 3), 128, np.uint8), [face], panel=False)
    happy = np.abs(frame.astype(int) - render.COLORS["happy"]).sum(axis=2) < 120  # anti-aliased strokes near the colour
    assert not happy[:3].any(), "nothing above the box's top line (rows 3-5 at y=4)"
    x, y, w, h = render.label_rect(face.box, render.label_text(face), frame.shape)
    assert y > 4 + 1 and h == 18, "below the top line, as tall as the text"
    assert happy[y : y + h, 92 : x + w].sum() > 20, "the text, where the rectangle says (past the box's right side)"
    assert render.label_rect((20, 40, 70, 70), "x", frame.shape)[1::2] == (22, 18), "with room, above the box as before"


def test_a_panoramas_labels_are_sized_by_its_long_side_as_far_as_its_height_holds_a_panel() -> None:
    """Sizes came from the short side only: a 3200x400 panorama, shown fitted to a screen, had labels
    about 5 pixels tall. Ordinary frames keep their sizes."""
    from fervid.runtime.render import ui_scale

    def scale(height: int, width: int) -> float:
        return ui_scale(np.zeros((height, width, 3), np.uint8))

    assert (scale(480, 640), scale(1080, 1920), scale(1920, 1080), scale(3000, 4000), scale(1080, 2560)) == (1.0, 2.25, 2.25, 6.25, 2.25)
    assert scale(400, 3200) == 2.5
    assert scale(100, 5000) == 1.0, "a banner too low for a larger panel keeps the smallest sizes"


def test_labels_of_faces_side_by_side_do_not_run_into_each_other() -> None:
    """Five faces in a row, 12 px apart: "#1 surprise 98%" is wider than its box and ran under the next
    face's label ("#1 surprise 98#2 disgust 99%"); such a label now goes inside its box."""
    from fervid.runtime.render import _overlap, label_rect, place_labels, place_panels

    boxes = [(10 + i * 122, 200, 110, 110) for i in range(5)]
    labels = ["#1 surprise 100%", "#2 disgust 100%", "#3 happy 100%", "#4 angry 100%", "#5 sad 100%"]
    shape = (480, 640, 3)
    above = [label_rect(box, text, shape) for box, text in zip(boxes, labels)]
    assert _overlap(above[0], above[1]) > 0, "the premise: above their boxes, the first two labels overlap"
    placed = place_labels(boxes, labels, shape)
    assert all(_overlap(a, b) == 0 for i, a in enumerate(placed) for b in placed[i + 1:]), placed
    assert placed[0] == above[0] and placed[1][1] > 200, "the first above its box, the second inside its own"
    panels = place_panels(boxes, shape, labels)
    assert all(_overlap(panel, text) == 0 for panel in panels for text in placed), "panels keep off the labels where they are"


def test_the_closing_line_reads_as_english_for_one_frame_and_one_box() -> None:
    from fervid.runtime.live import LiveReport

    report = LiveReport(source="clip.mp4", frames=1, rows=1, seconds=0.5)
    assert report.describe()[0] == "1 frame in 0.5 s (2.0 FPS); 1 face box"
    report.frames, report.rows = 45, 28
    assert report.describe()[0].startswith("45 frames in 0.5 s") and report.describe()[0].endswith("; 28 face boxes")


def test_a_face_leaving_by_the_left_edge_is_boxed_inside_the_frame() -> None:
    """The WebSocket reported [-1, 106, 181, 181] then [-9, 108, 178, 178] for a face sliding out
    to the left: the tracked box is smoothed towards where the face is going, past the edge the
    detector's own boxes never cross. A detector that finds the face 20 px further left each frame,
    stopping at the edge, shows it."""
    from fervid.runtime.pipeline import FrameProcessor
    from fervid.runtime.sources import Frame

    class EdgeDetector:
        x = 120

        def detect(self, gray: np.ndarray) -> np.ndarray:
            return np.array([[self.x, 150, 100, 100]])

        def detect_near(self, gray: np.ndarray, box, strict: bool = False) -> np.ndarray:
            return np.array([self.x, 150, 100, 100])

    class StubRecognizer:
        detector = EdgeDetector()

        def classify_boxes(self, gray: np.ndarray, boxes) -> np.ndarray:
            return np.full((len(boxes), len(EXPRESSIONS)), 1 / len(EXPRESSIONS))

    recognizer = StubRecognizer()
    processor, boxes = FrameProcessor(recognizer), []  # type: ignore[arg-type]
    for index in range(12):
        recognizer.detector.x = max(0, 120 - 20 * index)
        boxes += [found.box for found in processor.process(Frame(np.zeros((480, 640, 3), np.uint8), index, index / 30))]
    assert len(boxes) >= 10 and min(x for x, _, _, _ in boxes) == 0, boxes
    assert all(x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480 for x, y, w, h in boxes), boxes


def test_run_live_checks_its_python_arguments_before_the_first_frame(recognizer: Recognizer, tmp_path: Path) -> None:
    """From Python, max_frames="3" was a TypeError traceback, 2.5 ran 3 frames, and a recognizer of
    None failed part-way into the first frame; the messages name both spellings."""
    video = tmp_path / "v.mp4"
    write_video(video, [textured_background(120, 160, seed=i) for i in range(3)])
    for arguments, message in (({"max_frames": "3"}, r"max_frames \(--max-frames\) must be a whole number, 1 or more, got '3'"),
                               ({"max_frames": 2.5}, "got 2.5"), ({"max_frames": True}, "got True"), ({"max_frames": 0}, "got 0"),
                               ({"detect_every": 1.5}, r"detect_every \(--detect-every\) must be a whole number, 1 or more, got 1.5")):
        with pytest.raises(FervidError, match=message):
            run_live(video, recognizer, display=False, timeline=tmp_path / "t.jsonl", **arguments)
    with pytest.raises(FervidError, match="recognizer must be a fervid.Recognizer, got NoneType"):
        run_live(video, None, display=False)  # type: ignore[arg-type]
    assert not (tmp_path / "t.jsonl").exists()
    assert run_live(video, recognizer, display=False, max_frames=np.int64(2)).frames == 2


def test_a_summary_that_cannot_be_written_leaves_the_recording_and_timeline_as_they_were(
        recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The summary was written after the recording and timeline were moved into place: a folder made
    read-only (or a full disk) then failed the run with status 2, its new video and timeline beside
    the last run's summary. Now all stay as they were; and a recording refused at its close leaves
    the summary and its plot as they were too."""
    from fervid.runtime import sinks

    video = tmp_path / "v.mp4"
    write_video(video, [textured_background(120, 160, seed=i) for i in range(6)])
    out = tmp_path / "out"
    run_live(video, recognizer, output=out / "o.mp4", timeline=out / "o.jsonl", display=False, max_frames=3)
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    assert sorted(earlier) == ["o-summary.json", "o-summary.png", "o.jsonl", "o.mp4"]

    def full_disk(self, target) -> None:
        raise OSError(28, "No space left on device", str(target))

    with monkeypatch.context() as patched:
        patched.setattr(sinks.Summary, "write_json", full_disk)
        with pytest.raises(OSError, match="No space left"):
            run_live(video, recognizer, output=out / "o.mp4", timeline=out / "o.jsonl", display=False)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier, "nothing replaced, no temporary left"

    def cut_short(self) -> None:
        self.discard()
        raise FervidError(f"{self.target}: the recording could not be read back")

    with monkeypatch.context() as patched:
        patched.setattr(sinks.VideoSink, "close", cut_short)
        with pytest.raises(FervidError, match="could not be read back"):
            run_live(video, recognizer, output=out / "o.mp4", timeline=out / "o.jsonl", display=False)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier
    report = run_live(video, recognizer, output=out / "o.mp4", timeline=out / "o.jsonl", display=False)
    assert report.outputs == [str(out / name) for name in ("o.mp4", "o.jsonl", "o-summary.json", "o-summary.png")]
    assert (out / "o.mp4").read_bytes() != earlier["o.mp4"], "six frames now, not three"


def test_the_fps_counter_keeps_off_a_face_in_the_top_left_corner() -> None:
    """Fixed at the top left, the counter was written over the label of a face there ("#1 neu60 FPS%")."""
    from fervid.runtime.face import Face
    from fervid.runtime.render import annotate

    def counter_columns(faces: list) -> np.ndarray:
        image = np.zeros((480, 640, 3), np.uint8)
        annotate(image, faces, fps=25.0)
        green = (image[..., 1] > 200) & (image[..., 0] < 130) & (image[..., 2] < 130)  # (80, 255, 80): the counter alone
        return np.flatnonzero(green[:60].any(axis=0))

    assert counter_columns([]).max() < 100, "with no face there, the top left"
    corner = Face.from_probabilities((4, 4, 150, 150), np.eye(7)[4], track_id=1)  # neutral: grey, not green
    assert counter_columns([corner]).min() > 500, "moved to the top right"
    both = [corner, Face.from_probabilities((480, 10, 150, 150), np.eye(7)[4], track_id=2)]
    image = np.zeros((480, 640, 3), np.uint8)
    annotate(image, both, fps=25.0)
    green = (image[..., 1] > 200) & (image[..., 0] < 130) & (image[..., 2] < 130)
    rows = np.flatnonzero(green.any(axis=1))
    assert rows.min() > 400, "both top corners taken: a bottom one"


def test_a_label_inside_its_box_keeps_clear_of_the_box_lines() -> None:
    """Inside the box (no room above it), the label began on the box's left line: "#" struck through."""
    from fervid.runtime.render import label_rect

    left, top, _, _ = label_rect((4, 4, 150, 150), "#1 neutral 100%", (480, 640, 3))
    assert left >= 4 + 2 + 2 and top >= 4 + 2 + 2  # the 2 px line and 2 px of air
    assert label_rect((4, 40, 150, 150), "#1 neutral 100%", (480, 640, 3))[0] == 4, "above the box: aligned with it"


def test_a_heic_photo_as_the_source_is_refused_not_read_as_a_video_of_one_tile(tmp_path: Path) -> None:
    """FFmpeg opened an iPhone's HEIC as a one-frame video of its first 512x512 tile: 0 faces, exit 0."""
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(b"\0\0\0\x18ftypheic" + bytes(64))
    with pytest.raises(FervidError, match=r"IMG_0001\.HEIC: not a readable image \(a HEIC/HEIF photo, a format OpenCV cannot read; "
                                          r"convert it to JPEG or PNG\)$"):
        open_source(str(photo))
