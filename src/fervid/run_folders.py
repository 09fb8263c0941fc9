"""What a folder given as a model is, when it holds no model: a training run still unfinished, or a
run's checkpoint folder, each named with what to do (light: the inference path imports it)."""

from __future__ import annotations

from pathlib import Path


def missing_model_reason(folder: Path, model_file: str, wanted: str) -> str:
    """The one-line error for ``folder`` given as a model without ``model_file`` in it; ``wanted``
    says what would do (``a .keras model or a finished run folder``)."""
    if (folder / "checkpoint" / "state.json").is_file():
        return (f"{folder}: a training run that has not finished (no {model_file} yet); finish it with "
                f"fervid train --resume --out {folder}, or give {wanted}")
    if folder.name == "checkpoint" and (folder.parent / "config.json").is_file():
        return f"{folder}: the checkpoint folder of the run {folder.parent}; give the run folder"
    return f"{folder}: a folder without {model_file} (give {wanted})"
