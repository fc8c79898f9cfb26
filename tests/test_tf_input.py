"""pipelines.tf_input on a tiny SAMPLES dir written by tests/tf_samples.py."""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from pipelines.feature_spec import load_spec, model_inputs
from pipelines.tf_input import SpecHashMismatch, check_run_spec_hash, make_dataset, open_samples, split_files
from tests.tf_samples import write_samples


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("tf_input") / "samples"
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
    assert [os.path.basename(f) for f in split_files(path, spec, "train")] == \
        ["part-00000.tfrecord.gz", "part-00001.tfrecord.gz"]


@pytest.mark.parametrize("split", ["valid", "test"])
def test_parse_gives_exactly_the_values_written(samples, split):
    path, spec, rows = samples
    got = _collect(make_dataset(path, spec, split, batch_size=8, with_metadata=True))
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
    ds = make_dataset(path, spec, "train", batch_size=16, training=True, shuffle_buffer=64, seed=1)
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
        ds = make_dataset(path, spec, "train", batch_size=50, training=True, shuffle_buffer=50, seed=seed,
                          deterministic=True)
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
    assert open_samples(path, str(run))["spec_hash"] == spec["spec_hash"]
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
        make_dataset(path, broken, "test", batch_size=4)
    assert math.isfinite(spec["splits"]["train"]["label_rate"])
