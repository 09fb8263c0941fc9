"""The one exception type for problems a user can cause; the CLI prints it as one line."""


class FervidError(Exception):
    """A user-facing error: bad path, unreadable data, wrong option. Never a bug."""


class Interrupted(Exception):
    """A run stopped by Ctrl+C or SIGTERM; the message says what was kept and how to go on."""


def install_hint(extra: str) -> str:
    """How to get an optional extra, for an installed package and for a source checkout alike."""
    return f'pip install "fervid[{extra}]" (in a checkout: pip install -e ".[{extra}]")'
