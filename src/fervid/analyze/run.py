"""``analyze``: expand the inputs, plan units, skip the complete ones, run an engine, write the outputs."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from fervid.analyze.analyzer import STAGES
from fervid.analyze.boxes import load_boxes
from fervid.analyze.inputs import expand_inputs, file_fingerprint
from fervid.analyze.options import AnalyzeOptions
from fervid.analyze.progress import AnalyzeProgress
from fervid.analyze.units import UnitResult, plan_units
from fervid.analyze.writer import ResultStore
from fervid.checks import Whole
from fervid.console import plural, warn
from fervid.errors import FervidError
from fervid.runtime.classify import ExpressionClassifier
from fervid.training.lock import RunLock

ENGINES = ("local", "ray")


@dataclass
class AnalyzeReport:
    """What a run did. ``frames``/``faces``/``seconds``/``timings`` count only the units processed by this run."""

    summary: pa.Table
    outputs: list[str]
    units: int = 0
    skipped_units: int = 0
    removed_parts: int = 0
    parts: str | None = None  # for a .parquet or .csv --out: the folder of parts kept beside it to resume
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def ok(self) -> int:
        return self.summary["status"].to_pylist().count("ok")

    @property
    def errors(self) -> list[tuple[str, str]]:
        rows = self.summary.select(["source", "status", "error"]).to_pylist()
        return [(row["source"], row["error"]) for row in rows if row["status"] == "error"]

    @property
    def notes(self) -> list[tuple[str, str]]:
        """(source, note) for the sources whose summary row has a note, such as a video shorter than its header says."""
        rows = self.summary.select(["source", "note"]).to_pylist()
        return [(row["source"], row["note"]) for row in rows if row["note"]]

    def describe(self, errors_listed: int = 10) -> list[str]:
        """Lines for the end of a run: the first ``errors_listed`` errors, the counts and speed, the files written."""
        errors = self.errors
        lines = [f"error: {source}: {error}" for source, error in errors[:errors_listed]]
        if len(errors) > errors_listed:
            lines.append(f"... and {len(errors) - errors_listed} more errors (see the summary)")
        rate = f" ({self.frames / self.seconds:.1f} frames/s)" if self.seconds > 0 and self.frames else ""
        counted = plural(len(errors), "error")
        work = f"{plural(self.frames, 'frame')}, {plural(self.faces, 'face')} in {self.seconds:.1f} s{rate}"
        if self.skipped_units:  # the counts are this run's work; the table holds the earlier runs' rows too
            work = f"{self.skipped_units} of {self.units} units already complete; this run: {work}"
        lines.append(f"{plural(self.summary.num_rows, 'source')}: {self.ok} ok, {counted}; {work}")
        if self.removed_parts:  # out mirrors the inputs: say so when that dropped earlier rows
            lines.append(f"removed the results of {plural(self.removed_parts, 'unit')} of an earlier run that this run "
                         "does not hold (inputs not given, files or options changed, or an older fervid's)")
        kept = f"; {self.parts} keeps the parts to resume or extend the run: delete it when done" if self.parts else ""
        return lines + [f"wrote {self.outputs[0]} (summary: {self.outputs[1]}{kept})"]


class AnalyzeInterrupted(KeyboardInterrupt):
    """Ctrl+C (or SIGTERM made into one) during a run; the message says what is kept and how to resume.

    A KeyboardInterrupt still, so code that stops on one stops on this; ``fervid analyze`` prints it.
    """

    def __init__(self, complete: int, units: int, parts: Path) -> None:
        if complete:
            message = f"{complete} of {units} units are complete and kept in {parts}; rerun the same command to resume"
        else:
            message = f"none of the {units} units was complete yet; rerunning the same command starts again"
        super().__init__(message)
        self.complete, self.units, self.parts = complete, units, parts


def model_key(model: str | None) -> str:
    """Name, version and content hash of the model: a retrained model with the same version still differs."""
    classifier = ExpressionClassifier(model, threads=1)
    return f"{classifier.name}:{classifier.version}:{file_fingerprint(Path(classifier.path))}"


ANALYZING = "is being written by another fervid analyze (process {owner}) now; wait for it to end, or give another --out"


def analyze(
    inputs: Sequence[str | Path] | str | Path,
    out: str | Path,
    options: AnalyzeOptions | None = None,
    *,
    engine: str = "local",
    boxes: str | Path | None = None,
    ray_address: str | None = None,
    ray_cpus: Whole | None = None,
    on_result: Callable[[UnitResult], None] | None = None,
) -> AnalyzeReport:
    """Analyse images and videos into a face table at ``out`` (folder, .parquet or .csv) plus a per-source summary.

    Resumable: units already complete in ``out`` are skipped. Raises FervidError when no source at
    all could be processed; the summary with the error rows is then written only where no earlier
    results are, and parts of other inputs are kept: a failed run never replaces or prunes results.
    Raises :class:`AnalyzeInterrupted` on Ctrl+C, once the units in flight are dropped; the complete
    ones stay for the rerun.
    """
    if isinstance(inputs, (str, os.PathLike)):  # one input, not the characters of its name
        inputs = [inputs]
    inputs = list(inputs)  # a generator was used up by the check of out, then read as no inputs at all
    for path, name in [*((item, "each input") for item in inputs), (out, "out")]:
        if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
            raise FervidError(f"{name} must be a path (str or pathlib.Path), got {path!r}"[:200])
    if isinstance(out, str) and not out.strip():  # Path("") is "." and wrote the results into the current folder
        raise FervidError("out is empty: give a folder, a .parquet or a .csv file")
    options = options or AnalyzeOptions()
    if not isinstance(options, AnalyzeOptions):  # a dict of them failed as an AttributeError
        raise FervidError(f"options must be an AnalyzeOptions, such as AnalyzeOptions(every=5), got {type(options).__name__}")
    options.validate()
    if options.crops and boxes is not None:
        raise FervidError("--crops and --boxes both say where the faces are: give one of them")
    if engine not in ENGINES:
        raise FervidError(f"--engine must be one of {', '.join(ENGINES)}, got '{engine}'")
    if ray_address is not None and engine != "ray":  # asked for a cluster, it ran in one local process
        raise FervidError(f"--ray-address {ray_address} joins a Ray cluster only with --engine ray; add it, or leave the "
                          "address out to run here")
    if options.crops or boxes is not None:
        options.detector().refuse_unused("--crops" if options.crops else "--boxes")
    # a wrong --out is refused before the inputs are read; the --boxes file is an input too
    store = ResultStore(out, [*inputs, *([boxes] if boxes is not None else [])])
    items = expand_inputs(inputs)
    box_table = load_boxes(boxes) if boxes is not None else None
    if box_table is not None and (unmatched := box_table.unmatched(items)):
        warn(f"--boxes: {len(unmatched)} source(s) match no input, e.g. {unmatched[0]}")
    units = plan_units(items, options, model_key(options.model), box_table)
    store.open()
    with RunLock(store.parts, ANALYZING) as lock:  # a second run into this --out pruned this one's results
        lock.acquire()
        report = AnalyzeReport(summary=pa.table({}), outputs=[], units=len(units))
        store.unhide_stale()  # what a stopped run hid: this run decides afresh which parts are stale
        done = store.completed()
        pending = [unit for unit in units if unit.id not in done]
        report.skipped_units = len(units) - len(pending)
        remaining = Counter(source.name for unit in pending for source in unit.sources)
        started = time.perf_counter()
        ids = {unit.id for unit in units}
        store.hide_stale(ids)
        try:
            for unit in units:
                if unit.id in done:
                    store.rename(unit)  # a rerun from another folder names the sources as this run does
            with AnalyzeProgress(sum(unit.frames for unit in pending), len(remaining)) as bar:
                if not pending:  # all complete: nothing to start (Ray refused a dataset of no blocks)
                    results: Iterable[UnitResult] = ()
                elif engine == "ray":
                    from fervid.analyze.ray_engine import run_ray

                    results = run_ray(pending, options, bar.frames, address=ray_address, cpus=None if ray_cpus is None else int(ray_cpus))
                else:
                    from fervid.analyze.local import run_local

                    results = run_local(pending, options, bar.frames)
                for result in results:
                    written = time.perf_counter()
                    store.write(result)
                    result.timings["write"] += time.perf_counter() - written
                    for stage, seconds in result.timings.items():
                        report.timings[stage] += seconds
                    report.frames += result.frames
                    report.faces += result.rows.num_rows
                    for source in result.unit.sources:
                        remaining[source.name] -= 1
                        if remaining[source.name] == 0:
                            bar.files()
                    if on_result is not None:
                        on_result(result)
        except KeyboardInterrupt as interrupt:  # stale parts stay hidden: the folder holds this run's complete units
            raise AnalyzeInterrupted(len(ids & store.completed()), len(units), store.parts) from interrupt
        except BaseException:  # a failed run never prunes results: the earlier parts are read again
            store.unhide_stale()
            raise
        report.seconds = time.perf_counter() - started
        report.summary = store.summary(ids)
        if report.notes:
            noted, note = report.notes[0]
            warn(f"{len(report.notes)} source(s) with a note in the summary, e.g. {noted}: {note}")
        if report.ok == 0 and not pc.sum(report.summary["frames"]).as_py():  # a source in error with rows was still processed
            first = report.errors[0] if report.errors else ("", "no sources")
            store.unhide_stale()  # the earlier results, hidden as the run started, count as there
            if store.has_results():
                where = "nothing written over " + " or ".join(str(path) for path in (store.out, store.summary_path) if path.exists())
            else:
                store.write_summary(report.summary)
                where = f"summary in {store.summary_path}"
            raise FervidError(f"nothing could be processed ({len(report.errors)} error(s); first: {first[0]}: {first[1]}); {where}")
        try:
            report.removed_parts = store.prune(ids)  # only now: parts of other inputs are dropped when this run has results
            store.finish(report.summary)
        except KeyboardInterrupt as interrupt:  # every unit is complete: the rerun only writes the table out
            raise AnalyzeInterrupted(len(ids & store.completed()), len(units), store.parts) from interrupt
        report.outputs = [str(store.out), str(store.summary_path)]
        report.parts = None if store.format == "folder" else f"{store.parts}/"
        return report
