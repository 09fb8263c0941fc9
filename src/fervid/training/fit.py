"""Train a classifier with Keras ``fit``: in-graph augmentation, AdamW, warm-up + cosine decay or
reduce-on-plateau, class imbalance handling, and a checkpoint every epoch that ``--resume`` continues.

Run folder layout (``out``)::

    config.json                  resolved TrainConfig (a resumed run reads it back)
    checkpoint/last.weights.h5   training model + optimizer state after the last finished epoch
    checkpoint/best.weights.h5   classifier weights of the best validation epoch (their moving average with --ema)
    checkpoint/state.json        epochs done, best epoch, history
    model.keras model.onnx model.json history.csv curves.png confusion.png report.md metrics.json
"""

from __future__ import annotations

import errno
import gc
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from fervid.bundled import available_bundled_models, bundled_onnx_path
from fervid.console import warn
from fervid.data import FaceArrays, load_arrays, load_split, read_dataset
from fervid.data.arrays import fingerprint, readable_counts, unreadable_note
from fervid.data.holdout import stratified_holdout, subset
from fervid.errors import FervidError, WriteFailedInLibrary
from fervid.fileio import (
    RUN_OUTPUTS, atomic_path, check_outside_dataset, check_writable_folder, remove_temporaries, signals_deferred,
    write_text_atomically,
)
from fervid.labels import EXPRESSIONS
from fervid.model.architectures import (
    build_augmenter, build_classifier, build_training_model, card_architecture, keras_model_path, load_classifier,
)
from fervid.model.backend import keras
from fervid.model.from_onnx import STATISTICS_FACES, classifier_from_onnx
from fervid.model.specs import ARCHITECTURES as ARCHITECTURE_NAMES
from fervid.training.averaging import AveragedClassifier, AveragedValidation, Recalibration, averaged_weights, warn_if_too_short_to_average
from fervid.training.config import PRECISIONS, TrainConfig
from fervid.training.lock import RunLock
from fervid.training.stopping import StopWhenAsked, stops_remembered
from fervid.training.distill import (
    TEACHER_FILE,
    TEACHER_VIEWS_FILE,
    cached_teacher_probabilities,
    cached_teacher_view_probabilities,
    check_teachers,
    distilled_targets,
)
from fervid.training.views import ViewRecipe, render_views, view_parameters, view_seeds

VAL_FRACTION_DEFAULT = TrainConfig.__dataclass_fields__["val_fraction"].default
TRAINING_BACKENDS = ("tensorflow", "jax", "torch")
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


@dataclass
class TrainingData:
    """Train and validation faces plus where they came from (for the model card)."""

    train: FaceArrays
    validation: FaceArrays
    fingerprint: str
    counts: dict
    validation_source: str
    notes: list[str] = field(default_factory=list)  # what the report must say about the data (faces left out, classes missing)


def cpu_has_bf16() -> bool:
    """True where the CPU runs bfloat16 math natively (AMX or AVX-512 BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(requested: str) -> str:
    """``auto`` picks mixed_bfloat16 on the TensorFlow backend when the CPU has native bf16 (2x faster here)."""
    if requested != "auto":
        return requested
    return "mixed_bfloat16" if keras.backend.backend() == "tensorflow" and cpu_has_bf16() else "float32"


def run_precision(requested: str, state: dict) -> str:
    """The precision a run trains in: ``auto`` is decided when the run starts and kept at each resume
    (state.json records it), so a run continued on another machine or backend does not switch
    mid-schedule, and its card names the one precision all its epochs used."""
    recorded = state.get("precision")
    return recorded if requested == "auto" and recorded in PRECISIONS[1:] else resolve_precision(requested)


def load_training_data(config: TrainConfig) -> TrainingData:
    """The dataset's train split and its validation split, or a stratified holdout when it has none."""
    index = read_dataset(config.data, unknown=config.unknown, mapping=config.mapping)  # type: ignore[arg-type]
    if dropped := index.dropped_note():
        warn(f"{config.data}: {dropped}")
    train = load_split(index, "train")  # warns of unreadable images itself
    notes = [note for note in [dropped, unreadable_note(train, "train")] if note]
    if "validation" in index.splits:
        if config.val_fraction != VAL_FRACTION_DEFAULT:  # as options that do nothing are refused or named
            warn(f"{config.data}: has a validation split, which is used; --val-fraction {config.val_fraction:g} applies "
                 "only to data without one")
        validation = load_arrays(index, "validation")
        source = "validation split"
        if note := unreadable_note(validation, "validation"):
            warn(f"{config.data}: {note}")
            notes.append(note)
    else:
        held = stratified_holdout(train.labels, config.val_fraction, config.seed)
        validation, train = subset(train, held), subset(train, ~held)
        source = f"stratified {config.val_fraction:.0%} of train (seed {config.seed})"
    if len(validation) == 0 and source == "validation split":
        raise FervidError(f"{config.data}: its validation split holds no readable images")
    if len(validation) == 0:  # each class keeps at least one training face: a class of one gives none
        raise FervidError(f"{config.data}: no validation images could be set aside: a class needs at least 2 images for "
                          f"one to be held out, and the largest has {int(np.bincount(train.labels).max(initial=0))}; "
                          "add images, or give a dataset with a validation split")
    missing = [name for label, name in enumerate(EXPRESSIONS) if not np.any(train.labels == label)]
    if missing:
        note = (f"no training faces of {', '.join(missing)}: the model keeps those outputs but never learns them "
                "(their probabilities mean nothing)")
        warn(f"{config.data}: {note}")
        notes.append(note)
    counts = {split: {k: int(v) for k, v in column.items()} for split, column in readable_counts(index).items()}  # as data inspect counts
    return TrainingData(train, validation, fingerprint(index), counts, source, notes)


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """'Balanced' weights n / (k * n_c): disgust (16x rarer than happy in FER2013) counts 16x more."""
    counts = np.bincount(labels, minlength=len(EXPRESSIONS)).astype(np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


def face_weights(labels: np.ndarray) -> np.ndarray:
    """The balanced class weights as one weight per face, read from its label.

    Keras's ``class_weight`` reads each face's class off its target's largest share, which a
    distilled (soft) target need not give to the label.
    """
    weights = class_weights(labels)
    return np.array([weights[c] for c in range(len(EXPRESSIONS))], np.float32)[labels]


class BalancedBatches(keras.utils.PyDataset):
    """Batches drawn with every class equally likely (with replacement); same epoch length as the data."""

    def __init__(
        self, inputs: np.ndarray, targets: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, first_epoch: int = 0
    ) -> None:
        super().__init__()
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size
        counts = np.bincount(labels, minlength=len(EXPRESSIONS)).astype(np.float64)
        per_row = 1.0 / counts[labels]
        self.probabilities = per_row / per_row.sum()
        self.seed = seed
        self.epoch = first_epoch
        self.order = self._draw()

    def _draw(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed + self.epoch)
        return rng.choice(len(self.inputs), size=len(self.inputs), p=self.probabilities)

    def __len__(self) -> int:
        return int(np.ceil(len(self.inputs) / self.batch_size))

    def __getitem__(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[batch * self.batch_size : (batch + 1) * self.batch_size]
        return self.inputs[rows], self.targets[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._draw()


class ViewBatches(keras.utils.PyDataset):
    """Each epoch, every face once, as one of its fixed views (``--teacher-views``) with that view's target.

    Which view a face shows in an epoch is drawn from the seed and the epoch, so a resumed run sees
    what the uninterrupted one would have. Targets mix the label with the teachers' probabilities
    on that very view (``distilled_targets``); per-face weights (``--imbalance weights``) ride along.
    """

    def __init__(self, inputs: np.ndarray, one_hot: np.ndarray, teacher: np.ndarray, distill: float, recipe: ViewRecipe,
                 batch_size: int, seed: int, first_epoch: int = 0, weights: np.ndarray | None = None) -> None:
        super().__init__(workers=4)  # batches are rendered on threads ahead of the step (OpenCV and NumPy release the GIL)
        self.inputs, self.one_hot, self.teacher, self.distill = inputs, one_hot, teacher, distill
        self.recipe, self.batch_size, self.seed, self.weights = recipe, batch_size, seed, weights
        self.count = len(teacher)
        self.parameters = np.stack([view_parameters(recipe, view, len(inputs)) for view in range(self.count)])
        self.epoch = first_epoch
        self._draw()

    def _draw(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.order = rng.permutation(len(self.inputs))
        self.views = rng.integers(self.count, size=len(self.inputs))

    def __len__(self) -> int:
        return int(np.ceil(len(self.inputs) / self.batch_size))

    def __getitem__(self, batch: int) -> tuple:
        rows = self.order[batch * self.batch_size : (batch + 1) * self.batch_size]
        views = self.views[rows]
        faces = render_views(self.inputs[rows], self.parameters[views, rows], view_seeds(self.recipe, views, rows, len(self.inputs)))
        targets = distilled_targets(self.one_hot[rows], self.teacher[views, rows], self.distill)
        return (faces, targets) if self.weights is None else (faces, targets, self.weights[rows])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._draw()


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up then cosine decay to zero at the last epoch (or, for ``constant``, no decay:
    the rate stays at its peak), as a function of the optimizer step (so a resumed run, whose
    optimizer step is restored, continues on exactly the same curve)."""
    if config.schedule == "plateau":
        return config.learning_rate
    total = config.epochs * steps_per_epoch
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    if config.schedule == "cosine" and config.warmup_epochs and config.warmup_epochs >= config.epochs:
        warn(f"--warmup-epochs {config.warmup_epochs} is not shorter than --epochs {config.epochs}: the learning rate "
             "rises until the last step and only then drops to 0, so there is no decay to train in (lower --warmup-epochs)")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 100 if warmup else config.learning_rate,
        decay_steps=max(total - warmup, 1),
        alpha=1.0 if config.schedule == "constant" else 0.0,  # the decay ends at alpha x the peak
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    rate = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(rate))


PLATEAU_PATIENCE, PLATEAU_MIN_DELTA = 5, 1e-4  # Keras's own min_delta, named: step_plateau repeats the test


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """Halve the learning rate after 5 epochs without a better validation accuracy, keeping the count
    in the run's state: a fresh callback on ``--resume`` would start counting again, and a resumed run
    would then halve later than the same run left alone."""

    def __init__(self, state: dict) -> None:
        super().__init__(monitor="val_accuracy", mode="max", factor=0.5, patience=PLATEAU_PATIENCE, min_lr=1e-6,
                         min_delta=PLATEAU_MIN_DELTA)
        self.state = state

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if saved := self.state.get("plateau"):
            self.best, self.wait, self.cooldown_counter = saved["best"], saved["wait"], saved["cooldown"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)  # records the epoch's rate in logs before it halves it
        best = None if self.best is None else float(self.best)
        self.state["plateau"] = {"best": best, "wait": int(self.wait), "cooldown": int(self.cooldown_counter)}


def step_plateau(plateau: dict, val_accuracy: float, *, halved: bool) -> bool:
    """Move the plateau schedule's saved count over one epoch as ``ResumablePlateau`` (Keras's
    ReduceLROnPlateau) moves it, for an epoch whose end it saw but whose count was lost (a kill
    between the weights and state.json); ``halved``: the weights hold a halved rate. Counting only
    ``wait += 1`` left 5 where the callback had reset it with the halving, and the next epoch
    without progress halved the rate again, four epochs early. Returns whether the callback halved
    the rate at this epoch's end (the count reached its patience, and the weights hold a lower rate:
    one lowered by the epoch before is the rate this one ran at)."""
    if plateau["cooldown"] > 0:
        plateau["cooldown"] -= 1
        plateau["wait"] = 0
    best = plateau["best"]
    if best is None or val_accuracy - PLATEAU_MIN_DELTA > best:
        plateau.update(best=val_accuracy, wait=0)
    elif plateau["cooldown"] == 0:
        plateau["wait"] += 1
        if plateau["wait"] >= PLATEAU_PATIENCE and halved:
            plateau["wait"] = 0  # its cooldown is 0, as ResumablePlateau sets it
            return True
    return False


def save_weights(weights: dict[Path, keras.Model | AveragedClassifier]) -> None:
    """Each model's weights written to its target, all replaced together once every file is written:
    a failed write (a full disk) leaves the checkpoint before as it was, best and last alike, and is
    one line naming the target (h5py's message spans lines and names the temporary file)."""
    target = next(iter(weights))
    reason = None
    with h5py_write_failures_quiet():
        try:
            with ExitStack() as stack:
                for target, model in weights.items():
                    temporary = stack.enter_context(atomic_path(target))  # replaced when the stack closes without error
                    model.save_weights(str(temporary))
        except OSError as error:  # making a temporary, writing it (h5py), or moving it into place
            text = " ".join(str(error).split())
            reason = "no space left on device" if "errno = 28" in text or error.errno == errno.ENOSPC else text[:160]
    if reason is not None:
        raise WriteFailedInLibrary(f"{target}: could not be written ({reason}); the checkpoint before it is kept")


@contextmanager
def h5py_write_failures_quiet() -> Iterator[None]:
    """Silence h5py's objects of a failed write as they are freed: on a full disk each printed a
    traceback ("Exception ignored in: h5py._objects.ObjectID.__dealloc__ ... errno = 28") around the
    one line that says what failed. Cython prints such an error through ``sys.excepthook`` and then
    ``sys.unraisablehook``; both pass on anything not raised in h5py. The objects are freed here,
    with the failure's traceback."""
    def from_h5py(trace: TracebackType | None, where: object = None) -> bool:
        frames = traceback.extract_tb(trace) if trace is not None else []
        return "h5py" in repr(where) or any("h5py" in frame.filename for frame in frames)

    hooks = sys.excepthook, sys.unraisablehook

    def excepthook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        if not from_h5py(trace):
            hooks[0](kind, error, trace)

    def unraisablehook(unraisable: sys.UnraisableHookArgs) -> None:
        if not from_h5py(unraisable.exc_traceback, unraisable.object):
            hooks[1](unraisable)

    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
    try:
        yield
        gc.collect()  # objects in reference cycles, freed now rather than at some later collection
    finally:
        sys.excepthook, sys.unraisablehook = hooks


RESUME_STRIDE = 0x9E3779B1  # odd, far from any seed a user picks: epochs' seeds stay apart from other runs'


def resume_seed(seed: int, epochs_done: int) -> int:
    """The random seed a run (re)starts with: new random numbers at each resume, the same ones for
    the same epoch; below 2**32, as NumPy takes them (a --seed near 2**32 broke every resume). Epochs
    step the seed by a large stride, not by 1: a --seed 42 run resumed after epoch 1 drew exactly a
    fresh --seed 43 run's numbers, and the augmentation layers take seed, seed + 1, ... besides."""
    return (seed + epochs_done * RESUME_STRIDE) % 2**32


class RunCheckpoint(keras.callbacks.Callback):
    """Per epoch: one summary line, history, last and best checkpoints, all written atomically."""

    def __init__(self, run: Path, classifier: keras.Model, state: dict, total_epochs: int, patience: int,
                 recalibration: Recalibration) -> None:
        super().__init__()
        self.run, self.classifier, self.state, self.recalibration = run, classifier, state, recalibration
        self.total_epochs, self.patience = total_epochs, patience
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """End a diverged epoch at its first nan batch (quietly: on_epoch_end says it in one line)."""
        if logs and not math.isfinite(float(logs.get("loss", 0.0))):
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", np.nan)),
            "accuracy": float(logs.get("accuracy", np.nan)),
            "val_loss": float(logs.get("val_loss", np.nan)),
            "val_accuracy": float(logs.get("val_accuracy", np.nan)),
            # the rate this epoch ran at: a plateau callback before this one may have just lowered it
            "learning_rate": float(logs["learning_rate"] if "learning_rate" in logs else current_learning_rate(self.model.optimizer)),
            "seconds": round(time.monotonic() - self.started, 1),
        }
        if not math.isfinite(row["loss"]):  # diverged: its weights are nan, and so would be everything after
            done = self.state["epochs_done"]
            kept = f"the checkpoint of epoch {done} is kept" if done else "no epoch had finished"
            raise FervidError(
                f"epoch {epoch + 1}: the training loss became {row['loss']} (the training diverged); {kept}, nothing "
                "was exported; start a new run with a lower --lr and another --out"
            )
        improved = row["val_accuracy"] > self.state.get("best_val_accuracy", -1.0)
        with signals_deferred():  # Ctrl+C or SIGTERM here would leave the weights one epoch ahead of state.json
            self.state["history"].append(row)
            self.state["epochs_done"] = epoch + 1
            weights: dict[Path, keras.Model | AveragedClassifier] = {}
            if improved:
                self.state.update(best_val_accuracy=row["val_accuracy"], best_epoch=epoch + 1)
                weights[self.run / "checkpoint" / "best.weights.h5"] = AveragedClassifier(self.model, self.classifier, self.recalibration)
            weights[self.run / "checkpoint" / "last.weights.h5"] = self.model
            # Replaced in reverse order, last before best: a kill from here on (SIGKILL, power loss) leaves
            # last one epoch ahead of state.json at most, which catch_up_with_weights repairs on resume.
            save_weights(weights)
            save_state(self.run, self.state)
            print(  # in the block: a Ctrl+C held back while the epoch was saved is raised after its line, not before
                f"epoch {epoch + 1}/{self.total_epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
                f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}{' *' if improved else '  '}  "
                f"lr {row['learning_rate']:.2e}  {row['seconds']:.0f}s",
                flush=True,
            )
        if self.patience and epoch + 1 - self.state["best_epoch"] >= self.patience:
            print(f"early stop: no better validation accuracy for {self.patience} epoch{'s' if self.patience > 1 else ''}", flush=True)
            self.model.stop_training = True


def save_state(run: Path, state: dict) -> None:
    """The resume state and the history table, each replaced atomically."""
    write_text_atomically(run / "checkpoint" / "state.json", json.dumps(state, indent=1))
    write_history(run / "history.csv", state["history"])


def catch_up_with_weights(model: keras.Model, classifier: keras.Model, state: dict, steps_per_epoch: int,
                          validation: tuple, recalibration: Recalibration, run: Path) -> bool:
    """Make the resume state agree with the weights just loaded, by the optimizer step they hold;
    True when it moved on an epoch.

    Each epoch's weights are replaced just before state.json (last before best), so a run killed
    between them (SIGKILL, power loss) holds the weights of one epoch more than its state: that
    epoch is kept, its validation measured again (its training loss and time are lost) and, if it
    beat the best, recorded as the best with its weights saved as such (whether or not the kill
    came before they were). Any other step means the files come from different runs, and resuming
    would quietly train on another schedule.
    """
    done, path = state["epochs_done"], run / "checkpoint" / "last.weights.h5"
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if step == done * steps_per_epoch:
        return False
    if step != (done + 1) * steps_per_epoch:
        raise FervidError(
            f"{path}: holds training step {step}, but checkpoint/state.json ends at epoch {done} (step "
            f"{done * steps_per_epoch}); the two files come from different runs: start a new run with another --out"
        )
    with averaged_weights(model, recalibration):  # as fit validates
        scores = model.evaluate(*validation, batch_size=recalibration.batch_size, verbose=0, return_dict=True)
    row = {"epoch": done + 1, "loss": math.nan, "accuracy": math.nan, "val_loss": float(scores["loss"]),
           "val_accuracy": float(scores["accuracy"]), "learning_rate": current_learning_rate(model.optimizer),
           "seconds": math.nan}
    state["history"].append(row)
    state["epochs_done"] = done + 1
    improved = row["val_accuracy"] > state["best_val_accuracy"]
    if improved:
        state.update(best_val_accuracy=row["val_accuracy"], best_epoch=done + 1)
        save_weights({run / "checkpoint" / "best.weights.h5": AveragedClassifier(model, classifier, recalibration)})
    if plateau := state.get("plateau"):  # the plateau schedule's count, moved as its callback moved it
        ran_at = state["history"][-2]["learning_rate"] if len(state["history"]) > 1 else row["learning_rate"]
        if step_plateau(plateau, row["val_accuracy"], halved=row["learning_rate"] < ran_at):
            row["learning_rate"] = ran_at  # as the callback logs it: the rate the epoch ran at, not the halved one
    save_state(run, state)
    warn(f"{path}: holds epoch {done + 1}, one more than checkpoint/state.json (the run was stopped while saving it); "
         f"continuing after epoch {done + 1}, its validation accuracy measured again ({row['val_accuracy']:.4f}), "
         "its training loss not recorded")
    return True


def write_history(path: Path, history: list[dict]) -> None:
    """history.csv, rewritten whole each epoch (atomically), so a resumed run's file holds every epoch once."""
    lines = [",".join(HISTORY_COLUMNS)] + [",".join(str(row[c]) for c in HISTORY_COLUMNS) for row in history]
    write_text_atomically(path, "\n".join(lines) + "\n")


def augmented_sample(config: TrainConfig, faces: np.ndarray) -> np.ndarray:
    """A fixed sample of the training faces as the run's augmentation draws them (its whole recipe,
    also for a ``--teacher-views`` run, whose views are drawn from the same ranges)."""
    rows = np.sort(np.random.default_rng(config.seed).permutation(len(faces))[:STATISTICS_FACES])
    return keras.ops.convert_to_numpy(augmenter_for(config, config.seed, views=False)(faces[rows], training=True))


def augmenter_for(config: TrainConfig, seed: int, *, views: bool) -> keras.Sequential:
    """The run's augmentation layers; with ``views`` (a ``--teacher-views`` run, whose faces arrive
    as their fixed views already) only the flips stay random."""
    def unless_views(value: float) -> float:
        return 0.0 if views else value

    return build_augmenter(
        flip=config.flip, rotation=unless_views(config.rotation), zoom=unless_views(config.zoom),
        shift=unless_views(config.shift), warp=config.warp, brightness=unless_views(config.brightness),
        contrast=unless_views(config.contrast), erasing=unless_views(config.erasing), seed=seed,
    )


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


def check_no_foreign_outputs(run: Path) -> None:
    """Refuse a new run in a folder whose files it would overwrite, unless they are a run's own.

    A folder whose only run files are a run's ``config.json`` (and history) is a run stopped in its first epoch, so
    starting again there replaces only what that run wrote; anywhere else a ``model.onnx`` or
    ``report.md`` (a finished run whose checkpoint was deleted, another model, the user's notes) or
    a ``config.json`` that is not a run's must not be replaced silently (the teachers' cached
    probabilities, which a user may put there first, are not among ``RUN_OUTPUTS``).
    """
    clashes = [name for name in RUN_OUTPUTS if (run / name).exists()]
    if "config.json" in clashes and set(clashes) <= STOPPED_RUN_FILES and _is_run_config(run / "config.json"):
        return
    if clashes:
        raise FervidError(
            f"--out {run}: holds {', '.join(clashes)}, which the run would overwrite; give a new or empty folder"
        )


# What a run stopped before its first checkpoint was whole may have written (killed between its
# first weights and state.json): starting again replaces only these.
STOPPED_RUN_FILES = {"config.json", "history.csv", "checkpoint/best.weights.h5", "checkpoint/last.weights.h5"}


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is a fervid run's config.json (one ``TrainConfig.load`` reads)."""
    try:
        TrainConfig.load(path)
    except FervidError:
        return False
    return True


def same_data_on_resume(state: dict, content: str, data: str) -> None:
    """Refuse to resume on data whose content differs from what the finished epochs trained on.

    The checkpoint's best epoch was chosen on the old validation split and the schedule has spent
    its epochs on the old faces: going on with other data would mix two datasets into one run and
    one report. The same content under a new path (a moved or copied dataset) is fine.
    """
    recorded = state.get("data_fingerprint")
    if recorded and recorded != content:
        raise FervidError(
            f"{data}: not the data this run trained on (content fingerprint {content}, the run's {recorded}); "
            "resume it on its own data, or start a new run on this one"
        )


def open_run(config: TrainConfig, run: Path, resume: bool) -> tuple[dict, bool]:
    """The run's state (a fresh one, or the checkpoint's when resuming) and whether it resumes.

    Refuses, before any data is read, a run folder that is a file, lies inside the dataset, already
    holds another run or files a run would overwrite, or whose state is damaged; a resume with no
    finished epoch starts afresh.
    """
    state_path = run / "checkpoint" / "state.json"
    if resume and not state_path.exists() and any((run / name).exists() for name in ("model.keras", "model.json")):
        # not "starting at epoch 1" and then a refusal of the folder's files: it finished
        raise FervidError(f"{run}: a finished run whose checkpoint/ was deleted: there is nothing to resume (its model is "
                          "there); start a new run with another --out")
    if resume and not state_path.exists():  # stopped during its first epoch
        warn(f"{run}: no finished epoch to resume from; starting at epoch 1")
        resume = False
    cached = TEACHER_VIEWS_FILE if config.teacher_views else TEACHER_FILE
    if not resume and not (run / "checkpoint" / cached).exists():
        check_teachers(config.teacher)  # a missing teacher fails now, before any data is read
    if run.exists() and not run.is_dir():
        raise FervidError(f"--out {run}: a file, not a run folder")
    if run.resolve().name == "checkpoint" and (run.resolve().parent / "config.json").is_file():
        raise FervidError(f"--out {run}: the checkpoint folder of the run {run.resolve().parent}; give a folder of its own")
    check_writable_folder(run, "--out")  # now, not when the first file is written after the data is read
    check_writable_folder(run / "checkpoint", "--out", name=f"--out {run}")  # a file named checkpoint there: after epoch 1
    check_outside_dataset(run, config.data, "--out", folder=True)  # its plots (curves.png, confusion.png) would be read as faces
    if not resume:
        check_new_run_folder(run)
        return {"epochs_done": 0, "best_epoch": 0, "best_val_accuracy": -1.0, "history": []}, False
    try:
        state = json.loads(state_path.read_text())
    except ValueError as error:
        raise FervidError(f"{state_path}: damaged ({error}); start a new run with another --out") from None
    if not (isinstance(state, dict) and all(isinstance(state.get(key), kind) for key, kind in STATE_FIELDS.items())):
        raise FervidError(f"{state_path}: not a fervid run's resume state; start a new run with another --out")
    return state, True


def check_new_run_folder(run: Path) -> None:
    """Refuse a new run into a folder that holds a run, or files a run would overwrite."""
    if (run / "checkpoint" / "state.json").exists():
        raise FervidError(f"{run}: already holds a training run; use --resume to continue it or another --out")
    check_no_foreign_outputs(run)


# What resuming reads from checkpoint/state.json, with the types it must have.
STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epochs_done": int, "best_epoch": int, "best_val_accuracy": (int, float), "history": list,
}


def load_checkpoint(model: keras.Model, path: Path) -> None:
    """The weights a resume continues from; a missing or cut-short file is a one-line error naming
    it, not h5py's own message."""
    try:
        model.load_weights(str(path))
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())[:160]
        raise FervidError(f"{path}: cannot be loaded ({reason}); the checkpoint is damaged or missing: "
                          "start a new run with another --out") from None


def compile_for_training(config: TrainConfig, classifier: keras.Model, steps_per_epoch: int, epochs_done: int = 0) -> keras.Model:
    """The classifier behind the configured augmentation, compiled with AdamW (no weight decay on
    norms and biases), the learning-rate schedule and label-smoothed cross-entropy. With
    ``--teacher-views`` the faces arrive as their fixed views already, so only flips stay random.

    The augmentation is seeded for the epoch it starts at (``epochs_done``), as the rest of a run's
    random numbers are: Keras saves no random-number state with the weights, so with the run's own
    seed every resume drew the first epoch's rotations, zooms and shifts over again."""
    augmenter = augmenter_for(config, resume_seed(config.seed, epochs_done), views=bool(config.teacher_views))
    model = build_training_model(classifier, augmenter)
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate(config, steps_per_epoch), weight_decay=config.weight_decay,
                                       use_ema=config.ema > 0, ema_momentum=config.ema or 0.99)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def fit(config: TrainConfig, run: Path, *, resume: bool = False, lock: RunLock | None = None) -> tuple[keras.Model, TrainingData, dict]:
    """Train (or continue) the run in ``run``; returns the best-epoch classifier, the data and the state.

    ``lock`` is taken as soon as the run folder exists (before the data is read when resuming), and
    left to the caller to release, after whatever else it writes into the run; without one, the run
    is locked for this call only.
    """
    if lock is None:
        with RunLock(run) as own:
            return fit(config, run, resume=resume, lock=own)
    if keras.backend.backend() not in TRAINING_BACKENDS:  # numpy and openvino run models but have no fit
        raise FervidError(f"KERAS_BACKEND={keras.backend.backend()} cannot train (Keras has no fit on it); "
                          f"use {', '.join(TRAINING_BACKENDS)} (unset KERAS_BACKEND for tensorflow)")
    config.validate()
    state, resume = open_run(config, run, resume)
    if run.is_dir():  # a resume, or a run stopped in its first epoch: refuse a second process before reading data
        lock.acquire()
    keras.utils.set_random_seed(resume_seed(config.seed, state["epochs_done"]))
    precision = run_precision(config.precision, state if resume else {})
    classifier = build_classifier(config.arch, dtype=precision)
    data = load_training_data(config)
    if config.init_from and state["epochs_done"] == 0:
        warm_start(classifier, config.init_from, config.arch, lambda: augmented_sample(config, data.train.inputs()))
    same_data_on_resume(state, data.fingerprint, config.data)
    state["data_fingerprint"] = data.fingerprint
    run.mkdir(parents=True, exist_ok=True)  # only now: data that cannot be read leaves no half-made run folder behind
    lock.acquire()  # before config.json: two runs started into one new folder would write each other's
    if not resume:  # checked again under the lock: another run may have finished there while the data was read
        check_new_run_folder(run)
    else:  # what a kill mid-write left (a checkpoint's temporary weighs as much as the weights)
        remove_temporaries(run)
        remove_temporaries(run / "checkpoint")
    config.save(run / "config.json")
    x_train, y_train = data.train.inputs(), data.train.one_hot()
    steps_per_epoch = int(np.ceil(len(x_train) / config.batch_size))
    model = compile_for_training(config, classifier, steps_per_epoch, state["epochs_done"])
    warn_if_too_short_to_average(config.ema, config.epochs * steps_per_epoch)
    validation = (data.validation.inputs(), data.validation.one_hot())
    # with --ema, the faces that give the average its BatchNorm statistics
    recalibration = Recalibration.sample(x_train, config.batch_size, config.seed) if config.ema else Recalibration(x_train[:0], config.batch_size)

    def stopped_early() -> bool:
        return bool(config.patience) and state["epochs_done"] - state["best_epoch"] >= config.patience

    def continue_last_epoch(model: keras.Model) -> None:
        model.optimizer.build(model.trainable_variables)  # so that the optimizer's state loads too
        load_checkpoint(model, run / "checkpoint" / "last.weights.h5")

    if resume and config.epochs > state["epochs_done"] and not stopped_early():
        continue_last_epoch(model)
        if catch_up_with_weights(model, classifier, state, steps_per_epoch, validation, recalibration, run):
            # one epoch on: dropout and augmentation (seeded as the model is built) draw the next epoch's numbers,
            # as a resume from a state.json that had been written would
            keras.utils.set_random_seed(resume_seed(config.seed, state["epochs_done"]))
            classifier = build_classifier(config.arch, dtype=precision)
            model = compile_for_training(config, classifier, steps_per_epoch, state["epochs_done"])
            continue_last_epoch(model)
    remaining = config.epochs - state["epochs_done"]

    # The plateau callback goes first: the checkpoint then saves the rate it set and its count.
    callbacks: list[keras.callbacks.Callback] = [ResumablePlateau(state)] if config.schedule == "plateau" else []
    if config.ema:  # validation, which selects the best epoch the checkpoint keeps, runs on the average
        callbacks.append(AveragedValidation(recalibration))
    callbacks.append(RunCheckpoint(run, classifier, state, config.epochs, config.patience, recalibration))
    stop = StopWhenAsked()
    callbacks.append(stop)  # last: an epoch that has just ended is checkpointed before a stop

    if remaining > 0 and not stopped_early():
        state.update(precision=precision, keras_backend=keras.backend.backend())
        if config.teacher and not config.teacher_views:
            teacher = cached_teacher_probabilities(run, config.teacher, x_train, data.fingerprint)
            y_train = distilled_targets(y_train, teacher, config.distill)
        verbose = 1 if os.isatty(1) else 0
        with stops_remembered(stop):
            if config.teacher_views:
                recipe = config.view_recipe()
                teacher = cached_teacher_view_probabilities(run, config.teacher, x_train, data.fingerprint, recipe, config.teacher_views)
                per_face = face_weights(data.train.labels) if config.imbalance == "weights" else None
                batches = ViewBatches(x_train, y_train, teacher, config.distill, recipe, config.batch_size, config.seed,
                                      state["epochs_done"], per_face)
                model.fit(batches, epochs=config.epochs, initial_epoch=state["epochs_done"],
                          validation_data=validation, callbacks=callbacks, verbose=verbose)
            elif config.imbalance == "sampling":
                batches = BalancedBatches(x_train, y_train, data.train.labels, config.batch_size, config.seed, state["epochs_done"])
                model.fit(batches, epochs=config.epochs, initial_epoch=state["epochs_done"],
                          validation_data=validation, callbacks=callbacks, verbose=verbose)
            else:
                per_face = face_weights(data.train.labels) if config.imbalance == "weights" else None
                model.fit(x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
                          initial_epoch=state["epochs_done"], validation_data=validation, sample_weight=per_face,
                          shuffle=True, callbacks=callbacks, verbose=verbose)
    if state["best_epoch"]:
        load_checkpoint(classifier, run / "checkpoint" / "best.weights.h5")
    state.setdefault("precision", precision)
    state.setdefault("keras_backend", keras.backend.backend())
    return classifier, data, state
