"""The one exception type for problems a user can cause; the CLI prints it as one line."""


class FervidError(Exception):
    """A user-facing error: bad path, unreadable data, wrong option. Never a bug."""


class Interrupted(Exception):
    """A run stopped by Ctrl+C or SIGTERM; the message says what was kept and how to go on."""
