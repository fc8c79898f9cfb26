"""SAMPLES/raw_values/test/ (`output.raw_values`): the raw values each test sample was made from.

One Parquet row per test sample, with the columns RUN/model's `serving_raw` signature takes
(pipelines/training/serving_raw.py) and the sample's identity (user_id, item_id, ts, label, the passthrough
metadata, position), so that the served scores can be checked against `predictions/test.parquet`:

- `user_id`, `item_id` (strings), `position`; `genres` (the item's genres, ["unknown"] for an item without
  attributes, as the build saw them);
- `hist_click_items`, `hist_skip_items`: the raw item ids of the histories, newest first, as many as the
  samples list (at most history.max_len);
- `user_top_genres`: the genre string behind each top genre index (for an unseen genre: one of the strings
  the build mapped to that OOV bucket);
- every numeric model input before log1p and the z-score (null where the build had none), the smoothed CTRs
  included; vectors as lists of floats (null: no vector).

Written from the samples before the transform: a pass over the test split, off by default.
"""

from __future__ import annotations

import posixpath

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features import history
from features.declared import Declared

RAW_VALUES = "raw_values"
_IDENTITY = ("user_id", "item_id", "ts", "label")
_RAW_IDS = ("user_id", "item_id", "position", "genres")


def raw_value_columns(samples: DataFrame, declared: list[Declared], metadata: list[str]) -> list:
    """The columns of raw_values/, as Spark columns of the samples before the transform."""
    names = [*_IDENTITY, *metadata, *_RAW_IDS]
    columns = [F.col(name) for name in dict.fromkeys(names) if name in samples.columns]
    for feature in declared:
        if feature.name in history.RAW_LISTS:
            columns.append(F.col(history.RAW_LISTS[feature.name]).alias(feature.name))
        elif feature.is_vector:
            columns.append(F.col(feature.name).cast("array<float>"))
        elif feature.kind == "numeric":
            columns.append(F.col(feature.name).cast("double"))
    return columns


def without_raw_lists(samples: DataFrame) -> DataFrame:
    return samples.drop(*history.RAW_LISTS.values())


def write_raw_values(samples: DataFrame, fitted, declared: list[Declared], metadata: list[str], folder: str) -> None:
    """Write `folder`/raw_values/test/ from `samples` (before the transform, with the raw lists of a build with
    raw ids); the smoothed CTRs are computed with the fit's prior, as the transform computes them."""
    test = samples.where(F.col("split") == "test").transform(
        lambda d: history.with_smoothed_ctr(d, fitted.prior, fitted.smoothing)
    )
    columns = raw_value_columns(test, declared, metadata)
    test.select(*columns).write.mode("overwrite").parquet(posixpath.join(folder, RAW_VALUES, "test"))
