"""One training run end to end: fit, export ONNX, evaluate the exported model, write the run folder."""

from __future__ import annotations

import datetime
import json
import math
import platform
import tempfile
from dataclasses import asdict
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from fervid.bundled import available_bundled_models
from fervid.console import warn
from fervid.evaluation.evaluate import card_metrics, keras_predictor, load_predictor, predict
from fervid.evaluation.metrics import ClassificationReport
from fervid.evaluation.plots import plot_confusion, plot_history
from fervid.evaluation.temperature import HIGHEST, LOWEST, choose_temperature
from fervid.export.onnx import export_onnx, float32_twin
from fervid.fileio import atomic_path, write_text_atomically
from fervid.labels import EXPRESSIONS
from fervid.model.architectures import ARCHITECTURES
from fervid.model.backend import keras
from fervid.preprocess import FACE_SIZE
from fervid.training.config import TrainConfig
from fervid.training.dataset import TrainingData
from fervid.training.fit import fit
from fervid.training.lock import RunLock
from fervid.training.matched_blur import augmentation_blur, choose_input_blur, view_blur


def library_versions() -> dict[str, str]:
    """Versions of the libraries a run's numbers depend on, for its model card (absent ones left out)."""
    found = {}
    for package in ("fervid", "keras", "tensorflow-cpu", "tensorflow", "onnxruntime", "tf2onnx", "numpy", "opencv-python"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


CARD_PATHS = ("data", "teacher", "init_from")  # the config's paths, absolute in config.json


def card_paths(training: dict) -> dict:
    """The run's config for its card, its paths relative to the folder the card is written from
    (``../shared/data/fer2013.zip``, ``tools/teachers/x.onnx`` from a checkout): the card ships
    inside the package and is shown by ``/api/model``, and absolute paths told where the trainer
    kept their data (``/home/me/...``); each shipped card had to be rewritten by hand. config.json
    keeps them whole."""
    import os

    def shown(value: object) -> object:
        if isinstance(value, list):
            return [shown(item) for item in value]
        if isinstance(value, str) and os.path.isabs(value):
            try:
                return os.path.relpath(value)
            except (ValueError, OSError):  # another drive (Windows), or a working folder since removed
                return Path(value).name
        return value

    return {key: shown(value) if key in CARD_PATHS else value for key, value in training.items()}


def model_card(
    config: TrainConfig, data: TrainingData, state: dict, parameters: int, metrics: dict, name: str, *,
    input_blur: float = 0.0, temperature: float = 1.0,
) -> dict:
    """The model's contract and provenance; embedded in the ONNX metadata and saved as model.json.

    ``inference`` tells the runtime how to run the model: average each face with its mirror image
    (unless it was trained without flipped faces),
    blur faces as much as the recipe's augmentation blurred its training faces, and report
    probabilities at the temperature that calibrates them.
    """
    return {
        "name": name,
        "version": datetime.date.today().isoformat(),
        "classes": list(EXPRESSIONS),
        "input": {
            "shape": [None, FACE_SIZE, FACE_SIZE, 1],
            "dtype": "float32",
            "color": "grayscale",
            "scale": "pixel / 255 (0..1)",
            "preprocessing": "fervid.preprocess.prepare_face then to_model_input",
        },
        # a net trained without mirrored faces is not run on them
        "inference": {"flip_tta": bool(config.flip), "input_blur": input_blur, "temperature": temperature},
        "architecture": config.arch,
        "architecture_description": ARCHITECTURES[config.arch].description,
        "parameters": parameters,
        "dataset": {
            "path": Path(config.data).name,
            "fingerprint": data.fingerprint,
            "counts": data.counts,
            "train_images": len(data.train),
            "validation_images": len(data.validation),
            "validation_source": data.validation_source,
            "notes": data.notes,
        },
        "training": {**card_paths(asdict(config)), "precision_used": state.get("precision"),
                     "keras_backend": state.get("keras_backend", keras.backend.backend())},
        "epochs_trained": state["epochs_done"],
        "best_epoch": state["best_epoch"],
        "metrics": metrics,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "libraries": library_versions(),
    }


def blur_line(blur: float, check: dict) -> str:
    """The report's line on the input blur: "0.0 px, applied by the runtime (...: not applied)" read
    as both at once when the measured blur lost to sharp faces."""
    if blur > 0:
        return f"- input blur {blur} px, applied by the runtime and in every score here ({blur_reason(check)})"
    return f"- no input blur: the runtime and every score here use the faces as they are ({blur_reason(check)})"


def blur_reason(check: dict) -> str:
    """Why the card's input blur is what it is, in words for the report."""
    if check["measured"] <= 0:
        return "the recipe has no warps that blur training faces"
    sharp, blurred = check["accuracy_flip_tta_sharp"], check["accuracy_flip_tta_blurred"]
    verdict = "kept" if blurred >= sharp else "not applied"
    return (f"the training warps blur faces like a Gaussian of sigma {check['measured']}; validation accuracy with it "
            f"{blurred:.4f}, without {sharp:.4f}: {verdict}")


def distillation_line(training: dict) -> list[str]:
    """The report's line on distillation, if the run had teachers."""
    teachers = training.get("teacher") or []
    if not teachers:
        return []
    share = training["distill"]
    views = training.get("teacher_views", 0)
    scored = f" on {views} fixed augmented views of each face" if views else ""
    return [f"- distilled from {', '.join(f'`{t}`' for t in teachers)}: targets {1 - share:g} label + {share:g} teachers' "
            f"probabilities{scored}"]


def provenance_lines(training: dict) -> list[str]:
    """The report's lines on what changes the model besides the recipe: the weights it started from
    (``--init-from``) and the class folders read as other classes (``--map``)."""
    lines = []
    if start := training.get("init_from"):
        lines.append(f"- started from `{start}` (`--init-from`), not from random weights")
    if mapping := training.get("mapping"):
        lines.append(f"- classes mapped (`--map`): {', '.join(f'`{old}` as {new}' for old, new in mapping.items())}")
    return lines


def averaging_line(training: dict) -> list[str]:
    """The report's line on weight averaging, if the run kept an average (``--ema``)."""
    decay = training.get("ema", 0)
    if not decay:
        return []
    return [f"- weights: the moving average over about {1 / (1 - decay):,.0f} steps (`--ema {decay:g}`), with BatchNorm "
            "statistics re-estimated for it, validated and exported; the curves' validation is the average's, their "
            "training accuracy the trained weights'"]


def temperature_reason(check: dict) -> str:
    """Why the card has its temperature: the fit on validation and the calibration error it left."""
    fitted = f"fitted on validation by log-likelihood: {check['temperature']}"
    errors = f"calibration error {check['ece_flip_tta_at_1']:.4f} at temperature 1, {check['ece_flip_tta_fitted']:.4f} at {check['temperature']}"
    limit = min(abs(check["temperature"] - LOWEST), abs(check["temperature"] - HIGHEST)) < 0.01
    at_limit = f"; at the search's limit ({LOWEST:g}-{HIGHEST:g}): the fit did not settle, the validation faces too few or the model broken" if limit else ""
    return f"{fitted}, {errors}" + ("" if check["kept"] else "; not kept, as it did not lower the error") + at_limit


def _duration(metrics: dict) -> str:
    """Minutes, or seconds for a run under one ("0.0 min" said nothing)."""
    seconds = metrics.get("training_seconds")
    return f"{seconds:.0f} s" if seconds is not None and seconds < 60 else f"{metrics['training_minutes']:.1f} min"


ONE_CLASS_SHARE = 0.9  # of the validation faces given one class, from which a model is said to have learned nothing


def one_class_warning(report: ClassificationReport) -> str | None:
    """A plain warning when the model gives (nearly) every validation face one class: a run at chance
    (too few epochs, too high a --lr) read as a model, its report saying only that the temperature
    fit "did not settle"."""
    given = report.confusion.sum(axis=0)
    if given.sum() == 0 or (report.support > 0).sum() < 2:
        return None
    top = int(given.argmax())
    share = given[top] / given.sum()
    if share < ONE_CLASS_SHARE:
        return None
    return (f"the model gives {share:.0%} of the validation faces one class ({EXPRESSIONS[top]}): it has not learned to tell "
            "the expressions apart (train for more epochs or with a lower --lr, or check the data)")


def write_report(run: Path, card: dict, report_table: str, tta_table: str, calibration_table: str,
                 warning: str | None = None) -> None:
    """The run folder's report.md: the card's metrics, the per-class and calibration tables, how to use
    the model. The calibration is of the views the runtime uses (single views for a --no-flip net)."""
    metrics = card["metrics"]
    flip = card["inference"]["flip_tta"]
    views, ece = ("flip averaging", metrics["ece_flip_tta"]) if flip else ("single view, as the runtime runs it", metrics["ece"])
    lines = [
        f"# Training report: {card['name']}",
        "",
        *([f"**Warning**: {warning}.", ""] if warning else []),
        f"- architecture: `{card['architecture']}` ({card['parameters']:,} parameters), precision {card['training']['precision_used']}",
        f"- data: `{card['dataset']['path']}` (fingerprint {card['dataset']['fingerprint']}), "
        f"{card['dataset']['train_images']:,} train / {card['dataset']['validation_images']:,} validation ({card['dataset']['validation_source']})",
        *(f"- data note: {note}" for note in card["dataset"].get("notes", [])),
        *provenance_lines(card["training"]),
        *distillation_line(card["training"]),
        *averaging_line(card["training"]),
        f"- epochs: {card['epochs_trained']} trained, best validation epoch {card['best_epoch']}",
        f"- validation accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} (single view)",
        f"- with horizontal-flip averaging ({'the runtime default' if card['inference']['flip_tta'] else 'off in the runtime: trained with --no-flip'}): accuracy {metrics['accuracy_flip_tta']:.4f}, macro-F1 {metrics['macro_f1_flip_tta']:.4f}",
        blur_line(card["inference"]["input_blur"], metrics["input_blur_check"]),
        f"- confidence temperature {card['inference']['temperature']}, applied by the runtime ({temperature_reason(metrics['temperature_check'])})",
        f"- training time {_duration(metrics)}",
        "",
        "## Per class (validation, single view)",
        "",
        report_table,
        "",
        "## Per class (validation, flip averaging)",
        "",
        tta_table,
        "",
        f"## Calibration (validation, {views})",
        "",
        f"Expected calibration error {ece:.4f} (10 bins): the face-weighted gap between "
        "the confidence (top probability) and the accuracy of the faces given it.",
        "",
        calibration_table,
        "",
        "![training curves](curves.png)",
        "",
        "The curves' validation accuracy is as training selects the best epoch (sharp faces, one view, the training precision); "
        f"the scores above are as the runtime runs the model (input blur, {'flip averaging' if flip else 'single views'}).",
        "",
        "![confusion matrix](confusion.png)",
        "",
    ]
    write_text_atomically(run / "report.md", "\n".join(lines))


def onnx_export_available() -> bool:
    """Keras exports ONNX on the TensorFlow and torch backends; JAX needs the extra package jax2onnx.

    Training on a GPU machine with only JAX is still worth it: the run folder's best weights are
    finished into ONNX later by ``--resume`` on a backend that exports.
    """
    backend = keras.backend.backend()
    return backend in ("tensorflow", "torch") or find_spec("jax2onnx") is not None


def model_name(config: TrainConfig, run: Path) -> str:
    """The name the card gives the model: ``--name``, else the run folder's (not fervid-<arch>: a
    user's run would pass for a bundled model)."""
    return config.name or run.resolve().name


def warn_if_bundled_name(name: str) -> None:
    """A run named like a bundled model (by ``--name`` or its folder) is said to be, before it trains:
    its card's name is what ``analyze``'s ``model_name`` and ``/api/health`` show, so its outputs
    would read as the bundled model's. Not refused: a run meant to replace that model is named so."""
    if name in available_bundled_models():
        warn(f"the model will be named {name}, as the bundled model is: its outputs (analyze's model_name, "
             "the API's model) will read as the bundled model's; give --name (or another --out) unless it is to replace it")


def train(config: TrainConfig, run: Path, *, resume: bool = False) -> dict:
    """Train, export and evaluate; returns the model card (also written to ``run/model.json``).
    A ``~`` at the start of ``run`` is the home folder, as its checks read it: every file of the run
    goes there, not some into ``./~``."""
    run = Path(run).expanduser()
    warn_if_bundled_name(model_name(config, run))
    with RunLock(run) as lock:  # held until the last file of the run is written
        return _train(config, run, resume, lock)


def _train(config: TrainConfig, run: Path, resume: bool, lock: RunLock) -> dict:
    """``train`` under the run's lock: fit, then the model, card, metrics, plots and report."""
    classifier, data, state = fit(config, run, resume=resume, lock=lock)
    deployable = float32_twin(classifier, config.arch)
    with atomic_path(run / "model.keras") as temporary:
        deployable.save(str(temporary))
    name = model_name(config, run)
    exports = onnx_export_available()
    with tempfile.TemporaryDirectory() as scratch:  # the provisional export is scored there, never left as run/model.onnx
        card, single, flipped = _scored_card(config, run, data, state, deployable, name, exports, Path(scratch))
    runtime = flipped if config.flip else single  # the views the runtime uses: single ones for a --no-flip net
    if exports:
        export_onnx(deployable, run / "model.onnx", card)
    write_text_atomically(run / "model.json", json.dumps(card, indent=2) + "\n")
    measured = {"split_source": card["dataset"]["validation_source"], "images": card["dataset"]["validation_images"],
                "input_blur": card["inference"]["input_blur"], "temperature": card["inference"]["temperature"],
                "flip_tta": card["inference"]["flip_tta"]}  # what the scores were measured on and how, as evaluate --json says
    write_text_atomically(run / "metrics.json", json.dumps({"measured": measured, "single": single.to_dict(),
                                                            "flip_tta": flipped.to_dict()}, indent=2) + "\n")
    plot_history(state["history"], run / "curves.png")
    plot_confusion(runtime.normalized_confusion, run / "confusion.png",
                   f"{name}: validation ({'flip averaging' if config.flip else 'single view'})")
    assert runtime.calibration is not None  # card_metrics's reports come from evaluate, which sets it
    warning = one_class_warning(runtime)
    if warning:
        warn(warning)
    write_report(run, card, single.table(), flipped.table(), runtime.calibration.table(), warning)
    return card


def _scored_card(config: TrainConfig, run: Path, data: TrainingData, state: dict, deployable: keras.Model, name: str,
                 exports: bool, scratch: Path) -> tuple[dict, ClassificationReport, ClassificationReport]:
    """The model card with its validation scores, the input blur and the temperature chosen, and the
    single-view and flip-averaged reports; the model is scored as exported (ONNX in ``scratch``)
    where the backend exports, else through Keras."""
    if exports:
        provisional = scratch / "model.onnx"
        export_onnx(deployable, provisional, model_card(config, data, state, deployable.count_params(), {}, name))
        predictor_for = partial(load_predictor, provisional)
    else:
        print(
            f"no ONNX export on the {keras.backend.backend()} backend: scored the Keras model; finish with "
            f"`fervid train --resume --out {run}` on the TensorFlow or torch backend",
            flush=True,
        )
        predictor_for = partial(keras_predictor, deployable)
    inputs, labels = data.validation.inputs(), data.validation.labels
    if config.teacher_views:
        measured = view_blur(config.view_recipe(), data.train.inputs())
    else:
        measured = augmentation_blur(config.rotation, config.zoom, config.shift, data.train.inputs(), seed=config.seed, warp=config.warp)
    # Blur and temperature are chosen on the views the runtime will use: one for a --no-flip net.
    input_blur, check = choose_input_blur(predictor_for, inputs, labels, measured, flip_tta=config.flip)
    untempered = predict(predictor_for(input_blur=input_blur, temperature=1.0), inputs, flip_tta=config.flip)
    temperature, temperature_check = choose_temperature(untempered, labels)
    temperature_check["flip_tta"] = config.flip
    scored, single, flipped = card_metrics(predictor_for(input_blur=input_blur, temperature=temperature), inputs, labels,
                                           data.validation_source, flip_tta=config.flip)
    metrics = {
        **scored,
        "input_blur_check": check,
        "temperature_check": temperature_check,
        "training_minutes": round(sum(row["seconds"] for row in state["history"] if math.isfinite(row["seconds"])) / 60, 1),
        "training_seconds": round(sum(row["seconds"] for row in state["history"] if math.isfinite(row["seconds"])), 1),
    }
    card = model_card(config, data, state, deployable.count_params(), metrics, name, input_blur=input_blur, temperature=temperature)
    return card, single, flipped


def describe_run(card: dict, run: Path) -> list[str]:
    """What ``fervid train`` prints at the end: the validation scores and the files to use."""
    metrics = card["metrics"]
    model_file = "model.onnx" if (run / "model.onnx").exists() else "model.keras"  # no ONNX export on JAX or PyTorch
    dataset = card.get("dataset", {})
    faces = f" on {dataset['validation_images']:,} faces ({dataset['validation_source']})" if "validation_images" in dataset else ""
    # Headed by the scores `fervid evaluate` gives, as the runtime runs the model (flip averaging when it
    # applies it): the single-view macro-F1 came first, and differed from what evaluate printed.
    if card.get("inference", {}).get("flip_tta", True):
        scores = (f"validation accuracy {metrics['accuracy_flip_tta']:.4f}, macro-F1 {metrics['macro_f1_flip_tta']:.4f} with flip "
                  f"averaging, as the runtime runs it (single view {metrics['accuracy']:.4f}, {metrics['macro_f1']:.4f})")
    else:
        scores = f"validation accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"
    return [f"{scores}{faces}; "
            f"wrote {run}/{model_file} and {run}/report.md (and model.json, metrics.json, history.csv, curves.png, "
            "confusion.png)"]

