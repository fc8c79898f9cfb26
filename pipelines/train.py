"""Train one CTR model on a SAMPLES directory and write everything under RUN/.

    summary = train(samples_dir, run_dir, config)   # config: conf/train.yaml (+ --conf, --set)

Training: binary cross-entropy, Keras fit with a fixed seed, early stopping on the
valid AUC (patience from config) with the best epoch's weights restored, a
checkpoint after every epoch (weights incl. optimizer state, epoch number,
early-stopping state, history) under RUN/checkpoints. Rerunning into the same RUN
resumes from the last checkpoint at the next epoch (also to train more epochs).

RUN belongs to this job: it is refused (pipelines/publish.py, OutputRefused) when it overlaps
SAMPLES, or when it is not empty and shows no earlier run (RUN/_RUN.json, written at the start,
or the run.json / checkpoints/state.json of runs made before that marker existed).

Outputs (each written under RUN/.staging-*/ and then swapped into place, the old one deleted after):

    RUN/metrics.parquet      run_id, model, split, epoch, metric, value
                             per epoch: split train / valid, metric loss, keras_auc (Keras'
                             streaming AUC), train also seconds, examples_per_second;
                             final: split valid / test, epoch = best epoch, metric auc, logloss,
                             gauc, pr_auc, calibration (exact, from the predictions)
    RUN/predictions/         {valid,test}.parquet: split, user_id, item_id, ts, label, score,
                             + the spec's other metadata columns (e.g. p_click)
    RUN/embeddings/          <table>.parquet: feature, index, token, vector (list<float>)
    RUN/model/               SavedModel, signature serving_default(parsed model inputs) -> {"score"};
                             assets.extra/ holds feature_spec.json and spec_hash
    RUN/run.json             config, model, spec hash, versions, timings, best epoch, metrics
    RUN/tensorboard/         Keras TensorBoard logs
    RUN/checkpoints/         state.json + epoch-NNNN.weights.h5 + best.weights.h5
    RUN/_RUN.json            marks RUN as a run of this job: run_id, created
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import platform
import re
import shutil
import time
import uuid
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import metrics as offline_metrics
from pipelines import publish
from pipelines.feature_spec import features_by_role, model_inputs
from pipelines.tf_input import make_dataset, naming_corrupt_shards, open_samples

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
RUN_MARKER = "_RUN.json"
# Any of these shows that RUN holds an earlier run of this job (the last two: runs older than RUN_MARKER).
RUN_MARKERS = [RUN_MARKER, "run.json", f"checkpoints/{STATE_FILE}"]
STAGING_PREFIX = ".staging-"
BEST_WEIGHTS = "best.weights.h5"
ID_COLUMNS = ("user_id", "item_id", "ts")
METRICS_SCHEMA = pa.schema([("run_id", pa.string()), ("model", pa.string()), ("split", pa.string()),
                            ("epoch", pa.int64()), ("metric", pa.string()), ("value", pa.float64())])
EMBEDDINGS_SCHEMA = pa.schema([("feature", pa.string()), ("index", pa.int64()), ("token", pa.string()),
                               ("vector", pa.list_(pa.float32()))])
ARROW_TYPES = {"int64": pa.int64(), "float32": pa.float32(), "string": pa.string()}


class RunMismatch(ValueError):
    """RUN/checkpoints belong to another model or other parameters."""


class SimulatedCrash(RuntimeError):
    """Raised by debug.crash_after_epoch after the checkpoint of that epoch is written."""


def models_api():
    """(build_model, compile_model, embedding_tables) from `models` (tests may replace this)."""
    from models import build_model, compile_model, embedding_tables

    return build_model, compile_model, embedding_tables


# ---------------------------------------------------------------- small helpers

def _atomic_write_json(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as fh:
        json.dump(_jsonable(payload), fh, indent=2, sort_keys=False, allow_nan=False)
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _save_weights(model, path: str) -> None:
    tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex[:8]}.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, path)


def _build_optimizers(model) -> None:
    """Create optimizer variables now, so that load_weights restores them too."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def model_params(config: dict) -> dict:
    """config.params without nulls (the model's defaults apply), seed defaulting to config.seed."""
    params = {k: copy.deepcopy(v) for k, v in (config.get("params") or {}).items() if v is not None}
    if params.get("seed") is None and config.get("seed") is not None:
        params["seed"] = int(config["seed"])
    return params


def library_versions() -> dict:
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "pyarrow": pa.__version__}


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


# ---------------------------------------------------------------- checkpoints

def load_state(checkpoint_dir: str) -> dict | None:
    path = os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _check_state(state: dict, model_name: str, params: dict, checkpoint_dir: str) -> None:
    if state.get("model") != model_name:
        raise RunMismatch(f"{checkpoint_dir} holds checkpoints of model '{state.get('model')}', not '{model_name}'; "
                          f"train into a new --output or pass --set resume=false to start over")
    saved = json.dumps(state.get("params"), sort_keys=True)
    if saved != json.dumps(_jsonable(params), sort_keys=True):
        raise RunMismatch(f"{checkpoint_dir} was trained with params {saved}, now {json.dumps(params, sort_keys=True)}; "
                          f"train into a new --output or pass --set resume=false to start over")


def _make_callbacks(ctx: dict):
    import keras

    class EpochLog(keras.callbacks.Callback):
        """Times each epoch, counts its train batches, logs one summary line."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()
            self.train_end = None
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps = batch + 1

        def on_test_begin(self, logs=None):
            if self.train_end is None:
                self.train_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            now = time.perf_counter()
            train_seconds = (self.train_end or now) - self.start
            examples = self.steps * ctx["batch_size"]
            if ctx["num_train_examples"] and not ctx["repeat"]:
                examples = min(examples, ctx["num_train_examples"])
            entry = {"epoch": epoch + 1, "seconds": now - self.start, "train_seconds": train_seconds,
                     "steps": self.steps, "examples": examples,
                     "examples_per_second": examples / train_seconds if train_seconds > 0 else None}
            entry.update({k: float(v) for k, v in logs.items() if isinstance(v, (int, float, np.floating))})
            ctx["history"].append(entry)
            log.info("epoch %d/%d: train loss %.4f auc %.4f | valid loss %.4f auc %.4f | %.1fs, %.0f examples/s",
                     epoch + 1, ctx["epochs"], entry.get("loss", float("nan")), entry.get("auc", float("nan")),
                     entry.get("val_loss", float("nan")), entry.get("val_auc", float("nan")),
                     entry["seconds"], entry["examples_per_second"] or 0.0)

    class EarlyStoppingWithState(keras.callbacks.Callback):
        """Early stopping on a Keras log value (mode max or min) whose state survives a restart.

        The best epoch's weights are written to checkpoints/best.weights.h5; `train`
        loads them back when training ends.
        """

        def on_epoch_end(self, epoch, logs=None):
            es = ctx["early_stopping"]
            value = (logs or {}).get(ctx["monitor"])
            if value is None:
                raise KeyError(f"early stopping monitors '{ctx['monitor']}', which Keras did not log "
                               f"(logged: {sorted(logs or {})})")
            value = float(value)
            if ctx["mode"] == "max":
                improved = es["best"] is None or value > es["best"] + ctx["min_delta"]
            else:
                improved = es["best"] is None or value < es["best"] - ctx["min_delta"]
            if improved:
                es.update(best=value, best_epoch=epoch + 1, wait=0)
                _save_weights(self.model, os.path.join(ctx["checkpoint_dir"], BEST_WEIGHTS))
            else:
                es["wait"] += 1
                if es["wait"] >= ctx["patience"]:
                    es["stopped"] = True
                    self.model.stop_training = True
                    log.info("early stopping after epoch %d: %s has not improved on %.4f (epoch %d) for %d epochs",
                             epoch + 1, ctx["monitor"], es["best"], es["best_epoch"], es["wait"])

    class Checkpoint(keras.callbacks.Callback):
        """After every epoch: weights (with optimizer state), then state.json pointing at them."""

        def on_epoch_end(self, epoch, logs=None):
            directory = ctx["checkpoint_dir"]
            name = f"epoch-{epoch + 1:04d}.weights.h5"
            _save_weights(self.model, os.path.join(directory, name))
            state = {"epoch": epoch + 1, "weights": name, "spec_hash": ctx["spec_hash"], "model": ctx["model"],
                     "params": ctx["params"], "early_stopping": ctx["early_stopping"], "history": ctx["history"],
                     "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            _atomic_write_json(os.path.join(directory, STATE_FILE), state)
            keep = max(1, int(ctx["keep"]))
            old = sorted(f for f in os.listdir(directory) if re.fullmatch(r"epoch-\d{4}\.weights\.h5", f))[:-keep]
            for f in old:
                os.remove(os.path.join(directory, f))
            if ctx["crash_after_epoch"] is not None and epoch + 1 == int(ctx["crash_after_epoch"]):
                raise SimulatedCrash(f"debug.crash_after_epoch={epoch + 1}: stopping after the checkpoint of epoch {epoch + 1}")

    return [EpochLog(), EarlyStoppingWithState(), Checkpoint()]


# ---------------------------------------------------------------- outputs

def serving_function(model, spec: dict):
    """tf.function(features dict) -> {"score": [batch, 1]} with the spec's input signature."""
    import tensorflow as tf

    signature = {e["name"]: tf.TensorSpec([None, *[int(n) for n in e["shape"]]], tf.as_dtype(e["dtype"]), name=e["name"])
                 for e in model_inputs(spec)}

    @tf.function(input_signature=[signature])
    def serve(features):
        return {"score": model(features, training=False)}

    return serve


def _prediction_schema(spec: dict) -> pa.Schema:
    meta = {e["name"]: e for e in features_by_role(spec, "metadata")}
    fields = [("split", pa.string())]
    fields += [(name, ARROW_TYPES[meta[name]["dtype"]]) for name in ID_COLUMNS if name in meta]
    fields += [("label", pa.int64()), ("score", pa.float32())]
    fields += [(name, ARROW_TYPES[e["dtype"]]) for name, e in meta.items() if name not in ID_COLUMNS]
    return pa.schema(fields)


def _arrow_column(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    if pa.types.is_string(dtype):
        return pa.array(values.tolist(), type=pa.binary()).cast(pa.string())
    return pa.array(values, type=dtype, from_pandas=pa.types.is_floating(dtype))  # NaN (missing) -> null


def predict_split(serve, samples_dir: str, spec: dict, split: str, batch_size: int, path: str | None) -> dict:
    """Score a split batch by batch, appending rows to the Parquet file `path` (None: no file).

    Returns the exact metrics of the split and its size; only labels, scores and user ids
    are kept in memory for them.
    """
    schema = _prediction_schema(spec)
    label_name = spec["label"]
    labels, scores, users = [], [], []
    writer = pq.ParquetWriter(path, schema) if path else None
    try:
        with naming_corrupt_shards(samples_dir, spec, (split,)):
            for features, _, meta in make_dataset(samples_dir, spec, split, batch_size, with_metadata=True):
                score = serve(features)["score"].numpy().reshape(-1)
                label = meta[label_name].numpy().astype(np.int64)
                labels.append(label)
                scores.append(score)
                if "user_id" in meta:
                    users.append(meta["user_id"].numpy())
                if writer is not None:
                    columns = {"split": pa.array([split] * len(score), pa.string()), "label": pa.array(label, pa.int64()),
                               "score": pa.array(score, pa.float32())}
                    for field in schema:
                        if field.name not in columns:
                            columns[field.name] = _arrow_column(meta[field.name].numpy(), field.type)
                    writer.write_table(pa.table([columns[f.name] for f in schema], schema=schema))
        if writer is not None and not labels:  # an empty split still gets a readable file
            writer.write_table(schema.empty_table())
    finally:
        if writer is not None:
            writer.close()
    y = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    u = np.concatenate(users) if users else None
    result = offline_metrics.evaluate(y, s, users=u)
    return {"metrics": result, "num_examples": int(y.size)}


def vocabulary_tokens(samples_dir: str, spec: dict, table: str, size: int) -> list:
    """Token of every row of an embedding table: vocab tokens, <PAD>/<OOV>, bucket_<i> for bucketized tables."""
    tokens: list = [None] * size
    vocab = (spec.get("vocabularies") or {}).get(table)
    if vocab is not None:
        path = os.path.join(str(samples_dir), vocab.get("path") or f"vocab/{table}")
        data = pq.read_table(path, columns=["index", "token"])
        for index, token in zip(data.column("index").to_pylist(), data.column("token").to_pylist()):
            if 0 <= index < size:
                tokens[index] = token
        tokens[int(vocab.get("padding_index", 0))] = "<PAD>"
        tokens[int(vocab.get("oov_index", 1))] = "<OOV>"
        return tokens
    bucketized = any(e.get("embedding_table") == table and e.get("bucketization") for e in spec["features"])
    for i in range(size):
        tokens[i] = "<PAD>" if i == 0 else (f"bucket_{i}" if bucketized else f"index_{i}")
    return tokens


def write_embeddings(tables: dict, samples_dir: str, spec: dict, folder: str, chunk_rows: int) -> dict:
    os.makedirs(folder, exist_ok=True)
    written = {}
    for name, variable in tables.items():
        size, dim = (int(n) for n in variable.shape)
        tokens = vocabulary_tokens(samples_dir, spec, name, size)
        path = os.path.join(folder, f"{_safe_name(name)}.parquet")
        with pq.ParquetWriter(path, EMBEDDINGS_SCHEMA) as writer:
            for start in range(0, size, max(1, int(chunk_rows))):
                stop = min(size, start + int(chunk_rows))
                vectors = np.asarray(variable[start:stop].numpy(), dtype=np.float32)
                values = pa.array(vectors.reshape(-1), pa.float32())
                offsets = pa.array(np.arange(0, (stop - start) * dim + 1, dim, dtype=np.int32), pa.int32())
                writer.write_table(pa.table({
                    "feature": pa.array([name] * (stop - start), pa.string()),
                    "index": pa.array(np.arange(start, stop, dtype=np.int64), pa.int64()),
                    "token": pa.array(tokens[start:stop], pa.string()),
                    "vector": pa.ListArray.from_arrays(offsets, values, type=pa.list_(pa.float32())),
                }, schema=EMBEDDINGS_SCHEMA))
        written[name] = {"rows": size, "dim": dim, "path": os.path.basename(path)}
    return written


def export_model(model, serve, spec: dict, folder: str) -> None:
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    try:
        archive.write_out(folder, verbose=False)
    except TypeError:  # older Keras 3 without `verbose`
        archive.write_out(folder)
    extra = os.path.join(folder, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, "feature_spec.json"), "w") as fh:
        json.dump(spec, fh, indent=2)
    with open(os.path.join(extra, "spec_hash"), "w") as fh:
        fh.write(spec["spec_hash"] + "\n")


def metric_rows(run_id: str, model_name: str, history: list, final: dict, best_epoch: int | None) -> pd.DataFrame:
    rows = []
    for entry in history:
        epoch = int(entry["epoch"])
        for split, prefix in (("train", ""), ("valid", "val_")):
            for key, metric in (("loss", "loss"), ("auc", "keras_auc")):
                if entry.get(prefix + key) is not None:
                    rows.append((split, epoch, metric, entry[prefix + key]))
        for key in ("seconds", "examples_per_second"):
            if entry.get(key) is not None:
                rows.append(("train", epoch, key, entry[key]))
    for split, result in final.items():
        for metric in offline_metrics.METRIC_NAMES:
            rows.append((split, best_epoch, metric, result["metrics"][metric]))
    return pd.DataFrame({
        "run_id": pd.Series([run_id] * len(rows), dtype="string"),
        "model": pd.Series([model_name] * len(rows), dtype="string"),
        "split": pd.Series([r[0] for r in rows], dtype="string"),
        "epoch": pd.Series([r[1] if r[1] is not None else -1 for r in rows], dtype="int64"),
        "metric": pd.Series([r[2] for r in rows], dtype="string"),
        "value": pd.Series([float(r[3]) if r[3] is not None else float("nan") for r in rows], dtype="float64"),
    })


# ---------------------------------------------------------------- the job

def train(samples_dir: str, run_dir: str, config: dict) -> dict:
    """Train config["model"] for config["epochs"] on samples_dir; write RUN/ outputs; return run.json's content."""
    import keras

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if config["early_stopping"]["mode"] not in ("max", "min"):
        raise ValueError(f"early_stopping.mode must be 'max' or 'min', got {config['early_stopping']['mode']!r}")
    run_dir = os.path.abspath(run_dir)
    model_name = config["model"]
    epochs = int(config["epochs"])
    batch_size = int(config["batch_size"])
    eval_batch_size = int(config.get("eval_batch_size") or batch_size)
    seed = int(config["seed"])
    run_id = config.get("run_id") or os.path.basename(run_dir.rstrip("/"))
    started = time.time()
    publish.check_output(run_dir, inputs=[samples_dir], markers=RUN_MARKERS)
    spec = open_samples(samples_dir, run_dir)  # refuses samples this RUN was not trained on
    os.makedirs(run_dir, exist_ok=True)
    if not os.path.exists(os.path.join(run_dir, RUN_MARKER)):
        _atomic_write_json(os.path.join(run_dir, RUN_MARKER),
                           {"job": "train", "run_id": run_id,
                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    publish.remove_stale_stagings(run_dir, STAGING_PREFIX, started)  # left by killed runs
    spec_hash = spec["spec_hash"]
    params = model_params(config)
    build_model, compile_model, embedding_tables = models_api()

    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    state = load_state(checkpoint_dir)
    if state is not None and not config.get("resume", True):
        log.info("resume=false: removing the checkpoints of the previous run in %s", checkpoint_dir)
        shutil.rmtree(checkpoint_dir)
        state = None
    if state is not None:
        _check_state(state, model_name, params, checkpoint_dir)
    os.makedirs(checkpoint_dir, exist_ok=True)

    keras.utils.set_random_seed(seed)
    model = build_model(model_name, spec, params)
    compile_model(model, params)
    _build_optimizers(model)

    initial_epoch = 0
    history: list = []
    early = {"best": None, "best_epoch": None, "wait": 0, "stopped": False}
    if state is not None:
        model.load_weights(os.path.join(checkpoint_dir, state["weights"]))
        initial_epoch = int(state["epoch"])
        history = list(state.get("history") or [])
        early.update(state.get("early_stopping") or {})
        log.info("resuming %s from the checkpoint of epoch %d (best %s %.4f at epoch %s)", run_dir, initial_epoch,
                 config["early_stopping"]["monitor"], early["best"] if early["best"] is not None else float("nan"),
                 early["best_epoch"])

    steps = config.get("max_steps_per_epoch")
    input_conf = config.get("input") or {}
    ctx = {
        "batch_size": batch_size, "epochs": epochs, "repeat": bool(steps),
        "num_train_examples": int((spec.get("splits", {}).get("train") or {}).get("num_examples") or 0),
        "history": history, "early_stopping": early, "monitor": config["early_stopping"]["monitor"],
        "mode": config["early_stopping"]["mode"],
        "patience": int(config["early_stopping"]["patience"]), "min_delta": float(config["early_stopping"]["min_delta"]),
        "checkpoint_dir": checkpoint_dir, "keep": int(config["checkpoints"]["keep"]), "spec_hash": spec_hash,
        "model": model_name, "params": _jsonable(params),
        "crash_after_epoch": (config.get("debug") or {}).get("crash_after_epoch"),
    }
    timings["setup"] = time.perf_counter() - t_start

    t = time.perf_counter()
    history_before = len(history)
    if initial_epoch < epochs and not early["stopped"]:
        train_ds = make_dataset(samples_dir, spec, "train", batch_size, training=True,
                                shuffle_buffer=int(config["shuffle_buffer"] or 0), seed=seed, repeat=bool(steps),
                                cycle_length=input_conf.get("cycle_length"),
                                deterministic=bool(input_conf.get("deterministic")) or None)
        valid_ds = make_dataset(samples_dir, spec, "valid", eval_batch_size,
                                cycle_length=input_conf.get("cycle_length"))
        callbacks = _make_callbacks(ctx) + [
            keras.callbacks.TensorBoard(log_dir=os.path.join(run_dir, "tensorboard"), update_freq="epoch",
                                        profile_batch=0, write_graph=False)]
        log.info("training %s on %s: epochs %d..%d, batch size %d, spec hash %s", model_name, samples_dir,
                 initial_epoch + 1, epochs, batch_size, spec_hash[:12])
        with naming_corrupt_shards(samples_dir, spec, ("train", "valid")):
            model.fit(train_ds, validation_data=valid_ds, epochs=epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=int(steps) if steps else None,
                      validation_steps=config.get("max_validation_steps") or None,
                      callbacks=callbacks, verbose=int(config.get("verbose", 2)), shuffle=False)
    elif early["stopped"]:
        log.info("the checkpointed run already stopped early at epoch %d; skipping training", initial_epoch)
    else:
        log.info("the checkpoint already has %d of %d epochs; skipping training", initial_epoch, epochs)
    timings["train"] = time.perf_counter() - t
    new_epochs = history[history_before:]
    train_examples = sum(e.get("examples") or 0 for e in new_epochs)
    train_seconds = sum(e.get("train_seconds") or 0 for e in new_epochs)

    best_path = os.path.join(checkpoint_dir, BEST_WEIGHTS)
    best_epoch = early["best_epoch"]
    if best_epoch is not None and os.path.exists(best_path):
        model.load_weights(best_path)
        log.info("restored the weights of the best epoch %d (%s %.4f)", best_epoch, ctx["monitor"], early["best"])
    elif history:
        best_epoch = int(history[-1]["epoch"])

    outputs_staging = publish.Staging(run_dir, STAGING_PREFIX, started)
    staging = outputs_staging.path
    try:
        serve = serving_function(model, spec)
        outputs = config.get("outputs") or {}
        t = time.perf_counter()
        final = {}
        write_predictions = outputs.get("predictions", True)
        if write_predictions:
            os.makedirs(os.path.join(staging, "predictions"))
        for split in ("valid", "test"):
            path = os.path.join(staging, "predictions", f"{split}.parquet") if write_predictions else None
            final[split] = predict_split(serve, samples_dir, spec, split, eval_batch_size, path)
        timings["evaluate"] = time.perf_counter() - t

        t = time.perf_counter()
        embeddings = {}
        if outputs.get("embeddings", True):
            embeddings = write_embeddings(embedding_tables(model), samples_dir, spec,
                                          os.path.join(staging, "embeddings"),
                                          int(outputs.get("embeddings_chunk_rows") or 65536))
        timings["embeddings"] = time.perf_counter() - t

        t = time.perf_counter()
        export_model(model, serve, spec, os.path.join(staging, "model"))
        timings["export"] = time.perf_counter() - t

        frame = metric_rows(run_id, model_name, history, final, best_epoch)
        pq.write_table(pa.Table.from_pandas(frame, schema=METRICS_SCHEMA, preserve_index=False)
                       .replace_schema_metadata(None),
                       os.path.join(staging, "metrics.parquet"))

        timings["total"] = time.perf_counter() - t_start
        summary = {
            "run_id": run_id,
            "model": model_name,
            "samples": os.path.abspath(samples_dir) if "://" not in str(samples_dir) else str(samples_dir),
            "output": run_dir,
            "spec_hash": spec_hash,
            "config": config,
            "params": params,
            "versions": library_versions(),
            "epochs_requested": epochs,
            "epochs_completed": int(history[-1]["epoch"]) if history else 0,
            "resumed_from_epoch": initial_epoch,
            "stopped_early": bool(early["stopped"]),
            "best_epoch": best_epoch,
            "best_" + ctx["monitor"]: early["best"],
            "timings": timings,
            "train_examples": train_examples,
            "train_examples_per_second": (train_examples / train_seconds) if train_seconds > 0 else None,
            "num_examples": {split: r["num_examples"] for split, r in final.items()},
            "metrics": {split: r["metrics"] for split, r in final.items()},
            "history": history,
            "embeddings": embeddings,
            "outputs": {name: os.path.join(run_dir, name) for name in
                        ("metrics.parquet", "predictions", "embeddings", "model", "run.json", "tensorboard",
                         "checkpoints")},
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if not write_predictions:
            summary["outputs"].pop("predictions")
        if not embeddings:
            summary["outputs"].pop("embeddings")
        _atomic_write_json(os.path.join(staging, "run.json"), summary)
        for name in ("metrics.parquet", "predictions", "embeddings", "model", "run.json"):
            src = os.path.join(staging, name)
            if os.path.exists(src):
                publish.swap_into_place(src, os.path.join(run_dir, name))
    finally:
        outputs_staging.close()
    log.info("test %s", " ".join(f"{k} {v:.4f}" for k, v in final["test"]["metrics"].items()))
    return _jsonable(summary)
