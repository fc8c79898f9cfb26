"""Normalization and bucketization of numeric features: fit on train, apply everywhere.

Normalized value: `(f(x) - mean) / std` with `f = log1p` where configured
(negative values are clipped to 0 first) and identity otherwise; a null
becomes 0, the train mean. Bucket index: 0 for null, else
`1 + #{boundaries <= x}` (bisect_right), so a feature with `b` boundaries has
`b + 2` indices. NaN and ±inf are treated as null.

A dense vector feature (array<float> of a fixed length d) is normalized per dimension: its
statistics are lists of d means and d standard deviations, fitted on the train rows that have a
vector (never log1p), and a null vector becomes d zeros. A vector derived from another one (the
user's mean of clicked item vectors) may take that one's statistics instead (pipelines/samples/fitting.py).

Both fits are independent of how Spark partitions the train split (exact decimal sums,
exact quantiles of a histogram), so a build's spec hash is too.
"""

from __future__ import annotations

import logging
import math
from decimal import Decimal, localcontext

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


def _finite(column: str | Column) -> Column:
    """The column as a double; NaN and ±inf count as missing, like null, so one of them cannot spoil a fit."""
    value = (F.col(column) if isinstance(column, str) else column).cast("double")
    return F.when(~F.isnan(value) & (F.abs(value) != float("inf")), value)


def _transformed(column: str | Column, log1p: bool) -> Column:
    value = _finite(column)
    # greatest() would turn a null into 0: keep nulls null so they do not move the mean.
    return F.when(value.isNull(), F.lit(None)).otherwise(F.log1p(F.greatest(value, F.lit(0.0)))) if log1p else value


# Exact decimal sums do not depend on the order rows are added in, so the fitted statistics (and
# the spec hash) are the same however Spark partitions the train split.
_EXACT = "decimal(38,10)"


def _exact_moments(train: DataFrame, values: list[Column]) -> list[tuple]:
    """(count, sum, sum of squares) per value; the sums are Decimals, or None on decimal overflow."""
    aggs = []
    for i, value in enumerate(values):
        aggs += [
            F.count(value).alias(f"n{i}"),
            F.try_sum(value.try_cast(_EXACT)).alias(f"s{i}"),
            F.try_sum((value * value).try_cast(_EXACT)).alias(f"q{i}"),
        ]
    row = train.agg(*aggs).collect()[0]
    return [(row[f"n{i}"], row[f"s{i}"], row[f"q{i}"]) for i in range(len(values))]


def value_counts(train: DataFrame, columns: list[str]) -> DataFrame:
    """(column, value, count): the train rows that hold each finite value of each column, as a double.

    The scalar fits read these instead of the rows. A column's values repeat (counts, an item's
    attributes), so a cast to decimal or a rounding then runs once per distinct value, not per row."""
    fields = [F.struct(F.lit(c).alias("column"), _finite(c).alias("value")) for c in dict.fromkeys(columns)]
    values = F.explode(F.array(*fields))
    return (
        train.select(values.alias("v"))
        .select("v.column", "v.value")
        .where(F.col("value").isNotNull())
        .groupBy("column", "value")
        .agg(F.count(F.lit(1)).alias("count"))
    )


# A value times its count (decimal(11,0)) is exact in decimal(38,10): 26 + 11 + 1 digits. Past these
# bounds a column is summed row by row instead, so the sums stay those of `_exact_moments`.
_VALUE_EXACT, _COUNT_EXACT = "decimal(26,10)", "decimal(11,0)"
_VALUE_BOUND, _COUNT_BOUND = 1e15, 1e11


def _counted_moments(counted: DataFrame, columns: list[str], log1p_columns: list[str]) -> dict[str, tuple | None]:
    """`_exact_moments` of each column's (log1p'd) values from `value_counts`: the same Decimals, as
    sum(count * value) is exact. None for a column whose values or counts are too large for that."""
    if not columns:
        return {}
    value = F.col("value")
    if log1p_columns:
        value = F.when(F.col("column").isin(list(log1p_columns)), _transformed(value, True)).otherwise(value)
    rows = F.col("count").try_cast(_COUNT_EXACT)
    moments = (
        counted.where(F.col("column").isin(list(columns)))
        .select("column", "count", value.alias("x"), (value * value).alias("xx"))
        .groupBy("column")
        .agg(
            F.sum("count").alias("n"),
            F.try_sum(F.col("x").try_cast(_VALUE_EXACT) * rows).alias("s"),
            F.try_sum(F.col("xx").try_cast(_VALUE_EXACT) * rows).alias("q"),
            F.max(F.greatest(F.abs("x"), F.col("xx"))).alias("largest"),
            F.max("count").alias("most"),
        )
        .collect()
    )
    by_column: dict[str, tuple | None] = {c: (0, None, None) for c in columns}  # no finite value: count 0
    for row in moments:
        exact = row["largest"] < _VALUE_BOUND and row["most"] < _COUNT_BOUND
        by_column[row["column"]] = (row["n"], row["s"], row["q"]) if exact else None
    return by_column


def _mean_std(count: int, total: Decimal, squares: Decimal) -> tuple[float, float]:
    with localcontext() as ctx:
        ctx.prec = 60
        mean = total / count
        variance = max(squares / count - mean * mean, Decimal(0))
        return float(mean), float(variance.sqrt())


_FALLBACK_DIGITS = 9


def _rounded_mean_std(train: DataFrame, value: Column) -> tuple[float, float]:
    """Double mean and std rounded to a few digits: stable unless a value sits on a rounding edge."""
    row = train.agg(F.avg(value).alias("m"), F.stddev_pop(value).alias("s")).collect()[0]
    return tuple(float(f"{v:.{_FALLBACK_DIGITS}g}") for v in (row["m"], row["s"]))


def _fitted_mean_std(train: DataFrame, name: str, value: Column, moments: tuple) -> tuple[float, float]:
    count, total, squares = moments
    if not count:
        return 0.0, 1.0
    if total is None or squares is None:
        log.warning(
            "normalize: '%s' is too large to sum exactly in %s; its mean and std are rounded "
            "to %d significant digits instead",
            name,
            _EXACT,
            _FALLBACK_DIGITS,
        )
        mean, std = _rounded_mean_std(train, value)
    else:
        mean, std = _mean_std(count, total, squares)
    return mean, 1.0 if std < 1e-12 else std


def fit_normalization(
    train: DataFrame,
    columns: list[str],
    log1p_columns: list[str],
    vector_lengths: dict[str, int] | None = None,
    counted: DataFrame | None = None,
) -> dict[str, dict]:
    """Per column {"log1p", "mean", "std"} from the train split (population std).

    The scalars take one aggregation, over their distinct values (`counted`: `value_counts` of at least
    them, computed here when not given). A column of `vector_lengths` (name -> d) is a vector: its mean
    and std are lists of d values, one per dimension (`fit_vector`), and it is never log1p'd.
    """
    vector_lengths = dict(vector_lengths or {})
    bad = sorted(set(log1p_columns) & set(vector_lengths))
    if bad:
        raise ValueError(f"normalize.log1p names vector feature(s) {bad}: vectors are normalized per dimension only")
    scalars = [c for c in columns if c not in vector_lengths]
    if scalars and counted is None:
        counted = value_counts(train, scalars)
    moments = _counted_moments(counted, scalars, [c for c in scalars if c in log1p_columns]) if scalars else {}
    too_large = [c for c in scalars if moments[c] is None]
    values = {c: _transformed(c, c in log1p_columns) for c in scalars}
    moments.update(zip(too_large, _exact_moments(train, [values[c] for c in too_large]) if too_large else []))
    stats = {}
    for column in scalars:
        mean, std = _fitted_mean_std(train, column, values[column], moments[column])
        stats[column] = {"log1p": column in log1p_columns, "mean": mean, "std": std}
    for column in columns:
        if column in vector_lengths:
            stats[column] = fit_vector(train, column, vector_lengths[column])
    return {column: stats[column] for column in columns}


def fit_vector(train: DataFrame, column: str, length: int) -> dict:
    """{"log1p": False, "mean": [d], "std": [d]} of a vector column over the train rows that have one.

    An item's vector repeats on every impression of the item, so the rows are first counted per
    distinct vector: the exact decimal sums then run over the distinct vectors, weighted by their
    counts, not over every row (a cast to decimal per value and row is slow). Exact, so the result
    does not depend on the partitioning either.
    """
    counted = (
        train.where(F.col(column).isNotNull())
        .groupBy(F.col(column).alias("_vector"))
        .agg(F.count(F.lit(1)).alias("_rows"))
    )
    rows = F.col("_rows").try_cast(_COUNT_EXACT)
    aggs = []
    for i in range(length):
        value = _finite(F.col("_vector").getItem(i))
        aggs += [
            F.sum(F.when(value.isNotNull(), F.col("_rows"))).alias(f"n{i}"),
            F.try_sum(value.try_cast(_VALUE_EXACT) * rows).alias(f"s{i}"),
            F.try_sum((value * value).try_cast(_VALUE_EXACT) * rows).alias(f"q{i}"),
        ]
    row = counted.agg(*aggs).collect()[0]
    means, stds = [], []
    for i in range(length):
        dimension = _finite(F.col(column).getItem(i))
        mean, std = _fitted_mean_std(train, f"{column}[{i}]", dimension, (row[f"n{i}"], row[f"s{i}"], row[f"q{i}"]))
        means.append(mean)
        stds.append(std)
    return {"log1p": False, "mean": means, "std": stds}


def _normalized_vector(column: str, mean: list[float], std: list[float]) -> Column:
    """(x_i - mean_i) / std_i per dimension as array<float>; a null vector (or value) becomes 0."""
    centred = F.zip_with(F.col(column), F.array(*[F.lit(float(m)) for m in mean]), lambda x, m: _finite(x) - m)
    scaled = F.zip_with(centred, F.array(*[F.lit(float(s)) for s in std]), lambda x, s: F.coalesce(x / s, F.lit(0.0)))
    zeros = F.array_repeat(F.lit(0.0), len(mean))
    return F.when(F.col(column).isNull(), zeros).otherwise(scaled).cast("array<float>")


def apply_normalization(df: DataFrame, stats: dict[str, dict]) -> DataFrame:
    """Replace each fitted column by its normalized float value (a vector: array<float>)."""
    for column, s in stats.items():
        if isinstance(s["mean"], list):
            df = df.withColumn(column, _normalized_vector(column, s["mean"], s["std"]))
            continue
        value = (_transformed(column, s["log1p"]) - F.lit(s["mean"])) / F.lit(s["std"])
        df = df.withColumn(column, F.coalesce(value, F.lit(0.0)).cast("float"))
    return df


def fit_bucket_boundaries(
    train: DataFrame,
    columns: list[str],
    num_buckets: int,
    significant_digits: int = 4,
    counted: DataFrame | None = None,
) -> dict[str, list[float]]:
    """Quantile boundaries (deduplicated, ascending) per column, from the train split.

    Exact quantiles of the values rounded to `significant_digits` (integers below 10^digits stay
    exact): one count per distinct rounded value, so the driver receives a bounded histogram,
    never the rows. Unlike an approximate sketch, the result does not depend on how Spark
    partitions the data. The q-quantile is the value at rank ceil(q * n). `counted`: `value_counts`
    of at least these columns (computed here when not given); the rounding runs per distinct value.
    """
    if not columns:
        return {}
    if num_buckets < 2:
        raise ValueError(f"bucketize.num_buckets must be at least 2, got {num_buckets}")
    counted = value_counts(train, columns) if counted is None else counted
    rounded = F.format_string(f"%.{int(significant_digits)}g", F.col("value")).try_cast("double")
    histogram = (
        counted.where(F.col("column").isin(list(columns)))
        .groupBy("column", rounded.alias("value"))
        .agg(F.sum("count").alias("count"))
        .where(F.col("value").isNotNull())
        .collect()
    )
    by_column: dict[str, list[tuple[float, int]]] = {c: [] for c in columns}
    for row in histogram:
        by_column[row["column"]].append((float(row["value"]), int(row["count"])))
    fractions = [i / num_buckets for i in range(1, num_buckets)]
    return {column: sorted(set(histogram_quantiles(by_column[column], fractions))) for column in columns}


def histogram_quantiles(histogram: list[tuple[float, int]], fractions: list[float]) -> list[float]:
    """Exact q-quantiles of the values described by (value, count) pairs: the value at rank ceil(q * n)."""
    histogram = sorted(histogram)
    total = sum(count for _, count in histogram)
    if not total:
        return []
    cumulative = np.cumsum([count for _, count in histogram])
    ranks = [max(1, math.ceil(total * q)) for q in fractions]
    return [histogram[j][0] for j in np.searchsorted(cumulative, ranks, side="left")]


def bucket_index(column: str, boundaries: list[float]) -> Column:
    value = F.col(column).cast("double")
    below = F.size(
        F.filter(
            F.array(*[F.lit(float(b)) for b in boundaries]) if boundaries else F.array().cast("array<double>"),
            lambda b: b <= value,
        )
    )
    return F.when(value.isNull() | F.isnan(value), F.lit(0)).otherwise(below + 1).cast("long")


def apply_buckets(df: DataFrame, boundaries: dict[str, list[float]], suffix: str = "_bucket") -> DataFrame:
    for column, bounds in boundaries.items():
        df = df.withColumn(column + suffix, bucket_index(column, bounds))
    return df
