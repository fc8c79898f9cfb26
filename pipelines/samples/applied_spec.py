"""A `--spec` applied to a build: loaded and checked (its CTR prior, its sample settings, its vocabularies),
then compared with what this config would make, before any work (docs/jobs.md, "Daily builds")."""

from __future__ import annotations

from pyspark.sql import SparkSession

import feature_spec
from pipelines import storage
from pipelines.config_schema import BuildConfig
from pipelines.errors import ConfigError
from pipelines.samples import fitting, settings
from pipelines.samples.model_inputs import declared_features, vector_columns
from pipelines.samples.spark_files import hadoop_has_file_system
from pipelines.samples.tfrecord import compression_options


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


def spec_differences(applied: dict, built: dict) -> list[str]:
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


def load_applied_spec(spark: SparkSession, spec_dir: str | None) -> dict | None:
    """The --spec to apply (validated; its vocab/ must be where Spark reads), or None to fit one."""
    if spec_dir is None:
        return None
    folder = storage.normalize(spec_dir)
    if not hadoop_has_file_system(spark, folder):
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


def check_spec_fits_config(applied: dict, config: BuildConfig, spec_dir: str) -> None:
    """ConfigError, before any work, when the config makes other model inputs than the --spec describes
    (history lengths, item columns, buckets...) or under other sample settings (pipelines/samples/settings.py);
    what only the data shows is checked by the spec hash later."""
    settings.check_recorded(feature_spec.sample_settings(applied), config, spec_dir)
    written = {
        "compression": compression_options(config.tfrecord.compression).tf_type,
        "rows_per_record": config.tfrecord.rows_per_record,
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
    lengths = {**dict.fromkeys(vector_columns(config), 1), **spec_vector_lengths(applied, config)}
    declared = declared_features(list(applied.get("vocabularies") or {}), config, lengths)
    recorded = fitting.Fitted.from_spec(applied, fitting.vocabularies_from_spec(applied, spec_dir=spec_dir))
    bucketized = [c for c in (config.bucketize.features or []) if c in {d.name for d in declared}]
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


def spec_vector_lengths(spec: dict, config: BuildConfig) -> dict[str, int]:
    """The lengths of the configured item vectors, as the spec fixes them (a day's data may not say)."""
    names = {entry["name"]: entry for entry in feature_spec.model_inputs(spec)}
    return {name: feature_spec.numeric_width(names[name]) for name in vector_columns(config) if name in names}
