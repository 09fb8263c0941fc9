"""The maintainer scripts in tools/: their argument checks and the bookkeeping of tools/device/ around a
GPU call, run without a GPU, training or network (commands that would do real work are fakes on PATH)."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def fakes(folder: Path, log: Path, **bodies: str) -> str:
    """A PATH whose first folder holds these commands: each logs its arguments to ``log``, then runs its body."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in bodies.items():
        script = folder / name
        script.write_text(f'#!/bin/bash\necho "{name} $*" >> "{log}"\n{body}\n')
        script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True)


def checkout(tmp_path: Path) -> Path:
    """A git repository holding the device scripts and two tracked teachers, as the scripts find the real one:
    they cd to their checkout and restore or remove its files, which must not be /work/main's."""
    repo = tmp_path / "repo"
    (repo / "tools" / "teachers").mkdir(parents=True)
    shutil.copytree(TOOLS / "device", repo / "tools" / "device")
    for name in ("README.md", "a.onnx", "b.onnx"):
        (repo / "tools" / "teachers" / name).write_text(name)
    (repo / "src").mkdir()
    (repo / "src" / "m.onnx").write_text("bundled")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "tree")
    return repo


# --- tools/device/finish.sh ---------------------------------------------------------------------------


def run_archive(pieces: Path, name: str, files: dict[str, str], cut: int | None = None) -> None:
    """``name``.tgz.aa (and .ab when ``cut`` splits it there), as train.sh packs a run."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(path)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    data = buffer.getvalue()
    cut = len(data) if cut is None else cut
    (pieces / f"{name}.tgz.aa").write_bytes(data[:cut])
    if cut < len(data):
        (pieces / f"{name}.tgz.ab").write_bytes(data[cut:])


def run_files(epochs: int, done: int | None, best: int = 1, patience: int = 0, last: bool = False) -> dict[str, str]:
    files = {"config.json": json.dumps({"epochs": epochs, "patience": patience})}
    if done is not None:
        files["checkpoint/state.json"] = json.dumps({"epochs_done": done, "best_epoch": best, "best_val_accuracy": 0.5, "history": []})
        files["checkpoint/best.weights.h5"] = "best"
    if last:
        files["checkpoint/last.weights.h5"] = "last"
    return files


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_finish_refuses_a_folder_without_run_archives(tmp_path, folder):
    """A wrong folder once made runs/* (the unmatched pattern taken as a run's name) and exited 0."""
    repo = checkout(tmp_path)
    pieces = tmp_path / "device-out"
    if folder == "empty":
        pieces.mkdir()
    zip_path = tmp_path / "fer2013.zip"
    zip_path.write_bytes(b"zip")
    result = run(["bash", str(repo / "tools/device/finish.sh"), str(pieces)], tmp_path, ZIP=str(zip_path))
    assert result.returncode != 0
    assert f"no run archives in {pieces}" in result.stderr
    assert not (repo / "runs").exists()


def test_finish_unpacks_whole_runs_finishes_ended_ones_and_says_how_to_resume_the_rest(tmp_path):
    """Each run lands in runs/ whole or not at all; a run whose first piece is missing, whose archive
    is cut, or that finished no epoch is named, not passed over in silence; a cut-short run gets the
    teachers' caches and its resume command; a run stopped early by --patience is finished, and the
    resume is given the dataset. The teachers prepare.sh deleted come back; edits to them stay."""
    repo = checkout(tmp_path)
    (repo / "tools/teachers/b.onnx").unlink()
    (repo / "tools/teachers/README.md").write_text("edited")
    (repo / ".gpu/teacher/checkpoint").mkdir(parents=True)
    (repo / ".gpu/teacher/checkpoint/teacher.npz").write_text("cache")
    pieces = tmp_path / "device-out"
    pieces.mkdir()
    run_archive(pieces, "ended", run_files(3, 3), cut=40)
    run_archive(pieces, "patient", run_files(10, 6, best=3, patience=3))
    run_archive(pieces, "cut", run_files(10, 4, best=4, last=True))
    run_archive(pieces, "cutbare", run_files(10, 4, best=4))  # its last checkpoint had no room in the call
    run_archive(pieces, "unstarted", run_files(10, None))
    run_archive(pieces, "headless", run_files(3, 3), cut=40)
    (pieces / "headless.tgz.aa").unlink()
    run_archive(pieces, "broken", run_files(3, 3), cut=60)
    (pieces / "broken.tgz.ab").unlink()
    (pieces / "cut.log").write_text("a log beside the pieces")
    zip_path = tmp_path / "fer2013.zip"
    zip_path.write_bytes(b"zip")
    log = tmp_path / "calls.log"
    path = fakes(tmp_path / "bin", log, fervid="exit 0")

    result = run(["bash", str(repo / "tools/device/finish.sh"), str(pieces)], tmp_path, ZIP=str(zip_path), PATH=path)
    assert result.returncode == 1, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    for name in ("ended", "patient"):
        assert f"fervid train {zip_path} --resume --out runs/{name}" in calls
        assert f"fervid export runs/{name}/model.keras --int8 {zip_path} --out runs/{name}/{name}.onnx" in calls
    assert len(calls) == 6, "only the two runs that ended are finished"
    assert (repo / "runs/ended/checkpoint/best.weights.h5").read_text() == "best", "both pieces were joined"
    assert f"cut: cut short after epoch 4 of 10; to finish it (hours on this CPU): fervid train {zip_path} --resume --out {repo}/runs/cut" in result.stdout
    assert (repo / "runs/cut/checkpoint/teacher.npz").read_text() == "cache"
    assert "cutbare: cut short after epoch 4 of 10, without its last checkpoint: it cannot be resumed" in result.stdout
    assert "unstarted: no epoch finished on the device" in result.stdout
    assert "headless: its first piece (headless.tgz.aa) did not come back" in result.stdout
    assert "broken: its archive is damaged or incomplete" in result.stdout
    assert sorted(p.name for p in (repo / "runs").iterdir()) == ["cut", "cutbare", "ended", "patient", "unstarted"], "nothing half-unpacked"
    assert (repo / "tools/teachers/b.onnx").read_text() == "b.onnx"
    assert (repo / "tools/teachers/README.md").read_text() == "edited"


# --- tools/device/train.sh ----------------------------------------------------------------------------


@pytest.fixture
def device(tmp_path):
    """train.sh's surroundings with fakes for the GPU, the Python there and `timeout` (which would start
    `fervid train`): FAKE_RC is the training's status, FAKE_RUN=1 leaves a run folder as a cut-short run."""
    log = tmp_path / "calls.log"
    path = fakes(tmp_path / "bin", log, python3="exit 0", **{"nvidia-smi": "exit 0"}, sleep="exit 0", timeout="""
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
if [ -n "${FAKE_RUN:-}" ]; then
  mkdir -p "$out/checkpoint" && echo '{}' > "$out/config.json" && echo '{}' > "$out/checkpoint/state.json"
  echo best > "$out/checkpoint/best.weights.h5" && echo last > "$out/checkpoint/last.weights.h5"
fi
exit "${FAKE_RC:-0}"
""")
    (tmp_path / "out").mkdir()
    data = tmp_path / "fer2013.zip"
    data.write_bytes(b"zip")
    name = f"t{uuid.uuid4().hex[:8]}"  # its run folder is /tmp/fervid-NAME, as on the device
    yield {"cwd": tmp_path, "log": log, "name": name, "env": {"PATH": path, "OUT": str(tmp_path / "out"), "DATA": str(data)}}
    for left in Path("/tmp").glob(f"fervid-{name}*"):  # its folder and archive, a second run's ({name}b)
        shutil.rmtree(left) if left.is_dir() else left.unlink()


def train(device: dict, runs: str, **env: str) -> subprocess.CompletedProcess:
    return run(["bash", str(TOOLS / "device/train.sh")], device["cwd"], RUNS=runs, **device["env"], **env)


@pytest.mark.parametrize("runs, said", [
    ("{n} vgg each", "give NAME ARCH WARP WEIGHT_DECAY"),
    ("{n} vgg each 5e-4 10 kvd", "not 'kvd'"),
    ("{n} vgg each 5e-4 10 kd", "needs .gpu/teacher/teachers.txt"),
    ("{n} vgg each 5e-4 10;{n}b vgg each 5e-4 10 kdv", "needs .gpu/teacher/checkpoint/teacher-views.npz"),
])
def test_train_checks_every_run_before_it_starts_any(device, runs, said):
    """A bad run found after the first had started in the background left that one training, unseen,
    and an unknown distillation field trained without teachers."""
    (device["cwd"] / ".gpu/teacher/checkpoint").mkdir(parents=True)
    if "kdv" in runs:
        (device["cwd"] / ".gpu/teacher/teachers.txt").write_text("t.onnx\n")
    result = train(device, runs.format(n=device["name"]))
    assert result.returncode != 0
    assert said in result.stderr
    assert not device["log"].exists(), "nothing ran, the GPU's Python included"


def test_train_starts_no_run_without_budget_and_fails_when_a_run_fails(device):
    """`timeout 0` means no limit; and a failed run made the call exit 0 all the same."""
    result = train(device, f"{device['name']} vgg each 5e-4 10", BUDGET="0")
    assert result.returncode == 1
    assert "not started, nothing left of BUDGET=0 s" in result.stdout
    assert "timeout" not in device["log"].read_text()
    result = train(device, f"{device['name']} vgg each 5e-4 10", FAKE_RC="1")
    assert result.returncode == 1
    assert "timeout -k 15 " in device["log"].read_text()


@pytest.mark.parametrize("full", ["nothing", "files", "bytes"])
def test_train_packs_a_cut_short_runs_last_checkpoint_only_where_it_fits(device, full):
    """The call returns 64 MiB in 8 files at most: the last checkpoint (59 MB for vgg-large) was packed
    whenever under 20 MB had come back before, whatever its size and the number of files."""
    out = device["cwd"] / "out"
    if full == "files":  # with the run's log and one piece, 9 files
        for index in range(7):
            (out / f"other-{index}.log").write_text("log")
    if full == "bytes":  # sparse: 60 MiB as the call counts it, nothing on the disk
        with open(out / "other.tgz.aa", "wb") as handle:
            handle.truncate(60 * 1024 * 1024 - 1)
    result = train(device, f"{device['name']} vgg each 5e-4 10", FAKE_RUN="1", FAKE_RC="124")
    pieces = sorted(out.glob(f"fervid-{device['name']}.tgz.*"))
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in pieces))) as archive:
        packed = archive.getnames()
    assert "checkpoint/best.weights.h5" in packed
    assert ("checkpoint/last.weights.h5" in packed) == (full == "nothing")
    assert ("packed without it" in result.stdout) == (full != "nothing")
    assert result.returncode == 1, "cut short: not finished"


# --- tools/device/prepare.sh --------------------------------------------------------------------------


PREPARE_FAKES = {  # pip, the teachers' scoring and the size count are python3; .gz.tmp: the zip's member order
    "python3": 'for a; do case $a in *.gz.tmp) : > "$a" ;; esac; done; echo 0',
    "unzip": "exit 0",
    "xz": "cat > /dev/null",
}


@pytest.mark.parametrize("views, zip_name, said", [
    ("eight", "fer2013.zip", "TEACHER_VIEWS=eight: give a whole number"),
    ("-1", "fer2013.zip", "TEACHER_VIEWS=-1: give a whole number"),
    ("65", "fer2013.zip", "TEACHER_VIEWS=65: give a whole number"),
    ("8", "missing.zip", "missing.zip: no such file"),
])
def test_prepare_checks_views_and_zip_before_writing_anything(tmp_path, views, zip_name, said):
    """A views count that is not one skipped the views in silence, after half an hour of scoring the
    teachers; a wrong zip path truncated .gpu/order.txt.gz before failing with a traceback."""
    repo = checkout(tmp_path)
    (tmp_path / "fer2013.zip").write_bytes(b"zip")
    log = tmp_path / "calls.log"
    path = fakes(tmp_path / "bin", log, **PREPARE_FAKES)
    result = run(["bash", str(repo / "tools/device/prepare.sh"), str(tmp_path / zip_name)], repo, TEACHER_VIEWS=views, PATH=path)
    assert result.returncode != 0
    assert said in result.stderr
    assert not (repo / ".gpu").exists()
    assert not log.exists(), "no download, no scoring"


def test_prepare_views_limit_is_fervids():
    """prepare.sh checks TEACHER_VIEWS against fervid train's own limit, so that a count it accepts trains."""
    from fervid.training.config import MAX_TEACHER_VIEWS

    assert re.search(r"^MAX_VIEWS=(\d+)", (TOOLS / "device/prepare.sh").read_text(), re.MULTILINE)[1] == str(MAX_TEACHER_VIEWS)


def test_prepare_takes_the_zip_from_where_it_starts_and_moves_only_tools_teachers(tmp_path):
    """A relative zip path was read after the cd into the checkout; any tracked teacher was deleted, a
    bundled model too, and a second run lacked the teachers the first had deleted; with no views, the
    last run's views still travelled."""
    repo = checkout(tmp_path)
    (repo / "tools/teachers/b.onnx").unlink()  # an earlier prepare.sh took it out
    (repo / ".gpu/teacher/checkpoint").mkdir(parents=True)
    (repo / ".gpu/teacher/checkpoint/teacher-views.npz").write_text("stale")
    (tmp_path / "data").mkdir()
    (tmp_path / "data/fer2013.zip").write_bytes(b"zip")
    log = tmp_path / "calls.log"
    path = fakes(tmp_path / "bin", log, **PREPARE_FAKES)
    teachers = f"{repo}/tools/teachers/a.onnx {repo}/tools/teachers/b.onnx {repo}/src/m.onnx"
    result = run(["bash", "../tools/device/prepare.sh", "../../data/fer2013.zip"], repo / "src",
                 TEACHER_VIEWS="0", TEACHERS=teachers, PATH=path)
    assert result.returncode == 0, result.stdout + result.stderr
    order = next(call for call in log.read_text().splitlines() if "order.txt.gz" in call)
    assert order.endswith(f" {tmp_path}/data/fer2013.zip .gpu/order.txt.gz.tmp"), "the member order read from the zip given"
    assert f"{repo}/tools/teachers/b.onnx left the work tree" in result.stdout, "restored for the scoring, then taken out"
    assert not (repo / "tools/teachers/a.onnx").exists() and not (repo / "tools/teachers/b.onnx").exists()
    assert (repo / "src/m.onnx").read_text() == "bundled"
    assert not (repo / ".gpu/teacher/checkpoint/teacher-views.npz").exists()


# --- tools/device/make_zip.py -------------------------------------------------------------------------


def test_make_zip_checks_its_arguments_and_writes_the_zip_whole_or_not_at_all(tmp_path):
    """A missing argument was an IndexError; a member missing midway left a partial zip that the next
    train.sh took as the dataset (it rebuilds the zip only when there is none)."""
    script = str(TOOLS / "device/make_zip.py")
    result = run([sys.executable, script, str(tmp_path)], tmp_path)
    assert result.returncode == 2 and "usage:" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "tree/train").mkdir(parents=True)
    (tmp_path / "tree/train/a.png").write_bytes(b"a")
    (tmp_path / "tree/train/b.png").write_bytes(b"b")
    order = tmp_path / "order.txt.gz"
    order.write_bytes(gzip.compress(b"train/b.png\ntrain/missing.png\n"))
    target = tmp_path / "zips/fer2013.zip"
    target.parent.mkdir()
    assert run([sys.executable, script, str(tmp_path / "tree"), str(order), str(target)], tmp_path).returncode != 0
    assert list(target.parent.iterdir()) == []
    order.write_bytes(gzip.compress(b"train/b.png\ntrain/a.png\n"))
    result = run([sys.executable, script, str(tmp_path / "tree"), str(order), str(target)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert zipfile.ZipFile(target).namelist() == ["train/b.png", "train/a.png"]
    assert list(target.parent.iterdir()) == [target]


# --- the Python tools ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script, args, said", [
    ("teacher_consistency.py", [], "usage: python tools/teacher_consistency.py DATA TEACHER"),
    ("teacher_consistency.py", ["data.zip"], "usage: python tools/teacher_consistency.py DATA TEACHER"),
    ("tta_views.py", ["fervid-vgg"], "usage: python tools/tta_views.py MODEL DATA"),
    ("tta_views.py", ["fervid-vgg", "missing.zip"], "missing.zip: no such file"),
    ("model_doc.py", [], "usage: python tools/model_doc.py RUN CARD EVALUATION"),
    ("model_doc.py", ["run", "card.json", "int8.json"], "No such file or directory: 'run/metrics.json'"),
    ("match_blur.py", [], "usage: match_blur.py [-h] [--force] MODEL DATA"),
    ("match_blur.py", ["fervid-vgg", "missing.zip"], "fervid-vgg: not an .onnx file"),
])
def test_python_tools_answer_bad_arguments_in_one_line(tmp_path, script, args, said):
    """Missing or wrong arguments gave tracebacks (IndexError, ZeroDivisionError, TypeError,
    FileNotFoundError), or, for match_blur.py given a bundled name, a crash after minutes of work."""
    result = run([sys.executable, str(TOOLS / script), *args], tmp_path)
    assert result.returncode == 2
    assert said in result.stderr
    assert "Traceback" not in result.stderr


def test_match_blur_leaves_a_card_that_has_its_blur(tmp_path):
    """Run again on a model that has its input blur (the shipped one), it measured and rewrote it."""
    model = tmp_path / "fervid-vgg.onnx"
    shutil.copy(ROOT / "src/fervid/models/fervid-vgg.onnx", model)
    result = run([sys.executable, str(TOOLS / "match_blur.py"), str(model), str(tmp_path / "missing.zip")], tmp_path)
    assert result.returncode == 2
    assert "its card already has inference.input_blur" in result.stderr and "--force" in result.stderr
    assert model.read_bytes() == (ROOT / "src/fervid/models/fervid-vgg.onnx").read_bytes()


def test_make_vfr_clip_without_pyav_says_how_to_get_it(tmp_path):
    """PyAV is no fervid dependency: its absence was a traceback. (Hidden here, so that the clips in
    tests/data are never rewritten where it is installed.)"""
    hide_av = "import runpy, sys; sys.modules['av'] = None; runpy.run_path(sys.argv[1], run_name='__main__')"
    result = run([sys.executable, "-c", hide_av, str(TOOLS / "make_vfr_clip.py")], tmp_path)
    assert result.returncode != 0
    assert "pip install av" in result.stderr and "Traceback" not in result.stderr
