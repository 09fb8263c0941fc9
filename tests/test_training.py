"""Training learns, resumes after a kill on the same schedule, exports ONNX that agrees with Keras,
and evaluation reports the numbers a hand computation gives."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shlex
import shutil
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import write_folder_dataset

EPOCHS, BATCH, TRAIN_PER_CLASS = 8, 8, 40
FERVID = [sys.executable, "-m", "fervid"]


def run_fervid(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*FERVID, *args], capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def fervid_here(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``run_fervid`` without a new process: the same console entry point (``fervid.cli.main``, which turns
    every error into one stderr line and exit status 2), its stdout and stderr captured.

    It saves a fresh Python and TensorFlow per call. Warnings that a fresh interpreter prints (its default
    filters) land in the captured stderr too, so a stray library warning still breaks a one-line error.
    Tests about signals, a killed process or what a fresh process imports keep ``run_fervid``.
    """
    from fervid import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    handler, argv = signal.getsignal(signal.SIGTERM), sys.argv
    sys.argv = ["fervid", *args]
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            warnings.simplefilter("default")
            for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", quiet)
            try:
                cli.main()
                code = 0
            except SystemExit as exited:
                code = exited.code if isinstance(exited.code, int) else int(exited.code is not None)
        for warning in caught:
            stderr.write(warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno))
    finally:
        sys.argv = argv
        signal.signal(signal.SIGTERM, handler)  # main() installs its own
    result = subprocess.CompletedProcess([*FERVID, *args], code, stdout.getvalue(), stderr.getvalue())
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A compact model trained on drawn patterns: killed after epoch 3, then resumed to the end."""
    root = tmp_path_factory.mktemp("training")
    data = write_folder_dataset(root / "data", 0, {"train": TRAIN_PER_CLASS, "validation": 10})
    run = root / "run"
    args = [str(data), "--arch", "compact", "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
            "--lr", "2e-3", "--warmup-epochs", "1", "--name", "fervid-patterns", "--out", str(run)]
    log = root / "first-run.log"  # read in the failure message: a crash must not show up as a missing state.json
    with log.open("w") as output:
        process = subprocess.Popen([*FERVID, "train", *args], stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "FERVID_CACHE_DIR": str(root / "cache")})
    state = run / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.1)
    process.wait()
    assert state.exists(), f"the first run wrote no checkpoint:\n{log.read_text()[-3000:]}"
    interrupted_at = json.loads(state.read_text())["epochs_done"]
    assert 3 <= interrupted_at < EPOCHS, f"the run should have been killed mid-way:\n{log.read_text()[-3000:]}"
    assert not (run / "model.onnx").exists()
    # what a kill during a checkpoint's or the card's write leaves (atomic_path's temporaries): the
    # resume removes them, or each kill left the weights' size behind for good
    (run / "checkpoint" / ".last.weights.k1ll3d.tmp.weights.h5").write_bytes(b"half a checkpoint")
    (run / ".history.k1ll3d.tmp.csv").write_text("epoch\n")
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: the per-test cache fixture is not set up yet
        patch.setenv("FERVID_CACHE_DIR", str(root / "cache"))
        resumed = fervid_here("train", "--resume", "--out", str(run))  # a new process's job, done by this one: nothing survives the kill
    (root / "resumed.out").write_text(resumed.stdout)
    return run, data


def test_training_learns_learnable_patterns(trained_run):
    run, _ = trained_run
    card = json.loads((run / "model.json").read_text())
    assert card["metrics"]["accuracy"] >= 0.9
    assert card["parameters"] <= 200_000 and card["architecture"] == "compact"
    assert card["name"] == "fervid-patterns", "--resume keeps the name the run was started with"


def test_a_resume_removes_what_a_kill_mid_write_left(trained_run):
    run, _ = trained_run
    assert not [path.name for path in [*run.glob(".*"), *(run / "checkpoint").glob(".*")] if ".tmp" in path.name]


def test_a_new_run_into_a_finished_run_folder_is_refused_and_leaves_it_alone(trained_run):
    from fervid.errors import FervidError
    from fervid.training.config import TrainConfig
    from fervid.training.fit import fit

    run, data = trained_run
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    with pytest.raises(FervidError, match="already holds a training run; use --resume to continue it or another --out"):
        fit(TrainConfig(data=str(data), arch="compact", epochs=1), run)
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before



def test_a_card_from_another_model_is_refused_not_used(trained_run, tmp_path):
    """Another run's model.keras put in a run (or foo.keras beside another model's foo.json) was scored
    with that card's blur and temperature and exported with its architecture and accuracy."""
    import shutil

    run, data = trained_run
    card = json.loads((run / "model.json").read_text())
    shutil.copy(run / "model.keras", tmp_path / "foo.keras")
    (tmp_path / "foo.json").write_text(json.dumps({**card, "parameters": 1_242_919, "architecture": "vgg"}))
    message = (f"{tmp_path / 'foo.json'}: describes a 1,242,919-parameter vgg, not foo.keras ({card['parameters']:,} "
               "parameters); a card from another run?")
    for command in (["evaluate", str(tmp_path / "foo.keras"), str(data)], ["export", str(tmp_path / "foo.keras")]):
        refused = fervid_here(*command, check=False)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert not (tmp_path / "foo.onnx").exists()
    (tmp_path / "foo.json").write_text(json.dumps(card))  # its own card: scored as before
    assert fervid_here("evaluate", str(tmp_path / "foo.keras"), str(data)).returncode == 0


def test_export_int8s_files_in_a_run_are_its_own_and_not_another_outputs(trained_run):
    """evaluate --json run/model.int8.json replaced the int8 card export writes there; the next export then refused."""
    run, data = trained_run
    for name in ("model.int8.json", "model.int8.onnx"):
        refused = fervid_here("evaluate", "fervid-compact", str(data), "--json", str(run / name), check=False)
        assert refused.returncode == 2 and f"is {name} of the training run {run}" in refused.stderr, refused.stderr

def test_a_finished_run_without_its_checkpoint_or_a_foreign_config_is_not_taken_for_a_run_stopped_early(trained_run, tmp_path):
    """Any config.json exempted the folder: a finished run whose checkpoint/ was deleted had its
    model and report replaced by a new run, and so had a folder of the user's with a config.json."""
    from fervid.errors import FervidError
    from fervid.training.config import TrainConfig
    from fervid.training.fit import fit

    run, data = trained_run
    finished = tmp_path / "finished"
    shutil.copytree(run, finished, ignore=shutil.ignore_patterns("checkpoint"))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "config.json").write_text('{"lr": 0.1}')
    config = TrainConfig(data=str(data), arch="compact", epochs=1)
    for folder, holds in ((finished, "config.json, history.csv, model.keras, model.onnx"), (notes, "config.json,")):
        before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
        with pytest.raises(FervidError, match=f"^--out {re.escape(str(folder))}: holds {holds}"):
            fit(config, folder)
        assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before
    with pytest.raises(FervidError, match="the checkpoint folder of the run"):
        fit(config, run / "checkpoint")
    # resumed, it warned "no finished epoch to resume from; starting at epoch 1", then refused its files
    resumed = fervid_here("train", "--resume", "--out", str(finished), check=False)
    assert resumed.returncode == 2 and resumed.stderr == (f"fervid: error: {finished}: a finished run whose checkpoint/ was "
                                                          "deleted: there is nothing to resume (its model is there); start a "
                                                          "new run with another --out\n")


def test_a_resume_says_where_it_continues(trained_run):
    """It said "resuming RUN (compact, 8 epochs, ...)", which reads as 8 more, and nothing of the
    epoch it went on from or the best one so far."""
    import re

    run, _ = trained_run
    printed = (run.parent / "resumed.out").read_text()
    said = re.search(r"^continuing at epoch (\d+) of 8 \(best so far: epoch (\d+), validation accuracy (\d\.\d{4})\)$", printed, re.M)
    assert said, printed[:2000]
    at, best = int(said[1]), int(said[2])
    assert 4 <= at <= EPOCHS and 1 <= best < at
    history = json.loads((run / "checkpoint" / "state.json").read_text())["history"]
    assert f"{history[best - 1]['val_accuracy']:.4f}" == said[3], "the accuracy the best epoch recorded"
    assert printed.index(said[0]) < printed.index(f"epoch {at}/{EPOCHS} "), "said before that epoch trains"


def test_on_a_terminal_each_epochs_line_starts_a_line_of_its_own(tmp_path):
    """On a terminal Keras's progress bar had not ended its line when the checkpoint printed the
    epoch's: "...134ms/step - accuracy: 0.1625 - loss: 2.4773epoch 1/3  loss 2.4773 ..."."""
    import pty

    data = write_folder_dataset(tmp_path / "d", 0, {"train": 4, "validation": 2})
    leader, follower = pty.openpty()
    process = subprocess.Popen([*FERVID, "train", str(data), "--arch", "compact", "--epochs", "2", "--batch-size", "8",
                                "--out", str(tmp_path / "run")], stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process has ended
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(120) == 0, output.decode(errors="replace")[-3000:]
    lines = output.decode(errors="replace").replace("\r\n", "\n").split("\n")
    epoch_lines = [line for line in lines if "epoch 1/2" in line or "epoch 2/2" in line]
    assert len(epoch_lines) == 2 and all(line.lstrip("\r").startswith("epoch ") for line in epoch_lines), epoch_lines
    assert any("step" in line for line in lines), "a terminal gets Keras's progress bar"


def test_resume_continues_the_same_schedule(trained_run):
    run, _ = trained_run
    history = [row.split(",") for row in (run / "history.csv").read_text().split("\n")[1:] if row]
    assert [int(row[0]) for row in history] == list(range(1, EPOCHS + 1))
    # Learning rate after each epoch follows warm-up + cosine over the optimizer step, across the kill.
    steps = int(np.ceil(TRAIN_PER_CLASS * 7 / BATCH))
    warmup, total, peak = steps, EPOCHS * steps, 2e-3
    for epoch, row in enumerate(history, start=1):
        step = epoch * steps
        progress = (step - warmup) / (total - warmup)
        expected = peak * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))
        assert float(row[5]) == pytest.approx(expected, rel=1e-3, abs=1e-7), f"epoch {epoch}"


def a_copy_whose_state_ends_at(run: Path, target: Path, epochs_done: int) -> Path:
    """The run as a kill between writing the weights and writing state.json leaves it: the state of
    an earlier epoch beside the last epoch's weights."""
    shutil.copytree(run, target)
    state = json.loads((target / "checkpoint" / "state.json").read_text())
    history = state["history"][:epochs_done]
    best = max(history, key=lambda row: row["val_accuracy"])
    state.update(epochs_done=epochs_done, history=history, best_epoch=best["epoch"], best_val_accuracy=best["val_accuracy"])
    (target / "checkpoint" / "state.json").write_text(json.dumps(state))
    return target


def test_weights_saved_one_epoch_ahead_of_the_state_resume_as_that_epoch(trained_run, tmp_path):
    """A SIGKILL between the weights and state.json left the weights one epoch ahead, and a resume
    trained them once more as if they were the epoch before: one epoch too many, quietly."""
    run, _ = trained_run
    finished = json.loads((run / "checkpoint" / "state.json").read_text())
    behind = a_copy_whose_state_ends_at(run, tmp_path / "behind", EPOCHS - 1)
    result = fervid_here("train", "--resume", "--out", str(behind))
    assert f"{behind / 'checkpoint' / 'last.weights.h5'}: holds epoch {EPOCHS}, one more than checkpoint/state.json" in result.stderr
    assert f"epoch {EPOCHS}/{EPOCHS}" not in result.stdout, "the last epoch is done already: nothing is trained again"
    state = json.loads((behind / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == EPOCHS and [row["epoch"] for row in state["history"]] == list(range(1, EPOCHS + 1))
    last, measured = finished["history"][-1], state["history"][-1]
    assert measured["val_accuracy"] == pytest.approx(last["val_accuracy"]) and math.isnan(measured["loss"])
    assert measured["learning_rate"] == pytest.approx(last["learning_rate"], rel=1e-4)
    assert (state["best_epoch"], state["best_val_accuracy"]) == pytest.approx((finished["best_epoch"], finished["best_val_accuracy"]))
    card = json.loads((behind / "model.json").read_text())
    assert card["epochs_trained"] == EPOCHS and math.isfinite(card["metrics"]["training_minutes"])

    two_behind = a_copy_whose_state_ends_at(run, tmp_path / "two-behind", EPOCHS - 2)
    before = (two_behind / "checkpoint" / "state.json").read_bytes()
    result = fervid_here("train", "--resume", "--out", str(two_behind), check=False)
    steps = int(np.ceil(TRAIN_PER_CLASS * 7 / BATCH))
    assert result.returncode == 2 and result.stderr == (
        f"fervid: error: {two_behind / 'checkpoint' / 'last.weights.h5'}: holds training step {EPOCHS * steps}, but "
        f"checkpoint/state.json ends at epoch {EPOCHS - 2} (step {(EPOCHS - 2) * steps}); the two files come from "
        "different runs: start a new run with another --out\n")
    assert (two_behind / "checkpoint" / "state.json").read_bytes() == before


def test_a_resume_that_catches_up_an_epoch_trains_on_as_a_clean_resume_does(tmp_path, monkeypatch):
    """After the repair of a kill between the weights and state.json, dropout and augmentation were
    seeded for the epoch before (only the shuffle moved on): the next epoch trained otherwise than
    after a clean stop at the same epoch."""
    from fervid.training.checkpoint import RunCheckpoint

    data = write_folder_dataset(tmp_path / "d", 0, {"train": 8, "validation": 2})
    stopped = tmp_path / "stopped"
    on_epoch_end = RunCheckpoint.on_epoch_end

    def stop_after_epoch_3(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if epoch + 1 == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(RunCheckpoint, "on_epoch_end", stop_after_epoch_3)
        result = fervid_here("train", str(data), "--arch", "compact", "--epochs", "5", "--batch-size", "8",
                             "--warmup-epochs", "1", "--out", str(stopped), check=False)
    assert result.returncode == 130, result.stderr
    clean = tmp_path / "clean"
    shutil.copytree(stopped, clean)
    behind = a_copy_whose_state_ends_at(stopped, tmp_path / "behind", 2)
    for run in (clean, behind):
        fervid_here("train", "--resume", "--out", str(run))
    epoch_4 = [json.loads((run / "checkpoint" / "state.json").read_text())["history"][3] for run in (clean, behind)]
    assert epoch_4[0]["loss"] == pytest.approx(epoch_4[1]["loss"], rel=1e-6)
    assert epoch_4[0]["val_loss"] == pytest.approx(epoch_4[1]["val_loss"], rel=1e-6)


def test_run_folder_has_every_artifact(trained_run):
    run, _ = trained_run
    for name in ["model.keras", "model.onnx", "model.json", "history.csv", "curves.png", "confusion.png", "report.md",
                 "metrics.json", "config.json", "checkpoint/best.weights.h5", "checkpoint/last.weights.h5"]:
        assert (run / name).stat().st_size > 0, name
    card = json.loads((run / "model.json").read_text())
    assert card["classes"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert card["input"]["shape"] == [None, 48, 48, 1]
    assert card["dataset"]["counts"]["train"]["happy"] == TRAIN_PER_CLASS
    assert card["training"]["epochs"] == EPOCHS and card["epochs_trained"] == EPOCHS
    assert "keras" in card["libraries"]
    assert not list(run.rglob("*.tmp*")), "no temporary files may be left behind"
    report = (run / "report.md").read_text()
    assert "macro" in report and "## Calibration" in report and "**Warning**" not in report, "a model that learned"
    metrics = json.loads((run / "metrics.json").read_text())
    calibration = metrics["flip_tta"]["calibration"]
    assert sum(row["faces"] for row in calibration["bins"]) == card["dataset"]["validation_images"]
    # what the scores were measured on and how, as evaluate --json says it
    assert metrics["measured"] == {"split_source": card["dataset"]["validation_source"], "images": card["dataset"]["validation_images"],
                                   "input_blur": card["inference"]["input_blur"], "temperature": card["inference"]["temperature"],
                                   "flip_tta": True}
    assert "The curves' validation accuracy is as training selects the best epoch (sharp faces, one view, the training precision)" in report
    seconds = card["metrics"]["training_seconds"]  # seconds under a minute, minutes from one on (a slow host)
    assert f"- training time {seconds:.0f} s\n" in report if seconds < 60 else f"- training time {card['metrics']['training_minutes']:.1f} min\n" in report
    assert card["metrics"]["ece_flip_tta"] == pytest.approx(calibration["ece"])
    check = card["metrics"]["input_blur_check"]
    assert check["measured"] > 0, "the default recipe warps (blurs) training faces"
    kept = check["accuracy_flip_tta_blurred"] >= check["accuracy_flip_tta_sharp"]
    fitted = card["metrics"]["temperature_check"]
    applied = fitted["temperature"] if fitted["kept"] else 1.0
    assert card["inference"] == {"flip_tta": True, "input_blur": check["measured"] if kept else 0.0, "temperature": applied}
    if kept:
        assert f"- input blur {card['inference']['input_blur']} px, applied by the runtime" in report and "kept" in report
    else:  # "0.0 px, applied by the runtime (...: not applied)" said both
        assert "- no input blur: the runtime and every score here use the faces as they are (" in report and "not applied" in report
        assert "applied by the runtime and in every score here" not in report
    assert 0.25 <= fitted["temperature"] <= 4.0 and fitted["nll"] <= fitted["nll_at_1"]
    assert fitted["kept"] == (fitted["ece_flip_tta_fitted"] <= fitted["ece_flip_tta_at_1"])
    assert card["metrics"]["ece_flip_tta"] == pytest.approx(fitted["ece_flip_tta_fitted"] if fitted["kept"] else fitted["ece_flip_tta_at_1"])
    assert f"confidence temperature {applied}" in report


def returned_from_a_gpu_machine(run: Path, target: Path) -> Path:
    """The three files a GPU run sends back: config, state and the best weights (no optimizer state)."""
    (target / "checkpoint").mkdir(parents=True)
    for name in ["config.json", "checkpoint/state.json", "checkpoint/best.weights.h5"]:
        shutil.copy(run / name, target / name)
    return target


def test_a_finished_run_is_completed_from_its_best_weights_alone(trained_run, tmp_path):
    run, _ = trained_run
    returned = returned_from_a_gpu_machine(run, tmp_path / "returned")
    fervid_here("train", "--resume", "--out", str(returned))
    original = json.loads((run / "metrics.json").read_text())
    finished = json.loads((returned / "metrics.json").read_text())
    assert finished["flip_tta"]["accuracy"] == pytest.approx(original["flip_tta"]["accuracy"])
    assert finished["single"]["confusion"] == original["single"]["confusion"]
    assert (returned / "model.onnx").stat().st_size > 0
    assert not (returned / "checkpoint" / "last.weights.h5").exists(), "finishing must not train again"


def test_a_backend_without_onnx_export_scores_the_keras_model(trained_run, tmp_path, monkeypatch, capsys):
    from fervid.training import run as run_module
    from fervid.training.config import TrainConfig

    run, _ = trained_run
    returned = returned_from_a_gpu_machine(run, tmp_path / "returned")
    monkeypatch.setattr(run_module, "onnx_export_available", lambda: False)
    card = run_module.train(TrainConfig.load(returned / "config.json"), returned, resume=True)
    assert not (returned / "model.onnx").exists() and (returned / "model.keras").stat().st_size > 0
    original = json.loads((run / "metrics.json").read_text())["single"]
    assert card["metrics"]["accuracy"] == pytest.approx(original["accuracy"], abs=0.02)
    assert f"fervid train --resume --out {returned}" in capsys.readouterr().out


def test_onnx_export_agrees_with_keras_and_has_dynamic_batch(trained_run, tmp_path):
    run, _ = trained_run
    from fervid.export.convert import export_checked
    from fervid.runtime.classify import ExpressionClassifier

    result = export_checked(run / "model.keras", tmp_path / "exported.onnx")
    assert result.difference < 1e-4
    classifier = ExpressionClassifier(result.path)
    assert classifier.card["name"] == "fervid-patterns"
    for size in (1, 5):
        probabilities = classifier.predict_inputs(np.random.default_rng(size).random((size, 48, 48, 1), dtype=np.float32))
        assert probabilities.shape == (size, 7)
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_export_takes_a_run_folder_and_names_a_damaged_model_as_damaged(trained_run, tmp_path):
    """A run folder exports its model.keras beside it; an empty .keras is called what it is, not 'not found'."""
    import shutil

    run, data = trained_run
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("model.keras", "model.json"):
        shutil.copy(run / name, copy / name)
    result = fervid_here("export", str(copy))
    assert f"wrote {copy / 'model.onnx'}" in " ".join(result.stdout.split())
    assert (copy / "model.onnx").stat().st_size > 0 and (copy / "model.json").exists()
    (tmp_path / "empty.keras").write_bytes(b"")
    float32 = (copy / "model.onnx").read_bytes()
    refused = fervid_here("export", str(copy), "--int8", str(data), "--out", str(copy / "model.onnx"), check=False)
    assert refused.returncode == 2 and "write the int8 model elsewhere (default: model.int8.onnx)" in refused.stderr
    assert (copy / "model.onnx").read_bytes() == float32
    card = (copy / "model.json").read_text()
    fervid_here("export", str(copy), "--int8", str(data))
    assert json.loads((copy / "model.int8.json").read_text())["precision"] == "int8" and (copy / "model.int8.onnx").exists()
    assert (copy / "model.onnx").read_bytes() == float32 and (copy / "model.json").read_text() == card
    flat = write_folder_dataset(tmp_path / "flat", 6)  # class folders only: other data than the model's
    refused = fervid_here("export", str(copy), "--int8", str(flat), "--out", str(tmp_path / "flat.onnx"), check=False)
    assert refused.returncode == 2 and not (tmp_path / "flat.onnx").exists(), "its card named the model's data, scored on these"
    assert refused.stderr.startswith(f"fervid: error: --int8 {flat}: not the data the model was trained on (") and \
        "validated on its stratified 10% of train (seed 42); its card: data, 280 training faces, validated on its validation split)" in refused.stderr
    from fervid.training.config import TrainConfig
    from fervid.training.dataset import load_training_data

    trained_on_flat = tmp_path / "flat-model"  # a model whose card says it trained on those folders: scored on the same holdout
    trained_on_flat.mkdir()
    shutil.copy(copy / "model.keras", trained_on_flat / "m.keras")
    # trained with --seed 7 --val-fraction 0.2, as its card says: the holdout drawn as its run drew it
    flat_data = load_training_data(TrainConfig(data=str(flat), seed=7, val_fraction=0.2))
    flat_card = json.loads(card)
    flat_card["dataset"].update(counts=flat_data.counts, validation_source=flat_data.validation_source, fingerprint="0" * 20)
    flat_card["training"].update(seed=7, val_fraction=0.2)
    (trained_on_flat / "m.json").write_text(json.dumps(flat_card))
    # the same counts, other content (a file renamed, or only copied): the holdout may hold training faces
    warned = fervid_here("export", str(trained_on_flat / "m.keras"), "--int8", str(flat), "--out", str(tmp_path / "flat.onnx"))
    assert f"its content fingerprint ({flat_data.fingerprint}) is not the card's ({'0' * 20}): if files changed" in \
        " ".join(warned.stderr.split()), "said, not refused: a copy or an older fervid's card differs too"
    flat_card["dataset"]["fingerprint"] = flat_data.fingerprint
    (trained_on_flat / "m.json").write_text(json.dumps(flat_card))
    held_out = fervid_here("export", str(trained_on_flat / "m.keras"), "--int8", str(flat), "--out", str(tmp_path / "flat.onnx"))
    assert "of the faces of the stratified 20% of train (seed 7); accuracy there" in held_out.stdout
    assert f"wrote {tmp_path / 'flat.onnx'} and its card flat.json" in " ".join(held_out.stdout.split())
    assert json.loads((tmp_path / "flat.json").read_text())["metrics"]["split"].startswith("stratified 20% of train")
    (tmp_path / "notes.json").write_text('{"mine": true}')  # a JSON of the user's where the card would go
    refused = fervid_here("export", str(copy), "--out", str(tmp_path / "notes.onnx"), check=False)
    assert refused.returncode == 2 and "notes.json beside it is not a model card" in refused.stderr
    assert (tmp_path / "notes.json").read_text() == '{"mine": true}' and not (tmp_path / "notes.onnx").exists()
    ours = copy / "model.ONNX"  # another file than model.onnx, but its card would be the run's model.json
    refused = fervid_here("export", str(copy), "--int8", str(data), "--out", str(ours), check=False)
    assert refused.returncode == 2 and "write the int8 model elsewhere" in refused.stderr and not ours.exists()
    assert (copy / "model.json").read_text() == card
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "m.onnx").write_bytes(b"the model there")
    (elsewhere / "m.json").mkdir()  # where its card must go: refused before converting, the model left as it was
    refused = fervid_here("export", str(copy), "--out", str(elsewhere / "m.onnx"), check=False)
    assert refused.returncode == 2 and "m.json: a folder, not a file" in refused.stderr and "wrote" not in refused.stdout
    assert (elsewhere / "m.onnx").read_bytes() == b"the model there"
    for argument, message in ((tmp_path / "empty.keras", "empty or damaged"), (tmp_path, "a folder without model.keras")):
        failed = fervid_here("export", str(argument), check=False)
        assert failed.returncode == 2 and message in failed.stderr and len(failed.stderr.strip().splitlines()) == 1


def test_int8_export_is_scored_and_carries_its_card(trained_run, tmp_path):
    run, data = trained_run
    target = tmp_path / "int8.onnx"
    result = run_fervid("export", str(run / "model.keras"), "--int8", str(data), "--out", str(target))
    assert "int8: same class as float32" in result.stdout
    assert "Warning" not in result.stderr, result.stderr  # library warnings say nothing about the model
    from fervid.runtime.classify import ExpressionClassifier

    classifier = ExpressionClassifier(target)
    card = json.loads(target.with_suffix(".json").read_text())
    assert classifier.card == card and card["precision"] == "int8"
    assert card["metrics"]["int8_float32_agreement"] >= 0.9
    assert 0.0 <= card["metrics"]["ece_flip_tta"] <= 1.0
    assert abs(card["metrics"]["accuracy_flip_tta"] - card["metrics"]["float32_accuracy_flip_tta"]) <= 0.1
    assert target.stat().st_size < (run / "model.onnx").stat().st_size
    probabilities = classifier.predict_inputs(np.random.default_rng(0).random((4, 48, 48, 1), dtype=np.float32))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)  # the softmax is not quantized
    import onnx

    graph = onnx.load(str(target)).graph  # nor are the logits it takes (a uint8 pair there clipped them)
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    softmax = next(node for node in graph.node if node.op_type == "Softmax")
    assert made_by[softmax.input[0]] in ("Gemm", "MatMul", "Add"), made_by[softmax.input[0]]

    # A .keras with no card beside it: no card for the int8 file either, and the printed score is the
    # one the runtime gives it (single view: nothing tells the runtime to average flips).
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copyfile(run / "model.keras", lone / "m.keras")
    # the card of a model exported there before: left, it described this one (flip averaging, blur)
    shutil.copyfile(target.with_suffix(".json"), lone / "m.int8.json")
    exported = fervid_here("export", str(lone / "m.keras"), "--int8", str(data))
    printed = exported.stdout
    assert f"{lone / 'm.int8.json'}: removed: the card of the model m.int8.onnx replaced" in " ".join(exported.stderr.split())
    assert (lone / "m.int8.onnx").exists() and not (lone / "m.int8.json").exists()
    copy = tmp_path / "copy"  # in a run folder the card beside model.onnx is its model.keras's too: kept
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoint"))
    shutil.copyfile(run / "model.keras", copy / "other.keras")
    fervid_here("export", str(copy / "other.keras"), "--out", str(copy / "model.onnx"))
    assert (copy / "model.json").read_text() == (run / "model.json").read_text()
    assert "int8: same class as float32" in printed and "flip averaging" not in printed
    extra = tmp_path / "extra"  # the model's data and a folder that is no expression: read as training would be told to
    shutil.copytree(data, extra)
    (extra / "train" / "contempt").mkdir()
    shutil.copy(next((extra / "train" / "happy").iterdir()), extra / "train" / "contempt" / "c.png")
    refused = fervid_here("export", str(run / "model.keras"), "--int8", str(extra), "--out", str(tmp_path / "x.onnx"), check=False)
    assert refused.returncode == 2 and "drop them with --unknown drop" in refused.stderr, refused.stderr
    fervid_here("export", str(run / "model.keras"), "--int8", str(extra), "--unknown", "drop", "--out", str(tmp_path / "x.onnx"))
    assert json.loads((tmp_path / "x.json").read_text())["metrics"]["accuracy"] == card["metrics"]["accuracy"], "the same faces"
    refused = fervid_here("export", str(run / "model.keras"), "--map", "contempt=disgust", check=False)
    assert refused.returncode == 2 and "without --int8 no data is read" in refused.stderr
    shown = float(printed.split("accuracy there ")[1].split()[0])
    fervid_here("evaluate", str(lone / "m.int8.onnx"), str(data), "--json", str(lone / "scores.json"))
    scored = json.loads((lone / "scores.json").read_text())
    assert scored["flip_tta"] is False and shown == pytest.approx(scored["accuracy"], abs=1e-4)


def test_evaluate_onnx_and_keras_models_agree(trained_run, tmp_path):
    run, data = trained_run
    onnx_json, keras_json = tmp_path / "onnx.json", tmp_path / "keras.json"
    printed = fervid_here("evaluate", str(run / "model.onnx"), str(data), "--json", str(onnx_json),
                         "--confusion", str(tmp_path / "c.png")).stdout
    fervid_here("evaluate", str(run / "model.keras"), str(data), "--json", str(keras_json))
    onnx_metrics, keras_metrics = json.loads(onnx_json.read_text()), json.loads(keras_json.read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "model.json").read_text())["inference"]["flip_tta"], "trained with flips: the runtime averages"
    assert onnx_metrics["flip_tta"] and keras_metrics["flip_tta"], "scored by default as the runtime runs the model"
    assert onnx_metrics["accuracy"] == pytest.approx(trained["flip_tta"]["accuracy"])
    assert keras_metrics["confusion"] == onnx_metrics["confusion"]
    single = fervid_here("evaluate", str(run / "model.onnx"), str(data), "--no-flip-tta", "--json", str(onnx_json))
    assert "(flip averaging)" not in single.stdout and json.loads(onnx_json.read_text())["flip_tta"] is False
    assert json.loads(onnx_json.read_text())["accuracy"] == pytest.approx(trained["single"]["accuracy"])
    keras_only = tmp_path / "jax-run"  # a run on a backend without ONNX export has model.keras alone
    keras_only.mkdir()
    for name in ("model.keras", "model.json"):
        shutil.copy(run / name, keras_only / name)
    fervid_here("evaluate", str(keras_only), str(data), "--json", str(keras_json))
    assert json.loads(keras_json.read_text())["confusion"] == onnx_metrics["confusion"]
    blurred_flat = fervid_here("evaluate", str(run / "model.onnx"), str(data), "--input-blur", "1e9", check=False)
    assert blurred_flat.returncode == 2 and blurred_flat.stderr.startswith(
        "fervid: error: Invalid value for '--input-blur': 1e+09 is above the largest allowed, 10 (see ")
    assert "macro-F1" in printed and (tmp_path / "c.png").stat().st_size > 0
    assert f"on {data} [validation], " in " ".join(printed.split()), "the split is printed, not eaten as Rich markup"


def test_evaluate_input_blur_defaults_to_the_card_and_can_be_overridden(trained_run, tmp_path):
    run, data = trained_run
    scores = {}
    card_blur = json.loads((run / "model.json").read_text())["inference"]["input_blur"]
    for model in ("model.onnx", "model.keras"):
        for blur in (None, str(card_blur), "1.5"):
            target = tmp_path / f"{model}-{blur}.json"
            fervid_here("evaluate", str(run / model), str(data), "--json", str(target), *(["--input-blur", blur] if blur else []))
            scores[model, blur] = json.loads(target.read_text())
    assert scores["model.onnx", "1.5"]["input_blur"] == 1.5
    assert scores["model.onnx", None]["input_blur"] == scores["model.keras", None]["input_blur"] == card_blur  # what was applied
    card_temperature = json.loads((run / "model.json").read_text())["inference"]["temperature"]
    assert scores["model.onnx", None]["temperature"] == scores["model.keras", None]["temperature"] == card_temperature
    for blur in (None, str(card_blur), "1.5"):  # the option reaches both kinds of model alike
        assert scores["model.onnx", blur]["confusion"] == scores["model.keras", blur]["confusion"]
    assert scores["model.onnx", None]["confusion"] == scores["model.onnx", str(card_blur)]["confusion"], "the default is the card's"
    probabilities = {blur: scores["model.onnx", blur]["calibration"]["mean_confidence"] for blur in (str(card_blur), "1.5")}
    assert probabilities[str(card_blur)] != probabilities["1.5"], "a different blur gives the model different faces"


def test_evaluate_applies_the_card_temperature_unless_told_otherwise(trained_run, tmp_path):
    run, data = trained_run
    temperature = json.loads((run / "model.json").read_text())["inference"]["temperature"]
    assert temperature != 1.0, "drawn patterns are learnt perfectly, so the fit sharpens the probabilities"
    scores = {}
    for model in ("model.onnx", "model.keras"):
        for option in ([], ["--temperature", "1"]):
            target = tmp_path / f"{model}-{len(option)}.json"
            fervid_here("evaluate", str(run / model), str(data), "--flip-tta", "--json", str(target), *option)
            scores[model, len(option)] = json.loads(target.read_text())
    for model in ("model.onnx", "model.keras"):
        assert scores[model, 0]["confusion"] == scores[model, 2]["confusion"], "a temperature never changes the winning class"
        assert scores[model, 0]["calibration"]["mean_confidence"] > scores[model, 2]["calibration"]["mean_confidence"]
        assert scores[model, 0]["calibration"]["mean_confidence"] == pytest.approx(scores["model.onnx", 0]["calibration"]["mean_confidence"], abs=1e-4)
    card = json.loads((run / "model.json").read_text())
    assert scores["model.onnx", 0]["calibration"]["ece"] == pytest.approx(card["metrics"]["ece_flip_tta"], abs=1e-6)


def test_the_runtime_tempers_after_flip_averaging(trained_run, tmp_path):
    from fervid.export.onnx import write_card
    from fervid.runtime.classify import ExpressionClassifier, temper

    run, _ = trained_run
    card = json.loads((run / "model.json").read_text())
    card["inference"]["temperature"] = 2.0
    model = tmp_path / "warm.onnx"
    shutil.copy(run / "model.onnx", model)
    write_card(model, card)
    classifier = ExpressionClassifier(model)
    faces = np.random.default_rng(1).random((6, 48, 48, 1), dtype=np.float32)
    plain = classifier.predict_inputs(faces, flip_tta=False, temperature=1.0)
    mirrored = classifier.predict_inputs(faces[:, :, ::-1, :], flip_tta=False, temperature=1.0)
    assert classifier.temperature == 2.0
    assert np.allclose(classifier.predict_inputs(faces, flip_tta=False), temper(plain, 2.0), atol=1e-6)
    assert np.allclose(classifier.predict_inputs(faces, flip_tta=True), temper((plain + mirrored) / 2, 2.0), atol=1e-6)


def test_temper_rescales_confidence_and_keeps_the_winner():
    from fervid.runtime.classify import temper

    logits = np.random.default_rng(0).normal(0, 2, (50, 7))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert temper(probabilities, 1.0) is probabilities
    for temperature in (0.5, 3.0):
        tempered = temper(probabilities, temperature)
        scaled = np.exp(logits / temperature) / np.exp(logits / temperature).sum(axis=1, keepdims=True)
        assert np.allclose(tempered, scaled, atol=1e-5), "softmax(log p / T) is softmax(logits / T)"
        assert (tempered.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert (temper(probabilities, 0.5).max(axis=1) > probabilities.max(axis=1)).all()
    assert (temper(probabilities, 3.0).max(axis=1) < probabilities.max(axis=1)).all()


def test_a_temperature_that_raises_the_calibration_error_is_not_kept():
    from fervid.evaluation.metrics import calibration
    from fervid.evaluation.temperature import choose_temperature

    # Half the faces at confidence 0.9 and right 90% of the time, half at 0.55 and right 55% of the
    # time: the confidence is exact (ECE 0). But every wrong answer is a class the model gave 0.2%,
    # so the log-likelihood asks for softer probabilities (T > 1), which would open a gap.
    labels = np.zeros(200, dtype=np.int64)
    labels[90:100] = labels[155:200] = 2
    probabilities = np.array([[0.9, 0.09] + [0.002] * 5] * 100 + [[0.55, 0.44] + [0.002] * 5] * 100)
    assert calibration(probabilities, labels).ece == pytest.approx(0.0, abs=1e-9)
    temperature, check = choose_temperature(probabilities, labels)
    assert check["temperature"] > 1.0 and check["ece_flip_tta_fitted"] > check["ece_flip_tta_at_1"]
    assert temperature == 1.0 and check["kept"] is False

    # Wrong answers spread evenly over the other classes, reported over-confident (logits x 3): the
    # fit finds the 3 back and lowers the error, so it stays.
    labels = np.repeat(np.arange(7), 30)
    honest = np.full((len(labels), 7), 0.3 / 6)
    honest[np.arange(len(labels)), (labels + (np.arange(len(labels)) % 10 >= 7)) % 7] = 0.7
    overconfident = honest**3 / (honest**3).sum(axis=1, keepdims=True)
    temperature, check = choose_temperature(overconfident, labels)
    assert check["kept"] is True and temperature == check["temperature"] == pytest.approx(3.0, rel=0.05)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_temperature_recovers_the_miscalibration(true_temperature):
    from fervid.evaluation.temperature import fit_temperature

    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2, (20_000, 7))
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(7, p=row) for row in truth])
    # A model that reports softmax(logits * T): it needs temperature T to give the true probabilities back.
    reported = np.exp(logits * true_temperature) / np.exp(logits * true_temperature).sum(axis=1, keepdims=True)
    temperature, check = fit_temperature(reported, labels)
    assert temperature == pytest.approx(true_temperature, rel=0.05)
    assert check["nll"] < check["nll_at_1"] and check["ece_flip_tta_at_1"] > 0.05


def test_choose_input_blur_keeps_it_only_when_validation_is_no_worse():
    from fervid.training.matched_blur import choose_input_blur

    labels = np.arange(70) % 7
    inputs = np.zeros((70, 48, 48, 1), np.float32)
    label_of = lambda batch: labels[np.arange(len(batch)) % len(labels)]  # noqa: E731  (a face's mirror follows the batch)

    def predictor_for(right_when_blurred: bool):
        def make(input_blur: float):
            right = (input_blur > 0) == right_when_blurred
            return lambda batch: np.eye(7, dtype=np.float32)[(label_of(batch) + (0 if right else 1)) % 7]
        return make

    blur, check = choose_input_blur(predictor_for(True), inputs, labels, 0.7)
    assert blur == 0.7 and check == {"measured": 0.7, "accuracy_flip_tta_sharp": 0.0, "accuracy_flip_tta_blurred": 1.0, "flip_tta": True}
    seen = []  # a --no-flip net is scored on single views, as its card makes the runtime run it
    counting = lambda input_blur: lambda batch: seen.append(len(batch)) or np.eye(7, dtype=np.float32)[label_of(batch)]  # noqa: E731
    assert choose_input_blur(counting, inputs, labels, 0.7, flip_tta=False)[1]["flip_tta"] is False
    assert sum(seen) == 2 * len(inputs), "one view per face for each of the two blurs"
    assert choose_input_blur(predictor_for(False), inputs, labels, 0.7)[0] == 0.0
    assert choose_input_blur(predictor_for(True), inputs, labels, 0.0) == (0.0, {"measured": 0.0})


def test_evaluate_against_another_model_is_a_paired_test(trained_run, tmp_path):
    run, data = trained_run
    same = fervid_here("evaluate", str(run / "model.onnx"), str(data), "--against", str(run / "model.keras")).stdout
    assert "only this model right on 0 faces" in same and "p = 1 " in same and "not distinguishable" in same
    result = tmp_path / "against.json"
    # The bundled FER2013 model is near chance on drawn patterns; the model trained on them is not.
    printed = fervid_here("evaluate", str(run / "model.onnx"), str(data), "--against", "fervid-vgg", "--json", str(result)).stdout
    against = json.loads(result.read_text())["against"]
    assert against["only_this_right"] > against["only_other_right"] and against["mcnemar_p"] < 0.05
    assert "a real difference" in printed
    mine = json.loads(result.read_text())["accuracy"]
    assert f"against fervid-vgg (flip averaging, input blur 0.7, temperature 1): accuracy {mine:.4f} for this model vs {against['accuracy']:.4f}; " in " ".join(printed.split())


def test_mcnemar_matches_the_binomial_tail():
    from fervid.evaluation.metrics import mcnemar_p

    first = np.array([True] * 5 + [False] * 3)
    second = np.array([False] * 5 + [False] * 3)
    assert mcnemar_p(first, second) == (5, 0, pytest.approx(2 / 2**5))
    # 277 vs 252 discordant faces: scipy.stats.binomtest(277, 529).pvalue = 0.29672...
    b = np.array([True] * 277 + [False] * 252)
    assert mcnemar_p(b, ~b)[2] == pytest.approx(0.2967202641108667, rel=1e-9)
    assert mcnemar_p(b, b) == (0, 0, 1.0)
    # AffectNet-sized disagreement (each coefficient is built from the last, not math.comb afresh):
    # the two-sided tail from log-gamma terms, 0.1970755162...
    b = np.array([True] * 12000 + [False] * 11800)
    assert mcnemar_p(b, ~b) == (12000, 11800, pytest.approx(0.19707551621, rel=1e-9))


def textures(count: int = 64, seed: int = 0) -> np.ndarray:
    """Faces-sized random textures with detail at every scale (what the blur measurement needs)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((count, 48, 48)).astype(np.float32)
    coarse = np.stack([cv2.resize(cv2.resize(n, (12, 12), interpolation=cv2.INTER_AREA), (48, 48)) for n in noise])
    return np.clip(0.5 * coarse + 0.5 * noise, 0, 1)[..., None].astype(np.float32)


def test_smooth_blurs_without_moving_or_darkening_faces():
    from fervid.preprocess import smooth
    from fervid.training.matched_blur import gradient_energy

    faces = textures()
    assert np.array_equal(smooth(faces, 0.0), faces)
    flat = np.full((2, 48, 48, 1), 0.4, np.float32)
    assert np.allclose(smooth(flat, 1.0), flat, atol=1e-6)
    blurred = smooth(faces, 0.7)
    assert blurred.shape == faces.shape and blurred.dtype == np.float32
    assert abs(float(blurred.mean()) - float(faces.mean())) < 1e-3
    energies = [gradient_energy(smooth(faces, sigma)) for sigma in (0.0, 0.5, 0.7, 1.0)]
    assert energies == sorted(energies, reverse=True) and energies[-1] < 0.5 * energies[0]
    dot = np.zeros((1, 48, 48, 1), np.float32)
    dot[0, 20, 30, 0] = 1.0
    assert np.unravel_index(np.argmax(smooth(dot, 0.7)), dot.shape) == (0, 20, 30, 0), "the blur must not shift faces"


def test_equivalent_blur_recovers_a_known_gaussian():
    from fervid.preprocess import smooth
    from fervid.training.matched_blur import equivalent_blur

    faces = textures()
    for sigma in (0.5, 0.8, 1.2):
        assert equivalent_blur(faces, smooth(faces, sigma)) == pytest.approx(sigma, abs=0.02)
    assert equivalent_blur(faces, faces) == 0.0
    noisier = np.clip(faces + np.random.default_rng(1).normal(0, 0.1, faces.shape).astype(np.float32), 0, 1)
    assert equivalent_blur(faces, noisier) == 0.0, "sharper-than-original is no blur, not a negative one"


def test_the_recipes_warps_set_the_input_blur():
    from fervid.training.matched_blur import augmentation_blur

    faces = textures(256)
    assert augmentation_blur(0.0, 0.0, 0.0, faces) == 0.0
    shift_only = augmentation_blur(0.0, 0.0, 0.1, faces)
    all_warps = augmentation_blur(0.05, 0.1, 0.1, faces)
    assert 0.3 <= shift_only < all_warps <= 1.2, (shift_only, all_warps)
    assert augmentation_blur(0.05, 0.1, 0.1, faces) == all_warps, "seeded: the same recipe gives the same blur"


@pytest.mark.parametrize("warp", ["each", "once"])
def test_augmentation_keeps_faces_in_the_input_range_and_is_off_at_inference(warp):
    from fervid.model.architectures import build_augmenter

    faces = np.random.default_rng(0).random((16, 48, 48, 1), dtype=np.float32)
    augmenter = build_augmenter(flip=True, rotation=0.05, zoom=0.1, shift=0.1, brightness=0.3, contrast=0.3, seed=1, warp=warp)
    changed = np.asarray(augmenter(faces, training=True))
    assert changed.min() >= 0.0 and changed.max() <= 1.0
    assert np.abs(changed - faces).mean() > 0.05
    assert np.array_equal(np.asarray(augmenter(faces, training=False)), faces)


def test_contrast_is_lowered_as_often_as_raised():
    """Keras 3 reads RandomContrast(0.2) as factors 1..1.2: every training face got more contrast
    than the runtime's, never less (the teacher views draw 1 +- 0.2, as the docs say)."""
    from fervid.model.architectures import build_augmenter

    ramp = np.tile(np.linspace(0.3, 0.7, 48, dtype=np.float32), (512, 48, 1))[..., None]  # no clipping at +-20%
    augmenter = build_augmenter(flip=False, rotation=0, zoom=0, shift=0, contrast=0.2, seed=1, dtype="float32", warp="each")
    changed = np.asarray(augmenter(ramp, training=True))
    slopes = (changed[:, 0, -1, 0] - changed[:, 0, 0, 0]) / (ramp[:, 0, -1, 0] - ramp[:, 0, 0, 0])
    assert 0.8 - 1e-3 <= slopes.min() < 0.85 and 1.15 < slopes.max() <= 1.2 + 1e-3
    assert 0.4 < (slopes < 1).mean() < 0.6


def blob_centres(faces: np.ndarray) -> np.ndarray:
    """(x, y) centre of mass of each face."""
    weights = faces[..., 0] / faces[..., 0].sum(axis=(1, 2), keepdims=True)
    ys, xs = np.mgrid[0:48, 0:48]
    return np.stack([(weights * xs).sum(axis=(1, 2)), (weights * ys).sum(axis=(1, 2))], axis=1)


@pytest.mark.parametrize("rotation, zoom, shift", [(0.05, 0, 0), (0, 0.1, 0), (0, 0, 0.1), (0.05, 0.1, 0.1)])
def test_one_composed_warp_moves_faces_as_the_three_keras_layers_do(rotation, zoom, shift):
    """Same ranges of rotation, zoom and shift: an off-centre blob lands in the same places."""
    from fervid.model.architectures import build_augmenter

    ys, xs = np.mgrid[0:48, 0:48]
    blob = np.exp(-((xs - 31.0) ** 2 + (ys - 17.0) ** 2) / (2 * 1.5**2)).astype(np.float32)
    faces = np.repeat(blob[None, :, :, None], 2000, axis=0)
    centres = {
        warp: blob_centres(np.asarray(build_augmenter(flip=False, rotation=rotation, zoom=zoom, shift=shift, seed=3,
                                                      dtype="float32", warp=warp)(faces, training=True)))
        for warp in ("each", "once")
    }
    assert np.allclose(centres["once"].mean(axis=0), centres["each"].mean(axis=0), atol=0.3)
    assert np.allclose(centres["once"].std(axis=0), centres["each"].std(axis=0), rtol=0.1)
    assert centres["once"].std(axis=0).min() > 0.2, "every face draws its own warp"


def test_one_composed_warp_blurs_less_than_three():
    from fervid.training.matched_blur import augmentation_blur

    faces = textures(256)
    assert augmentation_blur(0.05, 0.1, 0.1, faces, warp="once") < augmentation_blur(0.05, 0.1, 0.1, faces, warp="each") - 0.1


def test_augmentation_layers_draw_independent_random_numbers():
    """Keras layers built with one seed draw identical numbers: every face's rotation would then fix its
    zoom and shift too (and nearly its flip). A seeded augmenter must stay reproducible yet independent."""
    from fervid.model.architectures import build_augmenter

    faces = np.zeros((1024, 48, 48, 1), dtype=np.float32)

    def draws(augmenter) -> dict[str, np.ndarray]:
        flip, rotation, zoom, shift = augmenter.layers
        return {
            "flip": np.asarray(flip.get_random_transformation(faces, training=True)["flips"]).reshape(-1),
            "angle": np.asarray(rotation.get_random_transformation(faces, training=True)["angle"]).reshape(-1),
            "zoom": np.asarray(zoom.get_random_transformation(faces, training=True)["height_zoom"]).reshape(-1),
            "shift": np.asarray(shift.get_random_transformation(faces, training=True)["translations"])[:, 1],
        }

    first = draws(build_augmenter(flip=True, rotation=0.05, zoom=0.1, shift=0.1, seed=42))
    for a, b in [("flip", "angle"), ("angle", "zoom"), ("zoom", "shift"), ("flip", "shift")]:
        assert abs(np.corrcoef(first[a].astype(float), first[b])[0, 1]) < 0.15, f"{a} and {b} move together"
    again = draws(build_augmenter(flip=True, rotation=0.05, zoom=0.1, shift=0.1, seed=42))
    assert all(np.array_equal(first[k], again[k]) for k in first), "the same seed gives the same augmentations"


def test_a_resumed_run_draws_new_augmentations_not_the_first_epochs_again():
    """Keras saves no random-number state with the weights: each resume drew the first epoch's
    rotations, zooms and shifts over again (a run resumed every session repeated them each time)."""
    from fervid.model.architectures import build_classifier
    from fervid.training.config import TrainConfig
    from fervid.training.fit import compile_for_training

    faces = np.random.default_rng(0).random((16, 48, 48, 1)).astype(np.float32)
    config = TrainConfig(data="unused", arch="compact")

    def augmented(epochs_done: int) -> np.ndarray:
        model = compile_for_training(config, build_classifier("compact"), 10, epochs_done)
        augmenter = model.layers[1]
        return np.asarray(augmenter(faces, training=True))

    start = augmented(0)
    assert np.array_equal(start, augmented(0)), "the same epoch, the same augmentations"
    assert not np.allclose(start, augmented(3)), "a resume after epoch 3 draws anew"


def test_random_erasing_covers_part_of_every_face_only_in_training():
    from fervid.model.architectures import build_augmenter

    faces = np.full((32, 48, 48, 1), 0.5, dtype=np.float32)
    augmenter = build_augmenter(flip=False, rotation=0, zoom=0, shift=0, erasing=1.0, seed=3)
    erased = np.asarray(augmenter(faces, training=True))
    changed = (np.abs(erased - faces) > 1e-6).mean(axis=(1, 2, 3))
    assert erased.min() >= 0.0 and erased.max() <= 1.0
    assert changed.min() > 0.0 and changed.max() <= 0.3, "a patch of 2-25% of each face, never most of it"
    rows, cols = np.nonzero(np.abs(erased[0, :, :, 0] - 0.5) > 1e-6)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert box / 48**2 <= 0.3, "the erased pixels form one rectangle"
    assert np.array_equal(np.asarray(augmenter(faces, training=False)), faces)


def test_init_from_starts_where_the_trained_model_ended(trained_run, tmp_path):
    """At a near-zero learning rate, one epoch started from the trained run keeps its accuracy;
    the same epoch from random weights would be at chance (1/7)."""
    run, data = trained_run
    warm = tmp_path / "warm"
    fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--lr", "1e-9", "--warmup-epochs", "0",
               "--batch-size", str(BATCH), "--init-from", str(run), "--out", str(warm))
    card = json.loads((warm / "model.json").read_text())
    assert card["metrics"]["accuracy"] >= 0.85
    assert card["training"]["init_from"] == os.path.relpath(run.resolve())
    mismatch = fervid_here("train", str(data), "--arch", "vgg", "--init-from", str(run), "--out", str(tmp_path / "x"),
                          check=False)
    assert mismatch.returncode == 2 and "Traceback" not in mismatch.stderr
    assert mismatch.stderr.strip().endswith("-parameter one; give --arch compact"), "named from the model's card"
    assert len(mismatch.stderr.strip().splitlines()) == 1
    missing = fervid_here("train", str(data), "--init-from", str(tmp_path / "nope"), "--out", str(tmp_path / "y"),
                         check=False)
    assert missing.returncode == 2 and f"--init-from {tmp_path / 'nope'}: no such model file, run folder or bundled model name" in missing.stderr


def test_init_from_an_onnx_export_starts_from_the_function_it_exported(trained_run, tmp_path):
    """An ONNX export (a bundled model's, whose Keras weights were never shipped) becomes a trainable
    model of the same function. The export folded BatchNorm away, statistics and all; each is
    measured again in training steps, so that in inference the model agrees with the file and a
    training step normalizes each layer by statistics close to the moving ones (clean faces'
    statistics, without dropout, are not: a re-estimate in training steps, as --ema makes, then
    moved an imported vgg-deep by 2.6 points)."""
    import onnxruntime

    from fervid.data import load_arrays, read_dataset
    from fervid.model.backend import keras
    from fervid.model.from_onnx import classifier_from_onnx
    from fervid.runtime.classify import bundled_model_path

    run, data = trained_run
    faces = load_arrays(read_dataset(data), "train").inputs()

    def file_probabilities(path: Path) -> np.ndarray:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: faces})[0]

    classifier = classifier_from_onnx(run / "model.onnx", "compact", faces)  # float32: the same function
    np.testing.assert_allclose(classifier.predict(faces, verbose=0), file_probabilities(run / "model.onnx"), atol=1e-3)

    keras.utils.set_random_seed(0)
    vgg = classifier_from_onnx(bundled_model_path("fervid-vgg"), "vgg", faces, batch=len(faces))  # int8: rounded weights
    bundled = file_probabilities(bundled_model_path("fervid-vgg"))
    assert np.mean(vgg.predict(faces, verbose=0).argmax(1) == bundled.argmax(1)) >= 0.9
    assert np.abs(vgg.predict(faces, verbose=0) - bundled).mean() < 0.05
    trained_steps, clean = [], []
    for norm in [layer for layer in vgg.layers if isinstance(layer, keras.layers.BatchNormalization)][2:]:  # after a dropout
        probe = keras.Model(vgg.input, norm.input)
        moving = keras.ops.convert_to_numpy(norm.moving_variance)
        for ratios, training in ((trained_steps, True), (clean, False)):  # a new dropout draw in the training step
            x = keras.ops.convert_to_numpy(probe(faces, training=training))
            ratios.append(np.median(x.reshape(-1, x.shape[-1]).var(axis=0) / moving))
    assert all(0.95 < ratio < 1.06 for ratio in trained_steps), trained_steps  # 0.996-1.034 measured
    assert all(ratio < 0.95 for ratio in clean), clean  # 0.866-0.938: dropout adds variance in training steps

    warm = tmp_path / "warm"  # at a near-zero rate one epoch keeps the trained accuracy; from random weights: chance
    fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--lr", "1e-9", "--warmup-epochs", "0",
                "--batch-size", str(BATCH), "--init-from", str(run / "model.onnx"), "--out", str(warm))
    assert json.loads((warm / "model.json").read_text())["metrics"]["accuracy"] >= 0.85
    mismatch = fervid_here("train", str(data), "--arch", "compact", "--init-from", "fervid-vgg", "--out", str(tmp_path / "x"),
                           check=False)
    assert mismatch.returncode == 2 and mismatch.stderr.strip().endswith("are not those of --arch compact; give --arch vgg")
    xception = fervid_here("train", str(data), "--arch", "compact-xception", "--init-from", "fervid-compact", "--out",
                           str(tmp_path / "y"), check=False)
    assert xception.returncode == 2 and "the VGG architectures only" in xception.stderr
    assert len(mismatch.stderr.strip().splitlines()) == len(xception.stderr.strip().splitlines()) == 1


def test_init_from_a_stopped_run_starts_from_its_best_epoch_so_far(trained_run, tmp_path):
    """`--resume` refuses new settings and points to `--init-from RUN`, which needed the model.keras
    only a finished run has: a stopped run now gives its best weights so far (checkpoint/)."""
    run, data = trained_run
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped, ignore=shutil.ignore_patterns("model.*", "report.md", "*.png", "metrics.json"))
    assert not (stopped / "model.keras").exists() and (stopped / "checkpoint" / "best.weights.h5").is_file()
    warm = tmp_path / "warm"
    fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--lr", "1e-9", "--warmup-epochs", "0",
               "--batch-size", str(BATCH), "--init-from", str(stopped), "--out", str(warm))
    assert json.loads((warm / "model.json").read_text())["metrics"]["accuracy"] >= 0.85, "random weights are at chance (1/7)"
    mismatch = fervid_here("train", str(data), "--arch", "vgg", "--init-from", str(stopped), "--out", str(tmp_path / "x"),
                          check=False)
    assert mismatch.returncode == 2 and "Traceback" not in mismatch.stderr, mismatch.stderr
    assert mismatch.stderr.strip().endswith("give --arch compact") and len(mismatch.stderr.strip().splitlines()) == 1, mismatch.stderr
    # what is not a model says what to do: finish the stopped run; give the run, not its checkpoint folder
    for command in (["evaluate", str(stopped), str(data)], ["export", str(stopped), "--out", str(tmp_path / "m.onnx")]):
        unfinished = fervid_here(*command, check=False)
        assert unfinished.returncode == 2 and unfinished.stderr.startswith(
            f"fervid: error: {stopped}: a training run that has not finished (no model."), unfinished.stderr
        assert f"finish it with fervid train --resume --out {stopped}" in unfinished.stderr
    inside = fervid_here("train", str(data), "--arch", "compact", "--init-from", str(stopped / "checkpoint"),
                         "--out", str(tmp_path / "y"), check=False)
    assert inside.returncode == 2 and f"the checkpoint folder of the run {stopped}; give the run folder" in inside.stderr, inside.stderr


def test_ema_validates_checkpoints_and_exports_the_moving_average_and_resumes_it(tmp_path):
    """With --ema the weights that are validated, kept as best and exported are the optimizer's
    moving average, while training steps on from the trained weights (and a resume goes on from
    both); each check below fails if the trained weights stood in for the average anywhere."""
    from fervid.training.config import TrainConfig
    from fervid.model.backend import keras
    from fervid.training.averaging import Recalibration, batch_norms, swap_averaged_weights
    from fervid.training.averaging import averaged_weights
    from fervid.training.checkpoint import load_checkpoint
    from fervid.training.dataset import load_training_data
    from fervid.training.fit import compile_for_training
    from fervid.model.architectures import build_classifier

    data = write_folder_dataset(tmp_path / "data", 0, {"train": 12, "validation": 6})
    run = tmp_path / "run"
    # plateau: the rate stays up to the end, so the average stays apart from the trained weights
    fervid_here("train", str(data), "--arch", "compact", "--epochs", "3", "--batch-size", str(BATCH), "--schedule", "plateau",
                "--ema", "0.9", "--out", str(run))
    config = TrainConfig.load(run / "config.json")
    assert config.ema == 0.9
    assert "- weights: the moving average over about 10 steps (`--ema 0.9`)" in (run / "report.md").read_text()
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    training_data = load_training_data(config)
    validation = (training_data.validation.inputs(), training_data.validation.one_hot())
    classifier = build_classifier("compact", dtype=state["precision"])
    model = compile_for_training(config, classifier, int(np.ceil(len(training_data.train.labels) / BATCH)))
    model.optimizer.build(model.trainable_variables)
    load_checkpoint(model, run / "checkpoint" / "last.weights.h5")

    def validation_loss() -> float:
        return float(model.evaluate(*validation, batch_size=BATCH, verbose=0, return_dict=True)["loss"])

    logged = state["history"][-1]["val_loss"]
    recalibration = Recalibration.sample(training_data.train.inputs(), BATCH, config.seed)
    trained_statistics = [keras.ops.convert_to_numpy(norm.moving_mean) for norm in batch_norms(model)]
    with averaged_weights(model, recalibration):  # the average, as last.weights.h5's optimizer state keeps it
        assert validation_loss() == pytest.approx(logged, rel=1e-4)
        averaged = [np.array(w) for w in classifier.get_weights()]
        averaged_statistics = [keras.ops.convert_to_numpy(norm.moving_mean) for norm in batch_norms(model)]
    assert validation_loss() != pytest.approx(logged, rel=1e-3), "the trained weights are not what was validated"
    trained = classifier.get_weights()
    assert any(not np.allclose(a, t) for a, t in zip(averaged, trained))
    assert all(np.array_equal(keras.ops.convert_to_numpy(norm.moving_mean), s) for norm, s in zip(batch_norms(model), trained_statistics))
    assert not any(np.allclose(a, t) for a, t in zip(averaged_statistics, trained_statistics)), "the average has statistics of its own"
    swap_averaged_weights(model)  # the average with the trained weights' statistics: not what was validated
    assert validation_loss() != pytest.approx(logged, rel=1e-3)
    swap_averaged_weights(model)

    best = state["best_epoch"]
    load_checkpoint(classifier, run / "checkpoint" / "best.weights.h5")  # the classifier's weights only
    assert validation_loss() == pytest.approx(state["history"][best - 1]["val_loss"], rel=1e-4)
    if best == 3:
        assert all(np.allclose(a, b) for a, b in zip(averaged, classifier.get_weights()))

    # a kill between the weights and state.json: the resume measures epoch 3 again, on the average
    behind = a_copy_whose_state_ends_at(run, tmp_path / "behind", 2)
    fervid_here("train", "--resume", "--out", str(behind))
    measured = json.loads((behind / "checkpoint" / "state.json").read_text())["history"][-1]
    assert measured["val_loss"] == pytest.approx(logged, rel=1e-4)

    refused = fervid_here("train", "--resume", "--ema", "0.99", "--out", str(run), check=False)
    assert refused.returncode == 2 and "--ema cannot change it" in refused.stderr


def test_a_teacher_named_like_a_bundled_model_is_that_model_beside_a_folder_of_its_name(tmp_path, monkeypatch):
    """Every command reads a bundled name as the bundled model even beside ./fervid-vgg, but the
    teachers were recorded as that folder's absolute path, and the run learned from it instead."""
    from fervid.cli import _teacher_names

    (tmp_path / "fervid-vgg").mkdir()
    (tmp_path / "mine.onnx").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert _teacher_names(["fervid-vgg", "./fervid-vgg", "mine.onnx", "elsewhere.onnx"]) == [
        "fervid-vgg", str(tmp_path / "fervid-vgg"), str(tmp_path / "mine.onnx"), "elsewhere.onnx"]

def test_distillation_trains_on_the_teachers_averaged_probabilities(trained_run, tmp_path):
    """A student of two teachers (the trained run and the bundled model) learns the patterns, and the
    targets it trained on are the mix of its labels with the two teachers' averaged probabilities."""
    from fervid.data import load_arrays, read_dataset
    from fervid.runtime.classify import ExpressionClassifier

    run, data = trained_run
    student = tmp_path / "student"
    fervid_here("train", str(data), "--arch", "compact", "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
               "--warmup-epochs", "1", "--teacher", str(run), "--teacher", "fervid-vgg", "--distill", "0.4",
               "--out", str(student))
    card = json.loads((student / "model.json").read_text())
    # relative in the card (it ships and is served: /home/... told where the data lives), whole in config.json
    assert card["training"]["teacher"] == [os.path.relpath(run.resolve()), "fervid-vgg"] and card["training"]["distill"] == 0.4
    assert json.loads((student / "config.json").read_text())["teacher"] == [str(run.resolve()), "fervid-vgg"]
    assert not os.path.isabs(card["training"]["data"])
    assert card["name"] == "student", "without --name a run is named for its folder, never for a bundled model"
    assert card["metrics"]["accuracy"] >= 0.7, "chance is 1/7; a fifth of each target is the bundled model's guess"
    assert "distilled from" in (student / "report.md").read_text()

    faces = load_arrays(read_dataset(data), "train").inputs()
    expected = sum(ExpressionClassifier(t).predict_inputs(faces) for t in (run, "fervid-vgg")) / 2
    with np.load(student / "checkpoint" / "teacher.npz") as cached:
        assert cached["probabilities"].shape == (7 * TRAIN_PER_CLASS, 7)
        assert np.allclose(cached["probabilities"], expected, atol=1e-5)


def test_a_run_folder_holding_the_teachers_probabilities_needs_no_teacher(tmp_path):
    """How a machine without the teacher files (or ONNX Runtime) distills: their probabilities, made
    elsewhere on the same data, are copied into the run folder first."""
    from fervid.data import read_dataset
    from fervid.data.arrays import fingerprint

    data = write_folder_dataset(tmp_path / "d", 0, {"train": 4, "validation": 2})
    run = tmp_path / "student"
    (run / "checkpoint").mkdir(parents=True)
    probabilities = np.full((28, 7), 1 / 7, np.float32)
    np.savez(run / "checkpoint" / "teacher.npz", probabilities=probabilities,
             fingerprint=np.array(fingerprint(read_dataset(data))), teachers=np.array(["elsewhere/teacher.onnx"]))
    fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--batch-size", "8", "--imbalance", "weights",
               "--teacher", "elsewhere/teacher.onnx", "--out", str(run))
    assert json.loads((run / "model.json").read_text())["training"]["teacher"] == ["elsewhere/teacher.onnx"]
    other = fervid_here("train", str(data), "--teacher", "elsewhere/teacher.onnx", "--out", str(tmp_path / "x"), check=False)
    assert other.returncode == 2 and "no such model file" in other.stderr, "without the copy it is a missing model"


def test_distilled_targets_mix_label_and_teacher():
    from fervid.training.distill import distilled_targets

    one_hot = np.eye(7, dtype=np.float32)[[0, 3]]
    teacher = np.array([[0.2, 0.8, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]], np.float32)
    targets = distilled_targets(one_hot, teacher, 0.5)
    assert targets[0].tolist() == pytest.approx([0.6, 0.4, 0, 0, 0, 0, 0])
    assert targets[1].tolist() == pytest.approx([0, 0, 0, 0.5, 0, 0, 0.5])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 500)
    teachers = rng.dirichlet(np.full(7, 0.1), 500).astype(np.float32)
    mixed = distilled_targets(np.eye(7, dtype=np.float32)[labels], teachers, 0.45)
    assert np.allclose(mixed.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(mixed.argmax(axis=1), labels), "below 0.5 the label keeps the largest share"
    assert np.array_equal(distilled_targets(np.eye(7, dtype=np.float32)[labels], teachers, 0.0), np.eye(7)[labels])


def test_teacher_probabilities_are_cached_per_run_teachers_and_data(tmp_path, monkeypatch):
    """A resumed run reuses its teachers' probabilities; other teachers or other data recompute them."""
    from fervid.training import distill

    faces = np.random.default_rng(0).random((5, 48, 48, 1), dtype=np.float32)
    calls = []

    def scored(teachers, inputs):
        calls.append(list(teachers))
        return np.full((len(inputs), 7), 1 / 7, np.float32)

    monkeypatch.setattr(distill, "teacher_probabilities", scored)
    first = distill.cached_teacher_probabilities(tmp_path, ["a.onnx"], faces, "data-1")
    again = distill.cached_teacher_probabilities(tmp_path, ["a.onnx"], faces, "data-1")
    assert calls == [["a.onnx"]] and np.array_equal(first, again)
    distill.cached_teacher_probabilities(tmp_path, ["b.onnx"], faces, "data-1")
    distill.cached_teacher_probabilities(tmp_path, ["b.onnx"], faces, "data-2")
    distill.cached_teacher_probabilities(tmp_path, ["b.onnx"], faces[:4], "data-2")
    assert calls == [["a.onnx"], ["b.onnx"], ["b.onnx"], ["b.onnx"]]
    # Other faces of the same data and count (another --seed's holdout): taken for these, the teachers'
    # answers were attached to the wrong faces without a word.
    distill.cached_teacher_probabilities(tmp_path, ["b.onnx"], faces[:4], "data-2")
    distill.cached_teacher_probabilities(tmp_path, ["b.onnx"], faces[1:], "data-2")
    assert calls == [["a.onnx"], ["b.onnx"], ["b.onnx"], ["b.onnx"], ["b.onnx"]]
    shuffled = faces[[1, 0, 2, 3, 4]]
    distill.cached_teacher_probabilities(tmp_path, ["b.onnx"], shuffled, "data-2")
    assert len(calls) == 6, "the same faces in another order are other rows"
    cache = tmp_path / "checkpoint" / "teacher.npz"
    np.savez(cache, probabilities=np.zeros((5, 7)), fingerprint=np.array("data-2"), teachers=np.array(["b.onnx"]))
    distill.cached_teacher_probabilities(tmp_path, ["b.onnx"], faces, "data-2")
    assert len(calls) == 6, "a cache from before the faces were recorded is taken as it always was"
    assert not list((tmp_path / "checkpoint").glob(".*tmp*")), "no temporary files are left behind"
    # A cache put there by hand that is damaged, not an .npz, or lacks a field was a KeyError traceback.
    import io
    import zipfile

    single = io.BytesIO()
    np.save(single, np.zeros((5, 7)))  # an .npy under the .npz's name
    compressed = io.BytesIO()
    np.savez_compressed(compressed, probabilities=np.zeros((5, 7)), fingerprint=np.array("data-2"), teachers=np.array(["b.onnx"]))
    with zipfile.ZipFile(io.BytesIO(compressed.getvalue())) as archive:  # its deflate data damaged, its sizes and names kept
        start = archive.getinfo("probabilities.npy").header_offset + 30 + len("probabilities.npy") + 10
    damaged_deflate = bytearray(compressed.getvalue())
    damaged_deflate[start : start + 20] = bytes(20)
    for damaged in (b"", b"not an npz", None, single.getvalue(), bytes(damaged_deflate)):
        if damaged is None:
            np.savez(cache, probabilities=np.zeros((5, 7)))  # no fingerprint, no teachers
        else:
            cache.write_bytes(damaged)
        scores = distill.cached_teacher_probabilities(tmp_path, ["b.onnx"], faces, "data-2")
        assert scores.shape == (5, 7) and calls[-1] == ["b.onnx"]
    assert len(calls) == 11 and distill.read_cache(cache) is not None, "scored again, and the cache written whole"


def test_teacher_views_are_fixed_by_the_seed_and_warp_as_random_warp_does():
    """The views are the same on any machine (a GPU machine renders what the teachers scored here), differ
    from view to view, are the face itself when the recipe changes nothing, and move pixels the way the
    training's own RandomWarp does."""
    import cv2

    from fervid.model.backend import keras
    from fervid.training.views import ViewRecipe, render_views, view_of, view_parameters

    rng = np.random.default_rng(0)
    faces = cv2.GaussianBlur(rng.random((6, 48, 48)).astype(np.float32), (0, 0), 2.0)[..., None]
    recipe = ViewRecipe(rotation=0.05, zoom=0.1, shift=0.1, brightness=0.2, contrast=0.2, erasing=0.5, seed=7)
    assert np.array_equal(view_of(faces, recipe, 3), view_of(faces, recipe, 3))
    assert not np.allclose(view_of(faces, recipe, 3), view_of(faces, recipe, 4))
    assert np.array_equal(view_of(faces, ViewRecipe(0, 0, 0, 0, 0, 0, seed=7), 2), faces)
    erased = view_of(faces, ViewRecipe(0, 0, 0, 0, 0, 1.0, seed=7), 0)
    changed = (erased != faces).reshape(6, -1).mean(axis=1)
    assert ((changed > 0.015) & (changed < 0.26)).all(), "every face has a 2-25% rectangle of noise"

    parameters = np.zeros((1, 11))
    parameters[0, :4] = [0.2, 1.08, 0.05, -0.04]  # angle (radians), scale, shift x and y (fractions)
    parameters[0, 5] = 1.0  # contrast factor 1: no change
    mine = render_views(faces[:1], parameters, np.zeros(1, np.int64))[0, ..., 0]
    angle, scale, dx, dy = parameters[0, :4]
    cos, sin, c = np.cos(angle) * scale, np.sin(angle) * scale, 23.5
    transform = np.array([[cos, -sin, c - cos * c + sin * c + dx * 48, sin, cos, c - sin * c - cos * c + dy * 48, 0, 0]], np.float32)
    theirs = keras.ops.convert_to_numpy(keras.ops.image.affine_transform(faces[:1], transform, interpolation="bilinear",
                                                                         fill_mode="reflect"))[0, ..., 0]
    assert np.abs(mine - theirs)[6:-6, 6:-6].max() < 5e-3, "the same matrix convention (OpenCV interpolates in 1/32 pixels)"
    parameters[0, 0] = -0.2
    turned_back = render_views(faces[:1], parameters, np.zeros(1, np.int64))[0, ..., 0]
    assert np.abs(turned_back - theirs)[6:-6, 6:-6].max() > 0.02, "a wrong convention would show"
    assert view_parameters(recipe, 0, 100)[:, 6].mean() == pytest.approx(0.5, abs=0.15), "erasing drawn at its rate"


def test_distilling_from_teacher_views_trains_each_view_to_its_own_target(trained_run, tmp_path):
    """--teacher-views K: the teachers score K fixed views of each face once; each epoch a face comes as
    one of them, its target the label mixed with the teachers' answer on that very view. The scores
    are cached with their recipe, so a copy in a new run folder needs no teacher file."""
    from fervid.data import load_arrays, read_dataset
    from fervid.runtime.classify import ExpressionClassifier
    from fervid.training.config import TrainConfig
    from fervid.training.distill import TEACHER_VIEWS_FILE, distilled_targets
    from fervid.training.batches import ViewBatches

    run, data = trained_run
    teacher = tmp_path / "teacher.onnx"
    shutil.copy(run / "model.onnx", teacher)
    student = tmp_path / "student"
    fervid_here("train", str(data), "--arch", "compact", "--epochs", "2", "--batch-size", str(BATCH), "--warmup-epochs", "1",
                "--erasing", "0.5", "--teacher", str(teacher), "--teacher-views", "3", "--distill", "0.4", "--out", str(student))
    card = json.loads((student / "model.json").read_text())
    assert card["training"]["teacher_views"] == 3
    assert "on 3 fixed augmented views of each face" in (student / "report.md").read_text()

    config = TrainConfig.load(student / "config.json")
    with np.load(student / "checkpoint" / TEACHER_VIEWS_FILE) as cached:
        probabilities = cached["probabilities"].astype(np.float32)
    train = load_arrays(read_dataset(data), "train")
    assert probabilities.shape == (3, len(train.labels), 7)
    batches = ViewBatches(train.inputs(), train.one_hot(), probabilities, 0.4, config.view_recipe(), 16, config.seed, first_epoch=1)
    faces, targets = batches[0]
    rows, views = batches.order[:16], batches.views[:16]
    assert len(set(views.tolist())) > 1, "faces come as different views"
    scored = ExpressionClassifier(teacher).predict_inputs(faces)
    assert np.allclose(targets, distilled_targets(train.one_hot()[rows], scored, 0.4), atol=2e-3), "each view's own target"
    assert not np.allclose(targets, distilled_targets(train.one_hot()[rows], probabilities[(views + 1) % 3, rows], 0.4), atol=2e-3)
    again = ViewBatches(train.inputs(), train.one_hot(), probabilities, 0.4, config.view_recipe(), 16, config.seed, first_epoch=1)
    assert np.array_equal(again[0][0], faces), "a resumed run sees the epoch the uninterrupted one would"

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "checkpoint").mkdir(parents=True)
    shutil.copy(student / "checkpoint" / TEACHER_VIEWS_FILE, elsewhere / "checkpoint")
    teacher.unlink()
    result = fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--batch-size", str(BATCH), "--erasing", "0.5",
                         "--teacher", str(teacher), "--teacher-views", "3", "--distill", "0.4", "--out", str(elsewhere))
    assert "scoring" not in result.stdout, "the copied scores are used; the teacher file is gone"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--teacher-views", "4"], "--teacher-views needs --teacher"),
     (["--teacher", "fervid-vgg", "--teacher-views", "4", "--imbalance", "sampling"], "use --imbalance weights or none with it"),
     (["--teacher", "fervid-vgg", "--teacher-views", "-1"], "--teacher-views must be 0"),
     (["--distill", "0.7"], "--distill is the teachers' share of each target; give the teachers with --teacher"),
     (["--schedule", "plateau", "--warmup-epochs", "5"], "--warmup-epochs belongs to --schedule cosine"),
     (["--init-from", "fervid-nope"], "--init-from fervid-nope: no such model file, run folder or bundled model name"),
     # each failed only after the data had loaded: nan losses, days of scoring, or minutes of scoring for nothing
     (["--weight-decay", "1e9"], "--weight-decay must be 0 to 1"),
     (["--ema", "1"], "--ema must be 0 (off) or a decay per step in (0, 1)"),  # 1: an average that never moves
     (["--ema", "-0.5"], "--ema must be 0 (off) or a decay per step in (0, 1)"),
     (["--teacher", "fervid-vgg", "--teacher-views", "100000000"], "--teacher-views must be 0 (the clean faces) to 64"),
     (["--teacher", "fervid-vgg", "--distill", "0"], "--distill 0 takes nothing from the teachers")],
)
def test_options_that_cannot_work_are_refused_before_any_data_is_read(tmp_path, args, message):
    result = fervid_here("train", str(tmp_path / "missing"), *args, "--out", str(tmp_path / "run"), check=False)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_run_config_with_teachers_at_distill_0_still_loads(tmp_path):
    """--distill 0 with teachers is refused for a new run only: a run's config.json holding it must
    still resume and export (checked in load, it left such a run stuck)."""
    from dataclasses import replace

    from fervid.training.config import TrainConfig

    path = tmp_path / "config.json"
    replace(TrainConfig(data="d"), teacher=["t.onnx"], distill=0.0).save(path)
    assert TrainConfig.load(path).distill == 0.0


@pytest.mark.parametrize(
    ("arch", "low", "high"),
    [("compact", 150_000, 200_000), ("compact-xception", 150_000, 200_000), ("vgg", 1_000_000, 1_500_000), ("vgg-deep", 2_800_000, 3_400_000),
     ("vgg-large", 4_500_000, 5_500_000)],
)
def test_every_architecture_maps_a_face_to_seven_probabilities(arch, low, high):
    """The documented sizes hold (the compact one is the <= 200k variant) and each net ends in a softmax."""
    from fervid.model.architectures import build_classifier

    model = build_classifier(arch)
    assert low <= model.count_params() <= high
    probabilities = np.asarray(model(np.random.default_rng(0).random((3, 48, 48, 1), dtype=np.float32)))
    assert probabilities.shape == (3, 7)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5) and probabilities.min() >= 0.0


def test_the_separable_residual_net_exports_onnx_that_agrees_with_keras(tmp_path):
    """Separable convolutions and the residual sums survive the ONNX conversion (tf2onnx rewrites
    depthwise convolutions as grouped ones), so the compact-xception net can ship like the VGGs."""
    import onnxruntime

    from fervid.export.onnx import export_onnx
    from fervid.model.architectures import build_classifier

    model = build_classifier("compact-xception")
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32) * (w.ndim > 1) for w in model.get_weights()])
    path = export_onnx(model, tmp_path / "xception.onnx")
    faces = rng.random((4, 48, 48, 1), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(None, {session.get_inputs()[0].name: faces})[0]
    assert np.abs(exported - np.asarray(model(faces, training=False))).max() < 1e-4
    assert np.ptp(exported, axis=0).max() > 1e-3, "perturbed weights give each face its own probabilities"


def test_metrics_match_a_hand_computation():
    from fervid.evaluation.metrics import classification_report

    true = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    report = classification_report(true, predicted, num_classes=3)
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.precision.tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert report.recall.tolist() == pytest.approx([2 / 3, 0.5, 1.0])
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5]
    assert report.f1.tolist() == pytest.approx(f1)
    assert report.macro_f1 == pytest.approx(sum(f1) / 3)
    assert report.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report.normalized_confusion[0].tolist() == pytest.approx([2 / 3, 1 / 3, 0])

    absent = classification_report(true, predicted, num_classes=7)  # four classes without faces
    assert absent.macro_f1 == pytest.approx(report.macro_f1)
    macro = absent.table().splitlines()[-1]  # every macro column averages the classes with faces alike
    assert macro == f"| **macro** | {2 / 3:.3f} | {(2 / 3 + 0.5 + 1) / 3:.3f} | {sum(f1) / 3:.3f} | 6 |"
    # A class without faces that the model predicts counts, with F1 0 (scikit-learn's default).
    wrong = classification_report(true, np.array([0, 0, 4, 1, 2, 2]), num_classes=7)
    assert wrong.averaged.tolist() == [True, True, True, False, True, False, False]
    expected = [2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * 1 * 0.5 / 1.5, 2 * 0.5 * 1 / 1.5, 0.0]
    assert wrong.macro_f1 == pytest.approx(sum(expected) / 4)
    assert wrong.to_dict()["averaged_classes"] == ["angry", "disgust", "fear", "neutral"]
    with pytest.raises(ValueError, match="labels must be class numbers 0 to 6, got -1..2"):  # -1 was counted as class 6
        classification_report(np.array([-1, 0, 2]), np.array([6, 0, 2]))


def test_non_finite_probabilities_and_a_foreign_class_order_are_refused_not_scored(tmp_path):
    """A diverged net's NaN rows were scored as "angry" with an ECE of 0; a .keras card listing the
    classes in another order was scored with fervid's names on its columns."""
    from fervid.errors import FervidError
    from fervid.evaluation.evaluate import evaluate, load_predictor
    from fervid.labels import EXPRESSIONS

    def diverged(inputs):
        out = np.full((len(inputs), 7), 1 / 7, np.float32)
        out[::2] = np.nan
        return out

    faces = np.random.default_rng(0).random((6, 48, 48, 1), dtype=np.float32)
    with pytest.raises(FervidError, match="gives NaN or infinite probabilities for 3 of 6 faces"):
        evaluate(diverged, faces, np.zeros(6, np.int64))
    model = tmp_path / "m.keras"
    model.write_bytes(b"PK")  # refused before it is loaded
    card = {"classes": list(reversed(EXPRESSIONS)), "input": {"shape": [48, 48, 1]}}
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(FervidError, match="are not fervid's, in fervid's order"):
        load_predictor(model)


def test_calibration_matches_a_hand_computation():
    from fervid.evaluation.metrics import calibration

    probabilities = np.array([[0.95, 0.05, 0.0], [0.05, 0.95, 0.0], [0.55, 0.45, 0.0], [0.35, 0.33, 0.32], [0.0, 0.0, 1.0]])
    labels = np.array([0, 0, 0, 2, 2])
    result = calibration(probabilities, labels)
    assert [(row["low"], row["faces"]) for row in result.bins] == [(0.3, 1), (0.5, 1), (0.9, 3)]
    # bin 0.3: confidence 0.35, wrong; bin 0.5: 0.55, right; bin 0.9: mean 0.9667, two of three right
    expected = (1 * 0.35 + 1 * 0.45 + 3 * abs(2 / 3 - (0.95 + 0.95 + 1.0) / 3)) / 5
    assert result.ece == pytest.approx(expected)
    assert result.accuracy == pytest.approx(3 / 5) and result.mean_confidence == pytest.approx(3.8 / 5)
    assert "| 0.9-1.0 | 3 |" in result.table()
    perfect = calibration(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2]))
    assert perfect.ece == 0.0


def test_class_weights_and_holdout():
    from fervid.data.holdout import stratified_holdout
    from fervid.training.batches import class_weights, face_weights

    labels = np.array([0] * 80 + [1] * 20)
    weights = class_weights(labels)
    assert weights[0] == pytest.approx(100 / (2 * 80)) and weights[1] == pytest.approx(100 / (2 * 20))
    per_face = face_weights(labels)
    assert per_face.shape == (100,) and per_face[0] == pytest.approx(weights[0]) and per_face[-1] == pytest.approx(weights[1])
    mask = stratified_holdout(labels, 0.1, seed=3)
    assert mask[:80].sum() == 8 and mask[80:].sum() == 2
    assert np.array_equal(mask, stratified_holdout(labels, 0.1, seed=3))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "resnet9000"], "--arch must be one of"),
        (["--epochs", "0"], "--epochs must be between 1 and 100,000"),
        (["--epochs", "99999999999999999999"], "--epochs must be between 1 and 100,000"),  # a TensorFlow TypeError before
        (["--batch-size", "99999999999999999999"], "--batch-size must be between 1 and 65,536"),
        (["--lr", "1e30"], "--lr must be above 0 and at most 1"),  # trained to a nan loss and exported it
        (["--imbalance", "magic"], "--imbalance must be one of"),
        (["--erasing", "1.5"], "--erasing must be a probability"),
        (["--warp", "twice"], "--warp must be one of"),
        (["--teacher", "fervid-vgg", "--distill", "1.5"], "--distill must be a share"),
        (["--teacher", "nope.onnx"], "no such model file"),
        (["--zoom", "2"], "--zoom must be a fraction of the size in [0, 1)"),
        (["--rotation", "-0.1"], "--rotation must be a fraction of a turn"),
        (["--contrast", "1.5"], "--contrast must be in [0, 1]"),
        (["--weight-decay", "-0.01"], "--weight-decay must be 0 to 1"),
        (["--seed", "-1"], "--seed must be in [0, 2**32)"),
    ],
)
def test_bad_training_arguments_are_one_line_errors(tmp_path, args, message):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 2})
    result = fervid_here("train", str(data), "--out", str(tmp_path / "run"), *args, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists(), "a run that cannot start leaves no run folder"


def test_unreadable_training_data_leaves_no_run_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = fervid_here("train", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), check=False)
    assert result.returncode == 2 and "no images in class folders" in result.stderr
    assert not (tmp_path / "run").exists()


def test_resume_without_a_run_and_missing_models_fail_cleanly(tmp_path):
    result = fervid_here("train", "--resume", "--out", str(tmp_path / "nothing"), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"fervid: error: {tmp_path / 'nothing'}: no run to resume (no config.json); give the dataset "
                                     "and leave out --resume to start one there")
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 1})
    result = fervid_here("train", str(data), "--resume", "--out", str(tmp_path / "typo"), check=False)  # started a new run
    assert result.returncode == 2 and result.stderr.strip() == (
        f"fervid: error: {tmp_path / 'typo'}: no run to resume (no config.json); leave out --resume to start one there")
    assert not (tmp_path / "typo").exists()
    result = fervid_here("evaluate", str(tmp_path / "missing.onnx"), str(data), check=False)
    assert result.returncode == 2 and "missing.onnx" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    result = fervid_here("train", str(data), "--teacher", str(tmp_path / "broken.onnx"), "--out", str(tmp_path / "run"), check=False)
    assert result.returncode == 2 and "broken.onnx: not a loadable ONNX model" in result.stderr
    assert "teachers: scoring" not in result.stdout and not (tmp_path / "run").exists()
    (tmp_path / "broken.json").write_text("{}")  # the card given instead of the model beside it
    result = fervid_here("evaluate", str(tmp_path / "broken.json"), str(data), check=False)
    assert result.returncode == 2 and result.stderr.strip().endswith("; the model is broken.onnx beside it")
    before = sorted(data.rglob("*"))
    result = fervid_here("train", str(data), "--out", str(data / "train" / "happy" / "run"), check=False)
    assert result.returncode == 2 and "inside the dataset" in result.stderr, "its plots would be read as happy faces"
    unwritable = fervid_here("train", str(tmp_path / "missing"), "--out", "/proc/run", check=False)  # before the data
    assert unwritable.returncode == 2 and unwritable.stderr.startswith("fervid: error: --out /proc/run: cannot write in /proc ("), unwritable.stderr
    assert sorted(data.rglob("*")) == before
    (tmp_path / "blocked").mkdir()  # the first checkpoint, after a whole epoch, would have failed on it
    (tmp_path / "blocked" / "checkpoint").write_text("a file")
    blocked = fervid_here("train", str(data), "--out", str(tmp_path / "blocked"), check=False)
    assert blocked.returncode == 2 and "checkpoint is a file, not a folder" in blocked.stderr, blocked.stderr


def test_a_damaged_checkpoint_state_is_one_line_on_resume(tmp_path):
    from fervid.training.config import TrainConfig

    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    TrainConfig(data=str(write_folder_dataset(tmp_path / "d", 0, {"train": 1})), arch="compact").save(run / "config.json")
    (run / "checkpoint" / "state.json").write_text('{"epochs_done": 3, "best')  # cut off mid-write by a full disk
    result = fervid_here("train", "--resume", "--out", str(run), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith(f"fervid: error: {run / 'checkpoint' / 'state.json'}: damaged (")


def test_a_run_whose_files_have_another_shape_is_one_line_on_resume(tmp_path):
    """Valid JSON of the wrong shape (replaced by hand or by another program) and a cut-short weights
    file were tracebacks from dataclasses, Keras or h5py."""
    from fervid.training.config import TrainConfig

    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    config = TrainConfig(data=str(write_folder_dataset(tmp_path / "d", 0, {"train": 2, "validation": 1})), arch="compact", epochs=2, warmup_epochs=0)
    state = {"epochs_done": 1, "best_epoch": 1, "best_val_accuracy": 0.2, "history": []}

    def resume_error() -> str:
        result = fervid_here("train", "--resume", "--out", str(run), check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        return result.stderr.strip()

    (run / "checkpoint" / "state.json").write_text(json.dumps(state))
    saved = json.loads(json.dumps(config.__dict__))
    for text, message in (("{}", "not a fervid run's config"), ("[]", "not a fervid run's config"),
                          (json.dumps({**saved, "epochs": "x"}), "not a usable run config"),
                          # each a traceback from Keras or pandas once the data was read
                          (json.dumps({**saved, "seed": 42.5}), r"not a usable run config \(seed must be int, got 42.5\)"),
                          (json.dumps({**saved, "mapping": ["a=happy"]}), r"not a usable run config \(mapping must be dict\[str, str\]"),
                          (json.dumps({**saved, "flip": 1}), r"not a usable run config \(flip must be bool, got 1\)")):
        (run / "config.json").write_text(text)
        error = resume_error()
        assert re.match(re.escape(f"fervid: error: {run / 'config.json'}: ") + message, error), error
    config.save(run / "config.json")
    (run / "checkpoint" / "state.json").write_text("[]")
    assert resume_error() == f"fervid: error: {run / 'checkpoint' / 'state.json'}: not a fervid run's resume state; start a new run with another --out"
    (run / "checkpoint" / "state.json").write_text(json.dumps(state))
    (run / "checkpoint" / "last.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n cut short")
    message = resume_error()
    assert message.startswith(f"fervid: error: {run / 'checkpoint' / 'last.weights.h5'}: cannot be loaded (")
    assert message.endswith("the checkpoint is damaged or missing: start a new run with another --out")


def test_export_refuses_a_model_that_is_not_a_face_classifier_and_checks_int8_data_first(tmp_path):
    """A (32, 32, 3) model ended in Keras's traceback and a 10-way one was exported, then refused by
    every command that loads it; a missing --int8 dataset was found after the whole conversion, and
    --out in its class folders was written."""
    from fervid.model.backend import keras

    def saved(shape: tuple[int, ...], classes: int, name: str) -> Path:
        model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(classes, activation="softmax")])
        model.save(str(tmp_path / name))
        return tmp_path / name

    for model, message in ((saved((32, 32, 3), 7, "colour.keras"), r"takes \(32, 32, 3\), not one batch of \(48, 48, 1\) gray faces"),
                           (saved((48, 48, 1), 10, "ten.keras"), "gives 10 outputs, not one of 7 expression probabilities")):
        result = fervid_here("export", str(model), "--out", str(tmp_path / "out.onnx"), check=False)
        assert result.returncode == 2 and result.stderr.strip() == f"fervid: error: {model}: {message.replace(chr(92), '')}; not a fervid expression model"
    assert not (tmp_path / "out.onnx").exists()
    good = saved((48, 48, 1), 7, "good.keras")
    missing = fervid_here("export", str(good), "--int8", str(tmp_path / "nowhere"), "--out", str(tmp_path / "q.onnx"), check=False)
    assert missing.returncode == 2 and "--int8" in missing.stderr and "no such file or folder" in missing.stderr
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 1})
    inside = fervid_here("export", str(good), "--int8", str(data), "--out", str(data / "train" / "angry" / "m.onnx"), check=False)
    assert inside.returncode == 2 and "inside the dataset" in inside.stderr
    assert sorted(path.name for path in (data / "train" / "angry").iterdir()) == ["0000.png"]


def test_export_and_evaluate_refuse_what_the_runtime_refuses(tmp_path):
    """A Keras model ending in logits, or with a card the runtime refuses, was exported (exit 0) and then
    refused by every command that loads it; evaluate scored a 5-way .keras model as 7 classes
    ("disgust recall 1.000"), logits with "mean confidence 1.0072", and a 64x64 one with a traceback."""
    from fervid.labels import EXPRESSIONS
    from fervid.model.backend import keras

    def saved(name: str, shape: tuple[int, ...] = (48, 48, 1), classes: int = 7, activation: str | None = "softmax",
              card: dict | None = None) -> Path:
        model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(classes, activation=activation)])
        model.save(str(tmp_path / name))
        if card is not None:
            (tmp_path / name).with_suffix(".json").write_text(json.dumps(card))
        return tmp_path / name

    data = write_folder_dataset(tmp_path / "d", 0, {"validation": 2})
    logits = saved("logits.keras", activation=None)
    for model, message in ((logits, "its outputs are not probabilities"),
                           (saved("five.keras", classes=5), "gives 5 outputs, not one of 7"),
                           (saved("big.keras", shape=(64, 64, 1)), r"takes \(64, 64, 1\)")):
        result = fervid_here("evaluate", str(model), str(data), check=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert re.search(message, result.stderr) and result.stdout == "", result.stderr
    result = fervid_here("export", str(logits), "--out", str(tmp_path / "logits.onnx"), check=False)
    assert result.returncode == 2 and "its outputs are not probabilities" in result.stderr
    card = {"name": "mine", "classes": list(EXPRESSIONS), "input": {"shape": [48, 48, 1]}, "inference": {"input_blur": "x"}}
    for name, bad in (("classes.keras", {**card, "classes": ["a"], "inference": {}}), ("blur.keras", card)):
        model = saved(name, card=bad)
        result = fervid_here("export", str(model), "--out", str(tmp_path / "out.onnx"), check=False)
        assert result.returncode == 2 and "would be refused by fervid's runtime" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "logits.onnx").exists()


def test_export_writes_only_onnx_and_a_failed_check_keeps_the_model_already_there(tmp_path, monkeypatch):
    from fervid.errors import FervidError
    from fervid.export import convert
    from fervid.model.architectures import build_classifier

    model = tmp_path / "model.keras"
    build_classifier("compact").save(str(model))
    with pytest.raises(FervidError, match="must end in .onnx"):
        convert.export_checked(model, model)  # would have written ONNX over the Keras model
    shipped = tmp_path / "shipped.onnx"
    shipped.write_bytes(b"the model that works")
    monkeypatch.setattr(convert, "TOLERANCE", -1.0)  # every export now disagrees with Keras
    with pytest.raises(FervidError, match="nothing written"):
        convert.export_checked(model, shipped)
    assert shipped.read_bytes() == b"the model that works"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.keras", "shipped.onnx"]


def test_sigterm_mid_training_says_how_to_resume(tmp_path):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 8, "validation": 2})
    run = tmp_path / "run"
    log = tmp_path / "stderr.txt"  # a file, not a pipe nobody reads while the test waits: warnings could fill it
    with open(log, "w") as stderr_file:
        process = subprocess.Popen([*FERVID, "train", str(data), "--arch", "compact", "--epochs", "500", "--batch-size", "8",
                                    "--out", str(run)], stdout=subprocess.DEVNULL, stderr=stderr_file, text=True)
    deadline = time.monotonic() + 300
    while not (run / "checkpoint" / "state.json").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)  # as kill, timeout and systemd stop it
    process.wait(60)
    stderr = log.read_text()
    assert process.returncode == 130, stderr
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] >= 1
    assert stderr.strip().splitlines()[-1] == (
        f"fervid: interrupted; {state['epochs_done']} of 500 epochs are kept (best: epoch {state['best_epoch']}, validation accuracy "
        f"{state['best_val_accuracy']:.4f}): fervid train --resume --out {run}")


def test_a_ctrl_c_that_a_library_swallows_still_stops_the_run(tmp_path, monkeypatch):
    """On the JAX backend the main thread waits mostly inside Keras's pythonify_logs, whose bare
    ``except: pass`` swallowed the KeyboardInterrupt of Ctrl+C or SIGTERM: the run trained on to its
    last epoch and exited 0. Here the TensorFlow trainer's call of it swallows one the same way."""
    import keras.src.backend.tensorflow.trainer as tf_trainer

    data = write_folder_dataset(tmp_path / "d", 0, {"train": 8, "validation": 2})
    run = tmp_path / "run"
    pythonify_logs, calls = tf_trainer.pythonify_logs, []

    def swallowing(logs):
        calls.append(1)
        if len(calls) == 1:  # the first validation: Ctrl+C arrives while the library holds the main thread
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
            except:  # noqa: E722 -- as pythonify_logs does
                pass
        return pythonify_logs(logs)

    monkeypatch.setattr(tf_trainer, "pythonify_logs", swallowing)
    result = fervid_here("train", str(data), "--arch", "compact", "--epochs", "5", "--batch-size", "8", "--out", str(run), check=False)
    assert result.returncode == 130, result.stdout[-2000:]
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert result.stderr.strip().splitlines()[-1] == (
        f"fervid: interrupted; 1 of 5 epochs are kept (best: epoch 1, validation accuracy {state['best_val_accuracy']:.4f}): "
        f"fervid train --resume --out {run}")
    assert state["epochs_done"] == 1, "the epoch that had ended was kept, none after it trained"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_after_a_stop_in_the_first_epoch_starts_it_and_refuses_changed_options(tmp_path):
    from fervid.training.config import TrainConfig

    data = write_folder_dataset(tmp_path / "d", 0, {"train": 4, "validation": 2})
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(data=str(data.resolve()), arch="compact", epochs=1, batch_size=8).save(run / "config.json")  # as a stop in epoch 1 leaves it
    changed = fervid_here("train", "--resume", "--out", str(run), "--epochs", "16", "--lr", "1e-4", check=False)
    assert changed.returncode == 2 and "so --epochs, --lr cannot change it" in changed.stderr, "silently ignored before"
    unflipped = fervid_here("train", "--resume", "--out", str(run), "--no-flip", check=False)
    assert unflipped.returncode == 2 and "so --no-flip cannot change it" in unflipped.stderr  # named as given, not --flip
    same = ("--arch", "compact", "--epochs", "1", "--batch-size", "8")  # the first command with --resume added
    result = fervid_here("train", str(data), "--resume", "--out", str(run), *same, "--name", "renamed")
    assert "no finished epoch to resume from; starting at epoch 1" in result.stderr
    assert json.loads((run / "model.json").read_text())["name"] == "renamed" and (run / "model.onnx").exists()


def test_a_moved_dataset_resumes_but_changed_content_is_refused(tmp_path):
    """Runs are resumed on other machines and after folders move: the content decides, not the path."""
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 4, "validation": 2})
    run = tmp_path / "run"
    fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--batch-size", "8", "--out", str(run))
    assert json.loads((run / "checkpoint" / "state.json").read_text())["data_fingerprint"]
    moved = data.rename(tmp_path / "moved")
    lost = fervid_here("train", "--resume", "--out", str(run), check=False)
    assert lost.returncode == 2 and lost.stderr.strip().endswith(f"give its new path: fervid train NEW_PATH --resume --out {run}")
    resumed = fervid_here("train", str(moved), "--resume", "--out", str(run))
    assert f"data {moved.resolve()}" in resumed.stdout
    assert json.loads((run / "config.json").read_text())["data"] == str(moved.resolve()), "the next resume finds it"

    shutil.copy(moved / "train" / "happy" / "0000.png", moved / "train" / "happy" / "extra.png")
    changed = fervid_here("train", "--resume", "--out", str(run), check=False)
    assert changed.returncode == 2, changed.stdout
    assert f"{moved.resolve()}: not the data this run trained on (content fingerprint" in changed.stderr.strip().splitlines()[-1]


def test_evaluate_writes_its_files_even_when_its_reader_stops_early(trained_run, tmp_path):
    """`fervid evaluate ... --json m.json --confusion c.png | head` lost the files printed after the pipe closed."""
    run, data = trained_run
    command = [*FERVID, "evaluate", str(run), str(data), "--json", str(tmp_path / "m.json"), "--confusion", str(tmp_path / "c.png")]
    subprocess.run(["bash", "-c", f"{shlex.join(command)} | true"], timeout=300, check=False)
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] >= 0 and (tmp_path / "c.png").stat().st_size > 0


def test_evaluate_scores_a_run_on_the_faces_it_held_out_of_data_without_a_validation_split(tmp_path):
    """A researcher's class folders have no validation split: training holds out a seeded 10%, and
    evaluate must find those faces again, not send the user to --split train (faces it learned)."""
    data = write_folder_dataset(tmp_path / "d", 10)
    run = tmp_path / "run"
    fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--batch-size", "8", "--out", str(run))
    card = json.loads((run / "model.json").read_text())
    scored = fervid_here("evaluate", str(run), str(data), "--json", str(tmp_path / "m.json"))
    assert f"[validation: {card['dataset']['validation_source']}], 7 images" in scored.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["split_source"].startswith("stratified 10% of train") and metrics["images"] == card["dataset"]["validation_images"]
    assert metrics["accuracy"] == pytest.approx(card["metrics"]["accuracy_flip_tta"]), "the very faces training scored"

    # another run on this folder held out other faces (--seed 7): scored on these, it would be tested
    # partly on faces it learned, and the McNemar test would favour it
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(run / "model.onnx"))
    entry = next(prop for prop in model.metadata_props if prop.key == "fervid")
    reseeded = json.loads(entry.value)
    reseeded["training"]["seed"] = 7
    entry.value = json.dumps(reseeded)
    onnx.save(model, str(tmp_path / "seed7.onnx"))
    from fervid.data import load_split, read_dataset
    from fervid.data.holdout import stratified_holdout

    train = load_split(read_dataset(data), "train")
    learned = int(np.sum(stratified_holdout(train.labels, 0.1, 42) & ~stratified_holdout(train.labels, 0.1, 7)))
    assert learned > 0, "the two seeds must hold out different faces for this test"
    refused = fervid_here("evaluate", str(run), str(data), "--against", str(tmp_path / "seed7.onnx"), check=False)
    assert refused.returncode == 2 and f"seed7.onnx (--against) trained on {learned} of the 7 faces" in refused.stderr
    assert "(it held out --val-fraction 0.1 with --seed 7)" in refused.stderr
    same = fervid_here("evaluate", str(run), str(data), "--against", str(run / "model.onnx"))
    assert "only this model right on 0 faces" in " ".join(same.stdout.split()), "the same held-out faces compare"

    (data / "train" / "happy" / "0000.png").unlink()  # other data: the seed would pick faces the model learned
    other = fervid_here("evaluate", str(run), str(data), check=False)
    assert other.returncode == 2 and "no validation split, and not the data" in other.stderr
    assert "--split train would count faces it trained on" in other.stderr, "not sent to --split train without a warning"
    (data / "test" / "happy").mkdir(parents=True)  # data with a test split: that is the split to score other data on
    shutil.copy(data / "train" / "happy" / "0001.png", data / "test" / "happy" / "0001.png")
    tested = fervid_here("evaluate", str(run), str(data), check=False)
    assert "if it is other data, --split test scores its test faces, --split train all of it" in tested.stderr, tested.stderr


def test_faces_left_out_and_classes_missing_are_said_and_reported(tmp_path):
    """A model trained on fewer faces or classes than the user has must say so where its numbers are."""
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 4, "validation": 2})
    shutil.rmtree(data / "train" / "disgust")
    (data / "train" / "happy" / "broken.png").write_bytes(b"not an image")
    (data / "validation" / "sad" / "broken.png").write_bytes(b"")
    result = fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "run"))
    assert "1 unreadable 'train' image(s) left out" in result.stderr
    assert "1 unreadable 'validation' image(s) left out" in result.stderr
    assert "no training faces of disgust: the model keeps those outputs but never learns them" in result.stderr
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.count("- data note: ") == 3 and "no training faces of disgust" in report
    scored = fervid_here("evaluate", str(tmp_path / "run"), str(data))
    assert "1 unreadable 'validation' image(s) left out" in scored.stderr, "a score on fewer faces says so"


def test_a_new_run_never_overwrites_files_that_are_not_a_runs_own(tmp_path):
    from fervid.errors import FervidError
    from fervid.training.config import TrainConfig
    from fervid.training.run_folder import open_run

    config = TrainConfig(data=str(tmp_path / "data"), arch="compact", epochs=1)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"someone's model")
    (folder / "report.md").write_text("my notes")
    with pytest.raises(FervidError, match=r"--out .*models: holds model.onnx, report.md, which the run would overwrite"):
        open_run(config, folder, resume=False)
    assert (folder / "model.onnx").read_bytes() == b"someone's model"

    prepared = tmp_path / "prepared"  # the teachers' scores put there first (tools/device/train.sh) are welcome
    (prepared / "checkpoint").mkdir(parents=True)
    (prepared / "checkpoint" / "teacher.npz").write_bytes(b"")
    assert open_run(config, prepared, resume=False) == ({"epochs_done": 0, "best_epoch": 0, "best_val_accuracy": -1.0, "history": []}, False)
    stopped = tmp_path / "stopped"  # a run stopped in its first epoch starts again over its own files
    stopped.mkdir()
    config.save(stopped / "config.json")
    (stopped / "history.csv").write_text("epoch\n")
    assert open_run(config, stopped, resume=False)[1] is False
    (stopped / "checkpoint").mkdir()  # killed between its first weights and state.json: the same
    for name in ("best.weights.h5", "last.weights.h5"):
        (stopped / "checkpoint" / name).write_bytes(b"weights")
    assert open_run(config, stopped, resume=True)[1] is False


def test_a_one_epoch_runs_curves_show_its_points_on_whole_epochs():
    """One epoch drew lines of one point (nothing to see) between ticks 0.945 and 1.050, and a
    learning-rate axis from -0.04 to 0.04."""
    import matplotlib.pyplot as plt

    from fervid.evaluation.plots import history_figure

    figure = history_figure(plt, [{"epoch": 1, "loss": 1.8, "val_loss": 1.7, "accuracy": 0.3, "val_accuracy": 0.35,
                                   "learning_rate": 1e-3}])
    figure.canvas.draw()
    loss_axes, accuracy_axes, rate_axes = figure.axes
    assert all(line.get_marker() == "o" for axes in figure.axes for line in axes.get_lines() if len(line.get_xdata()) == 1)
    for axes in (loss_axes, accuracy_axes):
        assert [tick for tick in axes.get_xticks() if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]] == [1.0]
    assert rate_axes.get_ylim()[0] == 0 and rate_axes.get_ylim()[1] > 1e-3
    plt.close(figure)


def test_the_curves_legends_lie_below_the_plots_not_on_the_curves(tmp_path, monkeypatch):
    """The accuracy legend sat in the lower right, on the data: a flat validation curve near the
    bottom (a run at chance) ran behind it, and the learning-rate line crossed it."""
    import math

    import matplotlib.pyplot as plt

    from fervid.evaluation import plots

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    history = [{"epoch": e, "loss": 2 - e / 20, "val_loss": 2.1 - e / 25, "accuracy": 0.16 + e / 100, "val_accuracy": 0.1569,
                "learning_rate": 2e-3 * math.cos(e / 40)} for e in range(1, 31)]
    plots.plot_history(history, tmp_path / "curves.png")
    (figure,) = figures
    renderer = figure.canvas.get_renderer()
    legends = [axes.get_legend() for axes in figure.axes if axes.get_legend() is not None]
    assert len(legends) == 2
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert all(box.y1 <= axes.get_window_extent(renderer).y0 for axes in figure.axes), "below every plot"
    monkeypatch.undo()
    plt.close(figure)


def test_a_model_that_gives_every_face_one_class_is_said_to_have_learned_nothing():
    """Three epochs on a small dataset gave every validation face "surprise", and the report said only
    that the temperature fit "did not settle"; a model at chance now gets a plain warning."""
    from fervid.evaluation.metrics import classification_report
    from fervid.training.run import one_class_warning

    truth = np.repeat(np.arange(7), 10)
    assert one_class_warning(classification_report(truth, np.full(70, 6))) == (
        "the model gives 100% of the validation faces one class (surprise): it has not learned to tell the expressions apart "
        "(train for more epochs or with a lower --lr, or check the data)")
    mostly = np.where(np.arange(70) < 64, 3, truth)  # 64 + the 6 happy faces among the rest: 91% happy
    assert one_class_warning(classification_report(truth, mostly)).startswith("the model gives 91% of the validation faces one class (happy)")
    assert one_class_warning(classification_report(truth, truth)) is None
    assert one_class_warning(classification_report(np.full(70, 3), np.full(70, 3))) is None, "one class is all the data holds"


def test_the_closing_line_leads_with_the_scores_evaluate_gives(tmp_path):
    """It led with the single view's macro-F1 beside the flip-averaged accuracy, so the first number a
    researcher copied was not the one `fervid evaluate` (flip averaging, as the runtime) printed."""
    from fervid.training.run import describe_run

    metrics = {"accuracy": 0.5, "macro_f1": 0.4, "accuracy_flip_tta": 0.6, "macro_f1_flip_tta": 0.45}
    card = {"metrics": metrics, "inference": {"flip_tta": True}, "dataset": {"validation_images": 255, "validation_source": "validation"}}
    assert describe_run(card, tmp_path)[0].startswith(
        "validation accuracy 0.6000, macro-F1 0.4500 with flip averaging, as the runtime runs it (single view 0.5000, 0.4000) "
        "on 255 faces (validation); wrote ")
    card["inference"]["flip_tta"] = False  # trained with --no-flip: the runtime runs one view
    assert describe_run(card, tmp_path)[0].startswith("validation accuracy 0.5000, macro-F1 0.4000 on 255 faces")


def test_a_net_trained_without_flips_is_not_run_on_mirrored_faces(tmp_path, monkeypatch):
    from fervid.runtime.classify import ExpressionClassifier
    from fervid.training import run as run_module

    data = write_folder_dataset(tmp_path / "d", 0, {"train": 4, "validation": 2})
    choose_temperature, scored_with_a_model_in_the_run = run_module.choose_temperature, []

    def spy(*args, **kwargs):  # the scoring happens on a provisional export, which was run/model.onnx itself
        scored_with_a_model_in_the_run.append((tmp_path / "run" / "model.onnx").exists())
        return choose_temperature(*args, **kwargs)

    monkeypatch.setattr(run_module, "choose_temperature", spy)
    printed = fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--batch-size", "8", "--no-flip", "--out", str(tmp_path / "run")).stdout
    assert scored_with_a_model_in_the_run == [False], "a stop while scoring left a model.onnx with a provisional card"
    assert "validation accuracy" in printed and "flip averaging" not in printed, "the score printed is the one the runtime gives"
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["inference"]["flip_tta"] is False
    assert card["metrics"]["temperature_check"]["flip_tta"] is False, "calibrated on the single view the runtime uses"
    assert card["metrics"]["input_blur_check"].get("flip_tta", False) is False
    assert ExpressionClassifier(tmp_path / "run").flip_tta is False
    report = (tmp_path / "run" / "report.md").read_text()
    assert "off in the runtime: trained with --no-flip" in report
    assert "as the runtime runs the model (input blur, single views)" in report and "(input blur, flip averaging)" not in report
    # the report, the plot and the card describe the single views the runtime uses, not flip averaging
    assert "## Calibration (validation, single view, as the runtime runs it)" in report and "## Calibration (validation, flip" not in report
    assert f"Expected calibration error {card['metrics']['ece']:.4f}" in report
    single = json.loads((tmp_path / "run" / "metrics.json").read_text())["single"]
    assert card["metrics"]["per_class"] == single["per_class"]
    # --against scores the other model as its own card runs it: the bundled one with flip averaging,
    # not with this card's single views (which under-rated it in the paired test)
    scores, alone = tmp_path / "against.json", tmp_path / "alone.json"
    printed = fervid_here("evaluate", str(tmp_path / "run"), str(data), "--against", "fervid-vgg", "--json", str(scores)).stdout
    fervid_here("evaluate", "fervid-vgg", str(data), "--json", str(alone))
    against, bundled = json.loads(scores.read_text())["against"], json.loads(alone.read_text())
    assert json.loads(scores.read_text())["flip_tta"] is False and against["flip_tta"] is True
    assert (against["accuracy"], against["input_blur"], against["temperature"]) == (bundled["accuracy"], bundled["input_blur"], bundled["temperature"])
    assert "against fervid-vgg (flip averaging, input blur 0.7, temperature 1)" in " ".join(printed.split())
    fervid_here("evaluate", str(tmp_path / "run"), str(data), "--against", "fervid-vgg", "--no-flip-tta", "--json", str(scores))
    assert json.loads(scores.read_text())["against"]["flip_tta"] is False, "a flip setting given applies to both"


def test_a_warm_up_as_long_as_the_run_is_named(capsys):
    from fervid.training.config import TrainConfig
    from fervid.training.schedule import learning_rate

    learning_rate(TrainConfig(data="d", epochs=2, warmup_epochs=3), steps_per_epoch=10)
    assert "--warmup-epochs 3 is not shorter than --epochs 2" in capsys.readouterr().err
    learning_rate(TrainConfig(data="d", epochs=20, warmup_epochs=3), steps_per_epoch=10)
    assert capsys.readouterr().err == ""
    # a resume cannot change it (--resume refuses --warmup-epochs): it was repeated, advising just that
    learning_rate(TrainConfig(data="d", epochs=2, warmup_epochs=3), steps_per_epoch=10, starting=False)
    assert capsys.readouterr().err == ""


def test_the_constant_schedule_holds_the_rate_after_its_warm_up(capsys):
    """--schedule constant (stochastic weight averaging's): the warm-up, then --lr to the last step,
    where the cosine schedule would have decayed it to 0."""
    from fervid.training.config import TrainConfig
    from fervid.training.schedule import learning_rate

    rate = learning_rate(TrainConfig(data="d", epochs=10, warmup_epochs=2, learning_rate=5e-4, schedule="constant"), 10)
    assert float(rate(0)) < 1e-5 and float(rate(10)) == pytest.approx(2.5e-4, rel=0.02)
    assert [float(rate(step)) for step in (20, 50, 99, 100)] == pytest.approx([5e-4] * 4)
    cosine = learning_rate(TrainConfig(data="d", epochs=10, warmup_epochs=2, learning_rate=5e-4), 10)
    assert float(cosine(99)) < 1e-6
    learning_rate(TrainConfig(data="d", epochs=2, warmup_epochs=3, schedule="constant"), 10)
    assert capsys.readouterr().err == "", "no decay to lose: a long warm-up is only a ramp"


def test_recalibrated_batchnorm_statistics_average_the_batches_and_leave_nothing_changed():
    """The average's BatchNorm statistics are each batch's statistics averaged over the sample, the
    same every time (the random draws of dropout are wound back), and the model's own statistics,
    momentum and random-number state are back after the block."""
    from fervid.model.backend import keras
    from fervid.training.averaging import Recalibration, recalibrated_norms, seed_states

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.5, seed=1), keras.layers.BatchNormalization(momentum=0.9)])
    norm = model.layers[-1]
    faces = np.random.default_rng(0).normal(2.0, 3.0, (10, 3)).astype(np.float32)
    seed = keras.ops.convert_to_numpy(seed_states(model)[0])
    measured = []
    for _ in range(2):
        with recalibrated_norms(model, Recalibration(faces, 4)):  # batches of 4, 4 and 2
            measured.append((keras.ops.convert_to_numpy(norm.moving_mean), keras.ops.convert_to_numpy(norm.moving_variance)))
            assert norm.momentum == 0.9
        assert np.array_equal(keras.ops.convert_to_numpy(norm.moving_mean), np.zeros(3)) and np.array_equal(keras.ops.convert_to_numpy(norm.moving_variance), np.ones(3))
        assert np.array_equal(keras.ops.convert_to_numpy(seed_states(model)[0]), seed)
    assert all(np.array_equal(a, b) for a, b in zip(*measured)), "the same weights got other statistics"
    without_dropout = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    with recalibrated_norms(without_dropout, Recalibration(faces, 4)):
        batches = [faces[:4], faces[4:8], faces[8:]]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(without_dropout.layers[0].moving_mean), np.mean([b.mean(0) for b in batches], axis=0), rtol=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(without_dropout.layers[0].moving_variance), np.mean([b.var(0) for b in batches], axis=0), rtol=1e-5)


def test_a_run_too_short_for_its_average_is_warned(capsys):
    """Keras's average starts at the first step's weights: a 400-step run at --ema 0.999 exported a
    model at chance (the first weights still two thirds of the average) without a word."""
    from fervid.training.averaging import warn_if_too_short_to_average

    warn_if_too_short_to_average(0.999, 400)
    err = capsys.readouterr().err
    assert "--ema 0.999 averages about 1,000 steps, but the run has 400" in err and "67% of the first steps' weights" in err
    assert "use --ema 0.9875 or lower" in err
    for decay, steps in ((0.999, 8980), (0.0, 10)):  # the FER2013 A/B's 20 epochs; no averaging
        warn_if_too_short_to_average(decay, steps)
        assert capsys.readouterr().err == ""


def write_unimprovable_dataset(root: Path) -> Path:
    """Drawn patterns to train on, and a validation split of seven identical grey faces, one per class:
    a net gives them all one class, so its validation accuracy is 1/7 at every epoch and never improves."""
    import cv2

    from fervid.labels import EXPRESSIONS

    write_folder_dataset(root, 0, {"train": 4})
    for name in EXPRESSIONS:
        (root / "validation" / name).mkdir(parents=True)
        cv2.imwrite(str(root / "validation" / name / "grey.png"), np.full((48, 48), 128, np.uint8))
    return root


def history_rows(run: Path) -> list[dict[str, float]]:
    header, *rows = [line.split(",") for line in (run / "history.csv").read_text().splitlines() if line]
    return [dict(zip(header, map(float, row))) for row in rows]


def test_patience_stops_a_run_that_no_longer_improves_and_resume_keeps_it_stopped(tmp_path, capsys):
    """--patience 2: epoch 1 sets the best validation accuracy, epochs 2 and 3 do not beat it, so the run
    stops after epoch 3 of 10 and says so. Resuming it finishes the run from the best epoch, no more training."""
    from fervid.training.config import TrainConfig
    from fervid.training.fit import fit

    data = write_unimprovable_dataset(tmp_path / "d")
    run = tmp_path / "run"
    config = TrainConfig(data=str(data), arch="compact", epochs=10, batch_size=8, warmup_epochs=0, patience=2)
    fit(config, run)
    printed = capsys.readouterr().out
    assert "early stop: no better validation accuracy for 2 epochs" in printed
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == 3 and state["best_epoch"] == 1, "stopped 2 epochs after the best one, not at --epochs 10"
    assert [row["val_accuracy"] for row in history_rows(run)] == pytest.approx([1 / 7] * 3), "the premise: nothing to improve"
    assert "epoch 4/10" not in printed

    checkpoint = {path.name: path.read_bytes() for path in (run / "checkpoint").iterdir()}
    history = (run / "history.csv").read_bytes()
    resumed = fervid_here("train", "--resume", "--out", str(run))
    assert "epoch 4/10" not in resumed.stdout and "early stop" not in resumed.stdout, "an early-stopped run trains no more"
    assert {path.name: path.read_bytes() for path in (run / "checkpoint").iterdir()} == checkpoint
    assert (run / "history.csv").read_bytes() == history
    card = json.loads((run / "model.json").read_text())
    assert card["training"]["epochs"] == 10 and card["training"]["patience"] == 2
    assert card["epochs_trained"] == 3 and card["best_epoch"] == 1


def test_the_plateau_schedule_halves_the_learning_rate_after_five_epochs_without_progress_across_a_resume(tmp_path):
    """--schedule plateau keeps --lr flat (no warm-up, no cosine) until validation accuracy has not improved
    for 5 epochs, then halves it: epochs 2-6 do not beat epoch 1, so epoch 7 runs at half the rate, and
    epochs 7-11 make five more, so epoch 12 runs at a quarter. The run stops after epoch 6, just as it
    halved the rate, and resumes: the rate and the count carry over, as if it had never stopped."""
    from fervid.training.config import TrainConfig
    from fervid.training.fit import fit

    data = write_unimprovable_dataset(tmp_path / "d")
    config = TrainConfig(data=str(data), arch="compact", epochs=6, batch_size=8, learning_rate=1e-3, schedule="plateau")
    fit(config, tmp_path / "run")
    fit(dataclasses.replace(config, epochs=12), tmp_path / "run", resume=True)
    rates = [row["learning_rate"] for row in history_rows(tmp_path / "run")]
    assert rates == pytest.approx([1e-3] * 6 + [5e-4] * 5 + [2.5e-4], rel=1e-5), rates


def test_a_kill_between_the_weights_and_the_state_as_the_plateau_halves_does_not_halve_it_again_early(tmp_path):
    """The weights of epoch 6 (the rate halved at its end) were saved, state.json still ended at epoch
    5: the repair counted the plateau on to 5 where the callback had reset it, so epoch 8 halved again
    (four epochs early), and its history row showed the halved rate instead of the one epoch 6 ran at."""
    import shutil

    from fervid.training.config import TrainConfig
    from fervid.training.fit import fit

    data = write_unimprovable_dataset(tmp_path / "d")
    config = TrainConfig(data=str(data), arch="compact", epochs=5, batch_size=8, learning_rate=1e-3, schedule="plateau")
    run = tmp_path / "run"
    fit(config, run)
    shutil.copy(run / "checkpoint" / "state.json", tmp_path / "state-5.json")
    fit(dataclasses.replace(config, epochs=6), run, resume=True)  # epoch 6 halves the rate at its end
    shutil.copy(tmp_path / "state-5.json", run / "checkpoint" / "state.json")  # killed before state.json was written
    fit(dataclasses.replace(config, epochs=12), run, resume=True)
    rates = [row["learning_rate"] for row in history_rows(run)]
    assert rates == pytest.approx([1e-3] * 6 + [5e-4] * 5 + [2.5e-4], rel=1e-5), rates  # as the run left alone


def test_the_plateau_count_repair_moves_as_the_callback_does():
    """The repair's count: reset by an improvement, reset by the halving it reaches patience with; a
    rate lowered by the epoch before (the one this epoch ran at) is no halving of this one's."""
    from fervid.training.schedule import step_plateau

    counted = {"best": 0.5, "wait": 0, "cooldown": 0}
    assert step_plateau(counted, 0.4, halved=True) is False and counted["wait"] == 1, "the epoch after a halving"
    counted["wait"] = 4
    assert step_plateau(counted, 0.4, halved=True) is True and counted["wait"] == 0
    assert step_plateau(counted, 0.50005, halved=False) is False and counted["wait"] == 1, "under min_delta: no progress"
    assert step_plateau(counted, 0.6, halved=False) is False and counted == {"best": 0.6, "wait": 0, "cooldown": 0}


def test_balanced_batches_draw_every_class_equally_often_and_resume_on_the_same_draws():
    """--imbalance sampling: from data where one class has 30x the faces of each other one (and one class has
    none), every present class fills about the same share of the batches; an epoch is as long as the data."""
    from fervid.training.batches import BalancedBatches

    labels = np.array([3] * 300 + [c for c in (0, 2, 4, 5, 6) for _ in range(10)])  # no disgust (1) at all
    inputs = np.arange(len(labels), dtype=np.float32)[:, None]  # each face is its row number
    targets = np.eye(7, dtype=np.float32)[labels]
    batches = BalancedBatches(inputs, targets, labels, batch_size=32, seed=5)
    assert len(batches) == int(np.ceil(350 / 32))
    drawn = []
    for _ in range(6):
        epoch = [batches[i] for i in range(len(batches))]
        assert sum(len(x) for x, _ in epoch) == len(labels)
        for x, y in epoch:
            assert np.array_equal(y, targets[x[:, 0].astype(int)]), "each face keeps its own target"
            drawn.extend(y.argmax(axis=1))
        batches.on_epoch_end()
    shares = np.bincount(drawn, minlength=7) / len(drawn)
    assert shares[1] == 0.0
    assert np.allclose(shares[[0, 2, 3, 4, 5, 6]], 1 / 6, atol=0.03), shares  # the data's own share of class 3 is 0.86
    again = BalancedBatches(inputs, targets, labels, batch_size=32, seed=5)
    later = BalancedBatches(inputs, targets, labels, batch_size=32, seed=5, first_epoch=2)
    again.on_epoch_end()
    assert not np.array_equal(again.order, BalancedBatches(inputs, targets, labels, batch_size=32, seed=5).order), "each epoch draws anew"
    again.on_epoch_end()
    assert np.array_equal(again.order, later.order), "a run resumed at epoch 3 draws what the uninterrupted run would have"


def test_balanced_class_weights_give_every_class_the_same_total_weight():
    """--imbalance weights: a class 30x rarer weighs 30x more per face, so each present class adds up to the
    same total weight (an absent class gets none) and the mean weight per face stays 1."""
    from fervid.training.batches import class_weights, face_weights

    labels = np.array([3] * 300 + [c for c in (0, 2, 4, 5, 6) for _ in range(10)])
    weights = class_weights(labels)
    assert weights[3] == pytest.approx(350 / (6 * 300)) and weights[0] == pytest.approx(350 / (6 * 10))
    assert weights[0] == pytest.approx(30 * weights[3]) and weights[1] == 0.0
    per_face = face_weights(labels)
    totals = np.bincount(labels, weights=per_face, minlength=7)
    assert np.allclose(totals[[0, 2, 3, 4, 5, 6]], len(labels) / 6) and totals[1] == 0.0
    assert per_face.mean() == pytest.approx(1.0)


def test_training_on_balanced_batches_runs_through_keras(tmp_path, monkeypatch):
    """--imbalance sampling feeds Keras the balanced stream (a PyDataset) for every epoch asked:
    the batches trained on hold the classes in about equal shares, not happy's 5 in 11."""
    from fervid.labels import EXPRESSIONS
    from fervid.training.batches import BalancedBatches
    from fervid.training import fit as fit_module
    from fervid.training.config import TrainConfig

    data = write_folder_dataset(tmp_path / "d", 0, {"train": 3, "validation": 1})
    for extra in range(12):  # happy, 5x the faces of every other class
        shutil.copy(data / "train" / "happy" / "0000.png", data / "train" / "happy" / f"x{extra}.png")
    served = []
    real_item = BalancedBatches.__getitem__

    def item(self, batch):
        inputs, targets = real_item(self, batch)
        served.append(np.asarray(targets).argmax(axis=1))
        return inputs, targets

    monkeypatch.setattr(BalancedBatches, "__getitem__", item)
    run = tmp_path / "run"
    fit_module.fit(TrainConfig(data=str(data), arch="compact", epochs=2, batch_size=8, warmup_epochs=0, imbalance="sampling"), run)
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == 2 and [row["epoch"] for row in state["history"]] == [1, 2]
    assert all(np.isfinite(row["loss"]) for row in state["history"])
    labels = np.concatenate(served)  # 33 faces a epoch, 2 epochs (and Keras may peek at a batch first)
    assert len(labels) >= 2 * 33, len(labels)
    happy_share = np.mean(labels == EXPRESSIONS.index("happy"))
    assert happy_share < 0.3, f"happy is {happy_share:.2f} of the faces trained on; 15 of 33 without balancing"


def test_auto_precision_is_bfloat16_only_where_the_cpu_has_it(monkeypatch):
    """``--precision auto`` (the default) trains in mixed_bfloat16 on TensorFlow only when the CPU has
    native bf16 (AMX or AVX-512 BF16); elsewhere auto means float32.
    An explicit precision is kept as asked on any CPU."""
    from fervid.training import precision

    monkeypatch.setattr(precision.keras.backend, "backend", lambda: "tensorflow")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.resolve_precision("auto") == "float32"
    assert precision.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.resolve_precision("auto") == "mixed_bfloat16"
    assert precision.resolve_precision("float32") == "float32"
    monkeypatch.setattr(precision.keras.backend, "backend", lambda: "jax")
    assert precision.resolve_precision("auto") == "float32"  # bf16 on a CPU is TensorFlow's oneDNN path only


def test_cpu_has_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    from fervid.training import precision

    cpuinfo = tmp_path / "cpuinfo"
    real = Path

    def fake_path(name, *rest):
        return cpuinfo if str(name) == "/proc/cpuinfo" else real(name, *rest)

    monkeypatch.setattr(precision, "Path", fake_path)
    for flags, expected in (("fpu sse avx2 avx512f", False), ("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True)):
        cpuinfo.write_text(f"processor : 0\nflags : {flags}\n")
        assert precision.cpu_has_bf16() is expected, flags
    cpuinfo.unlink()
    assert precision.cpu_has_bf16() is False  # no /proc/cpuinfo (macOS, Windows): float32


def test_evaluate_and_train_say_what_the_read_left_out(tmp_path):
    """Rows without a usable label and images outside a class folder are not scored; evaluate must say
    so (data inspect's dropped lines), or a user scores a smaller set than they think."""
    from conftest import write_fer_csv

    csv_path = write_fer_csv(tmp_path / "faces.csv", {"PublicTest": 2})
    rows = csv_path.read_text().splitlines()
    pixels = rows[1].split(",")[1]
    csv_path.write_text("\n".join([*rows, f"7,{pixels},PublicTest", f"happy,{pixels},PublicTest", f",{pixels},PublicTest"]) + "\n")
    result = fervid_here("evaluate", "fervid-vgg", str(csv_path))
    assert "left out: rows without an emotion 0-6 (out of range, empty or not a number) (3)" in result.stderr
    assert "14 images" in result.stdout

    folder = write_folder_dataset(tmp_path / "ds", 1, {"validation": 1})
    (folder / "validation" / "loose.png").write_bytes((folder / "validation" / "happy" / "0000.png").read_bytes())
    result = fervid_here("evaluate", "fervid-vgg", str(folder))
    assert "left out: validation (images in a split folder with no class folder) (1)" in result.stderr


def test_evaluate_writes_each_faces_prediction_wrong_ones_first(trained_run, tmp_path):
    run, data = trained_run
    table, metrics = tmp_path / "faces.csv", tmp_path / "m.json"
    fervid_here("evaluate", str(run), str(data), "--predictions", str(table), "--json", str(metrics))
    import csv

    from fervid.labels import EXPRESSIONS

    rows = list(csv.DictReader(table.open()))
    scores = json.loads(metrics.read_text())
    assert len(rows) == scores["images"] and len({row["source"] for row in rows}) == len(rows)
    correct = [row["correct"] == "true" for row in rows]
    assert sum(correct) / len(rows) == pytest.approx(scores["accuracy"], abs=1e-9)
    assert correct == sorted(correct), "the wrong ones first"
    wrong = [float(row["confidence"]) for row in rows if row["correct"] == "false"]
    assert wrong == sorted(wrong, reverse=True), "most confident mistakes first"
    for row in rows:
        probabilities = {name: float(row[f"prob_{name}"]) for name in EXPRESSIONS}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3)
        assert row["predicted"] == max(probabilities, key=probabilities.get) and row["label"] in EXPRESSIONS
        assert (data / row["source"]).is_file() and row["source"].split("/")[1] == row["label"]  # names the face's file
    refused = fervid_here("evaluate", str(run), str(data), "--predictions", str(tmp_path / "faces.json"), check=False)
    assert refused.returncode == 2 and "give a path ending in .csv" in refused.stderr
    inside = data / "validation" / "happy" / "faces.csv"
    refused = fervid_here("evaluate", str(run), str(data), "--predictions", str(inside), check=False)
    assert refused.returncode == 2 and "would report it as a stray file among the faces" in refused.stderr and not inside.exists()


def no_recalibration():
    """What a run without --ema samples for the average's BatchNorm statistics: no faces."""
    from fervid.training.averaging import Recalibration

    return Recalibration(np.zeros((0, 48, 48, 1), np.float32), BATCH)


def test_a_diverged_epoch_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    """A nan loss used to be trained on to the end, exported, and scored as a calibrated model."""
    from fervid.errors import FervidError
    from fervid.training.checkpoint import RunCheckpoint

    state = {"epochs_done": 4, "best_epoch": 3, "best_val_accuracy": 0.4, "history": [{"epoch": 4}]}
    checkpoint = RunCheckpoint(tmp_path, None, state, total_epochs=10, patience=0, recalibration=no_recalibration())
    logs = {"loss": float("nan"), "accuracy": 0.1, "val_loss": float("nan"), "val_accuracy": 0.14, "learning_rate": 1e-3}
    with pytest.raises(FervidError, match=r"^epoch 5: the training loss became nan \(the training diverged\); the checkpoint of "
                                          r"epoch 4 is kept, nothing was exported; start a new run with a lower --lr and another --out$"):
        checkpoint.on_epoch_end(4, logs)
    assert state == {"epochs_done": 4, "best_epoch": 3, "best_val_accuracy": 0.4, "history": [{"epoch": 4}]}
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_a_checkpoint_waits_for_the_whole_checkpoint(tmp_path, capsys):
    """Weights written and state.json not yet: a resume ran the schedule one epoch ahead. The
    epoch's line is printed too (it was lost, though the epoch was kept)."""
    from fervid.training.checkpoint import RunCheckpoint

    class Weights:
        optimizer = None  # as a Keras model's before compile: no weight averaging

        def save_weights(self, path: str) -> None:
            Path(path).write_bytes(b"epoch 5")
            if Path(path).name.startswith(".last"):  # Ctrl+C while the checkpoint is written
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal is delivered here, and must not stop the checkpoint

    (tmp_path / "checkpoint").mkdir()
    state = {"epochs_done": 4, "best_epoch": 3, "best_val_accuracy": 0.4, "history": []}
    checkpoint = RunCheckpoint(tmp_path, Weights(), state, total_epochs=10, patience=0, recalibration=no_recalibration())
    checkpoint.set_model(Weights())
    logs = {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.45, "learning_rate": 1e-3}
    with pytest.raises(KeyboardInterrupt):
        checkpoint.on_epoch_end(4, logs)
    saved = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert saved["epochs_done"] == 5 and saved["best_epoch"] == 5, "state.json written with the weights of its epoch"
    assert (tmp_path / "checkpoint" / "last.weights.h5").read_bytes() == b"epoch 5"
    assert (tmp_path / "checkpoint" / "best.weights.h5").read_bytes() == b"epoch 5"
    assert "epoch 5/10  loss 1.0000" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the usual Ctrl+C again


def test_a_run_still_training_refuses_a_second_process(tmp_path):
    """A resume started while the run still trains (a lost SSH session) mixed both runs' files."""
    from fervid.training.config import TrainConfig
    from fervid.training.lock import RunLock

    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    TrainConfig(data=str(write_folder_dataset(tmp_path / "d", 0, {"train": 2, "validation": 1})), arch="compact",
                epochs=2, warmup_epochs=0).save(run / "config.json")
    (run / "checkpoint" / "state.json").write_text(json.dumps({"epochs_done": 1, "best_epoch": 1, "best_val_accuracy": 0.2, "history": []}))
    with RunLock(run) as lock:
        lock.acquire()  # this process is "the run that still trains"
        result = fervid_here("train", "--resume", "--out", str(run), check=False)
    assert result.returncode == 2 and result.stderr.strip() == (
        f"fervid: error: {run}: is being trained by process {os.getpid()} now; wait for it to end (or stop it) "
        "before resuming, or train into another --out")
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epochs_done"] == 1
    with RunLock(run) as lock:  # released when the holder's block ended (and by the kernel when a process dies)
        lock.acquire()
    # still in its first epoch (no state.json yet): refused in one line, without first being told
    # "no finished epoch to resume from; starting at epoch 1"
    (run / "checkpoint" / "state.json").unlink()
    with RunLock(run) as lock:
        lock.acquire()
        result = fervid_here("train", "--resume", "--out", str(run), check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"fervid: error: {run}: is being trained by process {os.getpid()} now; wait for it to end (or stop it) "
        "before resuming, or train into another --out"]


def test_a_keras_backend_that_is_not_there_is_one_line(tmp_path):
    """KERAS_BACKEND=jax without JAX (or a typo) gave Keras's import traceback."""
    from importlib.util import find_spec

    cases = [("foo", "fervid: error: KERAS_BACKEND=foo: not a Keras backend (use tensorflow, jax, torch, numpy, openvino, or unset it for tensorflow)")]
    cases += [(name, f"fervid: error: KERAS_BACKEND={name}: a package it needs is not installed ({name}); install {name}, "
                     "or unset KERAS_BACKEND for tensorflow") for name in ("jax", "torch") if find_spec(name) is None]
    for backend, message in cases:
        result = subprocess.run([*FERVID, "train", str(tmp_path / "data"), "--out", str(tmp_path / "run")], capture_output=True,
                                text=True, timeout=120, env={**os.environ, "KERAS_BACKEND": backend})
        assert result.returncode == 2 and result.stderr.strip() == message, result.stderr
    assert not (tmp_path / "run").exists()
    empty = subprocess.run([*FERVID, "train", str(tmp_path / "data"), "--out", str(tmp_path / "run")], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "KERAS_BACKEND": ""})  # set but empty: TensorFlow, as Keras reads it
    assert empty.returncode == 2 and "KERAS_BACKEND" not in empty.stderr and "no such" in empty.stderr.lower(), empty.stderr


def test_a_keras_backend_without_fit_is_refused_before_the_run_folder_is_made(tmp_path, monkeypatch):
    """Keras runs models on numpy (and openvino) but has no fit there: a traceback after config.json was written."""
    from fervid.errors import FervidError
    from fervid.training import fit as fit_module
    from fervid.training.config import TrainConfig

    data = write_folder_dataset(tmp_path / "faces", 0, {"train": 1})
    monkeypatch.setattr(fit_module.keras.backend, "backend", lambda: "numpy")
    with pytest.raises(FervidError, match=r"^KERAS_BACKEND=numpy cannot train \(Keras has no fit on it\); use tensorflow, jax, torch "):
        fit_module.fit(TrainConfig(data=str(data), arch="compact", epochs=1), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, capsys):
    """A full disk: h5py's message spanned lines and named the temporary file, and the interpreter's
    teardown then crashed in h5py (a segfault, exit 139) after it."""
    from fervid.errors import WriteFailedInLibrary
    from fervid.training.checkpoint import save_weights

    # h5py's objects of the failed write complain as they are freed, through both hooks as Cython
    # reports errors in __dealloc__: a traceback each around the one line (seen on a full tmpfs)
    h5py = {}
    exec(compile("class ObjectID:\n    def __del__(self):\n        raise RuntimeError(\"Can't decrement id ref count\")\n",
                 "h5py/_objects.pyx", "exec"), h5py)

    class FullDisk:
        def save_weights(self, path: str) -> None:
            Path(path).write_bytes(b"half")
            try:
                h5py["ObjectID"]().__del__()
            except RuntimeError as error:
                sys.excepthook(type(error), error, error.__traceback__)
            h5py["ObjectID"]()  # freed at once: its error goes to sys.unraisablehook
            raise OSError("Can't synchronously write data (file write failed: time = Sat Dec  5\n, errno = 28, "
                          "error message = 'No space left on device')")

    class Fine:
        def save_weights(self, path: str) -> None:
            Path(path).write_bytes(b"this epoch")

    best, last = tmp_path / "checkpoint" / "best.weights.h5", tmp_path / "checkpoint" / "last.weights.h5"
    hooks = sys.excepthook, sys.unraisablehook
    best.parent.mkdir()
    best.write_bytes(b"the epoch before")
    last.write_bytes(b"the epoch before")
    with pytest.raises(WriteFailedInLibrary, match=rf"^{re.escape(str(last))}: could not be written \(no space left on device\); "
                                                   "the checkpoint before it is kept$"):
        save_weights({best: Fine(), last: FullDisk()})  # best written, last not: neither may be replaced
    assert capsys.readouterr().err == "", "h5py's noise around the one line"
    assert (sys.excepthook, sys.unraisablehook) == hooks, "the hooks are put back"
    assert best.read_bytes() == last.read_bytes() == b"the epoch before"
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.weights.h5", "last.weights.h5"]
    save_weights({best: Fine(), last: Fine()})
    assert best.read_bytes() == last.read_bytes() == b"this epoch"
    code = ("import sys, atexit, typer, fervid.cli as cli\n"
            "from fervid.errors import WriteFailedInLibrary\n"
            "atexit.register(lambda: print('teardown ran', file=sys.stderr))\n"
            "app = typer.Typer()\n"
            "@app.command()\n"
            "def train(): raise WriteFailedInLibrary('x.h5: could not be written (no space left on device)')\n"
            "cli.app = app\nsys.argv = ['fervid']\ncli.main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr == "fervid: error: x.h5: could not be written (no space left on device)\n"


def test_a_run_stopped_while_writing_its_model_and_card_is_refused_with_the_command_that_finishes_it(tmp_path):
    """Killed between model.keras and model.json, a run was exported as a bare model (no flip
    averaging, blur or temperature from its card), and evaluate sent its user to --split train."""
    data = write_folder_dataset(tmp_path / "d", 2)
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": str(data), "arch": "compact"}))
    (run / "checkpoint" / "state.json").write_text(json.dumps({"epochs_done": 3}))
    (run / "model.keras").write_bytes(b"the weights, written before the card")
    expected = f"{run}: a training run that did not finish (stopped while writing its model and card: no model.json); " \
               f"finish it with: fervid train --resume --out {run}"
    for command in (["evaluate", str(run), str(data)], ["export", str(run)]):
        refused = fervid_here(*command, check=False)
        assert refused.returncode == 2 and " ".join(refused.stderr.split()) == f"fervid: error: {expected}", command
    assert sorted(path.name for path in run.iterdir()) == ["checkpoint", "config.json", "model.keras"], "nothing written"


def test_a_run_that_finished_into_the_folder_while_the_data_was_read_is_not_overwritten(tmp_path, monkeypatch):
    """The 'already holds a training run' check ran before the data was read, and nothing looked
    again under the lock: a run that finished there meanwhile was replaced without a word."""
    import fervid.training.fit as fit_module

    data = write_folder_dataset(tmp_path / "d", 2)
    run = tmp_path / "run"
    real_load = fit_module.load_training_data

    def finished_meanwhile(config):
        (run / "checkpoint").mkdir(parents=True)
        (run / "checkpoint" / "state.json").write_text(json.dumps({"epochs_done": 6}))
        (run / "config.json").write_text(json.dumps({"data": "the other run's"}))
        return real_load(config)

    monkeypatch.setattr(fit_module, "load_training_data", finished_meanwhile)
    refused = fervid_here("train", str(data), "--arch", "compact", "--epochs", "1", "--out", str(run), check=False)
    assert refused.returncode == 2 and "already holds a training run; use --resume" in refused.stderr
    assert json.loads((run / "config.json").read_text()) == {"data": "the other run's"}
    assert json.loads((run / "checkpoint" / "state.json").read_text()) == {"epochs_done": 6}


def test_a_temperature_fitted_at_the_search_limit_is_flagged_in_the_report():
    """A fit of 3.998 against the 4.0 ceiling was reported like any other: the fit did not settle."""
    from fervid.training.run import temperature_reason

    check = {"temperature": 3.998, "ece_flip_tta_at_1": 0.2, "ece_flip_tta_fitted": 0.1, "kept": True}
    assert "at the search's limit (0.25-4): the fit did not settle" in temperature_reason(check)
    assert "limit" not in temperature_reason({**check, "temperature": 1.3})


def test_the_resume_seed_stays_one_numpy_takes():
    """--seed allows up to 2**32 - 1; seed + epochs done went past it and every resume failed."""
    from fervid.training.fit import resume_seed

    assert resume_seed(42, 0) == 42, "a new run starts from its own seed"
    assert resume_seed(42, 168) == (42 + 168 * 0x9E3779B1) % 2**32
    np.random.seed(resume_seed(2**32 - 1, 300))  # accepted
    # a resumed run's seeds are not another run's: --seed 42 after epoch 1 drew a fresh --seed 43's numbers,
    # and the augmentation layers take 8 consecutive seeds
    resumed = {resume_seed(42, epochs) + layer for epochs in range(1, 300) for layer in range(8)}
    fresh = {seed + layer for seed in range(10_000) for layer in range(8)}
    assert len(resumed) == 299 * 8 and not resumed & fresh


def test_a_val_fraction_the_data_does_not_use_is_named(tmp_path, capsys):
    """--val-fraction on data with a validation split did nothing, silently."""
    from fervid.training.config import TrainConfig
    from fervid.training.dataset import load_training_data

    data = write_folder_dataset(tmp_path / "d", 0, {"train": 4, "validation": 1})
    assert load_training_data(TrainConfig(data=str(data))).validation_source == "validation split"
    assert capsys.readouterr().err == ""
    assert len(load_training_data(TrainConfig(data=str(data), val_fraction=0.3)).validation) == 7
    assert capsys.readouterr().err == (f"warning: {data}: has a validation split, which is used; --val-fraction 0.3 applies "
                                       "only to data without one\n")


def test_auto_precision_is_decided_when_a_run_starts_and_kept_at_each_resume(tmp_path, monkeypatch):
    """A run started where auto meant mixed_bfloat16 and resumed where it means float32 switched
    precision mid-schedule, and its card named only the last one."""
    from fervid.training import fit as fitting
    from fervid.training import precision
    from fervid.training.config import TrainConfig

    monkeypatch.setattr(fitting.keras.backend, "backend", lambda: "tensorflow")
    data = write_unimprovable_dataset(tmp_path / "d")
    config = TrainConfig(data=str(data), arch="compact", epochs=1, batch_size=8)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    fitting.fit(config, tmp_path / "run")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    classifier, _, state = fitting.fit(dataclasses.replace(config, epochs=2), tmp_path / "run", resume=True)
    convs = [layer for layer in classifier.layers if isinstance(layer, fitting.keras.layers.Conv2D)]
    assert state["precision"] == "mixed_bfloat16" and {layer.dtype_policy.name for layer in convs} == {"mixed_bfloat16"}
    assert precision.run_precision("auto", {}) == "float32" and precision.run_precision("float32", state) == "float32"


def test_data_too_small_to_hold_faces_out_says_why(tmp_path):
    """One image per class and no validation split: 'no validation images could be set aside', with
    no word of why (a class needs two, one to train on and one to hold out)."""
    from fervid.errors import FervidError
    from fervid.training.config import TrainConfig
    from fervid.training.dataset import load_training_data

    data = write_folder_dataset(tmp_path / "one", 0, splits={"train": 1})
    with pytest.raises(FervidError, match="a class needs at least 2 images for one to be held out, and the largest has 1"):
        load_training_data(TrainConfig(data=str(data), arch="compact"))


def test_a_run_named_like_a_bundled_model_is_warned_of_and_the_report_names_its_start_and_map(tmp_path):
    """A run in runs/fervid-vgg was named fervid-vgg and read as the bundled model in analyze's
    model_name, without a word; the report said nothing of --init-from or --map, as if the model
    were trained from scratch on the folders as named."""
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 4, "validation": 1})
    (data / "train" / "happy").rename(data / "train" / "hapy")
    (data / "validation" / "happy").rename(data / "validation" / "hapy")
    recipe = ["--arch", "compact", "--epochs", "1", "--batch-size", "8", "--warmup-epochs", "0", "--map", "hapy=happy"]
    first = fervid_here("train", str(data), *recipe, "--out", str(tmp_path / "fervid-compact"))
    assert ("warning: the model will be named fervid-compact, as the bundled model is: its outputs (analyze's model_name, "
            "the API's model) will read as the bundled model's") in first.stderr
    assert json.loads((tmp_path / "fervid-compact" / "model.json").read_text())["name"] == "fervid-compact"
    second = fervid_here("train", str(data), *recipe, "--init-from", str(tmp_path / "fervid-compact"), "--out", str(tmp_path / "mine"))
    assert "bundled" not in second.stderr
    report = (tmp_path / "mine" / "report.md").read_text()
    start = os.path.relpath(tmp_path / "fervid-compact")  # the card's paths are relative to where it was written
    assert f"- started from `{start}` (`--init-from`), not from random weights" in report
    assert "- classes mapped (`--map`): `hapy` as happy" in report
    assert "started from" not in (tmp_path / "fervid-compact" / "report.md").read_text()


def test_classes_without_validation_faces_are_said_and_the_holdout_fraction_is_not_rounded(tmp_path, capsys):
    """A class with no validation face (none in the split, or a class of one image in a holdout) was
    trained on without a word, its recall never measured; --val-fraction 0.001 was labelled 0%."""
    from fervid.training.config import TrainConfig
    from fervid.training.dataset import load_training_data

    split = write_folder_dataset(tmp_path / "split", 0, {"train": 3, "validation": 1})
    shutil.rmtree(split / "validation" / "disgust")
    data = load_training_data(TrainConfig(data=str(split)))
    expected = ("no validation faces of disgust: trained on, but their recall is not measured (support 0 in the report), "
                "and they take no part in choosing the best epoch")
    assert data.notes == [expected] and capsys.readouterr().err == f"warning: {split}: {expected}\n"

    flat = write_folder_dataset(tmp_path / "flat", 0, {"train": 6})
    for extra in list((flat / "train" / "disgust").iterdir())[1:]:
        extra.unlink()  # one disgust image: none can be held out
    data = load_training_data(TrainConfig(data=str(flat), val_fraction=0.001))
    assert data.validation_source == "stratified 0.1% of train (seed 42)"
    assert data.notes == ["no validation faces of disgust (a class needs at least 2 images for one to be held out): trained on, "
                          "but their recall is not measured (support 0 in the report), and they take no part in choosing the best epoch"]
    assert sorted(set(data.validation.labels)) == [0, 2, 3, 4, 5, 6] and 1 in data.train.labels

    whole = write_folder_dataset(tmp_path / "whole", 0, {"train": 3, "validation": 1})
    assert load_training_data(TrainConfig(data=str(whole))).notes == []


def test_a_missing_teacher_given_by_a_relative_path_uses_the_scores_copied_for_it(tmp_path, monkeypatch):
    """The cache records a teacher by its absolute path; the same file given as tfile.onnx from its
    folder, once deleted, was not matched, and the run asked for the missing file."""
    from fervid.training.distill import same_teachers

    monkeypatch.chdir(tmp_path)
    assert same_teachers([str(tmp_path / "tfile.onnx"), "fervid-vgg"], ["tfile.onnx", "fervid-vgg"])
    assert same_teachers(["elsewhere/t.onnx"], ["elsewhere/t.onnx"])
    assert not same_teachers([str(tmp_path / "tfile.onnx")], ["other.onnx"])
    assert not same_teachers(["a.onnx", "b.onnx"], ["b.onnx", "a.onnx"]), "the cache holds the teachers in their order"
    assert not same_teachers(["a.onnx"], ["a.onnx", "a.onnx"])


def test_a_backend_without_fit_is_refused_before_keras_asks_for_its_packages(tmp_path):
    """KERAS_BACKEND=numpy said to install scipy (openvino: openvino), which would not let it train either."""
    for backend in ("numpy", "openvino"):
        result = subprocess.run([*FERVID, "train", str(tmp_path / "data"), "--out", str(tmp_path / "run")], capture_output=True,
                                text=True, timeout=120, env={**os.environ, "KERAS_BACKEND": backend})
        assert result.returncode == 2 and result.stderr.strip() == (
            f"fervid: error: KERAS_BACKEND={backend} cannot train (Keras has no fit on it); use tensorflow, jax, torch "
            "(unset KERAS_BACKEND for tensorflow)"), result.stderr


def test_a_model_whose_outputs_are_nan_is_not_exported(trained_run, tmp_path):
    """Its NaN difference from Keras passed the 1e-4 check: the export was written, and --int8 ended
    in the quantizer's traceback."""
    from fervid.model.architectures import load_classifier

    run, data = trained_run
    model = load_classifier(run / "model.keras")
    weights = model.get_weights()
    weights[-1] = np.full_like(weights[-1], np.nan)
    model.set_weights(weights)
    model.save(str(tmp_path / "nan.keras"))
    shutil.copy(run / "model.json", tmp_path / "nan.json")
    for extra in ([], ["--int8", str(data), "--out", str(tmp_path / "nan8.onnx")]):
        refused = fervid_here("export", str(tmp_path / "nan.keras"), *extra, check=False)
        assert refused.returncode == 2 and refused.stderr.strip() == (
            f"fervid: error: {tmp_path / 'nan.keras'}: the model's outputs are not numbers (NaN or infinite weights: a "
            "diverged training?); nothing written"), refused.stderr
    assert not (tmp_path / "nan.onnx").exists() and not (tmp_path / "nan8.onnx").exists()


def test_a_blur_that_lost_to_sharp_faces_is_reported_as_none_not_as_applied():
    """The report said "input blur 0.0 px, applied by the runtime ... (with it 0.6333, without 0.6476: not applied)"."""
    from fervid.training.run import blur_line

    check = {"measured": 0.7, "accuracy_flip_tta_sharp": 0.6476, "accuracy_flip_tta_blurred": 0.6333}
    line = blur_line(0.0, check)
    assert line.startswith("- no input blur: the runtime and every score here use the faces as they are (") and "applied by" not in line
    assert blur_line(0.7, {**check, "accuracy_flip_tta_blurred": 0.66}).startswith("- input blur 0.7 px, applied by the runtime")
