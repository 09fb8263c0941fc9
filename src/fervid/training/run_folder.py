"""The run folder (``--out``): refuse one a run must not write into, and read back the state a
resume continues from.

Run folder layout (``out``)::

    config.json                  resolved TrainConfig (a resumed run reads it back)
    checkpoint/last.weights.h5   training model + optimizer state after the last finished epoch
    checkpoint/best.weights.h5   classifier weights of the best validation epoch (their moving average with --ema)
    checkpoint/state.json        epochs done, best epoch, history
    model.keras model.onnx model.json history.csv curves.png confusion.png report.md metrics.json
"""

from __future__ import annotations

import json
from pathlib import Path

from fervid.console import warn
from fervid.errors import FervidError
from fervid.fileio import RUN_OUTPUTS, check_outside_dataset, check_writable_folder
from fervid.training.config import TrainConfig
from fervid.training.distill import TEACHER_FILE, TEACHER_VIEWS_FILE, check_teachers


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
