"""Time split into train / valid / test.

Either by fixed dates (`valid_start`, `test_start`) or by fractions of the
impressions, cut at exact time quantiles (to the second while the impressions span
less than 100,000 s, else to the nearest step of span / 100,000). A sample belongs to `train` when
`ts < valid_start`, to `valid` when `valid_start <= ts < test_start`, else `test`.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.normalize import histogram_quantiles
from pipelines.config_types import to_epoch_seconds

SPLITS = ("train", "valid", "test")


def split_boundaries(impressions: DataFrame, split_conf: dict) -> tuple[int, int]:
    """(valid_start, test_start) in epoch seconds: fixed dates if given, else time quantiles."""
    valid_start, test_start = split_conf.get("valid_start"), split_conf.get("test_start")
    if valid_start is not None and test_start is not None:
        bounds = (to_epoch_seconds(valid_start), to_epoch_seconds(test_start))
    elif valid_start is not None or test_start is not None:
        raise ValueError("split.valid_start and split.test_start must be given together")
    else:
        valid_fraction = float(split_conf["valid_fraction"])
        test_fraction = float(split_conf["test_fraction"])
        if not (0 <= valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
            raise ValueError(
                f"split fractions must satisfy 0 <= valid, 0 < test, valid + test < 1; "
                f"got valid={valid_fraction}, test={test_fraction}"
            )
        q = [1 - valid_fraction - test_fraction, 1 - test_fraction]
        quantiles = time_quantiles(impressions, q)
        if not quantiles:
            raise ValueError("no valid impressions to split")
        # The quantile v is the start of a histogram step: the cut is at the end of that step.
        bounds = (quantiles[0][0] + quantiles[0][1], quantiles[1][0] + quantiles[1][1])
    if bounds[0] > bounds[1]:
        raise ValueError(f"split.valid_start ({bounds[0]}) is after split.test_start ({bounds[1]})")
    return bounds


def time_quantiles(impressions: DataFrame, fractions: list[float], max_steps: int = 100_000) -> list[tuple]:
    """[(step start, step length)] of the exact `fractions`-quantiles of `ts`, in seconds.

    Exact on a histogram of at most about `max_steps` equal time steps (1 s while the data span
    less than `max_steps` seconds), so the driver gets a bounded histogram, never the rows, and,
    unlike an approximate sketch, the cut does not depend on how Spark partitions the data.
    """
    span = impressions.agg(F.min("ts").alias("first"), F.max("ts").alias("last")).collect()[0]
    if span["first"] is None:
        return []
    step = max(1, -(-(int(span["last"]) - int(span["first"]) + 1) // max_steps))
    start = F.col("ts") - F.pmod(F.col("ts") - F.lit(int(span["first"])), F.lit(step))
    histogram = [
        (int(r["start"]), int(r["count"])) for r in impressions.groupBy(start.alias("start")).count().collect()
    ]
    return [(int(v), step) for v in histogram_quantiles(histogram, fractions)]


def assign_split(df: DataFrame, valid_start: int, test_start: int) -> DataFrame:
    return df.withColumn(
        "split",
        F.when(F.col("ts") < valid_start, F.lit("train"))
        .when(F.col("ts") < test_start, F.lit("valid"))
        .otherwise(F.lit("test")),
    )
