"""Run a saved model (.onnx through ONNX Runtime, .keras through Keras) over faces and score it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fervid.errors import FervidError
from fervid.evaluation.metrics import ClassificationReport, calibration, classification_report
from fervid.labels import EXPRESSIONS
from fervid.preprocess import smooth

if TYPE_CHECKING:  # Keras is imported only when a .keras model is scored
    import keras

Predictor = Callable[[np.ndarray], np.ndarray]


class ModelPredictor:
    """One view's probabilities (call it), and the softmax temperature ``predict`` puts on them.

    The temperature comes after flip averaging, as in the runtime, so that it can never change
    which class wins; a plain function is a Predictor at temperature 1. ``run`` takes inputs
    already blurred: ``predict`` blurs a batch by ``input_blur`` before mirroring it, in the
    runtime's order (mirrored, then blurred, 44 of 3,589 faces came out up to 0.011 apart, as the
    int8 model rounds its input).
    """

    def __init__(
        self, run: Predictor, temperature: float = 1.0, input_blur: float = 0.0, flip_tta: bool = False, card: dict | None = None
    ) -> None:
        self.run, self.temperature = run, temperature
        self.card = card or {}  # the model card: which data the model was trained on, and how it held out validation
        self.flip_tta = flip_tta  # whether the runtime averages each face with its mirror image (the card's)
        self.input_blur = input_blur  # what inputs are blurred by before ``run``: recorded with the scores, which depend on it

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.run(smooth(inputs, self.input_blur))


def scored_model(model: str) -> str:
    """The file to score for ``model``: a run folder's ``model.onnx``, or its ``model.keras`` when it has
    only that (a run on a Keras backend without ONNX export, such as JAX, writes no ONNX file)."""
    path = Path(model)
    if path.is_dir() and not (path / "model.onnx").exists() and (path / "model.keras").exists():
        return str(path / "model.keras")
    return model


def load_predictor(model: str | Path | None, *, input_blur: float | None = None, temperature: float | None = None) -> ModelPredictor:
    """A function from model inputs (N, 48, 48, 1) to one view's probabilities (N, 7), for ``predict``.

    The model runs as the runtime runs it: inputs blurred by the model card's ``input_blur``, and
    ``predict`` puts its softmax ``temperature`` on the (flip-averaged) probabilities (an ONNX
    model's embedded card, or the ``model.json`` beside a ``.keras`` model), unless the arguments
    say otherwise (``input_blur=0`` scores the model on sharp faces, ``temperature=1`` keeps the
    net's own probabilities). Its ``flip_tta`` is the card's: whether the runtime averages each face
    with its mirror image, for the caller to pass to ``predict``.
    """
    from fervid.runtime.classify import ExpressionClassifier, card_beside, card_flip_tta, card_input_blur, card_temperature

    path = Path(model) if model is not None else None
    if path is not None and path.suffix == ".keras":
        from fervid.model.architectures import check_card_fits, load_face_classifier

        card = card_beside(path)
        if card is not None and tuple(card["classes"]) != EXPRESSIONS:  # as an ONNX model's card is checked
            raise FervidError(f"{path.with_suffix('.json')}: its classes {card['classes']} are not fervid's, in "
                              f"fervid's order ({', '.join(EXPRESSIONS)}); the scores would pair the wrong names")
        blur = card_input_blur(card) if input_blur is None else input_blur
        network = load_face_classifier(path)
        check_card_fits(card, network, path)
        return keras_predictor(network, input_blur=blur, flip_tta=card_flip_tta(card), card=card,
                               temperature=card_temperature(card) if temperature is None else temperature)

    classifier = ExpressionClassifier(model)
    return ModelPredictor(
        lambda inputs: classifier.predict_inputs(inputs, flip_tta=False, input_blur=0.0, temperature=1.0),
        classifier.temperature if temperature is None else temperature,
        classifier.input_blur if input_blur is None else input_blur,
        classifier.flip_tta,
        classifier.card,
    )


def keras_predictor(network: keras.Model, *, input_blur: float = 0.0, temperature: float = 1.0, flip_tta: bool = False,
                    card: dict | None = None) -> ModelPredictor:
    """A loaded Keras classifier as a Predictor, its inputs blurred by ``input_blur`` (sigma, pixels)."""
    return ModelPredictor(lambda inputs: np.asarray(network.predict(inputs, batch_size=256, verbose=0)),
                          temperature, input_blur, flip_tta, card)


def predict(predictor: Predictor, inputs: np.ndarray, *, flip_tta: bool = False, batch_size: int = 512) -> np.ndarray:
    """Probabilities in batches; with ``flip_tta`` the average over the face and its mirror image.

    Last, the predictor's temperature (a ``ModelPredictor``'s; 1 for a plain function).
    """
    from fervid.runtime.classify import average_with_mirror, temper

    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        if isinstance(predictor, ModelPredictor):  # blurred, then mirrored: the runtime's order
            batch, run = smooth(batch, predictor.input_blur), predictor.run
        else:
            run = predictor
        probabilities = average_with_mirror(run, batch) if flip_tta else run(batch)
        outputs.append(temper(probabilities, getattr(predictor, "temperature", 1.0)))
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, 7), dtype=np.float32)
    if not np.isfinite(probabilities).all():  # a diverged net's NaN: every such face was "angry", ECE 0
        bad = int((~np.isfinite(probabilities).all(axis=1)).sum())
        raise FervidError(f"the model gives NaN or infinite probabilities for {bad} of {len(probabilities)} faces "
                          "(trained weights that diverged?); nothing is scored")
    return probabilities


def evaluate(predictor: Predictor, inputs: np.ndarray, labels: np.ndarray, *, flip_tta: bool = False) -> ClassificationReport:
    """Score a predictor on labelled inputs, calibration included."""
    probabilities = predict(predictor, inputs, flip_tta=flip_tta)
    predicted = probabilities.argmax(axis=1)
    report = classification_report(labels, predicted)
    report.calibration = calibration(probabilities, labels)
    report.correct = predicted == labels
    report.probabilities = probabilities
    return report


def card_metrics(
    predictor: Predictor, inputs: np.ndarray, labels: np.ndarray, split: str, *, flip_tta: bool = True,
) -> tuple[dict, ClassificationReport, ClassificationReport]:
    """The validation scores a model card carries (single view and flip averaging), with both reports.

    ``flip_tta`` is how the runtime runs the model (the card's ``inference.flip_tta``): its view gives
    the per-class table, so a net trained with ``--no-flip`` is not described by flip averaging it
    never gets."""
    single = evaluate(predictor, inputs, labels)
    flipped = evaluate(predictor, inputs, labels, flip_tta=True)
    assert single.calibration is not None and flipped.calibration is not None  # evaluate sets them
    metrics = {
        "split": split,
        "accuracy": single.accuracy,
        "macro_f1": single.macro_f1,
        "accuracy_flip_tta": flipped.accuracy,
        "macro_f1_flip_tta": flipped.macro_f1,
        "ece": single.calibration.ece,
        "ece_flip_tta": flipped.calibration.ece,
        "per_class": (flipped if flip_tta else single).to_dict()["per_class"],
    }
    return metrics, single, flipped
