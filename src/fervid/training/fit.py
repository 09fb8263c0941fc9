"""Train a classifier with Keras ``fit``: in-graph augmentation, AdamW, the learning-rate schedule,
class imbalance handling, distillation, and a checkpoint every epoch that ``--resume`` continues.

The pieces live beside this module (dataset, batches, schedule, checkpoint, run_folder,
warm_start, precision); this one puts them together in the order a run needs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fervid.fileio import remove_temporaries
from fervid.model.architectures import build_augmenter, build_classifier, build_training_model
from fervid.model.backend import keras
from fervid.model.from_onnx import STATISTICS_FACES
from fervid.training.averaging import AveragedValidation, Recalibration, warn_if_too_short_to_average
from fervid.training.batches import BalancedBatches, ViewBatches, face_weights
from fervid.training.checkpoint import RunCheckpoint, catch_up_with_weights, load_checkpoint
from fervid.training.config import TrainConfig, refuse_backend_without_fit
from fervid.training.dataset import TrainingData, load_training_data
from fervid.training.distill import cached_teacher_probabilities, cached_teacher_view_probabilities, distilled_targets
from fervid.training.lock import RunLock
from fervid.training.precision import run_precision
from fervid.training.run_folder import check_new_run_folder, open_run, same_data_on_resume
from fervid.training.schedule import ResumablePlateau, learning_rate
from fervid.training.stopping import StopWhenAsked, stops_remembered
from fervid.training.warm_start import warm_start

RESUME_STRIDE = 0x9E3779B1  # odd, far from any seed a user picks: epochs' seeds stay apart from other runs'


def resume_seed(seed: int, epochs_done: int) -> int:
    """The random seed a run (re)starts with: new random numbers at each resume, the same ones for
    the same epoch; below 2**32, as NumPy takes them (a --seed near 2**32 broke every resume). Epochs
    step the seed by a large stride, not by 1: a --seed 42 run resumed after epoch 1 drew exactly a
    fresh --seed 43 run's numbers, and the augmentation layers take seed, seed + 1, ... besides."""
    return (seed + epochs_done * RESUME_STRIDE) % 2**32


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


def compile_for_training(config: TrainConfig, classifier: keras.Model, steps_per_epoch: int, epochs_done: int = 0) -> keras.Model:
    """The classifier behind the configured augmentation, compiled with AdamW (no weight decay on
    norms and biases), the learning-rate schedule and label-smoothed cross-entropy. With
    ``--teacher-views`` the faces arrive as their fixed views already, so only flips stay random.

    The augmentation is seeded for the epoch it starts at (``epochs_done``), as the rest of a run's
    random numbers are: Keras saves no random-number state with the weights, so with the run's own
    seed every resume drew the first epoch's rotations, zooms and shifts over again."""
    augmenter = augmenter_for(config, resume_seed(config.seed, epochs_done), views=bool(config.teacher_views))
    model = build_training_model(classifier, augmenter)
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate(config, steps_per_epoch, starting=not epochs_done), weight_decay=config.weight_decay,
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
    refuse_backend_without_fit(keras.backend.backend())
    config.validate()
    if resume and run.is_dir():  # a run still training is refused before anything is said of it ("starting at
        lock.acquire()  # epoch 1", then the refusal); a new run's folder gets no lock file until it is checked
    state, resume = open_run(config, run, resume)
    if run.is_dir():  # a run stopped in its first epoch: refuse a second process before reading data
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
    if resume and remaining > 0 and state["epochs_done"] and not stopped_early():  # where it stands, without state.json
        print(f"continuing at epoch {state['epochs_done'] + 1} of {config.epochs} (best so far: epoch {state['best_epoch']}, "
              f"validation accuracy {state['best_val_accuracy']:.4f})", flush=True)

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
        if verbose:  # its bar ends each epoch before the checkpoint's line, not with that line run into it
            callbacks.insert(0, keras.callbacks.ProgbarLogger())
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
