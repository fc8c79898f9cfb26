"""User history and item statistics against an obviously correct plain-Python reference.

The reference loops over every impression and re-reads its user's (or item's) whole log, straight from
the rules in features/history.py's docstring. The generated data is tie-heavy (most events on a 5 s grid,
many at the same second), has users without any prior event, users with a single event, and puts events
exactly on the lookback, attribution-window and recent-days edges of queries. Items carry a dense vector
(some none), so the user's mean vector of the last clicked items is checked the same way.
"""

from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from features import history, sorted_pass

# The whole history and statistics of a generated, tie-heavy world against the reference: `make test`.
pytestmark = pytest.mark.slow

T0 = 1767225600
GRID = 5  # most events fall on a 5 s grid: ties, and events exactly on the window edges below
WINDOW, LOOKBACK, RECENT = 10, 100, 30
HEAVY = "u_heavy"
VECTOR_LENGTH = 3


# ---------------------------------------------------------------- generated data
def _item_genres(rng, n_items):
    """Genre indices per item_idx: duplicates, padding 0 and OOV 1 included; one null and one empty list."""
    genres = {idx: [int(g) for g in rng.integers(0, 7, rng.integers(1, 5))] for idx in range(1, n_items + 1)}
    genres[n_items - 1], genres[n_items] = None, []
    return genres


def _item_vectors(rng, n_items):
    """A float32-exact vector per item_idx; items 2 and 5 have none."""
    vectors = {idx: [float(v) for v in rng.integers(-8, 9, VECTOR_LENGTH) / 4] for idx in range(1, n_items + 1)}
    vectors[2] = vectors[5] = None
    return vectors


def generate(seed=0, n_users=25, n_items=12, n_impressions=2500, n_clicks=700):
    """(impressions, clicks) as pandas frames in the shapes user_history and item_statistics take."""
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i:02d}" for i in range(n_users)] + [HEAVY])
    weights = np.append(rng.pareto(1.5, n_users) + 0.05, n_users / 3)  # heavy-tailed, plus one heavy user
    weights /= weights.sum()
    genres = _item_genres(rng, n_items)

    def times(n):
        on_grid = T0 + GRID * rng.integers(0, 80, n)
        return np.where(rng.random(n) < 0.8, on_grid, T0 + rng.integers(0, 400, n))

    def item_ids(n):
        # item_idx 1 is OOV: three item_ids share it (as unseen items do), with the same genres.
        idx = rng.integers(1, n_items + 1, n)
        oov = rng.integers(0, 3, n)
        return [f"oov{o}" if i == 1 else f"i{i:02d}" for i, o in zip(idx, oov)], idx

    ids, idx = item_ids(n_impressions)
    imps = pd.DataFrame(
        {
            "user_id": rng.choice(users, n_impressions, p=weights),
            "item_id": ids,
            "item_idx": idx,
            "ts": times(n_impressions),
            "label": (rng.random(n_impressions) < 0.3).astype(int),
        }
    )
    ids, idx = item_ids(n_clicks)
    clicks = pd.DataFrame(
        {"user_id": rng.choice(users, n_clicks, p=weights), "item_id": ids, "item_idx": idx, "ts": times(n_clicks)}
    )
    # Zero-length and single-event histories: users with one impression only, with a click only, with one of each.
    edge_users = pd.DataFrame(
        {
            "user_id": ["u_one_impression", "u_one_each"],
            "item_id": ["i03", "i04"],
            "item_idx": [3, 4],
            "ts": [T0 + 50, T0 + 60],
            "label": [0, 1],
        }
    )
    imps = pd.concat([imps, edge_users, _edges_of(T0 + 1000)], ignore_index=True)
    clicks = pd.concat(
        [
            clicks,
            pd.DataFrame(
                {
                    "user_id": ["u_click_only", "u_one_each"],
                    "item_id": ["i05", "i04"],
                    "item_idx": [5, 4],
                    "ts": [T0 + 70, T0 + 55],
                }
            ),
            _edge_clicks(T0 + 1000),
        ],
        ignore_index=True,
    )
    clicks["genre_idxs"] = [genres[i] for i in clicks["item_idx"]]
    vectors = _item_vectors(np.random.default_rng(seed + 1), n_items + 6)
    clicks["v"] = [vectors[i] for i in clicks["item_idx"]]
    imps["impression_id"] = [f"imp{i:05d}" for i in range(len(imps))]
    imps["p_click"] = rng.random(len(imps))  # passthrough columns must come back unchanged
    imps["tags"] = [["a", "b"][: i % 3] for i in range(len(imps))]
    return imps, clicks


def _edges_of(t):
    """A query of user u_edges and item i_edges at t, and impressions exactly on and just past each edge."""
    at = [t - WINDOW, t - WINDOW - 1, t - LOOKBACK, t - LOOKBACK - 1, t - RECENT, t - RECENT - 1, t, t]
    return pd.DataFrame(
        {"user_id": "u_edges", "item_id": "i_edges", "item_idx": range(2, 2 + len(at)), "ts": at, "label": 0}
    )


def _edge_clicks(t):
    at = [t - LOOKBACK, t - LOOKBACK - 1, t - RECENT, t - RECENT - 1, t - 1, t]
    return pd.DataFrame({"user_id": "u_edges", "item_id": "i_edges", "item_idx": range(2, 2 + len(at)), "ts": at})


# ---------------------------------------------------------------- the reference
def _pad(values, length):
    return list(values[:length]) + [0] * (length - len(values[:length]))


def reference_user_history(imps, clicks, window, lookback, max_len, top_genres, genre_history_len):
    """impression_id -> features, by looping over each user's whole log for each impression."""
    user_clicks, user_imps = defaultdict(list), defaultdict(list)
    for c in clicks.itertuples():
        user_clicks[c.user_id].append((c.ts, c.item_idx, c.genre_idxs, c.v))
    for i in imps.itertuples():
        user_imps[i.user_id].append((i.ts, i.item_idx, i.label))
    out = {}
    for imp in imps.itertuples():
        t = imp.ts
        prior_clicks = sorted(
            (c for c in user_clicks[imp.user_id] if t - lookback <= c[0] < t), key=lambda c: (c[0], c[1])
        )
        newest_clicks = prior_clicks[::-1]
        skips = sorted(
            (
                (ts, item)
                for ts, item, label in user_imps[imp.user_id]
                if label == 0 and ts + window < t and ts >= t - lookback
            )
        )[::-1]
        counts = Counter(
            g
            for _, _, genres, _ in newest_clicks[:genre_history_len]
            for g in (genres or [])
            if g is not None and g > 0
        )
        vectors = [v for *_, v in newest_clicks[:max_len] if v is not None]
        top = [g for g, _ in sorted(counts.items(), key=lambda gc: (-gc[1], gc[0]))]
        out[imp.impression_id] = {
            "hist_click_items": _pad([item for _, item, *_ in newest_clicks], max_len),
            "hist_skip_items": _pad([item for _, item in skips], max_len),
            "hist_click_len": min(len(newest_clicks), max_len),
            "hist_skip_len": min(len(skips), max_len),
            "user_top_genres": _pad(top, top_genres),
            "user_impressions": sum(t - lookback <= ts < t for ts, _, _ in user_imps[imp.user_id]),
            "user_clicks": len(prior_clicks),
            "user_v": list(np.mean(vectors, axis=0)) if vectors else None,
            "user_v_len": len(vectors),
        }
    return out


def reference_item_statistics(imps, clicks, lookback, recent):
    item_imps, item_clicks = defaultdict(list), defaultdict(list)
    for i in imps.itertuples():
        item_imps[i.item_id].append(i.ts)
    for c in clicks.itertuples():
        item_clicks[c.item_id].append(c.ts)
    out = {}
    for imp in imps.itertuples():
        t = imp.ts

        def within(times, span, t=t):
            return sum(t - span <= ts < t for ts in times)

        out[imp.impression_id] = {
            "item_impressions": within(item_imps[imp.item_id], lookback),
            "item_clicks": within(item_clicks[imp.item_id], lookback),
            "item_impressions_recent": within(item_imps[imp.item_id], recent),
            "item_clicks_recent": within(item_clicks[imp.item_id], recent),
        }
    return out


# ---------------------------------------------------------------- comparison
IMPRESSIONS_SCHEMA = (
    "user_id string, item_id string, item_idx long, ts long, label int, impression_id string, "
    "p_click double, tags array<string>"
)
CLICKS_SCHEMA = "user_id string, item_id string, item_idx long, ts long, genre_idxs array<long>, v array<float>"
USER_FEATURES = [
    "hist_click_items",
    "hist_skip_items",
    "hist_click_len",
    "hist_skip_len",
    "user_top_genres",
    "user_impressions",
    "user_clicks",
    "user_v",
    "user_v_len",
]
ITEM_FEATURES = ["item_impressions", "item_clicks", "item_impressions_recent", "item_clicks_recent"]


def _as_python(value):
    if value is None:
        return None
    if isinstance(value, (list, np.ndarray)):
        return [float(v) if isinstance(v, (float, np.floating)) else int(v) for v in value]
    return int(value)


def compare(
    spark,
    module,
    imps,
    clicks,
    max_len,
    top_genres,
    genre_history_len,
    lookback=LOOKBACK,
    one_shuffle=False,
    history_before=None,
):
    """Run `module`'s user_history and item_statistics on the frames (one after the other, or with
    `one_shuffle` as point_in_time_features combines them); assert every column equals the reference.

    `history_before` (one shuffle only): the impressions before that time go in as history-only events,
    on narrow rows; only the later ones must come out, with the features the whole log gives them."""
    assert history_before is None or one_shuffle, "history-only impressions go through point_in_time_features"
    everything = imps
    imps_df = spark.createDataFrame(imps[[c.split()[0] for c in IMPRESSIONS_SCHEMA.split(", ")]], IMPRESSIONS_SCHEMA)
    clicks_df = spark.createDataFrame(clicks[[c.split()[0] for c in CLICKS_SCHEMA.split(", ")]], CLICKS_SCHEMA)
    user_settings = (max_len, top_genres, genre_history_len, {"v": VECTOR_LENGTH})
    past = None
    if history_before is not None:
        past = imps_df.where(F.col("ts") < history_before).select("user_id", "item_id", "item_idx", "ts", "label")
        imps_df, imps = imps_df.where(F.col("ts") >= history_before), imps[imps.ts >= history_before]
    if one_shuffle:
        out = module.point_in_time_features(
            imps_df, clicks_df, "impression_id", WINDOW, lookback, RECENT, *user_settings, history_only=past
        )
    else:
        out = module.user_history(imps_df, clicks_df, WINDOW, lookback, *user_settings).transform(
            lambda d: module.item_statistics(d, clicks_df, lookback, RECENT)
        )
    out = out.withColumn("item_ctr", module.smoothed_ctr("item_clicks", "item_impressions", 0.2, 5.0))
    assert out.columns == imps_df.columns + USER_FEATURES + ITEM_FEATURES + ["item_ctr"]
    types = dict(out.dtypes)
    assert {types[c] for c in USER_FEATURES + ITEM_FEATURES} == {"array<bigint>", "bigint", "array<float>"}
    assert [types[c] for c in imps_df.columns] == [t for _, t in imps_df.dtypes]

    got = out.toPandas().set_index("impression_id")
    assert sorted(got.index) == sorted(imps["impression_id"])
    got = got.loc[imps["impression_id"]]
    passthrough = imps.set_index("impression_id")
    for column in ["user_id", "item_id", "item_idx", "ts", "label", "p_click"]:
        np.testing.assert_array_equal(got[column].to_numpy(), passthrough[column].to_numpy(), err_msg=column)
    assert [list(t) for t in got["tags"]] == list(passthrough["tags"])

    expected = reference_user_history(everything, clicks, WINDOW, lookback, max_len, top_genres, genre_history_len)
    expected_items = reference_item_statistics(everything, clicks, lookback, RECENT)
    for impression_id, row in got.iterrows():
        want = {**expected[impression_id], **expected_items[impression_id]}
        have = {name: _as_python(row[name]) for name in want}
        # The mean vector is held as float32: compared within its precision, everything else exactly.
        want_vector, have_vector = want.pop("user_v"), have.pop("user_v")
        assert have == want, impression_id
        assert (have_vector is None) == (want_vector is None), impression_id
        if want_vector is not None:
            assert have_vector == pytest.approx(want_vector, rel=1e-6, abs=1e-7), impression_id
        ctr = (want["item_clicks"] + 5.0 * 0.2) / (want["item_impressions"] + 5.0)
        assert row["item_ctr"] == pytest.approx(ctr, rel=1e-12, abs=0)
    return got


@pytest.fixture(scope="module")
def generated():
    imps, clicks = generate()
    # The data must exercise what it is meant to: ties, empty histories, and events on every edge.
    assert imps.duplicated(["user_id", "ts"]).sum() > 500
    for key, span, events in (
        ("user_id", LOOKBACK, clicks),
        ("user_id", WINDOW, imps[imps.label == 0]),
        ("item_id", LOOKBACK, imps),
        ("item_id", RECENT, clicks),
    ):
        queries = imps[[key, "ts"]].drop_duplicates()
        on_edge = queries.assign(ts=queries.ts - span).merge(events[[key, "ts"]])
        assert len(on_edge) > 20, (key, span)
    return imps, clicks


@pytest.mark.parametrize("one_shuffle", [False, True], ids=["two_passes", "one_shuffle"])
def test_history_and_item_statistics_equal_the_reference(spark, generated, one_shuffle):
    imps, clicks = generated
    got = compare(spark, history, imps, clicks, max_len=3, top_genres=2, genre_history_len=4, one_shuffle=one_shuffle)
    edges = {
        name: _as_python(value)
        for name, value in got[got.user_id == "u_edges"].iloc[-1].items()
        if name in USER_FEATURES + ITEM_FEATURES
    }
    # Worked out by hand (see _edges_of): at t, events at t - lookback count, those at t do not; the
    # impressions at t - window are not skips yet, the one at t - lookback is.
    assert (edges["user_clicks"], edges["user_impressions"], edges["hist_skip_items"]) == (4, 5, [3, 6, 7])
    assert [edges[name] for name in ITEM_FEATURES] == [5, 4, 3, 2]
    counts = ["hist_click_len", "hist_skip_len", "user_impressions", "user_clicks", "user_v_len"]
    assert (got.loc[got.user_id == "u_one_impression", counts] == 0).all().all()
    assert got.loc[got.user_id == "u_one_impression", "user_v"].isna().all()
    assert got.hist_click_len.max() == 3 and got.hist_skip_len.max() == 3


@pytest.mark.parametrize("one_shuffle", [False, True], ids=["two_passes", "one_shuffle"])
def test_users_spanning_many_chunks_and_batches(spark, generated, monkeypatch, one_shuffle):
    """Tiny Arrow batches and chunks: every user crosses chunk boundaries and carries its lookback over
    (and with one shuffle, the item counts wait across chunk boundaries for their impression)."""
    imps, clicks = generated
    monkeypatch.setattr(sorted_pass, "CHUNK_ROWS", 1)
    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
    try:
        compare(
            spark,
            history,
            imps,
            clicks,
            max_len=5,
            top_genres=3,
            genre_history_len=2,
            lookback=35,
            one_shuffle=one_shuffle,
        )
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)


@pytest.mark.parametrize("tiny_chunks", [False, True], ids=["default_chunks", "tiny_chunks"])
def test_earlier_impressions_as_history_only_count_but_make_no_row(spark, generated, monkeypatch, tiny_chunks):
    """A day build's lookback: the impressions before a cut enter both passes as narrow history events.
    The later impressions get the features the whole log gives them, and only they come out (with tiny
    chunks, many chunks hold history-only rows and no impression to compute)."""
    imps, clicks = generated
    cut = int(np.median(imps.ts))
    if tiny_chunks:
        monkeypatch.setattr(sorted_pass, "CHUNK_ROWS", 1)
    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7" if tiny_chunks else previous)
    try:
        got = compare(
            spark,
            history,
            imps,
            clicks,
            max_len=3,
            top_genres=2,
            genre_history_len=4,
            one_shuffle=True,
            history_before=cut,
        )
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
    # The cut matters: many output rows have, within their lookback, impressions that came in as history only.
    past = imps[imps.ts < cut]
    for key in ("user_id", "item_id"):
        pairs = got.reset_index()[["impression_id", key, "ts"]].merge(past[[key, "ts"]], on=key, suffixes=("", "_past"))
        assert pairs[pairs.ts_past >= pairs.ts - LOOKBACK].impression_id.nunique() > 100, key
    assert (got.ts >= cut).all()
