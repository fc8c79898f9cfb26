"""The `serving_raw` transform (pipelines/training/serving_raw.py) on a hand-made spec, with every output worked
out by hand, and its TensorFlow xxhash64 against the plain-Python reference (itself checked against Spark in
tests/test_oov_buckets.py)."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import feature_spec
from feature_spec.hashing import oov_bucket, xxhash64
from pipelines.training import tf_hashing
from pipelines.training.serving_raw import RawTransform, UnservableSpec, raw_signature

ITEMS = ["i7", "i3", "i9"]  # indices 1 + K.. in this order
USERS = ["alice", "bob"]
GENRES = ["Drama", "Comedy"]
POSITIONS = ["1", "2", "10"]
ITEM_BUCKETS = 5  # hashed OOV rows 1..5; items from 6
YEAR_BOUNDARIES = [1990.0, 2000.0]


def test_tf_xxhash64_is_the_reference_hash_on_any_string():
    rng = random.Random(0)
    tokens = ["", "a", "abcd", "abcdefgh", "é", "日本語", *("x" * n for n in (3, 7, 8, 31, 32, 33, 63, 64, 65, 100))]
    for _ in range(300):
        alphabet = [chr(rng.randint(32, 126)), chr(rng.randint(0xA0, 0x2FFF)), chr(rng.randint(0x1F300, 0x1F5FF))]
        tokens.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90))))
    got = tf_hashing.xxhash64(tf.constant(tokens)).numpy().tolist()
    assert got == [xxhash64(t.encode("utf-8")) for t in tokens]
    buckets = tf_hashing.oov_bucket(tf.constant(tokens), 1000, first=1).numpy().tolist()
    assert buckets == [oov_bucket(t, 1000) for t in tokens]
    assert tf_hashing.xxhash64(tf.constant([], tf.string)).numpy().tolist() == []
    assert tf_hashing.oov_bucket(tf.constant([["a", "b"]]), 1).numpy().tolist() == [[1, 1]]
    with pytest.raises(ValueError, match="at least 1"):
        tf_hashing.oov_bucket(tf.constant(["a"]), 0)


def _vocab(folder, name: str, tokens: list[str], first: int) -> None:
    path = folder / "vocab" / name
    path.mkdir(parents=True)
    table = pa.table(
        {"index": pa.array(range(first, first + len(tokens)), pa.int64()), "token": tokens, "count": [9] * len(tokens)}
    )
    pq.write_table(table, path / "part-0.parquet")


def _spec(folder) -> dict:
    sizes = {"item_id": 1 + ITEM_BUCKETS + 3, "user_id": 2 + 2, "genre": 2 + 2, "position": 2 + 3}
    features = [
        feature_spec.categorical("user_idx", vocabulary="user_id", vocab_size=sizes["user_id"]),
        feature_spec.categorical("item_idx", vocabulary="item_id", vocab_size=sizes["item_id"]),
        feature_spec.categorical("position_idx", vocabulary="position", vocab_size=sizes["position"]),
        feature_spec.categorical("item_primary_genre", vocabulary="genre", vocab_size=sizes["genre"]),
        feature_spec.sequence("hist_click_items", length=3, vocabulary="item_id", vocab_size=sizes["item_id"]),
        feature_spec.multi_categorical("item_genres", length=2, vocabulary="genre", vocab_size=sizes["genre"]),
        feature_spec.bucketized("release_year_bucket", source="release_year", boundaries=YEAR_BOUNDARIES),
        feature_spec.numeric("user_clicks", normalization={"log1p": True, "mean": 1.0, "std": 2.0}),
        feature_spec.numeric("release_year", normalization={"log1p": False, "mean": 2000.0, "std": 10.0}),
        feature_spec.numeric(
            "item_vec", normalization={"log1p": False, "mean": [1.0, -1.0], "std": [2.0, 4.0]}, length=2
        ),
        feature_spec.label("label"),
        feature_spec.metadata("user_id", "string"),
    ]
    vocabularies = {
        name: feature_spec.vocabulary(
            size=size,
            num_tokens=size - 1 - (ITEM_BUCKETS if name == "item_id" else 1),
            min_count=1,
            path=f"vocab/{name}",
            oov_buckets=ITEM_BUCKETS if name == "item_id" else 1,
        )
        for name, size in sorted(sizes.items())
    }
    _vocab(folder, "item_id", ITEMS, 1 + ITEM_BUCKETS)
    _vocab(folder, "user_id", USERS, 2)
    _vocab(folder, "genre", GENRES, 2)
    _vocab(folder, "position", POSITIONS, 2)
    return feature_spec.new_spec(features, vocabularies, compression="GZIP")


def test_raw_values_become_the_model_inputs_the_build_makes(tmp_path):
    spec = _spec(tmp_path)
    transform = RawTransform(spec, str(tmp_path), str(tmp_path / "assets"))
    nan = float("nan")
    raw = {
        "user_id": tf.constant(["bob", "carol", ""]),
        "item_id": tf.constant(["i9", "new", "i7"]),
        "position": tf.constant([10, 3, 1], tf.int64),
        "genres": tf.constant([["Comedy", "Drama"], ["Horror", ""], ["", ""]]),
        "hist_click_items": tf.constant([["i3", "i7", "old", "i9"], ["i9", "", "", ""], ["", "", "", ""]]),
        "release_year": tf.constant([2000.0, nan, 1989.5], tf.float64),
        "user_clicks": tf.constant([math.e - 1, -3.0, float("inf")], tf.float64),
        "item_vec": tf.constant([[3.0, 3.0], [nan, 7.0], [nan, nan]], tf.float32),
    }
    assert set(raw) == set(transform.signature)
    out = {name: value.numpy().tolist() for name, value in transform(raw).items()}
    new, old = oov_bucket("new", ITEM_BUCKETS), oov_bucket("old", ITEM_BUCKETS)
    assert out["user_idx"] == [3, 1, 0]  # bob; carol unseen: the one OOV row; "" is padding
    assert out["item_idx"] == [8, new, 6]  # i9 is the third token after 5 buckets; "new" hashed to its bucket
    assert out["position_idx"] == [4, 1, 2]  # position 10 is the token "10"
    assert out["item_primary_genre"] == [3, 1, 0]
    assert out["item_genres"] == [[3, 2], [1, 0], [0, 0]]
    assert out["hist_click_items"] == [[7, 6, old], [8, 0, 0], [0, 0, 0]]  # cut to 3, newest first
    assert out["release_year_bucket"] == [3, 0, 1]  # 1 + boundaries <= x; NaN: 0
    assert out["release_year"] == pytest.approx([0.0, 0.0, -1.05])  # (x - 2000) / 10; NaN: 0
    # log1p(max(x, 0)): log1p(e - 1) = 1 -> 0; -3 -> log1p(0) = 0 -> -0.5; inf is missing -> 0
    assert out["user_clicks"] == pytest.approx([0.0, -0.5, 0.0])
    np.testing.assert_array_equal(out["item_vec"], [[1.0, 1.0], [0.0, 2.0], [0.0, 0.0]])  # NaN: 0
    dtypes = {name: value.dtype for name, value in transform(raw).items()}
    assert dtypes == {e["name"]: tf.as_dtype(e["dtype"]) for e in feature_spec.model_inputs(spec)}


def test_numbers_normalize_in_float64_then_round_once_to_float32(tmp_path):
    spec = _spec(tmp_path)
    transform = RawTransform(spec, str(tmp_path), str(tmp_path / "assets"))
    counts = np.arange(0, 5000, dtype=np.float64)
    n = len(counts)
    raw = {
        name: tf.fill([n, 1], "")
        if s.dtype == tf.string and s.shape.rank == 2
        else tf.zeros([n, *s.shape[1:]], s.dtype)
        for name, s in transform.signature.items()
    }
    raw["user_clicks"] = tf.constant(counts)
    expected = ((np.log1p(counts) - 1.0) / 2.0).astype(np.float32)  # what Spark writes: double math, one cast
    np.testing.assert_array_equal(transform(raw)["user_clicks"].numpy(), expected)


def test_the_signature_names_the_raw_columns(tmp_path):
    signature = raw_signature(_spec(tmp_path))
    described = {name: (s.dtype.name, s.shape.as_list()) for name, s in signature.items()}
    assert described == {
        "user_id": ("string", [None]),
        "item_id": ("string", [None]),
        "position": ("int64", [None]),
        "genres": ("string", [None, None]),
        "hist_click_items": ("string", [None, None]),
        "release_year": ("float64", [None]),
        "user_clicks": ("float64", [None]),
        "item_vec": ("float32", [None, 2]),
    }


def test_a_token_that_cannot_be_a_line_of_a_vocabulary_file_is_refused(tmp_path):
    spec = _spec(tmp_path)
    (tmp_path / "vocab" / "user_id" / "part-0.parquet").unlink()
    _vocab_rows = pa.table({"index": pa.array([2, 3], pa.int64()), "token": ["alice", "b\nob"], "count": [1, 1]})
    pq.write_table(_vocab_rows, tmp_path / "vocab" / "user_id" / "part-0.parquet")
    with pytest.raises(UnservableSpec, match="cannot be a line of a vocabulary file"):
        RawTransform(spec, str(tmp_path), str(tmp_path / "assets"))
