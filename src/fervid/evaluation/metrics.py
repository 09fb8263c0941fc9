"""Classification metrics in plain NumPy, so evaluation needs no ML framework."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fervid.labels import EXPRESSIONS


@dataclass
class ClassificationReport:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""

    accuracy: float
    macro_f1: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion: np.ndarray  # rows: true class, columns: predicted class (counts)

    @property
    def normalized_confusion(self) -> np.ndarray:
        """Confusion rows divided by their totals (recall on the diagonal)."""
        totals = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, totals, out=np.zeros(self.confusion.shape), where=totals > 0)

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": {
                name: {
                    "precision": float(self.precision[i]),
                    "recall": float(self.recall[i]),
                    "f1": float(self.f1[i]),
                    "support": int(self.support[i]),
                }
                for i, name in enumerate(EXPRESSIONS)
            },
            "confusion": self.confusion.tolist(),
        }

    def table(self) -> str:
        """The per-class table as Markdown."""
        lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        for i, name in enumerate(EXPRESSIONS):
            lines.append(f"| {name} | {self.precision[i]:.3f} | {self.recall[i]:.3f} | {self.f1[i]:.3f} | {self.support[i]} |")
        lines.append(f"| **macro** | {self.precision.mean():.3f} | {self.recall.mean():.3f} | {self.macro_f1:.3f} | {self.support.sum()} |")
        return "\n".join(lines)


def classification_report(true: np.ndarray, predicted: np.ndarray, num_classes: int = len(EXPRESSIONS)) -> ClassificationReport:
    """Metrics for integer labels; a class never predicted has precision 0, never a division error."""
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    hits = np.diag(confusion).astype(np.float64)
    predicted_totals = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(hits, predicted_totals, out=np.zeros(num_classes), where=predicted_totals > 0)
    recall = np.divide(hits, support, out=np.zeros(num_classes), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0)
    present = support > 0
    return ClassificationReport(
        accuracy=float(hits.sum() / max(len(true), 1)),
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        confusion=confusion,
    )
