"""FaceTracker: IoU matching keeps ids, smoothing stops label flicker, tracks expire (no model, no data)."""

from __future__ import annotations

import numpy as np
import pytest

from fervid.labels import EXPRESSIONS
from fervid.runtime.track import FaceTracker, iou_matrix

HAPPY = np.eye(len(EXPRESSIONS))[EXPRESSIONS.index("happy")] * 0.9 + 0.1 / len(EXPRESSIONS)
SAD = np.eye(len(EXPRESSIONS))[EXPRESSIONS.index("sad")] * 0.9 + 0.1 / len(EXPRESSIONS)


def test_iou_matrix_values() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [100, 100, 10, 10]])
    overlaps = iou_matrix(boxes, boxes)
    assert np.allclose(np.diag(overlaps), 1.0)
    assert overlaps[0, 1] == pytest.approx(50 / 150)
    assert overlaps[0, 2] == 0.0
    assert iou_matrix(np.zeros((0, 4)), boxes).shape == (0, 3)


def test_ids_stay_with_moving_faces_and_new_faces_get_new_ids() -> None:
    tracker = FaceTracker(min_hits=1)
    ids_by_side: dict[str, set[int]] = {"left": set(), "right": set()}
    for frame in range(30):
        boxes = [[10 + 3 * frame, 50, 100, 100], [400 - 3 * frame, 60, 100, 100]]
        faces = tracker.update(boxes, [HAPPY, SAD], frame / 30)
        assert len(faces) == 2
        for face in faces:
            ids_by_side["left" if face.box[0] < 200 else "right"].add(face.track_id)
    assert ids_by_side == {"left": {1}, "right": {2}}
    faces = tracker.update([[10 + 90, 50, 100, 100], [400 - 90, 60, 100, 100], [600, 300, 80, 80]], [HAPPY, SAD, SAD], 1.0)
    assert sorted(face.track_id for face in faces) == [1, 2, 3]


def test_a_single_outlier_frame_does_not_flip_the_label() -> None:
    tracker = FaceTracker(min_hits=1, smoothing_s=0.3)
    box = [[50, 50, 120, 120]]
    for frame in range(15):
        (before,) = tracker.update(box, [HAPPY], frame / 30)
    (face,) = tracker.update(box, [SAD], 15 / 30)
    assert face.expression == "happy"
    assert face.probabilities["sad"] > before.probabilities["sad"] + 0.05  # the outlier is weighed in, not ignored
    for frame in range(16, 46):  # a lasting change wins within about a second
        (face,) = tracker.update(box, [SAD], frame / 30)
    assert face.expression == "sad"
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-6)


def test_a_face_between_two_expressions_keeps_its_label_until_one_clearly_leads() -> None:
    """Near ties (neutral 0.45 / sad 0.40, then the other way round, frame after frame) hold the shown
    label; a lead of more than ``label_margin`` changes it; ``label_margin=0`` shows every argmax."""
    neutral, sad = EXPRESSIONS.index("neutral"), EXPRESSIONS.index("sad")

    def row(p_neutral: float, p_sad: float) -> np.ndarray:
        probabilities = np.full(len(EXPRESSIONS), (1 - p_neutral - p_sad) / (len(EXPRESSIONS) - 2))
        probabilities[neutral], probabilities[sad] = p_neutral, p_sad
        return probabilities

    near_ties = [row(0.45, 0.40) if frame % 2 == 0 else row(0.40, 0.45) for frame in range(30)]
    held, every = FaceTracker(min_hits=1, smoothing_s=0), FaceTracker(min_hits=1, smoothing_s=0, label_margin=0)
    shown = [held.update([[0, 0, 80, 80]], [probabilities], frame / 30)[0] for frame, probabilities in enumerate(near_ties)]
    flipping = [every.update([[0, 0, 80, 80]], [probabilities], frame / 30)[0].expression for frame, probabilities in enumerate(near_ties)]
    assert {face.expression for face in shown} == {"neutral"}
    assert all(face.confidence == face.probabilities["neutral"] for face in shown)  # the shown label's own probability
    assert flipping == ["neutral", "sad"] * 15
    (face,) = held.update([[0, 0, 80, 80]], [row(0.30, 0.55)], 1.0)
    assert face.expression == "sad" and face.confidence == pytest.approx(0.55)


def test_without_smoothing_the_latest_probabilities_are_reported() -> None:
    tracker = FaceTracker(min_hits=1, smoothing_s=0)
    tracker.update([[0, 0, 50, 50]], [HAPPY], 0.0)
    (face,) = tracker.update([[0, 0, 50, 50]], [SAD], 0.033)
    assert face.expression == "sad"
    assert face.probabilities == pytest.approx(dict(zip(EXPRESSIONS, SAD))), "the latest, not a blend that still ranks sad first"


def test_tracks_hide_when_missed_and_expire_after_max_missed() -> None:
    tracker = FaceTracker(min_hits=1, max_missed=2)
    box = [[50, 50, 100, 100]]
    tracker.update(box, [HAPPY], 0.0)
    assert tracker.update(np.zeros((0, 4)), np.zeros((0, 7)), 0.1) == []  # missed once: hidden, kept
    (face,) = tracker.update(box, [HAPPY], 0.2)
    assert face.track_id == 1  # came back within max_missed: same id
    for step in range(3):
        tracker.update(np.zeros((0, 4)), np.zeros((0, 7)), 0.3 + step / 10)
    assert tracker.tracks == []
    (face,) = tracker.update(box, [HAPPY], 1.0)
    assert face.track_id == 2


def test_a_face_that_starts_moving_fast_keeps_its_id() -> None:
    """From rest to 70 pixels a frame (a quick turn of the head): the zero-velocity prediction overlaps
    the new box too little (IoU 0.18), but it is the same-sized box one side away, so the same face;
    a face two sides away is still a new one."""
    tracker = FaceTracker(min_hits=2)
    for frame in range(5):
        faces = tracker.update([[100, 100, 100, 100]], [HAPPY], frame / 30)
    ids = {face.track_id for face in faces}
    for step in range(1, 6):
        (face,) = tracker.update([[100 + 70 * step, 100, 100, 100]], [HAPPY], (4 + step) / 30)
        ids.add(face.track_id)
    assert ids == {1}
    faces = tracker.update([[450, 100, 100, 100], [450, 330, 100, 100]], [HAPPY, SAD], 10 / 30)
    assert [face.track_id for face in faces] == [1]  # the other, 2.3 sides away, waits for its second scan
    faces = tracker.update([[450, 100, 100, 100], [450, 330, 100, 100]], [HAPPY, SAD], 11 / 30)
    assert sorted(face.track_id for face in faces) == [1, 2]


def test_min_hits_suppresses_one_off_detections() -> None:
    tracker = FaceTracker(min_hits=2)
    assert tracker.update([[10, 10, 60, 60]], [HAPPY], 0.0) == []
    assert tracker.update(np.zeros((0, 4)), np.zeros((0, 7)), 0.1) == []
    tracker.update([[300, 10, 60, 60]], [HAPPY], 0.2)
    (face,) = tracker.update([[302, 10, 60, 60]], [HAPPY], 0.3)
    assert face.track_id == 1  # ids number the faces shown: the one-off, never reported, took none
    tracker.update([[300, 10, 60, 60], [500, 200, 60, 60]], [HAPPY, SAD], 0.4)
    faces = tracker.update([[302, 10, 60, 60], [502, 200, 60, 60]], [HAPPY, SAD], 0.5)
    assert sorted(face.track_id for face in faces) == [1, 2]


def test_a_lost_track_waits_near_where_it_was_last_seen() -> None:
    """Its box moves on along its velocity for a moment only, so the face that stops, or comes back
    after a stalled camera, is matched to its old id instead of the box having drifted off-screen."""
    tracker = FaceTracker(min_hits=1, box_smoothing=0.0, max_missed=5)
    for frame in range(10):  # 300 pixels per second to the right
        tracker.update([[100 + 10 * frame, 80, 90, 90]], [HAPPY], frame / 30)
    (soon,) = tracker.search_boxes(9 / 30 + 0.1)
    assert soon[0] == pytest.approx(190 + 30, abs=3)  # a moment later: where the velocity leads
    (later,) = tracker.search_boxes(9 / 30 + 5.0)
    assert later[0] == pytest.approx(190 + 150, abs=8)  # seconds later: no further than half a second's travel
    (face,) = tracker.update([[330, 80, 90, 90]], [HAPPY], 9 / 30 + 5.0)
    assert face.track_id == 1


def test_searches_between_scans_look_where_the_velocity_leads() -> None:
    tracker = FaceTracker(min_hits=1, box_smoothing=0.0)
    for frame in range(10):  # 60 pixels per second to the right
        tracker.update([[100 + 2 * frame, 80, 90, 90]], [HAPPY], frame / 30)
    (predicted,) = tracker.search_boxes(12 / 30)
    assert predicted[0] == pytest.approx(100 + 2 * 12, abs=2) and predicted[1] == pytest.approx(80, abs=1)
    (face,) = tracker.follow([predicted], [SAD], 12 / 30)
    assert face.track_id == 1 and abs(face.box[0] - predicted[0]) <= 1


def test_a_box_that_only_grows_around_a_still_face_gives_no_velocity() -> None:
    """The detector gives a still face a slightly larger box each time: its corner moves up and left,
    its centre not. Taken as motion, that sent the next search off towards the corner (the box
    drifted and grew between scans on a still image)."""
    tracker = FaceTracker(min_hits=1, box_smoothing=0.0)
    for frame, side in enumerate(range(190, 240, 10)):  # centre fixed at (300, 120)
        tracker.update([[300 - side / 2, 120 - side / 2, side, side]], [HAPPY], frame / 30)
    (predicted,) = tracker.search_boxes(8 / 30)
    assert predicted[0] + predicted[2] / 2 == pytest.approx(300, abs=1)
    assert predicted[1] + predicted[3] / 2 == pytest.approx(120, abs=1)


def test_between_scans_only_confirmed_faces_are_followed() -> None:
    tracker = FaceTracker(min_hits=2)
    face, false_alarm = [100, 100, 120, 120], [400, 300, 50, 50]
    tracker.update([face, false_alarm], [HAPPY, SAD], 0.0)
    assert tracker.pending() and tracker.search_boxes(0.033).shape == (0, 4)
    tracker.update([[102, 100, 120, 120]], [HAPPY], 0.066)  # the second scan confirms the face only
    assert tracker.pending(), "the false alarm gets one more scan: a real face can be missed once"
    tracker.update([[102, 100, 120, 120]], [HAPPY], 0.083)
    assert not tracker.pending()
    (search,) = tracker.search_boxes(0.1)
    assert iou_matrix(np.array([search]), np.array([face]))[0, 0] > 0.8
    found = [np.array([106, 101, 121, 121])]
    assert len(tracker.follow_boxes(found)) == 1
    (followed,) = tracker.follow(found, np.array([SAD]), 0.1)
    assert followed.track_id == 1 and followed.box[0] > 102  # moved towards the box found near it


def test_a_face_not_found_near_its_track_is_hidden_but_keeps_its_id() -> None:
    tracker = FaceTracker(min_hits=1, max_missed=3)
    tracker.update([[100, 100, 120, 120]], [HAPPY], 0.0)
    assert tracker.follow([None], np.zeros((0, 7)), 0.033) == []  # gone at once: no ghost box
    found = [np.array([101, 100, 120, 120])]
    (face,) = tracker.follow(found, np.array([HAPPY]), 0.066)  # found again near where it was
    assert face.track_id == 1 and face.expression == "happy"


def test_two_tracks_that_converge_on_one_face_show_one_box() -> None:
    tracker = FaceTracker(min_hits=1)
    tracker.update([[100, 100, 120, 120], [300, 100, 120, 120]], [HAPPY, SAD], 0.0)
    found = [np.array([100, 100, 120, 120]), np.array([104, 102, 118, 118])]
    boxes = tracker.follow_boxes(found)
    assert len(boxes) == 1
    (face,) = tracker.follow(found, np.array([HAPPY]), 0.033)
    assert face.track_id == 1


class FakeDetector:
    """Full scans find ``faces``; a search near a box answers ``near(box)``; scans are counted."""

    def __init__(self, faces, near) -> None:
        self.faces, self.near, self.scans = np.asarray(faces), near, 0

    def detect(self, gray):
        self.scans += 1
        return self.faces

    def detect_near(self, gray, box, strict=False):
        return self.near(box)


class FakeRecognizer:
    def __init__(self, detector: FakeDetector) -> None:
        self.detector = detector

    def classify_boxes(self, gray, boxes):
        return np.array([HAPPY] * len(boxes))


def faces_shown(detector: FakeDetector, frames: int = 6):
    """The processor over ``frames`` still frames, and how many faces each frame reported."""
    from fervid.runtime.pipeline import FrameProcessor
    from fervid.runtime.sources import Frame

    processor = FrameProcessor(FakeRecognizer(detector), FaceTracker(min_hits=1), detect_every=10)
    image = np.zeros((360, 480, 3), np.uint8)
    return processor, [len(processor.process(Frame(image, index, index / 30))) for index in range(frames)]


def test_a_face_the_near_search_misses_is_checked_by_a_scan_of_that_frame() -> None:
    """A still face near the detector's threshold must not blink out when the near search misses it;
    a face that left is still hidden at once."""
    from fervid.runtime.sources import Frame

    detector = FakeDetector([[100, 100, 120, 120]], near=lambda box: None)  # the near search never finds it
    processor, shown = faces_shown(detector)
    assert shown == [1] * 6 and detector.scans == 6  # every miss answered by a scan: no blink
    detector.faces = np.zeros((0, 4))  # the face leaves
    assert processor.process(Frame(np.zeros((360, 480, 3), np.uint8), 6, 6 / 30)) == []


def test_a_near_search_that_lands_on_the_neighbouring_face_counts_as_a_miss() -> None:
    """Two faces side by side: the search around the second found only the first (its own face lay
    outside the sizes searched); that box was dropped as the first track's, and the second face
    blinked out without the scan a miss gets (the web page's box flickered on a still image)."""
    faces = np.array([[20, 40, 160, 160], [190, 30, 190, 190]])
    detector = FakeDetector(faces, near=lambda box: faces[0])  # whichever face it searches around, it finds the first
    _, shown = faces_shown(detector)
    assert shown == [2] * 6 and detector.scans == 6  # each such frame is scanned: both faces stay


def test_the_near_search_returns_only_a_face_overlapping_its_box() -> None:
    """The crop around a face can hold its neighbour: that one is not "the face near this box"."""
    from conftest import detectable_faces, paste_face, textured_background
    from fervid.runtime.detect import FaceDetector

    frame = textured_background(300, 520, seed=2)
    first = paste_face(frame, detectable_faces(1, size=150)[0], 20, 60, 150)
    gray = frame[:, :, 0] if frame.ndim == 3 else frame
    detector = FaceDetector()
    found = detector.detect_near(gray, np.array(first))
    assert found is not None and iou_matrix(np.array([first]), np.array([found]))[0, 0] > 0.5
    beside = np.array([first[0] + 110, first[1], first[2], first[3]])  # a place beside the face, its crop holding the face
    assert detector.detect_near(gray, beside) is None


def test_a_weak_false_detection_is_not_kept_boxed_by_lax_searches_near_it() -> None:
    """A face-like patch that full scans found twice passes the near search's laxer test on every
    frame; once a scan misses it, only a scan's evidence may show it again."""
    from fervid.runtime.pipeline import FrameProcessor
    from fervid.runtime.sources import Frame

    patch = np.array([[200, 150, 60, 60]])

    class Detector:
        def __init__(self) -> None:
            self.scans, self.strict = 0, []

        def detect(self, gray):
            self.scans += 1
            return patch if self.scans <= 2 else np.zeros((0, 4))  # two scans confirm it, then never again

        def detect_near(self, gray, box, strict=False):
            self.strict.append(strict)
            return None if strict else patch[0]  # what the lax test keeps finding

    class Recognizer:
        detector = Detector()

        def classify_boxes(self, gray, boxes):
            return np.array([HAPPY] * len(boxes))

    recognizer = Recognizer()
    processor = FrameProcessor(recognizer, detect_every=10)
    image = np.zeros((360, 480, 3), np.uint8)
    shown = [len(processor.process(Frame(image, index, index / 30))) for index in range(40)]
    assert shown[:2] == [0, 1] and shown[2:11] == [1] * 9  # confirmed, then followed between scans
    assert sum(shown[11:]) == 0, "after a scan missed it, the lax near search no longer shows it"
    assert recognizer.detector.strict[:9] == [False] * 9 and True in recognizer.detector.strict


def test_a_search_near_a_track_the_last_scan_missed_asks_for_a_scans_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    from fervid.runtime.detect import NEAR_MIN_NEIGHBORS, DetectorConfig, FaceDetector

    asked = []

    class Cascade:
        def detectMultiScale(self, image, **settings):  # noqa: N802 (OpenCV's name)
            asked.append(settings["minNeighbors"])
            return ()

    detector = FaceDetector(DetectorConfig(min_neighbors=6))
    detector._local.cascade = Cascade()
    gray = np.zeros((360, 480), np.uint8)
    detector.detect_near(gray, np.array([100, 100, 120, 120]))
    detector.detect_near(gray, np.array([100, 100, 120, 120]), strict=True)
    assert asked == [NEAR_MIN_NEIGHBORS] * 2 + [6] * 2  # each search looks twice (the second time wider)

    tracker = FaceTracker(min_hits=1)
    tracker.update([[100, 100, 120, 120]], [HAPPY], 0.0)
    assert tracker.search_strict() == [False]
    tracker.update(np.zeros((0, 4)), np.zeros((0, 7)), 0.1)  # a scan misses it
    assert tracker.search_strict() == [True]
    tracker.update([[101, 100, 120, 120]], [HAPPY], 0.2)  # a scan finds it again
    assert tracker.search_strict() == [False]


def test_an_id_is_kept_for_max_missed_s_whatever_the_scan_rate() -> None:
    """Scans run every 2nd frame while nothing is shown: at 30 fps five missed scans are a third of a
    second, so a face looking away for a moment came back as a new face."""
    tracker = FaceTracker(min_hits=1, max_missed=5, max_missed_s=1.0)
    box = [[100, 100, 120, 120]]
    tracker.update(box, [HAPPY], 0.0)
    for frame in range(2, 28, 2):  # 13 missed scans over 0.9 s
        tracker.update(np.zeros((0, 4)), np.zeros((0, 7)), frame / 30)
    (face,) = tracker.update(box, [HAPPY], 0.95)
    assert face.track_id == 1
    for frame in range(1, 40):  # then gone for over a second
        tracker.update(np.zeros((0, 4)), np.zeros((0, 7)), 0.95 + frame / 30)
    assert tracker.tracks == []


def test_the_first_velocity_estimate_is_taken_whole() -> None:
    tracker = FaceTracker(min_hits=1, box_smoothing=0.0)
    tracker.update([[100, 80, 90, 90]], [HAPPY], 0.0)
    tracker.update([[110, 80, 90, 90]], [HAPPY], 1 / 30)  # 300 pixels per second
    assert tracker.tracks[0].velocity[0] == pytest.approx(300)



def test_box_smoothing_is_per_second_not_per_frame() -> None:
    """The weight of the old box is given per 1/30 s: a 10 fps stream's box is not dragged three frames'
    worth behind the face (IoU on a moving face at 10 fps went from 0.90 to 0.93, as at 30 fps)."""
    moved = {}
    for step in (1 / 30, 0.1):
        tracker = FaceTracker(min_hits=1, box_smoothing=0.3)
        tracker.update([[100, 80, 90, 90]], [HAPPY], 0.0)
        tracker.update([[130, 80, 90, 90]], [HAPPY], step)  # the face moved on; no velocity known yet
        (track,) = tracker.tracks
        moved[step] = track.box[0]
    assert moved[1 / 30] == pytest.approx(0.3 * 100 + 0.7 * 130)
    assert moved[0.1] == pytest.approx(0.3**3 * 100 + (1 - 0.3**3) * 130)  # three frames' worth of 1/30 s


def test_scans_a_second_apart_keep_the_id_of_a_face_walking_across() -> None:
    """``fervid analyze --every 30``: a face moving 150 px/s (1.5 sides of a 100-pixel face) between
    scans a second apart is the same face, from its first step (no velocity yet) on; a face that
    appears 4 sides away is a new one."""
    tracker = FaceTracker(smoothing_s=0.0, min_hits=1, box_smoothing=0.0, label_margin=0.0)
    ids = set()
    for second in range(6):
        (face,) = tracker.update([[100 + 150 * second, 100, 100, 100]], [HAPPY], float(second))
        ids.add(face.track_id)
    assert ids == {1}
    faces = tracker.update([[850, 100, 100, 100], [850, 500, 100, 100]], [HAPPY, SAD], 6.0)
    assert sorted(face.track_id for face in faces) == [1, 2]


def test_a_face_that_comes_back_where_it_was_last_seen_keeps_its_id_after_a_wild_velocity() -> None:
    """A box 50 px off in 1/30 s (the near search taking background texture for the face as it
    vanished) gave the track 750 px/s; lost, its prediction ran 3.75 sides away, and the face coming
    back to the same spot 0.4 s later got a new id."""
    tracker = FaceTracker(min_hits=1, max_missed_s=1.0, box_smoothing=0.0)
    for frame in range(4):
        tracker.update([[100, 100, 100, 100]], [HAPPY], frame / 30)
    tracker.update([[150, 100, 100, 100]], [HAPPY], 4 / 30)  # the stray box, matched by overlap
    assert tracker.tracks[0].velocity[0] >= 700  # half of 1500 px/s, smoothed with the 0 before
    for frame in range(5, 17):
        tracker.update(np.zeros((0, 4)), np.zeros((0, 7)), frame / 30)
    (face,) = tracker.update([[100, 100, 100, 100]], [HAPPY], 17 / 30)
    assert face.track_id == 1


def test_a_newcomer_does_not_take_the_id_of_a_face_that_left() -> None:
    """The wider reach is for faces the last scan saw: a face gone for two scans keeps a one-side
    reach, so a different face appearing 2.3 sides away is a new one, not the old id and label."""
    tracker = FaceTracker(min_hits=1, max_missed_s=3.0)
    for step in range(4):
        tracker.update([[100, 100, 100, 100]], [HAPPY], step / 3)
    for step in range(4, 8):  # gone for 1.67 s: a reach by elapsed time alone would be 2.5 sides
        tracker.update(np.zeros((0, 4)), np.zeros((0, 7)), step / 3)
    (face,) = tracker.update([[330, 100, 100, 100]], [SAD], 8 / 3)
    assert face.track_id == 2


def test_a_tracked_box_is_reported_inside_the_frame() -> None:
    """The box is smoothed towards where a face is going: at the left edge it was reported as
    [-9, 108, 178, 178] in a 640x480 frame, so a client's crop image[y:y+h, x:x+w] went wrong."""
    from fervid.runtime.face import Face
    from fervid.runtime.pipeline import inside

    def face(box: tuple[int, int, int, int]) -> Face:
        return Face.from_probabilities(box, [0.1, 0.1, 0.1, 0.4, 0.1, 0.1, 0.1], track_id=1)

    assert inside(face((-9, 108, 178, 178)), (480, 640)).box == (0, 108, 169, 178)
    assert inside(face((600, 400, 100, 100)), (480, 640)).box == (600, 400, 40, 80)
    kept = face((10, 20, 30, 40))
    assert inside(kept, (480, 640)) is kept
    assert inside(face((700, -50, 20, 20)), (480, 640)).box == (639, 0, 1, 1)  # all outside: a pixel at the edge, never empty


def test_two_faces_that_moved_far_during_a_stall_get_new_ids_not_each_others() -> None:
    """Three seconds without frames (a stalled stream, a cut clip), both faces 360 px on: each was the
    nearest box to the other's track, and the greedy match gave each face the other's id."""
    tracker = FaceTracker(min_hits=1)
    for frame in range(30):
        faces = tracker.update([[137, 118, 150, 150], [649, 266, 150, 150]], [HAPPY, SAD], frame / 30)
    assert {face.track_id: face.box[1] for face in faces} == {1: 118, 2: 266}
    faces = tracker.update([[275, 267, 150, 150], [527, 125, 150, 150]], [SAD, HAPPY], 4.0)
    by_id = {face.track_id: face.box[1] for face in faces}
    assert by_id.get(1) != 267 and by_id.get(2) != 125, by_id  # no swap: the upper face is not now id 1's lower
    assert set(by_id) == {3, 4}
    # One face alone still keeps its id over such a gap (scans a second or more apart: analyze --every 30)
    single = FaceTracker(min_hits=1)
    for frame in range(30):
        single.update([[137, 118, 150, 150]], [HAPPY], frame / 30)
    assert [face.track_id for face in single.update([[400, 150, 150, 150]], [HAPPY], 4.0)] == [1]


def test_faces_walking_side_by_side_keep_their_ids_over_regular_sparse_scans() -> None:
    """fervid analyze --every 60: scans 2 s apart, one face 1.5 sides above the other, both walking
    right. Refusing every contested long match (not only after a stall) gave them new ids."""
    tracker = FaceTracker(smoothing_s=0.0, min_hits=1, box_smoothing=0.0, label_margin=0.0, max_missed_s=1.0)
    for scan in range(8):
        x = 100 + 200 * scan
        faces = tracker.update([[x, 100, 150, 150], [x, 325, 150, 150]], [HAPPY, SAD], 2.0 * scan)
        assert sorted((face.box[1], face.track_id) for face in faces) == [(100, 1), (325, 2)], scan
