"""Everything learned from the train split, in one place: fit on train, transform any split.

Two phases, because the point-in-time features need item indices before they can be computed:

    vocabularies = fit_vocabularies(train_impressions, min_count)   # before the features
    fitted = fit(train_samples, vocabularies, declared, config)     # after them
    samples = fitted.transform(samples)                             # any split
    fitted.spec_features(declared, metadata)                        # what goes into the spec

`Fitted` holds the vocabularies (sizes and token counts), the CTR prior (train label rate), the
normalization statistics and the bucket boundaries; nothing fitted lives anywhere else. The spec records
all of it, so `from_spec` rebuilds the `Fitted` of an earlier build (`build_samples --spec SPEC`): a
daily build applies the fit of a chosen training window rather than fitting its own day.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import feature_spec
from features import history, normalize, vocab
from features import items as item_features
from features.declared import Declared
from pipelines.config_schema import BuildConfig
from pipelines.errors import ConfigError
from pipelines.samples import drift
from pipelines.samples.spark import literal_path


@dataclass(frozen=True)
class Vocabularies:
    frames: dict[str, DataFrame]  # name -> `index, token, count`
    num_tokens: dict[str, int]
    min_count: int
    genre_index: dict[str, int]  # the small genre vocabulary as a map, for array lookups
    # name -> its OOV buckets (features/vocab.py: 1..K, tokens from K + 1); 1 for a name it lacks
    oov_buckets: dict[str, int] = field(default_factory=dict)

    def buckets(self, name: str) -> int:
        return int(self.oov_buckets.get(name, 1))

    @property
    def sizes(self) -> dict[str, int]:
        return {name: n + vocab.first_token_index(self.buckets(name)) for name, n in self.num_tokens.items()}

    def spec_entries(self) -> dict[str, dict]:
        return {
            name: feature_spec.vocabulary(
                size=self.sizes[name],
                num_tokens=self.num_tokens[name],
                min_count=self.min_count,
                path=f"vocab/{name}",
                oov_buckets=self.buckets(name),
            )
            for name in sorted(self.num_tokens)
        }

    def index_ids(self, df: DataFrame) -> DataFrame:
        """Add the id indices (user_idx, item_idx, position_idx) of the vocabularies fitted."""
        return vocab.index_ids(df, self.frames, self.oov_buckets)

    def index_items(self, df: DataFrame) -> DataFrame:
        """Add item_idx only."""
        return vocab.apply_vocabulary(df, "item_id", self.frames["item_id"], "item_idx", self.buckets("item_id"))

    def genre_features(self, df: DataFrame, max_genres: int) -> DataFrame:
        return item_features.genre_features(df, self.genre_index, max_genres, self.buckets("genre"))


class SpecNotApplicable(ValueError):
    """A `--spec` that cannot be applied: written before the fit was recorded whole, or unreadable."""


def vocabularies_from_spec(spec: dict, spark=None, spec_dir: str | None = None) -> Vocabularies:
    """The vocabularies an earlier build recorded: with `spark`, their tokens too, read from `spec_dir`'s
    `vocab/` (Spark reads them: local or hdfs://); without, their sizes only (no frames)."""
    entries = spec.get("vocabularies") or {}
    if "genre" not in entries:
        raise SpecNotApplicable(f"the spec of {spec_dir} has no genre vocabulary")
    frames = {}
    if spark is not None:
        frames = {name: _read_vocabulary(spark, spec, spec_dir, name) for name in entries}
    return Vocabularies(
        frames=frames,
        num_tokens={name: int(entry["num_tokens"]) for name, entry in entries.items()},
        min_count=max(int(entry["min_count"]) for entry in entries.values()),
        genre_index=vocab.small_vocabulary_map(frames["genre"]) if frames else {},
        oov_buckets={name: feature_spec.oov_bucket_count(entry) for name, entry in entries.items()},
    )


def _read_vocabulary(spark, spec: dict, spec_dir: str, name: str) -> DataFrame:
    path = feature_spec.vocabulary_path(spec_dir, spec, name)
    try:
        return spark.read.parquet(literal_path(path)).select(
            F.col("index").cast("long"), F.col("token").cast("string"), F.col("count").cast("long")
        )
    except Exception as exc:  # AnalysisException: no such folder, no Parquet in it, no such column
        raise SpecNotApplicable(
            f"--spec {spec_dir}: vocabulary {name} ({path}) cannot be read: {_first_line(exc)}"
        ) from None


def check_vocabularies(spark, spec: dict, spec_dir: str) -> None:
    """SpecNotApplicable, naming the vocabulary, unless each one of the spec can be read from `spec_dir` and
    its rows match its entry (feature_spec.check_vocabulary_rows); one small Spark job reads them all, so
    Spark's own checks (checksums, Parquet footers) run before any work."""
    entries = spec.get("vocabularies") or {}
    frames = {name: _read_vocabulary(spark, spec, spec_dir, name) for name in entries}
    counted = [
        frame.agg(
            F.lit(name).alias("name"),
            F.count(F.lit(1)).alias("rows"),
            F.count(F.when(F.col("index").isNull() | F.col("token").isNull(), 1)).alias("null_rows"),
            F.countDistinct("token").alias("distinct_tokens"),
            F.countDistinct("index").alias("distinct_indices"),
            F.min("index").alias("min_index"),
            F.max("index").alias("max_index"),
        )
        for name, frame in frames.items()
    ]
    if not counted:
        return
    try:
        rows = functools.reduce(DataFrame.unionByName, counted).collect()
    except Exception:  # a corrupt or truncated file, a checksum that does not match: find whose, one by one
        for name, count in zip(frames, counted):
            try:
                count.collect()
            except Exception as exc:
                raise SpecNotApplicable(
                    f"--spec {spec_dir}: vocabulary {name} ({feature_spec.vocabulary_path(spec_dir, spec, name)}) "
                    f"cannot be read: {_first_line(exc)}"
                ) from None
        raise
    for row in rows:
        try:
            feature_spec.check_vocabulary_rows(row["name"], entries[row["name"]], row.asDict(), spec_dir)
        except feature_spec.VocabularyError as exc:
            raise SpecNotApplicable(f"--spec {spec_dir}: {exc}") from None


def _first_line(exc: BaseException) -> str:
    """What went wrong, in one line: a Py4JJavaError's first line only names the call, so its first Java
    exception is taken instead."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if "Exception:" in line or "Error:" in line]
    return ((causes or lines or [type(exc).__name__])[0])[:300]


def fit_vocabularies(train: DataFrame, min_count: int, oov_buckets: dict[str, int] | None = None) -> Vocabularies:
    """Every vocabulary (ids present in `train`, genres) in one count and one sort; `oov_buckets`: name -> K
    (1 when absent)."""
    names = vocab.vocabulary_names(train)
    buckets = {name: int((oov_buckets or {}).get(name, 1)) for name in names}
    fitted, counted = vocab.fit_vocabularies(vocab.vocabulary_tokens(train), int(min_count), buckets)
    frames = {name: fitted.where(F.col("name") == name).drop("name") for name in names}
    return Vocabularies(
        frames=frames,
        num_tokens={name: int(counted.get(name, 0)) for name in names},
        min_count=int(min_count),
        genre_index=vocab.small_vocabulary_map(frames["genre"]),
        oov_buckets=buckets,
    )


def extend_vocabularies(parent: Vocabularies, train: DataFrame) -> Vocabularies:
    """`parent`'s vocabularies (from its spec, with their frames), every row at its index, with the tokens of
    `train` they lack appended from each one's size on, in order of decreasing count (ties by token); a
    token seen fewer than the parent's min_count times is not appended. The OOV buckets stay the parent's.
    Existing rows keep the parent's counts; appended rows carry `train`'s."""
    names = sorted(parent.num_tokens)
    unknown = sorted(set(vocab.vocabulary_names(train)) - set(names))
    if unknown:
        raise SpecNotApplicable(f"--extend: the spec has no vocabulary {unknown}, which this data has")
    known = functools.reduce(
        DataFrame.unionByName, [parent.frames[name].select(F.lit(name).alias("name"), "token") for name in names]
    )
    new_tokens = vocab.vocabulary_tokens(train).join(known, on=["name", "token"], how="left_anti")
    sizes = parent.sizes
    appended, counted = vocab.fit_vocabularies(new_tokens, parent.min_count, start_at=sizes)
    frames = {
        name: parent.frames[name].unionByName(appended.where(F.col("name") == name).drop("name")) for name in names
    }
    return Vocabularies(
        frames=frames,
        num_tokens={name: parent.num_tokens[name] + int(counted.get(name, 0)) for name in names},
        min_count=parent.min_count,
        genre_index=vocab.small_vocabulary_map(frames["genre"]),
        oov_buckets=dict(parent.oov_buckets),
    )


@dataclass(frozen=True)
class Fitted:
    vocabularies: Vocabularies
    prior: float  # the train label rate: the smoothed CTRs' prior
    smoothing: float
    normalization: dict[str, dict]  # numeric feature -> {log1p, mean, std}
    boundaries: dict[str, list[float]]  # bucketized feature -> boundaries
    # The train split's profile, which a later build's drift is measured against (pipelines/samples/drift.py);
    # None for a fit read from a spec.
    profile: dict | None = None

    @classmethod
    def from_spec(cls, spec: dict, vocabularies: Vocabularies) -> "Fitted":
        """The fit an earlier build recorded in its spec: applied as is, never refitted."""
        recorded = feature_spec.smoothed_ctr_prior(spec)
        if recorded is None:
            raise SpecNotApplicable(
                "the spec does not record its CTR prior (it was written before daily builds): "
                "fit a new one with build_samples --fit-only"
            )
        normalization, boundaries = {}, {}
        for entry in feature_spec.model_inputs(spec):
            if entry["kind"] == "numeric":
                normalization[entry["name"]] = copy.deepcopy(entry["normalization"])
            elif entry.get("bucketization"):
                boundaries[entry["bucketization"]["source"]] = list(entry["bucketization"]["boundaries"])
        return cls(
            vocabularies=vocabularies,
            prior=recorded[0],
            smoothing=recorded[1],
            normalization=normalization,
            boundaries=boundaries,
        )

    def spec_smoothed_ctr(self) -> dict:
        return feature_spec.smoothed_ctr(prior=self.prior, smoothing=self.smoothing)

    def transform(self, samples: DataFrame) -> DataFrame:
        """Smoothed CTRs, bucket indices, then normalized numerics (the raw values are replaced)."""
        return (
            samples.transform(lambda d: history.with_smoothed_ctr(d, self.prior, self.smoothing))
            .transform(lambda d: normalize.apply_buckets(d, self.boundaries))
            .transform(lambda d: normalize.apply_normalization(d, self.normalization))
        )

    def spec_features(self, declared: list[Declared], metadata: list[tuple[str, str]]) -> list[dict]:
        """The spec's feature entries: indices by kind, then buckets, numerics, the label, the metadata.

        Within a kind the declarations keep the order of the steps, so a spec lists its features the same
        way in every build (their order is part of the spec hash and of the models' field order).
        """
        sizes = self.vocabularies.sizes
        by_kind = {
            kind: [d for d in declared if d.kind == kind] for kind in ("categorical", "sequence", "multi_categorical")
        }
        features = [
            feature_spec.categorical(d.name, vocabulary=d.vocabulary, vocab_size=sizes[d.vocabulary])
            for d in by_kind["categorical"]
        ]
        features += [
            feature_spec.sequence(d.name, length=d.length, vocabulary=d.vocabulary, vocab_size=sizes[d.vocabulary])
            for d in by_kind["sequence"]
        ]
        features += [
            feature_spec.multi_categorical(
                d.name, length=d.length, vocabulary=d.vocabulary, vocab_size=sizes[d.vocabulary]
            )
            for d in by_kind["multi_categorical"]
        ]
        features += [
            feature_spec.bucketized(f"{source}_bucket", source=source, boundaries=bounds)
            for source, bounds in self.boundaries.items()
        ]
        lengths = {d.name: d.length for d in declared if d.is_vector}
        features += [
            feature_spec.numeric(name, normalization=stats, length=lengths.get(name))
            for name, stats in self.normalization.items()
        ]
        features.append(feature_spec.label())
        features += [feature_spec.metadata(name, dtype) for name, dtype in metadata]
        return features


def check_vector_config(declared: list[Declared], config: BuildConfig) -> None:
    """ConfigError when normalize.log1p or bucketize.features names a dense vector (known before any work)."""
    vectors = {d.name for d in declared if d.is_vector}
    for key, names in (
        ("normalize.log1p", config.normalize.log1p or []),
        ("bucketize.features", config.bucketize.features or []),
    ):
        if set(names) & vectors:
            raise ConfigError(
                f"{key} names the vector feature(s) {sorted(set(names) & vectors)}: "
                "a dense vector is normalized per dimension, it is neither log1p'd nor bucketized"
            )


def fit(train: DataFrame, vocabularies: Vocabularies, declared: list[Declared], config: BuildConfig) -> Fitted:
    """Fit the CTR prior, the bucket boundaries and the normalization of every declared numeric on `train`.

    `normalize.log1p` null means every declared count; `bucketize.features` names what to bucketize.
    A dense vector is normalized per dimension; it can be neither log1p'd nor bucketized (ConfigError).
    """
    prior = train.agg(F.avg("label").alias("rate")).collect()[0]["rate"] or 0.0
    smoothing = float(config.item_stats.smoothing)
    train = history.with_smoothed_ctr(train, prior, smoothing)
    numeric = [d for d in declared if d.kind == "numeric"]
    vectors = {d.name: d.length for d in numeric if d.is_vector}
    log1p = config.normalize.log1p
    log1p = [d.name for d in numeric if d.count] if log1p is None else list(log1p)
    check_vector_config(declared, config)
    bucketized = [c for c in (config.bucketize.features or []) if c in train.columns]
    own = [d.name for d in numeric if d.statistics_of is None]
    # Both fits read the distinct values of their scalars, counted in one pass over the train rows.
    scalars = bucketized + [c for c in own if c not in vectors]
    counted = normalize.value_counts(train, scalars).persist(StorageLevel.DISK_ONLY) if scalars else None
    try:
        buckets = config.bucketize.num_buckets
        boundaries = normalize.fit_bucket_boundaries(train, bucketized, buckets, counted=counted)
        stats = normalize.fit_normalization(
            train, own, log1p, {n: vectors[n] for n in own if n in vectors}, counted=counted
        )
        profile = drift.fit_profile(train, declared, config.drift.histogram_bins, config.drift.top_values, counted)
    finally:
        if counted is not None:
            counted.unpersist()
    for d in numeric:
        if d.statistics_of is not None:
            if d.statistics_of not in stats or vectors.get(d.statistics_of) != d.length:
                raise ValueError(
                    f"vector '{d.name}' takes the statistics of '{d.statistics_of}', not a vector of its length"
                )
            stats[d.name] = copy.deepcopy(stats[d.statistics_of])
    stats = {d.name: stats[d.name] for d in numeric}
    return Fitted(
        vocabularies=vocabularies,
        prior=prior,
        smoothing=smoothing,
        normalization=stats,
        boundaries=boundaries,
        profile=profile,
    )
