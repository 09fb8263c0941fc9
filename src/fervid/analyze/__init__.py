"""Batch analysis: photo folders, zips and video archives to one face table (Parquet or CSV), locally or on Ray.

>>> from fervid.analyze import AnalyzeOptions, analyze
>>> report = analyze(["photos/", "interview.mp4"], "results/", AnalyzeOptions(every=5))
>>> report.summary.to_pandas()

Modules, one job each: ``inputs`` (what to analyse), ``boxes`` (--boxes files), ``schema`` (the
tables), ``process`` (units and rows, shared by both engines), ``writer`` (parts, resume, outputs),
``local`` and ``ray_engine`` (the engines), ``run`` (the whole run).
"""

from fervid.analyze.process import AnalyzeOptions
from fervid.analyze.run import AnalyzeInterrupted, AnalyzeReport, analyze
from fervid.analyze.schema import ROW_SCHEMA, SCHEMA_VERSION, SUMMARY_SCHEMA

__all__ = ["ROW_SCHEMA", "SCHEMA_VERSION", "SUMMARY_SCHEMA", "AnalyzeInterrupted", "AnalyzeOptions", "AnalyzeReport", "analyze"]
