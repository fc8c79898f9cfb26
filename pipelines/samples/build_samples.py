"""build_samples: raw impression/click logs -> point-in-time features -> sharded TFRecord.

Composition of the pure feature steps in `features/`, plus the I/O around them:
reading RAW, writing to a staging directory, and swapping it into place (pipelines/publish.py).

Two writers fill SAMPLES: our own (the TFRecord shards from the Spark tasks, feature_spec.json,
report.json, _SUCCESS), through tf.io.gfile, which reaches s3:// and hdfs://; and Spark's (rejects/,
vocab/), through its Hadoop file system, which has no s3:// without the hadoop-aws jars. When Spark
cannot write SAMPLES, it writes its parts under `output.spark_scratch` (local or hdfs://) and the job
copies them into the staging before publishing; without that key the job refuses before any work.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import feature_spec
from features import history, labels, split, validate, vocab
from features import items as item_features
from pipelines import publish
from pipelines.config import ConfigError
from pipelines.config_schema import validate_build_config
from pipelines.publish import StagedOutput
from pipelines.samples import fitting, settings, windows
from pipelines.samples.applied_spec import (
    check_spec_fits_config,
    load_applied_spec,
    spec_differences,
    spec_vector_lengths,
)
from pipelines.samples.model_inputs import declared_features, vector_columns
from pipelines.samples.raw_input import InputError, read_raw, type_csv_columns
from pipelines.samples.report import (
    build_report,
    count_by_reason,
    oov_counts,
    spec_splits,
    split_counts,
    write_metadata,
)
from pipelines.samples.runtime import Persisted, Timings, quiet_py4j, sized_partitions
from pipelines.samples.storage import check_spark_reads, scratch_staging, spark_parts_folder
from pipelines.samples.tfrecord import compression_options, write_tfrecords

log = logging.getLogger("build_samples")

# Files that prove a folder is an earlier SAMPLES output (which a rerun may replace).
SAMPLES_MARKERS = [("_SUCCESS", feature_spec.SPEC_FILE)]


class RejectFractionError(RuntimeError):
    pass


class EmptySplitError(RuntimeError):
    pass


# What the job refuses with a clear message (exit code 2), rather than a traceback.
INPUT_ERRORS = (
    InputError,
    validate.SchemaError,
    RejectFractionError,
    EmptySplitError,
    ConfigError,
    fitting.SpecNotApplicable,
)


def _spark_type_to_spec(dtype) -> str:
    from pyspark.sql import types as T

    if isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        return "float32"
    if isinstance(dtype, (T.IntegerType, T.LongType, T.ShortType, T.ByteType, T.BooleanType)):
        return "int64"
    return "string"


def _shard_layout(samples: DataFrame, config: dict) -> DataFrame:
    """The rows of each output shard, in the order they are written.

    Shards by a hash of the impression's identity (`impression_key`, unique), which needs no sort before
    the shuffle as a round robin does. With blocks of rows (`rows_per_record` > 1) each shard is ordered by
    a seeded hash of the same identity: the order does not depend on the order rows arrive in, so the same
    samples make the same shards, row for row."""
    partitions = config["spark"].get("output_partitions")
    key = F.col("impression_key")
    if int(config["tfrecord"]["rows_per_record"]) > 1:
        # A block keeps its rows together in every epoch, and after the per-user pass a partition is
        # grouped by user and time: each shard must be a random sample of rows, in random order.
        partitions = (
            int(partitions) if partitions else int(samples.sparkSession.conf.get("spark.sql.shuffle.partitions"))
        )
        order = F.xxhash64(F.lit(int(config["tfrecord"]["shuffle_seed"])), key)
        return samples.repartition(partitions, key).sortWithinPartitions(order, key)
    return samples.repartition(int(partitions), key) if partitions else samples


def _check_splits_not_empty(imps: DataFrame, valid_start: int, test_start: int) -> None:
    """Fail now, naming the split and the boundaries, rather than leave training an empty split."""
    rows = (
        imps.groupBy("split")
        .agg(F.count(F.lit(1)).alias("n"), F.min("ts").alias("first"), F.max("ts").alias("last"))
        .collect()
    )
    counts = {row["split"]: row["n"] for row in rows}
    empty = [name for name in split.SPLITS if not counts.get(name)]
    if empty:
        first = min((row["first"] for row in rows), default=None)
        last = max((row["last"] for row in rows), default=None)
        raise EmptySplitError(
            f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty: train is ts < "
            f"{_iso(valid_start)}, valid is [{_iso(valid_start)}, {_iso(test_start)}), test is ts >= "
            f"{_iso(test_start)}, and the valid impressions span {_iso(first)} .. {_iso(last)}. "
            "Set split.valid_start and split.test_start (or the fractions) inside that span"
        )


def _iso(seconds) -> str:
    if seconds is None:
        return "nothing"
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


# The split of the impressions before a window's days: read as history events, never written as samples.
CONTEXT = "context"


@dataclass(frozen=True)
class Plan:
    """What one run builds.

    - default: samples of the whole log, split by `split.*`, fitted on the train split (as always);
    - `spec_dir`: apply that earlier fit (`feature_spec.json` + `vocab/`) instead of fitting one;
    - `window`: only the impressions of those days become samples (one split, feature_spec.DAY_SPLIT);
    - `fit_only`: fit, and write the spec (feature_spec.json, vocab/, report.json) without samples; with a
      window, every impression of its days is train.
    """

    spec_dir: str | None = None
    window: windows.Window | None = None
    fit_only: bool = False

    @property
    def splits(self) -> tuple[str, ...]:
        if self.window is None:
            return split.SPLITS
        return ("train",) if self.fit_only else (feature_spec.DAY_SPLIT,)

    def describe(self) -> dict:
        return {
            "mode": "fit_only" if self.fit_only else "samples",
            "days": self.window.days if self.window else None,
            "spec": self.spec_dir,
        }


def _read_events(
    spark: SparkSession, raw_dir: str, dataset: str, fmt: str, window: windows.Window | None
) -> tuple[DataFrame, bool]:
    """(RAW's `dataset`, pruned to the window's days when it is date-partitioned; whether it is).

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
    return (windows.prune_partitions(df, window) if partitioned and window is not None else df), partitioned


def _validate(
    spark: SparkSession,
    raw_dir: str,
    config: dict,
    persist,
    staging: str,
    window: windows.Window | None = None,
    known_lengths: dict[str, int] | None = None,
) -> Validated:
    """Read RAW (the window's events only, with one), quarantine the bad rows the build owns into
    `staging/rejects`, fail past the reject threshold. `known_lengths`: item vector lengths a --spec fixes."""
    fmt, vconf = config["input"]["format"], config["validation"]
    numeric_columns = list(config["items"]["numeric_columns"] or [])
    vectors = {**vector_columns(config), **(known_lengths or {})}
    raw_items = read_raw(spark, raw_dir, "items", fmt)
    inferred = validate.vector_lengths(raw_items, [name for name, length in vectors.items() if length is None])
    vector_lengths = {name: int(length or inferred[name]) for name, length in vectors.items()}
    if vector_lengths:
        log.info("item vectors (column: length): %s", vector_lengths)
    partitioned: dict[str, bool] = {}

    def events(dataset: str) -> DataFrame:
        df, partitioned[dataset] = _read_events(spark, raw_dir, dataset, fmt, window)
        return df

    def checked_events(df: DataFrame, dataset: str) -> DataFrame:
        return (
            validate.normalize_events(df, dataset, vconf["ts_min"], vconf["ts_max"])
            .transform(lambda d: windows.in_window(d, dataset, window, partitioned[dataset]))
            .transform(lambda d: validate.flag_duplicates(d, dataset, persist=persist))
        )

    raw_imps = events("impressions")
    if fmt == "csv":
        raw_imps = type_csv_columns(raw_imps, list(config.get("passthrough") or []))
    passthrough = [
        c for c in (config.get("passthrough") or []) if c in raw_imps.columns and c != windows.PARTITION_COLUMN
    ]
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
    if fraction > float(vconf["max_reject_fraction"]):
        raise RejectFractionError(
            f"{rejected_events} of {events_owned} impression and click rows were rejected "
            f"({fraction:.2%} > validation.max_reject_fraction={vconf['max_reject_fraction']}); "
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


def attribution_window(config: dict) -> int:
    return int(round(float(config["labels"]["attribution_window_minutes"]) * 60))


def _point_in_time_features(
    imps: DataFrame, attributed: DataFrame, raw: Validated, vocabularies, config: dict
) -> DataFrame:
    """Index ids and genres, then the user history and item statistics of every impression."""
    h, max_genres = config["history"], config["items"]["max_genres"]
    window = attribution_window(config)
    lookback = int(round(float(h["lookback_days"]) * 86400))
    recent = int(round(float(config["item_stats"]["recent_days"]) * 86400))
    imps = imps.transform(lambda d: vocab.index_ids(d, vocabularies.frames)).transform(
        lambda d: item_features.genre_features(d, vocabularies.genre_index, max_genres)
    )
    vectors = raw.vector_lengths
    click_events = (
        attributed.select("user_id", "item_id", "ts")
        .transform(lambda d: item_features.join_item_attributes(d, raw.items, [], list(vectors)))
        .transform(lambda d: vocab.apply_vocabulary(d, "item_id", vocabularies.frames["item_id"], "item_idx"))
        .transform(lambda d: item_features.genre_features(d, vocabularies.genre_index, max_genres))
    )
    return imps.transform(
        lambda d: history.user_history(
            d,
            click_events,
            window,
            lookback,
            int(h["max_len"]),
            int(h["top_genres"]),
            int(h["genre_history_len"]),
            vectors,
        )
    ).transform(lambda d: history.item_statistics(d, click_events, lookback, recent))


def _attributed_clicks(raw: Validated, window: int, persist, plan: Plan) -> tuple[DataFrame, DataFrame, int]:
    """(keyed impressions, clicks with the impression they credit, number of orphan clicks the build owns)."""
    keyed = labels.with_impression_key(raw.impressions)
    # The as-of branch shuffles every impression: only worth it when some click lacks an id.
    without_id = raw.clicks.where(F.col("impression_id").isNull()).limit(1).count() > 0
    attributed = persist(labels.attribute_clicks(raw.clicks, keyed, window, match_without_id=without_id))
    orphans = attributed.where(F.col("credited_key").isNull())
    if plan.window is not None:
        orphans = orphans.where(plan.window.owns(F.col("ts")))
    return keyed, attributed, orphans.count()


def _labelled_splits(raw: Validated, keyed, attributed, config: dict, persist, plan: Plan) -> tuple:
    """Labelled impressions with their split and item attributes; the split boundaries (None with a window:
    the build's days are its one split, and the impressions before them are CONTEXT, history only)."""
    numeric_columns = list(config["items"]["numeric_columns"] or [])
    labelled = labels.label_impressions(keyed, attributed)
    if plan.window is None:
        # Boundaries need only `ts`: taken from the unlabelled rows, so the labels are computed once.
        boundaries = split.split_boundaries(raw.impressions, config["split"])
        labelled = split.assign_split(labelled, *boundaries)
    else:
        boundaries = None
        own_split = F.lit(plan.splits[0])
        labelled = labelled.withColumn(
            "split", F.when(plan.window.owns(F.col("ts")), own_split).otherwise(F.lit(CONTEXT))
        )
    imps = persist(
        labelled.transform(
            lambda d: item_features.join_item_attributes(d, raw.items, numeric_columns, list(raw.vector_lengths))
        )
    )
    if boundaries is not None:
        _check_splits_not_empty(imps, *boundaries)
    elif imps.where(F.col("split") != CONTEXT).limit(1).count() == 0:
        raise EmptySplitError(
            f"no valid impressions on {plan.window.days} ({plan.window.time_zone}): "
            f"{raw.rows_owned['impressions']} impressions of those days were read, "
            f"{sum(raw.rejects['impressions'].values())} of them rejected"
        )
    return imps, boundaries


def build_samples(spark: SparkSession, raw_dir: str, output: str, config: dict, plan: Plan | None = None) -> dict:
    """Run the whole job; return the report. Output appears atomically at `output`.

    `plan` says what to build (default: samples of the whole log, fitted on its train split); see Plan.
    `config` is validated first (pipelines/config_schema.py): a bad value is a ConfigError before any work."""
    plan = plan or Plan()
    timings, started = Timings(spark), time.perf_counter()
    config = validate_build_config(config)
    compression = compression_options(config["tfrecord"]["compression"])
    window = attribution_window(config)
    persist = Persisted()
    check_spark_reads(spark, raw_dir)
    applied = load_applied_spec(spark, plan.spec_dir)
    # Name clashes and misuses of the configured item columns fail before any work (lengths do not matter).
    fitting.check_vector_config(
        declared_features(vocab.ID_INDICES, config, dict.fromkeys(vector_columns(config), 1)), config
    )
    if applied:
        check_spec_fits_config(applied, config, plan.spec_dir)
    scratch_folder = spark_parts_folder(spark, raw_dir, output, config)  # refuses before anything is written
    # Refuses an output that overlaps RAW (or the --spec) or holds something else than earlier samples.
    inputs = [raw_dir] + ([plan.spec_dir] if plan.spec_dir else [])
    stage = StagedOutput(output, inputs=inputs, markers=SAMPLES_MARKERS)
    scratch = None
    restore = ExitStack()  # the session's shuffle partitions, as they were before this build
    try:
        fmt = config["input"]["format"]
        partitions = restore.enter_context(
            sized_partitions(
                spark, config, lambda: _read_events(spark, raw_dir, "impressions", fmt, plan.window)[0].count()
            )
        )
        timings.note_memory_settings()
        if scratch_folder is not None:
            scratch = scratch_staging(scratch_folder, stage.final, stage.staging.started)
        spark_dir = scratch.path if scratch else stage.path  # where Spark writes rejects/ and vocab/
        with timings.step("validate") as rows:
            known_lengths = spec_vector_lengths(applied, config) if applied else None
            raw = _validate(spark, raw_dir, config, persist, spark_dir, plan.window, known_lengths)
            rows.update({f"{name} read": count for name, count in raw.rows_read.items()})
        with timings.step("labels"):
            keyed, attributed, orphan_clicks = _attributed_clicks(raw, window, persist, plan)
        with timings.step("split"):
            imps, boundaries = _labelled_splits(raw, keyed, attributed, config, persist, plan)
        with timings.step("fit_vocabularies"):
            if applied:
                fitted = fitting.Fitted.from_spec(
                    applied, fitting.vocabularies_from_spec(applied, spark, plan.spec_dir)
                )
                vocabularies = fitted.vocabularies
            else:
                vocabularies = fitting.fit_vocabularies(
                    imps.where(F.col("split") == "train"), config["vocab"]["min_count"]
                )
            for name, frame in vocabularies.frames.items():
                frame.coalesce(1).write.mode("overwrite").parquet(posixpath.join(spark_dir, "vocab", name))
        with timings.step("features") as rows:
            # Impressions before the build's days (CONTEXT) were history events only: they make no sample.
            features = _point_in_time_features(imps, attributed, raw, vocabularies, config)
            samples = persist(features.where(F.col("split") != CONTEXT))
            num_samples, oov = oov_counts(samples)  # materialized here, so the step timings say where time goes
            rows["samples"] = num_samples
        with timings.step("fit_transform"):
            declared = declared_features(vocabularies.frames, config, raw.vector_lengths)
            if not applied:
                fitted = fitting.fit(samples.where(F.col("split") == "train"), vocabularies, declared, config)
            samples = fitted.transform(samples)
        spec = feature_spec.new_spec(
            fitted.spec_features(declared, list(validate.IDENTITY_COLUMNS) + raw.passthrough),
            vocabularies.spec_entries(),
            compression=compression.tf_type,
            rows_per_record=int(config["tfrecord"]["rows_per_record"]),
            smoothed_ctr=fitted.spec_smoothed_ctr(),
            sample_settings=settings.recorded(config),
        )
        if applied and feature_spec.spec_hash(spec) != feature_spec.spec_hash(applied):
            raise ConfigError(
                f"--spec {plan.spec_dir} (spec hash {feature_spec.spec_hash(applied)}) does not describe the samples "
                f"this config makes (spec hash {feature_spec.spec_hash(spec)}): "
                + "; ".join(spec_differences(applied, spec)[:5])
                + ". Build with the config the spec was fitted with, or fit a new spec (--fit-only)"
            )
        if plan.fit_only:
            per_split = {}
        else:
            with timings.step("write_tfrecords") as rows:
                per_split = split_counts(_write_shards(samples, spec, stage.path, config, plan.splits), plan.splits)
                rows.update({f"{name} rows": entry["rows"] for name, entry in per_split.items()})
        spec = feature_spec.with_splits(spec, spec_splits(per_split, compression.extension))
        where = (raw_dir, stage.final)
        report = build_report(
            spark, where, raw, orphan_clicks, per_split, spec, boundaries, fitted, timings, started, plan, num_samples
        )
        report["oov"] = oov
        report["partitions"] = partitions
        report["config"] = config  # what the spec was fitted (or applied) with: a later --spec build needs the same
        if scratch is not None:
            for part in ("rejects", "vocab"):
                publish.copy_tree(posixpath.join(scratch.path, part), posixpath.join(stage.path, part))
        write_metadata(stage.path, spec, report)
        stage.publish()
        return report
    finally:
        with quiet_py4j():  # after the JVM died of an OutOfMemoryError, each call would log a traceback
            persist.release()
            restore.close()
        stage.close()
        if scratch is not None:
            scratch.close()


def _write_shards(samples: DataFrame, spec: dict, staging: str, config: dict, splits: tuple[str, ...]) -> list:
    for name in splits:
        publish.makedirs(posixpath.join(staging, name))
    features = [(f["name"], f["dtype"]) for f in feature_spec.all_features(spec)]
    return write_tfrecords(
        _shard_layout(samples, config),
        features,
        staging,
        compression=config["tfrecord"]["compression"],
        rows_per_record=int(config["tfrecord"]["rows_per_record"]),
    ).collect()
