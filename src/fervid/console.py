"""Terminal output shared by every command: rich progress bars and one-line messages on stderr."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
MIN_COLUMNS = 20  # a COLUMNS below this (0 in some Docker consoles) made rich print nothing at all


def columns_usable() -> bool:
    """Whether ``COLUMNS`` is unset or a width text fits in: rich takes ``COLUMNS=0`` as a console 0
    wide and printed no result, warning or help (exit status 0)."""
    columns = os.environ.get("COLUMNS")
    return columns is None or (columns.strip().isdigit() and int(columns) >= MIN_COLUMNS)


def sane_columns() -> None:
    """Drop a ``COLUMNS`` no text fits in, for every rich console the ``fervid`` command makes (its
    own and typer's help); they then take the terminal's own width (or 80). Called by the command
    only: a library import changing the environment of the app that embeds it is not its to do."""
    if not columns_usable():
        del os.environ["COLUMNS"]


def terminal_width() -> int:
    """The width of the terminal on stderr, or 80 where there is none."""
    try:
        return os.get_terminal_size(2).columns
    except OSError:
        return 80


# A bad COLUMNS is passed over here without taking it out of the environment (see sane_columns).
stderr = Console(stderr=True, width=None if columns_usable() else terminal_width())


def one_line(text: str) -> str:
    """``text`` with control characters, line separators and undecodable bytes written as escapes
    (a newline as ``\\n``): a file named with a newline split a message in two, and the next line
    read as another message. Other characters (a no-break space, an emoji) stay as they are."""
    return "".join(repr(char)[1:-1] if unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs") else char for char in text)


def warn(message: str) -> None:
    """A one-line warning on stderr; the message is printed as it is (a path like ``a[1].jpg`` or a
    hint like ``fervid[data]`` is not read as rich markup), control characters escaped."""
    stderr.print(f"[yellow]warning:[/yellow] {escape(one_line(message))}", highlight=False, soft_wrap=True)


def progress(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    """Iterate with a progress bar and ETA on stderr (plain and quiet when stderr is not a terminal)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as bar:
        yield from bar.track(items, total=total, description=escape(description))


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 frame``, ``2 frames``: a closing line reads as English for any count."""
    return f"{count} {one if count == 1 else (many or one + 's')}"
