"""Weight averaging (``fervid train --ema``): the optimizer's exponential moving average of the
weights stands in for the trained weights wherever a run judges or keeps its model (validation,
the best checkpoint, the export), while training steps on from the trained weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fervid.console import warn
from fervid.model.backend import keras


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
def averaged_weights(model: keras.Model) -> Iterator[None]:
    """The moving average of the weights in place of the trained ones for the block, as validation,
    the best checkpoint and so the exported model use them; the trained weights are put back after,
    even on an error. Nothing changes in a run without ``--ema``."""
    if not getattr(model.optimizer, "use_ema", False):
        yield
        return
    swap_averaged_weights(model)
    try:
        yield
    finally:
        swap_averaged_weights(model)


class AveragedValidation(keras.callbacks.Callback):
    """Validate each epoch with the moving average of the weights (``--ema``): it is what the best
    checkpoint keeps and the run exports, so it is what selects the best epoch. (Keras's own
    SwapEMAWeights does this too, but its swap_on_epoch mode would checkpoint the average as the
    trained weights, and a resume would train on from the average.)"""

    def on_test_begin(self, logs: dict | None = None) -> None:
        swap_averaged_weights(self.model)

    def on_test_end(self, logs: dict | None = None) -> None:
        swap_averaged_weights(self.model)


@dataclass
class AveragedClassifier:
    """Saves the classifier with the training model's averaged weights in it (``--ema``), as
    save_weights writes a model: the best checkpoint of an averaging run."""

    training_model: keras.Model
    classifier: keras.Model

    def save_weights(self, path: str) -> None:
        with averaged_weights(self.training_model):
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
