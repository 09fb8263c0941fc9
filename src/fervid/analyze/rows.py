"""Buffers that collect a unit's face rows and ledger rows and turn them into tables of the schemas in ``schema``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from fervid.analyze.inputs import SourceItem
from fervid.analyze.schema import COUNT_COLUMNS, LEDGER_SCHEMA, PROBABILITY_COLUMNS, ROW_SCHEMA, SCHEMA_VERSION, SORT_KEYS
from fervid.analyze.units import Unit
from fervid.labels import EXPRESSIONS


class RowBuffer:
    """Columns of face rows, appended one frame at a time and turned into an Arrow table at the end."""

    def __init__(self, model_name: str, model_version: str) -> None:
        self.model_name, self.model_version = model_name, model_version
        self.columns: dict[str, list] = {name: [] for name in ("source", "segment", "frame", "time_s", "face_id", "x", "y", "w", "h")}
        self.probabilities: list[np.ndarray] = []

    def add(self, source: str, segment: int, frame: int, time_s: float, face_ids: Iterable[int], boxes: np.ndarray, probabilities: np.ndarray) -> None:
        """One frame's faces: a row per box, with its id and its (7,) probabilities."""
        for face_id, box in zip(face_ids, boxes):
            for name, value in zip(self.columns, (source, segment, frame, time_s, face_id, *(int(v) for v in box))):
                self.columns[name].append(value)
        self.probabilities.append(np.asarray(probabilities, dtype=np.float32).reshape(-1, len(EXPRESSIONS)))

    def table(self) -> pa.Table:
        """The rows in ``ROW_SCHEMA``, in the final table's order (``SORT_KEYS``: source, frame, face_id)."""
        probabilities = np.concatenate(self.probabilities) if self.probabilities else np.zeros((0, len(EXPRESSIONS)), np.float32)
        best = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, np.int64)
        count = len(probabilities)
        data = {
            **self.columns,
            "expression": [EXPRESSIONS[i] for i in best],
            "confidence": probabilities[np.arange(count), best] if count else np.zeros(0, np.float32),
            **{name: probabilities[:, i] for i, name in enumerate(PROBABILITY_COLUMNS)},
            "model_name": [self.model_name] * count,
            "model_version": [self.model_version] * count,
            "schema_version": [SCHEMA_VERSION] * count,
        }
        return pa.Table.from_pydict(data, schema=ROW_SCHEMA).sort_by(SORT_KEYS)


def expression_counts(probabilities: np.ndarray) -> np.ndarray:
    """How many of the rows of ``probabilities`` (N, 7) each expression wins."""
    probabilities = np.asarray(probabilities).reshape(-1, len(EXPRESSIONS))
    return np.bincount(probabilities.argmax(axis=1), minlength=len(EXPRESSIONS)) if len(probabilities) else np.zeros(len(EXPRESSIONS), np.int64)


class LedgerBuffer:
    """Ledger rows of one unit: status, frames, faces and expression counts per source."""

    def __init__(self, model_name: str, model_version: str) -> None:
        self.model_name, self.model_version = model_name, model_version
        self.records: list[dict] = []

    def add(self, item: SourceItem, unit: Unit, *, frames: int = 0, counts: np.ndarray | None = None, error: str | None = None,
            note: str | None = None) -> None:
        """One source's outcome in ``unit``: an error makes its status "error"; no counts means no faces."""
        counts = np.zeros(len(EXPRESSIONS), np.int64) if counts is None else counts
        self.records.append({
            "source": item.name, "kind": item.kind, "unit": unit.id, "segment": unit.segment,
            "status": "error" if error else "ok", "error": error, "note": note, "frames": frames,
            "faces": int(counts.sum()),
            **{column: int(count) for column, count in zip(COUNT_COLUMNS, counts)},
            "fingerprint": item.fingerprint, "model_name": self.model_name, "model_version": self.model_version,
            "schema_version": SCHEMA_VERSION,
        })

    def table(self) -> pa.Table:
        """The ledger rows in ``LEDGER_SCHEMA``."""
        return pa.Table.from_pylist(self.records, schema=LEDGER_SCHEMA)
