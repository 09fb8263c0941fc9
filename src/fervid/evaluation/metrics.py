"""Classification metrics in plain NumPy, so evaluation needs no ML framework."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fervid.labels import EXPRESSIONS


@dataclass
class Calibration:
    """How far the confidence (top probability) is from the accuracy, per confidence bin.

    Users threshold on the confidence fervid prints, so it should mean what it says: the expected
    calibration error (ECE) is the face-weighted mean gap between confidence and accuracy over the bins.
    """

    ece: float
    mean_confidence: float
    accuracy: float
    bins: list[dict]  # low, high, faces, confidence, accuracy; empty bins left out

    def to_dict(self) -> dict:
        return {"ece": self.ece, "mean_confidence": self.mean_confidence, "accuracy": self.accuracy, "bins": self.bins}

    def table(self) -> str:
        """The reliability table as Markdown."""
        lines = ["| confidence | faces | mean confidence | accuracy |", "|---|---:|---:|---:|"]
        for row in self.bins:
            lines.append(f"| {row['low']:.1f}-{row['high']:.1f} | {row['faces']} | {row['confidence']:.3f} | {row['accuracy']:.3f} |")
        return "\n".join(lines)


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> Calibration:
    """Equal-width confidence bins over 0..1 (a confidence of exactly 1 falls in the last bin)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        mean_confidence, accuracy = float(confidence[members].mean()), float(correct[members].mean())
        ece += members.sum() / len(labels) * abs(accuracy - mean_confidence)
        rows.append({"low": b / bins, "high": (b + 1) / bins, "faces": int(members.sum()), "confidence": mean_confidence, "accuracy": accuracy})
    return Calibration(
        ece=float(ece),
        mean_confidence=float(confidence.mean()) if len(labels) else 0.0,
        accuracy=float(correct.mean()) if len(labels) else 0.0,
        bins=rows,
    )


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
    calibration: Calibration | None = None  # set when the probabilities were at hand
    correct: np.ndarray | None = None  # per face, top class == label (for paired comparisons)
    probabilities: np.ndarray | None = None  # per face (N, 7), as scored (for the per-face predictions)

    @property
    def averaged(self) -> np.ndarray:
        """The classes macro averages are taken over: those with faces or predictions (scikit-learn's
        default). A class with neither says nothing; one only predicted counts with F1 0, so a model
        that calls faces of a three-class dataset "neutral" is not scored as if it never did."""
        return (self.support > 0) | (self.confusion.sum(axis=0) > 0)

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
            "classes": list(EXPRESSIONS),  # the order of the confusion matrix's rows and columns
            "averaged_classes": [name for name, kept in zip(EXPRESSIONS, self.averaged) if kept],
            "confusion": self.confusion.tolist(),  # counts; rows: true class, columns: predicted
            **({"calibration": self.calibration.to_dict()} if self.calibration else {}),
        }

    def table(self) -> str:
        """The per-class table as Markdown."""
        lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        for i, name in enumerate(EXPRESSIONS):
            lines.append(f"| {name} | {self.precision[i]:.3f} | {self.recall[i]:.3f} | {self.f1[i]:.3f} | {self.support[i]} |")
        present = self.averaged  # as macro-F1 is
        precision, recall = (float(v[present].mean()) if present.any() else 0.0 for v in (self.precision, self.recall))
        lines.append(f"| **macro** | {precision:.3f} | {recall:.3f} | {self.macro_f1:.3f} | {self.support.sum()} |")
        return "\n".join(lines)


def classification_report(true: np.ndarray, predicted: np.ndarray, num_classes: int = len(EXPRESSIONS)) -> ClassificationReport:
    """Metrics for integer labels; a class never predicted has precision 0, never a division error."""
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    for name, values in (("labels", true), ("predictions", predicted)):  # -1 was counted as the last class
        if len(values) and not (0 <= values.min() and values.max() < num_classes):
            raise ValueError(f"{name} must be class numbers 0 to {num_classes - 1}, got {values.min()}..{values.max()}")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    hits = np.diag(confusion).astype(np.float64)
    predicted_totals = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(hits, predicted_totals, out=np.zeros(num_classes), where=predicted_totals > 0)
    recall = np.divide(hits, support, out=np.zeros(num_classes), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0)
    averaged = (support > 0) | (predicted_totals > 0)  # see ClassificationReport.averaged
    return ClassificationReport(
        accuracy=float(hits.sum() / max(len(true), 1)),
        macro_f1=float(f1[averaged].mean()) if averaged.any() else 0.0,
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        confusion=confusion,
    )


def mcnemar_p(first_correct: np.ndarray, second_correct: np.ndarray) -> tuple[int, int, float]:
    """Exact two-sided McNemar test of two models scored on the same faces.

    Only the faces the models disagree on carry information: ``b`` that only the first gets right,
    ``c`` that only the second does. Under "equally accurate" each is a fair coin flip, so the p-value
    is the two-sided binomial tail of min(b, c) in b + c trials. A new model replaces the shipped one
    only when this is small; a 0.5-point gain on 3,589 faces usually is not.
    """
    b = int(np.sum(first_correct & ~second_correct))
    c = int(np.sum(~first_correct & second_correct))
    n = b + c
    if n == 0:
        return b, c, 1.0
    term = total = 1  # C(n, 0); each next binomial coefficient from the last, exact integers: summing
    for k in range(min(b, c)):  # a fresh math.comb(n, k) for every k took 36 s at 23,800 disagreements
        term = term * (n - k) // (k + 1)
        total += term
    return b, c, min(1.0, 2 * (total / 2**n))
