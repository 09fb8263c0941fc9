"""The one result type: a face box with its expression; every output (JSON, JSONL, CSV) serialises it."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from fervid.checks import is_number
from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS

PROBABILITY_SLACK = 1e-6  # float32 softmax outputs stray this far past 0 and 1
SUM_SLACK = 1e-3  # float32 rows of seven sum to 1 within ~1e-6; an int8 model's within ~1e-4
MAX_DIGITS = 17  # a float64 holds 17 significant digits: more rounds to nothing new


class Probabilities(dict):
    """A face's seven probabilities, read-only: a Face is a value (hashed by them, its expression
    and confidence taken from them), so changing one in place would leave it inconsistent and lose
    it from the sets and dicts that hold it. It is a dict for everything else (JSON, ``==``)."""

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("a Face's probabilities are read-only; copy them first: dict(face.probabilities)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return (Probabilities, (dict(self),))  # unpickled whole, not item by item through __setitem__


class FaceRecord(TypedDict):
    """``Face.to_dict()``: one face as JSON (``predict --json``, ``live --jsonl``, the REST API)."""

    track_id: int | None
    box: list[int]
    expression: str
    confidence: float
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Face:
    """A face found in an image: box (x, y, w, h in pixels), the winning expression and all seven probabilities.

    ``track_id`` is the face's stable id across video frames; it is None for single images.
    """

    box: tuple[int, int, int, int]
    expression: str
    confidence: float
    probabilities: Mapping[str, float]  # read-only (a Probabilities dict): a Mapping to type checkers too
    track_id: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.probabilities, Probabilities):
            object.__setattr__(self, "probabilities", Probabilities(self.probabilities))

    def __hash__(self) -> int:
        """Faces are values: equal faces hash alike, so they can be set members and dict keys (the
        probabilities dict is hashed as its items)."""
        return hash((tuple(self.box), self.expression, self.confidence, frozenset(self.probabilities.items()), self.track_id))

    @classmethod
    def from_probabilities(
        cls, box: Sequence[float] | np.ndarray, probabilities: Sequence[float] | np.ndarray,
        track_id: int | None = None, label: int | None = None,
    ) -> Face:
        """A Face from a box and a probability row in :data:`EXPRESSIONS` order, labelled with the most
        probable expression, or with ``label`` (an index) where a tracker holds a label through a near tie."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (len(EXPRESSIONS),):
            raise FervidError(f"expected {len(EXPRESSIONS)} probabilities, one per expression ({', '.join(EXPRESSIONS)}), "
                              f"got shape {probabilities.shape}")
        if not np.isfinite(probabilities).all():
            raise FervidError(f"probabilities must be finite numbers, got {probabilities.tolist()}")
        # a softmax row (or a tracker's average of them): scores that are not one, such as logits,
        # gave a Face with a confidence of 5.0 and a negative probability
        if probabilities.min() < -PROBABILITY_SLACK or probabilities.max() > 1 + PROBABILITY_SLACK \
                or abs(probabilities.sum() - 1) > SUM_SLACK:
            raise FervidError(f"probabilities must be 0 to 1 and sum to 1 (a softmax row), got {probabilities.tolist()}")
        if track_id is not None and not is_number(track_id, numbers.Integral):
            raise FervidError(f"track_id must be None or a whole number, got {track_id!r}")
        if label is not None and not (is_number(label, numbers.Integral) and 0 <= label < len(EXPRESSIONS)):
            raise FervidError(f"label must be an index from 0 to {len(EXPRESSIONS) - 1} into {', '.join(EXPRESSIONS)}, got {label!r}")
        best = int(np.argmax(probabilities)) if label is None else int(label)
        corners = np.asarray(box, dtype=np.float64).ravel()
        if corners.shape != (4,) or not np.isfinite(corners).all():
            raise FervidError(f"box must be 4 finite numbers x, y, w, h, got {box!r}")
        x, y, w, h = (int(round(float(v))) for v in corners)
        return cls(
            box=(x, y, w, h),
            expression=EXPRESSIONS[best],
            confidence=float(probabilities[best]),
            probabilities={name: float(p) for name, p in zip(EXPRESSIONS, probabilities)},
            track_id=None if track_id is None else int(track_id),
        )

    def to_dict(self, digits: int | None = 4) -> FaceRecord:
        """Plain JSON-ready dict: box as [x, y, w, h], probabilities rounded to ``digits`` places (None: unrounded)."""
        if digits is not None and not (is_number(digits, numbers.Integral) and 0 <= digits <= MAX_DIGITS):
            raise FervidError(f"digits must be None (unrounded) or a whole number from 0 to {MAX_DIGITS}, got {digits!r}")

        def rounded(value: float) -> float:
            return value if digits is None else round(value, digits)

        return {
            "track_id": self.track_id,
            "box": list(self.box),
            "expression": self.expression,
            "confidence": rounded(self.confidence),
            "probabilities": {name: rounded(p) for name, p in self.probabilities.items()},
        }
