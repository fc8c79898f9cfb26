"""The model inputs a build config declares: each feature step's declaration, in the order of the steps,
with the configured item columns checked against the names the job makes itself."""

from __future__ import annotations

from features import history, vocab
from features import items as item_features
from pipelines.config_schema import BuildConfig
from pipelines.errors import ConfigError


def vector_columns(config: BuildConfig) -> dict[str, int | None]:
    """`items.vector_columns` (validated by the config schema): a list of names, whose lengths are
    inferred from the data, or {name: length or null}."""
    value = config.items.vector_columns or []
    return dict(value) if isinstance(value, dict) else dict.fromkeys(value)


# Columns the job itself gives the impressions: an item column may not take one of these names.
_PIPELINE_COLUMNS = {"user_id", "item_id", "ts", "impression_id", "position", "label", "split", "genres", "genre_idxs"}


def declared_features(vocabulary_names, config: BuildConfig, vector_lengths: dict[str, int]) -> list:
    """Every model input, as its step declares it, in the order of the steps (ConfigError when an
    item column would make a feature twice or take a column the job makes)."""
    h, it = config.history, config.items
    item_columns = list(it.numeric_columns or []) + list(vector_lengths)
    taken = sorted(set(item_columns) & (_PIPELINE_COLUMNS | set(config.passthrough or [])))
    if taken:
        raise ConfigError(f"item column(s) {taken} named in items.numeric_columns / items.vector_columns are taken")
    features = [
        *vocab.id_features(vocabulary_names),
        *history.user_history_features(h.max_len, h.top_genres, vector_lengths),
        *history.ITEM_STATISTICS_FEATURES,
        *item_features.item_features(it.max_genres, list(it.numeric_columns or []), vector_lengths),
    ]
    names = [d.name for d in features]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"feature name(s) {repeated} would be made twice: rename the item column(s) named in "
            "items.numeric_columns / items.vector_columns"
        )
    return features
