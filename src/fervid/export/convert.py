"""``fervid export``: a saved .keras model to ONNX, checked against Keras, optionally quantized to int8."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fervid.console import warn
from fervid.errors import FervidError
from fervid.export.onnx import export_onnx, write_card
from fervid.fileio import atomic_path, check_outside_dataset, check_writable
from fervid.preprocess import INPUT_SHAPE, smooth
from fervid.runtime.classify import ExpressionClassifier, card_beside, card_input_blur

TOLERANCE = 1e-4
CALIBRATION_FACES = 512


@dataclass
class ExportResult:
    """What was written and how closely it matches the Keras model."""

    path: Path
    difference: float  # max |ONNX Runtime float32 - Keras| on 16 random faces
    card: dict | None = None
    int8_agreement: float | None = None  # share of validation faces where int8 and float32 pick the same class
    int8_accuracy: tuple[float, float] | None = None  # validation accuracy of int8 and float32, run as the runtime runs them
    flip_tta: bool = False  # whether those accuracies average the flipped face in (the card's inference.flip_tta)
    scored_on: str = "validation split"  # the faces those numbers are on (a stratified holdout without a validation split)

    def describe(self) -> list[str]:
        """What ``fervid export`` prints: the file and its agreement with Keras, and for int8 with float32."""
        card = f" and its card {self.path.with_suffix('.json').name}" if self.card is not None else ""
        lines = [f"wrote {self.path}{card} (float32 ONNX Runtime vs Keras max difference {self.difference:.2e})"]
        if self.int8_agreement is not None and self.int8_accuracy is not None:
            int8, float32 = self.int8_accuracy
            views = " with flip averaging" if self.flip_tta else ""
            lines.append(f"int8: same class as float32 on {self.int8_agreement:.1%} of the faces of the {self.scored_on}; "
                         f"accuracy there {int8:.4f}{views} (float32 {float32:.4f})")
        return lines


def export_checked(model_path: Path, target: Path | None = None, *, int8_data: Path | None = None, seed: int = 0,
                   unknown: str | None = None, mapping: Mapping[str, str] | None = None) -> ExportResult:
    """Export ``model_path`` (a ``.keras`` model or a run folder) to ``target`` (default: beside it, as
    ``.onnx``, or ``.int8.onnx`` with ``int8_data``: the run's float32 model and card stay as they are);
    refuse if ONNX Runtime and Keras differ by more than 1e-4.

    The model card beside the model (``model.json`` in a run folder) goes into the ONNX metadata and
    beside the ONNX file. With ``int8_data`` the float32 export is quantized to int8, calibrated on
    512 training faces of that dataset (blurred as the card's ``input_blur`` says, as the runtime
    will feed them) and scored on its validation split; those scores replace the
    card's metrics, so the card describes the file that is shipped: that dataset must be the one the
    card says the model was trained on. ``unknown`` and ``mapping`` read it as ``fervid train`` does
    (default: the run's, else the card's training settings).
    """
    # The card goes beside it as .json: a .keras or .json target would lose a file. Checked before
    # TensorFlow's seconds of import; the default targets end in .onnx.
    if target is not None and Path(target).suffix.lower() != ".onnx":
        raise FervidError(f"--out {target}: the ONNX file must end in .onnx")
    if not Path(model_path).expanduser().exists():
        raise FervidError(f"{model_path}: no such model file")
    if int8_data is None and (unknown is not None or mapping):
        raise FervidError("--unknown and --map say how to read the --int8 dataset; without --int8 no data is read")
    import onnxruntime as ort

    from fervid.model.architectures import check_card_fits, keras_model_path, load_face_classifier

    model_path = keras_model_path(model_path)
    float32_beside = model_path.with_suffix(".onnx")  # a run folder's own model.onnx, with model.json
    default = model_path.with_name(f"{model_path.stem}.int8.onnx") if int8_data is not None else float32_beside
    target = Path(target).expanduser() if target is not None else default  # written where checked: --out=~/m.onnx
    # The card goes beside the target as .json: model.ONNX is not model.onnx, but its card is model.json.
    card_path = target.expanduser().resolve().with_suffix(".json")
    if int8_data is not None and card_path == float32_beside.resolve().with_suffix(".json"):
        raise FervidError(
            f"--out {target}: the float32 model beside {model_path.name}, whose card ({float32_beside.with_suffix('.json').name}) "
            f"describes it; write the int8 model elsewhere (default: {default.name})"
        )
    card = card_beside(model_path)
    # now, not after the conversion (and the int8 scoring); a run's own model.onnx is this export's to write
    check_writable(target, "--out", own_run=model_path.parent)
    if card is not None:
        check_writable(target.with_suffix(".json"), f"--out {target}: its card", own_run=model_path.parent)
        if target.with_suffix(".json").is_file():  # replaced without a word: a JSON of the user's that shared the name
            try:
                card_beside(target)
            except FervidError:
                raise FervidError(f"--out {target}: {target.with_suffix('.json').name} beside it is not a model card, and "
                                  "this model's card would replace it; write the model elsewhere") from None
    if int8_data is not None:  # now, not after seconds of conversion
        if not Path(int8_data).expanduser().exists():
            raise FervidError(f"--int8 {int8_data}: no such file or folder (the dataset to calibrate and score the int8 model on)")
        check_outside_dataset(target, int8_data, "--out")
    # read and checked before the conversion: a wrong dataset is refused in a second, not after it
    calibration = None
    if int8_data is not None:
        calibration = _calibration_data(model_path, int8_data, card, unknown, mapping)
        if card is not None:
            check_card_data(card, calibration, int8_data)
    model = load_face_classifier(model_path)
    check_card_fits(card, model, model_path)
    with tempfile.TemporaryDirectory() as scratch:
        # Everything is built in scratch and moved onto ``target`` only once checked (and scored), so a
        # failed export leaves the model already there, such as the shipped one, as it was.
        float32_path = Path(scratch) / "float32.onnx"
        export_onnx(model, float32_path, card)
        batch = np.random.default_rng(seed).random((16, *INPUT_SHAPE), dtype=np.float32)
        session = ort.InferenceSession(str(float32_path), providers=["CPUExecutionProvider"])
        onnx_output = session.run(None, {session.get_inputs()[0].name: batch})[0]
        keras_output = np.asarray(model.predict(batch, verbose=0))
        if not (np.isfinite(onnx_output).all() and np.isfinite(keras_output).all()):  # NaN passed `difference > TOLERANCE`
            raise FervidError(f"{model_path}: the model's outputs are not numbers (NaN or infinite weights: a diverged "
                              "training?); nothing written")
        difference = float(np.abs(onnx_output - keras_output).max())
        if difference > TOLERANCE:
            raise FervidError(f"ONNX export disagrees with Keras by {difference:.2e} (> {TOLERANCE}); nothing written")
        result = ExportResult(target, difference, card)
        final = float32_path
        if calibration is not None:
            final = Path(scratch) / "int8.onnx"
            result = _quantized(float32_path, final, calibration, result, seed)
        try:  # as every fervid command will load it: a card it refuses (classes ["a"], input_blur "x") was written
            ExpressionClassifier(final, threads=1)
        except FervidError as error:
            why = str(error).removeprefix(f"{final}: ")
            raise FervidError(f"{model_path}: its export would be refused by fervid's runtime ({why}); nothing written") from None
        # The model and its card replace the old pair together: the card is moved into place first,
        # and a card that cannot be written leaves the old model too.
        with atomic_path(target) as onnx_temporary, contextlib.ExitStack() as stack:
            shutil.copyfile(final, onnx_temporary)
            if result.card is not None:
                card_temporary = stack.enter_context(atomic_path(target.with_suffix(".json")))
                card_temporary.write_text(json.dumps(result.card, indent=2) + "\n")
        if result.card is None:
            _drop_stale_card(target)
        result.path = target
    return result


def _drop_stale_card(target: Path) -> None:
    """Remove the model card beside ``target`` that described the model this card-less export replaced:
    left there, it told a user reading the file without fervid (docs/model.md) to average flips, blur
    and temper a model that needs none of it. A JSON of the user's that is no card stays."""
    stale = target.with_suffix(".json")
    if not stale.is_file() or (target.parent / "config.json").is_file():  # a run's card is its model.keras's too
        return
    try:
        card = card_beside(target)
    except FervidError:  # not a model card: the user's own file
        return
    if card is not None:
        stale.unlink()
        warn(f"{stale}: removed: the card of the model {target.name} replaced ({target.name} has none)")


def _calibration_data(model_path: Path, data: Path, card: dict | None, unknown: str | None, mapping: Mapping[str, str] | None):
    """``data`` read as training read its own: ``unknown``/``mapping`` as given, else the run's (a model
    outside a run folder: its card's training settings, else the defaults) and, without a validation
    split, the same seeded stratified holdout."""
    from fervid.evaluation.run import training_reading
    from fervid.training.config import TrainConfig
    from fervid.training.dataset import load_training_data

    run_config = model_path.parent / "config.json"
    if run_config.exists():
        config = TrainConfig.load(run_config)
        config.unknown = unknown or config.unknown
        config.mapping = dict(mapping or config.mapping)
    else:  # a model outside its run: the card's training settings, its holdout's seed and fraction too
        read_map, read_unknown = training_reading(card, data, mapping, unknown)
        config = TrainConfig(data=str(data), unknown=read_unknown, mapping=dict(read_map or {}))
        training = (card or {}).get("training")
        for name in ("seed", "val_fraction"):  # else a --seed 7 model's holdout was called other data
            if isinstance(training, dict) and isinstance(training.get(name), (int, float)) and not isinstance(training.get(name), bool):
                setattr(config, name, training[name])
    config.data = str(data)
    return load_training_data(config)


def check_card_data(card: dict, data, path: Path) -> None:
    """Refuse int8 scoring on other data than the card's: the int8 scores replace the card's, which
    then named FER2013 (its path, counts and fingerprint) beside scores on 2 faces of another folder,
    or on a holdout cut from a validation folder given as the dataset."""
    dataset = card.get("dataset")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("counts"), dict):
        return  # a card from before counts were kept: nothing to compare
    same = dataset["counts"] == data.counts and dataset.get("validation_source") == data.validation_source
    # A holdout is drawn from the faces themselves: a file renamed keeps the counts and moves a
    # training face into it, so there the content fingerprint must match too (as evaluate asks).
    if same and str(data.validation_source).startswith("stratified") and dataset.get("fingerprint") != data.fingerprint:
        # a warning, not a refusal: a copy (cp -r) or an older fervid's card differs as well
        warn(f"--int8 {path}: its content fingerprint ({data.fingerprint}) is not the card's "
             f"({dataset.get('fingerprint')}): if files changed, the held-out faces may include ones the model trained on")
    if same:
        return

    def faces(counts: dict, source: object) -> str:
        train = sum(counts.get("train", {}).values())
        return f"{train:,} training faces, validated on its {source}"

    raise FervidError(
        f"--int8 {path}: not the data the model was trained on ({faces(data.counts, data.validation_source)}; its card: "
        f"{dataset.get('path', '?')}, {faces(dataset['counts'], dataset.get('validation_source', '?'))}); the int8 scores "
        "replace the card's, so give that dataset"
    )


def _quantized(float32_path: Path, target: Path, data, exported: ExportResult, seed: int) -> ExportResult:
    """Quantize on training faces, score the int8 model on validation ones, and store those scores in its card."""
    from fervid.evaluation.evaluate import card_metrics, evaluate, load_predictor, predict
    from fervid.export.quantize import quantize_int8

    train, validation = data.train, data.validation
    rows = np.random.default_rng(seed).choice(len(train), size=min(CALIBRATION_FACES, len(train)), replace=False)
    quantize_int8(float32_path, target, smooth(train.inputs()[rows], card_input_blur(exported.card)))

    inputs, labels = validation.inputs(), validation.labels
    float32, int8 = load_predictor(float32_path), load_predictor(target)
    agreement = float((predict(int8, inputs).argmax(1) == predict(float32, inputs).argmax(1)).mean())
    flip = float32.flip_tta
    accuracies = (evaluate(int8, inputs, labels, flip_tta=flip).accuracy, evaluate(float32, inputs, labels, flip_tta=flip).accuracy)
    if exported.card is None:  # a bare .keras: exported without a card, as its float32 export is
        return ExportResult(target, exported.difference, None, agreement, accuracies, flip, data.validation_source)
    scored, _, _ = card_metrics(int8, inputs, labels, data.validation_source, flip_tta=flip)
    card = dict(exported.card)
    previous = card.get("metrics", {})
    card["precision"] = "int8"
    card["metrics"] = {
        **scored,
        "float32_accuracy_flip_tta": evaluate(float32, inputs, labels, flip_tta=True).accuracy,
        "int8_float32_agreement": agreement,
        "input_blur_check": previous.get("input_blur_check"),
        "temperature_check": previous.get("temperature_check"),
        "training_minutes": previous.get("training_minutes"),
    }
    write_card(target, card)
    return ExportResult(target, exported.difference, card, agreement, accuracies, flip, data.validation_source)
