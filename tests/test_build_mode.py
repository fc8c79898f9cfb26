"""The two build modes on hand-written rows: which rows each owns, how it splits them, what it refuses."""

from datetime import date

import pytest
from pyspark.sql import functions as F

import feature_spec
from pipelines.samples.build_mode import CONTEXT, HISTORY_COLUMNS, Days, EmptySplitError, WholeLog
from pipelines.samples.build_samples import Plan
from pipelines.samples.windows import Window

DAY = 86400
JAN_2 = 1767312000  # 2026-01-02T00:00:00Z
WINDOW = Window(date(2026, 1, 2), date(2026, 1, 2), "UTC", lookback=2 * DAY, attribution=1800)
SPLIT = {"valid_start": None, "test_start": None, "valid_fraction": 0.25, "test_fraction": 0.25}


def _impressions(spark, times):
    return spark.createDataFrame(
        [(f"u{i}", "i1", t) for i, t in enumerate(times)], "user_id string, item_id string, ts long"
    )


def test_a_plan_without_days_is_the_whole_log_and_with_days_their_window():
    assert Plan().mode == WholeLog() and Plan().splits == ("train", "valid", "test")
    assert Plan(window=WINDOW).mode == Days(WINDOW) and Plan(window=WINDOW).splits == (feature_spec.DAY_SPLIT,)
    assert Plan(window=WINDOW, fit_only=True).splits == ("train",)
    assert Plan(window=WINDOW).describe()["days"] == "2026-01-02" and Plan().describe()["days"] is None


def test_days_own_only_their_impressions_and_make_the_earlier_ones_context(spark):
    times = [JAN_2 - DAY, JAN_2 - 1, JAN_2, JAN_2 + DAY - 1, JAN_2 + DAY]
    imps = _impressions(spark, times)
    labelled, boundaries = Days(WINDOW).with_splits(imps, imps, SPLIT)
    got = {row["ts"]: row["split"] for row in labelled.collect()}
    day = feature_spec.DAY_SPLIT
    assert boundaries is None
    assert got == {JAN_2 - DAY: CONTEXT, JAN_2 - 1: CONTEXT, JAN_2: day, JAN_2 + DAY - 1: day, JAN_2 + DAY: CONTEXT}
    owned = imps.where(Days(WINDOW).owns(F.col("ts"))).collect()
    assert sorted(row["ts"] for row in owned) == [JAN_2, JAN_2 + DAY - 1]
    assert imps.where(WholeLog().owns(F.col("ts"))).count() == len(times)


def test_the_whole_log_splits_by_time_and_fails_naming_an_empty_split(spark):
    imps = _impressions(spark, [JAN_2 + 100 * i for i in range(8)])
    labelled, (valid_start, test_start) = WholeLog().with_splits(imps, imps, SPLIT)
    splits = [row["split"] for row in labelled.orderBy("ts").collect()]
    assert splits == ["train"] * 4 + ["valid"] * 2 + ["test"] * 2
    assert (valid_start, test_start) == (JAN_2 + 301, JAN_2 + 501)  # the second after the last train / valid row
    WholeLog().check_not_empty(labelled, (valid_start, test_start), 8, 0)
    with pytest.raises(EmptySplitError, match=r"the valid split is empty: train is ts < 2026-01-02T00:05:01Z"):
        WholeLog().check_not_empty(labelled.where(F.col("split") != "valid"), (valid_start, test_start), 8, 0)


def test_days_carry_their_own_impressions_wide_and_the_lookback_as_narrow_history(spark):
    imps = _impressions(spark, [JAN_2 - DAY, JAN_2, JAN_2 + 5]).withColumns({"label": F.lit(0), "position": F.lit(3)})
    labelled, _ = Days(WINDOW).with_splits(imps, imps, SPLIT)
    owned, history = Days(WINDOW).samples_and_history(labelled, lambda df: df)
    assert sorted(row["ts"] for row in owned.collect()) == [JAN_2, JAN_2 + 5]
    assert owned.columns == labelled.columns
    assert tuple(history.columns) == HISTORY_COLUMNS and [row["ts"] for row in history.collect()] == [JAN_2 - DAY]
    everything, none = WholeLog().samples_and_history(labelled, lambda df: df)
    assert everything is labelled and none is None


def test_days_without_an_impression_of_their_own_fail_with_the_counts(spark):
    imps = _impressions(spark, [JAN_2 - DAY]).withColumn("label", F.lit(0))
    owned, _ = Days(WINDOW).samples_and_history(Days(WINDOW).with_splits(imps, imps, SPLIT)[0], lambda df: df)
    with pytest.raises(
        EmptySplitError, match=r"no valid impressions on 2026-01-02 \(UTC\): 3 impressions .* 3 of them"
    ):
        Days(WINDOW).check_not_empty(owned, None, 3, 3)
