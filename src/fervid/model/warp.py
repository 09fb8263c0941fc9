"""Rotation, zoom and shift as one random affine warp: one bilinear resample per face, not three.

Keras's ``RandomRotation``, ``RandomZoom`` and ``RandomTranslation`` each resample the face, and
every bilinear resample at a fractional offset averages neighbouring pixels: the three in a row
leave a 48x48 face as blurred as a Gaussian of sigma 0.70 px, one leaves about 0.48
(docs/model.md part 6). Composing the three into one matrix keeps the same distribution of
geometric changes and more of the detail a 48x48 face has.
"""

from __future__ import annotations

import math

from fervid.model.backend import keras

ops = keras.ops


@keras.saving.register_keras_serializable(package="fervid")
class RandomWarp(keras.layers.Layer):
    """Per face: rotation up to ``rotation`` of a full turn, zoom of 1 +- ``zoom`` (both axes alike),
    shift up to ``shift`` of the size on each axis, about the centre, reflected at the edges.

    The same ranges as Keras's layers given the same factors; identity outside training.
    """

    def __init__(self, rotation: float, zoom: float, shift: float, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.shift, self.seed = rotation, zoom, shift, seed
        self.generator = keras.random.SeedGenerator(seed)
        # TensorFlow's projective-transform op has no XLA kernel; JAX and torch trace it fine.
        self.supports_jit = keras.backend.backend() != "tensorflow"

    def call(self, inputs, training=None):
        if not training:
            return inputs
        images = ops.cast(inputs, "float32")
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]

        def uniform(limit: float):
            return keras.random.uniform((batch,), -limit, limit, seed=self.generator)

        angle = uniform(self.rotation * 2 * math.pi)
        scale = 1.0 + uniform(self.zoom)
        shift_x, shift_y = uniform(self.shift) * width, uniform(self.shift) * height
        cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        # Output pixel (x, y) reads the input at scale * R(angle) (p - c) + c + t.
        transform = ops.stack(
            [cos, -sin, cx - cos * cx + sin * cy + shift_x, sin, cos, cy - sin * cx - cos * cy + shift_y,
             ops.zeros_like(cos), ops.zeros_like(cos)],
            axis=1,
        )
        warped = ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="reflect")
        return ops.cast(warped, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "rotation": self.rotation, "zoom": self.zoom, "shift": self.shift, "seed": self.seed}
