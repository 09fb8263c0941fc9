"""Load an exported expression model once and classify batches of faces with ONNX Runtime."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

from fervid.bundled import available_bundled_models
from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS
from fervid.preprocess import FACE_SIZE, MAX_INPUT_BLUR, prepare_face, smooth, to_model_input
from fervid.run_folders import missing_model_reason

METADATA_KEY = "fervid"
DEFAULT_MODEL = "fervid-vgg"  # `fervid models` lists every model shipped in the package


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a model shipped inside the package (works from an installed wheel)."""
    path = Path(str(resources.files("fervid") / "models" / f"{name}.onnx"))
    if not path.exists():
        raise FervidError(f"no bundled model named '{name}' (bundled: {', '.join(available_bundled_models()) or 'none'})")
    return path


def bundled_model_cards() -> dict[str, dict]:
    """Each bundled model's card (the JSON beside its ONNX file), read without loading the model; a
    damaged or replaced one is a FervidError (`fervid models` printed "nan%" for it, and exited 0)."""
    cards = {}
    for name in available_bundled_models():
        path = bundled_model_path(name).with_suffix(".json")
        card = parse_card(path.read_bytes(), f"{path}: the card of the bundled model {name}")
        if not isinstance(card.get("classes"), list) or not isinstance(card.get("metrics"), dict):
            raise FervidError(f"{path}: the card of the bundled model {name} is not a model card (no 'classes' and "
                              "'metrics'); reinstall fervid")
        cards[name] = card
    return cards


def _inference(card: dict | None) -> dict:
    """The card's ``inference`` settings; a hand-edited card of the wrong shape is a FervidError, not a crash."""
    inference = (card or {}).get("inference", {})
    if not isinstance(inference, dict):
        raise FervidError(f"model card: 'inference' must be a JSON object, got {inference!r}")
    return inference


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def card_input_blur(card: dict | None) -> float:
    """The input blur (Gaussian sigma, pixels) a model card asks for; 0 for cards from before it existed."""
    value = _inference(card).get("input_blur", 0.0)
    if not _number(value) or not 0 <= value <= MAX_INPUT_BLUR:
        raise FervidError(f"model card: input_blur must be a number of pixels from 0 to {MAX_INPUT_BLUR:g}, got {value!r}")
    return float(value)


def card_flip_tta(card: dict | None) -> bool:
    """Whether the runtime averages each face with its mirror image for this model (a net trained
    without flips is not); False for cards without the field. Only JSON true and false count: the
    string "false" would be true to Python."""
    value = _inference(card).get("flip_tta", False)
    if not isinstance(value, bool):
        raise FervidError(f"model card: flip_tta must be true or false, got {value!r}")
    return value


def card_temperature(card: dict | None) -> float:
    """The softmax temperature a model card asks for; 1 (the net's own probabilities) for cards from
    before it existed. It must be above 0: at 0 every probability is NaN, below 0 the ranking flips."""
    value = _inference(card).get("temperature", 1.0)
    if not _number(value) or value <= 0:
        raise FervidError(f"model card: temperature must be a number above 0, got {value!r}")
    return float(value)


def describe_bundled_models() -> list[str]:
    """``fervid models``: one aligned row per bundled model (name, architecture, size, validation scores)."""
    rows = [("name", "architecture", "parameters", "file", "accuracy", "macro-F1", "validated on")]
    for name, card in bundled_model_cards().items():
        metrics = card.get("metrics", {})
        rows.append((
            f"{name}{' (default)' if name == DEFAULT_MODEL else ''}",
            card.get("architecture", "?"),
            f"{card.get('parameters', 0):,}",
            f"{bundled_model_path(name).stat().st_size / 1e6:.1f} MB {card.get('precision', 'float32')}",
            f"{metrics.get('accuracy_flip_tta', float('nan')):.2%}",
            f"{metrics.get('macro_f1_flip_tta', float('nan')):.3f}",
            f"{card.get('dataset', {}).get('path', '?')}, {metrics.get('split', '?')}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    folder = bundled_model_path(DEFAULT_MODEL).parent
    return lines + ["accuracy and macro-F1 as the runtime runs each model (flip averaging and its card's input blur); "
                    "use one with --model NAME",
                    f"files (.onnx, and the model card as .json): {folder}"]


def average_with_mirror(run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray) -> np.ndarray:
    """Flip test-time augmentation: the mean of ``run``'s probabilities for each face and its mirror image.

    One call of ``run`` on both views. The runtime and ``fervid evaluate`` both use this, so a model
    is scored exactly as it runs.
    """
    outputs = run(np.concatenate([inputs, inputs[:, :, ::-1, :]]))
    return (outputs[: len(inputs)] + outputs[len(inputs) :]) / 2


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities a softmax at ``temperature`` would give: softmax(log p / T).

    The net ends in a softmax, so log p is its logits less a per-face constant, and dividing by T
    spreads (T > 1) or sharpens (T < 1) the confidence without changing which class wins. This is
    temperature scaling (Guo et al., 2017): a distilled net learns softened targets and comes out
    under-confident, and one number fitted on validation makes its confidence read as a probability.
    """
    if temperature == 1.0 or len(probabilities) == 0:
        return probabilities
    logits = np.log(np.clip(probabilities, 1e-12, None)) / temperature
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exponentials / exponentials.sum(axis=1, keepdims=True)).astype(np.float32)


def model_label(classifier: ExpressionClassifier) -> str:
    """How a results page names the model a classifier runs: a bundled model by its name, any other by
    its file (relative to this folder where it is below it), since cards' names repeat: a float and an
    int8 export of one run share it, and a run may be named like a bundled model. Benchmarked one
    after the other, they wrote into one section, each replacing the last."""
    path = Path(classifier.path).resolve()
    if classifier.name in available_bundled_models() and path == bundled_model_path(classifier.name).resolve():
        return classifier.name
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def card_beside(model: Path) -> dict | None:
    """The model card saved next to a Keras model file, if there is one: the ``.json`` of the same name
    (a run folder's ``model.json`` for its ``model.keras``). Only that name: another ``.keras`` file in
    a run folder is not the run's model, and the run's card would describe the wrong weights.

    A run's ``model.keras`` without its card is a run stopped while it wrote them: taken as a bare
    model, it was exported without its card's settings, and evaluate sent its user to score it on
    faces it trained on; it is refused, with the command that finishes it.
    """
    path = model.with_suffix(".json")
    if not path.exists():
        run = model.parent
        if model.name == "model.keras" and (run / "config.json").is_file() and (run / "checkpoint" / "state.json").is_file():
            raise FervidError(f"{run}: a training run that did not finish (stopped while writing its model and card: no "
                              f"{path.name}); finish it with: fervid train --resume --out {run}")
        return None
    card = parse_card(path.read_bytes(), f"{path}: the model card beside {model.name}")
    if not (isinstance(card.get("classes"), list) and isinstance(card.get("input"), dict)):
        # another JSON there (evaluate's metrics once replaced a run's card): taken as the card, its
        # missing settings turned flip averaging off without a word, in export and evaluate alike
        raise FervidError(f"{path}: the JSON beside {model.name} is not a model card (no 'classes' and 'input'); "
                          "move it away, or put the run's model.json back")
    return card


def parse_card(text: str | bytes, where: str) -> dict:
    """A model card's JSON as a dict, or one line saying ``where`` it is not a JSON object."""
    try:
        card = json.loads(text)
    except ValueError as error:  # UnicodeDecodeError included
        raise FervidError(f"{where} is not valid JSON ({error})") from None
    if not isinstance(card, dict):
        raise FervidError(f"{where} is not a JSON object")
    return card


def resolve_model(model: str | Path | None) -> Path:
    """A model argument (None = default, a bundled name, or a path to an .onnx file or run folder) as a
    file path. A bundled model's name means that model even when the current folder holds a file or
    folder of the same name (``./fervid-vgg`` names that one)."""
    if model is None:
        return bundled_model_path()
    if not str(model):  # an unset variable: not the current folder
        raise FervidError("model is an empty string; give a bundled model name, an .onnx path or a run folder")
    if isinstance(model, str) and model in available_bundled_models():  # not shadowed by ./fervid-vgg; write ./NAME for that
        return bundled_model_path(model)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model.onnx").exists():
            raise FervidError(missing_model_reason(path, "model.onnx", "a .onnx file, a finished run folder or a bundled model name"))
        return path / "model.onnx"
    if path.suffix.lower() == ".keras":
        if not path.exists():
            raise FervidError(f"{path}: no such model file")
        lower = "" if path.suffix == ".keras" else f" (rename it to {path.with_suffix('.keras').name} first: Keras reads only that suffix)"
        raise FervidError(f"{path}: a Keras model; this needs its ONNX export (fervid export {path}){lower}")
    if path.suffix.lower() == ".onnx" or path.exists():
        if not path.exists():
            named = f" (the bundled model is named {path.stem}, without .onnx)" if len(path.parts) == 1 and path.stem in available_bundled_models() else ""
            raise FervidError(f"{path}: no such model file{named}")
        if not path.is_file():  # ONNX Runtime waited forever on a pipe
            raise FervidError(f"{path}: not a regular file (a device, pipe or socket); save the model to a file and give that")
        return path
    if len(path.parts) > 1 or any(separator in str(model) for separator in "/\\"):  # runs/typo or ./NAME: a path
        raise FervidError(f"{model}: no such model file or run folder")
    return bundled_model_path(str(model))


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system has one (``taskset``, a
    container's cpuset), else the machine's count. ``os.cpu_count`` counts the machine's: pinned to
    one core of two, a recognizer ran two threads on it at half the speed of one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


class ExpressionClassifier:
    """An ONNX expression model loaded once; ``classify`` takes a batch of faces in one call.

    The model card stored in the ONNX metadata is the contract (class order, input size, and how
    to run it: flip averaging, the input blur that matches its training faces, the softmax
    temperature that calibrates its confidence), read with
    ``json.loads``; a model whose classes differ from fervid's order is refused.
    """

    def __init__(self, model: str | Path | None = None, *, threads: int | None = None) -> None:
        self.path = resolve_model(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else min(4, usable_cores())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # ONNX Runtime's threads otherwise keep spinning after each call, on the cores the Haar
        # detector runs on next (a detector scan took 44 ms instead of 30 on 2 cores); spinning
        # during a call, which keeps a single face's call fast, stays on.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime raises its own opaque types for bad files
            beside = Path(self.path).with_suffix(".onnx")
            hint = f"; the model is {beside.name} beside it" if beside != Path(self.path) and beside.is_file() else ""
            raise FervidError(f"{self.path}: not a loadable ONNX model ({str(error).splitlines()[0]}){hint}") from None
        self._check_shapes()
        self.input_name = self.session.get_inputs()[0].name
        self.card: dict = self._read_card()
        classes = self.card.get("classes", list(EXPRESSIONS))
        if not isinstance(classes, list) or tuple(classes) != EXPRESSIONS:
            raise FervidError(f"{self.path}: model classes {classes} differ from fervid's {EXPRESSIONS}")
        try:
            self.flip_tta: bool = card_flip_tta(self.card)
            self.input_blur: float = card_input_blur(self.card)
            self.temperature: float = card_temperature(self.card)
        except FervidError as error:
            raise FervidError(f"{self.path}: {error}") from None
        self.name: str = str(self.card.get("name", self.path.stem))
        self.version: str = str(self.card.get("version", "unknown"))
        self._check_probabilities()

    def _read_card(self) -> dict:
        """The model card in the ONNX metadata (empty for a model exported elsewhere), as a JSON object."""
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in metadata:
            return {}
        return parse_card(metadata[METADATA_KEY], f"{self.path}: its model card (ONNX metadata '{METADATA_KEY}')")

    def _check_probabilities(self) -> None:
        """Refuse a net that ends in logits, not a softmax: its "confidences" (4.8, -1.2) would be
        printed, averaged and tempered as probabilities without an error. One face is run for that,
        which also refuses a net whose named dimensions hid a layout fervid cannot feed."""
        try:  # named dimensions pass _check_shapes; a channels-first net, say, fails only when it runs
            rows = np.asarray(self._run(np.full((1, FACE_SIZE, FACE_SIZE, 1), 0.5, np.float32)))
        except Exception as error:  # ONNX Runtime's own exception types
            raise FervidError(f"{self.path}: not a fervid expression model (one [1, {FACE_SIZE}, {FACE_SIZE}, 1] face failed to run: "
                              f"{str(error).splitlines()[0]})") from None
        if rows.shape != (1, len(EXPRESSIONS)):  # a width known only when it runs passes _check_shapes
            raise FervidError(f"{self.path}: not a fervid expression model (one face gave outputs of shape {list(rows.shape)}; "
                              f"expected one row of {len(EXPRESSIONS)} probabilities)")
        row = rows[0]
        if not np.isfinite(row).all():  # NaN passed the comparisons below: every face was then "angry"
            raise FervidError(f"{self.path}: gives NaN or infinite outputs for a plain gray face (trained weights "
                              "that diverged?)")
        if row.min() < -1e-4 or abs(float(row.sum()) - 1.0) > 1e-3:
            raise FervidError(f"{self.path}: its outputs are not probabilities (one face's sum to {float(row.sum()):.3g}); "
                              "fervid expects the net to end in a softmax")

    def _check_shapes(self) -> None:
        """Refuse an ONNX model that is not a face classifier now, in one line, not with ONNX Runtime's error at the first face.

        Symbolic dimensions (a named batch) pass; only fixed sizes that differ from fervid's are refused.
        """
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) != 1:  # none, several, or a scalar: IndexErrors below
            given = ", ".join(f"{tensor.type} {tensor.shape}" for tensor in inputs) or "none"
            raise FervidError(f"{self.path}: not a fervid expression model (inputs: {given}; {len(outputs)} output(s); expected "
                              f"one float [batch, {FACE_SIZE}, {FACE_SIZE}, 1] input and one output of {len(EXPRESSIONS)} probabilities)")
        faces = [dim if isinstance(dim, int) else None for dim in inputs[0].shape]
        classes = outputs[0].shape[-1] if outputs[0].shape else None
        if isinstance(inputs[0].shape[0], int):  # a fixed batch fails at the first 2 faces (or flip)
            raise FervidError(f"{self.path}: its batch size is fixed to {inputs[0].shape[0]}; export it with a dynamic batch "
                              "(fervid export does)")
        wrong_input = faces[1:] not in ([FACE_SIZE, FACE_SIZE, 1], [None, None, None])
        wrong_input = wrong_input or inputs[0].type != "tensor(float)"
        wrong_output = isinstance(classes, int) and classes != len(EXPRESSIONS)
        if wrong_input or wrong_output:
            raise FervidError(
                f"{self.path}: not a fervid expression model (input {inputs[0].type} {inputs[0].shape}, "
                f"{len(outputs)} output(s), the first {outputs[0].shape}; expected float [batch, {FACE_SIZE}, {FACE_SIZE}, 1] "
                f"faces in, one output of {len(EXPRESSIONS)} probabilities)"
            )

    def predict_inputs(
        self, inputs: np.ndarray, *, flip_tta: bool | None = None, input_blur: float | None = None, temperature: float | None = None
    ) -> np.ndarray:
        """Probabilities (N, 7) for model inputs (N, 48, 48, 1) float32 in 0..1.

        ``flip_tta``, ``input_blur`` and ``temperature`` default to the model card's; pass them to
        override. The temperature applies after flip averaging, so it never changes the winning class.
        """
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        if len(inputs) == 0:
            return np.zeros((0, len(EXPRESSIONS)), dtype=np.float32)
        inputs = smooth(inputs, self.input_blur if input_blur is None else input_blur)
        use_flip = self.flip_tta if flip_tta is None else flip_tta
        probabilities = average_with_mirror(self._run, inputs) if use_flip else self._run(inputs)
        return temper(probabilities, self.temperature if temperature is None else temperature)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def classify(self, faces: Sequence[np.ndarray] | np.ndarray, *, flip_tta: bool | None = None) -> np.ndarray:
        """Probabilities (N, 7) for face crops of any size and colour, in one batched call.

        ``faces`` is a list of crops, a stacked batch (N, H, W) or (N, H, W, C), or one crop
        (H, W) or (H, W, C) with 1, 3 or 4 channels, which gives one row (see ``face_crops``).
        """
        crops = face_crops(faces)
        prepared = np.stack([prepared_crop(number, crop) for number, crop in enumerate(crops)]) if crops else np.zeros((0, FACE_SIZE, FACE_SIZE), np.uint8)
        return self.predict_inputs(to_model_input(prepared), flip_tta=flip_tta)


def face_crops(faces: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """The crops in what ``classify`` was given, a single crop counted as one face, not as rows of pixels.

    A 3-D array whose last axis holds 1, 3 or 4 values is one crop with channels (what slicing an
    OpenCV frame gives), not a stack of faces 1, 3 or 4 pixels wide; any other 3-D or 4-D array is a
    stack. Iterating a single crop instead would classify each of its rows as a face.
    """
    if not isinstance(faces, np.ndarray):
        return [crop_array(number, face) for number, face in enumerate(faces)]
    if faces.ndim == 2 or (faces.ndim == 3 and faces.shape[2] in (1, 3, 4)):
        return [faces]
    if faces.ndim == 3 and faces.shape[2] == 2:  # gray + alpha, refused by predict too; never 48 faces 2 px wide
        raise FervidError(f"cannot read a crop of shape {faces.shape}: 2 channels (gray + alpha?); give (H, W) gray "
                          "or (H, W, C) with 1, 3 or 4 channels")
    if faces.ndim in (3, 4):
        return list(faces)
    raise FervidError(f"expected face crops (a list of (H, W) or (H, W, C) arrays), got an array of shape {faces.shape}")


def crop_array(number: int, face: object) -> np.ndarray:
    """One crop of a list as an array; nested lists of unequal lengths are a one-line error naming it."""
    try:
        return np.asarray(face)
    except ValueError:
        raise FervidError(f"face {number}: expected a crop (H, W) or (H, W, C), got nested lists of unequal lengths") from None


def prepared_crop(number: int, crop: np.ndarray) -> np.ndarray:
    """``prepare_face`` of one crop; a crop that is not an image is a one-line error naming it (face 0 is the first)."""
    if crop.ndim not in (2, 3):
        raise FervidError(f"face {number}: expected a crop (H, W) or (H, W, C), got shape {crop.shape}")
    try:
        return prepare_face(crop)
    except FervidError as error:
        raise FervidError(f"face {number}: {error}") from None
