"""The checkpoint every epoch writes (last and best weights, state.json, history.csv), atomically and
in an order a kill at any moment leaves resumable, and the repair of the one gap a kill can leave."""

from __future__ import annotations

import errno
import gc
import json
import math
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType

import numpy as np

from fervid.console import warn
from fervid.errors import FervidError, WriteFailedInLibrary
from fervid.fileio import atomic_path, signals_deferred, write_text_atomically
from fervid.model.backend import keras
from fervid.training.averaging import AveragedClassifier, Recalibration, averaged_weights
from fervid.training.schedule import current_learning_rate, step_plateau


HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


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
        if reason is not None:  # only a failed write leaves such objects: a full collection each epoch cost 0.25 s
            gc.collect()  # its objects in reference cycles, freed (and silenced) now rather than at some later collection
    if reason is not None:
        raise WriteFailedInLibrary(f"{target}: could not be written ({reason}); the checkpoint before it is kept")


@contextmanager
def h5py_write_failures_quiet() -> Iterator[None]:
    """Silence h5py's objects of a failed write as they are freed: on a full disk each printed a
    traceback ("Exception ignored in: h5py._objects.ObjectID.__dealloc__ ... errno = 28") around the
    one line that says what failed. Cython prints such an error through ``sys.excepthook`` and then
    ``sys.unraisablehook``; both pass on anything not raised in h5py. The caller frees the objects
    inside the block (``gc.collect``), with the failure's traceback."""
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
    finally:
        sys.excepthook, sys.unraisablehook = hooks


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


def load_checkpoint(model: keras.Model, path: Path) -> None:
    """The weights a resume continues from; a missing or cut-short file is a one-line error naming
    it, not h5py's own message."""
    try:
        model.load_weights(str(path))
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())[:160]
        raise FervidError(f"{path}: cannot be loaded ({reason}); the checkpoint is damaged or missing: "
                          "start a new run with another --out") from None
