"""Reading the raw data sets (`RAW/impressions`, `RAW/clicks`, `RAW/items`).

Parquet keeps its own types. CSV is read as standard CSV (RFC 4180): a header row,
quoted fields that may hold commas and newlines, and `""` for a quote inside a quoted
field. CSV columns are read as strings, because validation parses `ts` and the ids
itself and turns a bad value into a counted reject; the passthrough columns are then
given the type their values share (integer, else floating point), so that `p_click`
stays a number.

An empty `clicks/` or `items/` folder means no clicks or no item metadata. An empty
`impressions/` folder, or a missing folder, is an `InputError` naming the data set.
"""

from __future__ import annotations

import os
import posixpath

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.validate import trim_space
from pipelines.samples.spark import has_glob_characters, literal_path, process_temp_folder

DATASETS = ("impressions", "clicks", "items")

# What an empty folder stands for; impressions have no such meaning, the job needs some.
EMPTY_SCHEMAS = {
    "clicks": "user_id string, item_id string, ts long, impression_id string",
    "items": "item_id string, genres string",
}
CSV_OPTIONS = {
    "header": "true",
    "inferSchema": "false",
    "multiLine": "true",
    "quote": '"',
    "escape": '"',
    "mode": "PERMISSIVE",
}


class InputError(ValueError):
    pass


CSV_LINKS_PREFIX = "ctr-csv-links-"
_csv_links: dict[str, str] = {}  # dataset folder -> the link this process reads it through


def _csv_readable_path(path: str) -> str:
    """A path to `path` that Spark's multi-line CSV reader can read.

    That reader hands each file's path to Hadoop's input format, which expands it as a glob again: a folder
    named `raw [v2]` matches no file however it is escaped. A local folder with glob characters is read
    through a link of this process (a folder of the system's temp folder, removed at exit); other file
    systems cannot be, and are refused with a clear error."""
    if not has_glob_characters(path):
        return literal_path(path)
    if "://" in path and not path.startswith("file:"):
        raise InputError(
            f"{path}: Spark's multi-line CSV reader cannot read a folder whose path holds any of * ? [ ] {{ }} "
            "outside the local file system; rename the folder, or give RAW as Parquet"
        )
    local = os.path.abspath(path[len("file:") :] if path.startswith("file:") else path)
    if local not in _csv_links:
        folder = process_temp_folder(CSV_LINKS_PREFIX, set(DATASETS))
        link = os.path.join(folder, posixpath.basename(local.rstrip("/")))
        os.symlink(local, link)
        _csv_links[local] = link
    return _csv_links[local]


def read_raw(spark: SparkSession, raw_dir: str, dataset: str, fmt: str) -> DataFrame:
    path = posixpath.join(raw_dir, dataset)
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"input.format must be 'parquet' or 'csv', got {fmt!r}")
    try:
        literal = literal_path(path) if fmt == "parquet" else _csv_readable_path(path)
        df = spark.read.parquet(literal) if fmt == "parquet" else spark.read.options(**CSV_OPTIONS).csv(literal)
        df.schema  # noqa: B018 - resolves the schema now, so an empty folder fails here
    except AnalysisException as exc:
        condition = exc.getCondition() or ""
        if condition == "UNABLE_TO_INFER_SCHEMA":
            if dataset in EMPTY_SCHEMAS:
                return spark.createDataFrame([], EMPTY_SCHEMAS[dataset])
            raise InputError(f"{dataset}: no {fmt} data files in {path}") from None
        if condition == "PATH_NOT_FOUND":
            raise InputError(
                f"{dataset}: {path} does not exist (RAW must hold impressions/, clicks/, items/)"
            ) from None
        raise
    if fmt == "csv" and not df.columns:
        if dataset in EMPTY_SCHEMAS:
            return spark.createDataFrame([], EMPTY_SCHEMAS[dataset])
        raise InputError(f"{dataset}: no rows and no header in {path}")
    return df


def type_csv_columns(df: DataFrame, columns: list[str]) -> DataFrame:
    """Cast string `columns` to long when every non-empty value is an integer, else to double when
    every one is a number; leave them strings otherwise. One aggregation for all columns."""
    columns = [c for c in columns if c in df.columns and df.schema[c].dataType.simpleString() == "string"]
    if not columns:
        return df
    checks = []
    for i, column in enumerate(columns):
        value = trim_space(F.col(column))
        present = value.isNotNull() & (value != "")
        checks += [
            F.sum(F.when(present & value.try_cast("double").isNull(), 1).otherwise(0)).alias(f"n{i}"),
            F.sum(F.when(present & value.try_cast("long").isNull(), 1).otherwise(0)).alias(f"i{i}"),
        ]
    row = df.agg(*checks).collect()[0]
    for i, column in enumerate(columns):
        value = trim_space(F.col(column))
        if not row[f"i{i}"]:
            df = df.withColumn(column, value.try_cast("long"))
        elif not row[f"n{i}"]:
            df = df.withColumn(column, value.try_cast("double"))
    return df
