"""How far teachers' answers on augmented training views are from their answer on the clean face
(docs/model.md part 13): the case for ``fervid train --teacher-views``.

Offline distillation gives every augmented view of a face the teachers' answer on the clean face.
This draws 2,000 training faces, augments them with the training recipe of the shipped model
(the Keras layers ``fervid train`` uses), and compares the teachers' averaged answers:

    python tools/teacher_consistency.py ../shared/data/fer2013.zip tools/teachers/*.onnx
"""

from __future__ import annotations

import sys

import numpy as np

from fervid.data import load_arrays, read_dataset
from fervid.errors import FervidError
from fervid.runtime.classify import ExpressionClassifier

FACES = 2000


def main(data: str, teachers: list[str]) -> None:
    models = [ExpressionClassifier(teacher) for teacher in teachers]
    arrays = load_arrays(read_dataset(data), "train")
    from fervid.model.architectures import build_augmenter  # Keras takes seconds to load: after the arguments are checked
    from fervid.model.backend import keras

    rows = np.random.default_rng(0).choice(len(arrays.labels), FACES, replace=False)
    faces, labels = arrays.inputs()[rows].astype(np.float32), arrays.labels[rows]
    augmenter = build_augmenter(flip=True, rotation=0.05, zoom=0.1, shift=0.1, brightness=0.2, contrast=0.2, erasing=0.5,
                                seed=1, dtype="float32")

    def answer(inputs: np.ndarray) -> np.ndarray:
        return sum(model.predict_inputs(inputs) for model in models) / len(models)

    clean = answer(faces)
    print(f"clean faces: the teachers agree with the label on {(clean.argmax(1) == labels).mean():.1%}")
    for draw in range(2):
        views = keras.ops.convert_to_numpy(augmenter(faces, training=True))
        seen = answer(views)
        agreement = (seen.argmax(1) == clean.argmax(1)).mean()
        variation = 0.5 * np.abs(seen - clean).sum(axis=1).mean()
        divergence = (clean * (np.log(clean + 1e-8) - np.log(seen + 1e-8))).sum(axis=1).mean()
        print(f"augmented views, draw {draw + 1}: agree with the label on {(seen.argmax(1) == labels).mean():.1%}, "
              f"with the clean-face answer on {agreement:.1%}; total variation {variation:.3f}, KL(clean || view) {divergence:.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(f"usage: python tools/teacher_consistency.py DATA TEACHER [TEACHER ...]\n\n{__doc__}", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1], sys.argv[2:])
    except (FervidError, OSError) as error:
        print(f"teacher_consistency.py: error: {error}", file=sys.stderr)
        sys.exit(2)
