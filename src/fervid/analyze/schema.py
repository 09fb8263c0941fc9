"""The output tables as pyarrow schemas: one row per face per processed frame, and one summary row per source.

Bump :data:`SCHEMA_VERSION` whenever a column is added, removed or changes meaning.
"""

from __future__ import annotations

import pyarrow as pa

from fervid.labels import EXPRESSIONS, PROBABILITY_COLUMNS

SCHEMA_VERSION = 2  # 2: the summary's (and ledger's) note column
SHARE_COLUMNS = tuple(f"share_{name}" for name in EXPRESSIONS)
COUNT_COLUMNS = tuple(f"count_{name}" for name in EXPRESSIONS)
SORT_KEYS = [("source", "ascending"), ("frame", "ascending"), ("face_id", "ascending")]

ROW_SCHEMA = pa.schema(
    [
        ("source", pa.string()),  # file path, or "archive.zip!member.jpg"
        ("segment", pa.int32()),  # video time segment the row came from (0 for images)
        ("frame", pa.int64()),  # frame number in the video (0 for images)
        ("time_s", pa.float64()),  # the frame's timestamp (0.0 for images); see FrameClock
        ("face_id", pa.int64()),  # track id within a video (unique per video), face number within an image
        ("x", pa.int32()),
        ("y", pa.int32()),
        ("w", pa.int32()),
        ("h", pa.int32()),
        ("expression", pa.string()),
        ("confidence", pa.float32()),
        *((column, pa.float32()) for column in PROBABILITY_COLUMNS),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("schema_version", pa.int16()),
    ]
)

# What each finished unit of work (a batch of images or one video segment) records; resuming reads it.
LEDGER_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("kind", pa.string()),
        ("unit", pa.string()),
        ("segment", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("note", pa.string()),
        ("frames", pa.int64()),
        ("faces", pa.int64()),
        *((column, pa.int64()) for column in COUNT_COLUMNS),
        ("fingerprint", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("schema_version", pa.int16()),
    ]
)

SUMMARY_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("kind", pa.string()),  # image or video
        ("status", pa.string()),  # ok or error
        ("error", pa.string()),  # one line when status is error, else null
        ("note", pa.string()),  # one line on something to know whatever the status (a video shorter than its header says), else null
        ("frames", pa.int64()),  # frames analysed (every K-th frame with --every K)
        ("faces", pa.int64()),  # rows in the face table
        *((column, pa.float64()) for column in SHARE_COLUMNS),  # share of the source's faces; null without faces
        ("segments", pa.int32()),
        ("fingerprint", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("schema_version", pa.int16()),
    ]
)

