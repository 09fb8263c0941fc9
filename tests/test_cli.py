"""The `fervid` command as users run it: help, version, and one-line errors for bad data."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import write_folder_dataset
from fervid import __version__


# The commands run in an empty folder of their own: a relative output a test expects to be refused
# (`c.png`, `run/model.keras`) would otherwise land in the checkout, should the refusal regress.
HERE = tempfile.mkdtemp(prefix="fervid-cli-")


def fervid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fervid", *args], capture_output=True, text=True, timeout=300, cwd=HERE)


def test_help_lists_every_command_and_version_prints():
    result = fervid("--help")
    assert result.returncode == 0
    listed = re.findall(r"^│ (\w+) {2,}\S", result.stdout, re.MULTILINE)  # the Commands panel's first column
    assert sorted(listed) == sorted(["train", "evaluate", "export", "data", "predict", "live", "bench", "models", "serve", "analyze"])
    assert fervid("-h").stdout == result.stdout and "fervid predict [OPTIONS]" in fervid("predict", "-h").stdout
    version = fervid("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"fervid {__version__}"
    from fervid.runtime.classify import DEFAULT_MODEL

    live = subprocess.run([sys.executable, "-m", "fervid", "live", "--help"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "300"})
    assert f"default: {DEFAULT_MODEL})" in live.stdout, "the --model help names the real default model"


def test_inspect_counts_lists_unreadable_and_writes_grid(tmp_path):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 3, "test": 2})
    (data / "train" / "happy" / "bad.jpg").write_bytes(b"junk")
    (data / "train" / "sad" / "0000_copy.png").write_bytes((data / "train" / "sad" / "0000.png").read_bytes())
    grid = tmp_path / "grid.png"
    result = fervid("data", "inspect", str(data), "--grid", str(grid), "--verbose")
    assert result.returncode == 0, result.stderr
    assert "unreadable files: 1" in result.stdout and "bad.jpg" in result.stdout
    assert "exact duplicates: 1 repeated image in 1 group of identical files" in result.stdout
    assert "0000_copy.png" in result.stdout
    assert "imbalance (largest / smallest class): 1.2x" in result.stdout  # 6 readable in sad (5 in happy: one is junk), 5 elsewhere
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for split in ("train", "test"):
        shutil.rmtree(data / split / "disgust")
    result = fervid("data", "inspect", str(data), "--grid", str(grid))
    assert "imbalance (largest / smallest class): 1.2x (without disgust: no images)" in result.stdout


def test_inspect_of_the_current_folder_names_the_grid_after_it(tmp_path):
    data = write_folder_dataset(tmp_path / "faces", 0, {"train": 1})
    result = subprocess.run([sys.executable, "-m", "fervid", "data", "inspect", "."], cwd=data,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "sample grid: faces-samples.png" in result.stdout and (data / "faces-samples.png").stat().st_size > 0


def test_inspect_writes_its_grid_even_for_a_reader_that_stops_early(tmp_path):
    """`fervid data inspect DATA | head -3` ended at the table's first line that found the pipe
    closed, before the grid was written."""
    data = write_folder_dataset(tmp_path / "data", 2)
    process = subprocess.Popen([sys.executable, "-m", "fervid", "data", "inspect", str(data), "--grid", str(tmp_path / "g.png")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    process.stdout.close()  # as `head` does once it has its lines: every print then fails
    process.wait(timeout=300)
    assert (tmp_path / "g.png").exists()


def test_inspect_refuses_a_grid_that_is_not_png_before_reading(tmp_path):
    result = fervid("data", "inspect", str(tmp_path / "missing"), "--grid", str(tmp_path / "g.jpg"))
    assert result.returncode == 2 and "the sample grid is a PNG; give a path ending in .png" in result.stderr
    assert "no such" not in result.stderr, "refused before the data is looked at"


def test_evaluate_refuses_a_confusion_path_that_is_not_png_before_scoring(tmp_path):
    result = fervid("evaluate", "fervid-vgg", str(tmp_path / "missing"), "--confusion", str(tmp_path / "c.txt"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"fervid: error: --confusion {tmp_path / 'c.txt'}: the confusion matrix is a PNG; give a path ending in .png"]
    result = fervid("evaluate", "fervid-vgg", str(tmp_path / "missing"), "--json", str(tmp_path))
    assert result.returncode == 2 and result.stderr.strip() == f"fervid: error: --json {tmp_path}: a folder, not a file; give a file path for this output"
    result = fervid("evaluate", "fervid-vgg", str(tmp_path / "missing"), "--confusion", "/proc/c.png")  # before the data is read
    assert result.returncode == 2 and result.stderr.strip().startswith("fervid: error: --confusion /proc/c.png: cannot write in /proc (")
    flat = write_folder_dataset(tmp_path / "flat", 1)  # class folders, no splits: all of it is 'train'
    result = fervid("evaluate", "fervid-vgg", str(flat))
    assert result.returncode == 2 and result.stderr.strip().endswith("(found: train); --split train scores the model on those")
    split_folder = write_folder_dataset(tmp_path / "k" / "images", 1, {"train": 1, "validation": 1}) / "validation"
    result = fervid("evaluate", "fervid-vgg", str(split_folder))  # the split folder itself, not the dataset holding it
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "validation is read as one set of class folders, counted as 'train' (splits are folders inside DATA): --split train scores the model on them")
    both = write_folder_dataset(tmp_path / "fer", 1, {"train": 1, "test": 1})
    result = fervid("evaluate", "fervid-vgg", str(both))
    assert result.returncode == 2 and result.stderr.strip().endswith("(found: train, test); --split test scores the model on those")


def test_evaluate_scores_the_split_it_is_given(tmp_path):
    """--split picks the faces (train, test or validation), counted in the JSON; a split the data
    lacks is one line naming the ones it has."""
    import json

    data = write_folder_dataset(tmp_path / "data", 0, splits={"train": 3, "test": 2})
    for split, faces in (("train", 21), ("test", 14)):
        result = fervid("evaluate", "fervid-vgg", str(data), "--split", split, "--json", str(tmp_path / f"{split}.json"))
        assert result.returncode == 0, result.stderr
        scored = json.loads((tmp_path / f"{split}.json").read_text())
        assert scored["split"] == split and scored["images"] == faces, scored
        # the class and calibration tables apart: run together, a Markdown paste rendered them as one
        assert "|\n\n| confidence | faces | mean confidence | accuracy |\n" in result.stdout, result.stdout
    result = fervid("evaluate", "fervid-vgg", str(data), "--split", "validation")
    assert result.returncode == 2 and "no 'validation' split (found: train, test)" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr



@pytest.mark.parametrize("args, message", [
    (["train", "{data}", "--unknown", "foo"], "--unknown must be 'error' or 'drop', got 'foo'"),
    (["train", "{data}", "--init-from", "{tmp}/nope"], "--init-from {tmp}/nope: no such model file, run folder or bundled model name"),
    (["train", "{data}", "--teacher", "nosuchmodel"], "--teacher nosuchmodel: no such model file, run folder or bundled model name"),
    (["export", "{tmp}/nope.keras"], "{tmp}/nope.keras: no such model file"),
    (["export", "{tmp}/m.keras", "--unknown", "drop"], "--unknown and --map say how to read the --int8 dataset; without --int8 no data is read"),
])
def test_train_and_export_refuse_missing_inputs_before_tensorflow_loads(tmp_path, args, message):
    """A typo in a path waited through TensorFlow's import (and for train a model build) before its
    error: a stand-in TensorFlow and Keras that exit with status 99 prove the refusal comes first."""
    stub = tmp_path / "stub"
    for package in ("tensorflow", "keras"):
        (stub / package).mkdir(parents=True)
        (stub / package / "__init__.py").write_text("import sys\nsys.exit(99)\n")
    data = write_folder_dataset(tmp_path / "data", 0, {"train": 1, "validation": 1})
    (tmp_path / "m.keras").write_bytes(b"")
    fill = {"tmp": str(tmp_path), "data": str(data)}
    out = tmp_path / ("out.onnx" if args[0] == "export" else "out")
    result = subprocess.run([sys.executable, "-m", "fervid", *(a.format(**fill) for a in args), "--out", str(out)],
                            capture_output=True, text=True, timeout=120, cwd=HERE, env={**os.environ, "PYTHONPATH": str(stub)})
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith(f"fervid: error: {message.format(**fill)}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()

def test_evaluate_json_dash_is_stdout_alone(tmp_path):
    """`--json -` pipes the metrics (`| jq .accuracy`): stdout is the JSON and nothing else, the
    report goes to stderr; `./-` is still a file, and one without .json is refused."""
    data = write_folder_dataset(tmp_path / "data", 0, splits={"validation": 2})
    result = fervid("evaluate", "fervid-compact", str(data), "--json", "-")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["images"] == 14 and 0.0 <= metrics["accuracy"] <= 1.0, metrics
    assert "accuracy" in result.stderr and "macro" in result.stderr.lower(), result.stderr
    plain = fervid("evaluate", "fervid-compact", str(data))
    assert plain.returncode == 0 and not plain.stdout.lstrip().startswith("{"), plain.stdout
    dot = fervid("evaluate", "fervid-compact", str(data), "--json", "./-")
    assert dot.returncode == 2 and "--json ./-: the metrics are JSON; give a path ending in .json" in dot.stderr, dot.stderr
    assert not os.path.exists(os.path.join(HERE, "-"))

@pytest.mark.parametrize("case", ["missing", "empty", "unknown_classes", "all_corrupt"])
def test_inspect_bad_input_is_one_line_and_exit_2(tmp_path, case):
    path = tmp_path / "data"
    if case == "empty":
        path.mkdir()
    elif case == "unknown_classes":
        (path / "cats").mkdir(parents=True)
        (path / "cats" / "a.png").write_bytes(b"x")
    elif case == "all_corrupt":
        (path / "happy").mkdir(parents=True)
        (path / "happy" / "a.png").write_bytes(b"not an image")
    result = fervid("data", "inspect", str(path), "--grid", str(tmp_path / "g.png"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fervid: error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "g.png").exists()


def fervid_without(hidden: list[str], *args: str) -> subprocess.CompletedProcess:
    """`fervid ARGS` in a Python where the ``hidden`` packages cannot be imported, as on a smaller install."""
    script = f"import sys\nfor name in {hidden!r}:\n    sys.modules[name] = None\nfrom fervid.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300, cwd=HERE)


def test_evaluating_an_onnx_model_needs_no_tensorflow(tmp_path):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 2, "validation": 3})
    result = fervid_without(["keras", "tensorflow", "tf2onnx"], "evaluate", "fervid-vgg", str(data), "--flip-tta")
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "21 images" in result.stdout


@pytest.mark.parametrize(("hidden", "args", "extra"), [
    (["pandas"], ["evaluate", "fervid-vgg", "DATA"], "data"),
    (["pandas"], ["data", "inspect", "DATA"], "data"),
    (["matplotlib"], ["evaluate", "fervid-vgg", "DATA", "--confusion", "c.png"], "data"),
    (["keras"], ["evaluate", "run/model.keras", "DATA"], "train"),
    (["keras"], ["evaluate", "fervid-vgg", "DATA", "--against", "run/model.keras"], "train"),
])
def test_a_missing_extra_is_named_in_one_line(tmp_path, hidden, args, extra):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 2, "validation": 2})
    result = fervid_without(hidden, *[str(data) if arg == "DATA" else arg for arg in args])
    assert result.returncode == 2
    assert result.stderr.strip() == (f"fervid: error: this command needs the '{extra}' extra: "
                                     f"pip install \"fervid[{extra}]\" (in a checkout: pip install -e \".[{extra}]\")")


def test_an_output_path_the_system_refuses_is_one_line_not_a_traceback(tmp_path):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 2})
    (tmp_path / "file.txt").write_text("a file, not a folder")
    result = fervid("data", "inspect", str(data), "--grid", str(tmp_path / "file.txt" / "grid.png"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"fervid: error: --grid {tmp_path / 'file.txt' / 'grid.png'}: {tmp_path / 'file.txt'} is a file, not a folder; write the output elsewhere"]


def test_an_output_path_that_is_a_folder_is_named_not_its_temporary_file(tmp_path):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 2})
    (tmp_path / "grid.png").mkdir()
    result = fervid("data", "inspect", str(data), "--grid", str(tmp_path / "grid.png"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"fervid: error: --grid {tmp_path / 'grid.png'}: a folder, not a file; give a file path for this output"]
    assert [path.name for path in tmp_path.iterdir() if ".tmp" in path.name] == []


@pytest.mark.parametrize(("args", "message"), [
    (["CSV"], "not a readable CSV"),
    (["DATA", "--unknown", "ignore"], "--unknown must be 'error' or 'drop'"),
    (["DATA", "--map", "contempt=boredom"], "'boredom' is not one of"),
    (["DATA", "--verbos"], "No such option: --verbos"),
])
def test_inspect_bad_options_and_csv_rows_are_one_line(tmp_path, args, message):
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 1})
    pixels = " ".join(["100"] * 2304)
    (tmp_path / "fer.csv").write_text(f'emotion,pixels,Usage\n0,{pixels},Training\n1,"{pixels},Training\n')  # an unclosed quote
    paths = {"CSV": tmp_path / "fer.csv", "DATA": data}
    result = fervid("data", "inspect", *[str(paths.get(arg, arg)) for arg in args], "--grid", str(tmp_path / "g.png"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fervid: error:") and message in lines[0], result.stderr
    assert not (tmp_path / "g.png").exists()


def test_no_help_text_is_eaten_by_rich_markup():
    """Typer renders help as Rich markup, where "[default: x]" is a tag that vanishes from the screen."""
    import click
    import typer.main
    from rich.markup import render

    from fervid.cli import app

    def commands(command: click.Command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from commands(sub)

    texts = [
        text
        for command in commands(typer.main.get_command(app))
        for text in [command.help or "", *(getattr(param, "help", None) or "" for param in command.params)]
    ]
    assert len(texts) > 50
    assert [text for text in texts if render(text).plain != text] == []


def test_every_float_option_refuses_nan_and_inf():
    """nan passes every range check (nan < 0 is False): a learning rate or a duration of nan would
    otherwise run, or fail deep inside with a traceback."""
    import typing

    from fervid.cli import app, data_app

    options = []
    for group, typer_app in (((), app), (("data",), data_app)):
        for command in typer_app.registered_commands:
            hints = typing.get_type_hints(command.callback, include_extras=True)
            for name, hint in hints.items():
                base, *metadata = typing.get_args(hint) or (hint,)
                if float not in (base, *typing.get_args(base)) or not metadata:
                    continue
                declared = [d for d in getattr(metadata[0], "param_decls", ()) if d.startswith("--")]
                path = (*group, command.name or command.callback.__name__.replace("_", "-"))
                options.append((path, declared[0] if declared else "--" + name.replace("_", "-")))
    assert len(options) >= 15
    for (path, option), value in [(found, value) for found in options for value in ("nan", "inf")]:
        result = fervid(*path, option, value)
        assert result.returncode == 2, (path, option, result.stderr)
        assert result.stderr.startswith(f"fervid: error: Invalid value for '{option}': "), result.stderr
        assert f"{value} is not a finite number" in result.stderr, result.stderr  # said as it is, not as out of range
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_every_command_that_writes_takes_out_output_and_o():
    """train, export, predict and analyze said --out; live, bench and serve said --output: each now
    takes all three spellings, so a user need not remember which command said which."""
    import typer.main

    from fervid.cli import app

    writers = {}
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            if param.param_type_name == "option" and {"--out", "--output"} & set(param.opts):
                writers[name] = set(param.opts)
    assert set(writers) == {"train", "export", "predict", "live", "bench", "serve", "analyze"}
    assert all(opts == {"--out", "--output", "-o"} for opts in writers.values()), writers
    refused = fervid("export", "missing.keras", "--output", "x.txt")  # the other spelling reaches the same check
    assert refused.returncode == 2 and "--out x.txt: the ONNX file must end in .onnx" in refused.stderr, refused.stderr


def test_help_shows_no_value_type_for_flags():
    """A flag takes no value: `--no-save <bool>` in the help read as if it did."""
    result = subprocess.run([sys.executable, "-m", "fervid", "predict", "--help"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "200"})
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ --")}
    assert "<bool>" not in result.stdout and "--no-save" in lines and "--help" in lines
    assert "<path>" in lines["--json"] and "<int>" in lines["--min-size"]  # options that take a value still say which


def test_command_defaults_are_the_librarys():
    """cli.py may not import OpenCV (so `fervid --help` stays fast), so its defaults repeat the
    library's: this keeps each repeated value equal to the constant it stands for."""
    import typer.main

    from fervid.cli import app
    from fervid.runtime.detect import DetectorConfig
    from fervid.runtime.pipeline import DETECT_EVERY
    from fervid.serve.pool import DEFAULT_WORKERS
    from fervid.serve.uploads import DEFAULT_MAX_UPLOAD_BYTES

    commands = typer.main.get_command(app).commands
    defaults = {(name, param.name): param.default for name, command in commands.items() for param in command.params}
    detector = DetectorConfig()
    for name in ("predict", "live", "serve", "analyze"):
        assert defaults[(name, "scale_factor")] == detector.scale_factor
        assert defaults[(name, "min_neighbors")] == detector.min_neighbors
        assert defaults[(name, "min_size")] == detector.min_size
    assert defaults[("live", "detect_every")] == DETECT_EVERY
    assert defaults[("serve", "workers")] == DEFAULT_WORKERS
    assert defaults[("serve", "max_upload_mb")] * 1_000_000 == DEFAULT_MAX_UPLOAD_BYTES


def test_no_output_replaces_an_input_or_lands_in_a_class_folder(tmp_path):
    """An output that is the dataset, the model or the boxes file would replace it; an image written into
    a class folder would be read as a face next time. Each is one line before any work, the input intact."""
    from fervid.runtime.classify import bundled_model_path

    from conftest import write_fer_csv

    data = write_folder_dataset(tmp_path / "data", 0, splits={"train": 2, "validation": 1})
    csv_data = write_fer_csv(tmp_path / "fer.csv", {"PublicTest": 1, "Training": 1})
    model = tmp_path / "m.onnx"
    shutil.copy(bundled_model_path("fervid-compact"), model)
    photo = data / "train" / "happy" / "0000.png"
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"source,frame,x,y,w,h\n{photo},0,0,0,48,48\n")
    class_folder = data / "train" / "happy"
    keras = tmp_path / "k.keras"  # its card is k.json beside it
    keras.write_bytes(b"PK")
    run = tmp_path / "run"  # a training run: what evaluate writes must not replace its model or resume state
    (run / "checkpoint").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "model.keras").write_bytes(b"the trained model")
    cases = [
        (["evaluate", str(model), str(data), "--json", str(run / "model.json")],
         f"--json {run / 'model.json'}: is model.json of the training run {run}, which this output would overwrite"),
        (["evaluate", str(model), str(data), "--json", str(tmp_path / "model.int8.onnx")],  # it replaced a model
         f"--json {tmp_path / 'model.int8.onnx'}: the metrics are JSON; give a path ending in .json"),
        (["evaluate", str(model), str(data), "--predictions", str(run / "history.csv")], "is history.csv of the training run"),
        (["evaluate", str(model), str(data), "--json", str(run / "checkpoint" / "state.json")], "is checkpoint/state.json of the training run"),
        (["evaluate", str(model), str(data), "--json", str(tmp_path / "same.json"), "--predictions", str(tmp_path / "same.csv")],
         f"--json and --predictions are both {tmp_path / 'same.json'}; give each output its own file"),  # same.csv links to it
        (["evaluate", str(model), str(csv_data), "--json", str(csv_data)], f"--json {csv_data}: is the dataset"),
        (["evaluate", str(keras), str(data), "--json", str(keras.with_suffix(".json"))],
         f"--json {keras.with_suffix('.json')}: is the model card of {keras}, read with it"),  # it was replaced
        (["evaluate", "fervid-compact", str(data), "--against", str(keras), "--json", str(keras.with_suffix(".json"))],
         f"--json {keras.with_suffix('.json')}: is the model card of {keras}, read with it"),
        (["evaluate", str(model), str(data), "--json", str(model.with_suffix(".json"))],  # an .onnx model's card too (was replaced)
         f"--json {model.with_suffix('.json')}: is the model card of {model}, read with it"),
        (["evaluate", "fervid-compact", str(data), "--against", str(model), "--json", str(model.with_suffix(".json"))],
         f"--json {model.with_suffix('.json')}: is the model card of {model}, read with it"),
        (["evaluate", str(model), str(data), "--confusion", str(class_folder / "c.png")], f"--confusion {class_folder / 'c.png'}: inside the dataset"),
        (["data", "inspect", str(data), "--grid", str(class_folder / "g.png")], f"--grid {class_folder / 'g.png'}: inside the dataset"),
        (["predict", str(photo), "--crops", "--no-save", "--model", str(model), "--json", str(model)], f"--json {model}: is the model"),
        (["analyze", str(photo), "--boxes", str(boxes), "--out", str(boxes)], f"--out {boxes}: is the input {boxes}"),
    ]
    (tmp_path / "same.csv").symlink_to(tmp_path / "same.json")
    shutil.copy(bundled_model_path("fervid-compact").with_suffix(".json"), model.with_suffix(".json"))
    before = {path: path.read_bytes() for path in (csv_data, model, model.with_suffix(".json"), boxes, run / "model.keras", run / "config.json")}
    files = sorted(class_folder.iterdir())
    for args, message in cases:
        result = fervid(*args)
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(class_folder.iterdir()) == files

    top = fervid("evaluate", str(model), str(data), "--confusion", str(data / "confusion.png"))  # no class is read from the top
    assert top.returncode == 0 and (data / "confusion.png").exists(), top.stderr


@pytest.mark.parametrize(("args", "after"), [
    (["train", "data", "--out", ""], "--out"),  # OUT unset: click read '' as '.', and trained into the current folder
    (["evaluate", "", "data"], "evaluate"),
    (["predict", "photo.jpg", "--json= "], "--json"),
])
def test_an_empty_argument_is_refused_before_it_becomes_the_current_folder(tmp_path, args, after) -> None:
    result = subprocess.run([sys.executable, "-m", "fervid", *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"fervid: error: an empty argument after {after} (an unset shell variable?); give a value"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "option", "following"), [
    (["analyze", "photos", "--out", "--largest-only"], "--out", "--largest-only"),  # wrote a table named --largest-only
    (["predict", "a.png", "--crops", "--json", "--no-save"], "--json", "--no-save"),  # records in a file named --no-save
    (["train", "data", "--out", "-o", "runs/x"], "--out", "-o"),
    (["data", "inspect", "data", "--grid", "--map=contempt=disgust"], "--grid", "--map=contempt=disgust"),
    (["predict", "--no-save", "--json", "--", "a.png"], "--json", "--"),  # `--json $OUT -- a.png`: records in a file named --
    (["analyze", "--out", "--", "photos"], "--out", "--"),  # a table folder named --
])
def test_an_option_whose_value_is_another_option_is_refused(tmp_path, args, option, following) -> None:
    """`--out $OUT --largest-only` with OUT unset: click took the flag for the value, without a word."""
    result = subprocess.run([sys.executable, "-m", "fervid", *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"fervid: error: {option} has no value: {following} after it is an option (an unset shell "
                             f"variable?); give a value, or ./{following} for a file so named\n")
    assert list(tmp_path.iterdir()) == []


def test_a_value_that_only_looks_like_an_option_is_kept() -> None:
    from fervid.cli import refuse_options_as_values
    from fervid.errors import FervidError

    refuse_options_as_values(["live", "--source", "-1"])  # not an option name: cameras say what is wrong with it
    refuse_options_as_values(["predict", "a.png", "--json=--no-save"])  # given with "=", the value is meant
    refuse_options_as_values(["train", "data", "--map", "contempt=disgust", "--out", "./--no-flip"])
    refuse_options_as_values(["predict", "a.png", "--crops", "--no-save"])  # flags take no value
    refuse_options_as_values(["predict", "--", "--json", "--crops"])  # after "--", file names
    with pytest.raises(FervidError, match="--out has no value: --help after it is an option"):
        refuse_options_as_values(["predict", "a.png", "--out", "--help"])


def test_a_console_zero_or_few_columns_wide_still_gets_every_result_and_number(tmp_path) -> None:
    """COLUMNS=0 (some Docker consoles) made rich print nothing, results, warnings and help alike,
    with exit status 0; at 30 columns data inspect cut its own counts to "1,…"."""
    data = write_folder_dataset(tmp_path / "d", 0, {"train": 1000 // 7 + 1, "validation": 1})

    def run(columns: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fervid", *args], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path, env={**os.environ, "COLUMNS": columns})

    assert re.search(r"^│ predict +\S", run("0", "--help").stdout, re.MULTILINE), "the help, commands and all"
    for columns in ("0", "30", "x"):
        result = run(columns, "data", "inspect", str(data), "--grid", str(tmp_path / "grid.png"))
        assert result.returncode == 0 and "validation" in result.stdout and "1,008" in result.stdout, (columns, result.stdout)
    (data / "train" / "happy" / "notes.txt").write_text("not a face")
    assert "files in class folders without an image suffix" in run("0", "data", "inspect", str(data), "--grid",
                                                                   str(tmp_path / "grid.png")).stdout


def test_evaluate_reads_a_dataset_with_the_models_training_map(tmp_path):
    """A model trained with --map contempt=disgust scored on the same kind of data used to fail on its
    contempt folder unless --map was given again (export --int8 already reused it)."""
    import json

    import cv2

    from fervid.runtime.classify import bundled_model_path

    data = write_folder_dataset(tmp_path / "data", 0, {"validation": 1})
    (data / "validation" / "contempt").mkdir()
    cv2.imwrite(str(data / "validation" / "contempt" / "c.png"), cv2.imread(str(data / "validation" / "disgust" / "0000.png")))
    model = tmp_path / "mapped.onnx"
    shutil.copy(bundled_model_path("fervid-compact"), model)
    card = json.loads(bundled_model_path("fervid-compact").with_suffix(".json").read_text())
    card["training"]["mapping"] = {"contempt": "disgust"}
    pytest.importorskip("onnx", reason="writing a model card into an ONNX file needs onnx (the 'train' extra)")
    from fervid.export.onnx import write_card

    write_card(model, card)
    result = fervid("evaluate", str(model), str(data), "--json", str(tmp_path / "m.json"))
    assert result.returncode == 0, result.stderr
    assert f"{data}: read with the model's training --map contempt=disgust (give your own to override)" in result.stderr
    assert json.loads((tmp_path / "m.json").read_text())["images"] == 8  # the contempt face counted as disgust
    plain = fervid("evaluate", "fervid-compact", str(data))
    assert plain.returncode == 2 and "contempt" in plain.stderr
    card["training"].update(mapping={}, unknown="drop")  # trained with --unknown drop: dropped here too, unless told
    write_card(model, card)
    dropped = fervid("evaluate", str(model), str(data), "--json", str(tmp_path / "m.json"))
    assert dropped.returncode == 0 and "read with the model's training --unknown drop" in dropped.stderr, dropped.stderr
    assert json.loads((tmp_path / "m.json").read_text())["images"] == 7
    told = fervid("evaluate", str(model), str(data), "--unknown", "error")
    assert told.returncode == 2 and "contempt" in told.stderr


def test_a_class_without_faces_in_the_split_is_named_not_shown_as_never_recognised(tmp_path):
    """Its confusion row was all 0.00, as a class the model never gets right looks, without a word."""
    import numpy as np

    from fervid.evaluation.plots import confusion_text

    data = write_folder_dataset(tmp_path / "data", 0, {"validation": 1})
    shutil.rmtree(data / "validation" / "fear")
    shutil.rmtree(data / "validation" / "disgust")
    result = fervid("evaluate", "fervid-compact", str(data), "--confusion", str(tmp_path / "c.png"))
    assert result.returncode == 0 and (tmp_path / "c.png").exists(), result.stderr
    assert f"{data}: no validation faces of disgust, fear: their recall is not measured (support 0 in the table)" in result.stderr
    whole = fervid("evaluate", "fervid-compact", str(write_folder_dataset(tmp_path / "all", 0, {"validation": 1})))
    assert whole.returncode == 0 and "recall is not measured" not in whole.stderr
    normalized = np.eye(7)
    normalized[2] = 0  # fear: no faces
    rows, cells = confusion_text(normalized)
    assert rows[2] == "fear (no faces)" and cells[2] == ["-"] * 7
    assert rows[1] == "disgust" and cells[1][1] == "1.00" and cells[1][0] == "0.00"


def test_evaluate_refuses_a_temperature_that_would_change_the_winning_class():
    """At T = 1e8 every tempered probability of a face rounds to 1/7 in float32 and accuracy fell
    from 62% to 22%; fitted temperatures lie in 0.25-4."""
    result = fervid("evaluate", "fervid-vgg", "data.zip", "--temperature", "1e8")
    assert result.returncode == 2 and "1e+08 is above the largest allowed, 100" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    blur = fervid("evaluate", "fervid-vgg", "data.zip", "--input-blur", "11")  # as the runtime's own bound, named as an option's
    assert blur.returncode == 2 and "Invalid value for '--input-blur': 11 is above the largest allowed, 10" in blur.stderr, blur.stderr
    from fervid.cli import MAX_INPUT_BLUR
    from fervid.preprocess import MAX_INPUT_BLUR as RUNTIME_MAX_INPUT_BLUR

    assert MAX_INPUT_BLUR == RUNTIME_MAX_INPUT_BLUR


def test_ctrl_c_while_the_cli_is_still_loading_is_one_line():
    """Loading typer and rich takes about 0.1 s; a Ctrl+C then printed a KeyboardInterrupt traceback
    through the import. The console script now catches it around that import."""
    from importlib.metadata import entry_points

    assert entry_points(group="console_scripts")["fervid"].value == "fervid.entry:main"
    interrupt_the_import = (
        "import sys, importlib.abc\n"
        "class Stop(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'fervid.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Stop())\n"
        "from fervid.entry import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", interrupt_the_import], capture_output=True, text=True, timeout=60)
    assert result.returncode == 130 and result.stderr == "fervid: interrupted\n", result.stderr


def test_ctrl_c_while_evaluate_writes_its_files_leaves_all_of_them_from_this_run(tmp_path):
    """Ctrl+C between the metrics and the predictions left a new metrics file beside an earlier
    run's predictions; now the files are finished first, then the run exits 130."""
    data = write_folder_dataset(tmp_path / "data", 0, {"train": 1, "validation": 2})
    (tmp_path / "faces.csv").write_text("an earlier run's predictions\n")
    interrupt_after_the_metrics = (
        "import os, signal, sys, time\n"
        "import fervid.fileio\n"
        "write = fervid.fileio.write_text_atomically\n"
        "def write_then_ctrl_c(target, text):\n"
        "    write(target, text)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.05)\n"
        "fervid.fileio.write_text_atomically = write_then_ctrl_c\n"
        "from fervid.cli import main\n"
        f"sys.argv = ['fervid', 'evaluate', 'fervid-compact', {str(data)!r}, '--json', {str(tmp_path / 'm.json')!r},\n"
        f"            '--predictions', {str(tmp_path / 'faces.csv')!r}]\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", interrupt_after_the_metrics], capture_output=True, text=True, timeout=300)
    assert result.returncode == 130 and result.stderr.strip().splitlines()[-1] == "fervid: interrupted", result.stderr
    assert f"predictions per face: {tmp_path / 'faces.csv'}" in result.stdout
    assert (tmp_path / "faces.csv").read_text().startswith("source,label,predicted")
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] >= 0


def test_one_line_escapes_what_breaks_a_line_and_keeps_what_reads_as_text():
    from fervid.console import one_line

    assert one_line("a\nb\u2028c\x85d\udce9e") == "a\\nb\\u2028c\\x85d\\udce9e"
    assert one_line("Ana\xa0Smith 👩\u200d💻 café.jpg") == "Ana\xa0Smith 👩\u200d💻 café.jpg"  # copied and pasted as they are


def test_tilde_outputs_of_inspect_and_evaluate_go_to_the_home_folder_where_they_were_checked(tmp_path):
    """`--grid=~/g.png` and `--json=~/m.json` (the shell leaves a ~ after '=' alone) were checked in
    the home folder and written in ./~/."""
    data = write_folder_dataset(tmp_path / "faces", 0, {"validation": 1})
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {**os.environ, "HOME": str(home)}
    for args in (["data", "inspect", str(data), "--grid=~/g.png"],
                 ["evaluate", "fervid-compact", str(data), "--json=~/m.json", "--predictions=~/p.csv"]):
        result = subprocess.run([sys.executable, "-m", "fervid", *args], capture_output=True, text=True, timeout=300, cwd=work,
                                env=env)
        assert result.returncode == 0, result.stderr
    assert (home / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy" in json.loads((home / "m.json").read_text()) and (home / "p.csv").stat().st_size > 0
    assert list(work.iterdir()) == [], "nothing in ./~"
