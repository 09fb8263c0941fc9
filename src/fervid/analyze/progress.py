"""One rich progress display for a run: frames analysed and files finished, each with its ETA."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fervid.console import stderr


class AnalyzeProgress:
    """Two bars on stderr (plain and silent when stderr is not a terminal): frames and files."""

    def __init__(self, frames: int, files: int) -> None:
        columns = (TextColumn("{task.description:>6}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn())
        self.bar = Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal)
        self.frames_task = self.bar.add_task("frames", total=frames)
        self.files_task = self.bar.add_task("files", total=files)

    def frames(self, count: int = 1) -> None:
        self.bar.advance(self.frames_task, count)

    def files(self, count: int = 1) -> None:
        self.bar.advance(self.files_task, count)

    def __enter__(self) -> AnalyzeProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()
