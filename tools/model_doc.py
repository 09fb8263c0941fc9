"""Print the Markdown tables of docs/model.md for a finished run and its int8 export.

Used when a new model is bundled, so the documented numbers are copied from the files that the
tests check, never typed by hand:

    fervid evaluate src/fervid/models/NAME.onnx DATA --flip-tta --json /tmp/int8.json
    python tools/model_doc.py runs/RUN src/fervid/models/NAME.json /tmp/int8.json
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from fervid.labels import EXPRESSIONS


def accuracy_table(run_metrics: dict, card_metrics: dict) -> str:
    rows = [
        ("float32, single view (Keras run)", run_metrics["single"]),
        ("float32, flip averaging", run_metrics["flip_tta"]),
        ("int8, single view", {"accuracy": card_metrics["accuracy"], "macro_f1": card_metrics["macro_f1"]}),
    ]
    lines = ["| model | accuracy | macro-F1 |", "|---|---:|---:|"]
    lines += [f"| {label} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |" for label, m in rows]
    lines.append(
        f"| **int8, flip averaging (shipped default)** | **{card_metrics['accuracy_flip_tta']:.4f}** | "
        f"**{card_metrics['macro_f1_flip_tta']:.4f}** |"
    )
    return "\n".join(lines)


def per_class_table(evaluation: dict) -> str:
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    per_class = evaluation["per_class"]
    for name in EXPRESSIONS:
        c = per_class[name]
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    mean = lambda key: sum(per_class[n][key] for n in EXPRESSIONS) / len(EXPRESSIONS)  # noqa: E731
    support = sum(per_class[n]["support"] for n in EXPRESSIONS)
    lines.append(f"| **macro** | {mean('precision'):.3f} | {mean('recall'):.3f} | {evaluation['macro_f1']:.3f} | {support} |")
    return "\n".join(lines)


def curve_table(history: Path, every: int = 10) -> str:
    with history.open() as handle:
        rows = list(csv.DictReader(handle))
    last = len(rows)
    keep = [r for r in rows if int(r["epoch"]) in {1, 5, last} or int(r["epoch"]) % every == 0]
    lines = ["| epoch | train accuracy | validation accuracy | learning rate |", "|---:|---:|---:|---:|"]
    lines += [
        f"| {r['epoch']} | {float(r['accuracy']):.3f} | {float(r['val_accuracy']):.3f} | {float(r['learning_rate']):.2e} |"
        for r in keep
    ]
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    minutes = sum(float(r["seconds"]) for r in rows) / 60
    lines.append("")
    lines.append(f"Best validation epoch: {best['epoch']} ({float(best['val_accuracy']):.4f} single view, as measured while training). {last} epochs, {minutes:.0f} minutes.")
    return "\n".join(lines)


def calibration_table(evaluation: dict, card: dict) -> str:
    c = evaluation["calibration"]
    lines = [f"Mean confidence {c['mean_confidence']:.3f} against accuracy {c['accuracy']:.3f}; expected calibration error (10 bins) {c['ece']:.3f}."]
    fitted = card["metrics"].get("temperature_check")
    if fitted:
        lines.append(
            f"Confidence temperature {fitted['temperature']} (fitted on validation by log-likelihood, applied by the runtime); "
            f"at temperature 1 the float32 model's calibration error is {fitted['ece_flip_tta_at_1']:.3f}."
        )
    lines += [
        "",
        "| confidence | faces | mean confidence | accuracy |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {b['low']:.1f}-{b['high']:.1f} | {b['faces']} | {b['confidence']:.2f} | {b['accuracy']:.2f} |" for b in c["bins"]]
    return "\n".join(lines)


def main(run: Path, card_path: Path, evaluation_path: Path) -> None:
    run_metrics = json.loads((run / "metrics.json").read_text())
    card = json.loads(card_path.read_text())
    evaluation = json.loads(evaluation_path.read_text())
    if not evaluation.get("flip_tta"):
        raise SystemExit(f"{evaluation_path}: evaluate the int8 model with --flip-tta (the runtime default)")
    for title, body in [
        ("Accuracy", accuracy_table(run_metrics, card["metrics"])),
        ("Per class (int8, flip averaging)", per_class_table(evaluation)),
        ("Training curves", curve_table(run / "history.csv")),
        ("Calibration (int8, flip averaging)", calibration_table(evaluation, card)),
    ]:
        print(f"## {title}\n\n{body}\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(f"usage: python tools/model_doc.py RUN CARD EVALUATION\n\n{__doc__}", file=sys.stderr)
        sys.exit(2)
    try:
        main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    except (OSError, ValueError) as error:  # a missing file, or one that is not JSON or CSV as written by fervid
        print(f"model_doc.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyError as error:
        print(f"model_doc.py: error: no {error} entry: give RUN, CARD and EVALUATION in that order", file=sys.stderr)
        sys.exit(2)
