"""``fervid evaluate``: score a model on one split of a dataset, optionally against another on the same faces."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fervid.console import warn
from fervid.errors import FervidError
from fervid.evaluation.evaluate import evaluate, load_predictor, scored_model
from fervid.evaluation.metrics import ClassificationReport, mcnemar_p
from fervid.labels import EXPRESSIONS
from fervid.preprocess import check_input_blur

if TYPE_CHECKING:
    from fervid.data.arrays import FaceArrays
    from fervid.data.readers import DatasetIndex

SIGNIFICANCE = 0.05  # p below this: the two models' accuracies really differ on these faces


@dataclass
class Comparison:
    """Two models on the same faces: who gets which right, and whether the difference is chance."""

    model: str
    accuracy: float
    only_this_right: int
    only_other_right: int
    mcnemar_p: float
    flip_tta: bool  # how the other model was run: its own card's views, blur and temperature
    input_blur: float
    temperature: float

    @property
    def verdict(self) -> str:
        return "a real difference" if self.mcnemar_p < SIGNIFICANCE else "not distinguishable from chance"

    def to_dict(self) -> dict:
        return {"model": self.model, "accuracy": self.accuracy, "only_this_right": self.only_this_right,
                "only_other_right": self.only_other_right, "mcnemar_p": self.mcnemar_p, "flip_tta": self.flip_tta,
                "input_blur": self.input_blur, "temperature": self.temperature}


@dataclass
class Evaluation:
    """A model's scores on a split, with how it was run (the views, blur and temperature applied)."""

    model: str
    data: str
    split: str
    flip_tta: bool
    input_blur: float
    temperature: float
    images: int
    report: ClassificationReport
    against: Comparison | None = None
    split_source: str | None = None  # set when the split is the run's own holdout of the train split
    sources: np.ndarray | None = None  # each scored face's name in the dataset, in the report's order
    labels: np.ndarray | None = None

    def describe(self) -> list[str]:
        """What ``fervid evaluate`` prints: how the model was run, the per-class and calibration
        tables, the headline scores, and the comparison when there is one."""
        report = self.report
        assert report.calibration is not None  # evaluate_model's report comes from evaluate, which sets it
        lines = [
            f"{self.model} on {self.data} [{self.split}{': ' + self.split_source if self.split_source else ''}], "
            f"{self.images:,} images{' (flip averaging)' if self.flip_tta else ''}; "
            f"input blur {self.input_blur:g}, temperature {self.temperature:g}",
            report.table(),
            "",  # two Markdown tables: run together, a paste rendered them as one
            report.calibration.table(),
            f"accuracy {report.accuracy:.4f}  macro-F1 {report.macro_f1:.4f}  calibration error (ECE, 10 bins) "
            f"{report.calibration.ece:.4f}, mean confidence {report.calibration.mean_confidence:.4f}",
        ]
        if (other := self.against) is not None:
            lines.append(
                f"against {other.model} ({'flip averaging, ' if other.flip_tta else ''}input blur {other.input_blur:g}, "
                f"temperature {other.temperature:g}): accuracy {report.accuracy:.4f} for this model vs {other.accuracy:.4f}; only this "
                f"model right on {other.only_this_right:,} faces, only {other.model} on {other.only_other_right:,}; "
                f"exact McNemar p = {other.mcnemar_p:.3g} ({other.verdict} at p < {SIGNIFICANCE})"
            )
        return lines

    def write_predictions(self, target: str | Path) -> None:
        """One CSV row per face: its name in the dataset, true and predicted class, confidence, whether
        it was right, and the seven probabilities as scored; the wrong ones first, most confident
        first, which is where labelling errors and the model's blind spots show."""
        import csv
        import io

        from fervid.fileio import write_text_atomically

        probabilities = self.report.probabilities
        assert probabilities is not None and self.sources is not None and self.labels is not None  # evaluate_model sets them
        predicted = probabilities.argmax(axis=1)
        confidence = probabilities.max(axis=1)
        order = np.lexsort((-confidence, predicted == self.labels))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["source", "label", "predicted", "confidence", "correct", *(f"prob_{name}" for name in EXPRESSIONS)])
        for row in order:
            writer.writerow([self.sources[row], EXPRESSIONS[self.labels[row]], EXPRESSIONS[predicted[row]], f"{confidence[row]:.4f}",
                             str(bool(predicted[row] == self.labels[row])).lower(), *(f"{p:.4f}" for p in probabilities[row])])
        write_text_atomically(target, text.getvalue())

    def to_dict(self) -> dict:
        payload = {"model": self.model, "data": self.data, "split": self.split, "split_source": self.split_source or self.split,
                   "flip_tta": self.flip_tta,
                   "input_blur": self.input_blur, "temperature": self.temperature, "images": self.images,
                   **self.report.to_dict()}
        if self.against is not None:
            payload["against"] = self.against.to_dict()
        return payload


def training_reading(card: dict | None, data: str | Path, mapping: Mapping[str, str] | None,
                     unknown: str | None) -> tuple[Mapping[str, str] | None, str]:
    """``--map`` and ``--unknown`` for reading ``data``: the ones given, else the model's training
    ones from its card (a model trained with ``--map contempt=disgust`` reads such data as it was
    trained on it), else the defaults. Taking the card's is said in a warning."""
    training = (card or {}).get("training")
    training = training if isinstance(training, dict) else {}
    card_map, card_unknown = training.get("mapping"), training.get("unknown")
    taken = []
    if not mapping and isinstance(card_map, dict) and card_map and all(isinstance(v, str) for v in card_map.values()):
        mapping = card_map
        taken.append("--map " + ",".join(f"{k}={v}" for k, v in card_map.items()))
    if unknown is None and card_unknown in ("error", "drop"):
        unknown = card_unknown
        if card_unknown != "error":
            taken.append(f"--unknown {card_unknown}")
    if taken:
        warn(f"{data}: read with the model's training {' '.join(taken)} (give your own to override)")
    return mapping, unknown or "error"


def evaluate_model(
    model: str,
    data: str | Path,
    *,
    split: str = "validation",
    flip_tta: bool | None = None,
    input_blur: float | None = None,
    temperature: float | None = None,
    against: str | None = None,
    unknown: str | None = None,
    mapping: Mapping[str, str] | None = None,
) -> Evaluation:
    """Score ``model`` (a file, run folder or bundled name) on ``split`` of the dataset at ``data``.

    Unset, ``flip_tta``, ``input_blur`` and ``temperature`` are the model card's, so the scores are
    what the runtime gives. ``against`` is scored on the same faces as its own card says the runtime
    runs it (a ``flip_tta`` given applies to both), and compared with an exact McNemar test: each
    model as users get it, so a card without flip averaging does not take it from the other. Both
    models load before the data: a wrong name fails in seconds.
    """
    from fervid.data import load_split, read_dataset
    from fervid.data.readers import split_name

    split = split_name(split)
    if input_blur is not None:
        check_input_blur(input_blur)
    model, other = scored_model(model), scored_model(against) if against else None
    predictor = load_predictor(model, input_blur=input_blur, temperature=temperature)
    other_predictor = load_predictor(other) if other else None
    mapping, unknown = training_reading(predictor.card, data, mapping, unknown)
    index = read_dataset(data, unknown=unknown, mapping=mapping)  # type: ignore[arg-type]
    if dropped := index.dropped_note():
        warn(f"{data}: {dropped}")
    held = held_out_faces(index, predictor.card) if split == "validation" and "validation" not in index.splits else None
    if held is None and split == "validation" and "validation" not in index.splits and "train" in index.splits \
            and str((predictor.card.get("dataset") or {}).get("validation_source", "")).startswith("stratified"):
        # load_split's hint, --split train, would count faces this model trained on
        other_data = "--split test scores its test faces, --split train all of it" if "test" in index.splits \
            else "--split train scores all of it"
        raise FervidError(f"{data}: no validation split, and not the data {model}'s run set its validation faces aside "
                          "from as it was then. If it is that data, changed or copied without its file times (cp -r), "
                          "score the run on the data as it read it (or a cp -a copy): --split train would count faces "
                          f"it trained on; if it is other data, {other_data}")
    arrays = held if held is not None else load_split(index, split)
    if held is not None and other_predictor is not None:
        check_not_trained_on(index, held, other_predictor.card, predictor.card, f"{other} (--against)", str(model))
    missing = [name for label, name in enumerate(EXPRESSIONS) if len(arrays) and not np.any(arrays.labels == label)]
    if missing:  # their recall is unmeasured, and macro-F1 averages the classes present (or predicted)
        warn(f"{data}: no {split} faces of {', '.join(missing)}: their recall is not measured (support 0 in the table)")
    inputs = arrays.inputs()
    this_flip = predictor.flip_tta if flip_tta is None else flip_tta
    report = evaluate(predictor, inputs, arrays.labels, flip_tta=this_flip)
    comparison = None
    if other_predictor is not None:
        other_flip = other_predictor.flip_tta if flip_tta is None else flip_tta
        other_report = evaluate(other_predictor, inputs, arrays.labels, flip_tta=other_flip)
        assert report.correct is not None and other_report.correct is not None  # evaluate sets them
        only_this, only_other, p_value = mcnemar_p(report.correct, other_report.correct)
        comparison = Comparison(str(other), other_report.accuracy, only_this, only_other, p_value,
                                other_flip, other_predictor.input_blur, other_predictor.temperature)
    source = predictor.card["dataset"]["validation_source"] if held is not None else None
    return Evaluation(str(model), str(data), split, this_flip, predictor.input_blur, predictor.temperature,
                      len(arrays), report, comparison, source, arrays.sources, arrays.labels)


def held_out_faces(index: DatasetIndex, card: dict) -> FaceArrays | None:
    """The validation faces the model's own run held out of this dataset's train split, or None.

    A researcher's folder of class folders has no validation split, so training sets aside a seeded
    stratified fraction of it; scoring that model with ``--split train`` would count faces it
    learned. Only for the very data the run read (its content fingerprint): on other data the same
    seed would pick faces the model may have trained on.
    """
    from fervid.data import load_split
    from fervid.data.arrays import fingerprint
    from fervid.data.holdout import stratified_holdout, subset

    dataset, training = card.get("dataset") or {}, card.get("training") or {}
    if not str(dataset.get("validation_source", "")).startswith("stratified") or "train" not in index.splits:
        return None
    if dataset.get("fingerprint") != fingerprint(index):
        return None
    train = load_split(index, "train")
    return subset(train, stratified_holdout(train.labels, training["val_fraction"], training["seed"]))


def check_not_trained_on(index: DatasetIndex, faces: FaceArrays, card: dict, holder_card: dict, name: str, holder: str) -> None:
    """Refuse to compare on ``holder``'s held-out ``faces`` a model whose run trained on some of them.

    Two runs on one folder with different ``--seed`` or ``--val-fraction`` held out different faces;
    scored on the first's, the second would be tested partly on faces it learned, and the McNemar
    test would favour it. Runs on other data, or without a card, cannot be checked.
    """
    def holdout(of: dict) -> tuple:
        training = of.get("training") or {}
        return (of.get("dataset") or {}).get("fingerprint"), training.get("seed"), training.get("val_fraction")

    if holdout(card) == holdout(holder_card):  # the same faces held out: nothing to decode again
        return
    other = held_out_faces(index, card)
    if other is None:
        return
    learned = len(set(faces.sources.tolist()) - set(other.sources.tolist()))
    if learned:
        seed, fraction = holdout(card)[1:]
        raise FervidError(f"{name} trained on {learned:,} of the {len(faces):,} faces {holder}'s run held out of this data "
                          f"(it held out --val-fraction {fraction} with --seed {seed}): compare runs that held out the same "
                          "faces, or score both on a validation split")
