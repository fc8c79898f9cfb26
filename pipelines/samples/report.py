"""What a build counts and writes beside its samples: rows read, owned and rejected by reason, OOV tokens, the
samples per split, and report.json with the accounting that every owned impression is a sample or a reject."""

from __future__ import annotations

import json
import posixpath
import time
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import feature_spec
from features import vocab
from pipelines import storage
from pipelines.samples import drift
from pipelines.samples.spark import spark_settings
from pipelines.timings import Timings

if TYPE_CHECKING:  # validation imports this module
    from pipelines.samples.build_mode import Plan
    from pipelines.samples.validation import Validated


def split_counts(shards: list, names: tuple[str, ...]) -> dict:
    """Per split: its rows, positives and shards, from the shards the write returned."""
    per_split = {name: {"rows": 0, "positives": 0, "shards": 0} for name in names}
    for shard in shards:
        entry = per_split[shard["split"]]
        entry["rows"] += shard["rows"]
        entry["positives"] += shard["positives"]
        entry["shards"] += 1
    return per_split


def spec_splits(per_split: dict, extension: str) -> dict:
    return {
        name: feature_spec.split(
            pattern=f"{name}/part-*{extension}",
            num_examples=e["rows"],
            label_rate=(e["positives"] / e["rows"]) if e["rows"] else None,
        )
        for name, e in per_split.items()
    }


def write_metadata(staging: str, spec: dict, report: dict, profile: dict | None = None) -> None:
    """feature_spec.json, report.json, the fit's profile when the build fitted (drift.PROFILE_FILE), _SUCCESS."""
    storage.write_text(posixpath.join(staging, feature_spec.SPEC_FILE), feature_spec.to_json(spec))
    if profile is not None:
        drift.write_profile(staging, profile, spec)
    storage.write_text(posixpath.join(staging, "report.json"), json.dumps(report, indent=2))
    storage.write_text(posixpath.join(staging, "_SUCCESS"), "")


# Above this many OOV buckets, report.json gives a vocabulary's bucket use as a summary only, not bucket by bucket.
MAX_LISTED_BUCKETS = 4096


def _is_oov(index, buckets: int):
    return (index >= F.lit(vocab.OOV_INDEX)) & (index < F.lit(vocab.first_token_index(buckets)))


def oov_counts(samples: DataFrame, oov_buckets: dict[str, int] | None = None, extra: list | None = None) -> tuple:
    """(samples, per vocabulary: the tokens of the samples' own ids and genres, and how many were out of
    vocabulary, the row of the aggregation) in one aggregation, which also computes the `extra` aggregate
    columns: a rising OOV rate says a refit (`--fit-only`) or an `--extend` is due. A vocabulary with
    several OOV buckets (`oov_buckets`: name -> K) also gets its bucket use (`oov_bucket_use`), from one more
    aggregation over the OOV tokens only."""
    buckets = {name: int((oov_buckets or {}).get(name, 1)) for name in [*vocab.ID_INDICES, "genre"]}
    parts = {
        name: (F.count(F.col(column)), F.sum(_is_oov(F.col(index), buckets[name]).cast("long")))
        for name, (column, index) in vocab.ID_INDICES.items()
        if index in samples.columns
    }
    parts["genre"] = (
        F.sum(F.size("genre_idxs")),
        F.sum(F.size(F.filter("genre_idxs", lambda x: _is_oov(x, buckets["genre"])))),
    )
    aggregates = [F.count(F.lit(1)).alias("_rows"), *(extra or [])]
    for name, (tokens, unseen) in parts.items():
        aggregates += [tokens.alias(f"{name}\u0001tokens"), unseen.alias(f"{name}\u0001oov")]
    row = samples.agg(*aggregates).collect()[0]
    counts = {}
    for name in parts:
        tokens, unseen = int(row[f"{name}\u0001tokens"] or 0), int(row[f"{name}\u0001oov"] or 0)
        counts[name] = {"tokens": tokens, "oov": unseen, "oov_rate": round(unseen / tokens, 6) if tokens else None}
    bucketed = [name for name in parts if buckets[name] > 1]
    if bucketed:
        for name, use in _bucket_use(samples, {name: buckets[name] for name in bucketed}).items():
            counts[name]["oov_bucket_use"] = use
    return int(row["_rows"]), counts, row


def _bucket_use(samples: DataFrame, buckets: dict[str, int]) -> dict[str, dict]:
    """Per vocabulary with K > 1 buckets: how many buckets its OOV tokens used, the most tokens (and distinct
    tokens) that shared one bucket, and, for K <= MAX_LISTED_BUCKETS, the tokens of each bucket in order."""
    parts = []
    for name, k in buckets.items():
        if name == "genre":
            pairs = samples.select(F.explode(F.arrays_zip(F.col("genres").alias("t"), F.col("genre_idxs").alias("i"))))
            pairs = pairs.select(F.col("col.t").cast("string").alias("token"), F.col("col.i").alias("index"))
        else:
            column, index = vocab.ID_INDICES[name]
            pairs = samples.select(F.col(column).cast("string").alias("token"), F.col(index).alias("index"))
        parts.append(pairs.where(_is_oov(F.col("index"), k)).withColumn("name", F.lit(name)))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    rows = (
        union.groupBy("name", "index")
        .agg(F.count(F.lit(1)).alias("tokens"), F.countDistinct("token").alias("distinct"))
        .collect()
    )
    use = {}
    for name, k in buckets.items():
        mine = sorted((int(r["index"]), int(r["tokens"]), int(r["distinct"])) for r in rows if r["name"] == name)
        entry = {
            "buckets": k,
            "buckets_used": len(mine),
            "max_tokens_in_a_bucket": max((t for _, t, _ in mine), default=0),
            "max_distinct_tokens_in_a_bucket": max((d for _, _, d in mine), default=0),
        }
        if k <= MAX_LISTED_BUCKETS:
            tokens = [0] * k
            for index, t, _ in mine:
                tokens[index - vocab.OOV_INDEX] = t
            entry["tokens_by_bucket"] = tokens
        use[name] = entry
    return use


def build_report(
    spark,
    where: tuple[str, str],
    raw: Validated,
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
