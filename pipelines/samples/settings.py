"""Which build settings change the samples, and how a spec keeps each of them honest.

A spec hash names what the samples mean: two builds that share it must make the same labels and feature
values from the same events. Every setting of `conf/build_samples.yaml` is in exactly one class below
(tests/test_daily_contract.py walks them all):

- RECORDED: decides labels or feature values and leaves no other trace in the spec. Its value is written
  into the spec's `sample_settings`, which is hashed; a `--spec` build under another value is refused
  before any work.
- DESCRIBED: the spec's entries already describe it (feature shapes and kinds, bucketized columns, item
  columns, metadata columns) or a hashed key holds it (compression, rows per record). A `--spec` build
  that makes other entries is refused (before any work for model inputs, after the build for the rest).
- FITTED: decides the fit only (vocabularies, moments, bucket boundaries, the CTR prior and smoothing,
  the train split they are fitted on). A fit records its outcome in the spec, so the hash changes with
  it; a `--spec` build takes the spec's fit, and the setting changes no sample.
- NO_SAMPLE_CHANGE: how the job runs or lays out its files, never what a sample holds.
"""

from __future__ import annotations

from pipelines.errors import ConfigError

RECORDED = (
    "labels.attribution_window_minutes",  # which clicks credit an impression: the label, and the click history
    "history.lookback_days",  # how far back history and item statistics reach
    "history.genre_history_len",  # how many prior clicks make the top genres
    "item_stats.recent_days",  # the window of the recent item counts
    "validation.ts_min",  # events outside [ts_min, ts_max) are rejected: never a label or history event
    "validation.ts_max",
    "dates.time_zone",  # where a day's samples begin and end: days of one SAMPLES must not overlap
)

DESCRIBED = (
    "history.max_len",
    "history.top_genres",
    "items.max_genres",
    "items.numeric_columns",
    "items.vector_columns",
    "bucketize.features",
    "passthrough",
    "tfrecord.compression",
    "tfrecord.rows_per_record",
)

FITTED = (
    "vocab.min_count",
    "vocab.oov_buckets",
    "normalize.log1p",
    "bucketize.num_buckets",
    "item_stats.smoothing",
    "split.valid_fraction",
    "split.test_fraction",
    "split.valid_start",
    "split.test_start",
)

NO_SAMPLE_CHANGE = (
    "input.format",  # the same rows read from Parquet or CSV
    "output.spark_scratch",
    "output.raw_values",  # a Parquet file beside the samples, not in them
    "spark.app_name",
    "spark.shuffle_partitions",
    "spark.impressions_per_partition",
    "spark.output_partitions",  # how many shards, not what they hold
    "tfrecord.shuffle_seed",  # the order of rows within a shard
    "validation.max_reject_fraction",  # whether the build fails, not what it writes
    # The drift report's profile and thresholds (pipelines/samples/drift.py): what report.json says, no sample.
    "drift.histogram_bins",
    "drift.top_values",
    "drift.max_oov_share",
    "drift.max_js_distance",
    "drift.max_linf_distance",
    "drift.max_label_rate_change",
)


def _value(config, dotted: str):
    """The setting at `dotted` of a BuildConfig or of its plain dict."""
    if not isinstance(config, dict):
        return config.value(dotted)
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _canonical(value):
    """Numbers as floats (30 and 30.0 are one setting), everything else as its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None if value is None else str(value)


def recorded(config) -> dict:
    """The spec's `sample_settings` for a validated build config."""
    return {name: _canonical(_value(config, name)) for name in RECORDED}


def check_recorded(spec_settings: dict | None, config, spec_dir: str) -> None:
    """ConfigError, before any work, when the config's RECORDED settings differ from the --spec's."""
    if spec_settings is None:
        return  # a spec written before they were recorded: refused by the caller
    ours = recorded(config)
    differ = [
        f"{name}: spec {spec_settings.get(name)!r}, config {ours[name]!r}"
        for name in RECORDED
        if spec_settings.get(name) != ours[name]
    ]
    if differ:
        raise ConfigError(
            f"--spec {spec_dir} was fitted under other sample settings, and its hash promises those: "
            + "; ".join(differ)
            + ". Build with the settings the spec records (feature_spec.json, sample_settings), "
            "or fit a new spec (--fit-only)"
        )
