"""The scalar fits over distinct values (`value_counts`) against the fits over every row (their reference).

The normalization must keep its exact decimal sums and the buckets their exact histogram: the spec
hash of a build may not change with how the fits are computed.
"""

import random

from pyspark.sql import functions as F

from features import normalize

SCHEMA = "count long, year double, signed double, rare double, huge double, empty double"
COLUMNS = ["count", "year", "signed", "rare", "huge", "empty"]
LOG1P = ["count", "signed"]


def _rows(seed: int, n: int) -> list[tuple]:
    """Tie-heavy values: few distinct ones, negatives, NaN, ±inf and nulls, one column past the bounds
    of the counted sums (1e20) and one with no finite value at all."""
    rng = random.Random(seed)
    odd = [None, float("nan"), float("inf"), float("-inf")]
    return [
        (
            rng.choice([None, 0, 1, 1, 2, 3, 40, 1000]),
            rng.choice([1995.0, 1995.0, 2003.0, 1.0e-7, *odd]),
            rng.choice([-2.5, -0.0, 0.0, 0.1, 0.30000000000000004, 7.123456789012345, *odd]),
            rng.random() * 1e3,  # nearly every value distinct
            rng.choice([1e20, -3e19, 5.0, None]),
            rng.choice(odd),
        )
        for _ in range(n)
    ]


def test_counted_moments_are_the_exact_row_sums(spark):
    train = spark.createDataFrame(_rows(3, 500), SCHEMA)
    counted = normalize.value_counts(train, COLUMNS)
    got = normalize._counted_moments(counted, COLUMNS, LOG1P)
    want = normalize._exact_moments(train, [normalize._transformed(c, c in LOG1P) for c in COLUMNS])
    for column, row_moments in zip(COLUMNS, want):
        if column == "huge":
            assert got[column] is None  # past the bounds: summed row by row instead
        else:
            assert got[column] == row_moments, column
    assert got["empty"] == (0, None, None)


def test_fitted_statistics_do_not_change_with_the_counted_sums(spark):
    train = spark.createDataFrame(_rows(5, 400), SCHEMA)
    got = normalize.fit_normalization(train, COLUMNS, LOG1P)
    for column in COLUMNS:
        value = normalize._transformed(column, column in LOG1P)
        (moments,) = normalize._exact_moments(train, [value])
        mean, std = normalize._fitted_mean_std(train, column, value, moments)
        assert got[column] == {"log1p": column in LOG1P, "mean": mean, "std": std}, column
    assert got["year"]["mean"] != 0.0 and got["empty"] == {"log1p": False, "mean": 0.0, "std": 1.0}


def _row_histogram_boundaries(train, columns, num_buckets, digits=4):
    """The histogram rounded row by row, as the fit did before it read distinct values."""
    out = {}
    for column in columns:
        rounded = F.format_string(f"%.{digits}g", normalize._finite(column)).try_cast("double").alias("value")
        rows = train.select(rounded).where(F.col("value").isNotNull()).groupBy("value").count().collect()
        histogram = [(float(r["value"]), int(r["count"])) for r in rows]
        fractions = [i / num_buckets for i in range(1, num_buckets)]
        out[column] = sorted(set(normalize.histogram_quantiles(histogram, fractions)))
    return out


def test_bucket_boundaries_from_counted_values_are_the_row_histograms(spark):
    train = spark.createDataFrame(_rows(9, 600), SCHEMA)
    counted = normalize.value_counts(train, COLUMNS)
    got = normalize.fit_bucket_boundaries(train, COLUMNS, 5, counted=counted)
    assert got == _row_histogram_boundaries(train, COLUMNS, 5)
    assert len(got["rare"]) == 4 and got["empty"] == []
