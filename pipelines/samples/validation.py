"""The validation step: RAW read once per data set, its rows checked, the bad ones quarantined.

Every row read ends up valid, or a counted reject with its reason (written to `rejects/`); values a rule
nulls are counted by column and reason. The build fails past `validation.max_reject_fraction`.
"""

from __future__ import annotations

import functools
import logging
import posixpath
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features import validate
from pipelines.config_schema import BuildConfig
from pipelines.samples import windows
from pipelines.samples.build_mode import BuildMode
from pipelines.samples.model_inputs import vector_columns
from pipelines.samples.raw_input import InputError, read_raw, type_csv_columns

log = logging.getLogger("build_samples")


def count_by_reason(df: DataFrame) -> tuple[int, int, dict[str, int], dict[str, dict[str, int]]]:
    """(rows read, rows owned, rejects by reason, values nulled by column and reason) in one aggregation;
    rejects and nulled values are counted over the owned rows only (pipelines/samples/windows.py)."""
    rows = (
        df.groupBy("reject_reason", windows.OWNED)
        .agg(F.count(F.lit(1)).alias("_rows"), *validate.nulled_counts(df))
        .collect()
    )
    total = sum(int(row["_rows"]) for row in rows)
    owned = [row for row in rows if row[windows.OWNED]]
    rejected: dict[str, int] = {}
    for row in owned:
        if row["reject_reason"] is not None:
            rejected[row["reject_reason"]] = rejected.get(row["reject_reason"], 0) + int(row["_rows"])
    nulled: dict[str, dict[str, int]] = {}
    for row in owned:
        for key, count in row.asDict().items():
            counted = validate.nulled_count_key(key)
            if counted and count:
                column, reason = counted
                nulled.setdefault(column, {})
                nulled[column][reason] = nulled[column].get(reason, 0) + int(count)
    return total, sum(int(row["_rows"]) for row in owned), dict(sorted(rejected.items())), nulled


class RejectFractionError(RuntimeError):
    pass


def _spark_type_to_spec(dtype) -> str:
    from pyspark.sql import types as T

    if isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        return "float32"
    if isinstance(dtype, (T.IntegerType, T.LongType, T.ShortType, T.ByteType, T.BooleanType)):
        return "int64"
    return "string"


@dataclass
class Validated:
    impressions: DataFrame
    clicks: DataFrame
    items: DataFrame
    rows_read: dict
    rows_owned: dict  # rows whose time lies in the build's days (all rows without --date)
    partitioned: dict[str, bool]  # impressions / clicks: RAW is partitioned by date
    rejects: dict
    nulled: dict  # data set -> column -> reason -> values nulled by rule (features/validate.py)
    passthrough: list[tuple[str, str]]
    vector_lengths: dict[str, int]  # item vector column -> its length


def read_events(spark: SparkSession, raw_dir: str, dataset: str, fmt: str, mode: BuildMode) -> tuple[DataFrame, bool]:
    """(RAW's `dataset`, pruned to the partitions `mode` reads when it is date-partitioned; whether it is).

    InputError when a `date=` folder does not name a day: some builds would read its rows, others not."""
    folder = posixpath.join(raw_dir, dataset)
    names = windows.partition_folders(spark, folder)
    bad = windows.not_days(names)
    if bad:
        raise InputError(
            f"{folder} holds {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}: a date partition is named "
            f"{windows.PARTITION_COLUMN}=YYYY-MM-DD; rename or move the folder"
            f"{'s' if len(bad) > 1 else ''} out of RAW (its rows would belong to no day)"
        )
    df = read_raw(spark, raw_dir, dataset, fmt)
    partitioned = windows.PARTITION_COLUMN in df.columns and bool(names)
    return (mode.prune(df) if partitioned else df), partitioned


def validate_raw(
    spark: SparkSession,
    raw_dir: str,
    config: BuildConfig,
    persist,
    staging: str,
    mode: BuildMode,
    known_lengths: dict[str, int] | None = None,
) -> Validated:
    """Read RAW (the events `mode` reads), quarantine the bad rows the build owns into
    `staging/rejects`, fail past the reject threshold. `known_lengths`: item vector lengths a --spec fixes."""
    fmt, vconf = config.input.format, config.validation
    numeric_columns = list(config.items.numeric_columns or [])
    vectors = {**vector_columns(config), **(known_lengths or {})}
    raw_items = read_raw(spark, raw_dir, "items", fmt)
    inferred = validate.vector_lengths(raw_items, [name for name, length in vectors.items() if length is None])
    vector_lengths = {name: int(length or inferred[name]) for name, length in vectors.items()}
    if vector_lengths:
        log.info("item vectors (column: length): %s", vector_lengths)
    partitioned: dict[str, bool] = {}

    def events(dataset: str) -> DataFrame:
        df, partitioned[dataset] = read_events(spark, raw_dir, dataset, fmt, mode)
        return df

    def checked_events(df: DataFrame, dataset: str) -> DataFrame:
        return (
            validate.normalize_events(df, dataset, vconf.ts_min, vconf.ts_max)
            .transform(lambda d: mode.owned_rows(d, dataset, partitioned[dataset]))
            .transform(lambda d: validate.flag_duplicates(d, dataset, persist=persist))
        )

    raw_imps = events("impressions")
    if fmt == "csv":
        raw_imps = type_csv_columns(raw_imps, list(config.passthrough or []))
    passthrough = [c for c in (config.passthrough or []) if c in raw_imps.columns and c != windows.PARTITION_COLUMN]
    checked = {
        "impressions": persist(checked_events(raw_imps, "impressions")),
        "clicks": persist(checked_events(events("clicks"), "clicks")),
        "items": persist(
            validate.normalize_items(raw_items, numeric_columns, vector_lengths).withColumn(windows.OWNED, F.lit(True))
        ),
    }
    counted = {name: count_by_reason(df) for name, df in checked.items()}
    rows_read = {name: total for name, (total, _, _, _) in counted.items()}
    rows_owned = {name: owned for name, (_, owned, _, _) in counted.items()}
    rejects = {name: by_reason for name, (_, _, by_reason, _) in counted.items()}
    nulled = {name: by_column for name, (_, _, _, by_column) in counted.items() if by_column}
    rejected_events = sum(rejects["impressions"].values()) + sum(rejects["clicks"].values())
    events_owned = rows_owned["impressions"] + rows_owned["clicks"]
    fraction = rejected_events / events_owned if events_owned else 0.0
    log.info("read %s; rejected %s", rows_read, rejects)
    if nulled:
        log.warning("values nulled by rule (data set: column: reason: count): %s", nulled)
    if fraction > vconf.max_reject_fraction:
        raise RejectFractionError(
            f"{rejected_events} of {events_owned} impression and click rows were rejected "
            f"({fraction:.2%} > validation.max_reject_fraction={vconf.max_reject_fraction}); "
            f"by reason: {rejects}. Fix the input or raise the threshold (--set validation.max_reject_fraction=...)"
        )
    all_rejects = functools.reduce(
        DataFrame.unionByName,
        [validate.rejects_of(df.where(F.col(windows.OWNED)), name) for name, df in checked.items()],
    )
    all_rejects.coalesce(1).write.mode("overwrite").parquet(posixpath.join(staging, "rejects"))
    keep = ["user_id", "item_id", "ts", "impression_id"] + (["position"] if "position" in raw_imps.columns else [])
    imps = validate.valid_rows(checked["impressions"]).select(*dict.fromkeys(keep + passthrough))
    clicks = validate.valid_rows(checked["clicks"]).select("user_id", "item_id", "ts", "impression_id")
    metadata_names = dict(validate.IDENTITY_COLUMNS)
    typed = [(c, _spark_type_to_spec(raw_imps.schema[c].dataType)) for c in passthrough if c not in metadata_names]
    items = validate.valid_rows(checked["items"]).drop(windows.OWNED)
    return Validated(imps, clicks, items, rows_read, rows_owned, partitioned, rejects, nulled, typed, vector_lengths)
