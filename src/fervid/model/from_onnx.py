"""Rebuild a trainable Keras classifier from one of fervid's ONNX exports, so that a model whose
Keras weights were never shipped (the bundled ones, a colleague's ``.onnx``) can be fine-tuned or
trained further: ``fervid train DATA --init-from fervid-vgg``.

The export folded every BatchNormalization into the layer before it (and an int8 export rounded
the weights to 8 bits), so the file holds each layer's folded kernel and offset but no BatchNorm
statistics. Training normalizes each batch by its own statistics, so a BatchNorm that merely
passed the folded values through would change the function the moment training began. Each
BatchNorm's input is therefore measured on training faces and its moving statistics set to it,
with its scale and offset chosen so that it still computes the folded function: in inference the
model is the ONNX file's (to float rounding; an int8 file's activations were rounded too), and
in training a batch's statistics are close to the moving ones, so training starts from the
model it was given. Each convolution's kernel is rescaled to the norm of its He initialisation:
the BatchNorm after it makes the scale irrelevant to the function but not to the optimizer's
steps.

VGG architectures only (``compact``, ``vgg``, ``vgg-deep``, ``vgg-large``): the separable
convolutions of ``compact-xception`` are not unfolded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fervid.errors import FervidError
from fervid.model.backend import keras
from fervid.model.specs import ARCHITECTURES, VggSpec

STATISTICS_FACES = 4096  # the per-channel statistics of 4,096 faces are stable to about 1%


@dataclass(frozen=True)
class FoldedWeights:
    """The weights of a fervid VGG export, BatchNorm folded in: per convolution (kernel HWIO,
    offset); the dense layer's (kernel, scale, offset), if the net has one; the output layer's
    (kernel, bias)."""

    convolutions: list[tuple[np.ndarray, np.ndarray]]
    dense: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    output: tuple[np.ndarray, np.ndarray]


def _float_values(graph) -> dict[str, np.ndarray]:  # noqa: ANN001 - an onnx GraphProto
    """Every constant float tensor: initializers, and the output of each DequantizeLinear of an
    initializer (an int8 file's weights), as float32."""
    from onnx import numpy_helper

    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in values:
            quantized, scale = values[node.input[0]].astype(np.float32), values[node.input[1]].astype(np.float32)
            zero = values[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
            if scale.ndim:  # per channel, along the node's axis
                shape = [1] * quantized.ndim
                shape[next((a.i for a in node.attribute if a.name == "axis"), 1)] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            values[node.output[0]] = (quantized - zero) * scale
    return {name: value for name, value in values.items() if value.dtype == np.float32}


def read_folded_weights(path: Path) -> FoldedWeights:
    """The folded weights of a fervid VGG export (float32 or int8), or a FervidError naming why the
    file is not one."""
    import onnx

    try:
        graph = onnx.load(str(path)).graph
    except Exception as error:  # protobuf and OS errors alike: the file is not a readable ONNX model
        raise FervidError(f"{path}: not a readable ONNX model ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    values = _float_values(graph)
    convolutions: list[tuple[np.ndarray, np.ndarray]] = []
    head: list[tuple[str, list[np.ndarray], bool]] = []  # (op, its constant inputs, Gemm's transB)
    for node in graph.node:
        if node.op_type == "Conv":
            if any(a.name == "group" and a.i != 1 for a in node.attribute) or len(node.input) < 3 or head:
                raise FervidError(f"{path}: not a VGG export (it has grouped or separable convolutions); --init-from takes "
                                  "an ONNX file of the VGG architectures only (compact, vgg, vgg-deep, vgg-large)")
            if node.input[1] not in values or node.input[2] not in values or values[node.input[1]].ndim != 4:
                raise FervidError(f"{path}: not a fervid VGG export (a convolution without constant weights)")
            convolutions.append((values[node.input[1]].transpose(2, 3, 1, 0), values[node.input[2]]))
        elif node.op_type in ("MatMul", "Mul", "Add", "Gemm"):
            constants = [values[name] for name in node.input if name in values]
            transposed = any(a.name == "transB" and a.i for a in node.attribute)
            head.append((node.op_type, constants, transposed))
    ops = [op for op, _, _ in head]
    first = [constants[0] if constants else None for _, constants, _ in head]  # each node's constant input
    dense: tuple | None = None
    if ops[:3] == ["MatMul", "Mul", "Add"]:  # the dense layer and its folded BatchNorm
        dense, ops, first, head = (first[0], first[1], first[2]), ops[3:], first[3:], head[3:]
    elif len(ops) > 2 and ops[:2] == ["MatMul", "Add"]:  # its BatchNorm folded into the kernel instead
        scale = np.ones_like(first[1]) if first[1] is not None else None
        dense, ops, first, head = (first[0], scale, first[1]), ops[2:], first[2:], head[2:]
    if ops == ["Gemm"] and len(head[0][1]) == 2:
        kernel, bias = head[0][1]
        output: tuple = (kernel.T if head[0][2] else kernel, bias)
    elif ops == ["MatMul", "Add"]:
        output = (first[0], first[1])
    elif ops == ["MatMul"] and first[0] is not None:  # a zero bias, which the export leaves out
        output = (first[0], np.zeros(first[0].shape[-1], np.float32))
    else:
        raise FervidError(f"{path}: not a fervid VGG export (its head is {' -> '.join(ops) or 'missing'})")
    if not convolutions or any(c is None for c in (dense or ())) or any(c is None for c in output):
        raise FervidError(f"{path}: not a fervid VGG export (its layers hold no constant weights)")
    return FoldedWeights(convolutions, dense, output)


def _layers(model: keras.Model, kind: type) -> list:
    return [layer for layer in model.layers if isinstance(layer, kind)]


def _training_statistics(classifier: keras.Model, norm: keras.layers.BatchNormalization, faces: np.ndarray,
                         batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of ``norm``'s input as training steps see it (dropout on, each
    BatchNorm before it normalizing by its batch), averaged over the batches of ``faces``, as
    Keras's moving statistics average them."""
    probe = keras.Model(classifier.input, norm.input)
    means, variances = [], []
    for start in range(0, len(faces), batch):
        x = keras.ops.convert_to_numpy(probe(faces[start:start + batch], training=True)).astype(np.float64)
        flat = x.reshape(-1, x.shape[-1])
        means.append(flat.mean(axis=0))
        variances.append(flat.var(axis=0))
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def classifier_from_onnx(path: Path, arch: str, faces: np.ndarray, *, batch: int = 128) -> keras.Model:
    """A float32 ``arch`` classifier computing the export's function, each BatchNorm's statistics
    those of its input in training steps on ``faces`` (training faces as the run's augmentation
    draws them, (N, 48, 48, 1) in 0..1; a sample of them is used, in batches of ``batch``).

    Training-step statistics, not the clean faces' ones: the trained model's moving statistics were
    gathered in training steps (augmented faces, dropout on), and its scale and offset go with them.
    Paired with any other statistics, the function is still the export's, but a training step or a
    re-estimate of the statistics (``--ema``) would move it: the imported ``fervid-vgg-deep-kd``
    lost 2.6 points of validation accuracy to a training-step re-estimate when its statistics were
    the clean faces'. Each layer is measured after the ones before it are set, as their scale and
    offset shape its input in a training step."""
    from fervid.model.architectures import build_classifier, card_architecture

    spec = ARCHITECTURES[arch]
    if not isinstance(spec, VggSpec):
        raise FervidError(f"--arch {arch}: starting from an ONNX file works for the VGG architectures only "
                          "(compact, vgg, vgg-deep, vgg-large); give a .keras model or a run folder")
    folded = read_folded_weights(path)
    classifier = build_classifier(arch)
    convolutions = _layers(classifier, keras.layers.Conv2D)
    dense_layers = _layers(classifier, keras.layers.Dense)
    norms = _layers(classifier, keras.layers.BatchNormalization)
    shapes = [kernel.shape for kernel, _ in folded.convolutions]
    expected = [tuple(layer.kernel.shape) for layer in convolutions]
    dense_shape = folded.dense[0].shape if folded.dense is not None else None
    if shapes != expected or folded.output[0].shape != tuple(dense_layers[-1].kernel.shape) or \
            (dense_shape != (tuple(dense_layers[0].kernel.shape) if spec.dense else None)):
        trained = card_architecture(path)
        hint = f"give --arch {trained}" if trained and trained != arch else "give --arch the architecture it was trained with"
        raise FervidError(f"{path}: its {len(shapes)} convolutions and head are not those of --arch {arch}; {hint}")
    scales, offsets = [], []
    for layer, (kernel, offset) in zip(convolutions, folded.convolutions):
        fan_in = float(np.prod(kernel.shape[:3]))
        scale = np.sqrt(np.mean(kernel ** 2, axis=(0, 1, 2))) / np.sqrt(2.0 / fan_in)
        scale = np.where(scale > 0, scale, 1.0)  # a channel the training switched off keeps a zero kernel
        layer.set_weights([kernel / scale])
        scales.append(scale)
        offsets.append(offset)
    if folded.dense is not None:
        kernel, scale, offset = folded.dense
        dense_layers[0].set_weights([kernel])
        scales.append(scale)
        offsets.append(offset)
    dense_layers[-1].set_weights(list(folded.output))
    epsilon = norms[0].epsilon
    for norm, scale, offset in zip(norms, scales, offsets):  # first the folded function itself: scale x input + offset
        norm.set_weights([scale, offset, np.zeros_like(offset), np.full_like(offset, 1 - epsilon)])
    sample = faces[np.sort(np.random.default_rng(0).permutation(len(faces))[:STATISTICS_FACES])]
    for norm, scale, offset in zip(norms, scales, offsets):  # then the same function from training-step statistics
        mean, variance = _training_statistics(classifier, norm, sample, batch)
        norm.set_weights([scale * np.sqrt(variance + epsilon), offset + scale * mean, mean, variance])
    return classifier
