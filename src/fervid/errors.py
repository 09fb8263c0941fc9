"""The one exception type for problems a user can cause; the CLI prints it as one line."""


class FervidError(Exception):
    """A user-facing error: bad path, unreadable data, wrong option. Never a bug."""


class WriteFailedInLibrary(FervidError):
    """A write that failed inside a C library (h5py on a full disk) and left it in a state that
    crashes the interpreter's teardown (a segfault, exit 139, after the message): the CLI ends the
    process at once, with its files already closed or atomic, so the exit status is still 2."""


class Interrupted(Exception):
    """A run stopped by Ctrl+C or SIGTERM; the message says what was kept and how to go on."""


def install_hint(extra: str) -> str:
    """How to get an optional extra, for an installed package and for a source checkout alike."""
    return f'pip install "fervid[{extra}]" (in a checkout: pip install -e ".[{extra}]")'
