"""Markdown pages that several writers share: each owns one ``## `` section and replaces only that
(the benchmarks' tables in docs/performance.md), up to the next heading of level 1 or 2."""

from __future__ import annotations

import re
from pathlib import Path

from fervid.errors import FervidError
from fervid.fileio import write_text_atomically

# CommonMark's block syntax, as far as finding where a section ends needs it (up to 3 spaces of indent:
# 4 make an indented code block, whose '# ' lines are code).
FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
TOP_HEADING = re.compile(r" {0,3}#{1,2}(?:[ \t]|$)")  # '# Title' or '## Title', not '### Title' or '#tag'
SETEXT_UNDERLINE = re.compile(r" {0,3}(?:=+|-+)[ \t]*")  # under paragraph text: that text is a level 1 or 2 heading
THEMATIC_BREAK = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*")  # '---' or '* * *' with no paragraph text above
# Paragraph text: not blank, an indented code line, a list item, a quote, an ATX heading, a table row or HTML.
PARAGRAPH = re.compile(r" {0,3}(?![-*+][ \t]|\d{1,9}[.)][ \t]|#{1,6}(?:[ \t]|$)|[>|<])\S")


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


class SectionNotWritten(FervidError):
    """A benchmark's section that could not be written at the end of its run (a page made immutable
    or a disk filled meanwhile): ``table`` keeps the measurements, for the caller to show, so minutes
    of measuring are not lost with the write."""

    def __init__(self, message: str, table: str) -> None:
        super().__init__(message)
        self.table = table


def replace_markdown_section(path: str | Path, heading: str, text: str, *, table: str = "", option: str = "--output") -> None:
    """Replace the section that starts with ``heading`` (``section_span``) in a Markdown file, or append it.

    Several benchmarks write to one page (docs/performance.md); each owns only its own section. A
    page that cannot be written raises ``SectionNotWritten`` carrying ``table``.
    """
    path = Path(path).expanduser()  # the page read and checked (--output=~/perf.md), not ./~/perf.md
    page = read_markdown_page(path, option)
    span = section_span(page, heading)
    if span:
        start, end = span
        page = (page[:start] + text.rstrip("\n") + "\n\n" + page[end:]).rstrip("\n") + "\n"
    else:
        page = (page.rstrip("\n") + "\n\n" if page else "") + text
    try:
        write_text_atomically(path, page)
    except OSError as error:
        raise SectionNotWritten(f"{option} {path}: {error.strerror or error}; the section was not written", table) from None


def section_span(page: str, heading: str) -> tuple[int, int] | None:
    """Where the section that starts with the line ``heading`` lies in ``page`` (start, end offsets),
    or None: it ends where the next heading of level 1 or 2 starts (``# `` or ``## ``, or a line
    underlined with ``=`` or ``-``), or at the end of the page.

    Ending only at the next ``## `` deleted a ``# Appendix`` after the section, and its text, on each
    rerun. Lines inside fenced code blocks are not headings: a shell ``# comment`` in a fence within
    the section must not end it, nor a heading quoted in one start it.
    """
    start: int | None = None
    fence: str | None = None  # the opening fence's run of ` or ~ while inside a fenced code block
    paragraph: int | None = None  # where the paragraph the last line belongs to starts (None: the last line is no paragraph text)
    offset = 0
    for line in page.split("\n"):  # not splitlines: a form feed or U+2028 inside a line ends no Markdown line
        here, offset = offset, offset + len(line) + 1
        content = line.rstrip("\r")
        if fence:
            closing = FENCE.fullmatch(content)
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence) and not closing.group(2).strip():
                fence = None
            continue
        opening = FENCE.fullmatch(content)
        if opening and not (opening.group(1)[0] == "`" and "`" in opening.group(2)):  # ```code``` inline is no fence
            fence, paragraph = opening.group(1), None
            continue
        if start is None:
            if content == heading:
                start, paragraph = here, None
                continue
        elif TOP_HEADING.match(content):
            return start, here
        elif paragraph is not None and SETEXT_UNDERLINE.fullmatch(content):
            return start, paragraph  # the paragraph above is the heading's text
        if not PARAGRAPH.match(content) or THEMATIC_BREAK.fullmatch(content):
            paragraph = None
        elif paragraph is None:
            paragraph = here
    return (start, len(page)) if start is not None else None
