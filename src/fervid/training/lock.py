"""One process per run folder: a second ``fervid train --resume`` on a run that is still training
(a lost SSH session, a second terminal) would mix the two runs' checkpoints, history and model; a
second ``fervid analyze`` into the same --out would prune the first one's results."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from types import TracebackType

from fervid.console import warn
from fervid.errors import FervidError
from fervid.fileio import RUN_LOCK

LOCK_FILE = RUN_LOCK  # hidden: not a run output, not a file the dataset or image readers see
TRAINING = "is being trained by process {owner} now; wait for it to end (or stop it) before resuming, or train into another --out"


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``, held from :meth:`acquire` until the ``with`` block ends.

    The kernel drops the lock when the process dies, so a killed run never leaves its folder locked;
    the file itself holds the owner's PID for the message. Where ``fcntl`` does not exist (Windows),
    or the file system has no locks, nothing is locked.
    """

    def __init__(self, run: Path, busy: str = TRAINING) -> None:
        self.run, self.busy = run, busy  # busy: what the holder does, with {owner}: its PID
        self._fd: int | None = None
        self._unlockable = False

    def acquire(self) -> None:
        """Take the lock (once the run folder exists), or refuse with the PID of the process that holds it."""
        if self._fd is not None or self._unlockable:
            return
        try:
            import fcntl
        except ImportError:
            return
        fd = os.open(self.run / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FervidError(f"{self.run}: {self.busy.format(owner=owner)}") from None
        except OSError as error:  # a file system without locks (some network mounts): train unlocked, and say so
            os.close(fd)
            warn(f"{self.run}: cannot be locked ({error.strerror or error}); nothing stops a second process writing into it")
            self._unlockable = True  # said once: fit asks again once the run folder exists
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        self._closer = weakref.finalize(self, os.close, fd)  # a lock object dropped unreleased still lets go

    def release(self) -> None:
        """Let go of the lock (closing the file releases the flock); the file stays, for the next run."""
        if self._fd is not None:
            self._closer()
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.release()
