"""tf.data input straight from a SAMPLES directory (docs/feature_spec.md).

    spec = open_samples(samples_dir, run_dir)          # load + refuse a spec-hash change
    ds = make_dataset(samples_dir, spec, "train", batch_size=1024, training=True,
                      shuffle_buffer=100_000, seed=42)  # -> (features, label)

The pipeline is streamed and has no Python in the per-record path:

    list_files (shuffled with a seed for train)
      -> interleave(TFRecordDataset(GZIP)) in parallel (non-deterministic order for train)
      -> shuffle records (train) -> batch
      -> tf.io.parse_example(parse_features(spec)) on the whole batch
      -> (model-input dict, label float32 [batch, 1][, metadata dict]) -> prefetch

Spec hash guard: a run directory remembers the spec hash of the samples it was
trained on (`run.json`, `checkpoints/state.json`, `model/assets.extra/spec_hash`).
`check_run_spec_hash` refuses samples whose hash differs, naming both hashes.
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re

import tensorflow as tf

from pipelines.feature_spec import SpecError, features_by_role, load_spec, model_inputs, parse_features

AUTOTUNE = tf.data.AUTOTUNE
SPEC_HASH_FILES = ("run.json", os.path.join("checkpoints", "state.json"),
                   os.path.join("model", "assets.extra", "spec_hash"))


class SpecHashMismatch(SpecError):
    """The samples' feature spec differs from the one a run was trained on."""


class CorruptShardError(IOError):
    """A TFRecord shard of the samples is truncated or corrupt; the message names it."""


def corrupt_shards(files: list[str], compression: str) -> dict[str, str]:
    """{file: TensorFlow's error} for every file that cannot be read to its end, CRCs checked."""
    bad = {}
    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path, compression_type=compression).batch(4096):
                pass
        except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as exc:
            reason = re.sub(r"\{\{.*?\}\}|\[Op:\w+\].*", "", exc.message.splitlines()[0])
            bad[path] = reason.strip(" .'")
    return bad


@contextlib.contextmanager
def naming_corrupt_shards(samples_dir: str, spec: dict, splits: tuple[str, ...]):
    """Turn TensorFlow's DataLossError, which names no file, into a CorruptShardError that does.

    The shards are scanned only after a read has failed, so reading stays one pass.
    """
    try:
        yield
    except tf.errors.DataLossError as exc:
        compression = spec.get("compression", "GZIP") or ""
        bad = {}
        for split in splits:
            bad.update(corrupt_shards(split_files(samples_dir, spec, split), compression))
        if not bad:
            raise
        listed = "; ".join(f"{path}: {reason}" for path, reason in bad.items())
        raise CorruptShardError(f"{len(bad)} corrupt or truncated TFRecord shard(s) in {samples_dir}: {listed}. "
                                "Rebuild the samples (jobs.build_samples) or restore these files") from exc


def split_pattern(samples_dir: str, spec: dict, split: str) -> str:
    splits = spec.get("splits") or {}
    if split not in splits:
        raise SpecError(f"split '{split}' is not in the feature spec of {samples_dir} (has: {', '.join(splits)})")
    return posixpath.join(str(samples_dir).rstrip("/"), splits[split]["pattern"])


def split_files(samples_dir: str, spec: dict, split: str) -> list[str]:
    pattern = split_pattern(samples_dir, spec, split)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no files match {pattern} (split '{split}')")
    return files


def _parse_fn(spec: dict, with_metadata: bool):
    feature_map = parse_features(spec, include_metadata=with_metadata)
    inputs = [e["name"] for e in model_inputs(spec)]
    metadata = [e["name"] for e in features_by_role(spec, "metadata")] if with_metadata else []
    label = spec["label"]

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, feature_map)
        features = {name: parsed[name] for name in inputs}
        y = tf.expand_dims(tf.cast(parsed[label], tf.float32), -1)
        if with_metadata:
            meta = {name: parsed[name] for name in metadata}
            meta[label] = parsed[label]
            return features, y, meta
        return features, y

    return parse


def make_dataset(samples_dir: str, spec: dict, split: str, batch_size: int, *, training: bool = False,
                 shuffle_buffer: int = 0, seed: int | None = None, with_metadata: bool = False,
                 repeat: bool = False, cycle_length: int | None = None, deterministic: bool | None = None,
                 drop_remainder: bool = False) -> tf.data.Dataset:
    """Batched, parsed dataset of one split.

    Elements: `(features, label)`, or `(features, label, metadata)` when `with_metadata`
    (metadata: every metadata feature plus the raw int64 label). `features` holds the
    spec's model inputs with shapes `[batch] + shape`; `label` is float32 `[batch, 1]`.
    `training` shuffles files (with `seed`) and records (`shuffle_buffer`) and lets the
    interleave and the parsing run out of order (`deterministic=True` forces a reproducible
    order, at some cost in throughput); otherwise the order is deterministic.
    """
    if deterministic is None:
        deterministic = not training
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    files = split_files(samples_dir, spec, split)  # fails early and clearly when nothing matches
    compression = spec.get("compression", "GZIP") or ""
    pattern = split_pattern(samples_dir, spec, split)
    if training:
        ds = tf.data.Dataset.list_files(pattern, shuffle=True, seed=seed)
    else:
        ds = tf.data.Dataset.from_tensor_slices(files)  # sorted: a deterministic order
    ds = ds.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
        cycle_length=cycle_length or min(len(files), 8),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if training and shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    num_examples = ((spec.get("splits") or {}).get(split) or {}).get("num_examples")
    if not repeat and num_examples is not None:
        # The spec knows the split's size: Keras then knows the steps per epoch (progress bar
        # totals, no "ran out of data" warning); a wrong count fails loudly at the end of a pass.
        batches = int(num_examples) // batch_size if drop_remainder else -(-int(num_examples) // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    ds = ds.map(_parse_fn(spec, with_metadata), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE)


def recorded_spec_hashes(run_dir: str) -> dict[str, str]:
    """{file: spec hash} for every place in `run_dir` that records the hash it was trained on."""
    found = {}
    for rel in SPEC_HASH_FILES:
        path = os.path.join(str(run_dir), rel)
        if not tf.io.gfile.exists(path):
            continue
        with tf.io.gfile.GFile(path, "r") as fh:
            text = fh.read()
        if rel.endswith(".json"):
            try:
                value = json.loads(text).get("spec_hash")
            except json.JSONDecodeError:
                continue
        else:
            value = text.strip()
        if value:
            found[rel] = value
    return found


def check_run_spec_hash(run_dir: str, spec_hash: str, samples_dir: str = "SAMPLES") -> None:
    """Raise SpecHashMismatch when a checkpoint / model / run.json in `run_dir` was trained on other samples."""
    for rel, recorded in recorded_spec_hashes(run_dir).items():
        if recorded != spec_hash:
            raise SpecHashMismatch(
                f"feature spec hash mismatch: samples {samples_dir} have spec hash {spec_hash}, "
                f"but {os.path.join(str(run_dir), rel)} was trained on spec hash {recorded}. "
                f"The samples changed under this run; train into a new --output directory "
                f"(or delete {run_dir}) instead of resuming or overwriting it.")


def open_samples(samples_dir: str, run_dir: str | None = None) -> dict:
    """Load and validate the spec; with `run_dir`, refuse samples the run was not trained on."""
    spec = load_spec(samples_dir)
    if run_dir is not None:
        check_run_spec_hash(run_dir, spec["spec_hash"], samples_dir)
    return spec
