"""The ``fervid`` command: argument parsing only; every command calls an importable library function."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fervid.console import one_line, sane_columns
from fervid.errors import FervidError, Interrupted, WriteFailedInLibrary, install_hint
from fervid.fileio import check_not_an_input, check_outside_dataset, check_writable, leave_closed_terminal, real_path, stopping_signals
from fervid.pixel_limit import pixel_limit
from fervid.model.specs import ARCHITECTURES, MODEL_BACKENDS

if TYPE_CHECKING:  # imported inside the commands: `fervid --help` must not load OpenCV or Keras
    from fervid.runtime.recognizer import Recognizer
    from fervid.serve.pool import DetectorSettings
    from fervid.training.config import TrainConfig

app = typer.Typer(
    help="Real-time facial expression recognition: train, evaluate, export and run expression models.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Look at labelled face datasets (folders, zips, FER2013 CSV).", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _hide_flag_types() -> None:
    """Typer 0.29's help gives every option a type column, flags included (``--no-save <bool>``), which
    reads as if the flag took a value; flags get an empty one. Left as it is where Typer's internals differ."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "hides_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich.hides_flags = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich  # type: ignore[union-attr]


_hide_flag_types()
sane_columns()  # before any rich console is made: this one, and typer's for help and errors
out = Console(soft_wrap=True, markup=False)  # paths and names are printed as they are, brackets and all


def _version(value: bool) -> None:
    if value:
        from fervid import __version__

        print(f"fervid {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """fervid: faces boxed with their expression, live; and the CNN behind it, trained from scratch."""


def _finite(value: float | None) -> float | None:
    """Refuse nan and inf in float options: they pass every range check (nan < 0 is False) and break later."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


# Fitted temperatures lie in 0.25-4; far above 100 the tempered probabilities of a face round to
# the same float32 number, and accuracy drops as ties are broken by class order.
MAX_TEMPERATURE = 100.0
MAX_INPUT_BLUR = 10.0  # fervid.preprocess.MAX_INPUT_BLUR (not imported: it loads NumPy and OpenCV)


def _finite_at_least(minimum: float, maximum: float = math.inf):
    """``_finite``, then bounds: typer's own ``min=`` runs first and calls nan "not >= 0"."""

    def check(value: float | None) -> float | None:
        value = _finite(value)
        if value is not None and value < minimum:
            raise typer.BadParameter(f"{value:g} is below the smallest allowed, {minimum:g}")
        if value is not None and value > maximum:
            raise typer.BadParameter(f"{value:g} is above the largest allowed, {maximum:g}")
        return value

    return check


UnknownOption = Annotated[str, typer.Option("--unknown", help="Folders that are not expression classes: 'error' or 'drop'.")]
MapOption = Annotated[Optional[list[str]], typer.Option("--map", help="Map a folder to a class, e.g. --map contempt=disgust (repeatable).")]


def _needs(extra: str, module: str) -> None:
    """Turn a missing optional dependency into one line that says which extra to install."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise FervidError(f"this command needs the '{extra}' extra: {install_hint(extra)}")


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Path, typer.Argument(metavar="DATA", help="Dataset: a folder, a .zip or a FER2013 .csv.")],
    grid: Annotated[Optional[Path], typer.Option(help="Where to write the sample grid PNG (default: <name>-samples.png).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List unreadable files and duplicate groups.")] = False,
    unknown: UnknownOption = "error",
    map: MapOption = None,
) -> None:
    """Counts per class and split, imbalance, unreadable files, exact duplicates, and a grid of sample faces.

    Needs the 'data' extra (README, Install options).

    Example: fervid data inspect fer2013.zip
    """
    _needs("data", "pandas")
    from fervid.data import read_dataset
    from fervid.data.inspect import check_grid_path, sample_grid, summarize
    from fervid.labels import parse_mapping

    # `data inspect .` names the grid after the folder; ~ expanded as its check reads it (--grid=~/g.png)
    target = grid.expanduser() if grid else Path(f"{path.resolve().stem or 'dataset'}-samples.png")
    check_grid_path(target)  # before reading the data
    check_outside_dataset(target, path, "--grid")
    index = read_dataset(path, unknown=unknown, mapping=parse_mapping(map))  # type: ignore[arg-type]
    summary, arrays = summarize(index)
    if len(arrays) == 0:  # a table of zeros would only hide the reason
        raise FervidError(f"{path}: none of the {len(index.frame)} images could be read; {arrays.common_failure()}")
    sample_grid(arrays, target)  # first: a reader that stops early (`| head`) must not cost the user the grid
    table = Table(title=f"{path} ({index.kind})")
    table.add_column("class")
    for split in summary.counts.columns:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for label, row in summary.counts.iterrows():
        table.add_row(str(label), *(f"{int(v):,}" for v in row), f"{int(row.sum()):,}")
    totals = summary.counts.sum()
    table.add_row(*(Text(cell, style="bold") for cell in ("total", *(f"{int(v):,}" for v in totals), f"{int(totals.sum()):,}")))
    # at its own width however narrow the terminal: at 40 columns rich cut the counts to "10,5…"
    width = out.width
    out.width = max(width, Measurement.get(out, out.options.update_width(1000), table).maximum)
    try:
        out.print(table)
    finally:
        out.width = width
    out.print("\n".join(summary.describe(verbose)), highlight=False)
    out.print(f"sample grid: {target}")


def _given(ctx: typer.Context) -> list[str]:
    """The parameters given on the command line (not left at their defaults), in declaration order."""
    return [name for name in ctx.params if ctx.get_parameter_source(name).name == "COMMANDLINE"]  # type: ignore[union-attr]


def _teacher_names(teachers: list[str] | None) -> list[str]:
    """Teacher files as absolute paths (the run may be resumed from elsewhere); bundled names as given,
    also where the current folder holds a file or folder of that name (as every command reads them:
    ``./fervid-vgg`` names that one), so the run learns from the teacher the name means."""
    from fervid.bundled import available_bundled_models  # not through ONNX Runtime: a GPU machine may lack it

    bundled = set(available_bundled_models())
    return [t if t in bundled else str(Path(t).resolve()) if Path(t).exists() else t for t in teachers or []]


def _init_from_name(init_from: Path | None) -> str | None:
    """--init-from as the run records it: a path made absolute, a bundled model's name as given."""
    return _teacher_names([str(init_from)])[0] if init_from is not None else None


def _refuse_missing_inputs(init_from: Path | None, teachers: list[str], out_dir: Path) -> None:
    """A new run's --init-from and teachers that are not there, said before TensorFlow
    loads and a model is built (which took a minute's wait for a typo). Only whether each is there:
    the files themselves are read later, and ONNX Runtime is not imported (a GPU machine may lack it).
    Teachers whose scores were copied into the run folder first need not be there (the GPU machine's
    way: the teachers' files do not travel); the run checks that cache against them."""
    from fervid.bundled import available_bundled_models

    bundled_names = set(available_bundled_models())
    if init_from is not None and str(init_from) not in bundled_names and not Path(init_from).expanduser().exists():
        raise FervidError(f"--init-from {init_from}: no such model file, run folder or bundled model name")
    cached = any((out_dir / "checkpoint" / name).is_file() for name in ("teacher.npz", "teacher-views.npz"))
    for teacher in [] if cached else teachers:
        if not (teacher in bundled_names or Path(teacher).expanduser().exists()):
            raise FervidError(f"--teacher {teacher}: no such model file, run folder or bundled model name")


def _refuse_changes_on_resume(ctx: typer.Context, config: TrainConfig, out_dir: Path) -> None:
    """A resumed run follows its config.json; an option given with --resume that would change it is
    refused rather than silently ignored. Its own values repeated (the first command with --resume
    added) are fine, and so is DATA: the run checks that the content is the one it trained on, so
    a moved or copied dataset resumes."""
    from fervid.labels import parse_mapping

    as_config: dict[str, tuple[str, Callable[[Any], object]]] = {
        "lr": ("learning_rate", float),
        "map": ("mapping", parse_mapping),
        "teacher": ("teacher", _teacher_names),
        "init_from": ("init_from", _init_from_name),
    }
    changed = []
    for name in _given(ctx):
        if name in {"out_dir", "resume", "name", "data"}:  # --name may rename the model on resume
            continue
        field, convert = as_config.get(name, (name, lambda value: value))
        if convert(ctx.params[name]) != getattr(config, field):
            off = ctx.params[name] is False  # a --x/--no-x flag given as --no-x is named so
            changed.append(("--no-" if off else "--") + name.replace("_", "-"))
    if changed:
        raise FervidError(
            f"--resume continues {out_dir} as its config.json says, so {', '.join(changed)} cannot change it; to train "
            f"on with other settings start a new run from it: fervid train DATA --init-from {out_dir} --out NEW"
        )


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Argument(metavar="DATA", help="Dataset (folder, .zip or FER2013 .csv); optional with --resume.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "--output", "-o", help="Run folder for checkpoints, model and report.")] = Path("runs/train"),
    arch: Annotated[str, typer.Option(help=f"Architecture: {', '.join(ARCHITECTURES)}.")] = "vgg",
    epochs: Annotated[int, typer.Option(help="Epochs (the schedule's length).")] = 50,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option("--lr", callback=_finite, help="Peak learning rate (AdamW).")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(callback=_finite, help="AdamW weight decay (Keras scales it by the learning rate: 5e-4 is very weak, 0.01-0.05 is the usual range).")] = 5e-4,
    warmup_epochs: Annotated[int, typer.Option(help="Linear warm-up epochs before cosine decay (or the constant rate).")] = 3,
    schedule: Annotated[str, typer.Option(help="cosine (warm-up + cosine decay), plateau (halve on a plateau) or constant (warm-up, then --lr to the end: with --ema and --init-from, stochastic weight averaging).")] = "cosine",
    label_smoothing: Annotated[float, typer.Option(callback=_finite, help="Label smoothing of the cross-entropy.")] = 0.1,
    imbalance: Annotated[str, typer.Option(help="Class imbalance: none, weights (balanced class weights) or sampling (balanced batches).")] = "none",
    rotation: Annotated[float, typer.Option(callback=_finite, help="Random rotation, fraction of a full turn.")] = 0.05,
    zoom: Annotated[float, typer.Option(callback=_finite, help="Random zoom, fraction of the size.")] = 0.1,
    shift: Annotated[float, typer.Option(callback=_finite, help="Random shift, fraction of the size.")] = 0.1,
    warp: Annotated[str, typer.Option(help="each: rotation, zoom and shift resample the face one after another (3 resamples); once: one composed warp (1 resample, sharper faces).")] = "each",
    flip: Annotated[bool, typer.Option(help="Random horizontal flip.")] = True,
    brightness: Annotated[float, typer.Option(callback=_finite, help="Random brightness change (0 = off).")] = 0.0,
    contrast: Annotated[float, typer.Option(callback=_finite, help="Random contrast change (0 = off).")] = 0.0,
    erasing: Annotated[float, typer.Option(callback=_finite, help="Chance of erasing a random rectangle of each face (0 = off).")] = 0.0,
    val_fraction: Annotated[float, typer.Option(callback=_finite, help="Held-out validation fraction when the data has no validation split.")] = 0.1,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation accuracy (0 = never).")] = 0,
    ema: Annotated[float, typer.Option(callback=_finite, help="Keep a moving average of the weights with this decay per training step and validate, checkpoint and export it instead (0 = off; 0.999 averages about the last 1,000 steps, 2 FER2013 epochs at batch 64; the run needs several times that many steps).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    precision: Annotated[str, typer.Option(help="auto, float32 or mixed_bfloat16.")] = "auto",
    name: Annotated[Optional[str], typer.Option(help="Model name in the model card (default: the run folder's name).")] = None,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start from this trained model of the same --arch (.keras; a run folder: a finished run's model, a stopped run's best epoch so far; or a VGG's ONNX export or bundled name, such as fervid-vgg): fine-tuning, a second schedule or new settings.")] = None,
    teacher: Annotated[Optional[list[str]], typer.Option("--teacher", help="Distill from this trained model (.onnx, run folder or bundled name); repeat it to distill from the average of several.")] = None,
    distill: Annotated[float, typer.Option(callback=_finite, help="With --teacher: the teachers' share of each training target (the label keeps the rest).")] = 0.5,
    teacher_views: Annotated[int, typer.Option("--teacher-views", help="With --teacher: score the teachers on this many fixed augmented views of each face and train each view to its own target (0 = the clean faces).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last finished epoch.")] = False,
    unknown: UnknownOption = "error",
    map: MapOption = None,
) -> None:
    """Train a CNN from scratch, then export ONNX and write the report into the run folder.

    Needs the 'train' extra (README, Install options).

    Examples:
      fervid train fer2013.zip --out runs/vgg
      fervid train --resume --out runs/vgg
      fervid train my-faces/ --init-from runs/vgg --lr 2e-4 --out runs/vgg-mine
      fervid train fer2013.zip --teacher fervid-vgg --teacher runs/vgg --out runs/student
    """
    _needs("train", "keras")
    from fervid.labels import parse_mapping
    from fervid.training.config import TrainConfig, refuse_backend_without_fit

    if (backend := os.environ.get("KERAS_BACKEND", "").strip()) in MODEL_BACKENDS:  # before Keras loads (another: its own error)
        refuse_backend_without_fit(backend)

    out_dir = out_dir.expanduser()  # as its checks read it: --out=~/runs/x, which the shell leaves alone
    if resume and (out_dir / "config.json").exists():
        config = TrainConfig.load(out_dir / "config.json")
        _refuse_changes_on_resume(ctx, config, out_dir)
        config.name = name or config.name
        config.data = str(data.resolve()) if data else config.data
        if not Path(config.data).exists():
            raise FervidError(f"{config.data}: no longer there; if the dataset moved, give its new path: "
                              f"fervid train NEW_PATH --resume --out {out_dir}")
        out.print(f"resuming {out_dir} ({config.arch}, {config.epochs} epochs, data {config.data})")
    else:
        if resume:  # a mistyped --out would otherwise start a new run of the default recipe there
            start = "leave out --resume to start one there" if data else "give the dataset and leave out --resume to start one there"
            raise FervidError(f"{out_dir}: no run to resume (no config.json); {start}")
        if data is None:
            raise FervidError("give the dataset to train on (or --resume with an existing --out)")
        given = _given(ctx)  # options that would do nothing are refused, as config.validate refuses wrong ones
        if "distill" in given and not teacher:
            raise FervidError("--distill is the teachers' share of each target; give the teachers with --teacher")
        if teacher and distill == 0:  # a new run only: a run's config.json with it still resumes and exports
            raise FervidError("--distill 0 takes nothing from the teachers; leave out --teacher, or give a share above 0")
        if "warmup_epochs" in given and schedule == "plateau":
            raise FervidError("--warmup-epochs belongs to --schedule cosine or constant; plateau starts at --lr and halves it on plateaus")
        config = TrainConfig(
            data=str(data.resolve()), arch=arch, epochs=epochs, batch_size=batch_size, learning_rate=lr,
            weight_decay=weight_decay, warmup_epochs=warmup_epochs, schedule=schedule, label_smoothing=label_smoothing,
            imbalance=imbalance, flip=flip, rotation=rotation, zoom=zoom, shift=shift, warp=warp, brightness=brightness,
            contrast=contrast, erasing=erasing, val_fraction=val_fraction, patience=patience, ema=ema, seed=seed, precision=precision,
            unknown=unknown, mapping=parse_mapping(map), init_from=_init_from_name(init_from), name=name,
            teacher=_teacher_names(teacher), distill=distill,
            teacher_views=teacher_views,
        )
    config.validate()
    if not resume:  # after the options (each wrong one is said as such), before TensorFlow loads
        _refuse_missing_inputs(init_from, teacher or [], out_dir)
    from fervid.training.run import describe_run
    from fervid.training.run import train as run_training

    try:
        card = run_training(config, out_dir, resume=resume)
    except KeyboardInterrupt:
        if not (out_dir / "checkpoint" / "state.json").exists():
            raise
        raise Interrupted(f"{_epochs_kept(out_dir, config.epochs)}: fervid train --resume --out {out_dir}") from None
    out.print("\n".join(describe_run(card, out_dir)))


def _epochs_kept(run: Path, epochs: int) -> str:
    """What an interrupted run keeps, from its resume state: "1 of 3 epochs are kept (best: epoch 1,
    validation accuracy 0.1569)"; a researcher should not need to open state.json to know."""
    try:
        state = json.loads((run / "checkpoint" / "state.json").read_text())
        done, best, accuracy = int(state["epochs_done"]), int(state["best_epoch"]), float(state["best_val_accuracy"])
    except (OSError, ValueError, TypeError, KeyError):
        return "the finished epochs are kept"
    if not best:
        return f"{done} of {epochs} epochs are kept"
    return f"{done} of {epochs} epochs are kept (best: epoch {best}, validation accuracy {accuracy:.4f})"


@app.command()
def evaluate(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A .onnx or .keras model, a run folder, or a bundled model name.")],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Dataset (folder, .zip or FER2013 .csv).")],
    split: Annotated[str, typer.Option(help="Split to score: validation, test or train.")] = "validation",
    flip_tta: Annotated[Optional[bool], typer.Option("--flip-tta/--no-flip-tta", help="Average each face with its mirror image (default: as the model card says the runtime does).", show_default=False)] = None,
    input_blur: Annotated[Optional[float], typer.Option(callback=_finite_at_least(0.0, MAX_INPUT_BLUR), help="Gaussian blur (sigma, pixels) on faces before the model, 0-10 (default: the model card's, as the runtime does; 0 = sharp).")] = None,
    temperature: Annotated[Optional[float], typer.Option(callback=_finite_at_least(0.01, MAX_TEMPERATURE), help="Softmax temperature of the probabilities, 0.01-100 (default: the model card's, as the runtime does; 1 = the net's own).")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="<path>", help="Write the metrics as JSON here (a path ending in .json; '-': stdout, the report then on stderr).")] = None,
    confusion: Annotated[Optional[Path], typer.Option(help="Write the normalised confusion matrix PNG here.")] = None,
    predictions: Annotated[Optional[Path], typer.Option(help="Write one CSV row per face here (source, label, predicted, confidence, correct, probabilities), the wrong ones first.")] = None,
    against: Annotated[Optional[str], typer.Option(help="Compare with this model (.onnx or .keras, a run folder or a bundled model name) on the same faces (exact McNemar test).")] = None,
    unknown: Annotated[Optional[str], typer.Option("--unknown", help="Folders that are not expression classes: 'error' or 'drop' (default: the model's training setting, else error).", show_default=False)] = None,
    map: MapOption = None,
) -> None:
    """Accuracy, macro-F1, a per-class table and a confusion matrix of a model on a dataset split.

    Needs the 'data' extra (README, Install options); a .keras model needs the 'train' extra. Class folders
    with no split folders above them are the 'train' split (--split train scores them).

    Examples:
      fervid evaluate runs/vgg/model.onnx fer2013.zip --split validation --flip-tta
      fervid evaluate runs/new/model.onnx fer2013.zip --flip-tta --against fervid-vgg
      fervid evaluate fervid-vgg my-faces/ --split train --predictions faces.csv
    """
    _needs("data", "pandas")
    # '-' is stdout (`--json - | jq .accuracy`), './-' a file named '-' (as a Path both are Path('-'))
    json_to_stdout = json_out == "-"
    # ~ expanded as the checks read it, so each file goes where it was checked (--json=~/m.json)
    json_file = None if json_out in (None, "-") else Path(json_out).expanduser()
    confusion, predictions = (path.expanduser() if path else None for path in (confusion, predictions))
    if confusion:
        _needs("data", "matplotlib")
        if confusion.suffix.lower() != ".png":  # checked now, not after the scoring
            raise FervidError(f"--confusion {confusion}: the confusion matrix is a PNG; give a path ending in .png")
    from fervid.evaluation.evaluate import scored_model

    scored = {name: _model_file(scored_model(name)) for name in (model, against) if name}
    inputs = {"the dataset": data, **{f"the model {name}": path for name, path in scored.items()}}
    # a model's card is the .json of its own name, as given (a link's, not its target's): a .keras
    # model's, and an .onnx model's, which `fervid models` and people read (the bundled cards too)
    cards = {Path(path).expanduser().absolute().with_suffix(".json").resolve(): name for name, path in scored.items()
             if path and Path(path).suffix.lower() in (".keras", ".onnx")}
    if predictions is not None and predictions.suffix.lower() != ".csv":
        raise FervidError(f"--predictions {predictions}: the predictions are a CSV file; give a path ending in .csv")
    outputs = [(path, option) for path, option in ((json_file, "--json"), (confusion, "--confusion"), (predictions, "--predictions"))
               if path is not None]
    for (first, first_option), (second, second_option) in itertools.combinations(outputs, 2):
        # the second written would replace the first
        if real_path(first, f"{first_option} {first}") == real_path(second, f"{second_option} {second}"):
            raise FervidError(f"{first_option} and {second_option} are both {first}; give each output its own file")
    for path, option in outputs:  # now, not after the scoring
        check_writable(path, option)
        check_not_an_input(path, option, inputs)
        check_outside_dataset(path, data, option)
        if (card := cards.get(path.expanduser().resolve())) is not None:  # read as the model's card (x.keras -> x.json)
            raise FervidError(f"{option} {path}: is the model card of {card}, read with it; write it elsewhere")
    if json_file is not None and json_file.suffix.lower() != ".json":  # --json model.int8.onnx replaced a model
        raise FervidError(f"--json {json_out}: the metrics are JSON; give a path ending in .json ('-' for stdout)")

    if any(scored_model(name).endswith(".keras") for name in (model, against) if name):
        _needs("train", "keras")
    from fervid.evaluation.run import evaluate_model
    from fervid.fileio import signals_deferred, write_text_atomically
    from fervid.labels import parse_mapping

    result = evaluate_model(model, data, split=split, flip_tta=flip_tta, input_blur=input_blur, temperature=temperature,
                            against=against, unknown=unknown, mapping=parse_mapping(map))
    written = []  # files first: a reader that stops early (`| head`) must not cost the user a file
    with signals_deferred(raise_after=False) as caught:  # all from this run, not some new beside some old
        if json_file:
            write_text_atomically(json_file, json.dumps(result.to_dict(), indent=2) + "\n")
            written.append(f"metrics: {json_file}")
        if confusion:
            from fervid.evaluation.plots import plot_confusion

            plot_confusion(result.report.normalized_confusion, confusion, f"{Path(result.model).name} on {result.split}")
            written.append(f"confusion matrix: {confusion}")
        if predictions:
            result.write_predictions(predictions)
            written.append(f"predictions per face: {predictions}")
    report = "\n".join([*result.describe(), *written])
    if json_to_stdout:  # stdout holds the JSON alone, for a pipe
        print(report, file=sys.stderr)
        print(json.dumps(result.to_dict(), indent=2), flush=True)
    else:
        out.print(report, highlight=False)
    if caught:  # Ctrl+C while the files were written: they are whole, and the exit status says it was pressed
        raise typer.Exit(130)


@app.command()
def export(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="A .keras model or a finished run folder (its model.keras).")],
    output: Annotated[Optional[Path], typer.Option("--out", "--output", "-o", help="ONNX file to write (default: beside the model, as .onnx; with --int8, as .int8.onnx).")] = None,
    int8: Annotated[Optional[Path], typer.Option("--int8", help="Quantize to int8, calibrated on this dataset's train split and scored on its validation split (the data the model was trained on: the scores replace its card's).")] = None,
    unknown: Annotated[Optional[str], typer.Option("--unknown", help="With --int8: folders of the dataset that are not expression classes, 'error' or 'drop' (default: the model's training setting, else error).", show_default=False)] = None,
    map: MapOption = None,
) -> None:
    """Export a Keras model to ONNX (dynamic batch) and check ONNX Runtime agrees with Keras to 1e-4.

    Needs the 'train' extra (README, Install options).

    Examples:
      fervid export runs/vgg/model.keras --out vgg.onnx
      fervid export runs/vgg/model.keras --int8 fer2013.zip --out fervid-vgg.int8.onnx
    """
    _needs("train", "keras")
    from fervid.export.convert import export_checked
    from fervid.labels import parse_mapping

    result = export_checked(model, output, int8_data=int8, unknown=unknown, mapping=parse_mapping(map))
    out.print("\n".join(result.describe()))


# ---------------------------------------------------------------------------------------------
# Running: predict (photos), live (webcams, video files, streams), bench. Inference only: these
# commands import NumPy, OpenCV and ONNX Runtime, never TensorFlow.
# ---------------------------------------------------------------------------------------------

# FFmpeg inside OpenCV prints its own lines for broken videos ("moov atom not found"), and OpenCV its
# own "[ERROR] imread_(...): can't read header" for a damaged image; the CLI says what went wrong in
# one line of its own. Read when cv2 loads, so set before any command imports it.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")

def _model_file(model: str | None) -> Path | None:
    """The file a model argument names (bundled name, run folder, .onnx or .keras), None if it names none:
    an output must not replace it."""
    from fervid.runtime.classify import resolve_model

    if model is not None and Path(model).suffix.lower() == ".keras":
        return Path(model)
    try:
        return resolve_model(model)
    except FervidError:
        return None  # loading it says what is wrong


ModelOption = Annotated[Optional[str], typer.Option("--model", help="A .onnx file, a run folder or a bundled model name (`fervid models` lists them; default: fervid-vgg).")]
ScaleFactorOption = Annotated[float, typer.Option(callback=_finite, help="Haar cascade scale step between detection sizes (1.01-100; smaller finds more, slower).")]
MinNeighborsOption = Annotated[int, typer.Option(help="Haar cascade neighbours a face needs (0-1000; higher: fewer false faces).")]
MinSizeOption = Annotated[int, typer.Option(help="Smallest face side in pixels (1-1,000,000).")]
CropsOption = Annotated[bool, typer.Option("--crops", help="Inputs are already-cropped faces (e.g. 48x48 dataset images): no detector (so no detector options).")]


def _recognizer(model: Optional[str], scale_factor: float, min_neighbors: int, min_size: int) -> Recognizer:
    from fervid.runtime.recognizer import Recognizer

    return Recognizer(model, scale_factor=scale_factor, min_neighbors=min_neighbors, min_size=min_size)


@app.command()
def predict(
    images: Annotated[list[str], typer.Argument(metavar="PHOTOS", help="Image files and/or folders of images.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", "--output", "-o", help="Folder for the annotated images.")] = Path("runs/predict"),
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not write annotated images.")] = False,
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="<path>", help="Write the records here (.json: an array; else JSON Lines) instead of stdout ('-': stdout).")] = None,
    model: ModelOption = None,
    scale_factor: ScaleFactorOption = 1.1,
    min_neighbors: MinNeighborsOption = 5,
    min_size: MinSizeOption = 40,
    crops: CropsOption = False,
) -> None:
    """Find the faces in photos and their expressions: one JSON record per face, annotated copies in --out.

    Records go to stdout unless --json names a file.

    Examples:
      fervid predict photo.jpg
      fervid predict holiday/ --out runs/holiday --json faces.json
      fervid predict faces/ --crops --no-save      # already-cropped faces, e.g. a dataset's 48x48 images
    """
    from fervid.runtime.photos import predict_images

    # '-' is the usual spelling of stdout, where records go anyway; './-' is a file named '-' (read as
    # a Path, both would be Path('-'), so the text is compared before it becomes one).
    records_to = None if json_out in (None, "-") else Path(json_out)
    if records_to:
        check_not_an_input(records_to, "--json", {"the model": _model_file(model)})
    if crops:
        from fervid.runtime.detect import DetectorConfig

        DetectorConfig(scale_factor, min_neighbors, min_size).refuse_unused("--crops")
    recognizer = _recognizer(model, scale_factor, min_neighbors, min_size)
    on_record = None if records_to else (lambda record: print(json.dumps(record), flush=True))
    report = predict_images(
        images, recognizer, out_dir=None if no_save else out_dir, on_record=on_record, records_to=records_to, crops=crops,
        copies_in=out_dir,  # with --no-save too: an earlier run's copies there are not photos to recognise
    )
    print("\n".join(report.describe()), file=sys.stderr)
    if report.interrupted:
        raise typer.Exit(130)  # what was done is written; the exit status still says the run was cut short


@app.command()
def live(
    source: Annotated[str, typer.Option("--source", "-s", help="Webcam index (0), video file, image file or folder, or stream URL (rtsp://, http://).")] = "0",
    output: Annotated[Optional[Path], typer.Option("--output", "--out", "-o", help="Write the annotated video here (.mp4, .m4v or .mov).")] = None,
    jsonl: Annotated[Optional[Path], typer.Option("--jsonl", help="Per-frame timeline, one row per face (.jsonl or .csv).")] = None,
    summary: Annotated[Optional[Path], typer.Option(help="Per-face summary JSON (+ plot PNG beside it where matplotlib is installed: the 'data' extra) (default: beside --output/--jsonl for files and folders).")] = None,
    display: Annotated[Optional[bool], typer.Option("--display/--no-display", help="Show a window (q or Esc quits) (default: when a display exists).", show_default=False)] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Stop after this many frames.")] = None,
    detect_every: Annotated[int, typer.Option(help="Scan the whole frame for faces every K-th frame; in between, tracked faces are searched for only near where they were.")] = 10,
    model: ModelOption = None,
    scale_factor: ScaleFactorOption = 1.1,
    min_neighbors: MinNeighborsOption = 5,
    min_size: MinSizeOption = 40,
) -> None:
    """Live expressions on a webcam, a video file or a stream: boxes, labels, probability bars and FPS.

    In the window, q or Esc quits.

    Examples:
      fervid live                                   # webcam 0, in a window
      fervid live --source clip.mp4 --output out.mp4 --jsonl out.jsonl --no-display
      fervid live --source rtsp://camera.local/stream --max-frames 300 --no-display
    """
    from fervid.runtime.live import run_live

    recognizer = _recognizer(model, scale_factor, min_neighbors, min_size)
    report = run_live(
        source, recognizer, output=output, timeline=jsonl, summary=summary, display=display,
        max_frames=max_frames, detect_every=detect_every,
    )
    print("\n".join(report.describe()), file=sys.stderr)
    if report.interrupted:
        raise typer.Exit(130)  # the outputs are finished; the exit status still says the run was cut short


@app.command()
def models() -> None:
    """List the models shipped inside the package: name, size, validation accuracy as the runtime runs them.

    Example: fervid live --model NAME (a name from this list)
    """
    from fervid.runtime.classify import describe_bundled_models

    print("\n".join(describe_bundled_models()))


@app.command()
def bench(
    output: Annotated[Optional[Path], typer.Option("--output", "--out", "-o", help="Also write the results into this Markdown page (e.g. docs/performance.md): its 'Real-time pipeline' section (one per model) is replaced, or appended, and the rest of the page kept. Needs real faces (--faces-from).")] = None,
    model: ModelOption = None,
    faces_from: Annotated[Optional[Path], typer.Option(help="FER2013 zip to take real faces from (default: $FERVID_FER2013_ZIP); without one the printed table skips the end-to-end FPS rows and the near-search row and the detector times an empty frame.")] = None,
    frames: Annotated[int, typer.Option(help="Frames per end-to-end run (20 to 100,000; the first 10 are untimed).")] = 300,
) -> None:
    """Measure per-face classification latency, detector time and end-to-end FPS; print a Markdown table.

    Example: fervid bench --output docs/performance.md
    """
    from fervid.runtime.bench import run_bench

    with _table_kept():
        print(run_bench(model=model, output=output, faces_from=faces_from, frames=frames))


@contextmanager
def _table_kept() -> Iterator[None]:
    """A benchmark whose ``--output`` page could not be written at the end (made read-only or
    immutable meanwhile, a full disk) prints its measurements before the error, not only the error."""
    from fervid.markdown import SectionNotWritten

    try:
        yield
    except SectionNotWritten as error:
        print(error.table, end="")
        raise


# ---------------------------------------------------------------------------------------------
# Web: `fervid serve` (the 'serve' extra: FastAPI + uvicorn). The page, REST API and WebSocket are
# in fervid.serve; this only parses arguments.
# ---------------------------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on. The default serves this machine only; 0.0.0.0 opens it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port; the address is printed).")] = 8000,
    allow_origin: Annotated[Optional[list[str]], typer.Option("--allow-origin", help="Let pages of this origin (e.g. http://localhost:3000, your own front end) call the API and open the WebSocket, with CORS headers (repeatable).")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option("--allow-host", help="Also answer requests for this host name (repeatable): the public name a TLS reverse proxy on this machine passes on. Only this machine's names are answered on 127.0.0.1 otherwise; on a network --host, any name unless names are given here, then only those and this machine's (keeps DNS rebinding out).")] = None,
    model: ModelOption = None,
    workers: Annotated[int, typer.Option(help="Recognizers working in parallel (frames from several tabs at once), 1 to 64.")] = 2,
    max_upload_mb: Annotated[float, typer.Option(callback=_finite, help="Largest photo upload accepted, in MB; larger ones get HTTP 413.")] = 10.0,
    loadtest: Annotated[bool, typer.Option("--loadtest", help="Do not serve: load-test the server on a private 127.0.0.1 port and print a Markdown table.")] = False,
    clients: Annotated[int, typer.Option(help="--loadtest: concurrent WebSocket clients (1 to 48).")] = 4,
    seconds: Annotated[float, typer.Option(callback=_finite, help="--loadtest: duration in seconds (1 or more).")] = 20.0,
    faces_from: Annotated[Optional[Path], typer.Option(help="--loadtest: FER2013 zip to take real faces from (default: $FERVID_FER2013_ZIP; the load test needs one).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "--out", "-o", help="--loadtest: also write the table into this Markdown file's 'Web server load test' section.")] = None,
    scale_factor: ScaleFactorOption = 1.1,
    min_neighbors: MinNeighborsOption = 5,
    min_size: MinSizeOption = 40,
) -> None:
    """Serve the web app: live webcam expressions in the browser, photo uploads, a REST API and its docs at /docs.

    Needs the 'serve' extra (README, Install options).

    Examples:
      fervid serve                                   # then open http://127.0.0.1:8000
      fervid serve --port 8080 --model runs/vgg
      fervid serve --loadtest --faces-from fer2013.zip --output docs/performance.md   # 4 WebSocket clients, 20 s, real faces
    """
    _needs("serve", "fastapi")
    _needs("serve", "uvicorn")
    # An option the chosen mode does not use would be silently ignored: a user who gives one means it.
    unused = {"host", "port", "max_upload_mb", "allow_host", "allow_origin"} if loadtest else {"clients", "seconds", "faces_from", "output"}
    if given := [name for name in _given(ctx) if name in unused]:
        names = ", ".join("--" + name.replace("_", "-") for name in given)
        why = "the load test serves on a private 127.0.0.1 port" if loadtest else ("they are load test settings" if len(given) > 1 else "it is a load test setting")
        raise FervidError(f"{names}: not used {'with' if loadtest else 'without'} --loadtest ({why})")
    if max_upload_mb * 1_000_000 < 1:  # under a byte is no limit (nan and inf are refused by the option's callback)
        raise FervidError(f"--max-upload-mb must be a positive number of megabytes, got {max_upload_mb}")
    if not 1 <= workers <= 64:  # fervid.serve.pool.MAX_WORKERS: the CLI imports no server code before its checks
        raise FervidError(f"--workers must be 1 to 64, got {workers}")
    detector: DetectorSettings = {"scale_factor": scale_factor, "min_neighbors": min_neighbors, "min_size": min_size}
    if loadtest:
        _needs("serve", "websockets")
        from fervid.serve.loadtest import run_loadtest

        with _table_kept():
            report = run_loadtest(model=model, clients=clients, seconds=seconds, faces_from=faces_from, workers=workers,
                                  output=output, detector=detector)
        print(report.table(), end="")
        if report.section:
            print(f"wrote the '{report.section.removeprefix('## ')}' section of {output}", file=sys.stderr)
        return
    from fervid.serve.server import serve as run_server

    run_server(host=host, port=port, model=model, workers=workers, max_upload_bytes=int(max_upload_mb * 1_000_000), detector=detector,
               allow_hosts=allow_host or (), allow_origins=allow_origin or ())


# ---------------------------------------------------------------------------------------------
# Batch analysis: photo folders, zips and video archives to one face table (Parquet or CSV), on
# this machine or a Ray cluster. Needs pyarrow (the 'scale' extra; Ray itself only for --engine ray).
# ---------------------------------------------------------------------------------------------


@app.command()
def analyze(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUTS", help="Image and video files, folders (searched recursively) and zips of them.")],
    out_path: Annotated[Path, typer.Option("--out", "--output", "-o", help="A folder or .parquet file (Parquet), or a .csv file; rerunning with the same --out resumes (the table then holds that run's inputs only).")],
    engine: Annotated[str, typer.Option(help="local (one process) or ray (Ray Data: a local Ray, or a cluster with --ray-address).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="With --engine ray: join this Ray cluster (e.g. 10.0.0.1:6379 or auto) instead of starting a local Ray.")] = None,
    every: Annotated[int, typer.Option(help="Analyse every K-th video frame.")] = 1,
    largest_only: Annotated[bool, typer.Option("--largest-only", help="Keep only the largest face per image or frame.")] = False,
    crops: CropsOption = False,
    boxes: Annotated[Optional[Path], typer.Option(help="Precomputed boxes (CSV source,frame,x,y,w,h or JSON); the detector does not run (so no detector options).")] = None,
    segment_s: Annotated[float, typer.Option(callback=_finite, help="Video segment length in seconds (at most 1,000,000): the unit of parallel work and of resuming; track ids restart at each segment.")] = 300.0,
    model: ModelOption = None,
    scale_factor: ScaleFactorOption = 1.1,
    min_neighbors: MinNeighborsOption = 5,
    min_size: MinSizeOption = 40,
) -> None:
    """Analyse photo folders and video archives into one table: a row per face per analysed frame, and a summary per file.

    Needs the 'scale' extra (README, Install options).

    Examples:
      fervid analyze photos/ --out faces.parquet
      fervid analyze interviews/ lecture.mp4 --out results/ --every 5
      fervid analyze dataset.zip --crops --out crops.csv
      fervid analyze /shared/archive --out /shared/results --engine ray --ray-address auto
    """
    _needs("scale", "pyarrow")
    if engine == "ray":
        _needs("scale", "ray")
    from fervid.analyze import AnalyzeOptions
    from fervid.analyze import analyze as run_analysis

    options = AnalyzeOptions(every=every, largest_only=largest_only, crops=crops, segment_s=segment_s, model=model,
                             scale_factor=scale_factor, min_neighbors=min_neighbors, min_size=min_size)
    try:
        report = run_analysis(inputs, out_path, options, engine=engine, boxes=boxes, ray_address=ray_address)
    except KeyboardInterrupt as interrupt:
        if not str(interrupt):
            raise
        raise Interrupted(str(interrupt)) from None
    print("\n".join(report.describe()), file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (kill, timeout, systemd) and SIGHUP (a closed terminal, a dropped SSH session) stop a
    run as Ctrl+C does: the commands then finish what they wrote (a playable video, the records so far,
    complete parts) instead of leaving half-written temporaries (a hang-up killed the process outright:
    a camera's recording over SSH was lost when the connection dropped)."""
    if signum == signal.SIGHUP:
        leave_closed_terminal()
    raise KeyboardInterrupt


def refuse_empty_arguments(arguments: list[str]) -> None:
    """Refuse an empty argument: click reads an empty path as ".", so `fervid train data --out "$OUT"`
    with OUT unset trained into the current folder, and an empty DATA or MODEL read the folder here."""
    for position, argument in enumerate(arguments):
        option, _, value = argument.partition("=") if argument.startswith("--") else ("", "", argument)
        if option and "=" not in argument:
            continue
        if not value.strip():
            after = option or (arguments[position - 1] if position else "fervid")
            raise FervidError(f"an empty argument after {after} (an unset shell variable?); give a value")


def refuse_options_as_values(arguments: list[str]) -> None:
    """Refuse an option whose value is another of the command's options: click takes the next
    argument as the value, so `fervid analyze photos --out $OUT --largest-only` with OUT unset wrote
    a table named "--largest-only", the flag never applied. A file so named is given as ./--name.
    The end of options, ``--``, counts as an option here."""
    command = typer.main.get_command(app)
    position = 0
    while position < len(arguments) and arguments[position] in getattr(command, "commands", {}):
        command = getattr(command, "commands")[arguments[position]]
        position += 1
    options = [param for param in command.params if getattr(param, "param_type_name", "") == "option"]
    names = {name for option in options for name in (*option.opts, *option.secondary_opts)}
    valued = {name for option in options if not (getattr(option, "is_flag", False) or getattr(option, "count", False))
              for name in option.opts}
    names |= {"--help", "-h", "--"}  # click adds the help options outside the command's params
    rest = arguments[position:]
    # after "--" every argument is a name, not an option; "--" itself is never a value (`--json $OUT --
    # photo.jpg` with OUT unset wrote the records to a file named "--")
    rest = rest[: rest.index("--") + 1] if "--" in rest else rest
    for argument, following in zip(rest, rest[1:]):
        if argument in valued and following.partition("=")[0] in names:
            raise FervidError(f"{argument} has no value: {following} after it is an option (an unset shell variable?); "
                              f"give a value, or ./{following} for a file so named")


def _command_path(args: list[str]) -> str:
    """``fervid bench`` or ``fervid data inspect``: the (sub)command the arguments name, for an error
    that click raises without its context (an option missing its value), so that the help it
    points to is the command's own."""
    path, command = ["fervid"], typer.main.get_command(app)
    for arg in args:
        found = getattr(command, "commands", {}).get(arg)
        if found is None:
            break
        path.append(arg)
        command = found
    return " ".join(path)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2.

    Typer runs outside its standalone mode, so that a bad option or argument reaches this function
    and is printed as the same one line as every other user error, not as typer's boxed panel.
    """
    for number in stopping_signals():  # SIGHUP left ignored under nohup
        if number != signal.SIGINT:
            signal.signal(number, _interrupt)
    # FFmpeg prints its decoder errors ("[mjpeg @ 0x...] overread 8") straight to stderr; a damaged
    # video gets fervid's own note instead. Set the variable to another level to see FFmpeg's.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    # The click that typer runs on: its own copy in recent typer, the click package in older ones.
    click_errors = sys.modules[typer.BadParameter.__module__]
    no_args_is_help = getattr(click_errors, "NoArgsIsHelpError", ())
    try:
        refuse_empty_arguments(sys.argv[1:])
        refuse_options_as_values(sys.argv[1:])
        pixel_limit()  # a value OpenCV cannot parse aborts the process (as cv2 loads, or at a decode): refused first
        code = app(standalone_mode=False)  # None (the command ran) or an exit code: --help, --version, Ctrl+C
        if code == 130:  # typer turns Ctrl+C (and SIGTERM, above) into a silent exit 130
            print("fervid: interrupted", file=sys.stderr)
        sys.exit(code)
    except no_args_is_help:
        sys.exit(2)  # the help is already printed: a bare `fervid` or `fervid data` asks for it
    except click_errors.ClickException as error:
        context = getattr(error, "ctx", None)
        message = " ".join(error.format_message().split())
        print(f"fervid: error: {message} (see '{context.command_path if context else _command_path(sys.argv[1:])} --help')",
              file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Abort:
        print("fervid: interrupted", file=sys.stderr)
        sys.exit(130)
    except Interrupted as error:
        print(f"fervid: interrupted; {one_line(str(error))}", file=sys.stderr)
        sys.exit(130)
    except FervidError as error:
        print(f"fervid: error: {one_line(str(error))}", file=sys.stderr)
        if isinstance(error, WriteFailedInLibrary):  # the interpreter's teardown would crash in that library
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        sys.exit(2)
    except OSError as error:  # a path the system refused (unwritable, missing parent, disk full): the user's to fix
        where = f"{error.filename}: " if error.filename else ""
        print(f"fervid: error: {one_line(f'{where}{error.strerror or error}')}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("fervid: interrupted", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as error:
        # Path.resolve() on a symlink loop (Python 3.12 and older), where no check refused it first:
        # the user's path to fix, not a bug
        if not str(error).startswith("Symlink loop from"):
            raise
        where = str(error).removeprefix("Symlink loop from ").strip("'")  # pathlib quotes the path with repr()
        print(f"fervid: error: {one_line(where)}: a symlink loop (links that lead back to each other, never to a file or "
              "folder); give another path", file=sys.stderr)
        sys.exit(2)
