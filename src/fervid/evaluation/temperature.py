"""Temperature scaling: the one number, fitted on validation, that makes a model's confidence read as a probability.

A net trained with label smoothing or distilled from teachers learns softened targets, so its top
probability runs below how often it is right (fervid's distilled student at epoch 119 of 250: mean
confidence 0.64 at 68% accuracy). Dividing the logits by a temperature T < 1 sharpens every face
alike and leaves the winning class, so accuracy and macro-F1 stay exactly as they were. T is the one
that minimises the negative log-likelihood of the validation labels under the probabilities the
runtime reports (the face averaged with its mirror image, then tempered), as in Guo et al., "On
Calibration of Modern Neural Networks" (2017). Like the best epoch and the input blur, it is chosen
on validation and never on a test split, and kept only if it does what it is for: a fitted T that
leaves the validation calibration error higher than T = 1 does (a model already calibrated, where the
fit only follows noise) is dropped for 1, as the input blur is dropped when it costs accuracy.
"""

from __future__ import annotations

import numpy as np

from fervid.evaluation.metrics import calibration
from fervid.runtime.classify import temper

LOWEST, HIGHEST = 0.25, 4.0  # beyond these a model is broken, not miscalibrated
GOLDEN = (np.sqrt(5) - 1) / 2


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, None))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray, *, tolerance: float = 1e-3) -> tuple[float, dict]:
    """The temperature (3 decimals, within 0.25..4) that minimises the validation NLL, and the check behind it.

    ``probabilities`` (N, 7) are the model's at temperature 1, flip-averaged as the runtime runs it.
    Golden-section search on log T: the NLL of softmax(log p / T) is convex in 1/T, so it has one
    trough. The check records the NLL and the ECE at T = 1 and the NLL at the fitted T.
    """
    labels = np.asarray(labels)

    def loss(log_t: float) -> float:
        return negative_log_likelihood(temper(probabilities, float(np.exp(log_t))), labels)

    low, high = np.log(LOWEST), np.log(HIGHEST)
    left, right = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
    left_loss, right_loss = loss(left), loss(right)
    while high - low > tolerance:
        if left_loss < right_loss:
            high, right, right_loss = right, left, left_loss
            left = high - GOLDEN * (high - low)
            left_loss = loss(left)
        else:
            low, left, left_loss = left, right, right_loss
            right = low + GOLDEN * (high - low)
            right_loss = loss(right)
    temperature = round(float(np.exp((low + high) / 2)), 3)
    check = {
        "temperature": temperature,
        "nll_at_1": negative_log_likelihood(probabilities, labels),
        "nll": negative_log_likelihood(temper(probabilities, temperature), labels),
        "ece_flip_tta_at_1": calibration(probabilities, labels).ece,
    }
    return temperature, check


def choose_temperature(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    """The fitted temperature if it lowers (or keeps) the validation calibration error, else 1.

    Returns the temperature for the model card and the check behind it: the fit's record plus the
    calibration error at the fitted T and whether it was kept.
    """
    fitted, check = fit_temperature(probabilities, labels)
    ece = calibration(temper(probabilities, fitted), np.asarray(labels)).ece
    kept = ece <= check["ece_flip_tta_at_1"]
    return (fitted if kept else 1.0), {**check, "ece_flip_tta_fitted": ece, "kept": bool(kept)}
