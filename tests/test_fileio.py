"""Atomic writes, the base of every "never half-written" promise: a writer that fails leaves the old file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fervid.errors import FervidError
from fervid.fileio import atomic_path, check_writable, remove_temporaries, write_text_atomically


def test_a_failing_writer_leaves_the_old_file_as_it_was_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the old model")

    with pytest.raises(OSError, match="disk full"), atomic_path(target) as temporary:
        temporary.write_bytes(b"half a new mod")
        raise OSError("disk full")
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


def test_an_output_that_could_not_be_written_is_refused_before_the_work(tmp_path: Path) -> None:
    """A run writes its outputs last: a folder in the way, a file where a folder must be, or a folder
    that takes no files would otherwise fail only after the work, its results lost."""
    check_writable(tmp_path / "new" / "metrics.json")  # missing folders are fine: they are made when written
    assert not (tmp_path / "new").exists()
    (tmp_path / "taken.json").mkdir()
    with pytest.raises(FervidError, match=r"--json .*taken.json: a folder, not a file"):
        check_writable(tmp_path / "taken.json", "--json")
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(FervidError, match=r"photo.jpg is a file, not a folder"):
        check_writable(tmp_path / "photo.jpg" / "m.json")
    with pytest.raises(FervidError, match=r"/proc/m.json: cannot write in /proc \(files cannot be created there\)"):  # even as root
        check_writable("/proc/m.json")
    check_writable(tmp_path / ("é" * 125 + ".png"))  # 255 bytes: the longest name taken
    with pytest.raises(FervidError, match=r"--grid .*-samples.png: a file name over 255 bytes"):  # a default after a long folder name
        check_writable(tmp_path / ("d" * 248 + "-samples.png"), "--grid")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["photo.jpg", "taken.json"]


def test_a_failed_write_names_the_users_path_not_the_temporary(tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(NotADirectoryError) as error:
        write_text_atomically(tmp_path / "photo.jpg" / "m.json", "{}")
    assert error.value.filename == str(tmp_path / "photo.jpg" / "m.json") and "photo.jpg is a file" in error.value.strerror
    with pytest.raises(OSError) as error:
        write_text_atomically("/proc/m.json", "{}")
    assert error.value.filename == "/proc/m.json"


def test_a_long_legal_name_is_written(tmp_path: Path) -> None:
    """The temporary name adds a random part and '.tmp' to the stem: it is cut so the longest legal
    name (255 bytes) still gets a temporary beside it."""
    for stem in ("a" * 250, "é" * 125):
        target = tmp_path / f"{stem}.png"
        write_text_atomically(target, "grid")
        assert target.read_text() == "grid"


def test_an_output_onto_a_training_runs_own_files_is_refused_except_its_own_export(tmp_path: Path) -> None:
    """evaluate --json RUN/model.keras replaced the trained model; export --out OTHER/config.onnx put
    its card over another run's config.json."""
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    for name in ("model.keras", "config.json", "model.json", "report.md", "checkpoint/state.json", "checkpoint/teacher.npz"):
        with pytest.raises(FervidError, match=f"^--json {run / name}: is {name} of the training run {run}, which this output"):
            check_writable(run / name, "--json")
    check_writable(run / "scores.json", "--json")  # a new file beside the run's is the user's to write
    check_writable(run / "model.onnx", "--out", own_run=run)  # `fervid export RUN` rewrites its own model and card
    check_writable(run / "model.json", "--out", own_run=run)
    with pytest.raises(FervidError, match="is model.onnx of the training run"):
        check_writable(run / "model.onnx", "--out", own_run=tmp_path / "another-run")
    (tmp_path / "plain").mkdir()
    check_writable(tmp_path / "plain" / "config.json", "--json")  # no run there: an ordinary folder
    with pytest.raises(FervidError, match=r"is \.lock of the training run"):  # replaced, a second process could train it
        check_writable(run / ".lock", "--json")
    project = tmp_path / "project"  # a Keras project's config.json and CSVLogger history: not a fervid run
    project.mkdir()
    (project / "config.json").write_text("{}")
    (project / "history.csv").write_text("epoch\n")
    check_writable(project / "report.md", "--json")
    finished = tmp_path / "finished"  # its checkpoint/ deleted once done, as the docs allow: still a run
    finished.mkdir()
    (finished / "config.json").write_text("{}")
    (finished / "model.keras").write_bytes(b"model")
    with pytest.raises(FervidError, match="is model.json of the training run"):
        check_writable(finished / "model.json", "--json")


def test_signals_held_back_are_reported_and_raised_only_when_asked():
    import os
    import signal
    import time

    from fervid.fileio import signals_deferred

    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or a handler an earlier test's library set
    with signals_deferred(raise_after=False) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # delivered here, held back
    assert caught == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before  # handlers as they were
    with signals_deferred() as caught:
        pass
    assert caught == []
    finished = []
    with pytest.raises(KeyboardInterrupt):  # the default: the block ends, then the program stops
        with signals_deferred() as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            finished.append("the block ran to its end")
    assert caught == [signal.SIGTERM] and finished == ["the block ran to its end"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_atomic_write_keeps_the_files_permissions_and_never_writes_through_a_symlink(tmp_path: Path) -> None:
    """A 664 page came back 644. A symlink is replaced, its target left alone: written through, a run
    folder linked to another run's files (cp -rs) would overwrite that run's checkpoints."""
    from fervid.fileio import write_text_atomically

    page = tmp_path / "pages" / "performance.md"
    page.parent.mkdir()
    page.write_text("old")
    page.chmod(0o664)
    write_text_atomically(page, "new")
    assert page.read_text() == "new" and page.stat().st_mode & 0o777 == 0o664
    other_run = tmp_path / "other" / "state.json"
    other_run.parent.mkdir()
    other_run.write_text("theirs")
    link = tmp_path / "state.json"
    link.symlink_to(other_run)
    write_text_atomically(link, "mine")
    assert not link.is_symlink() and link.read_text() == "mine" and other_run.read_text() == "theirs"


def test_an_output_that_is_a_device_or_pipe_is_refused_not_replaced(tmp_path: Path) -> None:
    """As root, `-o /dev/null` would have replaced the device with a regular file."""
    import os

    from fervid.errors import FervidError
    from fervid.fileio import check_writable, write_text_atomically

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(FervidError, match=r"^--json .*pipe: not a regular file \(a device, pipe or socket\)"):
        check_writable(pipe, "--json")
    with pytest.raises(OSError, match="not a regular file"):
        write_text_atomically(pipe, "text")
    assert pipe.exists() and not pipe.is_file()


def test_an_atomic_write_is_flushed_to_disk_before_it_is_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power loss after the rename left empty files (an analysis part that stopped every rerun): the
    data is flushed first, through a handle open for writing (Windows flushes no other), and a file
    system that cannot flush still gets the file."""
    import errno
    import os

    from fervid import fileio

    flushed: list[str] = []

    def fsync(handle: int) -> None:
        import fcntl

        flushed.append(os.readlink(f"/proc/self/fd/{handle}"))
        assert os.stat(handle).st_size == len("data"), "the whole text is written before the flush"
        assert fcntl.fcntl(handle, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    fileio.write_text_atomically(tmp_path / "a.txt", "data")
    assert len(flushed) == 1 and Path(flushed[0]).parent == tmp_path and Path(flushed[0]).name.startswith(".a.")

    def unsupported(handle: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(fileio.os, "fsync", unsupported)
    fileio.write_text_atomically(tmp_path / "b.txt", "more")
    assert (tmp_path / "b.txt").read_text() == "more"
    real_open = os.open  # a temporary its writer made read-only (umask 0222), for a user other than root

    def read_only(path, flags, *args):
        if flags & os.O_ACCMODE == os.O_RDWR and not flags & os.O_CREAT:  # the flush's open, not mkstemp's
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(fileio.os, "open", read_only)
    fileio.write_text_atomically(tmp_path / "c.txt", "read-only")
    assert (tmp_path / "c.txt").read_text() == "read-only"


def test_a_symlink_loop_as_an_output_is_one_line_not_a_runtime_error(tmp_path: Path) -> None:
    """Path.resolve() raised RuntimeError("Symlink loop ...") on `--json l1.json` (l1 -> l2 -> l1)
    and on `--out od1` (od1 -> od2 -> od1): a traceback in the CLI."""
    from fervid.fileio import check_not_an_input, check_writable_folder

    (tmp_path / "l1.json").symlink_to("l2.json")
    (tmp_path / "l2.json").symlink_to("l1.json")
    (tmp_path / "od1").symlink_to("od2")
    (tmp_path / "od2").symlink_to("od1")
    loop = r"a symlink loop \(links that lead back to each other, never to a file or folder\); give another path"
    with pytest.raises(FervidError, match=rf"^--json .*l1.json: {loop}$"):
        check_writable(tmp_path / "l1.json", "--json")
    with pytest.raises(FervidError, match=rf"^--json .*l1.json: {loop}$"):
        check_not_an_input(tmp_path / "l1.json", "--json", {"the model": None})
    with pytest.raises(FervidError, match=rf"^--out .*od1: {loop}$"):
        check_writable_folder(tmp_path / "od1", "--out")
    with pytest.raises(FervidError, match=rf"^--json .*od1/faces.json: {loop}$"):
        check_writable(tmp_path / "od1" / "faces.json", "--json")


def test_an_output_below_a_symlink_to_nothing_is_refused_naming_the_link(tmp_path: Path) -> None:
    """`--json dl/faces.json` with dl -> /not_mounted/out passed the checks (dl does not "exist") and
    failed after every photo with "File exists", the records lost."""
    from fervid.fileio import check_writable_folder

    (tmp_path / "dl").symlink_to(tmp_path / "not_mounted" / "out")
    named = rf"dl is a symlink to {tmp_path}/not_mounted/out, which does not exist \(not mounted\?\)"
    with pytest.raises(FervidError, match=rf"^--json .*dl/faces.json: .*{named}; make its target, or write the output elsewhere"):
        check_writable(tmp_path / "dl" / "faces.json", "--json")
    with pytest.raises(FervidError, match=rf"^--out .*dl/ann: .*{named}"):
        check_writable_folder(tmp_path / "dl" / "ann", "--out")
    with pytest.raises(FileExistsError, match="which does not exist") as error:  # the write itself names the user's path
        write_text_atomically(tmp_path / "dl" / "faces.json", "[]")
    assert error.value.filename == str(tmp_path / "dl" / "faces.json")
    assert not (tmp_path / "not_mounted").exists()


def test_a_long_legal_name_whose_suffix_is_most_of_it_is_written(tmp_path: Path) -> None:
    """`--json faces.xxx...` (255 bytes, the suffix 241 of them) passed the check, then failed at the
    end: the temporary carried the whole suffix after its random part and '.tmp'."""
    for name in ("faces." + "x" * 249, "f." + "é" * 126, "." + "y" * 254):
        assert len(name.encode()) <= 255
        check_writable(tmp_path / name, "--json")
        write_text_atomically(tmp_path / name, "[]")
        assert (tmp_path / name).read_text() == "[]"
    assert remove_temporaries(tmp_path) == 0


def test_another_users_file_in_a_sticky_folder_is_refused_before_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of someone else's in /tmp (mode 1777), writable by all, passed the check; the rename that
    replaces it then failed at the end of the run ("Operation not permitted")."""
    import os

    sticky = tmp_path / "shared"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "faces.json").write_text("theirs")
    (sticky / "faces.json").chmod(0o666)
    owner = (sticky / "faces.json").stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)  # another user, who owns neither the file nor the folder
    with pytest.raises(FervidError, match=r"^--json .*faces.json: belongs to another user, in the sticky folder .*shared"):
        check_writable(sticky / "faces.json", "--json")
    check_writable(sticky / "new.json", "--json")  # a new file may be made there
    sticky.chmod(0o777)  # not sticky: anyone who may write in the folder may replace the file
    check_writable(sticky / "faces.json", "--json")
    sticky.chmod(0o1777)
    monkeypatch.setattr(os, "geteuid", lambda: owner)  # the owner may
    check_writable(sticky / "faces.json", "--json")
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # and so may root
    check_writable(sticky / "faces.json", "--json")


def test_a_tilde_output_is_written_in_the_home_folder_where_it_was_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--json=~/m.json` (the shell leaves a ~ after '=' alone) was checked in the home folder and
    written in ./~/m.json."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    check_writable("~/m.json", "--json")
    write_text_atomically("~/m.json", "{}")
    assert (home / "m.json").read_text() == "{}" and not (work / "~").exists()


def test_a_file_that_cannot_be_moved_into_place_is_named_and_kept_when_it_cannot_be_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder made read-only during a run: the move failed, then removing the temporary failed too,
    and that second error (naming the hidden temporary) replaced the first; a finished recording
    sat in `.out.x.tmp.mp4` and nothing said so."""
    import errno
    import os

    import fervid.fileio as fileio

    def refused(*args: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "replace", lambda source, target: refused(source, target))
    unlink = Path.unlink
    def written_stays(self: Path, missing_ok: bool = False) -> None:  # mkstemp's empty file may go
        if ".tmp" in self.name and self.is_file() and self.stat().st_size:
            refused()
        unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", written_stays)
    target = tmp_path / "out.mp4"
    with pytest.raises(PermissionError) as raised:
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"a finished recording")
    left = [path for path in tmp_path.iterdir() if path.name.startswith(".out.")]
    assert raised.value.filename == str(target) and len(left) == 1 and left[0].read_bytes() == b"a finished recording"
    assert raised.value.strerror == f"Operation not permitted; the finished file is left as {left[0]}"
    monkeypatch.setattr(Path, "unlink", unlink)  # removable: removed, and the error says only what failed
    with pytest.raises(PermissionError) as again:
        with atomic_path(tmp_path / "b.mp4") as temporary:
            temporary.write_bytes(b"x")
    assert again.value.strerror == "Operation not permitted" and again.value.filename == str(tmp_path / "b.mp4")
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".b.")] and not os.path.exists(tmp_path / "b.mp4")


def test_signals_deferred_holds_a_hang_up_unless_it_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hang-up during the finishing of outputs killed the process between them; under nohup
    (SIGHUP ignored) it stays ignored."""
    import os
    import signal

    from fervid import fileio
    from fervid.fileio import signals_deferred

    left: list[bool] = []
    monkeypatch.setattr(fileio, "leave_closed_terminal", lambda: left.append(True))
    before = signal.getsignal(signal.SIGHUP)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with signals_deferred(raise_after=False) as caught:
            os.kill(os.getpid(), signal.SIGHUP)
        assert caught == [signal.SIGHUP] and left == [True]
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with signals_deferred(raise_after=False) as caught:
            os.kill(os.getpid(), signal.SIGHUP)
        assert caught == [] and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
