"""Hashed OOV buckets (`vocab.oov_buckets`): an unseen token goes to one of K rows by a stable hash.

The layout is pad 0, buckets 1..K, tokens from K + 1; the hash is Spark's xxhash64 over the UTF-8 token, and
feature_spec/hashing.py computes the same bucket in plain Python (what a serving system would run)."""

import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

import feature_spec
from features import vocab
from pipelines.config import ConfigError, load_config
from pipelines.config_schema import validate_build_config
from pipelines.samples import build_samples as job
from pipelines.samples import days as daily
from pipelines.samples.report import oov_counts
from tests.daily_world import D, day_config, day_samples

# Lengths around every branch of XXH64: under 4 bytes, 4-7, 8-31, one 32-byte stripe and several.
ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz0123456789_-",
    "àéîõüçñßøåæœ",  # 2-byte UTF-8
    "中文字符日本語한국어",  # 3-byte
    "😀🎬🍿🚀",  # 4-byte
    "e\u0301\u200d ",  # a combining accent, a zero-width joiner, a space
]


def _tokens(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    tokens = ["", "0", "1", "-1", "item_1", "user 42", str(2**63), "ÿ"]
    while len(tokens) < n:
        alphabet = "".join(rng.sample(ALPHABETS, rng.randint(1, len(ALPHABETS))))
        tokens.append("".join(rng.choice(alphabet) for _ in range(rng.choice([1, 3, 5, 9, 17, 31, 32, 33, 70]))))
    return tokens


def test_the_plain_python_hash_is_sparks_on_ten_thousand_tokens(spark):
    tokens = _tokens(10_000)
    assert max(len(t.encode("utf-8")) for t in tokens) > 64
    df = spark.createDataFrame([(i, t) for i, t in enumerate(tokens)], "i long, token string")
    rows = df.select(
        "i",
        F.xxhash64("token").alias("hash"),
        vocab.oov_index(F.col("token"), 7).alias("b7"),
        vocab.oov_index(F.col("token"), 1000).alias("b1000"),
        vocab.oov_index(F.col("token"), 1).alias("b1"),
    ).collect()
    assert len(rows) == len(tokens)
    for row in rows:
        token = tokens[row["i"]]
        assert feature_spec.xxhash64(token.encode("utf-8")) == row["hash"], token
        assert feature_spec.oov_bucket(token, 7) == row["b7"], token
        assert feature_spec.oov_bucket(token, 1000) == row["b1000"], token
        assert row["b1"] == 1
    # The buckets are used evenly enough to be worth having: 10k tokens over 7 buckets.
    counts = np.bincount([row["b7"] for row in rows], minlength=8)[1:]
    assert counts.min() > 1200 and counts.max() < 1700


def test_xxhash64_matches_the_reference_values():
    # XXH64 of the empty string and "abc" with seed 0, as the algorithm's author publishes them.
    assert feature_spec.xxhash64(b"", 0) & (2**64 - 1) == 0xEF46DB3751D8E999
    assert feature_spec.xxhash64(b"abc", 0) & (2**64 - 1) == 0x44BC2CF5AD770999


def test_tokens_follow_the_buckets_and_unseen_ones_go_to_their_bucket(spark):
    tokens = spark.createDataFrame([(t,) for t in ["x", "y", "x", "z", "y", "x", None, ""]], "token string")
    fitted = vocab.fit_vocabulary(tokens, min_count=2, buckets=3)
    # Pad 0, buckets 1..3, tokens from 4.
    assert [tuple(r) for r in fitted.orderBy("index").collect()] == [(4, "x", 3), (5, "y", 2)]
    df = spark.createDataFrame([("x",), ("z",), (None,), ("y",), ("new",)], "tok string")
    out = dict((r["tok"], r["idx"]) for r in vocab.apply_vocabulary(df, "tok", fitted, "idx", 3).collect())
    assert out == {
        "x": 4,
        "y": 5,
        None: 0,
        "z": 1 + feature_spec.xxhash64(b"z") % 3,
        "new": 1 + feature_spec.xxhash64(b"new") % 3,
    }
    assert out["z"] != out["new"]  # (the two hash to different buckets: the test would not see a mix-up otherwise)
    arrays = spark.createDataFrame([(["a", "q", "b", "new"],)], "g array<string>")
    got = arrays.select(vocab.index_tokens(F.col("g"), {"a": 4, "b": 5}, buckets=3)).collect()[0][0]
    assert got == [4, feature_spec.oov_bucket("q", 3), 5, feature_spec.oov_bucket("new", 3)]


def test_vocabularies_fitted_together_each_start_after_their_own_buckets(spark):
    rows = [("user", f"u{k}") for k in range(5)] + [("genre", g) for g in ("Drama", "Drama", "Action")]
    fitted, totals = vocab.fit_vocabularies(spark.createDataFrame(rows, "name string, token string"), 1, {"user": 4})
    indices = {(r["name"], r["token"]): r["index"] for r in fitted.collect()}
    assert sorted(v for (n, _), v in indices.items() if n == "user") == [5, 6, 7, 8, 9]
    assert indices[("genre", "Drama")] == 2 and indices[("genre", "Action")] == 3  # one bucket: as before


def test_a_spec_entry_records_its_buckets_and_one_bucket_keeps_the_old_entry():
    one = feature_spec.vocabulary(size=12, num_tokens=10, min_count=1, path="vocab/item_id")
    assert one == {
        "size": 12,
        "num_tokens": 10,
        "padding_index": 0,
        "oov_index": 1,
        "min_count": 1,
        "path": "vocab/item_id",
    }
    assert feature_spec.vocabulary(size=12, num_tokens=10, min_count=1, path="vocab/item_id", oov_buckets=1) == one
    many = feature_spec.vocabulary(size=18, num_tokens=10, min_count=1, path="vocab/item_id", oov_buckets=7)
    assert many["oov_buckets"] == {"count": 7, "hash": "xxhash64", "seed": 42}
    assert feature_spec.first_token_index(many) == 8 and feature_spec.first_token_index(one) == 2
    assert feature_spec.oov_index_of(one, "anything") == 1
    assert feature_spec.oov_index_of(many, "i9") == 1 + feature_spec.xxhash64(b"i9") % 7
    counts = {"rows": 10, "null_rows": 0, "distinct_tokens": 10, "distinct_indices": 10, "min_index": 8}
    feature_spec.check_vocabulary_rows("item_id", many, {**counts, "max_index": 17}, "here")
    with pytest.raises(feature_spec.VocabularyError, match="not 8..17"):
        feature_spec.check_vocabulary_rows("item_id", many, {**counts, "min_index": 2, "max_index": 11}, "here")


@pytest.mark.parametrize(
    "buckets", [{"count": 0, "hash": "xxhash64", "seed": 42}, {"count": 3, "hash": "md5", "seed": 42}, 3]
)
def test_a_spec_with_malformed_buckets_is_refused(buckets):
    spec = feature_spec.new_spec(
        [feature_spec.label()],
        {"item_id": {**feature_spec.vocabulary(size=5, num_tokens=1, min_count=1, path="vocab/item_id")}},
        compression="NONE",
    )
    spec["vocabularies"]["item_id"]["oov_buckets"] = buckets
    spec["spec_hash"] = feature_spec.compute_spec_hash(spec)
    with pytest.raises(feature_spec.SpecError, match="oov_buckets"):
        feature_spec.validate_spec(spec)


def test_the_config_takes_one_number_or_one_per_vocabulary():
    assert load_config("build_samples", None, [])["vocab"]["oov_buckets"] == 1
    assert load_config("build_samples", None, ["vocab.oov_buckets=64"])["vocab"]["oov_buckets"] == 64
    per_name = load_config("build_samples", None, ["vocab.oov_buckets={item_id: 100, user_id: 10}"])
    assert per_name["vocab"]["oov_buckets"] == {"item_id": 100, "user_id": 10}
    for bad, said in (
        ("0", "positive"),
        ("true", "positive"),
        ("{items: 3}", "not a vocabulary"),
        ("{item_id: -1}", "item_id"),
    ):
        with pytest.raises(ConfigError, match=f"vocab.oov_buckets: .*{said}"):
            validate_build_config(load_config("build_samples", None, [f"vocab.oov_buckets={bad}"]))


@pytest.mark.slow
def test_a_day_built_with_a_bucketed_spec_puts_each_unseen_id_in_its_hashed_bucket(four_days, spark, tmp_path):
    # min_count 20: the fit leaves out its rarest items too, whose tokens then go to buckets like unseen ones.
    config = day_config("vocab.oov_buckets={user_id: 5, item_id: 7}", "vocab.min_count=20")
    spec_dir, samples = str(tmp_path / "spec"), str(tmp_path / "samples")
    job.build_samples(
        spark, four_days["raw"], spec_dir, config, job.Plan(window=daily.fit_window(config, D[0], D[1]), fit_only=True)
    )
    spec = feature_spec.load_spec(spec_dir)
    entries = {name: feature_spec.get_vocabulary(spec, name) for name in ("user_id", "item_id", "genre")}
    assert [feature_spec.oov_bucket_count(entries[n]) for n in ("user_id", "item_id", "genre")] == [5, 7, 1]
    # Every table covers its buckets: the spec's vocab_size is the tokens plus padding plus K.
    for entry in feature_spec.model_inputs(spec):
        if entry.get("vocabulary") in ("user_id", "item_id"):
            vocabulary = entries[entry["vocabulary"]]
            assert entry["vocab_size"] == vocabulary["num_tokens"] + 1 + feature_spec.oov_bucket_count(vocabulary)
    [report] = daily.build_days(spark, four_days["raw"], samples, config, spec_dir, [D[3]])
    day = day_samples(samples, D[3])
    for name, index in (("user_id", "user_idx"), ("item_id", "item_idx")):
        known = pq.read_table(os.path.join(spec_dir, "vocab", name)).to_pandas().set_index("token")["index"]
        expected = [
            int(known[t]) if t in known.index else feature_spec.oov_index_of(entries[name], t) for t in day[name]
        ]
        assert day[index].tolist() == expected, name
        unseen = ~day[name].isin(known.index)
        assert unseen.sum() > 0, name  # the day has ids the vocabulary does not hold
        buckets = day.loc[unseen, index]
        assert buckets.between(1, feature_spec.oov_bucket_count(entries[name])).all()
        use = report["report"]["oov"][name]["oov_bucket_use"]
        assert report["report"]["oov"][name]["oov"] == int(unseen.sum()) == sum(use["tokens_by_bucket"])
        assert use["tokens_by_bucket"] == np.bincount(buckets - 1, minlength=use["buckets"]).tolist()
        assert use["max_distinct_tokens_in_a_bucket"] == day.loc[unseen].groupby(index)[name].nunique().max()
    assert "oov_bucket_use" not in report["report"]["oov"]["genre"]


def test_oov_counts_count_every_bucket_as_oov(spark):
    rows = [("u1", 1, "i1", 5, ["Drama"], [3]), ("u2", 3, "i2", 1, ["New"], [1]), ("u3", 4, "i3", 2, [], [])]
    samples = spark.createDataFrame(
        rows,
        "user_id string, user_idx long, item_id string, item_idx long, genres array<string>, genre_idxs array<long>",
    )
    n, counts, _ = oov_counts(samples, {"user_id": 3, "item_id": 1, "genre": 1})
    assert n == 3
    assert counts["user_id"]["oov"] == 2  # indices 1 and 3 are buckets, 4 is the first token
    assert counts["user_id"]["oov_bucket_use"]["tokens_by_bucket"] == [1, 0, 1]
    assert counts["user_id"]["oov_bucket_use"]["buckets_used"] == 2
    assert counts["item_id"]["oov"] == 1 and "oov_bucket_use" not in counts["item_id"]
    assert counts["genre"] == {"tokens": 2, "oov": 1, "oov_rate": 0.5}
    # Genres with 3 buckets (tokens from 4): "New" on bucket 1 is OOV, Drama on 3 is too, "Old" on 4 is not.
    genres = spark.createDataFrame(
        [("u", 5, "i", 5, ["New", "Drama"], [1, 3]), ("v", 5, "j", 5, ["Old", "New"], [4, 1])],
        "user_id string, user_idx long, item_id string, item_idx long, genres array<string>, genre_idxs array<long>",
    )
    _, counts, _ = oov_counts(genres, {"genre": 3})
    assert counts["genre"]["oov"] == 3
    use = counts["genre"]["oov_bucket_use"]
    assert use["tokens_by_bucket"] == [2, 0, 1] and use["max_distinct_tokens_in_a_bucket"] == 1


def test_the_rows_of_an_embedding_table_name_each_bucket(tmp_path):
    os.makedirs(tmp_path / "vocab" / "item_id")
    pq.write_table(
        pa.table({"index": [4, 5], "token": ["i7", "i2"], "count": [3, 1]}),
        tmp_path / "vocab" / "item_id" / "p.parquet",
    )
    entry = feature_spec.vocabulary(size=6, num_tokens=2, min_count=1, path="vocab/item_id", oov_buckets=3)
    tokens = feature_spec.vocabulary_tokens(str(tmp_path), {"vocabularies": {"item_id": entry}}, "item_id", 6)
    assert tokens == ["<PAD>", "<OOV_0>", "<OOV_1>", "<OOV_2>", "i7", "i2"]
