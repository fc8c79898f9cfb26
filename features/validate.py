"""Validation of the raw logs: schema checks that fail fast, row checks that quarantine.

A missing required column or a column of the wrong type raises `SchemaError`
naming it. Row-level problems never fail the job by themselves: the row gets a
`reject_reason` and ends up in `SAMPLES/rejects/`. Reasons:

- `null_user_id`, `null_item_id`: the id is null or empty after trimming all Unicode whitespace
  (space, tab, no-break space, ideographic space, ...). The trimmed id is the id: `"u1\t"` is `"u1"`.
- `unparsable_ts`: `ts` is neither a number, a timestamp nor a parsable string (NaN included).
- `ts_out_of_range`: `ts` lies outside `[ts_min, ts_max)` (e.g. milliseconds given as seconds), ±inf
  and numbers too large for a 64-bit count of seconds included.
- `duplicate_impression`: a repeat of an impression. An impression id names a request (a slate of
  items, one row per item), so a row with an id is identified by `(impression_id, user_id, item_id)`;
  one without by `(user_id, item_id, ts, position)`. The earliest copy is kept.
- `duplicate_click`: an exact repeat of a click (same user, item, ts and impression id).
- `unparsable_vector`, `wrong_vector_length`, `non_finite_vector`: an item vector (a column named in
  `items.vector_columns`) with a value that is not a number, another length than the column's, or a
  NaN / ±inf. A null vector is no reject: the item has no vector, as an item missing from RAW/items.
- `duplicate_item`: a repeat of an `item_id`; the first row in file order is kept, among the rows
  that are not rejected for another reason.

Values that are unusable but do not make the row wrong become null by rule, and are counted (by column
and reason, in `report.json`'s `nulled_values`), never imputed silently. Numbers given as text (CSV)
are read the way Parquet's values would be: `1977`, `1977.0`, `1.977e3` and `" 1977 "` all mean 1977.

- `position` (impressions) and `release_year` (items) must be whole numbers: `not_an_integer`
  (`2.5`), `out_of_range` (outside a 32-bit int; a negative position too), `unparsable` (`abc`, NaN).
  The impression stays a sample, with no position (the padding index).
- the numeric item columns (`items.numeric_columns`): `unparsable` (`abc`, NaN) and `non_finite` (±inf).
"""

from __future__ import annotations

from typing import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

REQUIRED = {
    "impressions": ("user_id", "item_id", "ts"),
    "clicks": ("user_id", "item_id", "ts"),
    "items": ("item_id", "genres"),
}
ID_TYPES = (T.StringType, T.IntegerType, T.LongType, T.ShortType, T.ByteType)
TS_TYPES = (
    T.StringType,
    T.IntegerType,
    T.LongType,
    T.ShortType,
    T.FloatType,
    T.DoubleType,
    T.DecimalType,
    T.TimestampType,
    T.TimestampNTZType,
    T.DateType,
)
REJECT_COLUMNS = ("source", "reason", "user_id", "item_id", "ts_raw", "row_json")
RAW = "_raw"  # the input row, untouched
# The event's identity, kept in every sample as metadata (never a model input).
IDENTITY_COLUMNS = (("user_id", "string"), ("item_id", "string"), ("ts", "int64"))


# A value nulled by rule gets its reason in the column NULLED_PREFIX + column (null: kept as it was).
NULLED_PREFIX = "_nulled_"
NULLED_REASONS = ("unparsable", "not_an_integer", "out_of_range", "non_finite")
INT32 = (-(2**31), 2**31 - 1)


class SchemaError(ValueError):
    pass


def check_schema(df: DataFrame, dataset: str) -> None:
    """Fail at once, naming the column, when a required column is missing or mistyped."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    for column in REQUIRED[dataset]:
        if column not in fields:
            raise SchemaError(f"{dataset}: required column '{column}' is missing (columns: {', '.join(fields)})")
    for column in ("user_id", "item_id", "impression_id"):
        if column in fields and not isinstance(fields[column], ID_TYPES):
            raise SchemaError(f"{dataset}: column '{column}' has type {fields[column].simpleString()}, expected string")
    if "ts" in fields and not isinstance(fields["ts"], TS_TYPES):
        raise SchemaError(
            f"{dataset}: column 'ts' has type {fields['ts'].simpleString()}, expected epoch seconds or a timestamp"
        )
    if "position" in fields and not isinstance(
        fields["position"], (T.IntegerType, T.LongType, T.ShortType, T.ByteType, T.StringType)
    ):
        raise SchemaError(f"{dataset}: column 'position' has type {fields['position'].simpleString()}, expected int")
    if "genres" in fields and not isinstance(fields["genres"], (T.StringType, T.ArrayType)):
        raise SchemaError(
            f"{dataset}: column 'genres' has type {fields['genres'].simpleString()}, "
            "expected a '|'-separated string or an array of strings"
        )


def trim_space(value: Column) -> Column:
    """`value` without leading and trailing Unicode whitespace (Spark's `trim` strips only ' ')."""
    return F.regexp_replace(value, r"(?U)^\s+|\s+$", "")


def _clean_id(column: str) -> Column:
    value = trim_space(F.col(column).cast("string"))
    return F.when(value == "", F.lit(None)).otherwise(value)


def _as_double(df: DataFrame, column: str) -> tuple[Column, Column]:
    """(the value as a double, whether one was given): text is trimmed, and empty text is no value."""
    if isinstance(df.schema[column].dataType, T.StringType):
        text = trim_space(F.col(column))
        return text.try_cast("double"), text.isNotNull() & (text != "")
    return F.col(column).try_cast("double"), F.col(column).isNotNull()


def _is_nan(value: Column) -> Column:
    return F.coalesce(F.isnan(value), F.lit(False))


def whole_number(df: DataFrame, column: str, low: int = INT32[0], high: int = INT32[1]) -> tuple[Column, Column]:
    """(the column as an int, the reason it was nulled) for a whole number in [low, high].

    Text is read as a number first, so `1977.0` and `1.977e3` are 1977; `1977.5` is not_an_integer.
    """
    number, given = _as_double(df, column)
    reason = (
        F.when(~given, F.lit(None))
        .when(number.isNull() | _is_nan(number), F.lit("unparsable"))
        .when((number < low) | (number > high), F.lit("out_of_range"))  # ±inf too
        .when(number != F.floor(number), F.lit("not_an_integer"))
    )
    return F.when(given & reason.isNull(), number.try_cast("int")), reason


def finite_number(df: DataFrame, column: str) -> tuple[Column, Column]:
    """(the column as a double, the reason it was nulled): NaN and text that is no number are
    unparsable, ±inf non_finite."""
    number, given = _as_double(df, column)
    reason = (
        F.when(~given, F.lit(None))
        .when(number.isNull() | _is_nan(number), F.lit("unparsable"))
        .when(F.abs(number) == float("inf"), F.lit("non_finite"))
    )
    return F.when(reason.isNull(), number), reason


def _with_checked_number(df: DataFrame, column: str, parse) -> DataFrame:
    value, reason = parse(df, column)
    return df.withColumn(NULLED_PREFIX + column, reason).withColumn(column, value)


def _seconds_as_double(df: DataFrame) -> Column:
    """`ts` as epoch seconds in a double (may be ±inf or huge); null when it cannot be parsed or is NaN.

    A double, not a long: Spark runs in ANSI mode, where casting ±inf or 1e19 to a long aborts
    the whole job. The range check happens on the double, the cast to long only after it.
    """
    dtype = df.schema["ts"].dataType
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return F.unix_timestamp(F.col("ts").cast("timestamp")).cast("double")
    if isinstance(dtype, T.StringType):
        text = trim_space(F.col("ts"))
        as_number = text.try_cast("double")
        # Only ISO dates/times: Spark would otherwise read "12:00" as today at noon.
        as_time = F.when(text.rlike(r"^\d{4}-\d{2}-\d{2}"), F.unix_timestamp(F.try_to_timestamp(text)))
        value = F.coalesce(as_number, as_time.cast("double"))
    else:
        value = F.col("ts").cast("double")
    return F.when(~F.isnan(value), value)


def _epoch(date_text: str) -> Column:
    return F.unix_timestamp(F.to_timestamp(F.lit(date_text))).cast("double")


def _raw_row(df: DataFrame) -> Column:
    """The row as it came in, as a struct: turned into JSON only for the rejects that need it."""
    return F.struct(*[F.col(c) for c in df.columns])


def normalize_events(df: DataFrame, dataset: str, ts_min: str, ts_max: str) -> DataFrame:
    """Impressions or clicks with clean ids, `ts` in epoch seconds and a `reject_reason` (null = valid).

    Keeps the original row as the struct `_raw` so that a reject can be written out exactly as
    it came in.
    """
    check_schema(df, dataset)
    out = df.withColumn(RAW, _raw_row(df))
    out = out.withColumn("user_id", _clean_id("user_id")).withColumn("item_id", _clean_id("item_id"))
    if "impression_id" in df.columns:
        out = out.withColumn("impression_id", _clean_id("impression_id"))
    else:
        out = out.withColumn("impression_id", F.lit(None).cast("string"))
    if "position" in df.columns:
        out = _with_checked_number(out, "position", lambda d, c: whole_number(d, c, 0, INT32[1]))
    seconds = F.col("_ts_seconds")
    out = out.withColumn("_ts_seconds", _seconds_as_double(df))
    # The bounds are whole seconds, so floor(x) < ts_max exactly when x < ts_max.
    in_range = (seconds >= _epoch(ts_min)) & (seconds < _epoch(ts_max))
    reason = (
        F.when(F.col("user_id").isNull(), F.lit("null_user_id"))
        .when(F.col("item_id").isNull(), F.lit("null_item_id"))
        .when(seconds.isNull(), F.lit("unparsable_ts"))
        .when(~in_range, F.lit("ts_out_of_range"))
    )
    out = out.withColumn("reject_reason", reason)
    return out.withColumn("ts", F.when(in_range, F.floor(seconds).cast("long"))).drop("_ts_seconds")


def impression_identity(impressions: DataFrame) -> Column:
    """What identifies an impression row, as one string.

    An impression id names a request that shows several items (a slate): the row is the id's
    impression of one item to one user. Rows without an id are identified by their content.
    """
    position = F.col("position").cast("string") if "position" in impressions.columns else F.lit(None)
    return F.when(
        F.col("impression_id").isNotNull(),
        F.concat_ws("\u0001", F.lit("id"), F.col("impression_id"), F.col("user_id"), F.col("item_id")),
    ).otherwise(
        F.concat_ws("\u0001", F.lit("row"), F.col("user_id"), F.col("item_id"), F.col("ts").cast("string"), position),
    )


def _event_identity(df: DataFrame, dataset: str) -> Column:
    if dataset == "clicks":
        # A click log may legitimately repeat an impression_id (several clicks on one impression):
        # only an exact repeat of the same event is a duplicate.
        return F.concat_ws(
            "\u0001",
            F.col("user_id"),
            F.col("item_id"),
            F.col("ts").cast("string"),
            F.coalesce(F.col("impression_id"), F.lit("")),
        )
    return impression_identity(df)


def _rank_copies(df: DataFrame, dataset: str) -> DataFrame:
    """The window that ranks the copies of one event; the earliest copy (then the smallest row) is kept."""
    reason = {"impressions": "duplicate_impression", "clicks": "duplicate_click"}[dataset]
    valid = F.col("reject_reason").isNull()
    # Ties between copies are broken by the raw values, so the kept copy does not depend on the
    # partitioning; only atomic columns, because maps cannot be ordered.
    raw_fields = df.schema[RAW].dataType.fields
    tie_break = F.struct(*[F.col(RAW).getField(f.name) for f in raw_fields if isinstance(f.dataType, T.AtomicType)])
    order = Window.partitionBy(valid, _event_identity(df, dataset)).orderBy(F.col("ts"), tie_break)
    rank = F.row_number().over(order)
    return df.withColumn(
        "reject_reason",
        F.when(valid & (rank > 1), F.lit(reason)).otherwise(F.col("reject_reason")),
    )


_CANDIDATE = "_duplicate_candidate"
# Candidate keys up to this many are broadcast; past it, every row goes through the window.
BROADCAST_CANDIDATES = 2_000_000


def flag_duplicates(
    df: DataFrame,
    dataset: str,
    broadcast_limit: int = BROADCAST_CANDIDATES,
    persist: Callable[[DataFrame], DataFrame] | None = None,
) -> DataFrame:
    """Mark repeats among otherwise valid rows; the earliest copy (then the smallest row) is kept.

    Ranking every row in a window would shuffle every row with its raw copy. Instead a narrow count
    of a 64-bit hash of each valid row's identity finds the few keys seen more than once (a hash
    collision only makes a candidate, never a reject); only the candidate rows go through the
    window. This runs one Spark job to count the candidates: when there are more than
    `broadcast_limit`, all rows take the window instead. `persist` (the caller's, who releases it)
    keeps the candidates that job found, so the join does not read and hash every row again.
    """
    valid = F.col("reject_reason").isNull()
    hashed = df.withColumn(_CANDIDATE, F.when(valid, F.xxhash64(_event_identity(df, dataset))))
    candidates = (
        hashed.where(F.col(_CANDIDATE).isNotNull())
        .groupBy(_CANDIDATE)
        .count()
        .where(F.col("count") > 1)
        .select(_CANDIDATE, F.lit(True).alias("_repeated"))
    )
    if persist is not None:
        candidates = persist(candidates)
    if candidates.count() > broadcast_limit:
        return _rank_copies(df, dataset)
    marked = hashed.join(F.broadcast(candidates), on=_CANDIDATE, how="left")
    repeated = F.coalesce(F.col("_repeated"), F.lit(False))
    single = marked.where(~repeated)
    ranked = marked.where(repeated).transform(lambda d: _rank_copies(d, dataset))
    return single.unionByName(ranked).drop(_CANDIDATE, "_repeated")


def validate_events(
    df: DataFrame, dataset: str, ts_min: str, ts_max: str, broadcast_limit: int = BROADCAST_CANDIDATES
) -> DataFrame:
    return normalize_events(df, dataset, ts_min, ts_max).transform(
        lambda d: flag_duplicates(d, dataset, broadcast_limit)
    )


def _check_vector_column(fields: dict, column: str) -> None:
    if column not in fields:
        raise SchemaError(f"items: vector column '{column}' named in the config is missing")
    dtype = fields[column]
    if isinstance(dtype, T.StringType) or (
        isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, (T.NumericType, T.StringType))
    ):
        return
    raise SchemaError(
        f"items: column '{column}' has type {dtype.simpleString()}, expected an array of numbers "
        "(or, in CSV, a string of numbers separated by '|', ',' or spaces)"
    )


def vector_values(df: DataFrame, column: str) -> Column:
    """An item vector column as array<double>: an element that is not a number becomes null.

    Arrays of numbers are cast; a string (CSV) is split on '|', ',' or whitespace, with optional
    surrounding brackets ("[0.1, 0.2]", "0.1|0.2"). A null stays null.
    """
    dtype = df.schema[column].dataType
    if isinstance(dtype, T.StringType):
        text = F.regexp_replace(F.trim(F.col(column)), r"^\[|\]$", "")
        values = F.filter(F.split(F.trim(text), r"[|,\s]+"), lambda v: v != "")
        return F.transform(values, lambda v: v.try_cast("double"))
    return F.transform(F.col(column), lambda v: v.try_cast("double"))


def vector_lengths(df: DataFrame, columns: list[str]) -> dict[str, int]:
    """The length of each item vector column: its most frequent length among the non-null rows (ties:
    the smaller). One aggregation; the driver receives one row per distinct (column, length)."""
    if not columns:
        return {}
    fields = {f.name: f.dataType for f in df.schema.fields}
    for column in columns:
        _check_vector_column(fields, column)
    sizes = F.explode(
        F.array(
            *[
                F.struct(F.lit(column).alias("column"), F.size(vector_values(df, column)).alias("length"))
                for column in columns
            ]
        )
    ).alias("v")
    rows = (
        df.select(sizes)
        .select("v.column", "v.length")
        .where(F.col("length") > 0)
        .groupBy("column", "length")
        .count()
        .collect()
    )
    best: dict[str, tuple[int, int]] = {}
    for row in rows:
        key = (int(row["count"]), -int(row["length"]))
        if row["column"] not in best or key > best[row["column"]]:
            best[row["column"]] = key
    missing = [column for column in columns if column not in best]
    if missing:
        raise SchemaError(
            f"items: vector column(s) {', '.join(missing)} hold no vector, so their length is unknown; "
            "give it in the config, e.g. items.vector_columns={" + f"{missing[0]}: 128" + "}"
        )
    return {column: -best[column][1] for column in columns}


def _vector_reason(values: Column, length: int) -> Column:
    """Why a parsed vector is rejected (null: it is fine, or null itself)."""
    return (
        F.when(values.isNull(), F.lit(None))
        .when(F.exists(values, lambda v: v.isNull()), F.lit("unparsable_vector"))
        .when(F.size(values) != length, F.lit("wrong_vector_length"))
        .when(F.exists(values, lambda v: F.isnan(v) | (F.abs(v) == float("inf"))), F.lit("non_finite_vector"))
    )


def normalize_items(
    df: DataFrame, numeric_columns: list[str], vector_columns: dict[str, int] | None = None
) -> DataFrame:
    """Items with a clean id, `genres` as an array of trimmed non-empty strings, the numeric columns as
    doubles, each vector column (name -> length) as array<float>, and a `reject_reason`."""
    check_schema(df, "items")
    vector_columns = dict(vector_columns or {})
    fields = {f.name: f.dataType for f in df.schema.fields}
    for column in numeric_columns:
        if column not in fields:
            raise SchemaError(f"items: numeric column '{column}' named in the config is missing")
        if not isinstance(fields[column], T.NumericType) and not isinstance(fields[column], T.StringType):
            raise SchemaError(f"items: column '{column}' has type {fields[column].simpleString()}, expected a number")
    for column in vector_columns:
        _check_vector_column(fields, column)
    # File order, taken before any shuffle: path, then the row's place in it (a file's splits are
    # numbered in offset order, so the monotonic id grows along the file).
    out = (
        df.withColumn(RAW, _raw_row(df))
        .withColumn("item_id", _clean_id("item_id"))
        .withColumn("_file", F.input_file_name())
        .withColumn("_row", F.monotonically_increasing_id())
    )
    genres = F.col("genres") if isinstance(fields["genres"], T.ArrayType) else F.split(F.col("genres"), r"\|")
    genres = F.filter(F.transform(genres, lambda g: F.trim(g)), lambda g: g.isNotNull() & (g != ""))
    out = out.withColumn("genres", F.coalesce(genres, F.array().cast("array<string>")))
    if "release_year" in fields:
        out = _with_checked_number(out, "release_year", whole_number)
    else:
        out = out.withColumn("release_year", F.lit(None).cast("int"))
    for column in numeric_columns:
        out = _with_checked_number(out, column, finite_number)
    reason = F.when(F.col("item_id").isNull(), F.lit("null_item_id"))
    for column, length in vector_columns.items():
        out = out.withColumn(column, vector_values(df, column))
        problem = _vector_reason(F.col(column), int(length))
        reason = reason.when(problem.isNotNull(), problem)
    out = out.withColumn("reject_reason", reason)
    # The first copy in file order among the rows not rejected for another reason is kept.
    valid = F.col("reject_reason").isNull()
    order = Window.partitionBy(valid, F.col("item_id")).orderBy(F.col("_file"), F.col("_row"))
    out = out.withColumn(
        "reject_reason",
        F.when(valid & (F.row_number().over(order) > 1), F.lit("duplicate_item")).otherwise(F.col("reject_reason")),
    )
    for column in vector_columns:
        out = out.withColumn(column, F.col(column).cast("array<float>"))
    keep = ["item_id", "genres", "release_year", *numeric_columns, *vector_columns, RAW]
    return out.select(*keep, *nulled_columns(out), "reject_reason")


def rejects_of(df: DataFrame, source: str) -> DataFrame:
    """The rejected rows in the common rejects layout."""
    cols = set(df.columns)
    return df.where(F.col("reject_reason").isNotNull()).select(
        F.lit(source).alias("source"),
        F.col("reject_reason").alias("reason"),
        (F.col("user_id") if "user_id" in cols else F.lit(None)).cast("string").alias("user_id"),
        F.col("item_id").cast("string").alias("item_id"),
        (F.col(f"{RAW}.ts") if "user_id" in cols else F.lit(None)).cast("string").alias("ts_raw"),
        F.to_json(F.col(RAW)).alias("row_json"),
    )


def nulled_columns(df: DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(NULLED_PREFIX)]


def nulled_counts(df: DataFrame) -> list[Column]:
    """Aggregations counting, per checked column and reason, the values nulled in rows not rejected;
    aliased `_nulled_<column>|<reason>` (read back by `nulled_count_key`)."""
    kept = F.col("reject_reason").isNull()
    return [
        F.sum(F.when(kept & (F.col(c) == reason), 1).otherwise(0)).alias(f"{c}|{reason}")
        for c in nulled_columns(df)
        for reason in NULLED_REASONS
    ]


def nulled_count_key(alias: str) -> tuple[str, str] | None:
    """(column, reason) of an alias made by `nulled_counts`; None for any other name."""
    if not alias.startswith(NULLED_PREFIX):
        return None
    column, reason = alias[len(NULLED_PREFIX) :].rsplit("|", 1)
    return column, reason


def valid_rows(df: DataFrame) -> DataFrame:
    return df.where(F.col("reject_reason").isNull()).drop("reject_reason", RAW, *nulled_columns(df))
