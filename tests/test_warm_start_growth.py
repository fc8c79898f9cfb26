"""jobs.train --init-from RUN0 where RUN0 was trained on a spec that the samples' spec extends
(build_samples --fit-only --extend): existing rows keep their weights and optimizer slots, appended rows
start from the OOV bucket their token mapped to, and the model scores as RUN0 did before its first step."""

import copy
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import feature_spec
from jobs.train import main
from models import build_model, compile_model
from models.layers.feature_embedding import FeatureEmbedding
from pipelines.training.growth import row_sources
from pipelines.training.run_state import Checkpoints, build_optimizers, load_weights
from pipelines.training.selection import Samples
from pipelines.training.warm_start import init_source, load_init_weights
from tests.tf_samples import _records, write_samples

FAST = ["--set", "batch_size=64", "--set", "eval_batch_size=128", "--set", "shuffle_buffer=256"]
FAST += ["--set", "params.embedding_dim=8", "--set", "verbose=0"]
APPENDED = 3  # tokens the grown spec appends to the item vocabulary
SLOTS = ("_momentums", "_velocities", "_accumulators", "_linears")  # Adam's, Adagrad's, FTRL's per-variable state


def _grown_spec(spec: dict, appended: list[str]) -> dict:
    """`spec` with `appended` added to its item vocabulary, as --extend writes it."""
    grown = copy.deepcopy(spec)
    grown.pop("splits", None)
    entry = grown["vocabularies"]["item_id"]
    entry["size"] += len(appended)
    entry["num_tokens"] += len(appended)
    for feature in grown["features"]:
        if feature.get("vocabulary") == "item_id":
            feature["vocab_size"] = entry["size"]
    grown["lineage"] = feature_spec.extended_lineage(spec)
    grown["spec_hash"] = feature_spec.compute_spec_hash(grown)
    return grown


def _write_grown(path: str, spec: dict, rows: dict, old_size: int, appended: list[str], old_dir: str) -> dict:
    """The same samples under the grown spec: rows whose item was appended carry its new index."""
    index = {token: old_size + k for k, token in enumerate(appended)}
    splits = {}
    for split, df in rows.items():
        df = df.copy()
        df["item_idx"] = [index.get(t, i) for t, i in zip(df.item_id, df.item_idx)]
        rows[split] = df
        os.makedirs(os.path.join(path, split))
        with tf.io.TFRecordWriter(os.path.join(path, split, "part-00000.tfrecord.gz"), "GZIP") as writer:
            for record in _records(df.to_dict("records"), spec, 1):
                writer.write(record)
        splits[split] = feature_spec.split(
            pattern=f"{split}/part-*.tfrecord.gz", num_examples=len(df), label_rate=float(df.label.mean())
        )
    for name in ("user_id", "genre"):
        os.makedirs(os.path.join(path, "vocab", name))
        table = pq.read_table(os.path.join(old_dir, "vocab", name))
        pq.write_table(table, os.path.join(path, "vocab", name, "part-0.parquet"))
    old_items = pq.read_table(os.path.join(old_dir, "vocab", "item_id")).to_pydict()
    items = {
        "index": old_items["index"] + list(index.values()),
        "token": old_items["token"] + appended,
        "count": old_items["count"] + [1] * len(appended),
    }
    os.makedirs(os.path.join(path, "vocab", "item_id"))
    pq.write_table(pa.table(items), os.path.join(path, "vocab", "item_id", "part-0.parquet"))
    spec = feature_spec.with_splits(spec, splits)
    with open(feature_spec.spec_path(path), "w") as fh:
        fh.write(feature_spec.to_json(spec))
    open(os.path.join(path, "_SUCCESS"), "w").close()
    return spec


@pytest.fixture(scope="module", params=["emb_mlp", "wide_deep"])
def grown_world(request, tmp_path_factory):
    """RUN0 (one epoch) on samples of spec v1, and the same samples under v2, which appends new items."""
    model, root = request.param, tmp_path_factory.mktemp(f"growth-{request.param}")
    old_dir, new_dir, run0 = str(root / "v1"), str(root / "v2"), str(root / "run0")
    spec, rows = write_samples(old_dir, sizes={"train": 480, "valid": 160, "test": 160}, seed=3)
    assert main(["--samples", old_dir, "--model", model, "--output", run0, "--epochs", "1", *FAST]) == 0
    unseen = [t for t in dict.fromkeys(rows["test"].item_id) if t.startswith("new")]
    appended = unseen[:APPENDED]
    assert len(appended) == APPENDED and len(unseen) > APPENDED  # some stay OOV under v2 as well
    old_size = spec["vocabularies"]["item_id"]["size"]
    grown = _write_grown(new_dir, _grown_spec(spec, appended), copy.deepcopy(rows), old_size, appended, old_dir)
    return {"model": model, "run0": run0, "old": (old_dir, spec, rows), "new": (new_dir, grown), "appended": appended}


def _inputs(spec: dict, df) -> dict:
    return {
        e["name"]: np.array(df[e["name"]].tolist(), dtype=np.int64 if e["dtype"] == "int64" else np.float32)
        for e in feature_spec.model_inputs(spec)
    }


def test_before_any_step_the_grown_model_scores_as_run0_did(grown_world, tmp_path):
    model_name, run0 = grown_world["model"], grown_world["run0"]
    old_dir, old_spec, old_rows = grown_world["old"]
    new_dir, new_spec = grown_world["new"]
    with open(os.path.join(run0, "run.json")) as fh:
        params = json.load(fh)["params"]
    checkpoints = Checkpoints(str(tmp_path / "ck"), 1, model_name, params, new_spec["spec_hash"])
    source = init_source(run0, checkpoints, new_spec["spec_hash"], new_dir, Samples.of(new_dir, new_spec))
    new = build_model(model_name, new_spec, params)
    compile_model(new)
    build_optimizers(new)
    record = load_init_weights(new, source)
    assert record["trained_on_spec_hash"] == old_spec["spec_hash"] and record["rows_appended"] == {"item_id": 3}
    old = build_model(model_name, old_spec, params)
    compile_model(old)
    build_optimizers(old)
    load_weights(old, os.path.join(run0, source.weights))

    test = old_rows["test"]
    appended = {t: old_spec["vocabularies"]["item_id"]["size"] + k for k, t in enumerate(grown_world["appended"])}
    grown_test = test.copy()
    grown_test["item_idx"] = [appended.get(t, i) for t, i in zip(test.item_id, test.item_idx)]
    assert (grown_test.item_idx != test.item_idx).sum() > 0
    before = old.predict(_inputs(old_spec, test), verbose=0)
    after = new.predict(_inputs(new_spec, grown_test), verbose=0)
    np.testing.assert_array_equal(after, before)  # new tokens too: each through its old bucket

    # The optimizer state came along: every slot row of the item table, appended rows from their bucket.
    sources = row_sources(old_spec, new_spec, new_dir)["item_id"][1]
    assert sources[: len(sources) - 3].tolist() == list(range(len(sources) - 3))
    assert set(sources[-3:]) == {1}  # one OOV row in v1: every appended token came from it
    old_table, new_table = (_item_table(m) for m in (old, new))
    for (old_opt, _), (new_opt, _) in zip(old.optimizer_groups(), new.optimizer_groups()):
        if not any(v is new_table for v in new_opt._trainable_variables):
            continue
        i, j = old_opt._get_variable_index(old_table), new_opt._get_variable_index(new_table)
        slots = [name for name in SLOTS if hasattr(new_opt, name)]
        assert slots, type(new_opt).__name__
        for old_list, new_list in ((getattr(old_opt, name), getattr(new_opt, name)) for name in slots):
            np.testing.assert_array_equal(new_list[j].numpy(), old_list[i].numpy()[sources])
            assert np.abs(old_list[i].numpy()).sum() > 0  # a slot that moved, not zeros on both sides
        assert int(new_opt.iterations.numpy()) == int(old_opt.iterations.numpy()) > 0


def _item_table(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, FeatureEmbedding):
            return layer.tables["item_id"].embeddings
    raise AssertionError("no FeatureEmbedding")


def test_jobs_train_continues_run0_on_the_grown_spec_and_records_the_lineage(grown_world, tmp_path):
    run0, (new_dir, new_spec) = grown_world["run0"], grown_world["new"]
    _, old_spec, _ = grown_world["old"]
    run = tmp_path / "run1"
    args = ["--samples", new_dir, "--model", grown_world["model"], "--output", str(run), "--epochs", "1", *FAST]
    assert main([*args, "--init-from", run0]) == 0
    with open(run / "run.json") as fh:
        summary = json.load(fh)
    assert summary["spec_hash"] == new_spec["spec_hash"]
    assert summary["init_from"]["trained_on_spec_hash"] == old_spec["spec_hash"]
    assert summary["init_from"]["spec_lineage"] == new_spec["lineage"]
    assert summary["init_from"]["rows_appended"] == {"item_id": APPENDED}


def test_a_spec_that_does_not_descend_from_run0s_is_refused_naming_both(grown_world, tmp_path, capsys):
    run0, (new_dir, new_spec) = grown_world["run0"], grown_world["new"]
    _, old_spec, _ = grown_world["old"]
    orphan = copy.deepcopy(new_spec)
    orphan["lineage"] = {**orphan["lineage"], "parent": "0" * 64, "ancestors": ["0" * 64]}
    orphan["spec_hash"] = feature_spec.compute_spec_hash({k: v for k, v in orphan.items() if k != "splits"})
    with open(feature_spec.spec_path(new_dir), "w") as fh:
        fh.write(feature_spec.to_json(orphan))
    try:
        args = ["--samples", new_dir, "--model", grown_world["model"], "--output", str(tmp_path / "r"), *FAST]
        assert main([*args, "--init-from", run0]) == 3
        err = capsys.readouterr().err
        assert old_spec["spec_hash"] in err and orphan["spec_hash"] in err
        assert not (tmp_path / "r").exists()
    finally:
        with open(feature_spec.spec_path(new_dir), "w") as fh:
            fh.write(feature_spec.to_json(new_spec))


def test_each_appended_row_starts_from_the_bucket_its_token_hashed_to(tmp_path):
    # Old spec with 5 item buckets (tokens from 6), grown by 4 tokens.
    old_entry = feature_spec.vocabulary(size=9, num_tokens=3, min_count=1, path="vocab/item_id", oov_buckets=5)
    new_entry = {**old_entry, "size": 13, "num_tokens": 7}
    tokens = ["i1", "i2", "i3", "n1", "n2", "n3", "n4"]
    os.makedirs(tmp_path / "vocab" / "item_id")
    table = pa.table({"index": list(range(6, 13)), "token": tokens, "count": [5] * 7})
    pq.write_table(table, tmp_path / "vocab" / "item_id" / "p.parquet")
    old = {"vocabularies": {"item_id": old_entry}}
    new = {"vocabularies": {"item_id": new_entry}}
    old_size, sources = row_sources(old, new, str(tmp_path))["item_id"]
    assert old_size == 9
    assert sources[:9].tolist() == list(range(9))
    assert sources[9:].tolist() == [1 + feature_spec.xxhash64(t.encode()) % 5 for t in tokens[3:]]
    assert set(sources[9:].tolist()) <= set(range(1, 6))
