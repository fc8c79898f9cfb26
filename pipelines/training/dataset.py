"""tf.data input straight from a SAMPLES directory (docs/feature_spec.md).

    samples = open_samples(samples_dir, run_dir, dates)  # select (selection.py) + refuse a spec-hash change
    ds = make_dataset(samples, "train", batch_size=1024, training=True,
                      shuffle_buffer=100_000, seed=42)    # -> (features, label)

`samples` (selection.Samples) holds the spec and each split's shards: an ordinary SAMPLES's train/,
valid/, test/, or the union of the selected days of a date-partitioned one.

The pipeline is streamed and has no Python in the per-record path:

    the split's sorted files (shuffled with a seed for train)
      -> interleave(TFRecordDataset(GZIP)) in parallel (non-deterministic order for train)
      -> shuffle records (train) -> batch
      -> tf.io.parse_example(parse_features(spec)) on the whole batch
      -> (model-input dict, label float32 [batch, 1][, metadata dict]) -> prefetch

When the spec's `rows_per_record` n > 1 a record is a block of n samples (shuffled at write
time), which takes the per-record cost off each sample:

    files -> interleave -> shuffle blocks (train, shuffle_buffer / n of them)
      -> batch ceil(batch_size / n) blocks -> parse_example(parse_block_features(spec)),
         flat values reshaped to [rows] + shape -> rebatch(batch_size)
      -> permute the rows inside each batch (train) -> the same elements as above

Spec hash guard: a run directory remembers the spec hash of the samples it was
trained on (`run.json`, `checkpoints/state.json`, `model/assets.extra/spec_hash`).
`check_run_spec_hash` refuses samples whose hash differs, naming both hashes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

import tensorflow as tf

from feature_spec import (
    all_features,
    compression_type,
    label_name,
    metadata_entries,
    model_inputs,
    parse_block_features,
    parse_features,
    rows_per_record,
)
from pipelines.training.selection import (  # noqa: F401 - SamplesRefused: open_samples raises it too
    Samples,
    SamplesRefused,
    SpecHashMismatch,
    select_samples,
)

AUTOTUNE = tf.data.AUTOTUNE
SPEC_HASH_FILES = (
    "run.json",
    os.path.join("checkpoints", "state.json"),
    os.path.join("model", "assets.extra", "spec_hash"),
)


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
def naming_corrupt_shards(samples: Samples, splits: tuple[str, ...]):
    """Turn TensorFlow's DataLossError, which names no file, into a CorruptShardError that does.

    The shards are scanned only after a read has failed, so reading stays one pass.
    """
    try:
        yield
    except tf.errors.DataLossError as exc:
        compression = compression_type(samples.spec)
        bad = {}
        for split in splits:
            bad.update(corrupt_shards(samples.files(split), compression))
        if not bad:
            raise
        listed = "; ".join(f"{path}: {reason}" for path, reason in bad.items())
        raise CorruptShardError(
            f"{len(bad)} corrupt or truncated TFRecord shard(s) in {samples.path}: {listed}. "
            "Rebuild the samples (jobs.build_samples) or restore these files"
        ) from exc


def record_parser(spec: dict, with_metadata: bool = True):
    """A function: a batch of serialized records -> {feature: [rows] + shape}, for the spec's layout."""
    if rows_per_record(spec) == 1:
        feature_map = parse_features(spec, include_metadata=with_metadata)
        return lambda serialized: tf.io.parse_example(serialized, feature_map)
    feature_map = parse_block_features(spec, include_metadata=with_metadata)
    shapes = {entry["name"]: [-1] + list(entry["shape"]) for entry in all_features(spec)}

    def parse_blocks(serialized):
        parsed = tf.io.parse_example(serialized, feature_map)
        # A block holds its rows' values back to back: the blocks' flat values are the rows in order.
        return {name: tf.reshape(values.flat_values, shapes[name]) for name, values in parsed.items()}

    return parse_blocks


def _element_fn(spec: dict, with_metadata: bool):
    """Parsed rows -> (features, label float32 [rows, 1][, metadata with the raw label])."""
    inputs = [e["name"] for e in model_inputs(spec)]
    metadata = [e["name"] for e in metadata_entries(spec)] if with_metadata else []
    label = label_name(spec)

    def element(parsed):
        features = {name: parsed[name] for name in inputs}
        y = tf.expand_dims(tf.cast(parsed[label], tf.float32), -1)
        if with_metadata:
            meta = {name: parsed[name] for name in metadata}
            meta[label] = parsed[label]
            return features, y, meta
        return features, y

    return element


def _permuted(rows: dict, seed):
    """The rows of one batch in a random order (stateless, so reproducible under parallel calls):
    the rows of a block would otherwise stay neighbours in every batch."""
    size = tf.shape(next(iter(rows.values())))[0]
    order = tf.argsort(tf.random.stateless_uniform([size], seed=tf.stack([seed, 0])))
    return {name: tf.gather(values, order) for name, values in rows.items()}


def shard_files(files: list[str], split: str, count: int, index: int) -> list[str]:
    """Every count-th of the sorted files from the index-th: one of `count` workers' share of a split."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in 0..{count - 1}")
    if len(files) < count:
        raise ValueError(
            f"the {split} split has {len(files)} file(s) for {count} workers, and every worker needs one: "
            f"rebuild the samples with --set spark.output_partitions={count} or more (or select more days of a "
            "date-partitioned SAMPLES)"
        )
    return sorted(files)[index::count]


def make_dataset(
    samples: Samples,
    split: str,
    batch_size: int,
    *,
    training: bool = False,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    with_metadata: bool = False,
    repeat: bool = False,
    cycle_length: int | None = None,
    deterministic: bool | None = None,
    drop_remainder: bool = False,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batched, parsed dataset of one split.

    Elements: `(features, label)`, or `(features, label, metadata)` when `with_metadata`
    (metadata: every metadata feature plus the raw int64 label). `features` holds the
    spec's model inputs with shapes `[batch] + shape`; `label` is float32 `[batch, 1]`.
    `training` shuffles files (with `seed`) and records (`shuffle_buffer`) and lets the
    interleave and the parsing run out of order (`deterministic=True` forces a reproducible
    order, at some cost in throughput); otherwise the order is deterministic. With blocks
    (`rows_per_record` n > 1) training shuffles shuffle_buffer / n blocks and permutes the
    rows inside each batch. `shard` (count, index) keeps every count-th file from the index-th of
    the sorted files: one worker's share of the split.
    """
    if deterministic is None:
        deterministic = not training
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    spec = samples.spec
    files = samples.files(split)  # fails early and clearly when nothing matches
    compression = compression_type(spec)
    if shard is not None:
        files = shard_files(files, split, *shard)
    if training:  # the order tf.data.Dataset.list_files(pattern, shuffle=True, seed=seed) gives
        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices(files)  # sorted: a deterministic order
    ds = ds.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
        cycle_length=cycle_length or min(len(files), 8),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    block = rows_per_record(spec)
    if training and shuffle_buffer and shuffle_buffer > 1:
        # About shuffle_buffer rows either way: shuffle_buffer records, or that many rows' blocks.
        ds = ds.shuffle(max(2, -(-int(shuffle_buffer) // block)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    parse, element = record_parser(spec, with_metadata), _element_fn(spec, with_metadata)
    size = None if repeat or shard is not None else samples.num_examples(split)  # a share's size is not known
    if block == 1:
        ds = _with_cardinality(
            ds.batch(int(batch_size), drop_remainder=drop_remainder), size, batch_size, drop_remainder
        )
        ds = ds.map(
            lambda serialized: element(parse(serialized)), num_parallel_calls=AUTOTUNE, deterministic=deterministic
        )
        return ds.prefetch(AUTOTUNE)
    # Enough blocks for one batch, parsed at once; rebatch then cuts exact batches across blocks.
    ds = ds.batch(-(-int(batch_size) // block))
    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = _with_cardinality(ds.rebatch(int(batch_size), drop_remainder=drop_remainder), size, batch_size, drop_remainder)
    if training:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda rows, s: element(_permuted(rows, s)), num_parallel_calls=AUTOTUNE, deterministic=deterministic
        )
    else:
        ds = ds.map(element, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE)


def _with_cardinality(ds: tf.data.Dataset, size: int | None, batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
    """The spec knows the split's size: Keras then knows the steps per epoch (progress bar
    totals, no "ran out of data" warning); a wrong count fails loudly at the end of a pass."""
    if size is None:
        return ds
    batches = int(size) // batch_size if drop_remainder else -(-int(size) // batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(batches))


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
    """Raise SpecHashMismatch when a checkpoint / model / run.json in `run_dir` was trained on other samples
    (`samples_dir` names the samples in the message: Samples.describe())."""
    for rel, recorded in recorded_spec_hashes(run_dir).items():
        if recorded != spec_hash:
            raise SpecHashMismatch(
                f"feature spec hash mismatch: samples {samples_dir} have spec hash {spec_hash}, "
                f"but {os.path.join(str(run_dir), rel)} was trained on spec hash {recorded}. "
                f"The samples changed under this run; train into a new --output directory "
                f"(or delete {run_dir}) instead of resuming or overwriting it."
            )


def open_samples(samples_dir: str, run_dir: str | None = None, dates: dict | None = None) -> Samples:
    """The samples of SAMPLES (with `dates`, those days of a date-partitioned SAMPLES: selection.py), their
    specs loaded and validated; with `run_dir`, refuse samples the run was not trained on."""
    samples = select_samples(samples_dir, dates)
    if run_dir is not None:
        check_run_spec_hash(run_dir, samples.spec_hash, samples.describe())
    return samples
