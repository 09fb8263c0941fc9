"""The one exception type for problems a user can cause; the CLI prints it as one line."""


class FervidError(Exception):
    """A user-facing error: bad path, unreadable data, wrong option. Never a bug."""
