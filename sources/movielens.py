"""MovieLens (ml-latest-small layout) converted to the raw-data contract: impressions, clicks, items.

Reads SOURCE/ratings.csv (userId,movieId,rating,timestamp), SOURCE/movies.csv
(movieId,title,genres) and SOURCE/tags.csv (userId,movieId,tag,timestamp; optional)
with Spark and writes, following the raw-data contract:

- RAW/impressions/: one row per rating: user_id, item_id (the ids as strings),
  ts (the rating's epoch seconds), impression_id = "{userId}-{movieId}-{timestamp}",
  position (null: MovieLens has no slate).
- RAW/clicks/: one row per rating >= the threshold, at the rating's time, with its
  impression_id.
- RAW/items/: every movie of movies.csv: item_id, genres ('|'-separated;
  "(no genres listed)" becomes ""), title (surrounding spaces trimmed),
  release_year (from a "(YYYY)" or "(YYYY-)" / "(YYYY-YYYY)" at the end of the
  trimmed title; null when there is none), num_tags (tags of the movie, 0 when none).

The rows are converted as they are: ratings that the sample builder will reject
(e.g. timestamp 0, exact repeats) are kept and reported in the summary, so that
rejects are counted in one place. Output goes to a hidden staging directory
beside RAW and is swapped into place at the end (pipelines/publish.py), with
RAW/_source.json (source, threshold, counts) and RAW/_SUCCESS last: together they
mark RAW as an output of this converter. An existing RAW is replaced only when it
holds both (or is empty); otherwise, or when RAW overlaps the source,
`import_movielens` raises OutputRefused. RAW and the source without a scheme are on
Spark's default file system.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time

from pipelines.publish import StagedOutput
from pipelines.samples.spark import literal_path
from pipelines.storage import write_text

log = logging.getLogger("import_movielens")

RATINGS_SCHEMA = "userId LONG, movieId LONG, rating DOUBLE, timestamp LONG"
MOVIES_SCHEMA = "movieId LONG, title STRING, genres STRING"
TAGS_SCHEMA = "userId LONG, movieId LONG, tag STRING, timestamp LONG"
NO_GENRES = "(no genres listed)"
# A year in parentheses at the very end of the (trimmed) title; TV series carry "(2007-)" or "(1975-1979)".
YEAR_PATTERN = r"\((\d{4})(?:[-\u2013]\d{0,4})?\)$"
SOURCE_FILE = "_source.json"
RAW_MARKERS = [("_SUCCESS", SOURCE_FILE)]  # an earlier output of the converter, which a rerun may replace


def _read_csv(spark, path: str, schema: str):
    # RFC 4180 quoting ("" inside quotes); a malformed row fails the job rather than becoming nulls.
    return (
        spark.read.option("header", True)
        .option("quote", '"')
        .option("escape", '"')
        .option("mode", "FAILFAST")
        .schema(schema)
        .csv(literal_path(path))
    )


def to_impressions(ratings):
    from pyspark.sql import functions as F

    return ratings.select(
        F.col("userId").cast("string").alias("user_id"),
        F.col("movieId").cast("string").alias("item_id"),
        F.col("timestamp").cast("long").alias("ts"),
        F.concat_ws(
            "-", F.col("userId").cast("string"), F.col("movieId").cast("string"), F.col("timestamp").cast("string")
        ).alias("impression_id"),
        F.lit(None).cast("int").alias("position"),
    )


def to_clicks(ratings, threshold: float):
    from pyspark.sql import functions as F

    return to_impressions(ratings.where(F.col("rating") >= F.lit(float(threshold)))).drop("position")


def to_items(movies, tags):
    from pyspark.sql import functions as F

    title = F.trim(F.col("title"))
    year = F.regexp_extract(title, YEAR_PATTERN, 1)
    genres = F.trim(F.col("genres"))
    if tags is not None:
        counts = tags.where(F.col("movieId").isNotNull()).groupBy("movieId").agg(F.count(F.lit(1)).alias("num_tags"))
        movies = movies.join(counts, on="movieId", how="left")
    else:
        movies = movies.withColumn("num_tags", F.lit(None).cast("long"))
    return movies.select(
        F.col("movieId").cast("string").alias("item_id"),
        F.when(genres == NO_GENRES, F.lit("")).otherwise(F.coalesce(genres, F.lit(""))).alias("genres"),
        title.alias("title"),
        F.when(year == "", F.lit(None)).otherwise(year).cast("int").alias("release_year"),
        F.coalesce(F.col("num_tags"), F.lit(0)).cast("long").alias("num_tags"),
    )


def _hadoop_path(spark, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath, hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def _exists(spark, path: str) -> bool:
    hpath, fs = _hadoop_path(spark, path)
    return bool(fs.exists(hpath))


def _qualified(spark, path: str) -> str:
    """`path` on Spark's default file system ("file:/..." locally, "hdfs://..." on a cluster)."""
    hpath, fs = _hadoop_path(spark, path)
    return fs.makeQualified(hpath).toString()


def _for_spark(path: str) -> str:
    """A staged path as Spark must write it: local paths explicitly on the local file system."""
    return path if "://" in path else f"file://{path}"


def import_movielens(spark, source: str, output: str, click_threshold: float = 3.5) -> dict:
    """Convert `source` to the raw layout at `output` (atomically); return a summary."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.perf_counter()
    source_uri = _qualified(spark, source)
    stage = StagedOutput(_qualified(spark, output), inputs=[source_uri], markers=RAW_MARKERS)
    ratings = items = None
    try:
        ratings = _read_csv(spark, posixpath.join(source, "ratings.csv"), RATINGS_SCHEMA).persist(
            StorageLevel.MEMORY_AND_DISK
        )  # read three times: impressions, clicks, counts
        movies = _read_csv(spark, posixpath.join(source, "movies.csv"), MOVIES_SCHEMA)
        tags_path = posixpath.join(source, "tags.csv")
        tags = None
        if _exists(spark, tags_path):
            tags = _read_csv(spark, tags_path, TAGS_SCHEMA)
        else:
            log.warning("no tags.csv in %s: num_tags is 0 for every movie", source)

        staging = _for_spark(stage.path)
        to_impressions(ratings).write.mode("error").parquet(posixpath.join(staging, "impressions"))
        to_clicks(ratings, click_threshold).write.mode("error").parquet(posixpath.join(staging, "clicks"))
        items = to_items(movies, tags).coalesce(1).persist(StorageLevel.MEMORY_AND_DISK)  # written, then counted
        items.write.mode("error").parquet(posixpath.join(staging, "items"))

        # One pass: rows, clicks and data problems, with exact repeats of (userId, movieId, timestamp).
        key = ratings.groupBy("userId", "movieId", "timestamp").agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(F.when(F.col("rating") >= F.lit(float(click_threshold)), 1).otherwise(0)).alias("clicks"),
            F.sum(F.when(F.col("rating").isNull(), 1).otherwise(0)).alias("null_rating"),
        )
        counts = key.agg(
            F.coalesce(F.sum("n"), F.lit(0)).alias("ratings"),
            F.coalesce(F.sum("clicks"), F.lit(0)).alias("clicks"),
            F.coalesce(F.sum(F.col("n") - 1), F.lit(0)).alias("repeated"),
            F.coalesce(F.sum(F.when(F.col("timestamp") <= 0, F.col("n")).otherwise(0)), F.lit(0)).alias(
                "non_positive_ts"
            ),
            F.coalesce(
                F.sum(
                    F.when(
                        F.col("userId").isNull() | F.col("movieId").isNull() | F.col("timestamp").isNull(), F.col("n")
                    ).otherwise(F.col("null_rating"))
                ),
                F.lit(0),
            ).alias("null_fields"),
            F.min("timestamp").alias("ts_min"),
            F.max("timestamp").alias("ts_max"),
        ).first()
        repeated = int(counts["repeated"])
        item_counts = items.agg(
            F.count(F.lit(1)).alias("items"),
            F.sum(F.when(F.col("release_year").isNull(), 1).otherwise(0)).alias("no_year"),
            F.sum(F.when(F.col("genres") == "", 1).otherwise(0)).alias("no_genres"),
        ).first()
        write_text(
            posixpath.join(stage.path, SOURCE_FILE),
            json.dumps(
                {
                    "source": source_uri,
                    "click_threshold": click_threshold,
                    "ratings": int(counts["ratings"]),
                    "clicks": int(counts["clicks"]),
                    "items": int(item_counts["items"]),
                },
                indent=2,
            ),
        )
        write_text(posixpath.join(stage.path, "_SUCCESS"), "")
        stage.publish()
    finally:
        stage.close()
        if ratings is not None:
            ratings.unpersist()
        if items is not None:
            items.unpersist()

    n_ratings, n_clicks = int(counts["ratings"]), int(counts["clicks"])
    warnings = []
    if counts["non_positive_ts"]:
        warnings.append(
            f"{counts['non_positive_ts']} ratings have timestamp <= 0 (kept; build_samples rejects "
            "them as ts_out_of_range)"
        )
    if repeated:
        warnings.append(
            f"{repeated} ratings repeat an earlier (userId, movieId, timestamp) (kept; same "
            "impression_id, build_samples rejects the repeats as duplicates)"
        )
    if counts["null_fields"]:
        warnings.append(f"{counts['null_fields']} ratings have an empty field (kept as nulls)")
    for text in warnings:
        log.warning(text)
    return {
        "output": stage.final,
        "impressions": n_ratings,
        "clicks": n_clicks,
        "click_rate": round(n_clicks / n_ratings, 5) if n_ratings else None,
        "click_threshold": click_threshold,
        "items": int(item_counts["items"]),
        "items_without_year": int(item_counts["no_year"] or 0),
        "items_without_genres": int(item_counts["no_genres"] or 0),
        "ts_range": [counts["ts_min"], counts["ts_max"]],
        "warnings": warnings,
        "seconds": round(time.perf_counter() - started, 2),
    }
