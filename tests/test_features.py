"""Each feature step on a few hand-written rows, with the expected result worked out by hand."""

import math

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from features import history, labels, normalize, split, validate, vocab
from features import items as item_features

T0 = 1767225600  # 2026-01-01T00:00:00Z


# ---------------------------------------------------------------- validation
def test_validate_events_flags_each_bad_row_with_its_reason(spark):
    rows = [
        ("u1", "i1", str(T0), "a"),
        (None, "i1", str(T0), "b"),
        ("u1", "  ", str(T0), "c"),
        ("u1", "i1", "yesterday", "d"),
        ("u1", "i1", str(T0 * 1000), "e"),  # milliseconds given as seconds
        ("u1", "i1", "2026-01-01T00:00:10", "a"),  # repeats impression "a" of u1 and i1, later
        ("u2", "i1", str(T0 + 1), None),
        ("u2", "i1", str(T0 + 1), None),  # exact repeat without id
    ]
    df = spark.createDataFrame(rows, "user_id string, item_id string, ts string, impression_id string")
    out = validate.validate_events(df, "impressions", "1990-01-01", "2100-01-01")
    reasons = {}
    for row in out.collect():
        reasons.setdefault(row["reject_reason"], []).append(row["ts"])
    assert sorted(reasons, key=str) == sorted(
        [None, "null_user_id", "null_item_id", "unparsable_ts", "ts_out_of_range", "duplicate_impression"], key=str
    )
    assert sorted(reasons[None]) == [T0, T0 + 1]
    assert sorted(reasons["duplicate_impression"]) == [T0 + 1, T0 + 10]
    assert reasons["unparsable_ts"] == [None]
    # Nothing is lost: every input row is there exactly once.
    assert out.count() == len(rows)


def test_valid_and_rejected_rows_partition_the_input(spark):
    df = spark.createDataFrame(
        [("u1", "i1", T0), ("", "i1", T0), ("u1", "i1", -5)], "user_id string, item_id string, ts long"
    )
    checked = validate.validate_events(df, "clicks", "1990-01-01", "2100-01-01")
    valid = validate.valid_rows(checked)
    rejects = validate.rejects_of(checked, "clicks")
    assert [tuple(r) for r in valid.select("user_id", "item_id", "ts").collect()] == [("u1", "i1", T0)]
    assert sorted(r["reason"] for r in rejects.collect()) == ["null_user_id", "ts_out_of_range"]
    assert list(rejects.columns) == list(validate.REJECT_COLUMNS)


def test_missing_or_mistyped_column_fails_naming_it(spark):
    df = spark.createDataFrame([("u1", "i1")], "user_id string, item_id string")
    with pytest.raises(validate.SchemaError, match="impressions: required column 'ts' is missing"):
        validate.validate_events(df, "impressions", "1990-01-01", "2100-01-01")
    df = spark.createDataFrame([("u1", "i1", True)], "user_id string, item_id string, ts boolean")
    with pytest.raises(validate.SchemaError, match="column 'ts' has type boolean"):
        validate.validate_events(df, "clicks", "1990-01-01", "2100-01-01")
    df = spark.createDataFrame([(1.5, "i1", T0)], "user_id double, item_id string, ts long")
    with pytest.raises(validate.SchemaError, match="column 'user_id' has type double"):
        validate.validate_events(df, "impressions", "1990-01-01", "2100-01-01")


def test_items_genres_parsed_and_bad_items_rejected(spark):
    df = spark.createDataFrame(
        [("i1", "Action| Comedy|", "1999"), ("i2", "", None), (None, "Drama", "2000"), ("i1", "Drama", "2001")],
        "item_id string, genres string, release_year string",
    )
    out = validate.normalize_items(df, [])
    got = {(r["item_id"], r["reject_reason"]): (r["genres"], r["release_year"]) for r in out.collect()}
    assert got[("i2", None)] == ([], None)
    assert got[(None, "null_item_id")] == (["Drama"], 2000)
    # The duplicate i1 keeps one copy (the smaller raw row) and rejects the other.
    assert sorted(k[1] or "" for k in got if k[0] == "i1") == ["", "duplicate_item"]


# ---------------------------------------------------------------- labels
def _impressions(spark, rows):
    return spark.createDataFrame(rows, "user_id string, item_id string, ts long, impression_id string")


def test_attribution_matches_by_id_then_as_of_within_window(spark):
    imps = labels.with_impression_key(
        _impressions(
            spark,
            [
                ("u1", "i1", 100, "a"),
                ("u1", "i1", 150, None),
                ("u1", "i2", 100, "c"),
                ("u2", "i1", 100, None),
            ],
        )
    )
    clicks = spark.createDataFrame(
        [
            ("u1", "i1", 170, None),  # as-of: latest impression of (u1, i1) at or before 170 is ts 150
            ("u1", "i1", 120, "a"),  # by id
            ("u1", "i2", 200, "c"),  # by id, but 100 s after the impression: outside the 60 s window
            ("u2", "i1", 100, None),  # same second as the impression: credited
            ("u3", "i9", 50, None),  # no impression at all
            ("u1", "i1", 149, None),  # the impression at 150 is later: credits ts 100
        ],
        "user_id string, item_id string, ts long, impression_id string",
    )
    attributed = labels.attribute_clicks(clicks, imps, window_seconds=60)
    credited = attributed.join(
        imps.select(F.col("impression_key").alias("credited_key"), F.col("ts").alias("imp_ts")), "credited_key", "left"
    )
    got = sorted((r["user_id"], r["ts"], r["imp_ts"]) for r in credited.collect())
    assert got == [
        ("u1", 120, 100),
        ("u1", 149, 100),
        ("u1", 170, 150),
        ("u1", 200, None),
        ("u2", 100, 100),
        ("u3", 50, None),
    ]

    labelled = labels.label_impressions(imps, attributed).select("user_id", "item_id", "ts", "label")
    expected = spark.createDataFrame(
        [("u1", "i1", 100, 1), ("u1", "i1", 150, 1), ("u1", "i2", 100, 0), ("u2", "i1", 100, 1)],
        "user_id string, item_id string, ts long, label long",
    )
    assert_df_equality(labelled, expected, ignore_row_order=True, ignore_nullable=True)


# ---------------------------------------------------------------- history
def test_user_history_uses_only_strictly_earlier_events(spark):
    imps = spark.createDataFrame(
        [
            ("u1", 5, 100, 0),
            ("u1", 6, 105, 1),
            ("u1", 7, 120, 0),
            ("u1", 8, 200, 0),
            ("u1", 9, 1150, 0),
            ("u2", 5, 150, 0),
        ],
        "user_id string, item_idx long, ts long, label long",
    )
    clicks = spark.createDataFrame(
        [
            ("u1", 6, 108, [2, 3]),
            ("u1", 4, 120, [3]),
            ("u1", 8, 205, [4, 2]),
        ],
        "user_id string, item_idx long, ts long, genre_idxs array<long>",
    )
    out = history.user_history(
        imps, clicks, window_seconds=10, lookback_seconds=1000, max_len=2, top_genres=2, genre_history_len=3
    )
    cols = [
        "user_id",
        "ts",
        "hist_click_items",
        "hist_click_len",
        "hist_skip_items",
        "hist_skip_len",
        "user_top_genres",
        "user_impressions",
        "user_clicks",
    ]
    expected = spark.createDataFrame(
        [
            # t=100: nothing before.
            ("u1", 100, [0, 0], 0, [0, 0], 0, [0, 0], 0, 0),
            # t=105: one impression before; its window (closes 110) is still open, so no skip yet.
            ("u1", 105, [0, 0], 0, [0, 0], 0, [0, 0], 1, 0),
            # t=120: click at 108 counts, the click at 120 does not; skip of item 5 known since 110.
            ("u1", 120, [6, 0], 1, [5, 0], 1, [2, 3], 2, 1),
            # t=200: most recent first; genres 3 (twice) before 2.
            ("u1", 200, [4, 6], 2, [7, 5], 2, [3, 2], 3, 2),
            # t=1150: lookback 1000 keeps only events at or after 150.
            ("u1", 1150, [8, 0], 1, [8, 0], 1, [2, 4], 1, 1),
            ("u2", 150, [0, 0], 0, [0, 0], 0, [0, 0], 0, 0),
        ],
        "user_id string, ts long, hist_click_items array<long>, hist_click_len long, hist_skip_items array<long>, "
        "hist_skip_len long, user_top_genres array<long>, user_impressions long, user_clicks long",
    )
    assert_df_equality(out.select(*cols), expected, ignore_row_order=True, ignore_nullable=True)


def test_user_history_with_raw_ids_lists_the_raw_strings_of_the_same_events(spark):
    # The rows of the test above, with raw ids: item index n is item "i<n>"; genre 2 Drama, 3 Comedy, 4 Horror;
    # "Alien" and "Zombie" were unseen at the fit: both index 1 (OOV).
    imps = spark.createDataFrame(
        [
            ("u1", "i5", 5, 100, 0),
            ("u1", "i6", 6, 105, 1),
            ("u1", "i7", 7, 120, 0),
            ("u1", "i8", 8, 200, 0),
            ("u1", "i9", 9, 1150, 0),
            ("u2", "i5", 5, 150, 0),
        ],
        "user_id string, item_id string, item_idx long, ts long, label long",
    )
    clicks = spark.createDataFrame(
        [
            ("u1", "i6", 6, 108, [2, 3], ["Drama", "Comedy"]),
            ("u1", "i4", 4, 120, [3, 1], ["Comedy", "Alien"]),
            ("u1", "i8", 8, 205, [1, 1], ["Zombie", "Alien"]),
        ],
        "user_id string, item_id string, item_idx long, ts long, genre_idxs array<long>, genres array<string>",
    )
    out = history.user_history(imps, clicks, 10, 1000, max_len=2, top_genres=2, genre_history_len=3, raw_ids=True)
    raw = [history.RAW_LISTS[name] for name in ("hist_click_items", "hist_skip_items", "user_top_genres")]
    got = {
        (r["user_id"], r["ts"]): (r["hist_click_items"], r["user_top_genres"], *[r[c] for c in raw])
        for r in out.collect()
    }
    assert got == {
        ("u1", 100): ([0, 0], [0, 0], [], [], []),
        ("u1", 105): ([0, 0], [0, 0], [], [], []),
        # Drama and Comedy once each: the smaller index first.
        ("u1", 120): ([6, 0], [2, 3], ["i6"], ["i5"], ["Drama", "Comedy"]),
        # Comedy twice, then Drama and Alien (OOV, 1) once each: the smaller index first.
        ("u1", 200): ([4, 6], [3, 1], ["i4", "i6"], ["i7", "i5"], ["Comedy", "Alien"]),
        # Index 1 three times (Alien, Zombie, Alien): one string the build mapped to it, the first clicked.
        ("u1", 1150): ([8, 0], [1, 0], ["i8"], ["i8"], ["Alien"]),
        ("u2", 150): ([0, 0], [0, 0], [], [], []),
    }
    # Without raw ids the columns are those of the test above, and nothing else.
    plain = history.user_history(imps, clicks, 10, 1000, max_len=2, top_genres=2, genre_history_len=3)
    assert not set(history.RAW_LISTS.values()) & set(plain.columns)


def test_item_statistics_count_prior_events_in_lookback_and_recent_windows(spark):
    imps = spark.createDataFrame(
        [("a", 10), ("a", 20), ("a", 20), ("a", 50), ("a", 130), ("b", 30)], "item_id string, ts long"
    )
    clicks = spark.createDataFrame([("a", 15), ("a", 25), ("a", 125)], "item_id string, ts long")
    out = history.item_statistics(imps, clicks, lookback_seconds=100, recent_seconds=20)
    expected = spark.createDataFrame(
        [
            ("a", 10, 0, 0, 0, 0),
            ("a", 20, 1, 1, 1, 1),
            ("a", 20, 1, 1, 1, 1),
            ("a", 50, 3, 2, 0, 0),
            ("a", 130, 1, 1, 0, 1),
            ("b", 30, 0, 0, 0, 0),
        ],
        "item_id string, ts long, item_impressions long, item_clicks long, item_impressions_recent long, "
        "item_clicks_recent long",
    )
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_smoothed_ctr_is_the_prior_without_evidence(spark):
    df = spark.createDataFrame([(0, 0), (3, 10)], "c long, n long")
    got = [r[0] for r in df.select(history.smoothed_ctr("c", "n", 0.1, 10.0)).collect()]
    assert got == pytest.approx([0.1, (3 + 1.0) / 20])


# ---------------------------------------------------------------- items
def test_item_features_for_known_and_missing_items(spark):
    items = spark.createDataFrame(
        [("i1", ["Drama", "Action"], 1999), ("i2", [], None)], "item_id string, genres array<string>, release_year int"
    )
    imps = spark.createDataFrame([("i1",), ("i2",), ("i3",)], "item_id string")
    joined = item_features.join_item_attributes(imps, items, [])
    out = item_features.genre_features(joined, {"Action": 2, "Drama": 3, "unknown": 4}, max_genres=3)
    got = {
        r["item_id"]: (r["genres"], r["item_genres"], r["item_primary_genre"], r["release_year"]) for r in out.collect()
    }
    assert got == {
        "i1": (["Drama", "Action"], [3, 2, 0], 3, 1999),
        "i2": ([], [0, 0, 0], 0, None),
        "i3": (["unknown"], [4, 0, 0], 4, None),
    }


# ---------------------------------------------------------------- vocabularies
def test_vocabulary_fit_orders_by_count_and_applies_padding_and_oov(spark):
    tokens = spark.createDataFrame([(t,) for t in ["x", "y", "x", "z", "y", "x", None, ""]], "token string")
    fitted = vocab.fit_vocabulary(tokens, min_count=2)
    assert [tuple(r) for r in fitted.orderBy("index").collect()] == [(2, "x", 3), (3, "y", 2)]
    df = spark.createDataFrame([("x",), ("z",), (None,), ("y",)], "tok string")
    out = vocab.apply_vocabulary(df, "tok", fitted, "idx")
    assert sorted((r["tok"] or "", r["idx"]) for r in out.collect()) == [("", 0), ("x", 2), ("y", 3), ("z", 1)]


def test_several_vocabularies_fitted_in_one_pass_are_numbered_separately(spark):
    # Many tokens over several shuffle partitions, so each vocabulary spans partitions.
    rows = [("user", f"u{k:03d}") for k in range(300) for _ in range(1 + k % 3)]
    rows += [("genre", g) for g, n in (("Drama", 5), ("Action", 7), ("Comedy", 5)) for _ in range(n)]
    rows += [("user", None), ("genre", "")]
    tokens = spark.createDataFrame(rows, "name string, token string").repartition(7)
    fitted, totals = vocab.fit_vocabularies(tokens, min_count=1)
    assert totals == {"user": 300, "genre": 3}
    genre = [
        tuple(r) for r in fitted.where("name = 'genre'").orderBy("index").select("index", "token", "count").collect()
    ]
    assert genre == [(2, "Action", 7), (3, "Comedy", 5), (4, "Drama", 5)]
    users = fitted.where("name = 'user'").orderBy("index").collect()
    expected = sorted(((1 + k % 3, f"u{k:03d}") for k in range(300)), key=lambda c: (-c[0], c[1]))
    assert [(r["count"], r["token"]) for r in users] == expected
    assert [r["index"] for r in users] == list(range(2, 302))


def test_index_tokens_maps_arrays_through_a_small_vocabulary(spark):
    df = spark.createDataFrame([(["a", "q", "b"],), ([],)], "g array<string>")
    got = [r[0] for r in df.select(vocab.index_tokens(F.col("g"), {"a": 2, "b": 3})).collect()]
    assert got == [[2, 1, 3], []]


# ---------------------------------------------------------------- normalization / buckets
def test_normalization_fitted_on_train_applied_to_all(spark):
    train = spark.createDataFrame([(1.0, 0.0), (2.0, math.e - 1), (3.0, None)], "x double, c double")
    stats = normalize.fit_normalization(train, ["x", "c"], log1p_columns=["c"])
    assert stats["x"] == pytest.approx({"log1p": False, "mean": 2.0, "std": math.sqrt(2 / 3)})
    assert stats["c"]["mean"] == pytest.approx(0.5) and stats["c"]["std"] == pytest.approx(0.5)
    other = spark.createDataFrame([(4.0, None)], "x double, c double")
    row = normalize.apply_normalization(other, stats).collect()[0]
    assert row["x"] == pytest.approx(2 / math.sqrt(2 / 3), rel=1e-6)
    assert row["c"] == 0.0  # null -> the train mean


def test_bucket_index_is_bisect_right_with_zero_for_null(spark):
    df = spark.createDataFrame([(0.5,), (1.0,), (2.0,), (3.0,), (5.0,), (None,)], "x double")
    got = [r[0] for r in df.select(normalize.bucket_index("x", [1.0, 3.0])).collect()]
    assert got == [1, 2, 2, 3, 3, 0]


def test_bucket_boundaries_are_train_quantiles(spark):
    train = spark.createDataFrame([(float(v),) for v in range(1, 101)], "x double")
    bounds = normalize.fit_bucket_boundaries(train, ["x"], num_buckets=4)
    assert bounds == {"x": [25.0, 50.0, 75.0]}


# ---------------------------------------------------------------- split
def test_split_by_fixed_dates(spark):
    df = spark.createDataFrame([(T0,), (T0 + 86400,), (T0 + 2 * 86400,), (T0 + 3 * 86400,)], "ts long")
    start, test = split.split_boundaries(
        df,
        {
            "valid_start": "2026-01-02",
            "test_start": "2026-01-03T00:00:00Z",
            "valid_fraction": 0.1,
            "test_fraction": 0.1,
        },
    )
    assert (start, test) == (T0 + 86400, T0 + 2 * 86400)
    got = [r["split"] for r in split.assign_split(df, start, test).orderBy("ts").collect()]
    assert got == ["train", "valid", "test", "test"]


def test_split_by_fractions_cuts_at_time_quantiles(spark):
    df = spark.createDataFrame([(T0 + i,) for i in range(100)], "ts long")
    start, test = split.split_boundaries(
        df, {"valid_start": None, "test_start": None, "valid_fraction": 0.2, "test_fraction": 0.1}
    )
    counts = {r["split"]: r["count"] for r in split.assign_split(df, start, test).groupBy("split").count().collect()}
    assert counts == {"train": 70, "valid": 20, "test": 10}
