"""The expression classifiers, built from Conv2D, BatchNormalization, MaxPooling, Dropout and Dense.

Each takes a (48, 48, 1) float32 face in 0..1 and returns 7 softmax probabilities in canonical
class order. In a VGG at 48x48 the compute sits in the 48x48 and 24x24 stages and the parameters
in the 12x12 and 6x6 ones, so the variants differ mostly in their late widths. The exception,
``compact-xception``, adds separable convolutions and residual sums to fit more depth into 200k
parameters.
"""

from __future__ import annotations

import itertools
import json
import zipfile
from pathlib import Path

import numpy as np

from fervid.errors import FervidError
from fervid.labels import EXPRESSIONS
from fervid.model.backend import keras
from fervid.model.specs import ARCHITECTURES, WARPS, VggSpec, XceptionSpec
from fervid.model.warp import RandomWarp
from fervid.preprocess import INPUT_SHAPE
from fervid.run_folders import missing_model_reason

layers = keras.layers
__all__ = ["ARCHITECTURES", "VggSpec", "XceptionSpec", "build_augmenter", "build_classifier", "build_training_model"]


def conv_bn_relu(x: keras.KerasTensor, filters: int, dtype: str) -> keras.KerasTensor:
    """3x3 convolution without bias (BatchNorm supplies it), BatchNorm, ReLU."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", dtype=dtype)(x)
    x = layers.BatchNormalization(dtype=dtype)(x)
    return layers.Activation("relu", dtype=dtype)(x)


def vgg_features(x: keras.KerasTensor, spec: VggSpec, dtype: str) -> keras.KerasTensor:
    """Conv-BN-ReLU stages, each closed by max-pooling and dropout, then global average pooling."""
    for filters, convolutions in spec.stages:
        for _ in range(convolutions):
            x = conv_bn_relu(x, filters, dtype)
        x = layers.MaxPooling2D(2, dtype=dtype)(x)
        x = layers.Dropout(spec.stage_dropout, dtype=dtype)(x)
    x = layers.GlobalAveragePooling2D(dtype=dtype)(x)
    if spec.dense:
        x = layers.Dense(spec.dense, use_bias=False, dtype=dtype)(x)
        x = layers.BatchNormalization(dtype=dtype)(x)
        x = layers.Activation("relu", dtype=dtype)(x)
    return x


def xception_features(x: keras.KerasTensor, spec: XceptionSpec, dtype: str) -> keras.KerasTensor:
    """A Conv-BN-ReLU stem and a max-pool (the compact VGG's first stage), then residual modules
    (two separable convolutions and a strided max-pool, added to a strided 1x1 projection of the
    module's input), then global average pooling.

    The shortcut lets the gradient reach the stem through a deep net of thin layers. Pooling before
    the modules keeps separable convolutions, slow on CPUs, off the 48x48 grid.
    """
    for filters in spec.stem:
        x = conv_bn_relu(x, filters, dtype)
    x = layers.MaxPooling2D(2, dtype=dtype)(x)
    for filters in spec.modules:
        shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False, dtype=dtype)(x)
        shortcut = layers.BatchNormalization(dtype=dtype)(shortcut)
        for position in range(2):
            x = layers.SeparableConv2D(
                filters, 3, padding="same", use_bias=False, depthwise_initializer="he_normal",
                pointwise_initializer="he_normal", dtype=dtype,
            )(x)
            x = layers.BatchNormalization(dtype=dtype)(x)
            if position == 0:
                x = layers.Activation("relu", dtype=dtype)(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", dtype=dtype)(x)
        x = layers.Add(dtype=dtype)([x, shortcut])
        x = layers.Activation("relu", dtype=dtype)(x)
    return layers.GlobalAveragePooling2D(dtype=dtype)(x)


def build_classifier(arch: str, *, dtype: str = "float32") -> keras.Model:
    """The named architecture as a functional model; ``dtype`` is a Keras dtype policy name.

    The softmax always runs in float32 so that mixed-precision training keeps exact probabilities.
    """
    if arch not in ARCHITECTURES:
        raise KeyError(arch)
    spec = ARCHITECTURES[arch]
    inputs = keras.Input(shape=INPUT_SHAPE, name="face")
    if isinstance(spec, XceptionSpec):
        x = xception_features(inputs, spec, dtype)
    else:
        x = vgg_features(inputs, spec, dtype)
    x = layers.Dropout(spec.head_dropout, dtype=dtype)(x)
    outputs = layers.Dense(len(EXPRESSIONS), activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=arch.replace("-", "_"))


def build_augmenter(
    *,
    flip: bool,
    rotation: float,
    zoom: float,
    shift: float,
    brightness: float = 0.0,
    contrast: float = 0.0,
    erasing: float = 0.0,
    seed: int | None = None,
    dtype: str | None = None,
    warp: str = "each",
) -> keras.Sequential:
    """Random geometric and photometric changes, active only in training (identity at inference).

    ``rotation`` is a fraction of a full turn (0.05 = +-18 degrees); ``zoom`` and ``shift`` are
    fractions of the image size, as in the Keras preprocessing layers. ``erasing`` is the chance that
    a face gets a rectangle of noise covering 2-25% of it (random erasing, Zhong et al. 2017): it
    stands in for hands, glasses and hair, and makes the net read more than one part of the face.

    Each layer gets its own seed (``seed``, ``seed + 1``, ...): Keras layers given the same seed draw
    the same random numbers, which would tie every face's rotation, zoom, shift, brightness, contrast
    and erasing to one draw (and its flip to nearly the same), a far poorer set of augmentations.
    ``dtype`` overrides the global precision policy (measurements want float32 faces).

    ``warp`` is how rotation, zoom and shift are applied: ``each`` by Keras's three layers, one
    resample each (the recipe of the shipped model), or ``once`` as one composed affine warp
    (``RandomWarp``: one resample, a sharper face, docs/model.md part 6).
    """
    if warp not in WARPS:
        raise ValueError(f"warp must be one of {WARPS}, not {warp!r}")
    seeds = itertools.count(seed) if seed is not None else itertools.repeat(None)
    augmentations: list[keras.layers.Layer] = []
    if flip:
        augmentations.append(layers.RandomFlip("horizontal", seed=next(seeds), dtype=dtype))
    if warp == "once" and (rotation or zoom or shift):
        augmentations.append(RandomWarp(rotation, zoom, shift, seed=next(seeds), dtype=dtype))
    elif warp == "each":
        if rotation:
            augmentations.append(layers.RandomRotation(rotation, fill_mode="reflect", seed=next(seeds), dtype=dtype))
        if zoom:
            augmentations.append(layers.RandomZoom(zoom, fill_mode="reflect", seed=next(seeds), dtype=dtype))
        if shift:
            augmentations.append(layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=next(seeds), dtype=dtype))
    if brightness:
        augmentations.append(layers.RandomBrightness(brightness, value_range=(0.0, 1.0), seed=next(seeds), dtype=dtype))
    if contrast:
        # (c, c): Keras 3 reads a single float as (0, c), contrast only ever raised (the views' draw is +-c)
        augmentations.append(layers.RandomContrast((contrast, contrast), value_range=(0.0, 1.0), seed=next(seeds), dtype=dtype))
    if erasing:
        augmentations.append(
            layers.RandomErasing(factor=(erasing, erasing), scale=(0.02, 0.25), value_range=(0.0, 1.0), seed=next(seeds), dtype=dtype)
        )
    if keras.backend.backend() == "jax":
        # Keras marks its geometric layers as not XLA-compilable because TensorFlow's transform op
        # is not; on JAX they are plain jittable ops, and without jit every step runs op by op
        # (an H100 took 508 s for one FER2013 epoch instead of seconds).
        for layer in augmentations:
            layer.supports_jit = True
    return keras.Sequential([keras.Input(shape=INPUT_SHAPE), *augmentations], name="augment")


def build_training_model(classifier: keras.Model, augmenter: keras.Sequential) -> keras.Model:
    """Augmentation in front of the classifier; only the classifier is exported and shipped."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="face")
    return keras.Model(inputs, classifier(augmenter(inputs)), name="training")


def keras_model_path(source: str | Path) -> Path:
    """A ``.keras`` model or a finished run folder (its ``model.keras``) as the model file's path."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise FervidError(missing_model_reason(Path(source), "model.keras", "a .keras model or a finished run folder"))
        return path / "model.keras"
    if not path.is_file():
        raise FervidError(f"{source}: no such model file")
    if path.suffix.lower() == ".keras" and path.suffix != ".keras":  # Keras itself refuses M.KERAS
        raise FervidError(f"{source}: Keras reads a model only from a name ending in .keras (lower case); rename it")
    if path.suffix != ".keras":
        raise FervidError(f"{source}: expected a .keras model or a run folder")
    return path


def card_architecture(model_path: Path) -> str | None:
    """The architecture named by the model card beside a model file (``NAME.json``), if it names
    one fervid knows: what a mismatched ``--init-from`` tells the user to give as ``--arch``."""
    card = model_path.with_suffix(".json")
    try:
        arch = json.loads(card.read_text()).get("architecture") if card.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return arch if isinstance(arch, str) and arch in ARCHITECTURES else None


def load_classifier(source: str | Path) -> keras.Model:
    """A saved ``.keras`` classifier (or a run folder's), or one clear FervidError for a missing or unloadable file."""
    path = keras_model_path(source)
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" for an empty or damaged file
        raise FervidError(f"{path}: not a Keras model file (a .keras model is a zip archive; this one is empty or damaged)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file
        raise FervidError(f"{path}: not a loadable Keras model ({str(error).splitlines()[0]})") from None


def load_face_classifier(source: str | Path) -> keras.Model:
    """``load_classifier``, refusing a model that is not a fervid face classifier (``check_face_classifier``)."""
    model = load_classifier(source)
    check_face_classifier(model, keras_model_path(source))
    return model


def check_card_fits(card: dict | None, model: keras.Model, model_path: Path) -> None:
    """Refuse a model card beside ``model_path`` that describes another model (its ``parameters``
    count differs): a run's ``model.keras`` replaced by another run's, or ``foo.keras`` beside
    another model's ``foo.json``, was scored with that card's blur and temperature and exported with
    its architecture and accuracy, which ``/api/model`` and ``analyze`` then reported."""
    stated = None if card is None else card.get("parameters")
    if isinstance(stated, int) and not isinstance(stated, bool) and stated != model.count_params():
        described = f"a {stated:,}-parameter {card.get('architecture') or 'model'}" if card else ""
        raise FervidError(f"{model_path.with_suffix('.json')}: describes {described}, not {model_path.name} "
                          f"({model.count_params():,} parameters); a card from another run? Put the model's own card "
                          "beside it, or move this one away to use the model without a card")


def check_face_classifier(model: keras.Model, model_path: Path) -> None:
    """Refuse a Keras model that is not a fervid face classifier, before it is converted or scored: one
    input of 48x48x1 gray faces and one output of 7 probabilities. Another input size failed with
    Keras's traceback; a 10-way output was exported, then refused by every fervid command that loads
    it; a 5-way output was scored as 7 classes, and a net ending in logits scored with confidences
    over 1. One plain face is run for the last, as the runtime's ``ExpressionClassifier`` does."""
    inputs, outputs = model.inputs, model.outputs
    shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else None
    classes = outputs[0].shape[-1] if len(outputs) == 1 else None
    if shape != INPUT_SHAPE:
        seen = shape if shape is not None else f"{len(inputs)} inputs"
        raise FervidError(f"{model_path}: takes {seen}, not one batch of {INPUT_SHAPE} gray faces; not a fervid expression model")
    if classes != len(EXPRESSIONS):
        seen = f"{classes} outputs" if classes is not None else f"{len(outputs)} output tensors"
        raise FervidError(f"{model_path}: gives {seen}, not one of {len(EXPRESSIONS)} expression probabilities; "
                          "not a fervid expression model")
    row = np.asarray(model.predict(np.full((1, *INPUT_SHAPE), 0.5, np.float32), verbose=0), dtype=np.float64)[0]
    # NaN (diverged weights) is for the caller to name: export and evaluate each say what it means to them
    if np.isfinite(row).all() and (row.min() < -1e-4 or abs(float(row.sum()) - 1.0) > 1e-3):
        raise FervidError(f"{model_path}: its outputs are not probabilities (one face's sum to {float(row.sum()):.3g}); "
                          "fervid expects the net to end in a softmax")
