"""Outputs: refuse one that could not be written before the work, then write it atomically, so a
crash or a full disk never leaves a half-written model, table or report."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from fervid.errors import FervidError

TEMPORARY_STEM_BYTES = 64
TEMPORARY_RANDOM_BYTES = 8  # what mkstemp puts between a temporary's prefix and suffix


def file_in_the_way(target: str | Path) -> Path | None:
    """The file standing where a folder of ``target``'s path must be (``photo.png/out.mp4``), else None.

    Its folder could not be made, and the write would fail only when the output is written: at the
    end of a run, its results lost. Callers refuse such a path before the first frame or photo.
    """
    for parent in Path(target).expanduser().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


# What a training run writes into its folder, besides checkpoint/ (its resume state).
RUN_OUTPUTS = ("config.json", "history.csv", "model.keras", "model.onnx", "model.json", "metrics.json", "report.md",
               "curves.png", "confusion.png", "checkpoint/best.weights.h5", "checkpoint/last.weights.h5",
               "model.int8.onnx", "model.int8.json")  # the last two: export --int8's default, in the run
EXPORTS = ("model.onnx", "model.json", "model.int8.onnx", "model.int8.json")  # what export writes into its own run
RUN_LOCK = ".lock"  # fervid.training.lock.LOCK_FILE: replaced, a second process could train the run beside the first


NAME_BYTES = 255  # the longest file name, in bytes, of Linux and macOS file systems (Windows counts UTF-16 units)


def cut_to_bytes(text: str, limit: int) -> str:
    """``text`` as the file system stores it, cut to ``limit`` bytes: at a character when it is
    UTF-8, else byte for byte (a name that is not UTF-8 reaches Python with surrogate escapes)."""
    raw = os.fsencode(text)
    if len(raw) <= limit:
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return os.fsdecode(raw[:limit])
    return raw[:limit].decode(errors="ignore")


def check_writable(target: str | Path, option: str = "", *, own_run: Path | None = None) -> None:
    """Refuse now an output that could only fail when it is written, at the end of a run, its results
    lost: a folder in its place, a file where one of its folders must be, or a folder it cannot be
    written in (read-only, no permission); or one that would replace a training run's own file
    (``check_not_a_run_file``). Its folders are not created yet. ``option`` (``--json``) names it in
    the message."""
    target = Path(target).expanduser()
    name = f"{option} {target}" if option else str(target)
    if os.name == "posix" and len(os.fsencode(target.name)) > NAME_BYTES:  # a default named after a long input
        raise FervidError(f"{name}: a file name over {NAME_BYTES} bytes, longer than file systems take; give a shorter one")
    refuse_symlink_loop(target, name)
    if target.is_dir():
        raise FervidError(f"{name}: a folder, not a file; give a file path for this output")
    if target.exists() and not target.is_file():  # replaced by a file, /dev/null would be gone (as root)
        raise FervidError(f"{name}: not a regular file (a device, pipe or socket); give a file path for this output")
    check_not_a_run_file(target, name, own_run=own_run)
    check_writable_folder(target.parent, name=name)
    check_replaceable(target, name)


def symlink_loop(path: str | Path) -> bool:
    """Whether ``path``, or a folder on the way to it, is a symlink that leads back to itself
    (``a -> b``, ``b -> a``): it names no file or folder, and can never be made one."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    except ValueError:  # a NUL byte in the name: no loop, the write says what is wrong
        return False
    return False


def refuse_symlink_loop(path: str | Path, name: str = "") -> None:
    """Refuse a path that is a symlink loop (``symlink_loop``) with one line: ``Path.resolve`` raised
    Python's ``RuntimeError("Symlink loop ...")`` on it (3.12 and older), a traceback in the CLI."""
    if symlink_loop(path):
        raise FervidError(f"{name or path}: a symlink loop (links that lead back to each other, never to a file or "
                          "folder); give another path")


def real_path(path: str | Path, name: str = "") -> Path:
    """``path`` with ``~`` expanded and every symlink followed (``Path.resolve``), or a one-line
    FervidError naming ``name`` (or the path) where it is a symlink loop."""
    path = Path(path).expanduser()
    refuse_symlink_loop(path, name)
    try:
        return path.resolve()
    except RuntimeError:  # a loop that appeared since the check (Python 3.12 and older)
        raise FervidError(f"{name or path}: a symlink loop; give another path") from None


def dangling_link_in_the_way(target: str | Path) -> Path | None:
    """The symlink to nothing (``out -> /mnt/disk/out``, the disk not mounted) standing where a folder
    of ``target``'s path must be, else None. Its folder could not be made ("File exists", naming
    neither path), and the write would fail only at the end of a run, its results lost."""
    for parent in Path(target).expanduser().parents:
        if parent.is_symlink() and not parent.exists():
            return parent
        if parent.exists():
            return None
    return None


def check_replaceable(target: Path, name: str) -> None:
    """Refuse a file that only its owner may replace: another user's file in a sticky folder such as
    ``/tmp`` (mode 1777). It may be writable by all, but the rename that puts the new file in place
    fails there ("Operation not permitted") unless the file or the folder is ours, or we are root:
    at the end of a run, its results lost."""
    if not hasattr(os, "geteuid"):  # Windows has no sticky folders
        return
    try:
        file, folder = os.lstat(target), os.stat(target.parent)
    except OSError:  # no file there yet: a new file may be created in any folder we can write in
        return
    us = os.geteuid()
    if folder.st_mode & stat.S_ISVTX and us != 0 and us not in (file.st_uid, folder.st_uid):
        raise FervidError(f"{name}: belongs to another user, in the sticky folder {target.parent} (like /tmp), where only "
                          "its owner may replace it; write the output elsewhere")


def check_not_a_run_file(target: Path, name: str, *, own_run: Path | None = None) -> None:
    """Refuse an output that is a file of a training run folder (its model, card, config, history,
    report or checkpoints): ``evaluate --json RUN/model.keras`` lost the trained model, and a
    replaced ``config.json`` or ``checkpoint/state.json`` broke ``--resume``. ``own_run``: the run
    whose ``model.onnx`` and ``model.json`` this command writes by design (``fervid export RUN``)."""
    where = real_path(target, name)
    for run in (where.parent, where.parent.parent):
        # a finished run whose checkpoint/ was deleted (as the docs allow) still has its model and history
        if not ((run / "config.json").is_file() and any((run / name).exists() for name in ("checkpoint", "model.keras"))):
            continue
        relative = where.relative_to(run).as_posix()
        if relative not in (*RUN_OUTPUTS, RUN_LOCK) and not relative.startswith("checkpoint/"):
            continue
        if own_run is not None and run == real_path(own_run) and relative in EXPORTS:
            continue
        raise FervidError(f"{name}: is {relative} of the training run {run}, which this output would overwrite; "
                          "write it elsewhere")


def check_writable_folder(folder: str | Path, option: str = "", *, name: str = "") -> None:
    """Refuse now an output folder that could not be made or written in (see ``check_writable``)."""
    folder = Path(folder).expanduser()
    name = name or (f"{option} {folder}" if option else str(folder))
    refuse_symlink_loop(folder, name)
    if blocker := file_in_the_way(folder / "_"):
        raise FervidError(f"{name}: {blocker} is a file, not a folder; write the output elsewhere")
    if link := dangling_link_in_the_way(folder / "_"):
        raise FervidError(f"{name}: {link} is a symlink to {os.readlink(link)}, which does not exist (not mounted?); "
                          "make its target, or write the output elsewhere")
    existing = next((path for path in (folder, *folder.parents) if path.exists()), Path.cwd())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        # /proc exists but takes no new file: its ENOENT said "No such file or directory" of a folder that is there
        why = "files cannot be created there" if error.errno == errno.ENOENT and existing.is_dir() else error.strerror or error
        raise FervidError(f"{name}: cannot write in {existing} ({why}); write the output elsewhere") from None


def check_not_an_input(target: str | Path, option: str, inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse an output that is one of the run's own input files (``inputs``: what it is -> its path):
    the output would replace it, the dataset, model or boxes the user gave lost."""
    resolved = real_path(target, f"{option} {target}")
    for what, path in inputs.items():
        if path is not None and Path(path).expanduser().is_file() and Path(path).expanduser().resolve() == resolved:
            raise FervidError(f"{option} {target}: is {what}, which this output would overwrite; write it elsewhere")


def check_outside_dataset(target: str | Path, data: str | Path, option: str, *, folder: bool = False) -> None:
    """Refuse an output in a dataset folder's class or split folders: the next read of the dataset would
    take the images written there (plots, grids) for faces, or a run ``folder`` for a class. A file
    at the dataset's top level is left alone: no class is read from there."""
    root = Path(data).expanduser()
    if not root.is_dir():
        return
    root, where = root.resolve(), real_path(target, f"{option} {target}")
    holder = where if folder else where.parent
    if holder.is_relative_to(root) and (folder or holder != root):
        from fervid.images import is_image_name  # here: importing fileio must not load OpenCV (fervid --help)

        if folder:
            taken = "take its images for faces"
        elif is_image_name(target):
            taken = "take it for a face"
        else:
            taken = "report it as a stray file among the faces"
        raise FervidError(f"{option} {target}: inside the dataset {data}, whose next read would {taken}; write it elsewhere")


def leave_closed_terminal() -> None:
    """Point stdout and stderr that are the terminal at /dev/null after a hang-up (SIGHUP: the window
    closed, the SSH session dropped): the terminal is gone, and a progress bar or note written to it
    would fail the finishing of the outputs. A stdout redirected to a file keeps its records."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for descriptor in (1, 2):
            with contextlib.suppress(OSError):
                if os.isatty(descriptor):
                    os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


def stopping_signals() -> list[int]:
    """The signals that stop a run as Ctrl+C does: SIGINT, SIGTERM and SIGHUP, each unless ignored
    (``nohup`` ignores SIGHUP, a background job under a non-interactive shell SIGINT): those stay ignored."""
    return [number for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(number) is not signal.SIG_IGN]


@contextmanager
def signals_deferred(*, raise_after: bool = True) -> Iterator[list[int]]:
    """Hold Ctrl+C, SIGTERM and a hang-up back until the block is done: outputs that belong together (a
    checkpoint's weights and state.json; a run's summary and its plot, or evaluate's files) are all
    from one run, never half new and half old. Yields the signals caught; after the block they stop
    the program (``KeyboardInterrupt``) unless ``raise_after`` is False, for a caller that was ending
    anyway and says so itself."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield caught
        return
    def hold(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            leave_closed_terminal()
        caught.append(signum)

    previous = {number: signal.signal(number, hold) for number in stopping_signals()}
    try:
        yield caught
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if caught and raise_after:
        raise KeyboardInterrupt


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same suffix); it replaces ``target`` only on success.

    A file replaced keeps its permissions (a group-writable page stays group-writable). A symlink is
    replaced by the file, its target left as it was (written through, a run folder linked to another
    run's files would overwrite that run's checkpoints). A device, pipe or socket is refused:
    replaced by a file, ``/dev/null`` would be gone. A ``~`` at its start is the home folder, as
    ``check_writable`` reads it: the file checked is the file written."""
    target = Path(target).expanduser()
    if target.exists() and not target.is_file() and not target.is_dir():
        raise OSError(errno.EINVAL, "not a regular file (a device, pipe or socket)", str(target))
    if target.is_dir():  # else os.replace fails at the end, naming the temporary file instead of the user's path
        raise IsADirectoryError(errno.EISDIR, "a folder, not a file", str(target))
    if blocker := file_in_the_way(target):  # mkdir would say "File exists", naming neither path
        raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder", str(target))
    if link := dangling_link_in_the_way(target):  # so would mkdir here
        raise FileExistsError(errno.EEXIST, f"{link} is a symlink to {os.readlink(link)}, which does not exist", str(target))
    prefix, suffix = temporary_affixes(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=suffix)
    except OSError as error:  # named for the user's path, not the temporary one
        raise type(error)(error.errno, error.strerror, str(target)) from None
    os.close(handle)
    temporary = Path(name)
    temporary.unlink()  # writers such as Keras refuse to overwrite; they create it afresh
    try:
        yield temporary
        if temporary.exists():
            _flush_to_disk(temporary)
            if target.is_file():
                shutil.copymode(target, temporary)
        try:
            os.replace(temporary, target)
        except OSError as error:  # whole, only not moved into place (a folder made read-only meanwhile)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            if temporary.exists() and error.strerror:  # it cannot be removed either: a finished recording is worth keeping
                error.strerror += f"; the finished file is left as {temporary}"
            raise
    except OSError as error:
        # A write that fails (a full disk) names no file, or the temporary one: name the user's path
        # (set on the error itself: not every OSError subclass is built from errno, strerror, filename).
        if error.errno is not None and error.filename in (None, str(temporary)):
            error.filename = str(target)
        raise
    finally:
        # quietly: a removal refused too (the folder made read-only) must not replace the error that
        # says which file could not be written with one naming the temporary
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


@contextmanager
def atomic_paths(*targets: str | Path) -> Iterator[list[Path]]:
    """Temporaries for files that belong together (a table and its summary), as :func:`atomic_path`
    gives one: on success each is on disk first, then all are moved into place one after another
    (the last target first) with Ctrl+C and SIGTERM held back, so a stop leaves the old files or the
    new ones, never some of each; on an error none replaces its target."""
    with ExitStack() as staged:
        temporaries = [staged.enter_context(atomic_path(target)) for target in targets]
        yield temporaries
        for temporary in temporaries:  # the slow part (a large table), done before any of them moves
            _flush_to_disk(temporary)
        moves = staged.pop_all()
    with signals_deferred():
        moves.close()


def temporary_affixes(target: Path) -> tuple[str, str]:
    """The prefix and suffix of ``target``'s temporary (``.stem.`` and ``.tmp.suffix``), cut so that
    the temporary's name fits ``NAME_BYTES`` whenever the target's does: the random part and
    ``.tmp`` lengthen it, and a long legal name (``faces.xxx...``, whose suffix is most of it) was
    checked, then failed at the end of the run. The stem is cut first, to ``TEMPORARY_STEM_BYTES``;
    the suffix only where it alone is too long (no writer picks a format by such a suffix)."""
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".weights.h5") else target.suffix
    raw_suffix = os.fsencode(f".tmp{suffix}")  # fsencode: names not in UTF-8 too
    room = NAME_BYTES - TEMPORARY_RANDOM_BYTES - 2  # the dots around the stem
    raw_suffix = raw_suffix[:room]
    raw_stem = os.fsencode(target.stem)[: min(TEMPORARY_STEM_BYTES, room - len(raw_suffix))]
    # a character cut in two, or a byte that is not UTF-8, is left out: the name only has to be unique
    return f".{raw_stem.decode(errors='ignore')}.", raw_suffix.decode(errors="ignore")


def _flush_to_disk(path: Path) -> None:
    """The file's bytes on disk before it is renamed over the target: after a power loss, a renamed
    file whose data was still in the page cache can be left empty, where the old one was whole."""
    if not path.is_file():
        return
    try:
        handle = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))  # Windows flushes only a handle open for writing
    except PermissionError:  # a file its writer made read-only (umask 0222): POSIX flushes it read-only too
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(handle)
    except OSError as error:  # a file system that cannot flush (some network and FUSE mounts): written all the same
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EROFS):
            raise
    finally:
        os.close(handle)


def remove_temporaries(folder: str | Path, of: str | Path | None = None) -> int:
    """Delete what :func:`atomic_path` left in ``folder`` when a process was killed mid-write; returns how many.

    ``of``: only the temporaries of that one file, named exactly as :func:`atomic_path` names them
    (its folder is the user's, where other programs' hidden files, and the temporaries of another
    output there such as ``faces.2024.parquet``'s beside ``faces.parquet``, are not this run's to
    delete)."""
    if of is None:
        leftovers = [path for path in Path(folder).glob(".*.tmp*") if path.is_file()]
    else:
        prefix, suffix = temporary_affixes(Path(of))
        own = re.compile(re.escape(prefix) + f"[a-z0-9_]{{{TEMPORARY_RANDOM_BYTES}}}" + re.escape(suffix))  # mkstemp's letters
        leftovers = [path for path in Path(folder).glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}")
                     if own.fullmatch(path.name) and path.is_file()]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return len(leftovers)


def write_text_atomically(target: str | Path, text: str) -> None:
    """``target`` holds ``text``, or (on any failure) what it held before."""
    with atomic_path(target) as temporary:
        temporary.write_text(text)


def write_bytes_atomically(target: str | Path, data: bytes) -> None:
    """``target`` holds ``data``, or (on any failure) what it held before."""
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)
