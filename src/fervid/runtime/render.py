"""Draw results on a BGR frame: boxes, label and confidence, a per-class probability panel, FPS."""

from __future__ import annotations

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


def ui_scale(frame: np.ndarray) -> float:
    """How much larger to draw text and panels than on a 640x480 frame: on a 4000x3000 photo the
    fixed sizes would be a few hundredths of the picture, unreadable once it is shown to fit a screen."""
    return max(1.0, min(frame.shape[:2]) / SCALE_FROM)


def _text(frame: np.ndarray, text: str, origin: tuple[int, int], scale: float, color=(255, 255, 255), weight: float = 1.0) -> None:
    """Text with a dark outline, readable on any background; ``weight`` thickens both strokes."""
    cv2.putText(frame, text, origin, FONT, scale, (0, 0, 0), max(3, round(3 * weight)), cv2.LINE_AA)
    cv2.putText(frame, text, origin, FONT, scale, color, max(1, round(weight)), cv2.LINE_AA)


def draw_face(frame: np.ndarray, face: Face, *, panel: bool = True) -> None:
    """The box and 'label 87%' (with the track id when there is one), and the probability panel beside it."""
    x, y, w, h = face.box
    color = COLORS[face.expression]
    size = ui_scale(frame)
    thickness = max(1, round(min(frame.shape[:2]) / 300))
    cv2.rectangle(frame, (x, y), (x + w, y + h), color, thickness)
    label = f"{face.expression} {face.confidence:.0%}"
    if face.track_id is not None:
        label = f"#{face.track_id} {label}"
    (text_width, _), _ = cv2.getTextSize(label, FONT, 0.5 * size, max(3, round(3 * size)))
    left = max(0, min(x, frame.shape[1] - text_width))  # a face at the right edge keeps its whole label
    _text(frame, label, (left, max(round(12 * size), y - round(6 * size))), 0.5 * size, color, size)
    if panel:
        draw_probability_panel(frame, face.probabilities, (x, y, w, h))


def draw_probability_panel(frame: np.ndarray, probabilities: dict[str, float], box: tuple[int, int, int, int]) -> None:
    """One bar per class, right of the box (left when there is no room, inside as a last resort)."""
    x, y, w, h = box
    height, width = frame.shape[:2]
    size = ui_scale(frame)
    row_height, panel_width, gap = round(PANEL_ROW * size), round(PANEL_WIDTH * size), round(6 * size)
    panel_height = row_height * len(EXPRESSIONS) + round(4 * size)
    left = x + w + gap if x + w + gap + panel_width <= width else x - gap - panel_width
    left = left if left >= 0 else max(0, min(x + 2, width - panel_width))
    top = int(np.clip(y, 0, max(0, height - panel_height)))
    region = frame[top : top + panel_height, left : left + panel_width]
    region[:] = (region * 0.45).astype(frame.dtype)  # darken for contrast
    for row, name in enumerate(EXPRESSIONS):
        value = float(probabilities.get(name, 0.0))
        base = top + round(2 * size) + row * row_height
        bar_left = left + round(52 * size)
        bar_end = bar_left + round(value * 60 * size)
        inset = round(2 * size)
        cv2.rectangle(frame, (bar_left, base + inset), (bar_end, base + row_height - inset), COLORS[name], -1)
        origin = (left + round(3 * size), base + row_height - round(3 * size))
        cv2.putText(frame, name, origin, FONT, 0.33 * size, (255, 255, 255), max(1, round(size)), cv2.LINE_AA)


def draw_fps(frame: np.ndarray, fps: float) -> None:
    size = ui_scale(frame)
    _text(frame, f"{fps:.0f} FPS", (round(8 * size), round(22 * size)), 0.6 * size, (80, 255, 80), size)


def annotate(frame: np.ndarray, faces: list[Face], fps: float | None = None, *, panel: bool = True) -> np.ndarray:
    """Draw every face (and the FPS when given) onto ``frame`` in place; returns it."""
    for face in faces:
        draw_face(frame, face, panel=panel)
    if fps is not None:
        draw_fps(frame, fps)
    return frame
