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

import dataclasses
import gc
import logging
import posixpath
import time
from contextlib import ExitStack, contextmanager

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import feature_spec
from features import history, labels, validate, vocab
from features import items as item_features
from pipelines import storage
from pipelines.config_schema import BuildConfig, build_config
from pipelines.errors import ConfigError
from pipelines.publish import StagedOutput
from pipelines.samples import drift, fitting, settings
from pipelines.samples.applied_spec import (
    check_spec_fits_config,
    load_applied_spec,
    spec_differences,
    spec_vector_lengths,
)
from pipelines.samples.build_mode import BuildMode, EmptySplitError, Plan
from pipelines.samples.model_inputs import declared_features, vector_columns
from pipelines.samples.raw_input import InputError
from pipelines.samples.raw_values import RAW_VALUES, without_raw_lists, write_raw_values
from pipelines.samples.report import (
    build_report,
    oov_counts,
    spec_splits,
    split_counts,
    write_metadata,
)
from pipelines.samples.runtime import Persisted, SparkTimings, quiet_py4j, sized_partitions
from pipelines.samples.spark_files import check_spark_reads, scratch_staging, spark_parts_folder
from pipelines.samples.tfrecord import compression_options, write_tfrecords
from pipelines.samples.validation import RejectFractionError, Validated, read_events, validate_raw

log = logging.getLogger("build_samples")

# Files that prove a folder is an earlier SAMPLES output (which a rerun may replace).
SAMPLES_MARKERS = [("_SUCCESS", feature_spec.SPEC_FILE)]


__all__ = ["INPUT_ERRORS", "EmptySplitError", "Plan", "RejectFractionError", "build_samples"]

# What the job refuses with a clear message (exit code 2), rather than a traceback.
INPUT_ERRORS = (
    InputError,
    validate.SchemaError,
    RejectFractionError,
    EmptySplitError,
    ConfigError,
    fitting.SpecNotApplicable,
)


def _shard_layout(samples: DataFrame, config: BuildConfig) -> DataFrame:
    """The rows of each output shard, in the order they are written.

    Shards by a hash of the impression's identity (`impression_key`, unique), which needs no sort before
    the shuffle as a round robin does. With blocks of rows (`rows_per_record` > 1) each shard is ordered by
    a seeded hash of the same identity: the order does not depend on the order rows arrive in, so the same
    samples make the same shards, row for row."""
    partitions = config.spark.output_partitions
    key = F.col("impression_key")
    if config.tfrecord.rows_per_record > 1:
        # A block keeps its rows together in every epoch, and after the per-user pass a partition is
        # grouped by user and time: each shard must be a random sample of rows, in random order.
        partitions = partitions or int(samples.sparkSession.conf.get("spark.sql.shuffle.partitions"))
        order = F.xxhash64(F.lit(config.tfrecord.shuffle_seed), key)
        return samples.repartition(partitions, key).sortWithinPartitions(order, key)
    return samples.repartition(partitions, key) if partitions else samples


def _point_in_time_features(
    imps: DataFrame,
    history_only: DataFrame | None,
    attributed: DataFrame,
    raw: Validated,
    vocabularies,
    config: BuildConfig,
    raw_ids: bool = False,
) -> DataFrame:
    """Index ids and genres, then the user history and item statistics of every impression of `imps`;
    `history_only` (a day build's lookback) counts as history but makes no sample. `raw_ids`: the histories
    and top genres also as raw strings, for raw_values/."""
    h, max_genres = config.history, config.items.max_genres
    imps = imps.transform(vocabularies.index_ids).transform(lambda d: vocabularies.genre_features(d, max_genres))
    vectors = raw.vector_lengths
    click_events = (
        attributed.select("user_id", "item_id", "ts")
        .transform(lambda d: item_features.join_item_attributes(d, raw.items, [], list(vectors)))
        .transform(vocabularies.index_items)
        .transform(lambda d: vocabularies.genre_features(d, max_genres))
    )
    if history_only is not None:
        history_only = vocabularies.index_items(history_only)
    # One shuffle of the wide rows: the item counts are taken on narrow rows and ride along the user pass.
    return history.point_in_time_features(
        imps,
        click_events,
        "impression_key",
        config.attribution_window_seconds,
        config.lookback_seconds,
        config.recent_seconds,
        h.max_len,
        h.top_genres,
        h.genre_history_len,
        vectors,
        history_only,
        raw_ids=raw_ids,
    )


def _attributed_clicks(raw: Validated, config: BuildConfig, persist, mode: BuildMode) -> tuple:
    """(keyed impressions, clicks with the impression they credit, number of orphan clicks the build owns)."""
    keyed = labels.with_impression_key(raw.impressions)
    # The as-of branch shuffles every impression: only worth it when some click lacks an id.
    without_id = raw.clicks.where(F.col("impression_id").isNull()).limit(1).count() > 0
    window = config.attribution_window_seconds
    attributed = persist(labels.attribute_clicks(raw.clicks, keyed, window, match_without_id=without_id))
    orphans = attributed.where(F.col("credited_key").isNull() & mode.owns(F.col("ts")))
    return keyed, attributed, orphans.count()


def _labelled_splits(raw: Validated, keyed, attributed, config: BuildConfig, persist, mode: BuildMode) -> tuple:
    """(labelled impressions that become samples, with their split and item attributes; the history-only
    impressions (None but for days); the split boundaries (None for days))."""
    numeric_columns = list(config.items.numeric_columns or [])
    labelled = labels.label_impressions(keyed, attributed)
    labelled, boundaries = mode.with_splits(labelled, raw.impressions, config.split.model_dump())
    owned, history_only = mode.samples_and_history(labelled, persist)
    imps = persist(
        owned.transform(
            lambda d: item_features.join_item_attributes(d, raw.items, numeric_columns, list(raw.vector_lengths))
        )
    )
    mode.check_not_empty(imps, boundaries, raw.rows_owned["impressions"], sum(raw.rejects["impressions"].values()))
    return imps, history_only, boundaries


def _counted(samples: DataFrame, vocabularies, fitted, applied, plan: Plan, config: BuildConfig) -> tuple:
    """(samples, OOV counts, {"drift": ...} for a --spec build, else {}), in one aggregation that materializes
    the samples (the features step's own time), plus one narrow count of distinct ids for the drift."""
    if fitted is None:  # a build that fits: its profile is measured on train later, with the fit
        rows, oov, _ = oov_counts(samples, vocabularies.oov_buckets)
        return rows, oov, {}
    profile, missing = drift.load_profile(plan.spec_dir, applied)
    measured = history.with_smoothed_ctr(samples, fitted.prior, fitted.smoothing)
    rows, oov, row = oov_counts(measured, vocabularies.oov_buckets, drift.aggregates(profile) if profile else [])
    if profile is None:
        log.warning("no drift report: %s", missing)
        return rows, oov, {"drift": {"unavailable": missing}}
    distinct = drift.distinct_oov_ids(samples, vocabularies.oov_buckets)
    drifted = drift.report_drift(profile, drift.measured(row, profile), oov, distinct, config.drift.model_dump())
    drift.log_drift(drifted, plan.window.days if plan.window else plan.spec_dir)
    return rows, oov, {"drift": drifted}


@contextmanager
def _named_as_extend():
    """The refusals of a spec to extend, worded for the flag that named it: `--extend SPEC ...`, not `--spec`."""
    try:
        yield
    except (fitting.SpecNotApplicable, ConfigError) as exc:
        message = str(exc)
        if message.startswith("--spec "):
            raise type(exc)("--extend " + message.removeprefix("--spec ")) from None
        raise


def _check_before_work(spark: SparkSession, raw_dir: str, output: str, config: BuildConfig, plan: Plan, applied=None):
    """(the applied spec or None, the spec to extend or None, the folder for Spark's parts or None): every
    refusal that needs no data. `applied`: the spec of plan.spec_dir, already loaded and checked, or None to
    load and check it here. A spec to extend must describe the same model inputs under the same sample
    settings as this config (its vocabularies grow, nothing else)."""
    check_spark_reads(spark, raw_dir)
    if applied is None:
        applied = load_applied_spec(spark, plan.spec_dir)
    with _named_as_extend():
        parent = load_applied_spec(spark, plan.extend_dir)
    # Name clashes and misuses of the configured item columns fail before any work (lengths do not matter).
    fitting.check_vector_config(
        declared_features(vocab.ID_INDICES, config, dict.fromkeys(vector_columns(config), 1)), config
    )
    if applied:
        check_spec_fits_config(applied, config, plan.spec_dir)
    if parent:
        with _named_as_extend():
            check_spec_fits_config(parent, config, plan.extend_dir)
    return applied, parent, spark_parts_folder(spark, raw_dir, output, config)


def _vocabularies(
    spark: SparkSession, imps: DataFrame, applied, plan: Plan, config: BuildConfig, spark_dir: str, parent
):
    """(the applied spec's fit or None, the vocabularies: the spec's, the parent's grown by train's new tokens,
    or fitted on train), written to vocab/."""
    fitted, train = None, imps.where(F.col("split") == "train")
    if applied:
        fitted = fitting.Fitted.from_spec(applied, fitting.vocabularies_from_spec(applied, spark, plan.spec_dir))
        vocabularies = fitted.vocabularies
    elif parent:
        grown = fitting.vocabularies_from_spec(parent, spark, plan.extend_dir)
        if config.oov_buckets_of(grown.oov_buckets) != grown.oov_buckets or config.vocab.min_count != grown.min_count:
            log.warning(
                "--extend keeps %s's OOV buckets %s and min_count %d: the config's vocab.* are not used",
                plan.extend_dir,
                grown.oov_buckets,
                grown.min_count,
            )
        vocabularies = fitting.extend_vocabularies(grown, train)
    else:
        buckets = config.oov_buckets_of(vocab.vocabulary_names(train))
        vocabularies = fitting.fit_vocabularies(train, config.vocab.min_count, buckets)
    for name, frame in vocabularies.frames.items():
        frame.coalesce(1).write.mode("overwrite").parquet(posixpath.join(spark_dir, "vocab", name))
    return fitted, vocabularies


def _fit(samples: DataFrame, vocabularies, declared, config: BuildConfig, plan: Plan, parent: dict | None):
    """What is learned from the train split: the parent's (an --extend keeps the normalization, buckets and CTR
    prior its model learned with, unless asked to refit them), or fitted on `samples`' train rows."""
    train = samples.where(F.col("split") == "train")
    if parent and not plan.refit_statistics:
        fitted = fitting.Fitted.from_spec(parent, vocabularies)
        profiled = history.with_smoothed_ctr(train, fitted.prior, fitted.smoothing)
        profile = drift.fit_profile(profiled, declared, config.drift.histogram_bins, config.drift.top_values)
        return dataclasses.replace(fitted, profile=profile)
    return fitting.fit(train, vocabularies, declared, config)


def _spec_of(fitted, declared, vocabularies, raw: Validated, config: BuildConfig, applied, plan: Plan, parent) -> dict:
    """The spec of the samples this build makes; ConfigError when it is not the applied spec."""
    spec = feature_spec.new_spec(
        fitted.spec_features(declared, list(validate.IDENTITY_COLUMNS) + raw.passthrough),
        vocabularies.spec_entries(),
        compression=compression_options(config.tfrecord.compression).tf_type,
        rows_per_record=config.tfrecord.rows_per_record,
        smoothed_ctr=fitted.spec_smoothed_ctr(),
        sample_settings=settings.recorded(config),
        # An applied spec's lineage is part of what its hash promises, as a new extension's is.
        lineage=feature_spec.extended_lineage(parent) if parent else (applied or {}).get("lineage"),
    )
    if applied and feature_spec.spec_hash(spec) != feature_spec.spec_hash(applied):
        raise ConfigError(
            f"--spec {plan.spec_dir} (spec hash {feature_spec.spec_hash(applied)}) does not describe the samples "
            f"this config makes (spec hash {feature_spec.spec_hash(spec)}): "
            + "; ".join(spec_differences(applied, spec)[:5])
            + ". Build with the config the spec was fitted with, or fit a new spec (--fit-only)"
        )
    return spec


def build_samples(spark: SparkSession, raw_dir: str, output: str, config, plan=None, applied=None) -> dict:
    """Run the whole job; return the report. Output appears atomically at `output`.

    `plan` says what to build (default: samples of the whole log, fitted on its train split); see Plan.
    `applied`: plan.spec_dir's spec as `load_applied_spec` returned it, if the caller has loaded and checked
    it already (a day loop does so once for all its days). `config`, a BuildConfig or a mapping, is validated
    first (pipelines/config_schema.py): a bad value is a ConfigError before any work."""
    try:
        return _build(spark, raw_dir, output, config, plan, applied)
    finally:
        # py4j's JavaObject and its JavaMembers form reference cycles, so the JVM keeps each Dataset of the
        # build (its plans, megabytes each) until Python's cycle collector runs. Full collections are rare in
        # a long process (a backfill's days, a nightly chain with TensorFlow loaded): without this one a
        # 6g driver filled its heap at the 11th day of a backfill (docs/memory.md).
        gc.collect()


def _writes_raw_values(config: BuildConfig, plan: Plan) -> bool:
    """Whether this build writes raw_values/test/: asked for, and it writes a test split."""
    has_test = not plan.fit_only and "test" in plan.splits
    if config.output.raw_values and not has_test:
        log.warning("output.raw_values: this build writes no test split, so no raw_values/")
    return config.output.raw_values and has_test


def _build(spark: SparkSession, raw_dir: str, output: str, config, plan, applied) -> dict:
    plan, timings, started = plan or Plan(), SparkTimings(spark), time.perf_counter()
    config, persist = build_config(config), Persisted()
    raw_values = _writes_raw_values(config, plan)
    applied, parent, scratch_folder = _check_before_work(spark, raw_dir, output, config, plan, applied)
    # Refuses an output that overlaps RAW (or the --spec) or holds something else than earlier samples.
    stage = StagedOutput(output, inputs=[raw_dir, *plan.spec_folders], markers=SAMPLES_MARKERS)
    scratch = None
    restore = ExitStack()  # the session's shuffle partitions, as they were before this build
    try:
        fmt = config.input.format
        count_read = lambda: read_events(spark, raw_dir, "impressions", fmt, plan.mode)[0].count()  # noqa: E731
        partitions = restore.enter_context(sized_partitions(spark, config, count_read))
        timings.note_memory_settings()
        if scratch_folder is not None:
            scratch = scratch_staging(scratch_folder, stage.final, stage.staging.started)
        spark_dir = scratch.path if scratch else stage.path  # where Spark writes rejects/ and vocab/
        with timings.step("validate") as rows:
            known_lengths = spec_vector_lengths(applied or parent, config) if (applied or parent) else None
            raw = validate_raw(spark, raw_dir, config, persist, spark_dir, plan.mode, known_lengths)
            rows.update({f"{name} read": count for name, count in raw.rows_read.items()})
        with timings.step("labels"):
            keyed, attributed, orphan_clicks = _attributed_clicks(raw, config, persist, plan.mode)
        with timings.step("split"):
            imps, history_only, boundaries = _labelled_splits(raw, keyed, attributed, config, persist, plan.mode)
        with timings.step("fit_vocabularies"):
            fitted, vocabularies = _vocabularies(spark, imps, applied, plan, config, spark_dir, parent)
        with timings.step("features") as rows:
            features = _point_in_time_features(imps, history_only, attributed, raw, vocabularies, config, raw_values)
            samples = persist(features)
            num_samples, oov, drifted = _counted(samples, vocabularies, fitted, applied, plan, config)
            rows["samples"] = num_samples
        with timings.step("fit_transform"):
            declared = declared_features(vocabularies.frames, config, raw.vector_lengths)
            fitted = fitted or _fit(samples, vocabularies, declared, config, plan, parent)
            if raw_values:
                metadata = [name for name, _ in raw.passthrough]
                write_raw_values(samples, fitted, declared, metadata, spark_dir)
            samples = fitted.transform(without_raw_lists(samples))
        spec = _spec_of(fitted, declared, vocabularies, raw, config, applied, plan, parent)
        per_split = {}
        if not plan.fit_only:
            with timings.step("write_tfrecords") as rows:
                per_split = split_counts(_write_shards(samples, spec, stage.path, config, plan.splits), plan.splits)
                rows.update({f"{name} rows": entry["rows"] for name, entry in per_split.items()})
        extension = compression_options(config.tfrecord.compression).extension
        spec = feature_spec.with_splits(spec, spec_splits(per_split, extension))
        report = build_report(
            spark,
            (raw_dir, stage.final),
            raw,
            orphan_clicks,
            per_split,
            spec,
            boundaries,
            fitted,
            timings,
            started,
            plan,
            num_samples,
        )
        # config: a later --spec build needs the same
        report.update(oov=oov, partitions=partitions, config=config.as_dict(), **drifted)
        if scratch is not None:
            for part in ("rejects", "vocab", RAW_VALUES):
                storage.copy_tree(posixpath.join(scratch.path, part), posixpath.join(stage.path, part))
        write_metadata(stage.path, spec, report, fitted.profile)
        stage.publish()
        return report
    finally:
        with quiet_py4j():  # after the JVM died of an OutOfMemoryError, each call would log a traceback
            persist.release()
            restore.close()
        stage.close()
        if scratch is not None:
            scratch.close()


def _write_shards(samples: DataFrame, spec: dict, staging: str, config: BuildConfig, splits: tuple[str, ...]) -> list:
    for name in splits:
        storage.makedirs(posixpath.join(staging, name))
    features = [(f["name"], f["dtype"]) for f in feature_spec.all_features(spec)]
    return write_tfrecords(
        _shard_layout(samples, config),
        features,
        staging,
        compression=config.tfrecord.compression,
        rows_per_record=config.tfrecord.rows_per_record,
    ).collect()
