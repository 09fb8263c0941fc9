"""Draw results on a BGR frame: boxes, label and confidence, a per-class probability panel, FPS."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from fervid.labels import EXPRESSIONS
from fervid.runtime.face import Face

COLORS: dict[str, tuple[int, int, int]] = {  # BGR
    "angry": (40, 40, 220),
    "disgust": (40, 140, 60),
    "fear": (160, 60, 160),
    "happy": (40, 200, 240),
    "neutral": (200, 200, 200),
    "sad": (200, 120, 40),
    "surprise": (240, 160, 220),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX
PANEL_ROW = 13
PANEL_WIDTH = 118
SCALE_FROM = 480  # images up to this many pixels on their short side get the sizes above; larger ones more
LONG_SCALE_FROM = 1280  # and a panorama by its long side, as far as its short side holds a panel (PANEL_FIT)
PANEL_FIT = 120  # short-side pixels per unit of scale: a panel (about 95 px at scale 1) fits with room to spare


def ui_scale(frame: np.ndarray) -> float:
    """How much larger to draw text and panels than on a 640x480 frame: on a 4000x3000 photo the
    fixed sizes would be a few hundredths of the picture, unreadable once it is shown to fit a screen."""
    return _scale(frame.shape)


def _scale(shape: tuple[int, ...]) -> float:
    """By the short side (a 4000x3000 photo: 6.25), or for a panorama by the long one, shown shrunk
    to fit a screen: a 3200x400 strip drew 5-pixel labels once fitted (2.5 now)."""
    short, long = min(shape[:2]), max(shape[:2])
    return max(1.0, short / SCALE_FROM, min(long / LONG_SCALE_FROM, short / PANEL_FIT))


def _text(frame: np.ndarray, text: str, origin: tuple[int, int], scale: float, color=(255, 255, 255), weight: float = 1.0) -> None:
    """Text with a dark outline, readable on any background; ``weight`` thickens both strokes."""
    cv2.putText(frame, text, origin, FONT, scale, (0, 0, 0), max(3, round(3 * weight)), cv2.LINE_AA)
    cv2.putText(frame, text, origin, FONT, scale, color, max(1, round(weight)), cv2.LINE_AA)


Rect = tuple[int, int, int, int]  # x, y, w, h


PANELS_MIN_WIDTH = 400  # frames narrower than this get no panels, as the web page's views (app.js BARS_MIN_WIDTH)


def shows_panels(frame_shape: tuple[int, ...]) -> bool:
    """Whether a frame is wide enough for probability panels: on a 320x240 frame the 118 px panel
    found no free place and covered the face it describes; on a 120x90 one it was larger than the
    frame. The label still gives the expression and confidence."""
    return frame_shape[1] >= PANELS_MIN_WIDTH


def draw_box_and_label(frame: np.ndarray, face: Face, at: Rect | None = None) -> None:
    """The box and 'label 87%' above it (inside the frame at its edges), or at ``at`` (``place_labels``)."""
    x, y, w, h = face.box
    color = COLORS[face.expression]
    size = ui_scale(frame)
    thickness = max(1, round(min(frame.shape[:2]) / 300))
    cv2.rectangle(frame, (x, y), (x + w, y + h), color, thickness)
    label = label_text(face)
    left, top, _, height = at or label_rect(face.box, label, frame.shape)  # a face at the right edge keeps its whole label
    _text(frame, label, (left, top + height - round(6 * size)), 0.5 * size, color, size)


def label_text(face: Face) -> str:
    """'#2 happy 87%' (without '#2' for a face that has no track id)."""
    label = f"{face.expression} {face.confidence:.0%}"
    return label if face.track_id is None else f"#{face.track_id} {label}"


def label_rect(box: tuple[int, int, int, int], label: str, frame_shape: tuple[int, ...], *, inside: bool = False) -> Rect:
    """Where ``draw_box_and_label`` writes ``label``: above ``box``, as wide as the text (often wider
    than the box), moved left to stay inside the frame; inside the box under its top line where the
    frame has no room above it (a face at the top edge: clamped there, the text sat on the box's line,
    struck through, and the panel placement took it for 4 px tall), or when asked (``inside``)."""
    size = _scale(frame_shape)
    (text_width, _), _ = cv2.getTextSize(label, FONT, 0.5 * size, max(3, round(3 * size)))
    height = round(18 * size)
    if box[1] >= height and not inside:
        return max(0, min(box[0], frame_shape[1] - text_width)), box[1] - height, text_width, height
    inset = max(1, round(min(frame_shape[:2]) / 300)) + round(2 * size)  # clear of the box's lines
    return max(0, min(box[0] + inset, frame_shape[1] - text_width)), box[1] + inset, text_width, height


def place_labels(boxes: list[tuple[int, int, int, int]], labels: list[str], frame_shape: tuple[int, ...]) -> list[Rect]:
    """Where each label goes: above its box, or inside it under its top line where it would run into
    a label placed before it (faces side by side: a label wider than its box ran under the next one's,
    "#1 surprise 98#2 disgust 99%")."""
    placed: list[Rect] = []
    for box, text in zip(boxes, labels):
        rect = label_rect(box, text, frame_shape)
        if any(_overlap(rect, other) for other in placed):
            rect = label_rect(box, text, frame_shape, inside=True)
        placed.append(rect)
    return placed


def _panel_size(frame_shape: tuple[int, ...]) -> tuple[int, int, int]:
    size = _scale(frame_shape)
    return round(PANEL_WIDTH * size), round(PANEL_ROW * size) * len(EXPRESSIONS) + round(4 * size), round(6 * size)


def _overlap(a: Rect, b: Rect) -> int:
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0, width) * max(0, height)


def place_panels(boxes: list[tuple[int, int, int, int]], frame_shape: tuple[int, ...], labels: list[str] | None = None) -> list[Rect]:
    """Where each face's probability panel goes: right of its box, else left, below or above, the
    first place that covers no face, no label and no panel placed before it; where every place
    covers something, the one that covers least. Two faces side by side would otherwise draw their
    panels over each other, or over the other face's label. ``labels``: the text drawn above each
    box, whose width counts ("#12 surprise 100%" is wider than most boxes: taken as the box's
    width, a panel went over it)."""
    height, width = frame_shape[:2]
    panel_width, panel_height, gap = _panel_size(frame_shape)
    label = round(18 * _scale(frame_shape))
    faces = [(x, max(0, y - label), w, h + min(y, label)) for x, y, w, h in boxes]  # each box with its label above it
    if labels is not None:
        faces += place_labels(boxes, labels, frame_shape)
    placed: list[Rect] = []
    for x, y, w, h in boxes:
        top = int(np.clip(y, 0, max(0, height - panel_height)))
        middle = int(np.clip(x + (w - panel_width) // 2, 0, max(0, width - panel_width)))
        candidates = [(x + w + gap, top), (x - gap - panel_width, top), (middle, y + h + gap), (middle, y - label - gap - panel_height)]
        rects = [(int(np.clip(left, 0, max(0, width - panel_width))), int(np.clip(upper, 0, max(0, height - panel_height))),
                  panel_width, panel_height) for left, upper in candidates]
        placed.append(_first_clear(rects, [*faces, *placed]))
    return placed


def _first_clear(candidates: list[Rect], occupied: list[Rect]) -> Rect:
    """The first of ``candidates`` that covers nothing in ``occupied``, else the one covering least."""
    best: tuple[int, Rect] | None = None
    for rect in candidates:
        covered = sum(_overlap(rect, other) for other in occupied)
        if covered == 0:
            return rect
        if best is None or covered < best[0]:
            best = (covered, rect)
    assert best is not None  # there is always a candidate
    return best[1]


def draw_probability_panel(frame: np.ndarray, probabilities: Mapping[str, float], at: Rect) -> None:
    """One bar per class in the rectangle ``at`` (from ``place_panels``)."""
    size = ui_scale(frame)
    left, top, panel_width, panel_height = at
    row_height = round(PANEL_ROW * size)
    region = frame[top : top + panel_height, left : left + panel_width]
    # darkened to a quarter, as the web page's panel: at 0.45 a white or textured background showed
    # through, the text's contrast on white was 4.75:1, and zero bars were lost in the texture
    region[:] = (region * 0.25).astype(frame.dtype)
    for row, name in enumerate(EXPRESSIONS):
        value = float(probabilities.get(name, 0.0))
        base = top + round(2 * size) + row * row_height
        bar_left = left + round(52 * size)
        bar_end = bar_left + round(value * 60 * size)
        inset = round(2 * size)
        cv2.rectangle(frame, (bar_left, base + inset), (bar_end, base + row_height - inset), COLORS[name], -1)
        origin = (left + round(3 * size), base + row_height - round(3 * size))
        cv2.putText(frame, name, origin, FONT, 0.33 * size, (255, 255, 255), max(1, round(size)), cv2.LINE_AA)


def fps_rect(text: str, frame_shape: tuple[int, ...], occupied: list[Rect]) -> Rect:
    """Where the FPS counter goes: the top-left corner, else the first other corner (top right,
    bottom left, bottom right) that covers no box, label or panel in ``occupied``, else the corner
    covering least. Fixed at the top left, it was written over the label of a face there."""
    size = _scale(frame_shape)
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, 0.6 * size, max(3, round(3 * size)))
    margin, width, height = round(8 * size), text_width, text_height + baseline
    right, bottom = max(0, frame_shape[1] - margin - width), max(0, frame_shape[0] - margin - height)
    corners = ((margin, margin), (right, margin), (margin, bottom), (right, bottom))
    return _first_clear([(left, top, width, height) for left, top in corners], occupied)


def draw_fps(frame: np.ndarray, fps: float, occupied: list[Rect] | None = None) -> None:
    """'25 FPS' in a corner clear of ``occupied`` (``fps_rect``)."""
    size = ui_scale(frame)
    text = f"{fps:.0f} FPS"
    left, top, _, height = fps_rect(text, frame.shape, occupied or [])
    baseline = cv2.getTextSize(text, FONT, 0.6 * size, max(3, round(3 * size)))[1]
    _text(frame, text, (left, top + height - baseline), 0.6 * size, (80, 255, 80), size)


def annotate(frame: np.ndarray, faces: list[Face], fps: float | None = None, *, panel: bool = True) -> np.ndarray:
    """Draw every face (and the FPS when given) onto ``frame`` in place; returns it.

    In layers: every panel first, then every box and label, so that where a crowded frame leaves a
    panel no free place, it darkens another face's label without hiding it (drawn face by face, a
    later panel covered the labels drawn before it: "ha[sad]py 94%")."""
    boxes, labels = [face.box for face in faces], [label_text(face) for face in faces]
    panels = place_panels(boxes, frame.shape, labels) if panel and shows_panels(frame.shape) else []
    for face, place in zip(faces, panels):
        draw_probability_panel(frame, face.probabilities, place)
    places = place_labels(boxes, labels, frame.shape)
    for face, at in zip(faces, places):
        draw_box_and_label(frame, face, at)
    if fps is not None:
        draw_fps(frame, fps, [*boxes, *places, *panels])
    return frame
