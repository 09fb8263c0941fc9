"""The one result type: a face box with its expression; every output (JSON, JSONL, CSV) serialises it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS


@dataclass(frozen=True)
class Face:
    """A face found in an image: box (x, y, w, h in pixels), the winning expression and all seven probabilities.

    ``track_id`` is the face's stable id across video frames; it is None for single images.
    """

    box: tuple[int, int, int, int]
    expression: str
    confidence: float
    probabilities: dict[str, float]
    track_id: int | None = None

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
        best = int(np.argmax(probabilities)) if label is None else int(label)
        x, y, w, h = (int(round(float(v))) for v in box)
        return cls(
            box=(x, y, w, h),
            expression=EXPRESSIONS[best],
            confidence=float(probabilities[best]),
            probabilities={name: float(p) for name, p in zip(EXPRESSIONS, probabilities)},
            track_id=track_id,
        )

    def to_dict(self, digits: int | None = 4) -> dict:
        """Plain JSON-ready dict: box as [x, y, w, h], probabilities rounded to ``digits`` places (None: unrounded)."""
        def rounded(value: float) -> float:
            return value if digits is None else round(value, digits)

        return {
            "track_id": self.track_id,
            "box": list(self.box),
            "expression": self.expression,
            "confidence": rounded(self.confidence),
            "probabilities": {name: rounded(p) for name, p in self.probabilities.items()},
        }
