"""Dense item vectors (`items.vector_columns`): validation, the user's point-in-time mean vector,
per-dimension normalization, on a few hand-written rows with the results worked out by hand."""

import math

import pytest
from chispa import assert_df_equality

from features import history, normalize, validate
from features import items as item_features
from pipelines.config import ConfigError


# ---------------------------------------------------------------- validation
def test_item_vectors_are_parsed_and_bad_ones_rejected_with_their_reason(spark):
    rows = [
        ("i1", "Drama", [1.0, 2.0]),
        ("i2", "Drama", [1.0, 2.0, 3.0]),  # another length
        ("i3", "Drama", [float("nan"), 1.0]),
        ("i4", "Drama", [float("inf"), 1.0]),
        ("i5", "Drama", None),  # no vector: kept, as an item without one
        ("i6", "Drama", [1.0, None]),  # a value that is not a number
        ("i7", "Drama", [5.0]),  # the first i7 has a bad vector: the second copy is the one kept
        ("i7", "Comedy", [7.0, 8.0]),
        ("i1", "Comedy", [0.0, 0.0]),  # a repeat of a valid item
    ]
    df = spark.createDataFrame(rows, "item_id string, genres string, item_vec array<double>")
    out = validate.normalize_items(df, [], {"item_vec": 2})
    got = [(r["item_id"], r["reject_reason"], r["item_vec"]) for r in out.collect()]
    assert out.schema["item_vec"].dataType.simpleString() == "array<float>"
    reasons = {(item, reason) for item, reason, _ in got}
    assert reasons == {
        ("i1", None),
        ("i1", "duplicate_item"),
        ("i2", "wrong_vector_length"),
        ("i3", "non_finite_vector"),
        ("i4", "non_finite_vector"),
        ("i5", None),
        ("i6", "unparsable_vector"),
        ("i7", "wrong_vector_length"),
        ("i7", None),
    }
    kept = {item: vec for item, reason, vec in got if reason is None}
    assert kept == {"i1": [1.0, 2.0], "i5": None, "i7": [7.0, 8.0]}
    assert out.count() == len(rows)  # nothing is lost


def test_csv_vectors_are_strings_of_numbers(spark):
    rows = [("i1", "[0.5, -1]"), ("i2", "0.5|-1"), ("i3", " 0.5 -1 "), ("i4", "0.5|x"), ("i5", None)]
    df = spark.createDataFrame([(*row, "Drama") for row in rows], "item_id string, item_vec string, genres string")
    out = validate.normalize_items(df, [], {"item_vec": 2})
    got = {r["item_id"]: (r["reject_reason"], r["item_vec"]) for r in out.collect()}
    assert got == {
        "i1": (None, [0.5, -1.0]),
        "i2": (None, [0.5, -1.0]),
        "i3": (None, [0.5, -1.0]),
        "i4": ("unparsable_vector", [0.5, None]),
        "i5": (None, None),
    }


def test_vector_length_is_the_most_frequent_one_and_must_be_known(spark):
    df = spark.createDataFrame(
        [("i1", [1.0, 2.0], None), ("i2", [1.0, 2.0], None), ("i3", [1.0], [1.0]), ("i4", None, [2.0, 3.0])],
        "item_id string, a array<double>, b array<double>",
    )
    # a: length 2 twice, 1 once; b: 1 and 2 once each, a tie: the smaller.
    assert validate.vector_lengths(df, ["a", "b"]) == {"a": 2, "b": 1}
    empty = spark.createDataFrame([("i1", None)], "item_id string, c array<double>")
    with pytest.raises(validate.SchemaError, match="hold no vector.*items.vector_columns"):
        validate.vector_lengths(empty, ["c"])
    with pytest.raises(validate.SchemaError, match="vector column 'd' named in the config is missing"):
        validate.vector_lengths(empty, ["d"])
    wrong = spark.createDataFrame([("i1", True)], "item_id string, e boolean")
    with pytest.raises(validate.SchemaError, match="column 'e' has type boolean, expected an array of numbers"):
        validate.vector_lengths(wrong, ["e"])


def test_items_join_carries_the_vector_and_missing_items_have_none(spark):
    items = spark.createDataFrame(
        [("i1", ["Drama"], 1999, [1.0, 2.0])], "item_id string, genres array<string>, release_year int, v array<float>"
    )
    imps = spark.createDataFrame([("i1",), ("i9",)], "item_id string")
    out = item_features.join_item_attributes(imps, items, [], ["v"])
    assert {r["item_id"]: r["v"] for r in out.collect()} == {"i1": [1.0, 2.0], "i9": None}
    assert [d.name for d in item_features.item_features(2, [], {"v": 2}) if d.is_vector] == ["v"]


# ---------------------------------------------------------------- the user's mean vector
def test_user_vector_is_the_mean_of_the_last_clicked_items_vectors_strictly_before(spark):
    imps = spark.createDataFrame(
        [("u1", 5, 100, 0), ("u1", 5, 120, 0), ("u1", 5, 200, 0), ("u1", 5, 215, 0), ("u1", 5, 1150, 0)],
        "user_id string, item_idx long, ts long, label long",
    )
    clicks = spark.createDataFrame(
        [
            ("u1", 6, 108, [2], [1.0, 2.0]),
            ("u1", 4, 120, [3], None),  # an item without a vector: in the history, not in the mean
            ("u1", 8, 205, [4], [3.0, 6.0]),
            ("u1", 9, 210, [4], [5.0, 10.0]),
        ],
        "user_id string, item_idx long, ts long, genre_idxs array<long>, v array<float>",
    )
    out = history.user_history(
        imps,
        clicks,
        window_seconds=10,
        lookback_seconds=1000,
        max_len=2,
        top_genres=1,
        genre_history_len=3,
        vector_columns={"v": 2},
    )
    expected = spark.createDataFrame(
        [
            (100, [0, 0], None, 0),  # nothing before
            (120, [6, 0], [1.0, 2.0], 1),  # the click at 120 itself does not count
            (200, [4, 6], [1.0, 2.0], 1),  # item 4 has no vector: the mean of one
            (215, [9, 8], [4.0, 8.0], 2),  # the last max_len = 2 clicks only: 6 is left out
            (1150, [9, 8], [4.0, 8.0], 2),  # lookback 1000: clicks at or after 150
        ],
        "ts long, hist_click_items array<bigint>, user_v array<float>, user_v_len bigint",
    )
    assert_df_equality(
        out.select("ts", "hist_click_items", "user_v", "user_v_len"),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
    )
    names = [d.name for d in history.user_history_features(2, 1, {"v": 2})]
    assert names[-2:] == ["user_v", "user_v_len"] and out.columns[-2:] == names[-2:]


# ---------------------------------------------------------------- normalization
def test_vectors_are_normalized_per_dimension_on_train(spark):
    train = spark.createDataFrame(
        [([1.0, 10.0],), ([3.0, 10.0],), (None,)], "v array<float>"
    )  # dim 0: mean 2, std 1; dim 1: constant -> std 1
    stats = normalize.fit_normalization(train, ["v"], [], {"v": 2})
    assert stats == {"v": {"log1p": False, "mean": [2.0, 10.0], "std": [1.0, 1.0]}}
    other = spark.createDataFrame([([4.0, 12.0],), (None,)], "v array<float>")
    got = [r["v"] for r in normalize.apply_normalization(other, stats).collect()]
    assert got == [[2.0, 2.0], [0.0, 0.0]]  # a null vector: zeros, the train mean
    with pytest.raises(ValueError, match="log1p names vector feature"):
        normalize.fit_normalization(train, ["v"], ["v"], {"v": 2})


def test_vector_std_is_the_population_std_of_each_dimension(spark):
    train = spark.createDataFrame([([0.0, 1.0],), ([1.0, 2.0],), ([2.0, 6.0],)], "v array<float>")
    stats = normalize.fit_normalization(train, ["v"], [], {"v": 2})["v"]
    assert stats["mean"] == pytest.approx([1.0, 3.0])
    assert stats["std"] == pytest.approx([math.sqrt(2 / 3), math.sqrt(14 / 3)])


def test_config_errors_name_the_vector_feature(spark):
    from pipelines.build_samples import _vector_columns
    from pipelines.config import load_config

    config = load_config("build_samples", None, ["items.vector_columns={v: 0}"])
    with pytest.raises(ConfigError, match="length of 'v' must be a positive integer"):
        _vector_columns(config)
    config = load_config("build_samples", None, ["items.vector_columns=[v]", "items.numeric_columns=[v]"])
    with pytest.raises(ConfigError, match="not among items.numeric_columns"):
        _vector_columns(config)
    assert _vector_columns(load_config("build_samples", None, ["items.vector_columns=[v]"])) == {"v": None}
    assert _vector_columns(load_config("build_samples", None, ["items.vector_columns={v: 8}"])) == {"v": 8}
