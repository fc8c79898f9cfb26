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
import json
import logging
import posixpath
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import feature_spec
from features import history, labels, split, validate, vocab
from features import items as item_features
from pipelines import publish
from pipelines.config import ConfigError
from pipelines.config_schema import validate_build_config
from pipelines.publish import OutputRefused, StagedOutput
from pipelines.samples import fitting, settings, windows
from pipelines.samples.raw_input import InputError, read_raw, type_csv_columns
from pipelines.samples.spark import memory_settings, spark_settings
from pipelines.samples.tfrecord import compression_options, write_tfrecords

log = logging.getLogger("build_samples")

# Files that prove a folder is an earlier SAMPLES output (which a rerun may replace).
SAMPLES_MARKERS = [("_SUCCESS", feature_spec.SPEC_FILE)]


class RejectFractionError(RuntimeError):
    pass


class EmptySplitError(RuntimeError):
    pass


class OutOfMemory(RuntimeError):
    """A step ran out of JVM heap; the message names the step and the setting to raise."""


# How a failed Spark action says that memory ran out: the task's own error, or the context stopped by it.
_OUT_OF_MEMORY_SIGNS = ("java.lang.OutOfMemoryError", "SparkContext was shut down", "stopped SparkContext")


def _ran_out_of_memory(exc: BaseException) -> bool:
    try:
        text = str(exc)  # a Py4JJavaError's text holds the Java exception and its causes
    except Exception:  # the JVM is gone: its text cannot be fetched
        text = repr(exc)
    return any(sign in text for sign in _OUT_OF_MEMORY_SIGNS)


# What the job refuses with a clear message (exit code 2), rather than a traceback.
INPUT_ERRORS = (
    InputError,
    validate.SchemaError,
    RejectFractionError,
    EmptySplitError,
    ConfigError,
    fitting.SpecNotApplicable,
)


class Timings:
    def __init__(self, spark: SparkSession | None = None):
        self.seconds: dict[str, float] = {}
        self.spark = spark
        self.advice: str | None = None  # read while the session is alive: after an OOM the JVM may be gone

    def note_memory_settings(self) -> None:
        """Read the settings to name if memory runs out, once the build has set them."""
        self.advice = memory_settings(self.spark)

    @contextmanager
    def step(self, name: str):
        """Log the step's start and its seconds at the end, with the rows the step put in the dict it yields
        (counts the job has anyway: no Spark action is added to count). A step that runs out of memory
        raises OutOfMemory, naming the step and the setting to raise, instead of Spark's traceback."""
        log.info("step %s ...", name)
        start = time.perf_counter()
        rows: dict[str, int] = {}
        try:
            with _jobs_named(self.spark, name):
                yield rows
        except Exception as exc:
            with _quiet_py4j():  # reading a Py4JJavaError's text calls the JVM, which may be gone
                out_of_memory = self.spark is not None and _ran_out_of_memory(exc)
            if not out_of_memory:
                raise
            advice = self.advice or "raise spark.driver.memory (local mode) or spark.executor.memory (a cluster)"
            raise OutOfMemory(
                f"step {name} ran out of memory (java.lang.OutOfMemoryError in the Spark log above); "
                f"nothing was published. {advice[0].upper()}{advice[1:]}"
            ) from None
        self.seconds[name] = round(time.perf_counter() - start, 3)
        counted = "".join(f", {what} {count:,}" for what, count in rows.items())
        log.info("step %s done in %.1fs%s", name, self.seconds[name], counted)


_JOB_PROPERTIES = ("spark.jobGroup.id", "spark.job.description")


@contextmanager
def _jobs_named(spark: SparkSession | None, step: str):
    """The step's Spark jobs in the job group `build_samples:STEP` (the Spark UI and the event log then say
    which step ran each job); the caller's own group and description come back after."""
    if spark is None:
        yield
        return
    context = spark.sparkContext
    before = {key: context.getLocalProperty(key) for key in _JOB_PROPERTIES}
    context.setJobGroup(f"build_samples:{step}", f"build_samples: step {step}")
    try:
        yield
    finally:
        with _quiet_py4j():  # the JVM may be gone (out of memory): keep the step's own error
            try:
                for key, value in before.items():
                    context.setLocalProperty(key, value)
            except Exception as exc:
                log.warning("could not restore the Spark job group: %s", str(exc).splitlines()[0][:200])


def _py4j_command_error(record: logging.LogRecord) -> bool:
    # py4j logs each failed call with its traceback on the root logger ("Exception while sending command.").
    return record.name == "root" and str(record.msg).startswith("Exception while sending command")


@contextmanager
def _quiet_py4j():
    """Keep py4j's tracebacks out of cleanup code that logs its own failures (the JVM may be gone)."""
    root, py4j = logging.getLogger(), logging.getLogger("py4j")
    level = py4j.level
    py4j.setLevel(logging.CRITICAL)

    def keep(record: logging.LogRecord) -> bool:
        return not _py4j_command_error(record)

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
        py4j.setLevel(level)


def _count_by_reason(df: DataFrame) -> tuple[int, int, dict[str, int], dict[str, dict[str, int]]]:
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


class _Persisted:
    """The frames a run persists, released when it ends.

    On local disk only: a block is written and read back as a stream, so a task's memory does not grow
    with its partition. In memory, a partition was one block unrolled in the heap, and its columnar
    batches competed with the sorts of the same task: 10M impressions failed with the heap full
    (docs/memory.md). Measured at 1M impressions, the disk level was not slower (BENCHMARKS.md)."""

    def __init__(self):
        self.frames: list[DataFrame] = []

    def __call__(self, df: DataFrame) -> DataFrame:
        self.frames.append(df.persist(StorageLevel.DISK_ONLY))
        return df

    def release(self) -> None:
        for df in self.frames:
            try:
                df.unpersist()
            except Exception as exc:  # e.g. the context stopped after running out of memory: keep that error
                log.warning("could not release a persisted frame: %s", str(exc).splitlines()[0][:200])


@dataclass
class _Validated:
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


def _vector_columns(config: dict) -> dict[str, int | None]:
    """`items.vector_columns` (validated by the config schema): a list of names, whose lengths are
    inferred from the data, or {name: length or null}."""
    value = config["items"].get("vector_columns") or []
    return dict(value) if isinstance(value, dict) else dict.fromkeys(value)


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


SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"


def shuffle_partitions_for(impressions: int, per_partition: int, parallelism: int) -> int:
    """Partitions that hold at most `per_partition` of `impressions` each, and at least one per core."""
    return max(int(parallelism), -(-int(impressions) // int(per_partition)))


@contextmanager
def _sized_partitions(spark: SparkSession, config: dict, count_impressions):
    """Set spark.sql.shuffle.partitions for one build, and yield the choice for report.json.

    What the session already has wins (spark-submit --conf, spark-defaults.conf, the test's session);
    then the config's `spark.shuffle_partitions`; with `auto`, one partition per
    `spark.impressions_per_partition` impressions read (a count that Parquet answers from its footers),
    so that a task's rows do not grow with the data. The session's setting is restored at the end."""
    preset = spark.conf.getAll.get(SHUFFLE_PARTITIONS)
    if preset is not None:
        choice = {"shuffle_partitions": int(preset), "chosen_by": f"{SHUFFLE_PARTITIONS} of the Spark session"}
        log.info("shuffle partitions: %d (%s)", choice["shuffle_partitions"], choice["chosen_by"])
        yield choice
        return
    configured = config["spark"]["shuffle_partitions"]
    if configured != "auto":
        choice = {"shuffle_partitions": int(configured), "chosen_by": "spark.shuffle_partitions of the config"}
    else:
        impressions, per_partition = int(count_impressions()), int(config["spark"]["impressions_per_partition"])
        parallelism = spark.sparkContext.defaultParallelism
        choice = {
            "shuffle_partitions": shuffle_partitions_for(impressions, per_partition, parallelism),
            "chosen_by": "auto",
            "impressions": impressions,
            "impressions_per_partition": per_partition,
            "default_parallelism": parallelism,
        }
    log.info(
        "shuffle partitions: %d (%s)",
        choice["shuffle_partitions"],
        choice["chosen_by"]
        if configured != "auto"
        else f"auto: {choice['impressions']:,} impressions read, at most {choice['impressions_per_partition']:,} "
        f"per partition, at least {choice['default_parallelism']} (one per core)",
    )
    spark.conf.set(SHUFFLE_PARTITIONS, str(choice["shuffle_partitions"]))
    try:
        yield choice
    finally:
        try:
            spark.conf.unset(SHUFFLE_PARTITIONS)
        except Exception as exc:  # the JVM is gone (it ran out of memory): keep the build's own error
            log.warning("could not restore %s: %s", SHUFFLE_PARTITIONS, str(exc).splitlines()[0][:200])


def _validate(
    spark: SparkSession,
    raw_dir: str,
    config: dict,
    persist,
    staging: str,
    window: windows.Window | None = None,
    known_lengths: dict[str, int] | None = None,
) -> _Validated:
    """Read RAW (the window's events only, with one), quarantine the bad rows the build owns into
    `staging/rejects`, fail past the reject threshold. `known_lengths`: item vector lengths a --spec fixes."""
    fmt, vconf = config["input"]["format"], config["validation"]
    numeric_columns = list(config["items"]["numeric_columns"] or [])
    vectors = {**_vector_columns(config), **(known_lengths or {})}
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
    counted = {name: _count_by_reason(df) for name, df in checked.items()}
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
    return _Validated(imps, clicks, items, rows_read, rows_owned, partitioned, rejects, nulled, typed, vector_lengths)


def _attribution_window(config: dict) -> int:
    return int(round(float(config["labels"]["attribution_window_minutes"]) * 60))


def _point_in_time_features(
    imps: DataFrame, attributed: DataFrame, raw: _Validated, vocabularies, config: dict
) -> DataFrame:
    """Index ids and genres, then the user history and item statistics of every impression."""
    h, max_genres = config["history"], config["items"]["max_genres"]
    window = _attribution_window(config)
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


# Columns the job itself gives the impressions: an item column may not take one of these names.
_PIPELINE_COLUMNS = {"user_id", "item_id", "ts", "impression_id", "position", "label", "split", "genres", "genre_idxs"}


def _declared_features(vocabulary_names, config: dict, vector_lengths: dict[str, int]) -> list:
    """Every model input, as its step declares it, in the order of the steps (ConfigError when an
    item column would make a feature twice or take a column the job makes)."""
    h, it = config["history"], config["items"]
    item_columns = list(it["numeric_columns"] or []) + list(vector_lengths)
    taken = sorted(set(item_columns) & (_PIPELINE_COLUMNS | set(config.get("passthrough") or [])))
    if taken:
        raise ConfigError(f"item column(s) {taken} named in items.numeric_columns / items.vector_columns are taken")
    features = [
        *vocab.id_features(vocabulary_names),
        *history.user_history_features(h["max_len"], h["top_genres"], vector_lengths),
        *history.ITEM_STATISTICS_FEATURES,
        *item_features.item_features(it["max_genres"], list(it["numeric_columns"] or []), vector_lengths),
    ]
    names = [d.name for d in features]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"feature name(s) {repeated} would be made twice: rename the item column(s) named in "
            "items.numeric_columns / items.vector_columns"
        )
    return features


def _per_split(shards: list, names: tuple[str, ...]) -> dict:
    per_split = {name: {"rows": 0, "positives": 0, "shards": 0} for name in names}
    for shard in shards:
        entry = per_split[shard["split"]]
        entry["rows"] += shard["rows"]
        entry["positives"] += shard["positives"]
        entry["shards"] += 1
    return per_split


def _attributed_clicks(raw: _Validated, window: int, persist, plan: Plan) -> tuple[DataFrame, DataFrame, int]:
    """(keyed impressions, clicks with the impression they credit, number of orphan clicks the build owns)."""
    keyed = labels.with_impression_key(raw.impressions)
    # The as-of branch shuffles every impression: only worth it when some click lacks an id.
    without_id = raw.clicks.where(F.col("impression_id").isNull()).limit(1).count() > 0
    attributed = persist(labels.attribute_clicks(raw.clicks, keyed, window, match_without_id=without_id))
    orphans = attributed.where(F.col("credited_key").isNull())
    if plan.window is not None:
        orphans = orphans.where(plan.window.owns(F.col("ts")))
    return keyed, attributed, orphans.count()


def _labelled_splits(raw: _Validated, keyed, attributed, config: dict, persist, plan: Plan) -> tuple:
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


def _spec_splits(per_split: dict, extension: str) -> dict:
    return {
        name: feature_spec.split(
            pattern=f"{name}/part-*{extension}",
            num_examples=e["rows"],
            label_rate=(e["positives"] / e["rows"]) if e["rows"] else None,
        )
        for name, e in per_split.items()
    }


def _hadoop_has_file_system(spark: SparkSession, path: str) -> bool:
    """True when Spark's Hadoop can write `path`: local, or a scheme it has a FileSystem class for."""
    if publish.is_local(path):
        return True
    scheme = path.split("://", 1)[0]
    context = spark.sparkContext
    try:
        context._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, context._jsc.hadoopConfiguration())
    except Exception:  # py4j: UnsupportedFileSystemException "No FileSystem for scheme"
        return False
    return True


def _check_spark_reads(spark: SparkSession, raw_dir: str) -> None:
    """InputError, before any work, when Spark cannot read RAW (e.g. s3:// without the hadoop-aws jars)."""
    raw = publish.normalize(raw_dir)
    if not _hadoop_has_file_system(spark, raw):
        raise InputError(
            f"Spark cannot read the input {raw}: its Hadoop file system has no {raw.split('://', 1)[0]}:// "
            "(s3 needs the hadoop-aws jars, which the pyspark wheel lacks); copy RAW to a local or hdfs:// path"
        )


def spark_parts_folder(spark: SparkSession, raw_dir: str, output: str, config: dict) -> str | None:
    """Where Spark writes rejects/ and vocab/: None for the staging of SAMPLES itself, when Spark's own
    file system reaches SAMPLES; otherwise output.spark_scratch, from which they are copied into SAMPLES.

    OutputRefused, before anything is written, when Spark cannot write SAMPLES and no scratch is set."""
    final = publish.normalize(output)
    if _hadoop_has_file_system(spark, final):
        return None
    scheme = final.split("://", 1)[0]
    scratch = config["output"]["spark_scratch"]
    if not scratch:
        raise OutputRefused(
            f"Spark cannot write the rejects/ and vocab/ of {final}: its Hadoop file system has no {scheme}:// "
            "(s3 needs the hadoop-aws jars, which the pyspark wheel lacks); set output.spark_scratch to a local "
            "or hdfs:// folder, where Spark writes them and from which the job copies them into SAMPLES, "
            "or write SAMPLES to a local or hdfs:// path"
        )
    scratch = publish.normalize(scratch)
    how = publish.relation(scratch, raw_dir)
    if how in ("is", "lies inside"):
        raise OutputRefused(
            f"output.spark_scratch {scratch} {how} the input {publish.normalize(raw_dir)}; choose another folder"
        )
    if not _hadoop_has_file_system(spark, scratch):
        raise OutputRefused(f"output.spark_scratch {scratch}: Spark's Hadoop has no file system for it")
    publish.check_writable(posixpath.join(scratch, ".staging"))
    return scratch


def _scratch_staging(folder: str, final: str, started: float) -> publish.Staging:
    """This run's own marked folder under output.spark_scratch (whatever else is there stays)."""
    prefix = f".{posixpath.basename(final)}.spark-staging-"
    publish.makedirs(folder)
    publish.remove_stale_stagings(folder, prefix, started)
    return publish.Staging(folder, prefix, started)


def _write_metadata(staging: str, spec: dict, report: dict) -> None:
    publish.write_text(posixpath.join(staging, feature_spec.SPEC_FILE), feature_spec.to_json(spec))
    publish.write_text(posixpath.join(staging, "report.json"), json.dumps(report, indent=2))
    publish.write_text(posixpath.join(staging, "_SUCCESS"), "")


def _oov_counts(samples: DataFrame) -> tuple[int, dict[str, dict]]:
    """(samples, per vocabulary: the tokens of the samples' own ids and genres, and how many were out of
    vocabulary) in one aggregation: a rising OOV rate says a refit (`--fit-only`) is due."""
    oov = F.lit(feature_spec.OOV_INDEX)
    parts = {
        name: (F.count(F.col(column)), F.sum((F.col(index) == oov).cast("long")))
        for name, (column, index) in vocab.ID_INDICES.items()
        if index in samples.columns
    }
    parts["genre"] = (
        F.sum(F.size("genre_idxs")),
        F.sum(F.size(F.filter("genre_idxs", lambda x: x == oov))),
    )
    aggregates = [F.count(F.lit(1)).alias("_rows")]
    for name, (tokens, unseen) in parts.items():
        aggregates += [tokens.alias(f"{name}\u0001tokens"), unseen.alias(f"{name}\u0001oov")]
    row = samples.agg(*aggregates).collect()[0]
    counts = {}
    for name in parts:
        tokens, unseen = int(row[f"{name}\u0001tokens"] or 0), int(row[f"{name}\u0001oov"] or 0)
        counts[name] = {"tokens": tokens, "oov": unseen, "oov_rate": round(unseen / tokens, 6) if tokens else None}
    return int(row["_rows"]), counts


def _differences(in_spec: dict, by_config: dict) -> list[str]:
    """Per feature name (-> what is compared): in one side only, or different."""
    problems = [f"{name} is made by the config, not in the spec" for name in by_config if name not in in_spec]
    problems += [f"{name} is in the spec, not made by the config" for name in in_spec if name not in by_config]
    problems += [
        f"{name} is {by_config[name]} by the config, {in_spec[name]} in the spec"
        for name in by_config
        if name in in_spec and by_config[name] != in_spec[name]
    ]
    return problems


def _spec_differences(applied: dict, built: dict) -> list[str]:
    """What differs between the --spec and the spec this config makes with its fit (for the message)."""
    ours = {entry["name"]: entry for entry in feature_spec.all_features(built)}
    theirs = {entry["name"]: entry for entry in feature_spec.all_features(applied)}
    problems = _differences(theirs, ours)
    if not problems and list(ours) != list(theirs):
        problems.append("the features come in another order")
    for key in feature_spec.HASHED_KEYS:
        if key != "features" and applied.get(key) != built.get(key):
            problems.append(f"{key}: spec {applied.get(key)!r}, config {built.get(key)!r}")
    return problems


def build_samples(spark: SparkSession, raw_dir: str, output: str, config: dict, plan: Plan | None = None) -> dict:
    """Run the whole job; return the report. Output appears atomically at `output`.

    `plan` says what to build (default: samples of the whole log, fitted on its train split); see Plan.
    `config` is validated first (pipelines/config_schema.py): a bad value is a ConfigError before any work."""
    plan = plan or Plan()
    timings, started = Timings(spark), time.perf_counter()
    config = validate_build_config(config)
    compression = compression_options(config["tfrecord"]["compression"])
    window = _attribution_window(config)
    persist = _Persisted()
    _check_spark_reads(spark, raw_dir)
    applied = _load_applied_spec(spark, plan)
    # Name clashes and misuses of the configured item columns fail before any work (lengths do not matter).
    fitting.check_vector_config(
        _declared_features(vocab.ID_INDICES, config, dict.fromkeys(_vector_columns(config), 1)), config
    )
    if applied:
        _check_spec_fits_config(applied, config, plan.spec_dir)
    scratch_folder = spark_parts_folder(spark, raw_dir, output, config)  # refuses before anything is written
    # Refuses an output that overlaps RAW (or the --spec) or holds something else than earlier samples.
    inputs = [raw_dir] + ([plan.spec_dir] if plan.spec_dir else [])
    stage = StagedOutput(output, inputs=inputs, markers=SAMPLES_MARKERS)
    scratch = None
    restore = ExitStack()  # the session's shuffle partitions, as they were before this build
    try:
        fmt = config["input"]["format"]
        partitions = restore.enter_context(
            _sized_partitions(
                spark, config, lambda: _read_events(spark, raw_dir, "impressions", fmt, plan.window)[0].count()
            )
        )
        timings.note_memory_settings()
        if scratch_folder is not None:
            scratch = _scratch_staging(scratch_folder, stage.final, stage.staging.started)
        spark_dir = scratch.path if scratch else stage.path  # where Spark writes rejects/ and vocab/
        with timings.step("validate") as rows:
            known_lengths = _spec_vector_lengths(applied, config) if applied else None
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
            num_samples, oov = _oov_counts(samples)  # materialized here, so the step timings say where time goes
            rows["samples"] = num_samples
        with timings.step("fit_transform"):
            declared = _declared_features(vocabularies.frames, config, raw.vector_lengths)
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
                + "; ".join(_spec_differences(applied, spec)[:5])
                + ". Build with the config the spec was fitted with, or fit a new spec (--fit-only)"
            )
        if plan.fit_only:
            per_split = {}
        else:
            with timings.step("write_tfrecords") as rows:
                per_split = _per_split(_write_shards(samples, spec, stage.path, config, plan.splits), plan.splits)
                rows.update({f"{name} rows": entry["rows"] for name, entry in per_split.items()})
        spec = feature_spec.with_splits(spec, _spec_splits(per_split, compression.extension))
        where = (raw_dir, stage.final)
        report = _report(
            spark, where, raw, orphan_clicks, per_split, spec, boundaries, fitted, timings, started, plan, num_samples
        )
        report["oov"] = oov
        report["partitions"] = partitions
        report["config"] = config  # what the spec was fitted (or applied) with: a later --spec build needs the same
        if scratch is not None:
            for part in ("rejects", "vocab"):
                publish.copy_tree(posixpath.join(scratch.path, part), posixpath.join(stage.path, part))
        _write_metadata(stage.path, spec, report)
        stage.publish()
        return report
    finally:
        with _quiet_py4j():  # after the JVM died of an OutOfMemoryError, each call would log a traceback
            persist.release()
            restore.close()
        stage.close()
        if scratch is not None:
            scratch.close()


def _load_applied_spec(spark: SparkSession, plan: Plan) -> dict | None:
    """The --spec to apply (validated; its vocab/ must be where Spark reads), or None to fit one."""
    if plan.spec_dir is None:
        return None
    folder = publish.normalize(plan.spec_dir)
    if not _hadoop_has_file_system(spark, folder):
        raise fitting.SpecNotApplicable(
            f"--spec {folder}: Spark cannot read its vocab/ there (no {folder.split('://', 1)[0]}:// in its Hadoop "
            "file system); copy the spec folder to a local or hdfs:// path"
        )
    try:
        applied = feature_spec.load_spec(folder)
    except FileNotFoundError:
        raise fitting.SpecNotApplicable(
            f"--spec {folder} has no {feature_spec.SPEC_FILE}: give the folder a --fit-only build (or any build) wrote"
        ) from None
    except feature_spec.SpecError as exc:
        raise fitting.SpecNotApplicable(f"--spec {folder}: {exc}") from None
    if feature_spec.smoothed_ctr_prior(applied) is None:
        raise fitting.SpecNotApplicable(
            f"--spec {folder} does not record its CTR prior (written before daily builds existed): "
            "fit a new spec with build_samples --fit-only"
        )
    if feature_spec.sample_settings(applied) is None:
        raise fitting.SpecNotApplicable(
            f"--spec {folder} does not record the sample settings it was fitted with (the attribution window, "
            "the lookbacks...: written before they were recorded), so a build cannot prove it makes the same "
            "samples: fit a new spec with build_samples --fit-only"
        )
    fitting.check_vocabularies(spark, applied, folder)
    return applied


def _check_spec_fits_config(applied: dict, config: dict, spec_dir: str) -> None:
    """ConfigError, before any work, when the config makes other model inputs than the --spec describes
    (history lengths, item columns, buckets...) or under other sample settings (pipelines/samples/settings.py);
    what only the data shows is checked by the spec hash later."""
    settings.check_recorded(feature_spec.sample_settings(applied), config, spec_dir)
    written = {
        "compression": compression_options(config["tfrecord"]["compression"]).tf_type,
        "rows_per_record": int(config["tfrecord"]["rows_per_record"]),
    }
    recorded_format = {
        "compression": applied.get("compression"),
        "rows_per_record": feature_spec.rows_per_record(applied),
    }
    if written != recorded_format:
        raise ConfigError(
            f"--spec {spec_dir} records shards of {recorded_format}, this config writes {written}: set "
            "tfrecord.compression and tfrecord.rows_per_record as the spec was fitted, or fit a new spec (--fit-only)"
        )
    lengths = {**dict.fromkeys(_vector_columns(config), 1), **_spec_vector_lengths(applied, config)}
    declared = _declared_features(list(applied.get("vocabularies") or {}), config, lengths)
    recorded = fitting.Fitted.from_spec(applied, fitting.vocabularies_from_spec(applied, spec_dir=spec_dir))
    bucketized = [c for c in (config["bucketize"]["features"] or []) if c in {d.name for d in declared}]
    boundaries = {source: recorded.boundaries.get(source) for source in bucketized}
    made = [
        entry
        for entry in fitting.Fitted(
            vocabularies=recorded.vocabularies,
            prior=recorded.prior,
            smoothing=recorded.smoothing,
            normalization={
                d.name: recorded.normalization.get(d.name) or _placeholder_statistics(d)
                for d in declared
                if d.kind == "numeric"
            },
            boundaries={source: bounds or [] for source, bounds in boundaries.items()},
        ).spec_features(declared, [])
        if entry["role"] == "model_input"
    ]

    def described(entries) -> dict:
        return {e["name"]: f"{e['kind']} {e['shape']} of {e.get('vocab_size')} indices" for e in entries}

    problems = _differences(described(feature_spec.model_inputs(applied)), described(made))
    if problems:
        raise ConfigError(
            f"--spec {spec_dir} was fitted with another config: " + "; ".join(problems[:5]) + ". Build with the "
            "config the spec was fitted with (its report.json lists it), or fit a new spec (--fit-only)"
        )


def _placeholder_statistics(declared) -> dict:
    """Statistics for a numeric the spec lacks: only its name, kind and shape are compared."""
    if declared.is_vector:
        return {"log1p": False, "mean": [0.0] * declared.length, "std": [1.0] * declared.length}
    return {"log1p": False, "mean": 0.0, "std": 1.0}


def _spec_vector_lengths(spec: dict, config: dict) -> dict[str, int]:
    """The lengths of the configured item vectors, as the spec fixes them (a day's data may not say)."""
    names = {entry["name"]: entry for entry in feature_spec.model_inputs(spec)}
    return {name: feature_spec.numeric_width(names[name]) for name in _vector_columns(config) if name in names}


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


def _report(
    spark,
    where: tuple[str, str],
    raw: _Validated,
    orphan_clicks: int,
    per_split: dict,
    spec: dict,
    boundaries: tuple | None,
    fitted,
    timings: Timings,
    started: float,
    plan: Plan,
    num_samples: int,
) -> dict:
    samples_made = num_samples if plan.fit_only else sum(e["rows"] for e in per_split.values())
    imp_rejected = sum(raw.rejects["impressions"].values())
    if samples_made + imp_rejected != raw.rows_owned["impressions"]:
        raise RuntimeError(
            f"accounting mismatch: {raw.rows_owned['impressions']} impressions of the build's time read, "
            f"{samples_made} samples + {imp_rejected} rejects written"
        )
    valid_clicks = raw.rows_owned["clicks"] - sum(raw.rejects["clicks"].values())
    report = {
        "spark": spark_settings(spark),
        "input": where[0],
        "output": where[1],
        "build": plan.describe(),
        "rows_read": raw.rows_read,
        "rejected": raw.rejects,
        "rejected_total": {k: sum(v.values()) for k, v in raw.rejects.items()},
        "nulled_values": raw.nulled,
        "clicks": {"valid": valid_clicks, "attributed": valid_clicks - orphan_clicks, "orphan": orphan_clicks},
        "samples": {
            name: {"rows": e["rows"], "label_rate": feature_spec.split_label_rate(spec, name), "shards": e["shards"]}
            for name, e in per_split.items()
        },
        "split_boundaries": (
            {"valid_start": boundaries[0], "test_start": boundaries[1]} if boundaries is not None else None
        ),
        "vocabulary_sizes": fitted.vocabularies.sizes,
        "item_vector_lengths": raw.vector_lengths,
        "train_label_rate": fitted.prior,
        "spec_hash": feature_spec.spec_hash(spec),
        "step_seconds": timings.seconds,
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    if plan.window is not None:
        report["window"] = plan.window.describe(raw.partitioned)
        report["rows_owned"] = raw.rows_owned
    return report


def _window(config: dict, first_day, last_day) -> windows.Window:
    return windows.Window(
        first_day=feature_spec.parse_date(first_day),
        last_day=feature_spec.parse_date(last_day),
        time_zone=config["dates"]["time_zone"],
        lookback=int(round(float(config["history"]["lookback_days"]) * 86400)),
        attribution=_attribution_window(config),
    )


def fit_window(config: dict, first_day, last_day) -> windows.Window:
    """The window of a --fit-only build over the days first_day..last_day (config validated first)."""
    return _window(validate_build_config(config), first_day, last_day)


def check_dated_samples(samples_dir: str) -> str:
    """OutputRefused unless `samples_dir` is absent or holds only day folders (and their stagings)."""
    final = publish.normalize(samples_dir)
    if not publish.exists(final):
        return final
    if not publish.isdir(final):
        raise OutputRefused(f"output {final} exists and is not a directory")
    others = sorted(
        name
        for name in publish.listdir(final)
        if feature_spec.folder_date(name) is None and not name.startswith(f".{feature_spec.DATE_PREFIX}")
    )
    if others:
        raise OutputRefused(
            f"output {final} holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}: a date-partitioned "
            f"SAMPLES holds only {feature_spec.DATE_PREFIX}YYYY-MM-DD folders; choose another output"
        )
    return final


def _day_spec_hash(folder: str) -> str:
    """The spec hash of a complete day folder; OutputRefused, naming it, when its spec cannot be read."""
    try:
        return feature_spec.spec_hash(feature_spec.load_spec(folder))
    except (FileNotFoundError, feature_spec.SpecError) as exc:
        raise OutputRefused(
            f"{folder} is marked complete but its {feature_spec.SPEC_FILE} cannot be read ({exc}): "
            "give --overwrite to rebuild the day, or move the folder away"
        ) from None


def _check_no_other_specs(final: str, days: list, spec_hash: str, spec_dir: str) -> None:
    """OutputRefused when SAMPLES holds complete days (other than `days`) of another spec: a training run
    reads the days of one spec only, so a mix is refused unless asked for (`mixed_specs`)."""
    if not publish.exists(final):
        return
    building = {feature_spec.parse_date(day) for day in days}
    others = {}
    for name in sorted(publish.listdir(final)):
        day = feature_spec.folder_date(name)
        folder = posixpath.join(final, name)
        if day is None or day in building or not publish.exists(posixpath.join(folder, feature_spec.DAY_COMPLETE)):
            continue
        built = _day_spec_hash(folder)
        if built != spec_hash:
            others.setdefault(built, []).append(name)
    if others:
        listed = "; ".join(
            f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''} (spec hash {h[:12]})"
            for h, names in others.items()
        )
        raise OutputRefused(
            f"{final} holds days of another spec than --spec {spec_dir} (spec hash {spec_hash[:12]}): {listed}. "
            "A training run reads days of one spec only: build into another SAMPLES, or give --allow-mixed-specs"
        )


def build_days(
    spark: SparkSession,
    raw_dir: str,
    samples_dir: str,
    config: dict,
    spec_dir: str,
    days: list,
    overwrite=False,
    mixed_specs=False,
) -> list[dict]:
    """Build each of `days` into SAMPLES/date=D with the fit of `spec_dir`, one after the other.

    A day already complete with this spec is skipped, unless `overwrite`; one built with another spec is
    refused unless `overwrite`. Days of another spec elsewhere in SAMPLES refuse the build unless
    `mixed_specs`. Each day is published atomically on its own: a failed day leaves the days before it
    built (a rerun skips them) and its own folder as it was. Returns one entry per day."""
    config = validate_build_config(config)
    final = check_dated_samples(samples_dir)
    applied = _load_applied_spec(spark, Plan(spec_dir=spec_dir))
    if not mixed_specs:
        _check_no_other_specs(final, days, feature_spec.spec_hash(applied), spec_dir)
    results = []
    for day in days:
        folder = feature_spec.day_folder(final, day)
        if publish.exists(posixpath.join(folder, "_SUCCESS")) and not overwrite:
            built = _day_spec_hash(folder)
            if built != feature_spec.spec_hash(applied):
                raise OutputRefused(
                    f"{folder} was built with spec hash {built}, not {feature_spec.spec_hash(applied)} of --spec "
                    f"{spec_dir}: give --overwrite to rebuild it with this spec"
                )
            log.info("%s is complete (spec hash %s): skipped; --overwrite rebuilds it", folder, built[:12])
            results.append({"date": feature_spec.parse_date(day).isoformat(), "output": folder, "skipped": True})
            continue
        plan = Plan(spec_dir=spec_dir, window=_window(config, day, day))
        log.info("building %s into %s", plan.window.days, folder)
        report = build_samples(spark, raw_dir, folder, config, plan)
        results.append({"date": plan.window.days, "output": folder, "skipped": False, "report": report})
    return results
