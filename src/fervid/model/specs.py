"""The named architectures as plain data, so options can be checked without importing Keras."""

from __future__ import annotations

from dataclasses import dataclass

# Keras backends, named here so that options can be checked before Keras loads.
TRAINING_BACKENDS = ("tensorflow", "jax", "torch")
MODEL_BACKENDS = (*TRAINING_BACKENDS, "numpy", "openvino")  # the last two run models but have no fit
WARPS = ("each", "once")  # rotation, zoom and shift as three resamples, or as one composed warp


@dataclass(frozen=True)
class VggSpec:
    """A VGG-style net: per stage (filters, convolutions), then dropout, a dense head and softmax."""

    stages: tuple[tuple[int, int], ...]
    dense: int
    stage_dropout: float
    head_dropout: float
    description: str


@dataclass(frozen=True)
class XceptionSpec:
    """A small Xception-style net: a plain-convolution stem and a max-pool, then residual modules of
    two separable convolutions each that halve the size, then global pooling, dropout and softmax.

    Separable convolutions cost about a ninth of a full 3x3 one in parameters, so at a fixed budget
    the net can be deeper and wider in its late stages than a VGG (Arriaga et al. 2017, mini-Xception).
    """

    stem: tuple[int, ...]
    modules: tuple[int, ...]
    head_dropout: float
    description: str


ARCHITECTURES: dict[str, VggSpec | XceptionSpec] = {
    "compact": VggSpec(
        stages=((32, 2), (64, 1), (96, 1), (128, 1)),
        dense=0,
        stage_dropout=0.1,
        head_dropout=0.3,
        description="real-time net for slow devices (<200k parameters)",
    ),
    "compact-xception": XceptionSpec(
        stem=(32, 32),
        modules=(32, 64, 128, 256),
        head_dropout=0.25,
        description="residual separable-convolution net for slow devices (<200k parameters)",
    ),
    "vgg": VggSpec(
        stages=((32, 2), (64, 2), (128, 2), (256, 2)),
        dense=256,
        stage_dropout=0.2,
        head_dropout=0.4,
        description="VGG-BN, 1.2M parameters: the CPU-trainable default",
    ),
    "vgg-deep": VggSpec(
        stages=((32, 2), (64, 2), (160, 3), (320, 3)),
        dense=512,
        stage_dropout=0.25,
        head_dropout=0.5,
        description="VGG-BN, 3.1M parameters, three convolutions in the 12x12 and 6x6 stages: more capacity where it is cheap",
    ),
    "vgg-large": VggSpec(
        stages=((64, 2), (128, 2), (256, 2), (512, 2)),
        dense=512,
        stage_dropout=0.25,
        head_dropout=0.5,
        description="VGG-BN, 4.9M parameters: the accuracy model (GPU, or CPU over several sessions)",
    ),
}
