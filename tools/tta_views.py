"""Score a model with more test-time views than the runtime's flip averaging (docs/model.md part 12).

The two view sets were fixed before any was scored: the face and a 10% zoom into its centre, and
the face and four 3-pixel shifts (reflected edges), each view also mirrored, after the model's
input blur, as the runtime blurs before it mirrors. Printed beside the runtime's own two views:

    python tools/tta_views.py fervid-vgg ../shared/data/fer2013.zip
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from fervid.data import load_arrays, read_dataset
from fervid.errors import FervidError
from fervid.evaluation.metrics import classification_report
from fervid.preprocess import smooth
from fervid.runtime.classify import ExpressionClassifier


def zoomed(faces: np.ndarray, keep: float = 0.9) -> np.ndarray:
    """The centre ``keep`` of each face, resized back to the full size."""
    size = faces.shape[1]
    side = round(size * keep)
    start = (size - side) // 2
    crops = faces[:, start : start + side, start : start + side, 0]
    return np.stack([cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR) for crop in crops])[..., None]


def shifted(faces: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Each face moved by (dx, dy) pixels, the uncovered edge filled by reflection."""
    pad = max(abs(dx), abs(dy))
    padded = np.pad(faces, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    height, width = faces.shape[1:3]
    return padded[:, pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def main(model: str, data: str) -> None:
    classifier = ExpressionClassifier(model)
    arrays = load_arrays(read_dataset(data), "validation")
    faces = smooth(arrays.inputs(), classifier.input_blur)
    labels = arrays.one_hot().argmax(axis=1)
    view_sets = {
        "the face": [faces],
        "the face and a 10% zoom": [faces, zoomed(faces)],
        "the face and four 3-pixel shifts": [faces] + [shifted(faces, dx, dy) for dx, dy in ((3, 0), (-3, 0), (0, 3), (0, -3))],
    }
    for name, views in view_sets.items():
        probabilities = sum(classifier.predict_inputs(view, flip_tta=True, input_blur=0.0, temperature=1.0) for view in views)
        report = classification_report(labels, probabilities.argmax(axis=1))
        print(f"{name}, each also mirrored ({2 * len(views)} views): accuracy {report.accuracy:.2%}, macro-F1 {report.macro_f1:.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(f"usage: python tools/tta_views.py MODEL DATA\n\n{__doc__}", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1], sys.argv[2])
    except (FervidError, OSError) as error:
        print(f"tta_views.py: error: {error}", file=sys.stderr)
        sys.exit(2)
