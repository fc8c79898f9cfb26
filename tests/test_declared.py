"""Feature steps declare the model inputs they add; the fitted train split turns them into spec entries."""

import pytest

from features import declared, history, vocab
from features import items as item_features
from pipelines.samples.fitting import Fitted, Vocabularies


def _columns_and_lengths(df):
    row = df.first().asDict()
    return {name: (len(value) if isinstance(value, list) else None) for name, value in row.items()}


def test_every_declared_user_and_item_feature_is_a_column_of_its_step(spark):
    imps = spark.createDataFrame(
        [("u1", 5, 100, 0), ("u1", 6, 200, 1)], "user_id string, item_idx long, ts long, label long"
    )
    clicks = spark.createDataFrame(
        [("u1", 6, 150, [2, 3])], "user_id string, item_idx long, ts long, genre_idxs array<long>"
    )
    out = history.user_history(
        imps, clicks, window_seconds=10, lookback_seconds=1000, max_len=3, top_genres=2, genre_history_len=3
    )
    got = _columns_and_lengths(out)
    for feature in history.user_history_features(max_len=3, top_genres=2):
        assert got[feature.name] == feature.length, feature

    items = spark.createDataFrame(
        [("i1", ["Drama", "Comedy"], 1999, 2.5)],
        "item_id string, genres array<string>, release_year int, duration double",
    )
    rows = (
        spark.createDataFrame([("i1",)], "item_id string")
        .transform(lambda d: item_features.join_item_attributes(d, items, ["duration"]))
        .transform(lambda d: item_features.genre_features(d, {"Drama": 2, "Comedy": 3}, max_genres=4))
    )
    got = _columns_and_lengths(rows)
    for feature in item_features.item_features(max_genres=4, numeric_columns=["duration"]):
        assert got[feature.name] == feature.length, feature


def test_index_ids_adds_the_declared_indices_of_the_fitted_vocabularies(spark):
    user_vocab = spark.createDataFrame([(2, "u1", 3)], "index long, token string, count long")
    item_vocab = spark.createDataFrame([(2, "i9", 1)], "index long, token string, count long")
    frames = {"user_id": user_vocab, "item_id": item_vocab}
    out = spark.createDataFrame([("u1", "i1")], "user_id string, item_id string").transform(
        lambda d: vocab.index_ids(d, frames)
    )
    assert [d.name for d in vocab.id_features(frames)] == ["user_idx", "item_idx"]
    assert out.select("user_idx", "item_idx").first() == (2, vocab.OOV_INDEX)


def test_spec_entries_follow_the_kinds_then_the_steps_order_with_fitted_values(spark):
    steps = [
        declared.categorical("user_idx", "user_id"),  # ids
        declared.sequence("hist_click_items", "item_id", 2),
        declared.numeric("user_clicks", count=True),
        declared.multi_categorical("user_top_genres", "genre", 1),  # history
        declared.categorical("item_primary_genre", "genre"),
        declared.numeric("release_year"),
    ]  # items
    vocabularies = Vocabularies(
        frames={}, num_tokens={"user_id": 3, "item_id": 5, "genre": 1}, min_count=1, genre_index={}
    )
    normalization = {
        "user_clicks": {"log1p": True, "mean": 0.5, "std": 2.0},
        "release_year": {"log1p": False, "mean": 1990.0, "std": 10.0},
    }
    fitted = Fitted(
        vocabularies=vocabularies,
        prior=0.1,
        smoothing=20.0,
        normalization=normalization,
        boundaries={"release_year": [1980.0, 2000.0]},
    )
    entries = fitted.spec_features(steps, [("user_id", "string")])
    assert [(e["name"], e["kind"]) for e in entries] == [
        ("user_idx", "categorical"),
        ("item_primary_genre", "categorical"),
        ("hist_click_items", "sequence"),
        ("user_top_genres", "multi_categorical"),
        ("release_year_bucket", "categorical"),
        ("user_clicks", "numeric"),
        ("release_year", "numeric"),
        ("label", "label"),
        ("user_id", "metadata"),
    ]
    by_name = {e["name"]: e for e in entries}
    assert by_name["user_idx"]["vocab_size"] == 5 and by_name["user_idx"]["embedding_table"] == "user_id"
    assert by_name["hist_click_items"]["shape"] == [2] and by_name["hist_click_items"]["vocab_size"] == 7
    assert by_name["item_primary_genre"]["vocab_size"] == 3
    assert by_name["release_year_bucket"]["vocab_size"] == 4
    assert by_name["user_clicks"]["normalization"] == {"log1p": True, "mean": 0.5, "std": 2.0}
    assert vocabularies.spec_entries()["genre"]["size"] == 3


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: declared.Declared("x", "dense"), "kind must be one of"),
        (lambda: declared.Declared("x", "categorical"), "needs its vocabulary"),
        (lambda: declared.Declared("x", "sequence", vocabulary="item_id"), "needs its length"),
        (lambda: declared.Declared("x", "categorical", vocabulary="v", length=3), "is a scalar, it has no length"),
        (lambda: declared.Declared("x", "numeric", count=True, length=3), "a count is a scalar, not a vector"),
        (lambda: declared.Declared("x", "numeric", length=0), "must be a positive integer"),
        (lambda: declared.Declared("x", "categorical", vocabulary="v", count=True), "only a numeric feature"),
    ],
)
def test_bad_declarations_fail_naming_the_feature(make, message):
    with pytest.raises(ValueError, match=message):
        make()
