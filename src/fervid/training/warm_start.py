"""``--init-from``: start a run from a trained model's weights (a run, a ``.keras`` model, an ONNX
export or a bundled model) instead of random ones."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fervid.bundled import available_bundled_models, bundled_onnx_path
from fervid.errors import FervidError
from fervid.model.architectures import card_architecture, keras_model_path, load_classifier
from fervid.model.backend import keras
from fervid.model.from_onnx import classifier_from_onnx
from fervid.model.specs import ARCHITECTURES as ARCHITECTURE_NAMES


def warm_start(classifier: keras.Model, source: str, arch: str, training_faces: Callable[[], np.ndarray]) -> None:
    """Start from a trained model's weights instead of random ones.

    This is how a researcher fine-tunes fervid's net on their own faces, and how a finished run gets a
    second warm-up + cosine cycle (a warm restart) when its schedule proved too short. ``source`` is a
    ``.keras`` model or a run folder of the same architecture: a finished run's ``model.keras``, or
    a stopped run's best epoch so far (``checkpoint/best.weights.h5``), so that a run whose settings
    need changing (`--resume` refuses that) goes on from where it stopped. It may also be an ONNX
    export of a VGG architecture or a bundled model's name (``fervid-vgg``): their BatchNorm
    statistics, folded away by the export, are measured again on ``training_faces()`` (a sample of
    the run's training faces as its augmentation draws them; model.from_onnx).
    """
    folder = Path(source).expanduser()
    if source in available_bundled_models() or (folder.suffix.lower() == ".onnx" and folder.is_file()):
        # a bundled name means the bundled model, also beside a folder of that name (./NAME names the folder)
        onnx_path = bundled_onnx_path(source) if source in available_bundled_models() else folder
        classifier.set_weights(classifier_from_onnx(onnx_path, arch, training_faces()).get_weights())
        return
    best = folder / "checkpoint" / "best.weights.h5"
    if folder.is_dir() and not (folder / "model.keras").is_file() and best.is_file():
        _start_from_checkpoint(classifier, folder, best)
        return
    try:
        path = keras_model_path(source)
    except FervidError as error:
        raise FervidError(f"no trained model to start from: {error}") from None
    trained = load_classifier(path)
    weights = trained.get_weights()
    if [w.shape for w in weights] != [tuple(v.shape) for v in classifier.weights]:
        trained_arch = card_architecture(path)
        arch = f"--arch {trained_arch}" if trained_arch else "--arch the architecture it was trained with"
        raise FervidError(
            f"{path}: a {trained.count_params():,}-parameter model cannot start a {classifier.count_params():,}-parameter "
            f"one; give {arch}"
        )
    classifier.set_weights(weights)


def _start_from_checkpoint(classifier: keras.Model, run: Path, best: Path) -> None:
    """A stopped run's best weights so far; another architecture's are refused naming the run's
    ``--arch`` (from its ``config.json``), as for a finished run."""
    try:
        with warnings.catch_warnings():  # Keras warns of each layer it could not fill before it raises
            warnings.simplefilter("ignore")
            classifier.load_weights(str(best))
    except (OSError, ValueError) as error:
        try:
            arch = json.loads((run / "config.json").read_text()).get("arch")
        except (OSError, ValueError, AttributeError):
            arch = None
        if isinstance(arch, str) and arch in ARCHITECTURE_NAMES:
            raise FervidError(f"{best}: the weights of a stopped --arch {arch} run cannot start this one; give --arch {arch}") from None
        reason = " ".join(str(error).split())[:160]
        raise FervidError(f"{best}: cannot be loaded ({reason})") from None
