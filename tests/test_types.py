"""The type hints hold: mypy finds no error in the package (its settings in pyproject.toml)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_type_error_in_the_package(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api", reason="the type check needs the 'test' extra: pip install -e '.[test]'")
    # its cache in tmp_path: without --cache-dir mypy wrote 35 MB of .mypy_cache into the repository (even with --no-incremental)
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental",
                                      "--cache-dir", str(tmp_path / "mypy-cache"), str(ROOT / "src" / "fervid")])
    assert status == 0, stdout + stderr


USER_CODE = """
import numpy as np

import fervid
from fervid.analyze import AnalyzeOptions, analyze
from fervid.runtime.live import run_live

recognizer = fervid.Recognizer(min_size=np.int64(40), min_neighbors=np.int32(5), scale_factor=np.float32(1.1),
                               margin=np.float32(0.1), threads=np.int64(1), detection_width=np.int64(640),
                               flip_tta=np.bool_(True))
run_live("clip.mp4", recognizer, max_frames=np.int64(10), detect_every=np.int64(2), display=False)
options = AnalyzeOptions(every=np.int64(5), segment_s=np.float32(60), image_batch=np.int64(16), min_size=np.int64(30))
analyze(["photos"], "faces.parquet", options, ray_cpus=np.int64(2))
# boxes of NumPy numbers, as a detector gives them, and an image as nested lists of numbers
faces = recognizer.predict(np.zeros((64, 64), np.uint8), boxes=[tuple(np.array([1, 2, 30, 30]))])
faces += recognizer.predict([[0, 255], [255, 0]], boxes=[(0, 0, 2, 2)])
confidence: float = faces[0].to_dict()["confidence"]
"""


def test_numpy_numbers_pass_a_users_strict_type_check(tmp_path: Path) -> None:
    """The API takes NumPy numbers at run time (a size from an array's .max(), a float32 setting),
    but its hints said int and float: ``mypy --strict`` rejected code that runs. A wrong type is
    still an error."""
    api = pytest.importorskip("mypy.api", reason="the type check needs the 'test' extra: pip install -e '.[test]'")
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(USER_CODE)
    # read-only at run time (TypeError), so a type checker must refuse it too
    bad.write_text("import fervid\n\nfervid.Recognizer(min_size='40')\nfervid.Recognizer().predict('a.jpg')[0].probabilities['happy'] = 1.0\n")
    for path, passes in ((good, True), (bad, False)):
        stdout, stderr, status = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
                                          "--python-executable", sys.executable, str(path)])
        assert (status == 0) is passes, stdout + stderr
    assert 'Argument "min_size" to "Recognizer" has incompatible type "str"' in stdout
    assert 'Unsupported target for indexed assignment ("Mapping[str, float]")' in stdout
