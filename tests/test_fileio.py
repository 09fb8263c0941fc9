"""Atomic writes, the base of every "never half-written" promise: a writer that fails leaves the old file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fervid.fileio import atomic_path, is_hidden, remove_temporaries, write_text_atomically, write_with


def test_a_failing_writer_leaves_the_old_file_as_it_was_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the old model")

    def half_then_crash(temporary: Path) -> None:
        temporary.write_bytes(b"half a new mod")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(target, half_then_crash)
    assert target.read_bytes() == b"the old model"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]


def test_a_successful_write_replaces_the_file_and_makes_its_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "run" / "report.md"
    write_text_atomically(target, "first")
    write_text_atomically(target, "second")
    assert target.read_text() == "second" and sorted(p.name for p in target.parent.iterdir()) == ["report.md"]


def test_the_temporary_sits_beside_the_target_with_its_suffix_and_a_folder_is_refused(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "best.weights.h5") as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith(".weights.h5") and not temporary.exists()
        temporary.write_bytes(b"w")  # Keras checks the suffix and refuses to overwrite: it gets a fresh name
    with pytest.raises(IsADirectoryError):
        with atomic_path(tmp_path):
            pass


def test_temporaries_left_by_a_killed_process_are_removed_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / ".model.abc123.tmp.onnx").write_bytes(b"half")
    (tmp_path / ".state.x.tmp.json").write_text("{")
    (tmp_path / "model.onnx").write_bytes(b"whole")
    (tmp_path / ".gitignore").write_text("*")
    assert remove_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gitignore", "model.onnx"]


@pytest.mark.parametrize(
    ("parts", "hidden"),
    [(("photos", "a.jpg"), False), (("photos", ".a.jpg"), True), ((".cache", "a.jpg"), True), (("__MACOSX", "x", "._a.jpg"), True)],
)
def test_hidden_paths(parts: tuple[str, ...], hidden: bool) -> None:
    assert is_hidden(parts) is hidden
