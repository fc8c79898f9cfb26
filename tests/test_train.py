"""jobs/train.py end to end on a tiny SAMPLES dir (tests/tf_samples.py) with a learnable signal."""

import json
import logging
import os
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from feature_spec import load_spec
from jobs.train import main
from pipelines.training import metrics as offline_metrics
from pipelines.training.dataset import Samples, make_dataset
from tests.tf_samples import GENRES, write_samples

MODEL = "emb_mlp"
EMBEDDING_DIM = 8
FAST = [
    "--set",
    "batch_size=64",
    "--set",
    "eval_batch_size=128",
    "--set",
    "shuffle_buffer=256",
    "--set",
    "params.hidden_units=[16]",
    "--set",
    f"params.embedding_dim={EMBEDDING_DIM}",
    "--set",
    "params.learning_rate=0.01",
    "--set",
    "verbose=0",
]


def _run(samples, output, *extra):
    return main(["--samples", str(samples), "--model", MODEL, "--output", str(output), *FAST, *extra])


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "samples"
    spec, rows = write_samples(path, sizes={"train": 480, "valid": 160, "test": 160}, seed=1)
    return str(path), spec, rows


@pytest.fixture(scope="module")
def finished_run(samples, tmp_path_factory):
    path, _, _ = samples
    run = tmp_path_factory.mktemp("train") / "run"
    assert _run(path, run, "--epochs", "2") == 0
    with open(run / "run.json") as fh:
        return run, json.load(fh)


@pytest.mark.slow
def test_all_outputs_exist_with_exact_columns(samples, finished_run):
    _, spec, rows = samples
    run, summary = finished_run
    for name in ("metrics.parquet", "predictions", "embeddings", "model", "run.json", "tensorboard", "checkpoints"):
        assert (run / name).exists(), name
    assert not [p for p in os.listdir(run) if p.startswith(".staging")]

    assert summary["model"] == MODEL and summary["spec_hash"] == spec["spec_hash"]
    assert set(summary["versions"]) >= {"tensorflow", "keras", "numpy", "python"}
    assert summary["versions"]["tensorflow"] == tf.__version__
    assert {"train", "evaluate", "export", "total"} <= set(summary["timings"])
    assert summary["train_examples_per_second"] > 0 and summary["train_examples"] == 2 * 480
    assert summary["config"]["params"]["embedding_dim"] == EMBEDDING_DIM
    assert summary["epochs_completed"] == 2 and summary["best_epoch"] in (1, 2)
    assert summary["metrics"]["test"]["auc"] > 0.7  # the signal was learned

    m = pd.read_parquet(run / "metrics.parquet")
    assert list(m.columns) == ["run_id", "model", "split", "epoch", "metric", "value"]
    assert not m.duplicated(["split", "epoch", "metric"]).any()
    per_epoch = m[m.metric.isin(["loss", "keras_auc"])]
    assert sorted(per_epoch.groupby(["split", "epoch"]).size().index.tolist()) == [
        ("train", 1),
        ("train", 2),
        ("valid", 1),
        ("valid", 2),
    ]
    for split in ("test", "valid"):
        final = m[(m.split == split) & m.metric.isin(offline_metrics.METRIC_NAMES)]
        assert sorted(final.metric) == sorted(offline_metrics.METRIC_NAMES)
        assert (final.epoch == summary["best_epoch"]).all()

    p = pd.read_parquet(run / "predictions")
    assert list(p.columns) == ["split", "user_id", "item_id", "ts", "label", "score", "p_click"]
    for split in ("valid", "test"):
        got = p[p.split == split].sort_values("ts").reset_index(drop=True)
        want = rows[split].sort_values("ts").reset_index(drop=True)
        assert got.ts.tolist() == want.ts.tolist()
        assert got.label.tolist() == want.label.tolist()
        assert got.user_id.tolist() == want.user_id.tolist() and got.item_id.tolist() == want.item_id.tolist()
        np.testing.assert_array_equal(got.p_click.to_numpy(), want.p_click.to_numpy(dtype=np.float32))
        assert got.score.between(0, 1).all()
        # the final metrics are the exact ones of these predictions
        exact = offline_metrics.evaluate(got.label, got.score, users=got.user_id)
        final = m[(m.split == split)].set_index("metric").value
        for name, value in exact.items():
            assert final[name] == pytest.approx(value, rel=1e-9), (split, name)
            assert summary["metrics"][split][name] == pytest.approx(value, rel=1e-9)


@pytest.mark.slow
def test_embeddings_carry_the_vocabulary_tokens(samples, finished_run):
    path, spec, written = samples
    run, _ = finished_run
    e = pd.read_parquet(run / "embeddings")
    assert list(e.columns) == ["feature", "index", "token", "vector"]
    assert set(e.feature) == {"user_id", "item_id", "genre", "item_ctr_bucket"}
    for table in ("user_id", "item_id", "genre"):
        rows = e[e.feature == table].set_index("index")
        assert len(rows) == spec["vocabularies"][table]["size"]
        assert rows.token[0] == "<PAD>" and rows.token[1] == "<OOV>"
        vocab = pd.read_parquet(os.path.join(path, "vocab", table))
        for index, token in zip(vocab["index"], vocab["token"]):
            assert rows.token[index] == token
    item = e[(e.feature == "item_id") & (e.token == "i3")]
    assert len(item) == 1 and len(item.vector.iloc[0]) == EMBEDDING_DIM
    buckets = e[e.feature == "item_ctr_bucket"].sort_values("index")
    assert buckets.token.tolist() == ["<PAD>", "bucket_1", "bucket_2", "bucket_3"]
    # the item table also names each item's genres, as the train samples give them (item_genres)
    items = pd.read_parquet(run / "embeddings" / "item_id.parquet").set_index("index")
    assert list(items.columns) == ["feature", "token", "vector", "genres"]
    assert items.genres[0] is None and items.genres[1] is None  # <PAD>, <OOV>: no item
    train_items = set(written["train"].item_idx) - {1}
    assert {i for i in items.index if items.genres[i] is not None} == train_items
    for index in train_items:
        genres = list(items.genres[index])
        assert genres and set(genres) <= set(GENRES) and len(genres) == len(set(genres)), (index, genres)


@pytest.mark.slow
def test_saved_model_scores_equal_the_predictions(samples, finished_run):
    path, _, _ = samples
    run, _ = finished_run
    spec = load_spec(path)
    with open(run / "model" / "assets.extra" / "spec_hash") as fh:
        assert fh.read().strip() == spec["spec_hash"]
    serve = tf.saved_model.load(str(run / "model")).signatures["serving_default"]
    predictions = pd.read_parquet(run / "predictions" / "test.parquet").set_index("ts").score
    for batch_size in (128, 50):  # the job's eval batch size: bit-exact; another one: equal up to float32 rounding
        ts, scores = [], []
        for features, _, meta in make_dataset(Samples.of(path, spec), "test", batch_size, with_metadata=True):
            scores.append(serve(**features)["score"].numpy()[:, 0])
            ts.append(meta["ts"].numpy())
        scores = pd.Series(np.concatenate(scores), index=np.concatenate(ts))
        assert len(scores) == len(predictions)
        expected = predictions.loc[scores.index].to_numpy()
        if batch_size == 128:
            np.testing.assert_array_equal(scores.to_numpy(), expected)
        else:
            np.testing.assert_allclose(scores.to_numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_spec_hash_change_under_a_run_is_refused(finished_run, tmp_path, capsys):
    run, summary = finished_run
    changed = tmp_path / "samples_v2"
    spec2, _ = write_samples(changed, sizes={"train": 40, "valid": 20, "test": 20}, seed=2, extra_feature=True)
    assert spec2["spec_hash"] != summary["spec_hash"]
    before = (run / "run.json").stat().st_mtime_ns
    assert _run(changed, run, "--epochs", "3") == 3
    err = capsys.readouterr().err
    assert "spec hash" in err and spec2["spec_hash"] in err and summary["spec_hash"] in err
    assert (run / "run.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_resume_after_a_crash_starts_at_the_next_epoch(samples, tmp_path, caplog):
    path, _, _ = samples
    run = tmp_path / "run"
    caplog.set_level(logging.INFO)
    # epoch 1 is checkpointed, then the job "crashes"
    assert (
        _run(path, run, "--epochs", "3", "--set", "debug.crash_after_epoch=1", "--set", "early_stopping.patience=5")
        == 4
    )
    with open(run / "checkpoints" / "state.json") as fh:
        state = json.load(fh)
    assert state["epoch"] == 1 and [h["epoch"] for h in state["history"]] == [1]
    assert not (run / "run.json").exists()
    caplog.clear()
    assert _run(path, run, "--epochs", "3", "--set", "early_stopping.patience=5") == 0
    text = caplog.text
    assert "resuming" in text and "checkpoint of epoch 1" in text
    assert "epoch 2/3" in text and "epoch 3/3" in text and "epoch 1/3" not in text
    with open(run / "run.json") as fh:
        summary = json.load(fh)
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_completed"] == 3
    assert summary["train_examples"] == 2 * 480  # only epochs 2 and 3 ran now
    m = pd.read_parquet(run / "metrics.parquet")
    assert sorted(m[(m.split == "train") & (m.metric == "loss")].epoch) == [1, 2, 3]
    assert sorted(os.listdir(run / "checkpoints")) == [
        "best.weights.h5",
        "epoch-0002.weights.h5",
        "epoch-0003.weights.h5",
        "state.json",
    ]


@pytest.mark.slow
def test_weights_checkpoint_restores_the_optimizer_state(samples, tmp_path):
    import keras

    from models import build_model, compile_model
    from pipelines.training.run_state import build_optimizers as _build_optimizers
    from pipelines.training.run_state import save_weights as _save_weights

    path, spec, _ = samples
    params = {"hidden_units": [8], "embedding_dim": 4, "seed": 0}
    ds = make_dataset(Samples.of(path, spec), "train", 64)
    model = build_model(MODEL, spec, params)
    compile_model(model, params)
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    _save_weights(model, str(tmp_path / "w.weights.h5"))

    keras.utils.set_random_seed(1)
    again = build_model(MODEL, spec, params)
    compile_model(again, params)
    _build_optimizers(again)
    again.load_weights(str(tmp_path / "w.weights.h5"))
    assert int(again.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) > 0
    for a, b in zip(model.optimizer.variables, again.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_truncated_shard_is_named_and_exits_2(tmp_path, capsys, split):
    path = tmp_path / "samples"
    write_samples(path, sizes={"train": 200, "valid": 60, "test": 60}, seed=3)
    shard = sorted((path / split).glob("part-*"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert _run(path, tmp_path / "run", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert str(shard) in err and "truncated" in err
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.slow
def test_resume_compares_params_with_their_defaults_filled_in(samples, tmp_path, capsys):
    path, _, _ = samples
    run = tmp_path / "run"
    assert _run(path, run, "--epochs", "2", "--set", "debug.crash_after_epoch=1") == 4
    state_path = run / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text())
    # as runs written before conf/train.yaml held only overrides: every default spelled out
    state["params"] = {
        "embedding_dim": EMBEDDING_DIM,
        "hidden_units": [16],
        "dropout": 0.0,
        "l2": 0.0,
        "learning_rate": 0.01,
        "deep_optimizer": "adagrad",
        "ftrl_learning_rate": 0.05,
        "residual": False,
        "cross_layers": 3,
        "crossed_features": [],
        "hash_buckets": 100000,
        "seed": 42,
    }
    state_path.write_text(json.dumps(state))
    assert _run(path, run, "--epochs", "2", "--set", "debug.crash_after_epoch=2") == 4  # resumed: epoch 2 ran
    assert json.loads(state_path.read_text())["epoch"] == 2
    capsys.readouterr()
    assert _run(path, run, "--epochs", "3", "--set", "params.dropout=0.5") == 3
    assert "was trained with params" in capsys.readouterr().err


def test_a_typo_in_params_is_a_config_error(samples, tmp_path, capsys):
    path, _, _ = samples
    assert _run(path, tmp_path / "run", "--set", "params.embeding_dim=4") == 2
    err = capsys.readouterr().err
    assert "config error" in err and "embeding_dim" in err
    assert not (tmp_path / "run").exists()


def test_a_param_the_model_does_not_read_is_a_config_error_naming_what_it_reads(samples, tmp_path, capsys):
    path, _, _ = samples
    run = tmp_path / "run"
    args = ["--samples", path, "--model", "deepfm", "--output", str(run), "--set", "params.num_heads=4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        "config error: params.num_heads: deepfm does not read it (dfn does); deepfm takes: activation, dropout, "
        "embedding_dim, hidden_units, jit_compile, l2, learning_rate, seed\n"
    ) in err
    assert not run.exists()  # before RUN is touched
    # Adagrad's rate is its own parameter, read by the models that train with it
    assert main([*args[:-1], "params.adagrad_learning_rate=0.1"]) == 2
    assert "params.adagrad_learning_rate: deepfm does not read it (wide_deep, dfn do)" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.slow
def test_a_vector_numeric_trains_exports_and_serves(tmp_path):
    """Samples with a numeric vector (item_vec, [3], block layout): the job trains dcn on them and the
    exported SavedModel takes the vector as [None, 3] and scores exactly the predictions."""
    path = tmp_path / "samples"
    spec, _ = write_samples(
        path, sizes={"train": 200, "valid": 60, "test": 60}, seed=4, rows_per_record=8, vector_feature=True
    )
    run = tmp_path / "run"
    assert main(["--samples", str(path), "--model", "dcn", "--output", str(run), "--epochs", "1", *FAST]) == 0
    serve = tf.saved_model.load(str(run / "model")).signatures["serving_default"]
    assert serve.structured_input_signature[1]["item_vec"].shape.as_list() == [None, 3]
    predictions = pd.read_parquet(run / "predictions" / "test.parquet").set_index("ts").score
    ts, scores = [], []
    for features, _, meta in make_dataset(Samples.of(str(path), spec), "test", 128, with_metadata=True):
        scores.append(serve(**features)["score"].numpy()[:, 0])
        ts.append(meta["ts"].numpy())
    ts = np.concatenate(ts)
    np.testing.assert_array_equal(np.concatenate(scores), predictions.loc[ts].to_numpy())


@pytest.mark.slow
def test_progress_lines_within_and_after_each_epoch(samples, tmp_path, caplog, monkeypatch):
    path, _, _ = samples
    monkeypatch.setattr("pipelines.training.epochs.PROGRESS_SECONDS", 0.0)  # a line after every step
    caplog.set_level(logging.INFO, logger="pipelines.training.train")
    # one batch per call into TensorFlow, so a line after each batch (with 8 per call: one after each call)
    one_per_call = ("--set", "steps_per_execution=1")
    assert _run(path, tmp_path / "run", "--epochs", "2", "--set", "early_stopping.patience=5", *one_per_call) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.training.train"]
    steps = -(-480 // 64)
    within = [line for line in lines if re.match(r"epoch 1/2: step \d+/8 \(\d+%\), \d+ examples/s, ", line)]
    assert len(within) == steps and within[-1].startswith(f"epoch 1/2: step {steps}/{steps} (100%)")
    assert "about 0s to the epoch's validation" in within[-1]
    ends = [line for line in lines if re.match(r"epoch \d/2: train loss", line)]
    assert len(ends) == 2 and "examples/s | ETA " in ends[0] and "for the 1 epoch(s) left" in ends[0]
    assert ends[1].endswith("| the last epoch")


def test_the_progress_bar_of_the_distributed_loop(capsys):
    from pipelines.training.run_state import EpochLog, Progress, duration

    log = EpochLog(Progress(), epochs=3, batch_size=10, max_examples=None, steps_per_epoch=4, progress_bar=True)
    log.on_epoch_begin(0)
    for step in range(4):
        log.on_train_batch_end(step)
    assert "4/4" in capsys.readouterr().out
    assert [duration(s) for s in (4.4, 65, 3600 + 125, 0)] == ["4s", "1m05s", "1h02m", "0s"]


@pytest.mark.slow
@pytest.mark.parametrize("per_call, max_steps", [(3, None), (4, 6)], ids=["short-last-call", "max-steps"])
def test_batches_per_call_change_neither_the_training_nor_the_steps_counted(samples, tmp_path, per_call, max_steps):
    """steps_per_execution runs several batches per call into TensorFlow: the same batches, in the same order,
    train the same weights as one per call. 480 rows in batches of 64 are 8 batches an epoch, so 3 per call
    ends each epoch with a call of 2 (which Keras reports as 3); with max_steps_per_epoch 6, 4 per call
    becomes 2, since a call of 4 would run past the epoch's 6 batches."""
    path, _, _ = samples
    extra = ["--epochs", "2", "--set", "input.deterministic=true"]
    if max_steps:
        extra += ["--set", f"max_steps_per_epoch={max_steps}"]
    runs = {}
    for n in (1, per_call):
        run = tmp_path / f"run{n}"
        assert _run(path, run, *extra, "--set", f"steps_per_execution={n}") == 0
        runs[n] = (
            json.loads((run / "run.json").read_text()),
            pd.read_parquet(run / "predictions" / "test.parquet").sort_values("ts").score.to_numpy(),
        )
    steps = max_steps or 8
    for summary, _ in runs.values():
        assert [e["steps"] for e in summary["history"]] == [steps, steps]
        assert summary["train_examples"] == 2 * min(steps * 64, 480)
    np.testing.assert_allclose(runs[per_call][1], runs[1][1], rtol=1e-6, atol=1e-7)
