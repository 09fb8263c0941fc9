"""The learning-rate schedules (warm-up + cosine, constant, reduce-on-plateau), each one a resumed
run continues exactly where it stopped."""

from __future__ import annotations

from fervid.console import warn
from fervid.model.backend import keras
from fervid.training.config import TrainConfig


def learning_rate(config: TrainConfig, steps_per_epoch: int, *,
                  starting: bool = True) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up then cosine decay to zero at the last epoch (or, for ``constant``, no decay:
    the rate stays at its peak), as a function of the optimizer step (so a resumed run, whose
    optimizer step is restored, continues on exactly the same curve). A warm-up as long as the run is
    warned of when it ``starting``, not again at each resume, which cannot change it."""
    if config.schedule == "plateau":
        return config.learning_rate
    total = config.epochs * steps_per_epoch
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    if starting and config.schedule == "cosine" and config.warmup_epochs and config.warmup_epochs >= config.epochs:
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
