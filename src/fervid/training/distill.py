"""Knowledge distillation: trained models' probabilities on the training faces become part of the targets.

Why: FER2013's labels are noisy and several of its expressions look alike (fear and surprise, sad
and neutral), so a one-hot target asks a net to be sure where people were not. A trained model's
probabilities say which faces are ambiguous and how. Training on a mix of the label and those
probabilities (Hinton et al. 2015, "Distilling the knowledge in a neural network"; Furlanello et
al. 2018, "Born-again neural networks", for a student the size of its teacher) passes that
knowledge on, and averaging several teachers passes on an ensemble's accuracy at the cost of one
net. The distillation here is offline: each teacher runs once, as the runtime runs it (its card's
flip averaging and input blur), on the un-augmented training faces, and the augmented views of a
face share its target; or, with ``--teacher-views K``, on K fixed augmented views of each face,
each trained with its own target (``fervid.training.views``). The probabilities are kept in the
run folder, so ``--resume`` reuses them.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np

from fervid.bundled import available_bundled_models
from fervid.console import warn
from fervid.fileio import atomic_path
from fervid.labels import EXPRESSIONS
from fervid.training.views import ViewRecipe, view_of

TEACHER_FILE = "teacher.npz"


def check_teachers(teachers: Sequence[str]) -> None:
    """Fail with one line on a teacher that is neither a loadable model file nor a bundled name, before
    any data is read and before a run folder is made.

    ONNX Runtime is imported only here and where the teachers run, so a run without teachers, or one
    whose run folder already holds their probabilities (a GPU machine without ONNX Runtime), never
    needs it.
    """
    from fervid.runtime.classify import ExpressionClassifier

    for teacher in teachers:
        ExpressionClassifier(teacher)  # resolves the name and loads the file: a few milliseconds each


def teacher_probabilities(teachers: Sequence[str], inputs: np.ndarray) -> np.ndarray:
    """The teachers' averaged probabilities (N, 7) for model inputs (N, 48, 48, 1), each run as its card says."""
    from fervid.evaluation.evaluate import predict
    from fervid.runtime.classify import ExpressionClassifier

    total = sum(predict(ExpressionClassifier(teacher).predict_inputs, inputs).astype(np.float64) for teacher in teachers)
    return (cast(np.ndarray, total) / len(teachers)).astype(np.float32)  # sum's start, 0, only for no teachers (never given)


def distilled_targets(one_hot: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * label + weight * teacher``: still a distribution over the seven classes.

    With ``weight < 0.5`` the label's class always keeps the largest share (at 0.5, at least a tie),
    so training accuracy still counts agreement with the label.
    """
    return ((1.0 - weight) * one_hot + weight * teacher).astype(np.float32)


CACHE_KEYS = ("probabilities", "fingerprint", "teachers")


def read_cache(path: Path, extra: Sequence[str] = ()) -> dict[str, np.ndarray] | None:
    """A teachers' cache as its arrays, or None when there is none or it cannot be used: a file a
    user put there (as the docs allow) that is damaged, not an .npz, or lacks a field was a
    traceback (KeyError) after the data had been read; it is now scored again, with a warning."""
    if not path.exists():
        return None
    try:
        loaded = np.load(path)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a single .npy saved under the name
            raise ValueError("an .npy array, not an .npz archive")
        with loaded as cached:
            fields = {key: cached[key] for key in (*CACHE_KEYS, *extra)}
            return fields | ({"faces": cached["faces"]} if "faces" in cached.files else {})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        why = f"no '{error.args[0].split()[0]}' field" if isinstance(error, KeyError) else type(error).__name__
        warn(f"{path}: not a usable teachers' cache ({why}); scoring the teachers again")
        return None


def faces_digest(inputs: np.ndarray) -> str:
    """The training faces in their order. The data's fingerprint alone let a cache made under another
    --seed through: without a validation split the seed picks the training faces, the count per class
    does not change, and the teachers' answers were attached to other faces without a word."""
    return hashlib.sha1(np.ascontiguousarray(inputs).data.cast("B")).hexdigest()[:20]  # no copy of the faces


def same_faces(cached: dict[str, np.ndarray], digest: str) -> bool:
    """Whether a cache was made on these faces; caches written before the digest was kept are taken
    on their fingerprint and count, as they always were."""
    return "faces" not in cached or str(cached["faces"]) == digest


def same_teachers(cached: Sequence[str], given: Sequence[str]) -> bool:
    """Whether a cache's teachers are the ones given, in order: by name, or, for files, by the file a
    name means here (a teacher given as ``tfile.onnx`` is the cache's ``/home/me/tfile.onnx`` when
    run from /home/me: its scores copied into the run folder were not found, and the missing file
    was asked for)."""
    def where(name: str) -> str:
        return name if name in available_bundled_models() else str(Path(name).expanduser().resolve())

    return len(cached) == len(given) and all(a == b or where(a) == where(b) for a, b in zip(cached, given))


def cached_teacher_probabilities(run: Path, teachers: Sequence[str], inputs: np.ndarray, data_fingerprint: str) -> np.ndarray:
    """The teachers' probabilities on these training faces, computed once per run folder.

    The cache is used only when it was made by the same teachers (as named) on the same data
    (fingerprint and face count), so a run folder never mixes targets from another dataset. A cache
    copied into a new run folder is used too: that is how a machine without ONNX Runtime distills.
    """
    path = run / "checkpoint" / TEACHER_FILE
    digest = faces_digest(inputs)
    if (cached := read_cache(path)) is not None and (
        str(cached["fingerprint"]) == data_fingerprint
        and same_teachers(cached["teachers"].tolist(), teachers)
        and cached["probabilities"].shape == (len(inputs), len(EXPRESSIONS))
        and same_faces(cached, digest)
    ):
        return cached["probabilities"]
    print(f"teachers: scoring {len(inputs):,} training faces with {', '.join(teachers)}", flush=True)
    probabilities = teacher_probabilities(teachers, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, probabilities=probabilities, fingerprint=np.array(data_fingerprint), teachers=np.array(list(teachers)),
                 faces=np.array(digest))
    return probabilities


TEACHER_VIEWS_FILE = "teacher-views.npz"


def cached_teacher_view_probabilities(
    run: Path, teachers: Sequence[str], inputs: np.ndarray, data_fingerprint: str, recipe: ViewRecipe, count: int
) -> np.ndarray:
    """The teachers' probabilities (count, N, 7) on ``count`` fixed views of each training face
    (``fervid.training.views``), computed once per run folder.

    Used only when made by the same teachers on the same data with the same view recipe and count;
    like the clean-face cache, a copy in a new run folder is used (a GPU machine without the teachers).
    """
    path = run / "checkpoint" / TEACHER_VIEWS_FILE
    recipe_json = json.dumps(recipe.as_dict(), sort_keys=True)
    digest = faces_digest(inputs)
    if (cached := read_cache(path, ("recipe",))) is not None and (
        str(cached["fingerprint"]) == data_fingerprint
        and same_teachers(cached["teachers"].tolist(), teachers)
        and str(cached["recipe"]) == recipe_json
        and cached["probabilities"].shape == (count, len(inputs), len(EXPRESSIONS))
        and same_faces(cached, digest)
    ):
        return cached["probabilities"].astype(np.float32)
    print(f"teachers: scoring {count} views of {len(inputs):,} training faces with {', '.join(teachers)}", flush=True)
    stored = np.stack([teacher_probabilities(teachers, view_of(inputs, recipe, view)) for view in range(count)]).astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, probabilities=stored, fingerprint=np.array(data_fingerprint),
                 teachers=np.array(list(teachers)), recipe=np.array(recipe_json), faces=np.array(digest))
    return stored.astype(np.float32)  # as a resumed run reads them back
