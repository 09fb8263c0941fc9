"""Fixed augmented views of the training faces, the same on every machine, for consistent distillation.

Why: offline distillation scores each teacher once, on the un-augmented face, and every augmented
view of that face then shares the target. Measured on 2,000 FER2013 training faces with the shipped
recipe (docs/model.md part 13), the six teachers' own answer on an augmented view differs from
their answer on the clean face for 18% of the faces (mean total variation 0.21): a rotated, shifted
face with a quarter of it erased is trained to the confidence of the clean one. Beyer et al. 2022
("Knowledge distillation: a good teacher is patient and consistent") find that a student learns
its teacher's function best when the teacher sees the very view the student sees. Scoring teachers
on every fresh view at every step needs them beside the student; this draws ``count`` views of
each face once, from the recipe's ranges, scores the teachers on them like any other faces, and
trains each epoch on one of those views per face with its own target.

The views are drawn with NumPy and warped with OpenCV from seeds alone, so a GPU machine without
the teachers or ONNX Runtime renders the same views the teachers were scored on here, whatever
Keras backend trains there. Flips stay random in training: teachers that average each face with
its mirror (the runtime default) give a face and its mirror the same probabilities.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

ERASED_AREA = (0.02, 0.25)  # as build_augmenter's random erasing
ERASED_ASPECT = (0.3, 1 / 0.3)


@dataclass(frozen=True)
class ViewRecipe:
    """The ranges views are drawn from: fractions as in ``fervid train``'s augmentation options."""

    rotation: float
    zoom: float
    shift: float
    brightness: float
    contrast: float
    erasing: float
    seed: int

    def as_dict(self) -> dict:
        """The fields by name: the recipe a cache of teacher scores records, so other views are never mixed in."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def view_parameters(recipe: ViewRecipe, view: int, faces: int) -> np.ndarray:
    """The random draws of view number ``view`` for every face (faces, 11), from the seed alone.

    Columns: angle, scale, shift x, shift y (fractions of the size), brightness, contrast, erase
    (0/1), erased area, erased aspect, and where the erased rectangle sits across and down (fractions
    of the room the face leaves it).
    """
    rng = np.random.default_rng([recipe.seed, view, faces])

    def uniform(limit: float) -> np.ndarray:
        return rng.uniform(-limit, limit, faces)

    area = rng.uniform(*ERASED_AREA, faces)
    aspect = np.exp(rng.uniform(math.log(ERASED_ASPECT[0]), math.log(ERASED_ASPECT[1]), faces))
    return np.stack([
        uniform(recipe.rotation * 2 * math.pi), 1.0 + uniform(recipe.zoom), uniform(recipe.shift), uniform(recipe.shift),
        uniform(recipe.brightness), 1.0 + uniform(recipe.contrast), (rng.random(faces) < recipe.erasing).astype(np.float64),
        area, aspect, rng.random(faces), rng.random(faces),
    ], axis=1)


def render_views(faces: np.ndarray, parameters: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Each face (N, H, W, 1, float 0..1) as its view, given its row of ``view_parameters`` and its seed.

    One bilinear warp (rotation and zoom about the centre, then the shift; reflected at the edges,
    as ``RandomWarp``), brightness added, contrast scaled about the face's mean, then the erased
    rectangle filled with uniform noise cut from a texture the face's seed places, so a view
    renders the same every time (and fast: a FER2013 epoch in about a second on one core).
    """
    height, width = faces.shape[1:3]
    out = np.empty((len(faces), height, width), dtype=np.float32)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    angle, scale, dx, dy, brightness, contrast, erase, area, aspect, ex, ey = parameters.T
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    # Output pixel p reads the input at scale * R(angle) (p - c) + c + t, as RandomWarp.
    inverse = np.stack([np.stack([cos, -sin, cx - cos * cx + sin * cy + dx * width], axis=1),
                        np.stack([sin, cos, cy - sin * cx - cos * cy + dy * height], axis=1)], axis=1)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for row in range(len(faces)):
        out[row] = cv2.warpAffine(np.ascontiguousarray(faces[row, ..., 0], dtype=np.float32), inverse[row], (width, height),
                                  flags=flags, borderMode=cv2.BORDER_REFLECT)
    out = np.clip(out + brightness[:, None, None].astype(np.float32), 0.0, 1.0)
    mean = out.mean(axis=(1, 2), keepdims=True)
    out = np.clip((out - mean) * contrast[:, None, None].astype(np.float32) + mean, 0.0, 1.0)
    texture = _noise_texture(height, width)
    for row in np.flatnonzero(erase).tolist():
        h = int(min(height, max(1, round(math.sqrt(area[row] * height * width * aspect[row])))))
        w = int(min(width, max(1, round(math.sqrt(area[row] * height * width / aspect[row])))))
        top, left = round(ey[row] * (height - h)), round(ex[row] * (width - w))
        at = int(seeds[row]) % (height * width)
        out[row, top : top + h, left : left + w] = texture[at // width : at // width + h, at % width : at % width + w]
    return out[..., None]


@functools.cache
def _noise_texture(height: int, width: int) -> np.ndarray:
    """Uniform noise twice the face's size, the same everywhere: erased rectangles are cut from it (made once; read only)."""
    return np.random.default_rng(20141126).random((2 * height, 2 * width), dtype=np.float32)


def view_seeds(recipe: ViewRecipe, views: np.ndarray, rows: np.ndarray, faces: int) -> np.ndarray:
    """The noise seed of face ``rows`` in view ``views``: one per (view, face), from the recipe's seed."""
    return recipe.seed * 1_000_003 + np.asarray(views, np.int64) * faces + np.asarray(rows, np.int64)  # seed < 2**32: no overflow


def view_of(faces: np.ndarray, recipe: ViewRecipe, view: int) -> np.ndarray:
    """View number ``view`` of every face in ``faces`` (the whole training split, in its order)."""
    rows = np.arange(len(faces))
    return render_views(faces, view_parameters(recipe, view, len(faces)), view_seeds(recipe, np.full(len(faces), view), rows, len(faces)))
