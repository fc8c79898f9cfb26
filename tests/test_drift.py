"""The drift report (pipelines/samples/drift.py): the distances on hand-made histograms, the fit's profile and a
day's measures on hand-written rows, and a day's report.json against what its own samples and the fit say."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

import feature_spec
from features.declared import categorical, multi_categorical, numeric, vector
from pipelines.samples import drift
from tests.daily_world import D, day_samples

THRESHOLDS = {
    "max_oov_share": 0.05,
    "max_js_distance": 0.1,
    "max_linf_distance": 0.1,
    "max_label_rate_change": 0.25,
}


# ---------------------------------------------------------------- distances


def test_js_distance_on_hand_made_histograms():
    assert drift.js_distance([3, 1], [6, 2]) == 0.0  # the same shares
    assert drift.js_distance([1, 0], [0, 1]) == 1.0  # disjoint
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4); KL(p||m) = 1/2 log2(2/3) + 1/2 log2(2), KL(q||m) = log2(4/3)
    divergence = (0.5 * math.log2(2 / 3) + 0.5 + math.log2(4 / 3)) / 2
    assert drift.js_distance([5, 5], [7, 0]) == pytest.approx(math.sqrt(divergence), abs=1e-12)
    assert drift.js_distance([0, 0], [1, 2]) is None  # nothing to compare
    with pytest.raises(ValueError):
        drift.js_distance([1, 2], [1, 2, 3])


def test_linf_distance_and_the_other_share():
    assert drift.with_other([0.5, 0.25]) == [0.5, 0.25, 0.25]
    assert drift.linf_distance(drift.with_other([0.5, 0.25]), drift.with_other([0.3, 0.25])) == pytest.approx(0.2)
    assert drift.linf_distance([0.1], [0.1]) == 0.0


def _profile():
    return {
        "rows": 100,
        "positives": 20,
        "label_rate": 0.2,
        "numeric": {"x": {"edges": [5.0], "counts": [0, 50, 50]}},
        "categorical": {"position_idx": {"list": False, "values": [2, 3], "total": 100, "shares": [0.6, 0.3]}},
    }


def _day(rows, positives, counts, shares):
    return {
        "rows": rows,
        "positives": positives,
        "numeric": {"x": counts},
        "categorical": {"position_idx": {"total": rows, "shares": shares}},
    }


def test_a_day_like_its_fit_exceeds_nothing():
    oov = {"user_id": {"oov_rate": 0.01}, "item_id": {"oov_rate": 0.0}}
    report = drift.report_drift(
        _profile(), _day(10, 2, [0, 5, 5], [0.6, 0.3]), oov, {"user_id": (8, 1), "item_id": (4, 0)}, THRESHOLDS
    )
    assert report["exceeded"] == [] and report["recommendation"] is None
    assert report["ids"]["user_id"] == {"sample_share": 0.01, "distinct_ids": 8, "new_ids": 1, "id_share": 0.125}
    assert report["numeric"]["x"]["js_distance"] == 0.0
    assert report["categorical"]["position_idx"]["linf_distance"] == pytest.approx(0.0)
    assert report["label"] == {"rate": 0.2, "fit_rate": 0.2, "relative_change": 0.0}


def test_new_ids_alone_recommend_an_extend_and_a_moved_distribution_a_refit():
    oov = {"user_id": {"oov_rate": 0.0}, "item_id": {"oov_rate": 0.3}}
    distinct = {"user_id": (8, 0), "item_id": (10, 4)}
    new_ids = drift.report_drift(_profile(), _day(10, 2, [0, 5, 5], [0.6, 0.3]), oov, distinct, THRESHOLDS)
    assert new_ids["exceeded"] == [
        {"measure": "oov_sample_share", "feature": "item_id", "value": 0.3, "threshold": 0.05}
    ]
    assert new_ids["recommendation"].startswith("extend: item_id")
    # Every x in the upper bin, a new position taking 40% (other: 0.1 -> 0.5), one click in ten.
    moved = drift.report_drift(_profile(), _day(10, 1, [0, 0, 10], [0.3, 0.2]), oov, distinct, THRESHOLDS)
    by_measure = {(e["measure"], e["feature"]): e["value"] for e in moved["exceeded"]}
    assert by_measure[("js_distance", "x")] == pytest.approx(drift.js_distance([0, 50, 50], [0, 0, 10]), abs=1e-6)
    assert by_measure[("linf_distance", "position_idx")] == pytest.approx(0.4)
    assert moved["categorical"]["position_idx"]["widest"] == "other"
    assert by_measure[("label_rate_change", "label")] == pytest.approx(0.5)
    assert moved["recommendation"].startswith("refit: the distributions of label, position_idx, x moved")


# ---------------------------------------------------------------- on hand-written rows


SCHEMA = T.StructType(
    [
        T.StructField("x", T.DoubleType()),
        T.StructField("position_idx", T.LongType()),
        T.StructField("item_genres", T.ArrayType(T.LongType())),
        T.StructField("v", T.ArrayType(T.FloatType())),
        T.StructField("label", T.IntegerType()),
    ]
)
DECLARED = [
    numeric("x"),
    categorical("position_idx", "position"),
    multi_categorical("item_genres", "genre", 3),
    vector("v", 2),
]


def test_the_fit_profile_of_hand_written_rows(spark):
    xs = [None, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    positions = [2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5]
    genres = [[2, 3, 0], [2, 0, 0], [4, 0, 0]] + [[0, 0, 0]] * 8
    rows = [
        (None if x is None else float(x), p, g, [0.0, 1.0], int(i < 3))
        for i, (x, p, g) in enumerate(zip(xs, positions, genres))
    ]
    profile = drift.fit_profile(spark.createDataFrame(rows, SCHEMA), DECLARED, bins=2, top=2)
    # The median of 1..10 is the value at rank ceil(0.5 * 10) = 5: bins are no value, x < 5, x >= 5.
    assert profile["numeric"] == {"x": {"edges": [5.0], "counts": [1, 4, 6]}}  # the vector is not profiled
    assert profile["categorical"]["position_idx"] == {
        "list": False,
        "values": [2, 3],
        "total": 11,
        "shares": [4 / 11, 3 / 11],
    }
    # Genres 2 (twice), 3 and 4 (once each: the smaller index first); padding is no value.
    assert profile["categorical"]["item_genres"] == {"list": True, "values": [2, 3], "total": 4, "shares": [0.5, 0.25]}
    assert (profile["rows"], profile["positives"], profile["label_rate"]) == (11, 3, 3 / 11)

    # A day measured against it: the same aggregates on other rows.
    day_rows = [(7.0, 4, [4, 4, 0], [0.0, 0.0], 1), (None, 2, [3, 0, 0], None, 0), (5.0, 9, [0, 0, 0], None, 0)]
    day_frame = spark.createDataFrame(day_rows, SCHEMA)
    day = drift.measured(day_frame.agg(*drift.aggregates(profile)).collect()[0], profile)
    assert day["numeric"] == {"x": [1, 0, 2]}
    assert day["categorical"]["position_idx"] == {"total": 3, "shares": [1 / 3, 0.0]}
    assert day["categorical"]["item_genres"] == {"total": 3, "shares": [0.0, 1 / 3]}
    assert (day["rows"], day["positives"]) == (3, 1)


def test_distinct_oov_ids_count_every_bucket_as_unseen(spark):
    # user_id with 2 OOV buckets (1, 2; tokens from 3), item_id with one (1; tokens from 2).
    rows = [("a", 3, "i", 2), ("a", 3, "j", 1), ("b", 1, "k", 1), ("c", 2, "k", 1), ("c", 2, "i", 2)]
    frame = spark.createDataFrame(rows, "user_id string, user_idx long, item_id string, item_idx long")
    counts = drift.distinct_oov_ids(frame, {"user_id": 2, "item_id": 1})
    assert counts == {"user_id": (3, 2), "item_id": (3, 2)}


# ---------------------------------------------------------------- through the jobs


@pytest.mark.slow
def test_a_day_report_measures_its_own_samples_against_the_fit(four_days):
    spec = feature_spec.load_spec(four_days["spec"])
    with open(os.path.join(four_days["spec"], drift.PROFILE_FILE)) as fh:
        profile = json.load(fh)
    assert profile["spec_hash"] == feature_spec.spec_hash(spec)
    report = four_days["days"][3]["report"]
    section = report["drift"]
    samples = day_samples(four_days["samples"], D[3])
    rows = len(samples)
    assert sum(section["numeric"]["item_ctr"]["counts"]) == rows
    for name, entry in section["numeric"].items():
        expected = drift.js_distance(profile["numeric"][name]["counts"], entry["counts"])
        assert entry["js_distance"] == pytest.approx(expected, abs=1e-6), name
    # Categorical shares, label rate and ids, recomputed from the day's written samples.
    for name, entry in profile["categorical"].items():
        values = samples[name].to_numpy()
        if entry["list"]:
            flat = np.concatenate([np.asarray(v) for v in values])
            flat = flat[flat > 0]
        else:
            flat = np.asarray(values)
        shares = [float(np.mean(flat == v)) for v in entry["values"]]
        expected = drift.linf_distance(drift.with_other(shares), drift.with_other(entry["shares"]))
        assert section["categorical"][name]["linf_distance"] == pytest.approx(expected, abs=1e-6), name
    assert section["label"]["rate"] == pytest.approx(samples["label"].mean())
    assert section["label"]["fit_rate"] == pytest.approx(profile["label_rate"])
    for name, index in (("user_id", "user_idx"), ("item_id", "item_idx")):
        first = feature_spec.first_token_index(spec["vocabularies"][name])
        unseen = samples[index].between(1, first - 1)
        ids = section["ids"][name]
        assert ids["sample_share"] == pytest.approx(unseen.mean(), abs=1e-6)
        assert (ids["distinct_ids"], ids["new_ids"]) == (samples[name].nunique(), samples.loc[unseen, name].nunique())
    exceeded = {(e["measure"], e["feature"]) for e in section["exceeded"]}
    assert exceeded == {
        (measure, feature)
        for measure, key, values in (
            ("oov_sample_share", "max_oov_share", {k: v["sample_share"] for k, v in section["ids"].items()}),
            ("js_distance", "max_js_distance", {k: v["js_distance"] for k, v in section["numeric"].items()}),
            ("linf_distance", "max_linf_distance", {k: v["linf_distance"] for k, v in section["categorical"].items()}),
            ("label_rate_change", "max_label_rate_change", {"label": abs(section["label"]["relative_change"])}),
        )
        for feature, value in values.items()
        if value is not None and value > section["thresholds"][key]
    }


@pytest.mark.slow
def test_a_whole_build_profiles_its_train_split(four_days, spark, tmp_path):
    """A build that fits writes the profile of its train split; a --spec build without one reports why."""
    from pipelines.samples import build_samples as job
    from tests.samples_io import read_split

    whole = str(tmp_path / "fitted")
    job.build_samples(spark, four_days["raw"], whole, four_days["config"])
    with open(os.path.join(whole, drift.PROFILE_FILE)) as fh:
        profile = json.load(fh)
    train = read_split(whole, "train")
    assert (profile["rows"], profile["positives"]) == (len(train), int(train["label"].sum()))
    counts = pd.Series(np.asarray(train["position_idx"])).value_counts()
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[
        : len(profile["categorical"]["position_idx"]["values"])
    ]
    assert profile["categorical"]["position_idx"]["values"] == [int(v) for v, _ in top]
    assert profile["categorical"]["position_idx"]["shares"] == pytest.approx([c / len(train) for _, c in top])
    assert all(sum(entry["counts"]) == len(train) for entry in profile["numeric"].values())

    os.remove(os.path.join(whole, drift.PROFILE_FILE))
    day = job.build_samples(
        spark, four_days["raw"], str(tmp_path / "day"), four_days["config"], job.Plan(spec_dir=whole)
    )
    assert "is missing" in day["drift"]["unavailable"]


@pytest.mark.slow
def test_the_drift_table_reads_every_day_report(four_days):
    from pipelines.training import drift_plots

    table = drift_plots.drift_table(four_days["samples"])
    assert sorted(table["date"].unique()) == [d.isoformat() for d in D]
    for result in four_days["days"]:
        section, day = result["report"]["drift"], result["date"]
        mine = table[table["date"] == day].set_index(["measure", "feature"])["value"]
        assert mine[("oov_sample_share", "item_id")] == section["ids"]["item_id"]["sample_share"]
        assert mine[("id_share", "user_id")] == section["ids"]["user_id"]["id_share"]
        for name, entry in section["numeric"].items():
            assert mine[("js_distance", name)] == entry["js_distance"]
        assert drift_plots.drift_summary(table).loc[day, "exceeded"] == len(section["exceeded"])
    figure = drift_plots.drift_figure(table, "four days")
    assert len(figure.axes) == 4
    assert drift_plots.drift_table(four_days["whole"]).empty  # no day folders


def test_the_command_line_summary_of_a_drift():
    from jobs.build_samples import _drift_summary

    section = drift.report_drift(_profile(), _day(10, 1, [0, 0, 10], [0.6, 0.3]), {}, {}, THRESHOLDS)
    summary = _drift_summary(section)
    assert summary["exceeded"] == [
        "x js_distance 0.5579 > 0.1",
        "label label_rate_change 0.5 > 0.25",
    ]  # (1/2, 1/2) against (0, 1)
    assert summary["recommendation"] == section["recommendation"]
    assert _drift_summary({"unavailable": "why"}) == "unavailable: why"
