"""What one build makes samples of: the whole log, or a set of days.

The two modes differ in what they read, which rows they own and how the samples are split; everything
else in build_samples is the same for both. Each mode answers those questions, so the job has no
branch on which one it runs:

- `WholeLog`: every event of RAW is read and owned; the impressions are split by time (`split.*`) into
  train, valid and test, and the fit is made on train.
- `Days`: the events of a window of days (`windows.Window`), plus the lookback before them as history.
  The days' impressions are the build's one split (feature_spec.DAY_SPLIT, or train when it only fits);
  the impressions before them are CONTEXT: history events on narrow rows, never samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

import feature_spec
from features import split
from pipelines.samples import windows

# The split of the impressions before a window's days: read as history events, never written as samples.
CONTEXT = "context"
# What a history event of the point-in-time passes needs of an impression (features/history.py).
HISTORY_COLUMNS = ("user_id", "item_id", "ts", "label")


class EmptySplitError(RuntimeError):
    pass


def _iso(seconds) -> str:
    return "nothing" if seconds is None else windows.iso(seconds)


def check_splits_not_empty(imps: DataFrame, valid_start: int, test_start: int) -> None:
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


@dataclass(frozen=True)
class WholeLog:
    """Samples of the whole log, split by time into train, valid and test."""

    @property
    def splits(self) -> tuple[str, ...]:
        return split.SPLITS

    def prune(self, events: DataFrame) -> DataFrame:
        """RAW's `events`, restricted to the partitions the build reads: all of them."""
        return events

    def owned_rows(self, events: DataFrame, dataset: str, partitioned: bool) -> DataFrame:
        """Validated `events` with windows.OWNED: every row is read and owned."""
        return windows.in_window(events, dataset, None, partitioned)

    def owns(self, ts: Column) -> Column:
        return F.lit(True)

    def with_splits(self, labelled: DataFrame, impressions: DataFrame, split_config: dict) -> tuple[DataFrame, tuple]:
        """(`labelled` with `split`, the (valid_start, test_start) boundaries). The boundaries need only `ts`:
        taken from the unlabelled `impressions`, so the labels are computed once."""
        boundaries = split.split_boundaries(impressions, split_config)
        return split.assign_split(labelled, *boundaries), boundaries

    def samples_and_history(self, labelled: DataFrame, persist) -> tuple[DataFrame, DataFrame | None]:
        """(the impressions that become samples, the history-only impressions): all of them, none."""
        return labelled, None

    def check_not_empty(self, imps: DataFrame, boundaries: tuple, rows_owned: int, rejected: int) -> None:
        check_splits_not_empty(imps, *boundaries)

    def describe(self) -> str | None:
        return None


@dataclass(frozen=True)
class Days:
    """Samples of the impressions of `window`'s days (one split), with the lookback before them as history."""

    window: windows.Window
    fit_only: bool = False

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train",) if self.fit_only else (feature_spec.DAY_SPLIT,)

    def prune(self, events: DataFrame) -> DataFrame:
        """Only the date partitions that can hold the window's events (Spark reads no other file)."""
        return windows.prune_partitions(events, self.window)

    def owned_rows(self, events: DataFrame, dataset: str, partitioned: bool) -> DataFrame:
        """Validated `events` of the window's read range, with windows.OWNED: the rows of its days."""
        return windows.in_window(events, dataset, self.window, partitioned)

    def owns(self, ts: Column) -> Column:
        return self.window.owns(ts)

    def with_splits(self, labelled: DataFrame, impressions: DataFrame, split_config: dict) -> tuple[DataFrame, None]:
        """(`labelled` with `split`: the days' own split, CONTEXT before them; no boundaries)."""
        own = F.when(self.owns(F.col("ts")), F.lit(self.splits[0])).otherwise(F.lit(CONTEXT))
        return labelled.withColumn("split", own), None

    def samples_and_history(self, labelled: DataFrame, persist) -> tuple[DataFrame, DataFrame | None]:
        """(the days' impressions, the lookback's impressions on narrow rows: the history columns only).

        Only the days' impressions are carried wide (item attributes, features, output); the lookback's
        enter the point-in-time passes as history events. `labelled` is persisted: both come from it."""
        labelled = persist(labelled)
        history = labelled.where(F.col("split") == CONTEXT).select(*HISTORY_COLUMNS)
        return labelled.where(F.col("split") != CONTEXT), history

    def check_not_empty(self, imps: DataFrame, boundaries: None, rows_owned: int, rejected: int) -> None:
        if imps.limit(1).count() == 0:
            raise EmptySplitError(
                f"no valid impressions on {self.window.days} ({self.window.time_zone}): "
                f"{rows_owned} impressions of those days were read, {rejected} of them rejected"
            )

    def describe(self) -> str | None:
        return self.window.days


BuildMode = WholeLog | Days


@dataclass(frozen=True)
class Plan:
    """What one run builds.

    - default: samples of the whole log, split by `split.*`, fitted on the train split (as always);
    - `spec_dir`: apply that earlier fit (`feature_spec.json` + `vocab/`) instead of fitting one;
    - `window`: only the impressions of those days become samples (one split, feature_spec.DAY_SPLIT);
    - `fit_only`: fit, and write the spec (feature_spec.json, vocab/, report.json) without samples; with a
      window, every impression of its days is train;
    - `extend_dir` (with `fit_only`): grow that spec's vocabularies instead of fitting new ones: its tokens keep
      their indices, the new ones are appended; its normalization, buckets and CTR prior are kept, unless
      `refit_statistics`.
    """

    spec_dir: str | None = None
    window: windows.Window | None = None
    fit_only: bool = False
    extend_dir: str | None = None
    refit_statistics: bool = False

    def __post_init__(self):
        if self.extend_dir is not None and (not self.fit_only or self.spec_dir is not None):
            raise ValueError("Plan: extend_dir fits a new spec: it needs fit_only, and no spec_dir")
        if self.refit_statistics and self.extend_dir is None:
            raise ValueError("Plan: refit_statistics applies to an extend_dir")

    @property
    def mode(self) -> BuildMode:
        return WholeLog() if self.window is None else Days(self.window, self.fit_only)

    @property
    def splits(self) -> tuple[str, ...]:
        return self.mode.splits

    @property
    def spec_folders(self) -> list[str]:
        """The spec folders the build reads (an output must not overlap them)."""
        return [folder for folder in (self.spec_dir, self.extend_dir) if folder]

    def describe(self) -> dict:
        described = {"mode": "fit_only" if self.fit_only else "samples", "days": self.mode.describe()}
        described["spec"] = self.spec_dir
        if self.extend_dir is not None:
            described.update(extends=self.extend_dir, refit_statistics=self.refit_statistics)
        return described
