"""The real FER2013 zip from ../shared/data (path in FERVID_FER2013_ZIP, set by .ci/run)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fervid.data import load_arrays, read_dataset

ZIP = os.environ.get("FERVID_FER2013_ZIP", "")
needs_fer2013 = pytest.mark.skipif(
    not Path(ZIP).is_file(), reason="FER2013 not available: set FERVID_FER2013_ZIP to ../shared/data/fer2013.zip"
)

# From ../shared/data/README.md: the official Training and PublicTest splits.
EXPECTED = {
    "train": {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830, "surprise": 3171},
    "validation": {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "neutral": 607, "sad": 653, "surprise": 415},
}


@needs_fer2013
def test_fer2013_zip_has_the_official_counts():
    index = read_dataset(ZIP)
    assert index.kind == "zip" and index.splits == ["train", "validation"]
    assert {split: column.to_dict() for split, column in index.counts().items()} == EXPECTED
    validation = load_arrays(index, "validation")
    assert len(validation) == 3589 and not validation.failed
    assert validation.images.shape == (3589, 48, 48)


@needs_fer2013
def test_inspect_command_on_fer2013(tmp_path):
    grid = tmp_path / "grid.png"
    result = subprocess.run([sys.executable, "-m", "fervid", "data", "inspect", ZIP, "--grid", str(grid)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "28,709" in result.stdout and "3,589" in result.stdout and "7,215" in result.stdout
    assert "16.5x" in result.stdout  # happy 8,110 / disgust 492
    assert grid.stat().st_size > 10_000
