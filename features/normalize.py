"""Normalization and bucketization of numeric features: fit on train, apply everywhere.

Normalized value: `(f(x) - mean) / std` with `f = log1p` where configured
(negative values are clipped to 0 first) and identity otherwise; a null
becomes 0, the train mean. Bucket index: 0 for null, else
`1 + #{boundaries <= x}` (bisect_right), so a feature with `b` boundaries has
`b + 2` indices.
"""
from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def _transformed(column: str, log1p: bool) -> Column:
    value = F.col(column).cast("double")
    # greatest() would turn a null into 0: keep nulls null so they do not move the mean.
    return F.when(value.isNull(), F.lit(None)).otherwise(F.log1p(F.greatest(value, F.lit(0.0)))) if log1p else value


def fit_normalization(train: DataFrame, columns: list[str], log1p_columns: list[str]) -> dict[str, dict]:
    """Per column {"log1p", "mean", "std"} from the train split (one aggregation)."""
    if not columns:
        return {}
    aggs = []
    for i, column in enumerate(columns):
        value = _transformed(column, column in log1p_columns)
        aggs += [F.avg(value).alias(f"m{i}"), F.stddev_pop(value).alias(f"s{i}")]
    row = train.agg(*aggs).collect()[0]
    stats = {}
    for i, column in enumerate(columns):
        mean = row[f"m{i}"]
        std = row[f"s{i}"]
        mean = 0.0 if mean is None or math.isnan(mean) else float(mean)
        std = 1.0 if std is None or math.isnan(std) or std < 1e-12 else float(std)
        stats[column] = {"log1p": column in log1p_columns, "mean": mean, "std": std}
    return stats


def apply_normalization(df: DataFrame, stats: dict[str, dict]) -> DataFrame:
    """Replace each fitted column by its normalized float value."""
    for column, s in stats.items():
        value = (_transformed(column, s["log1p"]) - F.lit(s["mean"])) / F.lit(s["std"])
        df = df.withColumn(column, F.coalesce(value, F.lit(0.0)).cast("float"))
    return df


def fit_bucket_boundaries(train: DataFrame, columns: list[str], num_buckets: int,
                          accuracy: int = 10_000) -> dict[str, list[float]]:
    """Quantile boundaries (deduplicated, ascending) per column, from the train split."""
    if not columns:
        return {}
    if num_buckets < 2:
        raise ValueError(f"bucketize.num_buckets must be at least 2, got {num_buckets}")
    quantiles = [i / num_buckets for i in range(1, num_buckets)]
    row = train.agg(*[
        F.percentile_approx(F.col(c).cast("double"), quantiles, accuracy).alias(f"q{i}")
        for i, c in enumerate(columns)
    ]).collect()[0]
    out = {}
    for i, column in enumerate(columns):
        values = row[f"q{i}"] or []
        out[column] = sorted({float(v) for v in values if v is not None and not math.isnan(v)})
    return out


def bucket_index(column: str, boundaries: list[float]) -> Column:
    value = F.col(column).cast("double")
    below = F.size(F.filter(F.array(*[F.lit(float(b)) for b in boundaries]) if boundaries
                            else F.array().cast("array<double>"), lambda b: b <= value))
    return F.when(value.isNull() | F.isnan(value), F.lit(0)).otherwise(below + 1).cast("long")


def apply_buckets(df: DataFrame, boundaries: dict[str, list[float]], suffix: str = "_bucket") -> DataFrame:
    for column, bounds in boundaries.items():
        df = df.withColumn(column + suffix, bucket_index(column, bounds))
    return df
