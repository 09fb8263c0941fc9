"""Markdown pages that several writers share: each owns one ``## `` section and replaces only that
(the benchmarks' tables in docs/performance.md)."""

from __future__ import annotations

import re
from pathlib import Path

from fervid.errors import FervidError
from fervid.fileio import write_text_atomically


def read_markdown_page(path: str | Path, option: str = "--output") -> str:
    """The text of a Markdown page ("" when it does not exist yet); FervidError when it is not a
    ``.md`` text file (a model card, a device: the section would be appended to it or replace it).

    Benchmarks call it before measuring too, so a wrong ``--output`` fails in seconds, not after the run.
    A ``~`` at its start is the home folder, as the output checks read it.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in (".md", ".markdown"):
        raise FervidError(f"{option} {path}: not a Markdown page; give a .md file to write the section into")
    if not path.exists():
        return ""
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise FervidError(f"{option} {path}: not a text (Markdown) file; give a .md page to write the section into") from None


def replace_markdown_section(path: str | Path, heading: str, text: str) -> None:
    """Replace the section that starts with ``heading`` (up to the next '## ') in a Markdown file, or append it.

    Several benchmarks write to one page (docs/performance.md); each owns only its own section.
    """
    path = Path(path).expanduser()  # the page read and checked (--output=~/perf.md), not ./~/perf.md
    page = read_markdown_page(path)
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(page):
        page = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", page, count=1).rstrip("\n") + "\n"
    else:
        page = (page.rstrip("\n") + "\n\n" if page else "") + text
    write_text_atomically(path, page)
