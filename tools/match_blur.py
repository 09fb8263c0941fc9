"""Give a model trained before the input blur existed the blur its recipe calls for, and rescore it.

``fervid train`` now measures the blur itself (``fervid.training.matched_blur``) and every model it
makes carries ``inference.input_blur`` in its card. A model made earlier has no such entry; this
measures it from the recipe recorded in the card (rotation, zoom, shift, seed), on training faces
only, keeps it if validation accuracy is no worse with it (as ``fervid train`` does), and rewrites the card (in the ONNX metadata and the JSON beside it, atomically) with the
validation scores of the model as the runtime now runs it:

    python tools/match_blur.py src/fervid/models/fervid-vgg.onnx ../shared/data/fer2013.zip

MODEL is an .onnx file (its card is rewritten in place, so not a bundled name). A card that already
has ``inference.input_blur`` is refused: ``--force`` measures and rewrites it again.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from fervid.data import load_arrays, read_dataset
from fervid.errors import FervidError
from fervid.evaluation.evaluate import card_metrics, load_predictor
from fervid.export.onnx import write_card
from fervid.fileio import write_text_atomically
from fervid.runtime.classify import ExpressionClassifier
from fervid.training.matched_blur import augmentation_blur, choose_input_blur

SUPERSEDED = ("accuracy", "macro_f1", "accuracy_flip_tta", "macro_f1_flip_tta", "ece_flip_tta", "float32_accuracy_flip_tta", "int8_float32_agreement")


def main(model: Path, data: Path, force: bool = False) -> None:
    if model.suffix != ".onnx" or not model.is_file():  # checked now, not when the card is written minutes later
        raise FervidError(f"{model}: not an .onnx file (give the file's path, not a bundled model name)")
    card = ExpressionClassifier(model).card
    if "input_blur" in card.get("inference", {}) and not force:
        raise FervidError(f"{model}: its card already has inference.input_blur ({card['inference']['input_blur']}); "
                          "--force measures and rewrites it again")
    recipe = card["training"]
    index = read_dataset(data)
    measured = augmentation_blur(recipe["rotation"], recipe["zoom"], recipe["shift"], load_arrays(index, "train").inputs(), seed=recipe["seed"],
                                 warp=recipe.get("warp", "each"))
    validation = load_arrays(index, "validation")
    inputs, labels = validation.inputs(), validation.labels
    blur, check = choose_input_blur(partial(load_predictor, model), inputs, labels, measured)
    scored, _, _ = card_metrics(load_predictor(model, input_blur=blur), inputs, labels, "validation split")
    previous = card["metrics"]
    card["inference"] = {**card.get("inference", {}), "input_blur": blur}
    card["metrics"] = {
        **scored,
        "input_blur_check": check,
        "without_input_blur": {key: previous[key] for key in SUPERSEDED if key in previous},
        "training_minutes": previous.get("training_minutes"),
    }
    write_card(model, card)
    write_text_atomically(model.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    print(
        f"{model}: measured blur {measured}, applied {blur}; validation accuracy with flip averaging {previous['accuracy_flip_tta']:.4f} -> "
        f"{scored['accuracy_flip_tta']:.4f}, macro-F1 {previous['macro_f1_flip_tta']:.4f} -> {scored['macro_f1_flip_tta']:.4f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, metavar="MODEL", help="the .onnx file whose card is rewritten")
    parser.add_argument("data", type=Path, metavar="DATA", help="the dataset it was trained on")
    parser.add_argument("--force", action="store_true", help="rewrite a card that already has inference.input_blur")
    args = parser.parse_args()
    try:
        main(args.model, args.data, args.force)
    except (FervidError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
