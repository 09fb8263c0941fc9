"""Training curves and confusion matrices as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fervid.fileio import atomic_path
from fervid.labels import EXPRESSIONS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_text(normalized: np.ndarray) -> tuple[list[str], list[list[str]]]:
    """The row labels and cell texts of a row-normalised confusion matrix. A class with no faces in
    the split has a row of zeros, which read as a class never recognised: it is labelled "(no
    faces)" and its cells "-"."""
    empty = normalized.sum(axis=1) == 0
    rows = [f"{name} (no faces)" if empty[row] else name for row, name in enumerate(EXPRESSIONS)]
    cells = [["-" if empty[row] else f"{value:.2f}" for value in normalized[row]] for row in range(normalized.shape[0])]
    return rows, cells


def plot_confusion(normalized: np.ndarray, target: Path, title: str) -> None:
    """A row-normalised confusion matrix with the share in every cell."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 5.6))
    image = axes.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    rows, cells = confusion_text(normalized)
    axes.set_xticks(range(len(EXPRESSIONS)), EXPRESSIONS, rotation=45, ha="right")
    axes.set_yticks(range(len(EXPRESSIONS)), rows)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for row in range(normalized.shape[0]):
        for column in range(normalized.shape[1]):
            value = normalized[row, column]
            axes.text(column, row, cells[row][column], ha="center", va="center", fontsize=8,
                      color="white" if value > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046).set_label("share of the true class's faces (recall on the diagonal)")
    figure.tight_layout()
    with atomic_path(target) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


SHORT_RUN = 20  # epochs up to which each is drawn as a point too


def plot_history(history: list[dict], target: Path) -> None:
    """Loss and accuracy per epoch, training and validation, with the learning rate and the best
    epoch marked. Validation here is as training selects the epoch (sharp faces, one view), so it
    reads below the report's scores, which are the runtime's (input blur, flip averaging)."""
    plt = _pyplot()
    figure = history_figure(plt, history)
    with atomic_path(target) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def history_figure(plt, history: list[dict]):
    """``plot_history``'s figure. A short run's epochs are drawn as points too, on whole-epoch ticks
    (one epoch was a line of one point, invisible, between ticks 0.945 and 1.050), and the learning
    rate's axis starts at 0 (a constant rate was centred on a -0.04 to 0.04 axis)."""
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    best = max(history, key=lambda row: row["val_accuracy"] if math.isfinite(row["val_accuracy"]) else -1.0)["epoch"]
    points = {"marker": "o", "markersize": 4} if len(epochs) <= SHORT_RUN else {}
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axes.plot(epochs, [r["loss"] for r in history], label="train", **points)
    loss_axes.plot(epochs, [r["val_loss"] for r in history], label="validation", **points)
    loss_axes.set_title("loss")
    accuracy_axes.plot(epochs, [r["accuracy"] for r in history], label="train", **points)
    accuracy_axes.plot(epochs, [r["val_accuracy"] for r in history], label="validation (sharp faces, one view)", **points)
    accuracy_axes.set_title("accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("epoch")
        if len(epochs) <= SHORT_RUN:
            axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # no epoch 1.25
        axes.axvline(best, color="black", linewidth=0.8, alpha=0.4, label=f"best epoch ({best})")
    loss_axes.set_ylabel("loss")
    # the legends below the axes, never on the curves (a flat validation curve ran behind one)
    loss_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    accuracy_axes.set_ylabel("accuracy")
    rate_axes = accuracy_axes.twinx()
    rates = [r["learning_rate"] for r in history]
    rate_axes.plot(epochs, rates, color="gray", linestyle=":", label="learning rate", **points)
    rate_axes.set_ylim(0, max(max(rates, default=0.0), 1e-12) * 1.1)
    rate_axes.set_ylabel("learning rate", color="gray")
    handles = [handle for axes in (accuracy_axes, rate_axes) for handle in axes.get_legend_handles_labels()[0]]
    rate_axes.legend(handles, [str(handle.get_label()) for handle in handles], loc="upper center", bbox_to_anchor=(0.5, -0.16),
                     ncol=2, fontsize=8, frameon=False)
    figure.tight_layout()
    return figure
