"""pipelines.training.dataset on a tiny SAMPLES dir written by tests/tf_samples.py."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from feature_spec import load_spec, model_inputs
from pipelines.training.dataset import Samples, SpecHashMismatch, check_run_spec_hash, make_dataset, open_samples
from tests.tf_samples import write_samples


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("dataset") / "samples"
    spec, rows = write_samples(path, sizes={"train": 50, "valid": 23, "test": 17}, seed=3)
    return str(path), spec, rows


def _collect(ds):
    out = {}
    for features, label, meta in ds:
        for name, tensor in {**features, **meta, "_label_f": label}.items():
            out.setdefault(name, []).append(tensor.numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def test_spec_loads_and_files_are_listed(samples):
    path, spec, _ = samples
    assert load_spec(path)["spec_hash"] == spec["spec_hash"]
    assert [os.path.basename(f) for f in Samples.of(path, spec).files("train")] == [
        "part-00000.tfrecord.gz",
        "part-00001.tfrecord.gz",
    ]


@pytest.mark.parametrize("split", ["valid", "test"])
def test_parse_gives_exactly_the_values_written(samples, split):
    path, spec, rows = samples
    got = _collect(make_dataset(Samples.of(path, spec), split, batch_size=8, with_metadata=True))
    expected = rows[split].set_index("ts")
    assert len(got["ts"]) == len(expected)
    order = np.argsort(got["ts"])
    assert list(got["ts"][order]) == sorted(expected.index)
    exp = expected.loc[got["ts"][order]]
    for entry in spec["features"]:
        name = entry["name"]
        if name == "ts":
            continue
        values = got[name][order]
        if entry["dtype"] == "string":
            assert [v.decode() for v in values] == list(exp[name]), name
        elif name == "p_click":  # metadata null -> NaN default
            want = exp[name].to_numpy(dtype=np.float32)  # None was written as "absent"
            np.testing.assert_array_equal(values, want)
            assert np.isnan(values).sum() == exp[name].isna().sum() > 0
        elif entry["shape"]:
            np.testing.assert_array_equal(values, np.stack(exp[name].to_numpy()), err_msg=name)
        else:
            np.testing.assert_array_equal(values, exp[name].to_numpy().astype(values.dtype), err_msg=name)
    np.testing.assert_array_equal(got["_label_f"][:, 0], exp["label"].to_numpy().astype(np.float32))


def test_train_batches_have_the_spec_shapes(samples):
    path, spec, rows = samples
    ds = make_dataset(Samples.of(path, spec), "train", batch_size=16, training=True, shuffle_buffer=64, seed=1)
    total, labels = 0, 0.0
    for features, label in ds:
        assert set(features) == {e["name"] for e in model_inputs(spec)}
        for entry in model_inputs(spec):
            t = features[entry["name"]]
            assert t.dtype == tf.as_dtype(entry["dtype"])
            assert t.shape[1:] == tuple(entry["shape"]), entry["name"]
        assert label.dtype == tf.float32 and label.shape[1:] == (1,)
        total += label.shape[0]
        labels += float(tf.reduce_sum(label))
    assert total == len(rows["train"]) and labels == rows["train"]["label"].sum()


def test_training_shuffle_is_seeded_when_deterministic(samples):
    path, spec, rows = samples

    def users(seed):
        ds = make_dataset(
            Samples.of(path, spec),
            "train",
            batch_size=50,
            training=True,
            shuffle_buffer=50,
            seed=seed,
            deterministic=True,
        )
        return np.concatenate([f["user_idx"].numpy() for f, _ in ds]).tolist()

    first = users(5)
    assert first == users(5)
    assert sorted(first) == sorted(rows["train"]["user_idx"]) and first != list(rows["train"]["user_idx"])


def test_spec_hash_mismatch_is_refused_with_both_hashes(samples, tmp_path):
    path, spec, _ = samples
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    check_run_spec_hash(str(run), spec["spec_hash"])  # nothing recorded yet: fine
    (run / "checkpoints" / "state.json").write_text(json.dumps({"spec_hash": spec["spec_hash"], "epoch": 1}))
    assert open_samples(path, str(run)).spec_hash == spec["spec_hash"]
    old = "0" * 64
    (run / "checkpoints" / "state.json").write_text(json.dumps({"spec_hash": old, "epoch": 1}))
    with pytest.raises(SpecHashMismatch) as err:
        open_samples(path, str(run))
    message = str(err.value)
    assert spec["spec_hash"] in message and old in message and "state.json" in message


def test_missing_split_files_are_a_clear_error(samples, tmp_path):
    path, spec, _ = samples
    broken = dict(spec, splits={**spec["splits"], "test": {"pattern": "nope/part-*.tfrecord.gz"}})
    with pytest.raises(FileNotFoundError, match="nope"):
        make_dataset(Samples.of(path, broken), "test", batch_size=4)
    assert math.isfinite(spec["splits"]["train"]["label_rate"])


# ---------------------------------------------------------------- block layout (rows_per_record > 1)
SIZES = {"train": 50, "valid": 23, "test": 17}  # shards of 25, 12, 9...: every shard ends with a short block
BLOCK = 8


@pytest.fixture(scope="module")
def block_samples(tmp_path_factory):
    """The same rows as `samples`, eight per record."""
    path = tmp_path_factory.mktemp("dataset_blocks") / "samples"
    spec, rows = write_samples(path, sizes=SIZES, seed=3, rows_per_record=BLOCK)
    return str(path), spec, rows


def _by_ts(columns):
    order = np.argsort(columns["ts"])
    return {name: values[order] for name, values in columns.items()}


def _batch_sizes(ds):
    return [int(element[1].shape[0]) for element in ds]


@pytest.mark.parametrize("batch_size", [3, 5, 13, 64])
@pytest.mark.parametrize("split", ["train", "test"])
def test_blocks_parse_to_exactly_the_rows_of_one_example_per_record(samples, block_samples, split, batch_size):
    path, spec, rows = samples
    block_path, block_spec, _ = block_samples
    expected = _by_ts(_collect(make_dataset(Samples.of(path, spec), split, batch_size=batch_size, with_metadata=True)))
    ds = make_dataset(Samples.of(block_path, block_spec), split, batch_size=batch_size, with_metadata=True)
    got = _by_ts(_collect(ds))
    assert set(got) == set(expected)
    for name in expected:  # NaN (a null p_click) equals NaN here
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        assert got[name].dtype == expected[name].dtype
    assert np.isnan(got["p_click"]).any()
    batches = -(-SIZES[split] // batch_size)
    assert int(ds.cardinality()) == batches
    assert _batch_sizes(ds) == [batch_size] * (batches - 1) + [SIZES[split] - batch_size * (batches - 1)]


def test_block_eval_order_is_deterministic(block_samples):
    path, spec, rows = block_samples

    def ts():
        return _collect(make_dataset(Samples.of(path, spec), "valid", batch_size=5, with_metadata=True))["ts"].tolist()

    first = ts()
    assert first == ts() and sorted(first) == sorted(rows["valid"]["ts"])


def test_block_drop_remainder_gives_only_full_batches(block_samples):
    path, spec, _ = block_samples
    ds = make_dataset(Samples.of(path, spec), "train", batch_size=12, drop_remainder=True)
    assert int(ds.cardinality()) == SIZES["train"] // 12
    assert _batch_sizes(ds) == [12] * (SIZES["train"] // 12)


def test_block_training_sees_every_row_once_per_epoch_in_a_new_order(block_samples):
    path, spec, rows = block_samples
    ds = make_dataset(
        Samples.of(path, spec), "train", batch_size=7, training=True, shuffle_buffer=24, seed=4, with_metadata=True
    )
    epochs = [_collect(ds)["ts"].tolist() for _ in range(2)]
    file_order = rows["train"]["ts"].tolist()
    for epoch in epochs:
        assert sorted(epoch) == sorted(file_order)
        assert epoch != file_order
    assert epochs[0] != epochs[1]
    # the training order's parallel map may hand the short batch out before a full one
    assert sorted(_batch_sizes(ds), reverse=True) == [7] * 7 + [1]


def test_block_training_permutes_rows_inside_each_batch(block_samples):
    """Without any block shuffle the rows of a block must still not stay neighbours."""
    path, spec, rows = block_samples
    block_of = {ts: k // BLOCK for k, ts in enumerate(rows["train"]["ts"])}  # every shard holds 25 rows
    ds = make_dataset(
        Samples.of(path, spec), "train", batch_size=50, training=True, shuffle_buffer=0, seed=2, with_metadata=True
    )
    blocks = [block_of[ts] for ts in _collect(ds)["ts"].tolist()]
    neighbours = sum(a == b for a, b in zip(blocks, blocks[1:]))
    assert neighbours < (BLOCK - 1) * len(set(blocks)) / 2  # kept together, they would be ~43 of 49


def test_block_training_shuffle_is_seeded_when_deterministic(block_samples):
    path, spec, _ = block_samples

    def ts(seed):
        ds = make_dataset(
            Samples.of(path, spec),
            "train",
            batch_size=16,
            training=True,
            shuffle_buffer=32,
            seed=seed,
            deterministic=True,
            with_metadata=True,
        )
        return _collect(ds)["ts"].tolist()

    assert ts(5) == ts(5) != ts(6)


def test_corrupt_block_shard_is_named(block_samples, tmp_path):
    import shutil

    from pipelines.training.dataset import CorruptShardError, naming_corrupt_shards

    path, spec, _ = block_samples
    copy = tmp_path / "samples"
    shutil.copytree(path, copy)
    shard = copy / "test" / "part-00001.tfrecord.gz"
    shard.write_bytes(shard.read_bytes()[:-20])
    with pytest.raises(CorruptShardError, match="part-00001"):
        with naming_corrupt_shards(Samples.of(str(copy), spec), ("test",)):
            _collect(make_dataset(Samples.of(str(copy), spec), "test", batch_size=4, with_metadata=True))


# ---------------------------------------------------------------- rows_per_record in the spec
def _hash_before_rows_per_record(spec):
    """The spec hash as computed before `rows_per_record` existed."""
    import hashlib

    payload = {key: spec.get(key) for key in ("features", "vocabularies", "compression")}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_spec_without_rows_per_record_keeps_its_hash(samples, block_samples):
    from feature_spec import compute_spec_hash, rows_per_record

    _, spec, _ = samples
    assert "rows_per_record" not in spec and rows_per_record(spec) == 1
    assert compute_spec_hash(spec) == _hash_before_rows_per_record(spec) == spec["spec_hash"]
    assert compute_spec_hash(dict(spec, rows_per_record=1)) == spec["spec_hash"]  # the same layout
    _, block_spec, _ = block_samples
    assert rows_per_record(block_spec) == BLOCK
    assert block_spec["spec_hash"] not in (spec["spec_hash"], _hash_before_rows_per_record(block_spec))
    assert compute_spec_hash(dict(block_spec, rows_per_record=16)) != block_spec["spec_hash"]


@pytest.mark.parametrize("value", [0, -8, 2.5, "8", True, None])
def test_rows_per_record_must_be_a_positive_integer(samples, value):
    from feature_spec import SpecError, compute_spec_hash, validate_spec

    _, spec, _ = samples
    bad = {key: value for key, value in spec.items() if key != "spec_hash"}
    bad["rows_per_record"] = value
    bad["spec_hash"] = compute_spec_hash(bad)
    with pytest.raises(SpecError, match="rows_per_record"):
        validate_spec(bad)


def test_blocks_refuse_a_non_null_metadata_default(block_samples):
    from feature_spec import SpecError, compute_spec_hash, validate_spec

    _, spec, _ = block_samples
    features = [dict(e, default=0.5) if e["name"] == "p_click" else e for e in spec["features"]]
    bad = dict(spec, features=features)
    bad["spec_hash"] = compute_spec_hash(bad)
    with pytest.raises(SpecError, match="p_click"):
        validate_spec(bad)


# ---------------------------------------------------------------- numeric vectors ([d] float32)
VEC_ROWS = 23  # with blocks of 4: five whole blocks and a short one of 3 rows


def _vector_spec(rows_per_record):
    import feature_spec

    features = [
        feature_spec.categorical("item_idx", vocabulary="item_id", vocab_size=12),
        feature_spec.numeric("item_vec", normalization={"log1p": False, "mean": [0.0] * 3, "std": [1.0] * 3}, length=3),
        feature_spec.numeric("item_ctr", normalization={"log1p": False, "mean": 0.0, "std": 1.0}),
        feature_spec.numeric("one_vec", normalization={"log1p": False, "mean": [0.0], "std": [1.0]}, length=1),
        feature_spec.label(),
        feature_spec.metadata("ts", "int64"),
    ]
    spec = feature_spec.new_spec(features, {}, compression="GZIP", rows_per_record=rows_per_record)
    spec["splits"] = {
        "train": feature_spec.split(pattern="train/part-*.tfrecord.gz", num_examples=VEC_ROWS, label_rate=0.5)
    }
    return feature_spec.validate_spec(spec)


def _vector_table():
    import pyarrow as pa

    rng = np.random.default_rng(5)
    vec = rng.normal(size=(VEC_ROWS, 3)).astype(np.float32)
    vec[0] = [0.1, -1e-8, 3.4028235e38]  # values float32 must keep exactly
    vec[1] = 0.0  # a null vector, as the Spark side writes it
    return pa.table(
        {
            "item_idx": pa.array(rng.integers(0, 12, VEC_ROWS), pa.int64()),
            "item_vec": pa.array(list(vec), pa.list_(pa.float32())),
            "item_ctr": pa.array(rng.normal(size=VEC_ROWS).astype(np.float32), pa.float32()),
            "one_vec": pa.array(
                [[float(v)] for v in rng.normal(size=VEC_ROWS).astype(np.float32)], pa.list_(pa.float32())
            ),
            "label": pa.array(np.arange(VEC_ROWS) % 2, pa.int64()),
            "ts": pa.array(1_700_000_000 + np.arange(VEC_ROWS), pa.int64()),
            "split": pa.array(["train"] * VEC_ROWS, pa.string()),
        }
    )


@pytest.mark.parametrize("rows_per_record", [1, 4])
def test_vector_numeric_round_trips_through_the_writer_and_record_parser(tmp_path, rows_per_record):
    """A float32 [3] (and [1]) feature written by the project's own writer (frame_batch in
    write_partition_shards) parses back to exactly the values written, in both layouts."""
    from pipelines.samples.tfrecord import write_partition_shards
    from pipelines.training.dataset import record_parser

    spec = _vector_spec(rows_per_record)
    table = _vector_table()
    features = [(e["name"], e["dtype"]) for e in spec["features"]]
    batches = iter(table.to_batches(max_chunksize=7))  # blocks carry rows over from one Arrow batch to the next
    (shard,) = [
        row
        for out in write_partition_shards(
            batches, features, str(tmp_path), compression="gzip", rows_per_record=rows_per_record
        )
        for row in out.to_pylist()
    ]
    assert shard["rows"] == VEC_ROWS
    records = [r for r in tf.data.TFRecordDataset(shard["path"], compression_type="GZIP").batch(100)]
    assert len(records) == 1 and int(records[0].shape[0]) == -(-VEC_ROWS // rows_per_record)
    if rows_per_record > 1:  # a block holds n * 3 values of item_vec, n of item_ctr
        raw = tf.io.parse_example(records[0], {"item_vec": tf.io.RaggedFeature(tf.float32)})["item_vec"]
        assert raw.row_lengths().numpy().tolist() == [4 * 3] * 5 + [3 * 3]

    parsed = record_parser(spec)(records[0])
    assert parsed["item_vec"].shape == (VEC_ROWS, 3) and parsed["item_vec"].dtype == tf.float32
    assert parsed["one_vec"].shape == (VEC_ROWS, 1) and parsed["item_ctr"].shape == (VEC_ROWS,)
    order = np.argsort(parsed["ts"].numpy())  # blocks are shuffled before they are cut
    np.testing.assert_array_equal(parsed["ts"].numpy()[order], table.column("ts").to_numpy())
    want_vec = np.stack(table.column("item_vec").to_numpy(zero_copy_only=False)).astype(np.float32)
    np.testing.assert_array_equal(parsed["item_vec"].numpy()[order], want_vec)
    np.testing.assert_array_equal(parsed["item_vec"].numpy()[order][0], np.float32([0.1, -1e-8, 3.4028235e38]))
    np.testing.assert_array_equal(parsed["item_vec"].numpy()[order][1], np.zeros(3, np.float32))
    np.testing.assert_array_equal(
        parsed["one_vec"].numpy()[order], np.stack(table.column("one_vec").to_numpy(zero_copy_only=False))
    )
    np.testing.assert_array_equal(parsed["item_ctr"].numpy()[order], table.column("item_ctr").to_numpy())
    np.testing.assert_array_equal(parsed["item_idx"].numpy()[order], table.column("item_idx").to_numpy())

    # and through make_dataset, batches cut across blocks
    (tmp_path / "feature_spec.json").write_text(json.dumps(spec))
    got = {"ts": [], "item_vec": []}
    for features_, _, meta in make_dataset(Samples.of(str(tmp_path), spec), "train", batch_size=5, with_metadata=True):
        assert features_["item_vec"].shape[1:] == (3,)
        got["ts"].append(meta["ts"].numpy())
        got["item_vec"].append(features_["item_vec"].numpy())
    ts, vec = np.concatenate(got["ts"]), np.concatenate(got["item_vec"])
    np.testing.assert_array_equal(vec[np.argsort(ts)], want_vec)


@pytest.mark.parametrize("rows_per_record", [1, 8])
def test_tf_samples_vector_feature_reads_back_exactly(tmp_path, rows_per_record):
    spec, rows = write_samples(
        tmp_path / "samples", sizes=SIZES, seed=3, rows_per_record=rows_per_record, vector_feature=True
    )
    got = _by_ts(
        _collect(make_dataset(Samples.of(str(tmp_path / "samples"), spec), "valid", batch_size=6, with_metadata=True))
    )
    want = rows["valid"].sort_values("ts")
    assert got["item_vec"].shape == (SIZES["valid"], 3) and got["item_vec"].dtype == np.float32
    np.testing.assert_array_equal(got["item_vec"], np.array(want["item_vec"].tolist(), dtype=np.float32))
    # the other columns are those written without the vector
    _, plain = write_samples(tmp_path / "plain", sizes=SIZES, seed=3)
    assert rows["valid"].drop(columns=["item_vec"]).equals(plain["valid"])
