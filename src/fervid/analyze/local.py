"""The local engine: one process, one model, units in source order, each written as soon as it is done."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from fervid.analyze.analyzer import Analyzer
from fervid.analyze.options import AnalyzeOptions
from fervid.analyze.units import Unit, UnitResult
from fervid.runtime.recognizer import Recognizer


def run_local(units: list[Unit], options: AnalyzeOptions, on_frames: Callable[[int], None] | None = None,
              threads: int | None = None) -> Iterator[UnitResult]:
    """Results of ``units`` one by one; a video's pending segments are decoded in one pass."""
    analyzer = Analyzer(options, Recognizer(options.model, threads=threads, **options.recognizer_settings()))
    for (kind, _source), group in itertools.groupby(units, key=lambda unit: (unit.kind, unit.sources[0].name)):
        if kind == "image":
            for unit in group:
                result = analyzer.run_images(unit)
                if on_frames is not None:
                    on_frames(result.frames)
                yield result
        else:
            yield from analyzer.run_video(list(group), on_frames=on_frames)
