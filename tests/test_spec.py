"""spec/: entry constructors give exactly the file's dicts, per-kind validation, the dtype map, accessors."""

import hashlib
import json
import math
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import spec as fs


def _hand_spec():
    """A small spec as written by hand in the file's layout (docs/feature_spec.md)."""
    return {
        "format_version": 1,
        "compression": "GZIP",
        "label": "label",
        "features": [
            {
                "name": "user_idx",
                "role": "model_input",
                "kind": "categorical",
                "dtype": "int64",
                "shape": [],
                "vocabulary": "user_id",
                "embedding_table": "user_id",
                "vocab_size": 5,
            },
            {
                "name": "hist_click_items",
                "role": "model_input",
                "kind": "sequence",
                "dtype": "int64",
                "shape": [3],
                "vocabulary": "item_id",
                "embedding_table": "item_id",
                "vocab_size": 7,
            },
            {
                "name": "item_genres",
                "role": "model_input",
                "kind": "multi_categorical",
                "dtype": "int64",
                "shape": [2],
                "vocabulary": "genre",
                "embedding_table": "genre",
                "vocab_size": 4,
            },
            {
                "name": "item_ctr_bucket",
                "role": "model_input",
                "kind": "categorical",
                "dtype": "int64",
                "shape": [],
                "embedding_table": "item_ctr_bucket",
                "vocab_size": 4,
                "bucketization": {"source": "item_ctr", "boundaries": [0.1, 0.5]},
            },
            {
                "name": "item_ctr",
                "role": "model_input",
                "kind": "numeric",
                "dtype": "float32",
                "shape": [],
                "normalization": {"log1p": False, "mean": 0.25, "std": 0.5},
            },
            {"name": "label", "role": "label", "kind": "label", "dtype": "int64", "shape": []},
            {
                "name": "user_id",
                "role": "metadata",
                "kind": "metadata",
                "dtype": "string",
                "shape": [],
                "default": None,
            },
        ],
        "vocabularies": {
            "genre": {
                "size": 4,
                "num_tokens": 2,
                "padding_index": 0,
                "oov_index": 1,
                "min_count": 2,
                "path": "vocab/genre",
            },
        },
        "rows_per_record": 8,
    }


def _built_spec():
    features = [
        fs.categorical("user_idx", vocabulary="user_id", vocab_size=5),
        fs.sequence("hist_click_items", length=3, vocabulary="item_id", vocab_size=7),
        fs.multi_categorical("item_genres", length=2, vocabulary="genre", vocab_size=4),
        fs.bucketized("item_ctr_bucket", source="item_ctr", boundaries=[0.1, 0.5]),
        fs.numeric("item_ctr", normalization={"log1p": False, "mean": 0.25, "std": 0.5}),
        fs.label("label"),
        fs.metadata("user_id", "string"),
    ]
    vocabularies = {"genre": fs.vocabulary(size=4, num_tokens=2, min_count=2, path="vocab/genre")}
    return fs.new_spec(features, vocabularies, compression="GZIP", rows_per_record=8)


def test_constructors_write_the_file_layout_key_for_key():
    built, hand = _built_spec(), _hand_spec()
    payload = {k: hand[k] for k in ("features", "vocabularies", "compression", "rows_per_record")}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    hand["spec_hash"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert built == hand
    # same key order too: feature_spec.json is written unsorted
    assert json.dumps(built) == json.dumps(hand)
    assert fs.validate_spec(built) is built


def test_rows_per_record_1_is_left_out_so_old_hashes_hold():
    features = [fs.categorical("user_idx", vocabulary="user_id", vocab_size=5), fs.label()]
    spec = fs.new_spec(features, {}, compression="", rows_per_record=1)
    assert "rows_per_record" not in spec and fs.rows_per_record(spec) == 1
    text = json.dumps(
        {"features": features, "vocabularies": {}, "compression": ""}, sort_keys=True, separators=(",", ":")
    )
    assert spec["spec_hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert fs.compression_type(spec) == ""


def test_embedding_table_defaults_to_the_vocabulary_then_the_name():
    assert fs.categorical("a", vocab_size=3)["embedding_table"] == "a"
    assert "vocabulary" not in fs.categorical("a", vocab_size=3)
    assert fs.categorical("a", vocabulary="v", vocab_size=3)["embedding_table"] == "v"
    assert fs.sequence("s", length=2, vocabulary="v", vocab_size=3, embedding_table="t")["embedding_table"] == "t"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: fs.categorical("user_idx", vocab_size=1), "'user_idx'.*vocab_size >= 2"),
        (lambda: fs.sequence("hist", length=0, vocabulary="v", vocab_size=3), "'hist' has shape"),
        (lambda: fs.metadata("ts", "int32"), "'ts' has unknown dtype 'int32'"),
        (lambda: fs.numeric("ctr", normalization={"mean": 0.0}), "'ctr' needs normalization"),
        (
            lambda: fs.check_entry(
                {
                    "name": "x",
                    "role": "model_input",
                    "kind": "categorical",
                    "dtype": "float32",
                    "shape": [],
                    "vocab_size": 3,
                }
            ),
            "'x' .*must be int64",
        ),
        (
            lambda: fs.check_entry(
                {
                    "name": "x",
                    "role": "model_input",
                    "kind": "categorical",
                    "dtype": "int64",
                    "shape": [2],
                    "vocab_size": 3,
                }
            ),
            "categorical feature 'x' must have shape \\[\\]",
        ),
        (
            lambda: fs.check_entry(
                {"name": "x", "role": "model_input", "kind": "sequence", "dtype": "int64", "shape": [], "vocab_size": 3}
            ),
            "sequence feature 'x' must have shape \\[n\\]",
        ),
        (
            lambda: fs.check_entry(
                {"name": "x", "role": "label", "kind": "categorical", "dtype": "int64", "shape": []}
            ),
            "label feature 'x' has unsupported kind",
        ),
        (
            lambda: fs.check_entry(
                {"name": "x", "role": "model_input", "kind": "metadata", "dtype": "int64", "shape": []}
            ),
            "model_input feature 'x' has unsupported kind",
        ),
        (
            lambda: fs.check_entry({"name": "x", "role": "label", "kind": "label", "dtype": "float32", "shape": []}),
            "label feature 'x' must be a int64 scalar",
        ),
        (
            lambda: fs.check_entry(
                {
                    "name": "x",
                    "role": "model_input",
                    "kind": "categorical",
                    "dtype": "int64",
                    "shape": [],
                    "vocab_size": 3,
                    "bucketization": {"source": "y", "boundaries": [1.0, 2.0]},
                }
            ),
            "'x' has vocab_size 3, expected len\\(boundaries\\) \\+ 2 = 4",
        ),
        (
            lambda: fs.check_entry({"name": "x", "role": "model_input", "kind": "numeric", "dtype": "float32"}),
            "lacks 'shape'",
        ),
    ],
)
def test_each_kind_rule_names_the_feature(make, message):
    with pytest.raises(fs.SpecError, match=message):
        make()


def test_validate_spec_checks_every_entry_and_the_whole():
    spec = _built_spec()
    broken = dict(spec, features=spec["features"] + [dict(spec["features"][0])])
    broken["spec_hash"] = fs.compute_spec_hash(broken)
    with pytest.raises(fs.SpecError, match="'user_idx' appears twice"):
        fs.validate_spec(broken)
    with pytest.raises(fs.SpecError, match="hash mismatch"):
        fs.validate_spec(dict(spec, compression=""))
    with pytest.raises(fs.SpecError, match="format_version"):
        fs.validate_spec(dict(spec, format_version=2))


def test_the_one_dtype_map():
    import tensorflow as tf

    assert [fs.tf_dtype(d) for d in ("int64", "float32", "string")] == [tf.int64, tf.float32, tf.string]
    assert [fs.arrow_type(d) for d in ("int64", "float32", "string")] == [pa.int64(), pa.float32(), pa.string()]
    assert fs.null_value("int64") == -1 and fs.null_value("string") == "" and math.isnan(fs.null_value("float32"))
    with pytest.raises(fs.SpecError, match="float64"):
        fs.arrow_type("float64")


def test_parse_maps_and_serving_signature():
    import tensorflow as tf

    spec = _built_spec()
    maps = fs.parse_features(spec)
    assert maps["hist_click_items"] == tf.io.FixedLenFeature([3], tf.int64)
    assert maps["user_id"] == tf.io.FixedLenFeature([], tf.string, default_value="")
    assert set(fs.parse_features(spec, include_metadata=False)) == {e["name"] for e in spec["features"]} - {"user_id"}
    assert fs.parse_block_features(spec)["item_ctr"] == tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64)
    signature = fs.input_signature(spec)
    assert list(signature) == ["user_idx", "hist_click_items", "item_genres", "item_ctr_bucket", "item_ctr"]
    assert signature["item_genres"] == tf.TensorSpec([None, 2], tf.int64, name="item_genres")


def test_accessors(tmp_path):
    spec = dict(
        _built_spec(), splits={"train": fs.split(pattern="train/part-*.tfrecord.gz", num_examples=10, label_rate=0.3)}
    )
    assert fs.split_pattern("/s/", spec, "train") == "/s/train/part-*.tfrecord.gz"
    assert fs.num_examples(spec, "train") == 10 and fs.num_examples(spec, "valid") is None
    with pytest.raises(fs.SpecError, match="split 'test' is not in the feature spec of /s .*has: train"):
        fs.split_pattern("/s", spec, "test")
    assert [f["name"] for f in fs.embedded_fields(spec)] == [
        "user_idx",
        "hist_click_items",
        "item_genres",
        "item_ctr_bucket",
    ]
    assert [f["embedding_table"] for f in fs.embedded_fields(spec)] == [
        "user_id",
        "item_id",
        "genre",
        "item_ctr_bucket",
    ]
    assert fs.numeric_names(spec) == ["item_ctr"] and fs.label_name(spec) == "label"
    assert [e["name"] for e in fs.metadata_entries(spec)] == ["user_id"]
    # vocabulary rows in any order; indices 0 and 1 are padding and OOV
    (tmp_path / "vocab" / "genre").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {"index": pa.array([3, 2], pa.int64()), "token": ["Drama", "Action"], "count": pa.array([1, 5], pa.int64())}
        ),
        tmp_path / "vocab" / "genre" / "part-0.parquet",
    )
    assert fs.vocabulary_tokens(str(tmp_path), spec, "genre", 4) == ["<PAD>", "<OOV>", "Action", "Drama"]
    assert fs.vocabulary_tokens(str(tmp_path), spec, "item_ctr_bucket", 4) == [
        "<PAD>",
        "bucket_1",
        "bucket_2",
        "bucket_3",
    ]
    assert fs.vocabulary_tokens(str(tmp_path), spec, "user_id", 3) == ["<PAD>", "index_1", "index_2"]


def test_check_embedded_fields_names_the_layer():
    out = fs.check_embedded_fields([{"name": "a", "kind": "sequence", "vocab_size": 3}], "FeatureEmbedding")
    assert out == [{"name": "a", "kind": "sequence", "vocab_size": 3, "embedding_table": "a"}]
    with pytest.raises(ValueError, match="FeatureEmbedding: field 'a' has kind 'numeric'"):
        fs.check_embedded_fields([{"name": "a", "kind": "numeric", "vocab_size": 3}], "FeatureEmbedding")


def test_importing_spec_needs_neither_tensorflow_nor_pyarrow():
    code = "import sys, spec; print('tensorflow' in sys.modules, 'pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---------------------------------------------------------------- numeric vectors
VEC_NORM = {"log1p": False, "mean": [0.1, -0.2, 0.0], "std": [0.9, 1.1, 0.5]}


def test_vector_numeric_entry_is_the_file_layout():
    import numpy as np

    entry = fs.numeric("item_vec", normalization=dict(VEC_NORM), length=3)
    assert json.dumps(entry) == json.dumps(
        {
            "name": "item_vec",
            "role": "model_input",
            "kind": "numeric",
            "dtype": "float32",
            "shape": [3],
            "normalization": {"log1p": False, "mean": [0.1, -0.2, 0.0], "std": [0.9, 1.1, 0.5]},
        }
    )
    # numpy statistics (as a fitting step holds them) are written as JSON lists
    from_numpy = fs.numeric(
        "item_vec",
        normalization={"log1p": False, "mean": np.array([0.5, 0.25]), "std": (1.0, 2.0)},
        length=np.int64(2),
    )
    assert from_numpy["shape"] == [2] and from_numpy["normalization"] == {
        "log1p": False,
        "mean": [0.5, 0.25],
        "std": [1.0, 2.0],
    }
    json.dumps(from_numpy, allow_nan=False)  # plain JSON types only
    assert fs.numeric("one", normalization={"log1p": True, "mean": [0.0], "std": [1.0]}, length=1)["shape"] == [1]


def test_scalar_numeric_entry_keeps_exactly_its_old_keys_and_hash():
    """spec.numeric without a length writes what it always wrote, so earlier specs keep their hash."""
    norm = {"log1p": True, "mean": 0.5, "std": 2.0}
    entry = fs.numeric("user_clicks", normalization=norm)
    old = {
        "name": "user_clicks",
        "role": "model_input",
        "kind": "numeric",
        "dtype": "float32",
        "shape": [],
        "normalization": {"log1p": True, "mean": 0.5, "std": 2.0},
    }
    assert json.dumps(entry) == json.dumps(old)  # same keys, same order, same values
    assert entry["normalization"] is norm  # passed through untouched
    spec = fs.new_spec([entry, fs.label()], {}, compression="GZIP")
    text = json.dumps(
        {"features": [old, fs.label()], "vocabularies": {}, "compression": "GZIP"},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert spec["spec_hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()


def _vector(shape=(3,), **normalization):
    return {
        "name": "item_vec",
        "role": "model_input",
        "kind": "numeric",
        "dtype": "float32",
        "shape": list(shape),
        "normalization": {**VEC_NORM, **normalization},
    }


@pytest.mark.parametrize(
    "entry, message",
    [
        (_vector(mean=[0.1, -0.2]), r"'item_vec' is a vector of shape \[3\]: normalization mean must be a list of 3"),
        (_vector(std=[1.0, 1.0, 1.0, 1.0]), r"'item_vec' is a vector of shape \[3\]: normalization std must be a list"),
        (_vector(mean=0.0), r"'item_vec' is a vector of shape \[3\]: normalization mean must be a list of 3"),
        (_vector(std="1,1,1"), r"'item_vec' .*normalization std must be a list of 3"),
        (_vector(mean=[0.0, float("nan"), 0.0]), r"'item_vec': normalization mean\[1\] must be a finite number"),
        (_vector(std=[1.0, 1.0, float("inf")]), r"'item_vec': normalization std\[2\] must be a finite number"),
        (_vector(mean=[0.0, None, 0.0]), r"'item_vec': normalization mean\[1\] must be a finite number, got None"),
        (_vector(mean=[0.0, True, 0.0]), r"'item_vec': normalization mean\[1\] must be a finite number, got True"),
        (_vector(std=[1.0, 0.0, 1.0]), r"'item_vec': normalization std\[1\] must be > 0, got 0.0"),
        (_vector(std=[1.0, 1.0, -2.0]), r"'item_vec': normalization std\[2\] must be > 0"),
        (_vector(shape=()), r"'item_vec' is a scalar \(shape \[\]\): normalization mean must be a finite number"),
        (_vector(shape=(), mean=0.0), r"'item_vec' is a scalar \(shape \[\]\): normalization std must be a finite"),
        (_vector(log1p="no"), r"'item_vec': normalization log1p must be true or false"),
        (dict(_vector(), dtype="int64"), r"numeric feature 'item_vec' must be float32"),
        (_vector(shape=(0,)), r"'item_vec' has shape \[0\], expected \[\] or \[n\] with n > 0"),
        (_vector(shape=(3, 2)), r"'item_vec' has shape \[3, 2\]"),
        (dict(_vector(), normalization={"mean": [0.0] * 3, "std": [1.0] * 3}), "'item_vec' needs normalization"),
    ],
)
def test_vector_numeric_rules_name_the_feature(entry, message):
    with pytest.raises(fs.SpecError, match=message):
        fs.check_entry(entry)


@pytest.mark.parametrize(
    "normalization, message",
    [
        ({"log1p": False, "mean": float("nan"), "std": 1.0}, "'x' is a scalar .*mean must be a finite number"),
        ({"log1p": False, "mean": 0.0, "std": 0.0}, r"'x': normalization std must be > 0, got 0.0"),
        ({"log1p": False, "mean": "0", "std": 1.0}, "'x' is a scalar .*mean must be a finite number, got '0'"),
    ],
)
def test_scalar_numeric_statistics_follow_the_same_rules(normalization, message):
    with pytest.raises(fs.SpecError, match=message):
        fs.numeric("x", normalization=normalization)


def test_vector_numeric_constructor_refuses_bad_lengths():
    for length in (0, -3, 2.5, True):
        with pytest.raises(fs.SpecError, match="'v' has shape"):
            fs.numeric("v", normalization={"log1p": False, "mean": [0.0], "std": [1.0]}, length=length)
    with pytest.raises(fs.SpecError, match=r"'v' is a vector of shape \[2\]: normalization mean must be a list of 2"):
        fs.numeric("v", normalization={"log1p": False, "mean": [0.0], "std": [1.0, 1.0]}, length=2)


def test_numeric_widths_parse_maps_and_serving_signature_of_a_vector():
    import tensorflow as tf

    features = [
        fs.categorical("user_idx", vocabulary="user_id", vocab_size=5),
        fs.numeric("item_ctr", normalization={"log1p": False, "mean": 0.25, "std": 0.5}),
        fs.numeric("item_vec", normalization=dict(VEC_NORM), length=3),
        fs.numeric("user_len", normalization={"log1p": True, "mean": 1.0, "std": 1.0}),
        fs.label(),
    ]
    spec = fs.validate_spec(fs.new_spec(features, {}, compression="GZIP", rows_per_record=4))
    assert fs.numeric_fields(spec) == [("item_ctr", 1), ("item_vec", 3), ("user_len", 1)]
    assert fs.numeric_names(spec) == ["item_ctr", "item_vec", "user_len"]
    assert [fs.numeric_width(e) for e in features[1:4]] == [1, 3, 1]
    assert fs.parse_features(spec)["item_vec"] == tf.io.FixedLenFeature([3], tf.float32)
    assert fs.parse_block_features(spec)["item_vec"] == tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64)
    assert fs.input_signature(spec)["item_vec"] == tf.TensorSpec([None, 3], tf.float32, name="item_vec")
    assert fs.input_signature(spec)["item_ctr"] == tf.TensorSpec([None], tf.float32, name="item_ctr")
