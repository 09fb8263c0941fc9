"""The names of the models shipped inside the package, read without ONNX Runtime: the training
command checks its teachers and ``--init-from`` by them on a GPU machine that may lack it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def available_bundled_models() -> list[str]:
    """Names of the bundled models (``fervid-vgg``, ``fervid-compact``), sorted."""
    folder = resources.files("fervid") / "models"
    return sorted(Path(str(p)).stem for p in folder.iterdir() if str(p).endswith(".onnx"))


def bundled_onnx_path(name: str) -> Path:
    """The ONNX file of the bundled model ``name`` (one of ``available_bundled_models()``)."""
    return Path(str(resources.files("fervid") / "models" / f"{name}.onnx"))
