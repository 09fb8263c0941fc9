"""The type hints hold: mypy finds no error in the package (its settings in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_type_error_in_the_package() -> None:
    api = pytest.importorskip("mypy.api", reason="the type check needs the 'test' extra: pip install -e '.[test]'")
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", str(ROOT / "src" / "fervid")])
    assert status == 0, stdout + stderr
