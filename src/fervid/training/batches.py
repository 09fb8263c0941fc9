"""What Keras trains on besides plain arrays: class-balanced weights and batches (``--imbalance``),
and the fixed teacher-scored views of ``--teacher-views``, each a resumable function of the seed
and the epoch."""

from __future__ import annotations

import numpy as np

from fervid.labels import EXPRESSIONS
from fervid.model.backend import keras
from fervid.training.distill import distilled_targets
from fervid.training.views import ViewRecipe, render_views, view_parameters, view_seeds


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
