"""Weight averaging (``fervid train --ema``): the optimizer's exponential moving average of the
weights stands in for the trained weights wherever a run judges or keeps its model (validation,
the best checkpoint, the export), while training steps on from the trained weights.

The average comes with BatchNorm statistics of its own. Keras averages trainable weights only, and
the running statistics the trained weights gathered describe their activations, not the
average's: the further the weights move (a high learning rate, stochastic weight averaging), the
more they differ. Wherever the average stands in, its statistics are first re-estimated on a fixed
sample of training faces, as the training step computes them (Izmailov et al. 2018), and the
trained weights' statistics are put back with the trained weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from fervid.console import warn
from fervid.model.backend import keras

RECALIBRATION_FACES = 4096  # 32 batches of 128: a few seconds of forward passes per validation


@dataclass(frozen=True)
class Recalibration:
    """The training faces on which an average's BatchNorm statistics are re-estimated, in batches
    of the run's size."""

    faces: np.ndarray
    batch_size: int
    seed: int = 0  # the augmentation and dropout draws of the estimate start here, whatever training has drawn

    @classmethod
    def sample(cls, faces: np.ndarray, batch_size: int, seed: int) -> Recalibration:
        """A fixed sample of the training faces, the same for every epoch and every resume."""
        rows = np.random.default_rng(seed).permutation(len(faces))[:RECALIBRATION_FACES]
        return cls(faces[np.sort(rows)], batch_size, seed)


def batch_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer in the model, nested models (the classifier inside the
    training model) included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def seed_states(model: keras.Model) -> list:
    """The state variable of every random-number generator in the model (augmentation, dropout)."""
    return [generator.state for layer in model._flatten_layers(include_self=False, recursive=True)
            for generator in getattr(layer, "_seed_generators", [])]


@contextmanager
def recalibrated_norms(model: keras.Model, recalibration: Recalibration) -> Iterator[None]:
    """Every BatchNorm's running statistics re-estimated for the model's current weights for the
    block: the average over the sample's batches of each batch's statistics, computed as a
    training step computes them (augmentation and dropout on), by a momentum of k / (k + 1) at the
    k-th batch. The estimate draws its augmentation and dropout from the recalibration's seed and
    the random-number generators are wound back after it, so the same weights always get the same
    statistics (validation, the best checkpoint and a resume agree) and the training's own draws
    are those of a run without it; the statistics before are put back after the block, even on an
    error."""
    norms = batch_norms(model)
    saved = [(keras.ops.convert_to_numpy(norm.moving_mean), keras.ops.convert_to_numpy(norm.moving_variance), norm.momentum)
             for norm in norms]
    states = seed_states(model)
    seeds = [keras.ops.convert_to_numpy(state) for state in states]
    try:
        try:
            for index, state in enumerate(states):
                state.assign(np.array([recalibration.seed + index, 0], dtype=seeds[index].dtype))
            for k, start in enumerate(range(0, len(recalibration.faces), recalibration.batch_size)):
                for norm in norms:
                    norm.momentum = k / (k + 1)
                model(recalibration.faces[start:start + recalibration.batch_size], training=True)
        finally:
            for norm, (_, _, momentum) in zip(norms, saved):
                norm.momentum = momentum
            for state, seed in zip(states, seeds):
                state.assign(seed)
        yield
    finally:
        for norm, (mean, variance, _) in zip(norms, saved):
            norm.moving_mean.assign(mean)
            norm.moving_variance.assign(variance)


def swap_averaged_weights(model: keras.Model) -> None:
    """Exchange the weights with the optimizer's moving average of them (``--ema``); its own inverse.
    Keras keeps the average in the optimizer (so last.weights.h5 holds it and a resume goes on
    averaging), while the model holds the trained weights the optimizer steps from."""
    optimizer = model.optimizer
    for weight, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
        if average is not None:  # Keras leaves no average for weights it does not step (none in fervid's models)
            trained = keras.ops.convert_to_numpy(weight)
            weight.assign(keras.ops.convert_to_numpy(average))
            average.assign(trained)


@contextmanager
def averaged_weights(model: keras.Model, recalibration: Recalibration) -> Iterator[None]:
    """The moving average of the weights, with BatchNorm statistics re-estimated for it, in place
    of the trained ones for the block, as validation, the best checkpoint and so the exported model
    use them; the trained weights and their statistics are put back after, even on an error.
    Nothing changes in a run without ``--ema``."""
    if not getattr(model.optimizer, "use_ema", False):
        yield
        return
    swap_averaged_weights(model)
    try:
        with recalibrated_norms(model, recalibration):
            yield
    finally:
        swap_averaged_weights(model)


class AveragedValidation(keras.callbacks.Callback):
    """Validate each epoch with the moving average of the weights (``--ema``) and its own BatchNorm
    statistics: it is what the best checkpoint keeps and the run exports, so it is what selects the
    best epoch. (Keras's own SwapEMAWeights does this too, but its swap_on_epoch mode would
    checkpoint the average as the trained weights, and a resume would train on from the average.)"""

    def __init__(self, recalibration: Recalibration) -> None:
        super().__init__()
        self.recalibration = recalibration
        self.averaged: contextlib.ExitStack | None = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.averaged = contextlib.ExitStack()
        self.averaged.enter_context(averaged_weights(self.model, self.recalibration))

    def on_test_end(self, logs: dict | None = None) -> None:
        if self.averaged is not None:
            self.averaged.close()
            self.averaged = None


@dataclass
class AveragedClassifier:
    """Saves the classifier with the training model's averaged weights (and their BatchNorm
    statistics) in it (``--ema``), as save_weights writes a model: the best checkpoint of an
    averaging run."""

    training_model: keras.Model
    classifier: keras.Model
    recalibration: Recalibration

    def save_weights(self, path: str) -> None:
        with averaged_weights(self.training_model, self.recalibration):
            self.classifier.save_weights(path)


def warn_if_too_short_to_average(decay: float, total_steps: int) -> None:
    """Warn when a run is too short for its ``--ema`` decay. Keras starts the average at the first
    step's weights, with no correction for that start, which still holds ``decay ** steps`` of the
    average at the run's end: 67% after 400 steps at 0.999, a model near chance exported from a run
    whose trained weights were fine."""
    if not decay or total_steps < 1:
        return
    share = decay ** (total_steps - 1)
    if share > 0.01:
        warn(f"--ema {decay:g} averages about {1 / (1 - decay):,.0f} steps, but the run has {total_steps:,}: its average "
             f"(validated and exported) still holds {share:.0%} of the first steps' weights at the end; use --ema "
             f"{1 - 5 / total_steps:.4g} or lower, or more epochs")
