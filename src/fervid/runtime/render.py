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


def _text(frame: np.ndarray, text: str, origin: tuple[int, int], scale: float, color=(255, 255, 255)) -> None:
    """Text with a dark outline, readable on any background."""
    cv2.putText(frame, text, origin, FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(frame, text, origin, FONT, scale, color, 1, cv2.LINE_AA)


def draw_face(frame: np.ndarray, face: Face, *, panel: bool = True) -> None:
    """The box and 'label 87%' (with the track id when there is one), and the probability panel beside it."""
    x, y, w, h = face.box
    color = COLORS[face.expression]
    thickness = max(1, round(min(frame.shape[:2]) / 300))
    cv2.rectangle(frame, (x, y), (x + w, y + h), color, thickness)
    label = f"{face.expression} {face.confidence:.0%}"
    if face.track_id is not None:
        label = f"#{face.track_id} {label}"
    _text(frame, label, (x, max(12, y - 6)), 0.5, color)
    if panel:
        draw_probability_panel(frame, face.probabilities, (x, y, w, h))


def draw_probability_panel(frame: np.ndarray, probabilities: dict[str, float], box: tuple[int, int, int, int]) -> None:
    """One bar per class, right of the box (left when there is no room, inside as a last resort)."""
    x, y, w, h = box
    height, width = frame.shape[:2]
    panel_height = PANEL_ROW * len(EXPRESSIONS) + 4
    left = x + w + 6 if x + w + 6 + PANEL_WIDTH <= width else x - 6 - PANEL_WIDTH
    left = left if left >= 0 else max(0, min(x + 2, width - PANEL_WIDTH))
    top = int(np.clip(y, 0, max(0, height - panel_height)))
    region = frame[top : top + panel_height, left : left + PANEL_WIDTH]
    region[:] = (region * 0.45).astype(frame.dtype)  # darken for contrast
    for row, name in enumerate(EXPRESSIONS):
        value = float(probabilities.get(name, 0.0))
        base = top + 2 + row * PANEL_ROW
        bar_left = left + 52
        cv2.rectangle(frame, (bar_left, base + 2), (bar_left + round(value * 60), base + PANEL_ROW - 2), COLORS[name], -1)
        cv2.putText(frame, name[:7], (left + 3, base + PANEL_ROW - 3), FONT, 0.33, (255, 255, 255), 1, cv2.LINE_AA)


def draw_fps(frame: np.ndarray, fps: float) -> None:
    _text(frame, f"{fps:.0f} FPS", (8, 22), 0.6, (80, 255, 80))


def annotate(frame: np.ndarray, faces: list[Face], fps: float | None = None, *, panel: bool = True) -> np.ndarray:
    """Draw every face (and the FPS when given) onto ``frame`` in place; returns it."""
    for face in faces:
        draw_face(frame, face, panel=panel)
    if fps is not None:
        draw_fps(frame, fps)
    return frame
