"""Output parts written atomically, resume by unit id, and the final table (a Parquet folder, file or CSV).

Layout (``OUT`` a folder, e.g. ``results/``)::

    results/part-<unit>.parquet      face rows of one unit (pandas.read_parquet("results") reads them all)
    results/_sources/<unit>.parquet  the unit's ledger: written last, so it marks the unit complete
    results/_summary.parquet         one row per source, rewritten at the end of every run

``OUT`` a file (``r.parquet`` or ``r.csv``): the parts live in ``r.parquet.parts/`` and are combined,
sorted by source, frame and face_id, into ``r.parquet`` at the end; the summary goes to
``r.summary.parquet`` (``r.summary.csv``). Keep the parts folder to resume or extend the run later.

Files whose names start with "." or "_" are ignored by pyarrow and pandas when reading a folder, so
temporary files and the ledger never mix with the rows.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from fervid.analyze.schema import COUNT_COLUMNS, LEDGER_SCHEMA, ROW_SCHEMA, SCHEMA_VERSION, SHARE_COLUMNS, SORT_KEYS, SUMMARY_SCHEMA
from fervid.analyze.units import Unit, UnitResult
from fervid.analyze.video import EXTRACT_FAILED
from fervid.console import warn
from fervid.errors import FervidError
from fervid.fileio import (
    atomic_path, atomic_paths, check_writable, check_writable_folder, refuse_symlink_loop, remove_temporaries,
    write_text_atomically,
)

STALE = ".stale"  # a hidden part of a unit not in the running analysis (ResultStore.hide_stale)
EMPTY_PART = "part-empty.parquet"  # keeps a folder with no face at all readable by pandas
# A part fervid wrote: a unit id (20 hex digits of a SHA-1) or the empty part. Anything else named
# part-*.parquet (Spark's part-00000-....snappy.parquet) is someone else's, never pruned.
OWN_PART = re.compile(r"part-(?:[0-9a-f]{20}|empty)\.parquet")


FERVID_COLUMNS = {"source", "model_name", "model_version", "schema_version"}  # in every face and summary table, all versions
TABLE_COLUMNS = {"rows": FERVID_COLUMNS | {"face_id"}, "summary": FERVID_COLUMNS | {"status"}}


def is_fervid_table(path: Path, kind: str) -> bool:
    """Whether ``path`` is a face table (``kind`` "rows") or a summary a fervid analysis wrote
    (Parquet or CSV), by its columns. The kind matters: ``--out s1.summary.parquet`` would have
    replaced another run's summary with face rows."""
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as table:
                names = next(csv.reader(table), [])
        else:
            names = pq.read_schema(path.absolute()).names  # absolute: never taken for a URI
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException):
        return False
    return TABLE_COLUMNS[kind] <= set(names)


class ResultStore:
    """Where a run's parts go, which units are already complete, and the final outputs.

    Creating one checks ``out`` against ``inputs`` and writes nothing; :meth:`open` creates the folders.
    """

    def __init__(self, out: str | Path, inputs: Iterable[str | Path] = ()) -> None:
        # ~ expanded as the inputs' is (--out=~/r.parquet reaches fervid unexpanded; pyarrow expanded
        # it when reading the parts back, and the run failed at its end).
        self.out = Path(out).expanduser()
        refuse_symlink_loop(self.out, f"--out {self.out}")  # before it is resolved: Path.resolve raised RuntimeError
        suffix = self.out.suffix.lower()
        if suffix == ".csv" and not self.out.is_dir():  # a folder named x.csv, created first, is a folder
            self.format = "csv"
        elif suffix == ".parquet" and not self.out.is_dir():
            self.format = "parquet"
        elif suffix and suffix != ".parquet" and not self.out.is_dir():
            # r.json or r.txt would silently become a folder of Parquet parts named like a file
            raise FervidError(
                f"--out {self.out}: give a folder, a .parquet or a .csv file (to use a folder name with a dot, create it first)"
            )
        else:
            self.format = "folder"
        if self.format == "folder":
            if self.out.exists() and not self.out.is_dir():
                raise FervidError(f"{self.out}: exists and is not a folder (use .parquet or .csv for a single file)")
            self.parts = self.out
            self.summary_path = self.out / "_summary.parquet"
        else:
            self.parts = self.out.with_name(self.out.name + ".parts")
            self.summary_path = self.out.with_name(f"{self.out.stem}.summary{self.out.suffix}")
            if self.parts.exists() and not self.parts.is_dir():  # said "r.csv.parts/_sources: Not a directory"
                raise FervidError(f"--out {self.out}: {self.parts} exists and is not a folder, where the run keeps its "
                                  "parts; move it or give another --out")
        self.ledger = self.parts / "_sources"
        self._complete: set[str] | None = None  # by completed(), once
        self._refuse_inside_results()
        self._refuse_inputs(inputs)
        self._refuse_foreign_files()
        self._refuse_foreign_outputs()
        if self.format == "folder":
            check_writable_folder(self.out, "--out")
        else:
            check_writable(self.out, "--out")
            check_writable(self.summary_path, f"--out {self.out}: its summary")  # written last: refused now, not at the end

    def _refuse_inside_results(self) -> None:
        """Refuse an ``out`` inside another analysis's results (a folder ``--out``, or a ``.parts``
        folder): pandas reads every file below a Parquet folder, so that table would take this run's
        table and parts for rows of its own (duplicates, or an unreadable .csv)."""
        for folder in self.out.expanduser().absolute().parents:
            if (folder / "_sources").is_dir() and (folder / "_sources").resolve() != self.ledger.expanduser().absolute().resolve():
                raise FervidError(f"--out {self.out}: inside {folder}, the results of another fervid analysis, which would read "
                                  "this run's files as rows of its own; give an --out outside it")

    def _refuse_inputs(self, inputs: Iterable[str | Path]) -> None:
        """Refuse an ``out`` (or its parts folder or summary) that is an input or holds one.

        The parts would be mixed with the inputs: ``pandas.read_parquet(OUT)`` then fails on the first
        photo, and the output file could replace an input. An ``out`` inside an input folder is fine:
        outputs are .parquet and .csv files, which are never taken as inputs.
        """
        targets = [path.expanduser().resolve() for path in (self.out, self.parts, self.summary_path)]
        for given in inputs:
            path = Path(given).expanduser().resolve()
            if any(path.is_relative_to(target) for target in targets):
                relation = "is" if path in targets else "holds"
                raise FervidError(
                    f"--out {self.out}: {relation} the input {given}, which the results would "
                    f"{'replace' if relation == 'is' else 'mix with'}; give an --out outside the inputs"
                )

    def _refuse_foreign_files(self) -> None:
        """Refuse a parts folder that already holds files of its own (photos, notes): pandas reads every
        visible file of a Parquet folder, so ``pandas.read_parquet(OUT)`` would fail on the first.

        A file named like a part (``part-<unit>.parquet``) or, in a folder ``--out``, the summary is
        taken for fervid's only where fervid wrote the folder: :meth:`open` makes ``_sources/`` before
        the first part, so a folder without it never held one. There such a file must be a fervid
        table by its columns (the parts of a run whose ``_sources/`` was deleted are analysed again and
        replaced, as a file ``--out`` without its parts folder is); a user's own file that merely had
        the name was replaced by a part, or deleted as a stale one, without a word."""
        if not self.parts.is_dir():
            return
        written_by_fervid = self.ledger.is_dir()
        for path in sorted(self.parts.iterdir()):
            if path.name.startswith((".", "_")):
                continue
            if not OWN_PART.fullmatch(path.name):
                raise FervidError(
                    f"--out {self.out}: {self.parts} already holds {path.name}, not a part of a fervid analysis; "
                    "pandas could not read the results beside it: give a new or empty folder"
                )
            if not written_by_fervid and not is_fervid_table(path, "rows"):
                raise FervidError(
                    f"--out {self.out}: {self.parts} already holds {path.name}, named like a part of a fervid analysis "
                    "but not one (not a fervid face table), which the results would replace: give a new or empty folder"
                )
        if (self.format == "folder" and not written_by_fervid and self.summary_path.exists()
                and not is_fervid_table(self.summary_path, "summary")):
            raise FervidError(
                f"--out {self.out}: {self.summary_path} already exists and is not a fervid analysis summary, which the "
                "results would replace: give a new or empty folder"
            )

    def _refuse_foreign_outputs(self) -> None:
        """Refuse a file ``out``, or the summary beside it, that exists without the run's parts folder
        and is not a fervid table (``participants.csv``): the results would replace it, the summary
        without the user ever naming it. Fervid's own results whose parts folder was deleted (as the
        docs allow once a run is done) are analysed again and replaced, with a warning."""
        if self.format == "folder" or self.parts.is_dir():
            return
        existing = {path: kind for path, kind in ((self.out, "rows"), (self.summary_path, "summary")) if path.exists()}
        for path, kind in existing.items():
            if not is_fervid_table(path, kind):
                what = "a fervid analysis table" if kind == "rows" else "a fervid analysis summary"
                raise FervidError(
                    f"--out {self.out}: {path} already exists and is not {what}; "
                    "it would be replaced: give another --out, or delete it first"
                )
        if existing:
            warn(f"--out {self.out}: no {self.parts.name} beside it to resume from (deleted?): "
                 f"every source is analysed again and {', '.join(path.name for path in existing)} replaced")

    def open(self) -> None:
        """Create the parts and ledger folders (before the first unit is written)."""
        self.ledger.mkdir(parents=True, exist_ok=True)

    def completed(self) -> set[str]:
        """Ids of units whose ledger was written (their rows part, if any, was written before it) and
        whose files Parquet can read as the ledger and row tables. A damaged ledger or part (emptied by
        a power loss, or by hand) stopped every rerun with a traceback: its unit's files are removed,
        and it is analysed again. So is a unit whose part or ledger is another table (a file copied
        over it): read with the row schema, its missing columns came back as nulls, and the rerun
        said the unit was complete and wrote empty rows in place of its faces.
        A unit whose video could not be extracted from its zip (``EXTRACT_FAILED``: a temporary disk
        without room, which the user was told to fix, or one filled by other workers' copies) is not
        complete either: its error row stays until the rerun analyses it again.
        Checked once per run (each file's footer is opened); units written since are added by ``write``."""
        if self._complete is None:
            complete, damaged = set(), []
            for path in _visible(self.ledger, "*.parquet"):
                part = self.parts / f"part-{path.stem}.parquet"
                ledger_whole = _readable(path, LEDGER_SCHEMA)
                # read where it has no rows part: errors and faceless units (a part means faces, and no error)
                table = _read_table(path) if ledger_whole and not part.exists() else None
                if table is not None and _retried(table):
                    continue
                # a unit with faces whose part is gone (deleted by hand) was taken as complete: its rows went missing
                lost = table is not None and (pc.sum(table["faces"]).as_py() or 0) > 0
                if not lost and ledger_whole and (not part.exists() or _readable(part, ROW_SCHEMA)):
                    complete.add(path.stem)
                else:
                    damaged.append(path.stem)
                    for file in (part, path, self.ledger / f"{path.stem}.renaming.json"):
                        file.unlink(missing_ok=True)
            if damaged:
                warn(f"--out {self.out}: {len(damaged)} unit(s) with a damaged results file (unreadable Parquet, or not "
                     "the table fervid writes there) or a missing one are analysed again")
            self._complete = complete
        return set(self._complete)

    def hide_stale(self, units: set[str]) -> None:
        """A folder ``--out``: the parts of units not in this run are hidden now (``.part-X.parquet.stale``,
        which pandas skips), not only deleted at its end, so the folder never reads as the earlier
        run's rows beside this one's (duplicates for a changed video) while it runs or once stopped.
        The earlier summary is hidden with them: it counts the earlier rows, so a stopped run leaves
        its complete units' rows and no summary until the rerun writes one. :meth:`prune` deletes
        them at the end; :meth:`unhide_stale` puts them back where the run failed, and at the next
        run's start, which decides afresh."""
        if self.format != "folder":
            return
        for path in _visible(self.parts, "part-*.parquet"):
            if OWN_PART.fullmatch(path.name) and path.name != EMPTY_PART and path.stem.removeprefix("part-") not in units:
                path.rename(path.with_name(f".{path.name}{STALE}"))
        if self.summary_path.is_file():
            self.summary_path.rename(self._hidden_summary)

    @property
    def _hidden_summary(self) -> Path:
        return self.summary_path.with_name(f".{self.summary_path.name}{STALE}")

    def unhide_stale(self) -> None:
        """Parts and the summary hidden by :meth:`hide_stale` back in the table."""
        if self.parts.is_dir():
            for path in self.parts.glob(f".part-*.parquet{STALE}"):
                path.rename(path.with_name(path.name[1 : -len(STALE)]))
        if self.format == "folder" and self._hidden_summary.is_file() and not self.summary_path.exists():
            self._hidden_summary.rename(self.summary_path)

    def prune(self, units: set[str]) -> int:
        """Remove the parts of units not in this run (other inputs, changed files, another model or options); returns how many units.

        Also removes the hidden temporary files that a killed run leaves behind mid-write, its own
        hidden stale parts, and a killed run's temporaries of the final table and summary.
        """
        for folder in (self.parts, self.ledger):
            remove_temporaries(folder)
        for stale in [*self.parts.glob(f".part-*.parquet{STALE}"), *([self._hidden_summary] if self.format == "folder" else [])]:
            stale.unlink(missing_ok=True)
        if self.format != "folder":
            for target in (self.out, self.summary_path):
                remove_temporaries(target.parent, of=target)
        removed = 0
        own_parts = [path for path in _visible(self.parts, "part-*.parquet") if OWN_PART.fullmatch(path.name)]
        for path in [*own_parts, *_visible(self.ledger, "*.parquet")]:
            unit = path.stem.removeprefix("part-") if path.parent == self.parts else path.stem
            if unit not in units:
                path.unlink(missing_ok=True)
                removed += path.parent == self.ledger
                if self._complete is not None:
                    self._complete.discard(unit)
        return removed

    def rename(self, unit: Unit) -> bool:
        """Give a complete unit's rows and ledger the names its sources have in this run; True if any changed.

        A unit is found by its sources' absolute paths, so the same command run from another folder
        resumes it, but its parts carry the names the first run gave (``photos/a.jpg``, now
        ``../photos/a.jpg``): left so, a video would have two summary rows, one per name. A note of
        the old names and of the step reached (``<unit>.renaming.json`` beside the ledger) is
        written first, so a rerun after a kill mid-way finishes the same renaming, even where a new
        name is another source's old one.
        """
        path = self.ledger / f"{unit.id}.parquet"
        note = self.ledger / f"{unit.id}.renaming.json"
        ledger = _read_table(path)
        new = [source.name for source in unit.sources]
        if note.exists():
            state = json.loads(note.read_text())
        else:
            state = {"old": ledger["source"].to_pylist(), "part_done": False}
            if state["old"] == new or len(state["old"]) != len(new):  # one ledger row per source, in the unit's order
                return False
            write_text_atomically(note, json.dumps(state))
        names = dict(zip(state["old"], new))
        part = self.parts / f"part-{unit.id}.parquet"
        if part.exists() and not state["part_done"]:
            rows = _read_table(part, schema=ROW_SCHEMA)
            renamed = pa.array([names.get(name, name) for name in rows["source"].to_pylist()], pa.string())
            _write_parquet(rows.set_column(rows.schema.get_field_index("source"), "source", renamed), part)
            write_text_atomically(note, json.dumps({**state, "part_done": True}))
        _write_parquet(ledger.set_column(ledger.schema.get_field_index("source"), "source", pa.array(new, pa.string())), path)
        note.unlink()
        return True

    def write(self, result: UnitResult) -> None:
        """The unit's rows, then its ledger; each atomically, so a kill leaves the unit complete or absent."""
        if result.rows.num_rows:
            _write_parquet(result.rows, self.parts / f"part-{result.unit.id}.parquet")
        _write_parquet(result.ledger, self.ledger / f"{result.unit.id}.parquet")
        if self._complete is not None:
            self._complete.add(result.unit.id)

    def summary(self, units: set[str]) -> pa.Table:
        """One row per source of the complete ``units``, read from their ledgers; writes nothing."""
        ledgers = [_read_table(self.ledger / f"{unit}.parquet") for unit in sorted(units & self.completed())]
        return summarize(pa.concat_tables(ledgers) if ledgers else LEDGER_SCHEMA.empty_table())

    def has_results(self) -> bool:
        """Whether ``out`` (a file) or the summary already exists: a previous run's results, or a file that is not ours."""
        return self.summary_path.exists() or (self.format != "folder" and self.out.exists())

    def write_summary(self, summary: pa.Table) -> None:
        """The summary alone, in the output's format (a run where nothing could be processed writes only this)."""
        with atomic_path(self.summary_path) as temporary:
            self._write(summary, temporary)

    def finish(self, summary: pa.Table) -> None:
        """Write the summary and, for .parquet/.csv outputs, the combined file of the rows, sorted.

        Both are written to disk as temporary files first and then moved into place together, Ctrl+C
        held back between the moves: a run stopped or failing while they are written leaves the
        earlier table and summary as a pair, never a new table beside an old summary that counts
        other faces, or the reverse."""
        parts = sorted(_visible(self.parts, "part-*.parquet"))
        empty = self.parts / EMPTY_PART
        if self.format == "folder":
            if not [part for part in parts if part != empty]:
                _write_parquet(ROW_SCHEMA.empty_table(), empty)
            self.write_summary(summary)
            return
        rows = pa.concat_tables([_read_table(part, schema=ROW_SCHEMA) for part in parts]) if parts else ROW_SCHEMA.empty_table()
        with atomic_paths(self.out, self.summary_path) as (table_file, summary_file):
            self._write(rows.sort_by(SORT_KEYS), table_file)
            self._write(summary, summary_file)

    def _write(self, table: pa.Table, path: Path) -> None:
        """A table in the output's format (Parquet for a folder's summary)."""
        if self.format == "csv":
            pa_csv.write_csv(table, path.absolute())
        else:
            pq.write_table(table, path.absolute())


def _read_table(path: Path, **options) -> pa.Table:
    """``pq.read_table`` by absolute path: pyarrow takes a relative ``file:r.parquet.parts/...`` or
    ``s3:...`` for a URI, where fervid wrote local files."""
    return pq.read_table(path.absolute(), **options)


def _retried(ledger: pa.Table) -> bool:
    """Whether a unit's ledger holds an error the next run retries (a video not extracted from its zip)."""
    errors = ledger["error"].drop_null()
    return len(errors) > 0 and pc.any(pc.starts_with(errors, EXTRACT_FAILED)).as_py()


def _readable(path: Path, schema: pa.Schema | None = None) -> bool:
    """Whether ``path`` is a whole Parquet file (its footer reads) and, given ``schema``, holds that
    table: its columns' names and types, in order (what ``_write_parquet`` wrote from it). Cheap: the
    rows are not read. Reading a foreign table with ``schema=`` filled the columns it lacks with nulls."""
    try:
        metadata = pq.read_metadata(path.absolute())
        stored = metadata.schema.to_arrow_schema() if schema is not None else None
    except OSError as error:
        if error.errno is None:  # pyarrow's own: a garbled footer ("Couldn't deserialize thrift") is damage
            return False
        # a permission or a network disk's error is not damage: its results are kept
        raise FervidError(f"--out {path}: could not be read ({error.strerror or error}); the results there are kept") from None
    except pa.ArrowException:  # emptied, cut short, overwritten: not a Parquet file
        return False
    if schema is None or stored is None:
        return True
    return [(field.name, field.type) for field in stored] == [(field.name, field.type) for field in schema]


def _visible(folder: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern``, without the hidden ones: pathlib's glob also matches dot-files, such as
    the temporary file an atomic write renames into place."""
    return [path for path in folder.glob(pattern) if not path.name.startswith(".")]


def summarize(ledger: pa.Table) -> pa.Table:
    """One row per source from the ledger rows of its units (a video has one per segment)."""
    sums = [(column, "sum") for column in ("frames", "faces", *COUNT_COLUMNS)]
    firsts = [(column, "min") for column in ("kind", "status", "error", "fingerprint", "model_name", "model_version")]
    ledger = ledger.sort_by([("source", "ascending"), ("segment", "ascending")])  # notes in the video's order
    grouped = ledger.group_by("source", use_threads=False).aggregate([*sums, *firsts, ("note", "list"), ("segment", "count")])
    grouped = grouped.sort_by("source")
    faces = grouped["faces_sum"]
    columns = {
        "source": grouped["source"],
        "kind": grouped["kind_min"],
        "status": grouped["status_min"],  # "error" sorts before "ok": one failed segment fails the source
        "error": grouped["error_min"],
        "note": pa.array([merged_note(notes) for notes in grouped["note_list"].to_pylist()], pa.string()),
        "frames": grouped["frames_sum"],
        "faces": faces,
        **{
            share: pc.if_else(pc.greater(faces, 0), pc.divide(pc.cast(grouped[f"{count}_sum"], pa.float64()), pc.cast(faces, pa.float64())), None)
            for share, count in zip(SHARE_COLUMNS, COUNT_COLUMNS)
        },
        "segments": pc.cast(grouped["segment_count"], pa.int32()),
        "fingerprint": grouped["fingerprint_min"],
        "model_name": grouped["model_name_min"],
        "model_version": grouped["model_version_min"],
        "schema_version": pa.array([SCHEMA_VERSION] * grouped.num_rows, pa.int16()),
    }
    return pa.table(columns, schema=SUMMARY_SCHEMA)


# Notes a video's segments each give for their own frames, merged into one for the whole video:
# (pattern, what the merged note says given the counts summed and the examples in order).
DAMAGED = re.compile(r"(\d+) damaged frame\(s\) skipped \((.*)\)")
SKIPPED_BOXES = re.compile(r"(\d+) box\(es\) from --boxes skipped, e\.g\. (.*)")
UNREAD_BOXES = re.compile(r"--boxes gives boxes for (\d+) frame\(s\) not analysed, e\.g\. (.*)")


def merged_note(notes: list[str | None]) -> str | None:
    """One source's note from its segments' notes (in segment order): counts summed, the first
    examples kept, other notes once each. Taking one segment's note, as the summary did, lost the
    others (a truncated video's note behind a damaged frame's), and so depended on --segment-s."""
    merged: dict[str, list] = {}  # pattern or note -> [count, examples]
    for note in notes:
        for piece in (note or "").split("; "):
            if not piece:
                continue
            for pattern in (DAMAGED, SKIPPED_BOXES, UNREAD_BOXES):
                if found := pattern.fullmatch(piece):
                    entry = merged.setdefault(pattern.pattern, [0, []])
                    entry[0] += int(found[1])
                    entry[1].append(found[2])
                    break
            else:
                merged.setdefault(piece, [0, []])
    pieces = []
    for key, (count, examples) in merged.items():
        if key == DAMAGED.pattern:
            frames = [frame for shown in examples for frame in shown.split(", ") if frame != "..."]
            pieces.append(f"{count} damaged frame(s) skipped ({', '.join(frames[:5])}{', ...' if count > 5 else ''})")
        elif key == SKIPPED_BOXES.pattern:
            pieces.append(f"{count} box(es) from --boxes skipped, e.g. {examples[0]}")
        elif key == UNREAD_BOXES.pattern:
            pieces.append(f"--boxes gives boxes for {count} frame(s) not analysed, e.g. {examples[0]}")
        else:
            pieces.append(key)
    return "; ".join(pieces) or None


def _write_parquet(table: pa.Table, target: Path) -> None:
    with atomic_path(target) as temporary:
        pq.write_table(table, temporary.absolute())
