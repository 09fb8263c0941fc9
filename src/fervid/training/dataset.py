"""The faces a run trains and validates on: the dataset's train split, and its validation split or a
stratified holdout, with the notes the report must carry about what was left out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fervid.console import warn
from fervid.data import FaceArrays, load_arrays, load_split, read_dataset
from fervid.data.arrays import fingerprint, readable_counts, unreadable_note
from fervid.data.holdout import stratified_holdout, subset
from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS
from fervid.training.config import TrainConfig


VAL_FRACTION_DEFAULT = TrainConfig.__dataclass_fields__["val_fraction"].default


@dataclass
class TrainingData:
    """Train and validation faces plus where they came from (for the model card)."""

    train: FaceArrays
    validation: FaceArrays
    fingerprint: str
    counts: dict
    validation_source: str
    notes: list[str] = field(default_factory=list)  # what the report must say about the data (faces left out, classes missing)


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
        source = f"stratified {config.val_fraction * 100:g}% of train (seed {config.seed})"  # 0.001: 0.1%, not 0%
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
    unvalidated = [name for label, name in enumerate(EXPRESSIONS) if name not in missing and not np.any(validation.labels == label)]
    if unvalidated:
        why = " (a class needs at least 2 images for one to be held out)" if source != "validation split" else ""
        note = (f"no validation faces of {', '.join(unvalidated)}{why}: trained on, but their recall is not measured "
                "(support 0 in the report), and they take no part in choosing the best epoch")
        warn(f"{config.data}: {note}")
        notes.append(note)
    counts = {split: {k: int(v) for k, v in column.items()} for split, column in readable_counts(index).items()}  # as data inspect counts
    return TrainingData(train, validation, fingerprint(index), counts, source, notes)
