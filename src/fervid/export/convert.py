"""``fervid export``: a saved .keras model to ONNX, checked against Keras on a batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fervid.errors import FervidError
from fervid.export.onnx import export_onnx
from fervid.preprocess import INPUT_SHAPE

TOLERANCE = 1e-4


def export_checked(model_path: Path, target: Path, *, seed: int = 0) -> tuple[Path, float]:
    """Export and return (path, max |ONNX Runtime - Keras|) on 16 random faces; refuse above 1e-4.

    The model card beside the model (``model.json`` in a run folder) goes into the ONNX metadata.
    """
    if not model_path.exists():
        raise FervidError(f"{model_path}: no such model file")
    if model_path.suffix != ".keras":
        raise FervidError(f"{model_path}: expected a .keras model")
    import onnxruntime as ort

    from fervid.model.backend import keras

    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file
        raise FervidError(f"{model_path}: not a loadable Keras model ({str(error).splitlines()[0]})") from None
    card_path = model_path.parent / "model.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else None
    export_onnx(model, target, card)
    batch = np.random.default_rng(seed).random((16, *INPUT_SHAPE), dtype=np.float32)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    onnx_output = session.run(None, {session.get_inputs()[0].name: batch})[0]
    difference = float(np.abs(onnx_output - np.asarray(model.predict(batch, verbose=0))).max())
    if difference > TOLERANCE:
        target.unlink(missing_ok=True)
        raise FervidError(f"ONNX export disagrees with Keras by {difference:.2e} (> {TOLERANCE}); file removed")
    return target, difference
