"""Keras -> ONNX with a dynamic batch dimension and the model card embedded as metadata."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fervid.fileio import atomic_path
from fervid.preprocess import INPUT_SHAPE
from fervid.runtime.classify import METADATA_KEY

if TYPE_CHECKING:
    import keras


def float32_twin(model: keras.Model, arch: str) -> keras.Model:
    """The same network in float32 with the same weights.

    A model trained under mixed_bfloat16 exports ONNX with bfloat16 convolutions that ONNX Runtime
    refuses, so the twin is what gets exported and shipped (it differs by ~1e-4 in probability).
    """
    from fervid.model.architectures import build_classifier

    twin = build_classifier(arch, dtype="float32")
    twin.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    return twin


def _embed_card(path: Path, card: dict | None) -> None:
    """Put the model card into the ONNX metadata and name the batch dimension (in place)."""
    import onnx

    proto = onnx.load(str(path))
    if card is not None:
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(card)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(proto, str(path))


def write_card(path: str | Path, card: dict) -> None:
    """Replace the model card stored in an ONNX file, atomically."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_bytes(path.read_bytes())
        _embed_card(temporary, card)


def export_onnx(model: keras.Model, target: str | Path, card: dict | None = None) -> Path:
    """Write ``model`` (a float32 Keras classifier) as ONNX to ``target`` atomically; returns the path."""
    target = Path(target)
    model(np.zeros((2, *INPUT_SHAPE), dtype=np.float32), training=False)  # export needs a called model
    with atomic_path(target) as temporary:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            # Keras's bundled tf2onnx probes `np.object`, which NumPy 2 answers with a FutureWarning
            # that says nothing about the user's model.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"keras\.src\.export")
            model.export(str(temporary), format="onnx", verbose=False)
        _embed_card(temporary, card)
    return target
