"""Run a saved model (.onnx through ONNX Runtime, .keras through Keras) over faces and score it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fervid.evaluation.metrics import ClassificationReport, calibration, classification_report

Predictor = Callable[[np.ndarray], np.ndarray]


def load_predictor(model: str | Path | None) -> Predictor:
    """A function from model inputs (N, 48, 48, 1) to probabilities (N, 7), without flip averaging."""
    path = Path(model) if model is not None else None
    if path is not None and path.suffix == ".keras":
        from fervid.model.architectures import load_classifier

        return keras_predictor(load_classifier(path))
    from fervid.runtime.classify import ExpressionClassifier

    classifier = ExpressionClassifier(model)
    return lambda inputs: classifier.predict_inputs(inputs, flip_tta=False)


def keras_predictor(network) -> Predictor:
    """A loaded Keras classifier as a Predictor."""
    return lambda inputs: np.asarray(network.predict(inputs, batch_size=256, verbose=0))


def predict(predictor: Predictor, inputs: np.ndarray, *, flip_tta: bool = False, batch_size: int = 512) -> np.ndarray:
    """Probabilities in batches; with ``flip_tta`` the average over the face and its mirror image."""
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        probabilities = predictor(batch)
        if flip_tta:
            probabilities = (probabilities + predictor(np.ascontiguousarray(batch[:, :, ::-1, :]))) / 2
        outputs.append(probabilities)
    return np.concatenate(outputs) if outputs else np.zeros((0, 7), dtype=np.float32)


def evaluate(predictor: Predictor, inputs: np.ndarray, labels: np.ndarray, *, flip_tta: bool = False) -> ClassificationReport:
    """Score a predictor on labelled inputs, calibration included."""
    probabilities = predict(predictor, inputs, flip_tta=flip_tta)
    predicted = probabilities.argmax(axis=1)
    report = classification_report(labels, predicted)
    report.calibration = calibration(probabilities, labels)
    report.correct = predicted == labels
    return report
