"""Training configuration as one typed dataclass; it is saved in every run folder and model card."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fervid.errors import FervidError
from fervid.model.specs import ARCHITECTURES, TRAINING_BACKENDS, WARPS

SCHEDULES = ("cosine", "plateau", "constant")
IMBALANCE = ("none", "weights", "sampling")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
MAX_EPOCHS = 100_000  # far beyond any schedule; a 20-digit number failed deep in TensorFlow
MAX_WEIGHT_DECAY = 1.0  # AdamW decays by rate x decay a step; 0.05 is already strong
MAX_TEACHER_VIEWS = 64  # 8 views took 25 minutes of scoring for FER2013 here; 10**8 ran out of memory after loading
MAX_BATCH = 65_536


def refuse_backend_without_fit(backend: str) -> None:
    """Refuse a Keras backend that cannot train, by name, before Keras loads: on numpy or openvino
    Keras's import asked for scipy or openvino first, sending users to install packages that would
    not let them train either."""
    if backend not in TRAINING_BACKENDS:
        raise FervidError(f"KERAS_BACKEND={backend} cannot train (Keras has no fit on it); "
                          f"use {', '.join(TRAINING_BACKENDS)} (unset KERAS_BACKEND for tensorflow)")

@dataclass
class TrainConfig:
    """Everything that decides how a model is trained; defaults are the recipe of the shipped model."""

    data: str
    arch: str = "vgg"
    epochs: int = 50
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 3
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    imbalance: str = "none"
    flip: bool = True
    rotation: float = 0.05
    zoom: float = 0.1
    shift: float = 0.1
    warp: str = "each"  # rotation, zoom and shift as three resamples (each) or one composed warp (once)
    brightness: float = 0.0
    contrast: float = 0.0
    erasing: float = 0.0
    val_fraction: float = 0.1
    patience: int = 0
    ema: float = 0.0  # > 0: validate, keep and export the moving average of the weights, this decay per step
    seed: int = 42
    precision: str = "auto"
    unknown: str = "error"
    mapping: dict[str, str] = field(default_factory=dict)
    init_from: str | None = None
    teacher: list[str] = field(default_factory=list)  # models (paths or bundled names) to distill from
    distill: float = 0.5  # the teachers' share of each training target
    teacher_views: int = 0  # > 0: the teachers score this many fixed augmented views per face (consistent distillation)
    name: str | None = None  # the model card's name; kept here so that --resume keeps it

    def view_recipe(self):
        """The recipe of the fixed views the teachers score (``--teacher-views``): this run's augmentation."""
        from fervid.training.views import ViewRecipe

        return ViewRecipe(self.rotation, self.zoom, self.shift, self.brightness, self.contrast, self.erasing, self.seed)

    def validate(self) -> None:
        """Reject impossible settings with one clear line before any data is read."""
        checks = [
            (self.arch in ARCHITECTURES, f"--arch must be one of {', '.join(ARCHITECTURES)}"),
            (1 <= self.epochs <= MAX_EPOCHS, f"--epochs must be between 1 and {MAX_EPOCHS:,}"),
            (1 <= self.batch_size <= MAX_BATCH, f"--batch-size must be between 1 and {MAX_BATCH:,}"),
            # Adam's steps are about the rate's size: above 1 every weight jumps by more than itself, loss nan
            (0 < self.learning_rate <= 1.0, "--lr must be above 0 and at most 1"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (self.imbalance in IMBALANCE, f"--imbalance must be one of {', '.join(IMBALANCE)}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
            (0.0 < self.val_fraction < 1.0, "--val-fraction must be between 0 and 1"),
            (0.0 <= self.label_smoothing < 1.0, "--label-smoothing must be in [0, 1)"),
            (self.patience >= 0, "--patience must be 0 (off) or more"),
            (self.ema == 0 or 0 < self.ema < 1, "--ema must be 0 (off) or a decay per step in (0, 1), such as 0.999"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be 0 or more"),
            # AdamW shrinks each weight by rate x decay a step: past 1 they flip sign, and the loss goes nan
            (0 <= self.weight_decay <= MAX_WEIGHT_DECAY, f"--weight-decay must be 0 to {MAX_WEIGHT_DECAY:g}"),
            # Keras's augmentation layers refuse these only once the data is loaded, with a traceback
            (0.0 <= self.rotation <= 1.0, "--rotation must be a fraction of a turn in [0, 1]"),
            (0.0 <= self.zoom < 1.0, "--zoom must be a fraction of the size in [0, 1)"),
            (0.0 <= self.shift <= 1.0, "--shift must be a fraction of the size in [0, 1]"),
            (0.0 <= self.brightness <= 1.0, "--brightness must be in [0, 1]"),
            (0.0 <= self.contrast <= 1.0, "--contrast must be in [0, 1]"),
            (0 <= self.seed < 2**32, "--seed must be in [0, 2**32)"),
            (0.0 <= self.erasing <= 1.0, "--erasing must be a probability in [0, 1]"),
            (self.warp in WARPS, f"--warp must be one of {', '.join(WARPS)}"),
            (self.unknown in ("error", "drop"), f"--unknown must be 'error' or 'drop', got '{self.unknown}'"),
            (0.0 <= self.distill <= 1.0, "--distill must be a share in [0, 1]"),
            # each view costs a scoring of every face by every teacher (3 minutes a view for FER2013 here)
            (0 <= self.teacher_views <= MAX_TEACHER_VIEWS, f"--teacher-views must be 0 (the clean faces) to {MAX_TEACHER_VIEWS}"),
            (not self.teacher_views or self.teacher, "--teacher-views needs --teacher: the views are scored by the teachers"),
            (not self.teacher_views or self.imbalance != "sampling",
             "--teacher-views trains on every face's views in turn; use --imbalance weights or none with it"),
        ]
        for ok, message in checks:
            if not ok:
                raise FervidError(message)

    def save(self, path: Path) -> None:
        from fervid.fileio import write_text_atomically

        write_text_atomically(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """A run's saved config, checked as a new one is: a config.json of another shape (replaced by
        hand or by another program) is a one-line error, not a traceback deep in Keras."""
        try:
            values: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise FervidError(f"{path}: cannot read the run's config ({error})") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or "data" not in values:
            raise FervidError(f"{path}: not a fervid run's config (a JSON object of fervid train's options was expected)")
        wrong = [name for name in fields(cls) if name.name in values and not _well_typed(str(name.type), values[name.name])]
        if wrong:  # "seed": 42.5 or "mapping": [...] failed deep in Keras or pandas, as tracebacks
            field_ = wrong[0]
            raise FervidError(f"{path}: not a usable run config ({field_.name} must be {field_.type}, got "
                              f"{json.dumps(values[field_.name])[:60]})")
        try:
            config = cls(**{k: v for k, v in values.items() if k in known})  # options of older versions dropped
            config.validate()
        except (TypeError, FervidError) as error:  # TypeError: a value of the wrong type, e.g. "epochs": "x"
            raise FervidError(f"{path}: not a usable run config ({error})") from None
        return config


def _well_typed(annotation: str, value: object) -> bool:
    """Whether a config.json value has its field's type (``annotation`` as written in TrainConfig);
    JSON's true is not a number, and a whole number is a float's value too."""
    if annotation == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    kinds: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "str | None": (str, type(None))}
    if annotation in kinds:
        return isinstance(value, kinds[annotation])
    if annotation == "dict[str, str]":
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if annotation == "list[str]":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    raise AssertionError(f"TrainConfig field of type {annotation} has no JSON check")  # a new field's type: add it above
