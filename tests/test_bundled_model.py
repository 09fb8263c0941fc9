"""The model shipped inside the package: its contract, its documented accuracy, and loading from a wheel."""

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from fervid.labels import EXPRESSIONS
from fervid.runtime.classify import DEFAULT_MODEL, ExpressionClassifier, available_bundled_models, bundled_model_path

ZIP = os.environ.get("FERVID_FER2013_ZIP", "")
ROOT = Path(__file__).resolve().parents[1]


BUNDLED = available_bundled_models()


def test_the_default_model_is_bundled_and_all_bundled_models_fit_in_10_mb():
    assert DEFAULT_MODEL in BUNDLED
    assert ExpressionClassifier().path == bundled_model_path(DEFAULT_MODEL)
    files = [bundled_model_path(name) for name in BUNDLED]
    assert sum(path.stat().st_size + path.with_suffix(".json").stat().st_size for path in files) <= 10 * 1024 * 1024


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_contract(name):
    path = bundled_model_path(name)
    card = json.loads(path.with_suffix(".json").read_text())
    classifier = ExpressionClassifier(name)
    assert classifier.path == path and classifier.name == name
    assert tuple(classifier.card["classes"]) == EXPRESSIONS == tuple(card["classes"])
    assert classifier.card["metrics"] == card["metrics"]
    probabilities = classifier.classify([np.full((48, 48), 128, np.uint8), np.zeros((96, 80, 3), np.uint8)])
    assert probabilities.shape == (2, 7) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_runs_on_faces_blurred_as_its_card_says(name):
    from fervid.preprocess import smooth

    classifier = ExpressionClassifier(name)
    blur = classifier.card["inference"]["input_blur"]
    assert classifier.input_blur == blur > 0
    faces = np.random.default_rng(0).random((4, 48, 48, 1), dtype=np.float32)
    by_default = classifier.predict_inputs(faces)
    assert np.allclose(by_default, classifier.predict_inputs(smooth(faces, blur), input_blur=0.0), atol=1e-6)
    assert not np.allclose(by_default, classifier.predict_inputs(faces, input_blur=0.0), atol=1e-3)


@pytest.mark.skipif(not Path(ZIP).is_file(), reason="FER2013 not available: set FERVID_FER2013_ZIP")
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_reaches_its_documented_validation_accuracy(name):
    from fervid.data import load_arrays, read_dataset
    from fervid.evaluation.metrics import classification_report

    classifier = ExpressionClassifier(name)
    documented = classifier.card["metrics"]
    validation = load_arrays(read_dataset(ZIP), "validation")
    # The runtime default (flip averaging and input blur, from the model card) is what users get and what is documented.
    probabilities = np.concatenate([classifier.predict_inputs(validation.inputs()[i : i + 512]) for i in range(0, len(validation), 512)])
    report = classification_report(validation.labels, probabilities.argmax(axis=1))
    assert classifier.flip_tta
    assert abs(report.accuracy - documented["accuracy_flip_tta"]) <= 0.005
    assert abs(report.macro_f1 - documented["macro_f1_flip_tta"]) <= 0.005


def test_the_readme_and_model_docs_quote_the_shipped_cards():
    """The CI accuracy test checks each model against its card; this keeps the numbers users read
    (README, docs/model.md) those of the cards, so a new model cannot ship under the old figures."""
    readme = (ROOT / "README.md").read_text()
    model_doc = " ".join((ROOT / "docs" / "model.md").read_text().split())
    quoted = {"fervid-vgg": "`fervid-vgg`: a", "fervid-compact": "`fervid-compact` (`--model fervid-compact`)"}
    for name, start in quoted.items():
        metrics = ExpressionClassifier(name).card["metrics"]
        accuracy, macro_f1 = metrics["accuracy_flip_tta"], metrics["macro_f1_flip_tta"]
        paragraph = " ".join(readme[readme.index(start):].split("\n\n")[0].split())
        assert f"{accuracy:.1%} accuracy and {macro_f1:.2f} macro-F1" in paragraph, name
    vgg = ExpressionClassifier("fervid-vgg").card["metrics"]
    assert f"(shipped default)** | **{vgg['accuracy_flip_tta']:.4f}** | **{vgg['macro_f1_flip_tta']:.4f}** |" in model_doc
    compact = ExpressionClassifier("fervid-compact").card["metrics"]
    assert f"**{compact['accuracy_flip_tta']:.2%} accuracy, macro-F1 {compact['macro_f1_flip_tta']:.3f}**" in model_doc


def test_bundled_model_loads_from_an_installed_wheel(tmp_path):
    # Built from a copy of what a clean checkout holds: setuptools reuses a checkout's build/ folder,
    # which can still hold modules since removed from src/.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("fervid-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        packaged = sorted(name for name in archive.namelist() if name.endswith(".py"))
    assert packaged == sorted(path.relative_to(ROOT / "src").as_posix() for path in (ROOT / "src" / "fervid").rglob("*.py"))
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    site = next(fresh.glob("lib/python*/site-packages"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "-q", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    # Dependencies come from the test environment's site-packages (a plain path, so its editable
    # install of the source tree is not visible); fervid itself only from the wheel.
    import numpy

    (site / "deps.pth").write_text(str(Path(numpy.__file__).parents[1]) + "\n")
    script = (
        "import fervid, json; from fervid.runtime.classify import ExpressionClassifier;"
        "c = ExpressionClassifier(); print(json.dumps([fervid.__file__, str(c.path), c.name]))"
    )
    result = subprocess.run([str(fresh / "bin" / "python"), "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    module, model, name = json.loads(result.stdout)
    assert module.startswith(str(site)) and model.startswith(str(site)) and name == DEFAULT_MODEL


def test_models_command_lists_every_bundled_model_with_its_card_accuracy():
    result = subprocess.run([sys.executable, "-m", "fervid", "models"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.startswith("fervid-")}
    assert sorted(lines) == BUNDLED
    assert "(default)" in lines[DEFAULT_MODEL]
    for name in BUNDLED:
        card = json.loads(bundled_model_path(name).with_suffix(".json").read_text())
        assert f"{card['metrics']['accuracy_flip_tta']:.2%}" in lines[name]
        assert f"{card['parameters']:,}" in lines[name]
    folder = result.stdout.strip().splitlines()[-1].split(": ", 1)[1]
    assert Path(folder) == bundled_model_path(DEFAULT_MODEL).parent  # where to copy the files from


def test_a_replaced_bundled_card_is_an_error_not_a_row_of_nan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate's metrics once replaced a card: `fervid models` showed "? 0 nan% nan" and exited 0."""
    import fervid.runtime.classify as classify
    from fervid.errors import FervidError

    for name in BUNDLED:
        shutil.copy(bundled_model_path(name), tmp_path / f"{name}.onnx")
        shutil.copy(bundled_model_path(name).with_suffix(".json"), tmp_path / f"{name}.json")
    monkeypatch.setattr(classify, "bundled_model_path", lambda name=DEFAULT_MODEL: tmp_path / f"{name}.onnx")
    assert len(classify.describe_bundled_models()) == len(BUNDLED) + 3  # header, a row each, two closing lines
    (tmp_path / f"{DEFAULT_MODEL}.json").write_text(json.dumps({"accuracy": 0.7, "macro_f1": 0.68, "images": 3589}))
    with pytest.raises(FervidError, match=f"the card of the bundled model {DEFAULT_MODEL} is not a model card .*; reinstall fervid$"):
        classify.describe_bundled_models()
    (tmp_path / f"{DEFAULT_MODEL}.json").write_text("{")
    with pytest.raises(FervidError, match=f"the card of the bundled model {DEFAULT_MODEL} is not valid JSON"):
        classify.describe_bundled_models()


@pytest.mark.parametrize("name", BUNDLED)
def test_the_documented_plain_onnxruntime_recipe_reproduces_fervid(name: str) -> None:
    """docs/model.md's code for running the ONNX file without fervid gives fervid's probabilities."""
    from fervid.runtime.classify import ExpressionClassifier

    doc = (Path(__file__).parents[1] / "docs" / "model.md").read_text()
    section = doc.split("## Using the ONNX file without fervid", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'path = "fervid-vgg.onnx"' in code
    namespace: dict = {}
    exec(code.replace('"fervid-vgg.onnx"', repr(str(bundled_model_path(name)))), namespace)
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, size, dtype=np.uint8) for size in [(48, 48), (48, 48, 3), (130, 110, 3), (30, 30)]]
    ours = ExpressionClassifier(name).classify(faces)
    theirs = np.array([[namespace["expression_probabilities"](face)[label] for label in EXPRESSIONS] for face in faces])
    np.testing.assert_allclose(theirs, ours, atol=1e-6)


def test_evaluate_scores_faces_exactly_as_the_runtime_runs_them() -> None:
    """Evaluation mirrored each face before blurring it, the runtime blurred before mirroring: the
    int8 model's input rounding made 44 of 3,589 validation faces differ by up to 0.011."""
    from fervid.evaluation.evaluate import load_predictor, predict

    # 8-bit faces, as images give: blurred, their values land on the int8 input's rounding steps
    faces = (cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (2000, 48, 48), dtype=np.uint8), (0, 0), 1.5)
             .astype(np.float32)[..., None] / 255)
    predictor = load_predictor(DEFAULT_MODEL)
    assert predictor.input_blur > 0 and predictor.flip_tta, "the bundled model blurs and averages with the mirror"
    runtime = ExpressionClassifier(DEFAULT_MODEL).predict_inputs(faces)
    np.testing.assert_array_equal(predict(predictor, faces, flip_tta=True), runtime)
