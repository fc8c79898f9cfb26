"""feature_spec/: entry constructors give exactly the file's dicts, per-kind validation, the dtype map, accessors."""

import hashlib
import json
import math
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import feature_spec


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
        feature_spec.categorical("user_idx", vocabulary="user_id", vocab_size=5),
        feature_spec.sequence("hist_click_items", length=3, vocabulary="item_id", vocab_size=7),
        feature_spec.multi_categorical("item_genres", length=2, vocabulary="genre", vocab_size=4),
        feature_spec.bucketized("item_ctr_bucket", source="item_ctr", boundaries=[0.1, 0.5]),
        feature_spec.numeric("item_ctr", normalization={"log1p": False, "mean": 0.25, "std": 0.5}),
        feature_spec.label("label"),
        feature_spec.metadata("user_id", "string"),
    ]
    vocabularies = {"genre": feature_spec.vocabulary(size=4, num_tokens=2, min_count=2, path="vocab/genre")}
    return feature_spec.new_spec(features, vocabularies, compression="GZIP", rows_per_record=8)


def test_constructors_write_the_file_layout_key_for_key():
    built, hand = _built_spec(), _hand_spec()
    payload = {k: hand[k] for k in ("features", "vocabularies", "compression", "rows_per_record")}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    hand["spec_hash"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert built == hand
    # same key order too: feature_spec.json is written unsorted
    assert json.dumps(built) == json.dumps(hand)
    assert feature_spec.validate_spec(built) is built


def test_rows_per_record_1_is_left_out_so_old_hashes_hold():
    features = [feature_spec.categorical("user_idx", vocabulary="user_id", vocab_size=5), feature_spec.label()]
    spec = feature_spec.new_spec(features, {}, compression="", rows_per_record=1)
    assert "rows_per_record" not in spec and feature_spec.rows_per_record(spec) == 1
    text = json.dumps(
        {"features": features, "vocabularies": {}, "compression": ""}, sort_keys=True, separators=(",", ":")
    )
    assert spec["spec_hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert feature_spec.compression_type(spec) == ""


def test_embedding_table_defaults_to_the_vocabulary_then_the_name():
    assert feature_spec.categorical("a", vocab_size=3)["embedding_table"] == "a"
    assert "vocabulary" not in feature_spec.categorical("a", vocab_size=3)
    assert feature_spec.categorical("a", vocabulary="v", vocab_size=3)["embedding_table"] == "v"
    assert (
        feature_spec.sequence("s", length=2, vocabulary="v", vocab_size=3, embedding_table="t")["embedding_table"]
        == "t"
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: feature_spec.categorical("user_idx", vocab_size=1), "'user_idx'.*vocab_size >= 2"),
        (lambda: feature_spec.sequence("hist", length=0, vocabulary="v", vocab_size=3), "'hist' has shape"),
        (lambda: feature_spec.metadata("ts", "int32"), "'ts' has unknown dtype 'int32'"),
        (lambda: feature_spec.numeric("ctr", normalization={"mean": 0.0}), "'ctr' needs normalization"),
        (
            lambda: feature_spec.check_entry(
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
            lambda: feature_spec.check_entry(
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
            lambda: feature_spec.check_entry(
                {"name": "x", "role": "model_input", "kind": "sequence", "dtype": "int64", "shape": [], "vocab_size": 3}
            ),
            "sequence feature 'x' must have shape \\[n\\]",
        ),
        (
            lambda: feature_spec.check_entry(
                {"name": "x", "role": "label", "kind": "categorical", "dtype": "int64", "shape": []}
            ),
            "label feature 'x' has unsupported kind",
        ),
        (
            lambda: feature_spec.check_entry(
                {"name": "x", "role": "model_input", "kind": "metadata", "dtype": "int64", "shape": []}
            ),
            "model_input feature 'x' has unsupported kind",
        ),
        (
            lambda: feature_spec.check_entry(
                {"name": "x", "role": "label", "kind": "label", "dtype": "float32", "shape": []}
            ),
            "label feature 'x' must be a int64 scalar",
        ),
        (
            lambda: feature_spec.check_entry(
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
            lambda: feature_spec.check_entry(
                {"name": "x", "role": "model_input", "kind": "numeric", "dtype": "float32"}
            ),
            "lacks 'shape'",
        ),
    ],
)
def test_each_kind_rule_names_the_feature(make, message):
    with pytest.raises(feature_spec.SpecError, match=message):
        make()


def test_validate_spec_checks_every_entry_and_the_whole():
    spec = _built_spec()
    broken = dict(spec, features=spec["features"] + [dict(spec["features"][0])])
    broken["spec_hash"] = feature_spec.compute_spec_hash(broken)
    with pytest.raises(feature_spec.SpecError, match="'user_idx' appears twice"):
        feature_spec.validate_spec(broken)
    with pytest.raises(feature_spec.SpecError, match="hash mismatch"):
        feature_spec.validate_spec(dict(spec, compression=""))
    with pytest.raises(feature_spec.SpecError, match="format_version"):
        feature_spec.validate_spec(dict(spec, format_version=2))


def test_the_one_dtype_map():
    import tensorflow as tf

    assert [feature_spec.tf_dtype(d) for d in ("int64", "float32", "string")] == [tf.int64, tf.float32, tf.string]
    assert [feature_spec.arrow_type(d) for d in ("int64", "float32", "string")] == [
        pa.int64(),
        pa.float32(),
        pa.string(),
    ]
    assert (
        feature_spec.null_value("int64") == -1
        and feature_spec.null_value("string") == ""
        and math.isnan(feature_spec.null_value("float32"))
    )
    with pytest.raises(feature_spec.SpecError, match="float64"):
        feature_spec.arrow_type("float64")


def test_parse_maps_and_serving_signature():
    import tensorflow as tf

    spec = _built_spec()
    maps = feature_spec.parse_features(spec)
    assert maps["hist_click_items"] == tf.io.FixedLenFeature([3], tf.int64)
    assert maps["user_id"] == tf.io.FixedLenFeature([], tf.string, default_value="")
    assert set(feature_spec.parse_features(spec, include_metadata=False)) == {e["name"] for e in spec["features"]} - {
        "user_id"
    }
    assert feature_spec.parse_block_features(spec)["item_ctr"] == tf.io.RaggedFeature(
        tf.float32, row_splits_dtype=tf.int64
    )
    signature = feature_spec.input_signature(spec)
    assert list(signature) == ["user_idx", "hist_click_items", "item_genres", "item_ctr_bucket", "item_ctr"]
    assert signature["item_genres"] == tf.TensorSpec([None, 2], tf.int64, name="item_genres")


def test_accessors(tmp_path):
    spec = dict(
        _built_spec(),
        splits={"train": feature_spec.split(pattern="train/part-*.tfrecord.gz", num_examples=10, label_rate=0.3)},
    )
    assert feature_spec.split_pattern("/s/", spec, "train") == "/s/train/part-*.tfrecord.gz"
    assert feature_spec.num_examples(spec, "train") == 10 and feature_spec.num_examples(spec, "valid") is None
    with pytest.raises(feature_spec.SpecError, match="split 'test' is not in the feature spec of /s .*has: train"):
        feature_spec.split_pattern("/s", spec, "test")
    assert [f["name"] for f in feature_spec.embedded_fields(spec)] == [
        "user_idx",
        "hist_click_items",
        "item_genres",
        "item_ctr_bucket",
    ]
    assert [f["embedding_table"] for f in feature_spec.embedded_fields(spec)] == [
        "user_id",
        "item_id",
        "genre",
        "item_ctr_bucket",
    ]
    assert feature_spec.numeric_names(spec) == ["item_ctr"] and feature_spec.label_name(spec) == "label"
    assert [e["name"] for e in feature_spec.metadata_entries(spec)] == ["user_id"]
    # vocabulary rows in any order; indices 0 and 1 are padding and OOV
    (tmp_path / "vocab" / "genre").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {"index": pa.array([3, 2], pa.int64()), "token": ["Drama", "Action"], "count": pa.array([1, 5], pa.int64())}
        ),
        tmp_path / "vocab" / "genre" / "part-0.parquet",
    )
    assert feature_spec.vocabulary_tokens(str(tmp_path), spec, "genre", 4) == ["<PAD>", "<OOV>", "Action", "Drama"]
    assert feature_spec.vocabulary_tokens(str(tmp_path), spec, "item_ctr_bucket", 4) == [
        "<PAD>",
        "bucket_1",
        "bucket_2",
        "bucket_3",
    ]
    assert feature_spec.vocabulary_tokens(str(tmp_path), spec, "user_id", 3) == ["<PAD>", "index_1", "index_2"]


def test_check_embedded_fields_names_the_layer():
    out = feature_spec.check_embedded_fields([{"name": "a", "kind": "sequence", "vocab_size": 3}], "FeatureEmbedding")
    assert out == [{"name": "a", "kind": "sequence", "vocab_size": 3, "embedding_table": "a"}]
    with pytest.raises(ValueError, match="FeatureEmbedding: field 'a' has kind 'numeric'"):
        feature_spec.check_embedded_fields([{"name": "a", "kind": "numeric", "vocab_size": 3}], "FeatureEmbedding")


def test_importing_feature_spec_needs_neither_tensorflow_nor_pyarrow():
    code = "import sys, feature_spec; print('tensorflow' in sys.modules, 'pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---------------------------------------------------------------- numeric vectors
VEC_NORM = {"log1p": False, "mean": [0.1, -0.2, 0.0], "std": [0.9, 1.1, 0.5]}


def test_vector_numeric_entry_is_the_file_layout():
    import numpy as np

    entry = feature_spec.numeric("item_vec", normalization=dict(VEC_NORM), length=3)
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
    from_numpy = feature_spec.numeric(
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
    assert feature_spec.numeric("one", normalization={"log1p": True, "mean": [0.0], "std": [1.0]}, length=1)[
        "shape"
    ] == [1]


def test_scalar_numeric_entry_keeps_exactly_its_old_keys_and_hash():
    """spec.numeric without a length writes what it always wrote, so earlier specs keep their hash."""
    norm = {"log1p": True, "mean": 0.5, "std": 2.0}
    entry = feature_spec.numeric("user_clicks", normalization=norm)
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
    spec = feature_spec.new_spec([entry, feature_spec.label()], {}, compression="GZIP")
    text = json.dumps(
        {"features": [old, feature_spec.label()], "vocabularies": {}, "compression": "GZIP"},
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
    with pytest.raises(feature_spec.SpecError, match=message):
        feature_spec.check_entry(entry)


@pytest.mark.parametrize(
    "normalization, message",
    [
        ({"log1p": False, "mean": float("nan"), "std": 1.0}, "'x' is a scalar .*mean must be a finite number"),
        ({"log1p": False, "mean": 0.0, "std": 0.0}, r"'x': normalization std must be > 0, got 0.0"),
        ({"log1p": False, "mean": "0", "std": 1.0}, "'x' is a scalar .*mean must be a finite number, got '0'"),
    ],
)
def test_scalar_numeric_statistics_follow_the_same_rules(normalization, message):
    with pytest.raises(feature_spec.SpecError, match=message):
        feature_spec.numeric("x", normalization=normalization)


def test_vector_numeric_constructor_refuses_bad_lengths():
    for length in (0, -3, 2.5, True):
        with pytest.raises(feature_spec.SpecError, match="'v' has shape"):
            feature_spec.numeric("v", normalization={"log1p": False, "mean": [0.0], "std": [1.0]}, length=length)
    with pytest.raises(
        feature_spec.SpecError, match=r"'v' is a vector of shape \[2\]: normalization mean must be a list of 2"
    ):
        feature_spec.numeric("v", normalization={"log1p": False, "mean": [0.0], "std": [1.0, 1.0]}, length=2)


def test_numeric_widths_parse_maps_and_serving_signature_of_a_vector():
    import tensorflow as tf

    features = [
        feature_spec.categorical("user_idx", vocabulary="user_id", vocab_size=5),
        feature_spec.numeric("item_ctr", normalization={"log1p": False, "mean": 0.25, "std": 0.5}),
        feature_spec.numeric("item_vec", normalization=dict(VEC_NORM), length=3),
        feature_spec.numeric("user_len", normalization={"log1p": True, "mean": 1.0, "std": 1.0}),
        feature_spec.label(),
    ]
    spec = feature_spec.validate_spec(feature_spec.new_spec(features, {}, compression="GZIP", rows_per_record=4))
    assert feature_spec.numeric_fields(spec) == [("item_ctr", 1), ("item_vec", 3), ("user_len", 1)]
    assert feature_spec.numeric_names(spec) == ["item_ctr", "item_vec", "user_len"]
    assert [feature_spec.numeric_width(e) for e in features[1:4]] == [1, 3, 1]
    assert feature_spec.parse_features(spec)["item_vec"] == tf.io.FixedLenFeature([3], tf.float32)
    assert feature_spec.parse_block_features(spec)["item_vec"] == tf.io.RaggedFeature(
        tf.float32, row_splits_dtype=tf.int64
    )
    assert feature_spec.input_signature(spec)["item_vec"] == tf.TensorSpec([None, 3], tf.float32, name="item_vec")
    assert feature_spec.input_signature(spec)["item_ctr"] == tf.TensorSpec([None], tf.float32, name="item_ctr")


def test_a_spec_extending_another_records_its_lineage_and_a_malformed_one_is_refused():
    vocab = feature_spec.vocabulary(size=5, num_tokens=3, min_count=1, path="vocab/item_id")
    parent = feature_spec.new_spec([feature_spec.label()], {"item_id": vocab}, compression="NONE")
    child = feature_spec.new_spec(
        [feature_spec.label()],
        {"item_id": {**vocab, "size": 7, "num_tokens": 5}},
        compression="NONE",
        lineage=feature_spec.extended_lineage(parent),
    )
    assert child["lineage"] == {
        "parent": parent["spec_hash"],
        "ancestors": [parent["spec_hash"]],
        "extends": {"item_id": 5},
    }
    grandchild = feature_spec.new_spec(
        [feature_spec.label()], child["vocabularies"], compression="GZIP", lineage=feature_spec.extended_lineage(child)
    )
    assert grandchild["lineage"]["ancestors"] == [child["spec_hash"], parent["spec_hash"]]
    assert feature_spec.descends_from(grandchild, parent["spec_hash"])
    assert not feature_spec.descends_from(parent, child["spec_hash"])
    feature_spec.validate_spec(grandchild)
    # The lineage is hashed: the same content without it is another spec.
    assert feature_spec.compute_spec_hash({**child, "lineage": None}) != child["spec_hash"]
    for bad in ({"parent": "x"}, {**child["lineage"], "ancestors": ["y"]}, {**child["lineage"], "extends": {"a": 0}}):
        broken = {**child, "lineage": bad}
        broken["spec_hash"] = feature_spec.compute_spec_hash(broken)
        with pytest.raises(feature_spec.SpecError, match="lineage must be"):
            feature_spec.validate_spec(broken)
