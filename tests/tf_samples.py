"""Test helper: write a tiny but valid SAMPLES directory (docs/feature_spec.md).

    spec, rows = write_samples(tmp_path / "samples", seed=0)

Writes `feature_spec.json` (built with the `spec` package's entry constructors),
`{train,valid,test}/part-*.tfrecord.gz` (gzip `tf.train.Example`), `vocab/<name>/part-0.parquet`
(index, token, count) and `_SUCCESS`. `rows` maps split -> pandas DataFrame of exactly
the values written (metadata nulls are None, i.e. left out of the Example).

`rows_per_record=n` writes the block layout instead (docs/feature_spec.md): each record holds
n consecutive rows of its shard (in file order, not shuffled), nulls as NaN / "" / -1.

The label has a learnable signal: items with an even number are clicked far more
often, and the `item_ctr` numeric and its bucket carry the same information.

`vector_feature=True` adds `item_vec`, a numeric vector of shape [VEC_DIM] (per-dimension
normalization lists) whose first dimension carries the same signal; without it the spec and
rows are exactly those written before vectors existed.
"""

from __future__ import annotations

import bisect
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

import feature_spec
from feature_spec import NULL_VALUES

HIST_LEN = 3
MAX_GENRES = 2
GENRES = ["Action", "Comedy", "Drama"]
CTR_BOUNDARIES = [0.2, 0.5]
SPLITS = ("train", "valid", "test")
VEC_DIM = 3
VEC_NORMALIZATION = {"log1p": False, "mean": [0.0, 0.5, -0.5], "std": [1.0, 2.0, 0.5]}


def make_spec(
    num_users: int,
    num_items: int,
    extra_feature: bool = False,
    rows_per_record: int = 1,
    vector_feature: bool = False,
) -> dict:
    sizes = {"user_id": num_users + 2, "item_id": num_items + 2, "genre": len(GENRES) + 2}
    identity = {"log1p": False, "mean": 0.0, "std": 1.0}
    features = [
        feature_spec.categorical("user_idx", vocabulary="user_id", vocab_size=sizes["user_id"]),
        feature_spec.categorical("item_idx", vocabulary="item_id", vocab_size=sizes["item_id"]),
        feature_spec.categorical("item_primary_genre", vocabulary="genre", vocab_size=sizes["genre"]),
        feature_spec.sequence("hist_click_items", length=HIST_LEN, vocabulary="item_id", vocab_size=sizes["item_id"]),
        feature_spec.multi_categorical("item_genres", length=MAX_GENRES, vocabulary="genre", vocab_size=sizes["genre"]),
        feature_spec.bucketized("item_ctr_bucket", source="item_ctr", boundaries=CTR_BOUNDARIES),
        feature_spec.numeric("hist_click_len", normalization={"log1p": False, "mean": 1.5, "std": 1.0}),
        feature_spec.numeric("item_ctr", normalization=dict(identity)),
    ]
    if extra_feature:
        features.append(feature_spec.numeric("release_year", normalization=dict(identity)))
    if vector_feature:
        features.append(feature_spec.numeric("item_vec", normalization=dict(VEC_NORMALIZATION), length=VEC_DIM))
    features += [feature_spec.label("label")] + [
        feature_spec.metadata(name, dtype)
        for name, dtype in (("user_id", "string"), ("item_id", "string"), ("ts", "int64"), ("p_click", "float32"))
    ]
    vocabularies = {
        name: feature_spec.vocabulary(size=size, num_tokens=size - 2, min_count=1, path=f"vocab/{name}")
        for name, size in sorted(sizes.items())
    }
    return feature_spec.new_spec(features, vocabularies, compression="GZIP", rows_per_record=rows_per_record)


def _feature(dtype: str, values: list) -> tf.train.Feature:
    if dtype == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if dtype == "float32":
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode("utf-8") for v in values]))


def _example(row: dict, spec: dict) -> bytes:
    feats = {}
    for entry in spec["features"]:
        value = row.get(entry["name"])
        if value is None:
            continue
        feats[entry["name"]] = _feature(entry["dtype"], list(value) if entry["shape"] else [value])
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _block_example(rows: list[dict], spec: dict) -> bytes:
    """One record of the block layout: each feature holds the rows' values one after another."""
    feats = {}
    for entry in spec["features"]:
        values = []
        for row in rows:
            value = row.get(entry["name"])
            value = NULL_VALUES[entry["dtype"]] if value is None or value != value else value
            values += list(value) if entry["shape"] else [value]
        feats[entry["name"]] = _feature(entry["dtype"], values)
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _records(rows: list[dict], spec: dict, rows_per_record: int) -> list[bytes]:
    if rows_per_record == 1:
        return [_example(row, spec) for row in rows]
    return [_block_example(rows[k : k + rows_per_record], spec) for k in range(0, len(rows), rows_per_record)]


def make_rows(
    n: int,
    num_users: int,
    num_items: int,
    rng: np.random.Generator,
    ts0: int,
    extra_feature: bool = False,
    vector_feature: bool = False,
) -> pd.DataFrame:
    rows = []
    vec_rng = np.random.default_rng(ts0)
    for i in range(n):
        u = int(rng.integers(num_users))
        it = int(rng.integers(num_items))
        # 1 in 20 rows has an item unseen in train: OOV index 1
        item_idx = 1 if rng.random() < 0.05 else it + 2
        genres = sorted({int(g) + 2 for g in rng.integers(len(GENRES), size=int(rng.integers(1, MAX_GENRES + 1)))})
        hist_len = int(rng.integers(0, HIST_LEN + 1))
        hist = [int(x) + 2 for x in rng.integers(num_items, size=hist_len)] + [0] * (HIST_LEN - hist_len)
        good = it % 2 == 0
        ctr = float(np.float32(rng.uniform(0.5, 0.9) if good else rng.uniform(0.0, 0.3)))
        p = 0.85 if good else 0.1
        row = {
            "user_idx": u + 2,
            "item_idx": item_idx,
            "item_primary_genre": genres[0],
            "hist_click_items": hist,
            "item_genres": genres + [0] * (MAX_GENRES - len(genres)),
            "item_ctr_bucket": 1 + bisect.bisect_right(CTR_BOUNDARIES, ctr),
            "hist_click_len": float(np.float32(hist_len - 1.5)),
            "item_ctr": ctr,
            "label": int(rng.random() < p),
            "user_id": f"u{u}",
            "item_id": f"i{it}" if item_idx > 1 else f"new{it}",
            "ts": ts0 + i,
            "p_click": None if i % 7 == 3 else float(np.float32(p)),
        }
        if extra_feature:
            row["release_year"] = 0.0
        if vector_feature:  # drawn from a generator of its own, so the other columns stay as without it
            noise = vec_rng.normal(size=VEC_DIM - 1)
            row["item_vec"] = [float(np.float32(v)) for v in [1.0 if good else -1.0, *noise]]
        rows.append(row)
    return pd.DataFrame(rows)


def write_vocab(samples_dir: str, name: str, tokens: list[str]) -> None:
    path = os.path.join(samples_dir, "vocab", name)
    os.makedirs(path, exist_ok=True)
    n = len(tokens)
    # written in reverse index order: readers must not rely on row order
    table = pa.table(
        {
            "index": pa.array(list(range(n + 1, 1, -1)), pa.int64()),
            "token": pa.array(tokens[::-1], pa.string()),
            "count": pa.array([100 - k for k in range(n)][::-1], pa.int64()),
        }
    )
    pq.write_table(table, os.path.join(path, "part-00000.parquet"))


def write_samples(
    samples_dir,
    sizes: dict | None = None,
    seed: int = 0,
    num_users: int = 12,
    num_items: int = 10,
    shards: int = 2,
    extra_feature: bool = False,
    rows_per_record: int = 1,
    vector_feature: bool = False,
) -> tuple[dict, dict]:
    """Write a SAMPLES dir; returns (spec, {split: DataFrame of the rows written})."""
    samples_dir = str(samples_dir)
    sizes = sizes or {"train": 600, "valid": 200, "test": 200}
    rng = np.random.default_rng(seed)
    spec = make_spec(
        num_users,
        num_items,
        extra_feature=extra_feature,
        rows_per_record=rows_per_record,
        vector_feature=vector_feature,
    )
    os.makedirs(samples_dir, exist_ok=True)
    rows, splits = {}, {}
    ts0 = 1_700_000_000
    for split in SPLITS:
        df = make_rows(
            sizes[split], num_users, num_items, rng, ts0, extra_feature=extra_feature, vector_feature=vector_feature
        )
        ts0 += sizes[split]
        os.makedirs(os.path.join(samples_dir, split), exist_ok=True)
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        records = df.to_dict("records")
        for s in range(shards):
            path = os.path.join(samples_dir, split, f"part-{s:05d}.tfrecord.gz")
            with tf.io.TFRecordWriter(path, options) as writer:
                for record in _records(records[s::shards], spec, rows_per_record):
                    writer.write(record)
        # rows in file order: shard 0's rows, then shard 1's, ...
        order = [k for s in range(shards) for k in range(s, len(records), shards)]
        rows[split] = df.iloc[order].reset_index(drop=True)
        splits[split] = {
            "pattern": f"{split}/part-*.tfrecord.gz",
            "num_examples": len(df),
            "label_rate": float(df["label"].mean()),
        }
    spec["splits"] = splits
    write_vocab(samples_dir, "user_id", [f"u{k}" for k in range(num_users)])
    write_vocab(samples_dir, "item_id", [f"i{k}" for k in range(num_items)])
    write_vocab(samples_dir, "genre", GENRES)
    with open(feature_spec.spec_path(samples_dir), "w") as fh:
        fh.write(feature_spec.to_json(spec))
    open(os.path.join(samples_dir, "_SUCCESS"), "w").close()
    return spec, rows
