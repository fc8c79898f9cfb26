"""What a finished run leaves in RUN/ (written under RUN/.staging-*/, then swapped into place):

RUN/metrics.parquet      run_id, model, split, epoch, metric, value
                         per epoch: split train / valid, metric loss, keras_auc (Keras'
                         streaming AUC), train also seconds, examples_per_second;
                         final: split valid / test, epoch = best epoch, metric auc, logloss,
                         gauc, pr_auc, calibration (exact, from the predictions)
RUN/predictions/         {valid,test}.parquet: split, user_id, item_id, ts, label, score,
                         + the spec's other metadata columns (e.g. p_click)
                         + position (int64, null when unknown) when the samples index positions
RUN/embeddings/          <table>.parquet: feature, index, token, vector (list<float>); the item table
                         (item_id) also genres (list<string>, from the train samples: item_genres)
RUN/model/               SavedModel, signatures serving_default(parsed model inputs) -> {"score"} and
                         serving_raw(raw values) -> {"score"} (pipelines/training/serving_raw.py; its vocabulary
                         files in assets/); assets.extra/ holds feature_spec.json and spec_hash
RUN/run.json             config, model, spec hash, versions, timings, best epoch, metrics, and `data`:
                         per split its size and label rate (+ the dates and days of a date-partitioned SAMPLES)
RUN/plots/               training_curves.png, roc.png, reliability.png (pipelines/training/plots.py)

On a `scheme://` RUN (s3://) the staging lies there too: the Parquet files are written to local
temporary files and copied into it (storage.written_locally), the SavedModel is written straight
through tf.io.gfile, and publishing renames each output into place (a copy on an object store).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_spec import (
    SPEC_FILE,
    arrow_type,
    compression_type,
    embedding_table,
    first_token_index,
    get_vocabulary,
    input_signature,
    label_name,
    metadata_entries,
    model_inputs,
    rows_per_record,
    spec_hash,
    to_json,
    vocabulary_tokens,
)
from models import embedding_tables
from pipelines import publish, storage
from pipelines.config_schema import TrainConfig
from pipelines.timings import Timings
from pipelines.training import metrics as offline_metrics
from pipelines.training import plots
from pipelines.training.dataset import Samples, make_dataset, naming_corrupt_shards, record_parser
from pipelines.training.run_state import Progress, write_json

STAGING_PREFIX = ".staging-"  # RUN/.staging-<id>/: where a run's outputs are written before they are swapped in
ID_COLUMNS = ("user_id", "item_id", "ts")
FINAL_SPLITS = ("valid", "test")
PUBLISHED = ("metrics.parquet", "predictions", "embeddings", "model", "plots", "run.json")
METRICS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("split", pa.string()),
        ("epoch", pa.int64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)
EMBEDDINGS_SCHEMA = pa.schema(
    [("feature", pa.string()), ("index", pa.int64()), ("token", pa.string()), ("vector", pa.list_(pa.float32()))]
)
GENRES_FIELD = pa.field("genres", pa.list_(pa.string()))
# The samples' features (docs/feature_spec.md) that the outputs decode for a person: the impression's
# position (an index of the `position` vocabulary) into predictions, the item's genres into its embeddings.
POSITION = "position"
ITEM_INDEX, ITEM_GENRES = "item_idx", "item_genres"

log = logging.getLogger(__name__)


class StagedRunOutputs(publish.Staging):
    """RUN/.staging-<id>/, whose outputs `publish()` swaps into RUN/ (publish.swap_into_place)."""

    def __init__(self, run_dir: str, prefix: str, started: float):
        super().__init__(run_dir, prefix, started)
        self.run_dir = run_dir

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def publish(self) -> None:
        for name in PUBLISHED:
            if storage.exists(self.file(name)):
                publish.swap_into_place(self.file(name), os.path.join(self.run_dir, name))


@dataclass(frozen=True)
class FinishedRun:
    """A run at its end, as its outputs describe it (the model's weights aside)."""

    run_id: str
    run_dir: str
    started: float  # time.time() at the start: RUN's stagings older than that are killed runs'
    config: TrainConfig
    params: dict  # the model's params, resolved
    samples: Samples
    progress: Progress  # every epoch's history, the early-stopping state, a warm start's source
    new_epochs: list  # the history entries of the epochs trained now
    resumed_from: int  # the checkpoint's epoch this run resumed from (0: none)
    best_epoch: int | None  # the epoch whose weights the model holds
    distribute: dict | None = None  # a distributed run's cluster (distributed.cluster_record)


def write_run_outputs(model, run: FinishedRun, clock: Timings) -> dict:
    """Predictions, embeddings, the SavedModel, metrics, plots and run.json, published into RUN/ together;
    returns run.json's content."""
    config, samples, spec = run.config, run.samples, run.samples.spec
    outputs, model_name, eval_batch_size = config.outputs, config.model, config.eval_batch_size
    with StagedRunOutputs(run.run_dir, STAGING_PREFIX, run.started) as out:
        serve = serving_function(model, spec)
        with clock.step("evaluate"):
            final = predict_final_splits(
                serve,
                samples,
                eval_batch_size,
                out.file("predictions") if outputs.predictions else None,
            )
        with clock.step("embeddings"):
            embeddings = (
                write_embeddings(
                    embedding_tables(model),
                    samples,
                    out.file("embeddings"),
                    outputs.embeddings_chunk_rows,
                    genres=item_genres(samples, eval_batch_size),
                )
                if outputs.embeddings
                else {}
            )
        with clock.step("export"):
            signatures = export_model(model, serve, spec, out.file("model"), samples.vocab_dir)
        metrics = metric_rows(run.run_id, model_name, run.progress.history, final, run.best_epoch)
        write_metrics(metrics, out.file("metrics.parquet"))
        with clock.step("plots"):
            scored = {split: (result["labels"], result["scores"]) for split, result in final.items()}
            plots.write_run_plots(
                out.file(plots.PLOTS),
                metrics,
                scored,
                title=run.run_id if run.run_id == model_name else f"{run.run_id} ({model_name})",
            )
        clock.since_start("total")
        summary = run_summary(run, final, embeddings, clock.seconds)
        summary["model_signatures"] = signatures
        write_json(out.file("run.json"), summary)
        out.publish()
    return summary


# ---------------------------------------------------------------- predictions


def serving_function(model, spec: dict):
    """tf.function(features dict) -> {"score": [batch, 1]} with the spec's input signature."""
    import tensorflow as tf

    @tf.function(input_signature=[input_signature(spec)])
    def serve(features):
        return {"score": model(features, training=False)}

    return serve


def position_input(spec: dict) -> dict | None:
    """The model input that indexes the impression's position (a categorical of the `position` vocabulary),
    unless the samples carry `position` as metadata already (a passthrough column)."""
    if any(e["name"] == POSITION for e in metadata_entries(spec)):
        return None
    for entry in model_inputs(spec):
        if entry["kind"] == "categorical" and entry.get("vocabulary") == POSITION:
            return entry
    return None


def prediction_schema(spec: dict) -> pa.Schema:
    """split, the id columns, label, score, then the spec's other metadata columns, then `position` when the
    samples index positions (position_input)."""
    meta = {e["name"]: e for e in metadata_entries(spec)}
    fields = [("split", pa.string())]
    fields += [(name, arrow_type(meta[name]["dtype"])) for name in ID_COLUMNS if name in meta]
    fields += [("label", pa.int64()), ("score", pa.float32())]
    fields += [(name, arrow_type(e["dtype"])) for name, e in meta.items() if name not in ID_COLUMNS]
    if position_input(spec) is not None:
        fields.append((POSITION, pa.int64()))
    return pa.schema(fields)


def _position_lookup(samples: Samples) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(input name, position of each index, whether it has one): the `position` vocabulary's tokens as
    numbers; padding (no position), OOV and any token that is not a whole number have none."""
    entry = position_input(samples.spec)
    if entry is None:
        return None
    size = int(entry["vocab_size"])
    tokens = vocabulary_tokens(samples.vocab_dir, samples.spec, embedding_table(entry), size)
    values, known = np.zeros(size, np.int64), np.zeros(size, bool)
    for index, token in enumerate(tokens):
        if isinstance(token, str) and re.fullmatch(r"-?\d+", token.strip()):
            values[index], known[index] = int(token), True
    return entry["name"], values, known


def _arrow_column(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    if pa.types.is_string(dtype):
        return pa.array(values.tolist(), type=pa.binary()).cast(pa.string())
    return pa.array(values, type=dtype, from_pandas=pa.types.is_floating(dtype))  # NaN (missing) -> null


def predict_split(serve, samples: Samples, split: str, batch_size: int, path: str | None) -> dict:
    """Score a split batch by batch, appending rows to the Parquet file `path` (None: no file).

    Returns the exact metrics of the split, its size, and its `labels` and `scores` (numpy arrays, for the
    plots); only labels, scores and user ids are kept in memory.
    """
    with storage.written_locally(path) if path else contextlib.nullcontext() as local:
        return _predict_split(serve, samples, split, batch_size, local)


def _predict_split(serve, samples: Samples, split: str, batch_size: int, path: str | None) -> dict:
    schema = prediction_schema(samples.spec)
    label = label_name(samples.spec)
    labels, scores, users = [], [], []
    positions = _position_lookup(samples) if path else None
    writer = pq.ParquetWriter(path, schema) if path else None
    try:
        with naming_corrupt_shards(samples, (split,)):
            for features, _, meta in make_dataset(samples, split, batch_size, with_metadata=True):
                score = serve(features)["score"].numpy().reshape(-1)
                y = meta[label].numpy().astype(np.int64)
                labels.append(y)
                scores.append(score)
                if "user_id" in meta:
                    users.append(meta["user_id"].numpy())
                if writer is not None:
                    columns = {
                        "split": pa.array([split] * len(score), pa.string()),
                        "label": pa.array(y, pa.int64()),
                        "score": pa.array(score, pa.float32()),
                    }
                    if positions is not None:
                        name, values, known = positions
                        index = np.clip(features[name].numpy().reshape(-1), 0, values.size - 1)
                        columns[POSITION] = pa.array(values[index], pa.int64(), mask=~known[index])
                    for f in schema:
                        if f.name not in columns:
                            columns[f.name] = _arrow_column(meta[f.name].numpy(), f.type)
                    writer.write_table(pa.table([columns[f.name] for f in schema], schema=schema))
        if writer is not None and not labels:  # an empty split still gets a readable file
            writer.write_table(schema.empty_table())
    finally:
        if writer is not None:
            writer.close()
    y = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    u = np.concatenate(users) if users else None
    return {"metrics": offline_metrics.evaluate(y, s, users=u), "num_examples": int(y.size), "labels": y, "scores": s}


def predict_final_splits(serve, samples: Samples, batch_size: int, folder: str | None) -> dict:
    """{split: predict_split(...)} for valid and test; `folder` None writes no prediction files."""
    if folder is not None:
        storage.makedirs(folder)
    return {
        split: predict_split(
            serve, samples, split, batch_size, os.path.join(folder, f"{split}.parquet") if folder else None
        )
        for split in FINAL_SPLITS
    }


# ---------------------------------------------------------------- embeddings, model


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def item_genres(samples: Samples, batch_size: int) -> tuple[str, list] | None:
    """(the item table's name, each item index's genre tokens): read from the train split's `item_idx` and
    `item_genres` (only those two features parsed), the first row of each item, until every item of the
    vocabulary has been seen. An index never seen in train (padding, OOV) has None. None when the samples
    lack either feature.

    RAW/items is no input of training, and the item's genres are in the samples only: this is one more pass
    over train's files, much cheaper than an epoch (no model), and ends early once every item is found."""
    import tensorflow as tf

    entries = {e["name"]: e for e in model_inputs(samples.spec)}
    if ITEM_INDEX not in entries or ITEM_GENRES not in entries:
        return None
    item, genres = entries[ITEM_INDEX], entries[ITEM_GENRES]
    size, width = int(item["vocab_size"]), int(genres["shape"][0])
    parse = record_parser({**samples.spec, "features": [item, genres]}, with_metadata=False)
    files = samples.files("train")
    records = -(-int(batch_size) // rows_per_record(samples.spec))
    dataset = (
        tf.data.TFRecordDataset(files, compression_type=compression_type(samples.spec), num_parallel_reads=4)
        .batch(max(1, records))
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )
    found = np.zeros((size, width), np.int64)
    seen = np.zeros(size, bool)
    vocabulary = get_vocabulary(samples.spec, item.get("vocabulary") or "")
    not_items = first_token_index(vocabulary) if vocabulary else 2
    seen[:not_items] = True  # padding and the OOV buckets: no item
    with naming_corrupt_shards(samples, ("train",)):
        for batch in dataset:
            index = batch[ITEM_INDEX].numpy().reshape(-1)
            new = ~seen[np.clip(index, 0, size - 1)] & (index >= 0) & (index < size)
            if new.any():
                first_index, first_row = np.unique(index[new], return_index=True)
                found[first_index] = batch[ITEM_GENRES].numpy().reshape(-1, width)[new][first_row]
                seen[first_index] = True
                if seen.all():
                    break
    genre_size = int(genres["vocab_size"])
    tokens = vocabulary_tokens(samples.vocab_dir, samples.spec, embedding_table(genres), genre_size)
    seen[:not_items] = False
    listed = [
        [tokens[g] for g in row if 0 < g < genre_size] if seen[i] else None for i, row in enumerate(found.tolist())
    ]
    return embedding_table(item), listed


def write_embeddings(
    tables: dict, samples: Samples, folder: str, chunk_rows: int, genres: tuple[str, list] | None = None
) -> dict:
    """One Parquet file per table: feature, index, token, vector; written `chunk_rows` rows at a time
    (the tokens from the vocabularies in samples.vocab_dir). `genres` (item_genres()) adds the column
    `genres` to the item table."""
    storage.makedirs(folder)
    written = {}
    for name, variable in tables.items():
        size, dim = (int(n) for n in variable.shape)
        tokens = vocabulary_tokens(samples.vocab_dir, samples.spec, name, size)
        path = os.path.join(folder, f"{_safe_name(name)}.parquet")
        listed = genres[1] if genres is not None and genres[0] == name and len(genres[1]) == size else None
        schema = EMBEDDINGS_SCHEMA.append(GENRES_FIELD) if listed is not None else EMBEDDINGS_SCHEMA
        with storage.written_locally(path) as local, pq.ParquetWriter(local, schema) as writer:
            for start in range(0, size, max(1, int(chunk_rows))):
                stop = min(size, start + int(chunk_rows))
                vectors = np.asarray(variable[start:stop].numpy(), dtype=np.float32)
                values = pa.array(vectors.reshape(-1), pa.float32())
                offsets = pa.array(np.arange(0, (stop - start) * dim + 1, dim, dtype=np.int32), pa.int32())
                columns = {
                    "feature": pa.array([name] * (stop - start), pa.string()),
                    "index": pa.array(np.arange(start, stop, dtype=np.int64), pa.int64()),
                    "token": pa.array(tokens[start:stop], pa.string()),
                    "vector": pa.ListArray.from_arrays(offsets, values, type=pa.list_(pa.float32())),
                }
                if listed is not None:
                    columns["genres"] = pa.array(listed[start:stop], GENRES_FIELD.type)
                writer.write_table(pa.table(columns, schema=schema))
        written[name] = {"rows": size, "dim": dim, "path": os.path.basename(path)}
        if listed is not None:
            written[name]["genres"] = sum(entry is not None for entry in listed)
    return written


def export_model(model, serve, spec: dict, folder: str, vocab_dir: str | None = None) -> list[str]:
    """SavedModel with the `serving_default` endpoint (the model's inputs) and, given the samples' `vocab_dir`,
    `serving_raw` (raw values through the spec's transform, pipelines/training/serving_raw.py; its vocabulary
    files are the model's assets); assets.extra/ holds the spec and its hash. Returns the signatures written:
    a spec `serving_raw` cannot reproduce is logged and exported with `serving_default` alone."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    signatures = ["serving_default"]
    with tempfile.TemporaryDirectory(prefix="serving-raw-") as assets:
        if vocab_dir is not None:
            from pipelines.training.serving_raw import RawTransform, UnservableSpec, serving_raw_function

            try:
                transform = RawTransform(spec, vocab_dir, assets)
            except UnservableSpec as exc:
                log.warning("RUN/model has no serving_raw signature: %s", exc)
            else:
                archive.track(transform)
                archive.add_endpoint("serving_raw", serving_raw_function(model, transform))
                signatures.append("serving_raw")
        try:
            archive.write_out(folder, verbose=False)
        except TypeError:  # older Keras 3 without `verbose`
            archive.write_out(folder)
    extra = os.path.join(folder, "assets.extra")
    storage.makedirs(extra)
    storage.write_text(os.path.join(extra, SPEC_FILE), to_json(spec))
    storage.write_text(os.path.join(extra, "spec_hash"), spec_hash(spec) + "\n")
    return signatures


# ---------------------------------------------------------------- metrics, run.json


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
    return pd.DataFrame(
        {
            "run_id": pd.Series([run_id] * len(rows), dtype="string"),
            "model": pd.Series([model_name] * len(rows), dtype="string"),
            "split": pd.Series([r[0] for r in rows], dtype="string"),
            "epoch": pd.Series([r[1] if r[1] is not None else -1 for r in rows], dtype="int64"),
            "metric": pd.Series([r[2] for r in rows], dtype="string"),
            "value": pd.Series([float(r[3]) if r[3] is not None else float("nan") for r in rows], dtype="float64"),
        }
    )


def write_metrics(frame: pd.DataFrame, path: str) -> None:
    table = pa.Table.from_pandas(frame, schema=METRICS_SCHEMA, preserve_index=False).replace_schema_metadata(None)
    with storage.written_locally(path) as local:
        pq.write_table(table, local)


def library_versions() -> dict:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
    }


def run_summary(run: FinishedRun, final: dict, embeddings: dict, timings: dict) -> dict:
    """The content of run.json (``data``: what each split read, samples.record(); ``distribute``: the cluster of
    a distributed run, where its tables lived; ``init_from`` and ``initial_valid``: a warm-started run's source
    and its valid metrics before any step). `final`: predict_final_splits(); `embeddings`: write_embeddings()."""
    config, samples, progress, history = run.config, run.samples, run.progress, run.progress.history
    new_epochs = run.new_epochs
    train_examples = sum(e.get("examples") or 0 for e in new_epochs)
    train_seconds = sum(e.get("train_seconds") or 0 for e in new_epochs)
    outputs = {
        name: os.path.join(run.run_dir, name)
        for name in (
            "metrics.parquet",
            "predictions",
            "embeddings",
            "model",
            "plots",
            "run.json",
            "tensorboard",
            "checkpoints",
        )
    }
    if not config.outputs.predictions:
        outputs.pop("predictions")
    if not embeddings:
        outputs.pop("embeddings")
    summary = {
        "run_id": run.run_id,
        "model": config.model,
        "samples": os.path.abspath(samples.path) if "://" not in samples.path else samples.path,
        "data": samples.record(),
        "output": run.run_dir,
        "spec_hash": samples.spec_hash,
        "config": config.model_dump(),  # as a plain dict, as the YAML holds it
        "params": run.params,
        "versions": library_versions(),
        "epochs_requested": config.epochs,
        "epochs_completed": int(history[-1]["epoch"]) if history else 0,
        "resumed_from_epoch": run.resumed_from,
        "stopped_early": bool(progress.early.stopped),
        "best_epoch": run.best_epoch,
        "best_" + config.early_stopping.monitor: progress.early.best,
        "timings": timings,
        "train_examples": train_examples,
        "train_examples_per_second": (train_examples / train_seconds) if train_seconds > 0 else None,
        "num_examples": {split: r["num_examples"] for split, r in final.items()},
        "metrics": {split: r["metrics"] for split, r in final.items()},
        "history": history,
        "embeddings": embeddings,
        "outputs": outputs,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if run.distribute is not None:
        summary["distribute"] = run.distribute
    if progress.init_from is not None:
        summary["init_from"] = progress.init_from
        summary["initial_valid"] = progress.initial_valid
    return summary
