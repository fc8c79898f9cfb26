"""build_samples: raw impression/click logs -> point-in-time features -> sharded TFRecord.

Composition of the pure feature steps in `features/`, plus the I/O around them:
reading RAW, writing to a staging directory, and swapping it into place (pipelines/publish.py).
"""
from __future__ import annotations

import json
import logging
import posixpath
import time
from contextlib import contextmanager
from datetime import datetime, timezone

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features import history, items as item_features, labels, normalize, split, validate, vocab
from spec import FORMAT_VERSION, SPEC_FILE, compute_spec_hash
from pipelines.publish import StagedOutput
from pipelines.raw_input import InputError, read_raw, type_csv_columns
from pipelines.spark import spark_settings
from pipelines.tfrecord import compression_options, write_tfrecords

log = logging.getLogger("build_samples")

NUMERIC_FEATURES = ["hist_click_len", "hist_skip_len", "user_impressions", "user_clicks",
                    "item_impressions", "item_clicks", "item_ctr",
                    "item_impressions_recent", "item_clicks_recent", "item_ctr_recent", "release_year"]
METADATA = [("user_id", "string"), ("item_id", "string"), ("ts", "int64")]
# Files that prove a folder is an earlier SAMPLES output (which a rerun may replace).
SAMPLES_MARKERS = [("_SUCCESS", SPEC_FILE)]


class RejectFractionError(RuntimeError):
    pass


class EmptySplitError(RuntimeError):
    pass


# What the job refuses with a clear message (exit code 2), rather than a traceback.
INPUT_ERRORS = (InputError, validate.SchemaError, RejectFractionError, EmptySplitError)


class Timings:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str):
        log.info("step %s ...", name)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        log.info("step %s done in %.1fs", name, self.seconds[name])


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _count_by_reason(df: DataFrame) -> tuple[int, dict[str, int]]:
    """(rows read, rejects by reason) in one aggregation."""
    rows = df.groupBy("reject_reason").count().collect()
    total = sum(int(row["count"]) for row in rows)
    rejected = {row["reject_reason"]: int(row["count"]) for row in rows if row["reject_reason"] is not None}
    return total, dict(sorted(rejected.items()))


def _feature(name, role, kind, dtype, shape, **extra):
    return {"name": name, "role": role, "kind": kind, "dtype": dtype, "shape": shape, **extra}


def build_spec(config: dict, vocab_sizes: dict, vocab_tokens: dict, numeric_stats: dict,
               boundaries: dict, has_position: bool, passthrough: list[tuple[str, str]]) -> dict:
    h, it = config["history"], config["items"]
    features = [
        _feature("user_idx", "model_input", "categorical", "int64", [], vocabulary="user_id",
                 embedding_table="user_id", vocab_size=vocab_sizes["user_id"]),
        _feature("item_idx", "model_input", "categorical", "int64", [], vocabulary="item_id",
                 embedding_table="item_id", vocab_size=vocab_sizes["item_id"]),
    ]
    if has_position:
        features.append(_feature("position_idx", "model_input", "categorical", "int64", [], vocabulary="position",
                                 embedding_table="position", vocab_size=vocab_sizes["position"]))
    features += [
        _feature("item_primary_genre", "model_input", "categorical", "int64", [], vocabulary="genre",
                 embedding_table="genre", vocab_size=vocab_sizes["genre"]),
        _feature("hist_click_items", "model_input", "sequence", "int64", [h["max_len"]], vocabulary="item_id",
                 embedding_table="item_id", vocab_size=vocab_sizes["item_id"]),
        _feature("hist_skip_items", "model_input", "sequence", "int64", [h["max_len"]], vocabulary="item_id",
                 embedding_table="item_id", vocab_size=vocab_sizes["item_id"]),
        _feature("user_top_genres", "model_input", "multi_categorical", "int64", [h["top_genres"]],
                 vocabulary="genre", embedding_table="genre", vocab_size=vocab_sizes["genre"]),
        _feature("item_genres", "model_input", "multi_categorical", "int64", [it["max_genres"]],
                 vocabulary="genre", embedding_table="genre", vocab_size=vocab_sizes["genre"]),
    ]
    for column, bounds in boundaries.items():
        name = f"{column}_bucket"
        features.append(_feature(name, "model_input", "categorical", "int64", [], embedding_table=name,
                                 vocab_size=len(bounds) + 2,
                                 bucketization={"source": column, "boundaries": bounds}))
    for column, stats in numeric_stats.items():
        features.append(_feature(column, "model_input", "numeric", "float32", [], normalization=stats))
    features.append(_feature("label", "label", "label", "int64", []))
    for name, dtype in METADATA + passthrough:
        features.append(_feature(name, "metadata", "metadata", dtype, [], default=None))
    vocabularies = {
        name: {"size": vocab_sizes[name], "num_tokens": vocab_tokens[name], "padding_index": vocab.PADDING_INDEX,
               "oov_index": vocab.OOV_INDEX, "min_count": int(config["vocab"]["min_count"]),
               "path": f"vocab/{name}"}
        for name in sorted(vocab_sizes)
    }
    spec = {"format_version": FORMAT_VERSION, "compression": compression_options(config["tfrecord"]["compression"]).tf_type,
            "label": "label",
            "features": features, "vocabularies": vocabularies}
    rows_per_record = int(config["tfrecord"]["rows_per_record"])
    if rows_per_record != 1:  # absent means one Example per record, so earlier specs keep their hash
        spec["rows_per_record"] = rows_per_record
    spec["spec_hash"] = compute_spec_hash(spec)
    return spec


def _spark_type_to_spec(dtype) -> str:
    from pyspark.sql import types as T

    if isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        return "float32"
    if isinstance(dtype, (T.IntegerType, T.LongType, T.ShortType, T.ByteType, T.BooleanType)):
        return "int64"
    return "string"


def _shard_layout(samples: DataFrame, config: dict) -> DataFrame:
    """The rows of each output shard, in the order they are written."""
    partitions = config["spark"].get("output_partitions")
    if int(config["tfrecord"]["rows_per_record"]) > 1:
        # A block keeps its rows together in every epoch, and after the per-user pass a partition is
        # grouped by user and time: each shard must be a random sample of rows, in random order.
        partitions = int(partitions) if partitions else int(samples.sparkSession.conf.get("spark.sql.shuffle.partitions"))
        return samples.repartition(partitions).sortWithinPartitions(F.rand(int(config["tfrecord"]["shuffle_seed"])))
    return samples.repartition(int(partitions)) if partitions else samples


def _check_splits_not_empty(imps: DataFrame, valid_start: int, test_start: int) -> None:
    """Fail now, naming the split and the boundaries, rather than leave training an empty split."""
    rows = imps.groupBy("split").agg(F.count(F.lit(1)).alias("n"), F.min("ts").alias("first"),
                                     F.max("ts").alias("last")).collect()
    counts = {row["split"]: row["n"] for row in rows}
    empty = [name for name in split.SPLITS if not counts.get(name)]
    if empty:
        first = min((row["first"] for row in rows), default=None)
        last = max((row["last"] for row in rows), default=None)
        raise EmptySplitError(
            f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty: train is ts < "
            f"{_iso(valid_start)}, valid is [{_iso(valid_start)}, {_iso(test_start)}), test is ts >= "
            f"{_iso(test_start)}, and the valid impressions span {_iso(first)} .. {_iso(last)}. "
            "Set split.valid_start and split.test_start (or the fractions) inside that span")


def _iso(seconds) -> str:
    if seconds is None:
        return "nothing"
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_samples(spark: SparkSession, raw_dir: str, output: str, config: dict) -> dict:
    """Run the whole job; return the report. Output appears atomically at `output`."""
    timings = Timings()
    started = time.perf_counter()
    fmt = config["input"]["format"]
    compression = compression_options(config["tfrecord"]["compression"])  # a bad name fails before any work
    rows_per_record = int(config["tfrecord"]["rows_per_record"])
    vconf = config["validation"]
    window = int(round(float(config["labels"]["attribution_window_minutes"]) * 60))
    lookback = int(round(float(config["history"]["lookback_days"]) * 86400))
    recent = int(round(float(config["item_stats"]["recent_days"]) * 86400))
    numeric_columns = list(config["items"]["numeric_columns"] or [])
    persisted: list[DataFrame] = []

    def persist(df: DataFrame) -> DataFrame:
        persisted.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        return df

    # Refuses an output that overlaps RAW or holds something else than earlier samples.
    stage = StagedOutput(output, inputs=[raw_dir], markers=SAMPLES_MARKERS)
    final, staging = stage.final, stage.path
    gfile = _gfile()
    try:
        with timings.step("validate"):
            raw_imps = read_raw(spark, raw_dir, "impressions", fmt)
            if fmt == "csv":
                raw_imps = type_csv_columns(raw_imps, list(config.get("passthrough") or []))
            raw_clicks = read_raw(spark, raw_dir, "clicks", fmt)
            raw_items = read_raw(spark, raw_dir, "items", fmt)
            has_position = "position" in raw_imps.columns
            passthrough_names = [c for c in (config.get("passthrough") or []) if c in raw_imps.columns]
            passthrough = [(c, _spark_type_to_spec(raw_imps.schema[c].dataType)) for c in passthrough_names
                           if c not in dict(METADATA)]
            imp_checked = persist(validate.validate_events(raw_imps, "impressions", vconf["ts_min"], vconf["ts_max"]))
            clk_checked = persist(validate.validate_events(raw_clicks, "clicks", vconf["ts_min"], vconf["ts_max"]))
            item_checked = persist(validate.normalize_items(raw_items, numeric_columns))
            counted = {"impressions": _count_by_reason(imp_checked), "clicks": _count_by_reason(clk_checked),
                       "items": _count_by_reason(item_checked)}
            rows_read = {name: total for name, (total, _) in counted.items()}
            rejects = {name: by_reason for name, (_, by_reason) in counted.items()}
            rejected_events = sum(rejects["impressions"].values()) + sum(rejects["clicks"].values())
            events_read = rows_read["impressions"] + rows_read["clicks"]
            fraction = rejected_events / events_read if events_read else 0.0
            log.info("read %s; rejected %s", rows_read, rejects)
            if fraction > float(vconf["max_reject_fraction"]):
                raise RejectFractionError(
                    f"{rejected_events} of {events_read} impression and click rows were rejected "
                    f"({fraction:.2%} > validation.max_reject_fraction={vconf['max_reject_fraction']}); "
                    f"by reason: {rejects}. Fix the input or raise the threshold (--set validation.max_reject_fraction=...)")
            all_rejects = validate.rejects_of(imp_checked, "impressions").unionByName(
                validate.rejects_of(clk_checked, "clicks")).unionByName(validate.rejects_of(item_checked, "items"))
            all_rejects.coalesce(1).write.mode("overwrite").parquet(posixpath.join(staging, "rejects"))

        keep_imp = list(dict.fromkeys(["user_id", "item_id", "ts", "impression_id"]
                                      + (["position"] if has_position else []) + passthrough_names))
        imps = validate.valid_rows(imp_checked).select(*keep_imp)
        clicks = validate.valid_rows(clk_checked).select("user_id", "item_id", "ts", "impression_id")
        items = validate.valid_rows(item_checked)

        with timings.step("labels"):
            keyed = labels.with_impression_key(imps)
            # The as-of branch shuffles every impression: only worth it when some click lacks an id.
            without_id = clicks.where(F.col("impression_id").isNull()).limit(1).count() > 0
            attributed = persist(labels.attribute_clicks(clicks, keyed, window, match_without_id=without_id))
            labelled = labels.label_impressions(keyed, attributed)
            orphan_clicks = attributed.where(F.col("credited_key").isNull()).count()

        with timings.step("split"):
            # Boundaries need only `ts`: taken from the unlabelled rows, so the labels are computed
            # once, into the persisted split below.
            valid_start, test_start = split.split_boundaries(imps, config["split"])
            imps = persist(split.assign_split(labelled, valid_start, test_start).transform(
                lambda d: item_features.join_item_attributes(d, items, numeric_columns)))
            _check_splits_not_empty(imps, valid_start, test_start)

        with timings.step("fit_vocabularies"):
            train = imps.where(F.col("split") == "train")
            columns = {"user_id": F.col("user_id"), "item_id": F.col("item_id"), "genre": F.explode("genres")}
            if has_position:
                columns["position"] = F.col("position").cast("string")
            tokens = None
            for name, column in columns.items():
                part = train.select(F.lit(name).alias("name"), column.alias("token"))
                tokens = part if tokens is None else tokens.unionByName(part)
            fitted, counted_tokens = vocab.fit_vocabularies(tokens, config["vocab"]["min_count"])
            vocabs, vocab_tokens = {}, {}
            for name in columns:
                vocabs[name] = fitted.where(F.col("name") == name).drop("name")
                vocabs[name].coalesce(1).write.mode("overwrite").parquet(posixpath.join(staging, "vocab", name))
                vocab_tokens[name] = int(counted_tokens.get(name, 0))
            vocab_sizes = {name: n + vocab.FIRST_TOKEN_INDEX for name, n in vocab_tokens.items()}
            genre_index = vocab.small_vocabulary_map(vocabs["genre"])

        with timings.step("features"):
            imps = imps.transform(lambda d: vocab.apply_vocabulary(d, "user_id", vocabs["user_id"], "user_idx")) \
                .transform(lambda d: vocab.apply_vocabulary(d, "item_id", vocabs["item_id"], "item_idx")) \
                .transform(lambda d: item_features.genre_features(d, genre_index, config["items"]["max_genres"]))
            if has_position:
                imps = vocab.apply_vocabulary(imps, "position", vocabs["position"], "position_idx")
            click_events = persist(attributed.select("user_id", "item_id", "ts")
                                   .transform(lambda d: item_features.join_item_attributes(d, items, []))
                                   .transform(lambda d: vocab.apply_vocabulary(d, "item_id", vocabs["item_id"],
                                                                               "item_idx"))
                                   .transform(lambda d: item_features.genre_features(
                                       d, genre_index, config["items"]["max_genres"])))
            h = config["history"]
            samples = imps.transform(lambda d: history.user_history(
                d, click_events, window, lookback, int(h["max_len"]), int(h["top_genres"]),
                int(h["genre_history_len"]))) \
                .transform(lambda d: history.item_statistics(d, click_events, lookback, recent))
            samples = persist(samples)
            train = samples.where(F.col("split") == "train")
            prior = train.agg(F.avg("label").alias("rate")).collect()[0]["rate"] or 0.0
            smoothing = float(config["item_stats"]["smoothing"])
            samples = samples.withColumn("item_ctr", history.smoothed_ctr(
                "item_clicks", "item_impressions", prior, smoothing)).withColumn(
                "item_ctr_recent", history.smoothed_ctr("item_clicks_recent", "item_impressions_recent",
                                                        prior, smoothing))

        with timings.step("fit_transform"):
            numeric = NUMERIC_FEATURES + numeric_columns
            train = samples.where(F.col("split") == "train")
            bucketized = [c for c in (config["bucketize"]["features"] or []) if c in samples.columns]
            boundaries = normalize.fit_bucket_boundaries(train, bucketized, int(config["bucketize"]["num_buckets"]))
            stats = normalize.fit_normalization(train, numeric, list(config["normalize"]["log1p"] or []))
            samples = samples.transform(lambda d: normalize.apply_buckets(d, boundaries)) \
                .transform(lambda d: normalize.apply_normalization(d, stats))

        spec = build_spec(config, vocab_sizes, vocab_tokens, stats, boundaries, has_position, passthrough)
        with timings.step("write_tfrecords"):
            for name in split.SPLITS:
                gfile.makedirs(posixpath.join(staging, name))
            features = [(f["name"], f["dtype"]) for f in spec["features"]]
            samples = _shard_layout(samples, config)
            shards = write_tfrecords(samples, features, staging, compression=config["tfrecord"]["compression"],
                                     rows_per_record=rows_per_record).collect()

        per_split = {name: {"rows": 0, "positives": 0, "shards": 0} for name in split.SPLITS}
        for shard in shards:
            entry = per_split[shard["split"]]
            entry["rows"] += shard["rows"]
            entry["positives"] += shard["positives"]
            entry["shards"] += 1
        spec["splits"] = {
            name: {"pattern": f"{name}/part-*{compression.extension}", "num_examples": e["rows"],
                   "label_rate": (e["positives"] / e["rows"]) if e["rows"] else None}
            for name, e in per_split.items()
        }
        samples_written = sum(e["rows"] for e in per_split.values())
        imp_rejected = sum(rejects["impressions"].values())
        if samples_written + imp_rejected != rows_read["impressions"]:
            raise RuntimeError(f"accounting mismatch: {rows_read['impressions']} impressions read, "
                               f"{samples_written} samples + {imp_rejected} rejects written")
        report = {
            "spark": spark_settings(spark),
            "input": raw_dir,
            "output": final,
            "rows_read": rows_read,
            "rejected": rejects,
            "rejected_total": {k: sum(v.values()) for k, v in rejects.items()},
            "clicks": {"valid": rows_read["clicks"] - sum(rejects["clicks"].values()),
                       "attributed": rows_read["clicks"] - sum(rejects["clicks"].values()) - orphan_clicks,
                       "orphan": orphan_clicks},
            "samples": {name: {"rows": e["rows"], "label_rate": spec["splits"][name]["label_rate"],
                               "shards": e["shards"]} for name, e in per_split.items()},
            "split_boundaries": {"valid_start": valid_start, "test_start": test_start},
            "vocabulary_sizes": vocab_sizes,
            "train_label_rate": prior,
            "spec_hash": spec["spec_hash"],
            "step_seconds": timings.seconds,
            "total_seconds": round(time.perf_counter() - started, 3),
        }
        with gfile.GFile(posixpath.join(staging, SPEC_FILE), "w") as fh:
            fh.write(json.dumps(spec, indent=2, sort_keys=False))
        with gfile.GFile(posixpath.join(staging, "report.json"), "w") as fh:
            fh.write(json.dumps(report, indent=2))
        with gfile.GFile(posixpath.join(staging, "_SUCCESS"), "w") as fh:
            fh.write("")
        stage.publish()
        return report
    finally:
        for df in persisted:
            df.unpersist()
        stage.close()
