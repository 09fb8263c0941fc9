"""How much a training recipe's resampling blurs faces, as the Gaussian the runtime should match.

Rotation, zoom and shift each warp a face with bilinear interpolation, and bilinear interpolation at
a fractional offset averages neighbouring pixels: a face that passed the three warps has lost a
large share of its finest detail. The net learns on such faces, and then, at inference, meets
sharp ones it never saw. Measured on FER2013 with the shipped recipe, the three warps leave 37% of
the faces' gradient energy, as much as a Gaussian blur of sigma 0.7, and blurring validation faces
by that much lifts the shipped model from 68.1% to 70.2% (docs/model.md, part 6).

The match is measured on training faces only, from the recipe's own augmentation, so it is a
property of the recipe, not a value tuned on validation. Validation only says whether it applies
(``choose_input_blur``), as it says which epoch is best: a net whose batch-norm statistics have not
settled (a few epochs on a few hundred faces) can do worse on blurred faces than on sharp ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fervid.evaluation.evaluate import Predictor, evaluate

from fervid.preprocess import smooth

FACES = 2000
BORDER = 4  # pixels left out at each edge, where warps fill by reflection
LARGEST_SIGMA = 3.0


def gradient_energy(inputs: np.ndarray) -> float:
    """Mean squared difference between neighbouring pixels, away from the borders: how much fine detail is left."""
    faces = np.asarray(inputs, dtype=np.float32)
    faces = faces[..., 0] if faces.ndim == 4 else faces
    interior = faces[:, BORDER:-BORDER, BORDER:-BORDER]
    return float(np.mean(np.diff(interior, axis=1) ** 2) + np.mean(np.diff(interior, axis=2) ** 2))


def equivalent_blur(reference: np.ndarray, transformed: np.ndarray, *, tolerance: float = 0.005) -> float:
    """The Gaussian sigma that leaves ``reference`` with as much gradient energy as ``transformed`` has.

    0 when the transformed faces are at least as sharp as the originals (no resampling, or none
    that blurs). Bisection: a wider Gaussian always leaves less energy.
    """
    target = gradient_energy(transformed)
    if gradient_energy(reference) <= target:
        return 0.0
    low, high = 0.0, LARGEST_SIGMA
    while high - low > tolerance:
        middle = (low + high) / 2
        if gradient_energy(smooth(reference, middle)) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def augmentation_blur(rotation: float, zoom: float, shift: float, inputs: np.ndarray, *, seed: int = 0, warp: str = "each") -> float:
    """The input blur (sigma, 2 decimals) that matches faces to a recipe's geometric augmentation.

    Only the warps take part: flip moves no pixel between positions, and brightness, contrast and
    erasing change energy for reasons that have nothing to do with sharpness.
    """
    if not (rotation or zoom or shift) or len(inputs) == 0:
        return 0.0
    from fervid.model.architectures import build_augmenter

    augmenter = build_augmenter(flip=False, rotation=rotation, zoom=zoom, shift=shift, seed=seed, dtype="float32", warp=warp)
    return _warp_blur(inputs, seed, lambda sample: np.concatenate(
        [np.asarray(augmenter(sample[start : start + 500], training=True)) for start in range(0, len(sample), 500)]))


def view_blur(recipe, inputs: np.ndarray) -> float:
    """``augmentation_blur`` for a run trained on fixed views (``--teacher-views``): the views' own
    warp (one resample, ``fervid.training.views``), photometric changes and erasing left out."""
    from dataclasses import replace

    from fervid.training.views import view_of

    if not (recipe.rotation or recipe.zoom or recipe.shift) or len(inputs) == 0:
        return 0.0
    geometric = replace(recipe, brightness=0.0, contrast=0.0, erasing=0.0)
    return _warp_blur(inputs, recipe.seed, lambda sample: view_of(sample, geometric, 0))


def _warp_blur(inputs: np.ndarray, seed: int, warp: Callable[[np.ndarray], np.ndarray]) -> float:
    """The equivalent blur (2 decimals) of ``warp`` on a seeded sample of ``FACES`` training faces."""
    rows = np.random.default_rng(seed).permutation(len(inputs))[:FACES]
    sample = np.asarray(inputs[rows], dtype=np.float32)
    return round(equivalent_blur(sample, warp(sample)), 2)


def choose_input_blur(
    predictor_for: Callable[..., Predictor], inputs: np.ndarray, labels: np.ndarray, measured: float, *, flip_tta: bool = True
) -> tuple[float, dict]:
    """The measured blur if it scores at least as well on validation as none, else 0.

    Scored as the runtime will run the model: with flip averaging unless ``flip_tta`` is False (a
    ``--no-flip`` net, whose card turns it off). ``predictor_for(input_blur=sigma)`` gives the model
    run with that input blur. Returns the blur to put in the model card and the check behind it (for
    the card's metrics; its accuracy keys keep their names whatever ``flip_tta`` was, which it records).
    """
    if measured <= 0:
        return 0.0, {"measured": measured}
    sharp = evaluate(predictor_for(input_blur=0.0), inputs, labels, flip_tta=flip_tta).accuracy
    blurred = evaluate(predictor_for(input_blur=measured), inputs, labels, flip_tta=flip_tta).accuracy
    check = {"measured": measured, "accuracy_flip_tta_sharp": sharp, "accuracy_flip_tta_blurred": blurred, "flip_tta": flip_tta}
    return (measured if blurred >= sharp else 0.0), check
