"""Batch analysis: photo folders, zips and video archives to one face table (Parquet or CSV), locally or on Ray.

>>> from fervid.analyze import AnalyzeOptions, analyze
>>> report = analyze(["photos/", "interview.mp4"], "results/", AnalyzeOptions(every=5))
>>> report.summary.to_pandas()

A run goes inputs -> units -> analyzer -> writer, on the local or the Ray engine. Modules, one job
each: ``options`` (AnalyzeOptions), ``inputs`` (what to analyse), ``boxes`` (--boxes files),
``video`` (probing and reading video files), ``units`` (the plan: image batches and video segments,
with the ids resume goes by), ``analyzer`` (a unit in, rows out, shared by both engines), ``schema``
and ``rows`` (the tables and the buffers that fill them), ``writer`` (parts, resume, outputs),
``local`` and ``ray_engine`` (the engines), ``progress`` (the bars), ``run`` (the whole run).
"""

from fervid.analyze.options import AnalyzeOptions
from fervid.analyze.run import AnalyzeInterrupted, AnalyzeReport, analyze
from fervid.analyze.schema import ROW_SCHEMA, SCHEMA_VERSION, SUMMARY_SCHEMA

__all__ = ["ROW_SCHEMA", "SCHEMA_VERSION", "SUMMARY_SCHEMA", "AnalyzeInterrupted", "AnalyzeOptions", "AnalyzeReport", "analyze"]
