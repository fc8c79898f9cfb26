"""Encoding rows as `tf.train.Example` bytes and writing sharded gzip TFRecord from Spark.

The encoder writes the protobuf wire format directly (Example -> Features ->
map<string, Feature>), with per-feature prefixes computed once, so encoding
needs no TensorFlow object per row. Its output parses with
`tf.io.parse_example` exactly like a `tf.train.Example` built value by value
(see tests/test_tfrecord.py).

`ExampleEncoder` encodes one row at a time and is the readable reference;
the writer uses the vectorized `pipelines.example_batch.encode_batch`, which
produces the same bytes for whole Arrow batches.

The writer runs inside Spark tasks (`mapInArrow`): each task writes its own
shard per split and returns one small row of counts, so sample data never
reaches the driver.
"""
from __future__ import annotations

import posixpath
import struct
from typing import Iterable, Iterator

import numpy as np

BYTES, FLOAT, INT64 = "string", "float32", "int64"


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _len_delimited(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload


class ExampleEncoder:
    """Encodes dict-like rows into serialized `tf.train.Example` bytes.

    `features`: list of (name, dtype) with dtype in {"string", "float32", "int64"}.
    A value may be a scalar, a list/array, or None (the feature is then left out).
    """

    def __init__(self, features: list[tuple[str, str]]):
        self.features = []
        for name, dtype in features:
            if dtype not in (BYTES, FLOAT, INT64):
                raise ValueError(f"feature '{name}': unsupported dtype {dtype!r}")
            key = name.encode("utf-8")
            # map entry = {1: key, 2: Feature}; the Feature's bytes follow the prefix.
            self.features.append((name, dtype, _varint((1 << 3) | 2) + _varint(len(key)) + key))

    @staticmethod
    def _feature_bytes(dtype: str, value) -> bytes:
        if dtype == INT64:
            values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
            packed = b"".join(_varint(int(v)) for v in values)
            inner = _len_delimited(1, packed) if values is not None and len(values) else b""
            return _len_delimited(3, inner)
        if dtype == FLOAT:
            values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
            packed = np.asarray(values, dtype="<f4").tobytes()
            inner = _len_delimited(1, packed) if len(values) else b""
            return _len_delimited(2, inner)
        values = value if isinstance(value, (list, tuple)) else [value]
        inner = b"".join(_len_delimited(1, v.encode("utf-8") if isinstance(v, str) else bytes(v)) for v in values)
        return _len_delimited(1, inner)

    def encode(self, row: dict) -> bytes:
        entries = []
        for name, dtype, prefix in self.features:
            value = row.get(name)
            if value is None:
                continue
            feature = self._feature_bytes(dtype, value)
            entry = prefix + _varint((2 << 3) | 2) + _varint(len(feature)) + feature
            entries.append(_len_delimited(1, entry))
        return _len_delimited(1, b"".join(entries))


def write_partition_shards(
    batches: Iterable,
    features: list[tuple[str, str]],
    output_dir: str,
    split_column: str = "split",
    label_column: str = "label",
) -> Iterator:
    """mapInArrow body: write this task's rows to `{output_dir}/{split}/part-NNNNN.tfrecord.gz`.

    Yields one Arrow batch of (split, path, rows, positives) per shard written.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import tensorflow as tf

    from pipelines.example_batch import encode_batch, iter_records
    from pyspark import TaskContext

    context = TaskContext.get()
    partition = context.partitionId() if context else 0
    attempt = context.attemptNumber() if context else 0
    writers, counts, paths = {}, {}, {}
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    try:
        for batch in batches:
            split_values = batch.column(split_column)
            for split in pc.unique(split_values).to_pylist():
                rows = batch.filter(pc.equal(split_values, split))
                writer = writers.get(split)
                if writer is None:
                    final = posixpath.join(output_dir, split, f"part-{partition:05d}.tfrecord.gz")
                    # A retried task writes its own temporary file; the rename below makes it whole.
                    temporary = f"{final}.attempt{attempt}.tmp"
                    tf.io.gfile.makedirs(posixpath.dirname(final))
                    writer = writers[split] = tf.io.TFRecordWriter(temporary, options)
                    paths[split] = (temporary, final)
                    counts[split] = [0, 0]
                for record in iter_records(encode_batch(rows, features)):
                    writer.write(record)
                counts[split][0] += rows.num_rows
                if label_column in rows.schema.names:
                    counts[split][1] += int(pc.sum(rows.column(label_column)).as_py() or 0)
    finally:
        for writer in writers.values():
            writer.close()
    for split, (temporary, final) in paths.items():
        tf.io.gfile.rename(temporary, final, overwrite=True)
    if counts:
        yield pa.RecordBatch.from_pydict({
            "split": list(counts),
            "path": [paths[s][1] for s in counts],
            "rows": [counts[s][0] for s in counts],
            "positives": [counts[s][1] for s in counts],
        })


SHARD_SCHEMA = "split string, path string, rows long, positives long"


def write_tfrecords(df, features: list[tuple[str, str]], output_dir: str):
    """Write every row of `df` (which has a `split` column) as gzip TFRecord shards.

    Returns a small DataFrame of per-shard counts (one row per shard written).
    """
    columns = [name for name, _ in features]
    missing = [c for c in columns + ["split"] if c not in df.columns]
    if missing:
        raise ValueError(f"cannot write TFRecords: columns {missing} are missing")
    selected = df.select(*dict.fromkeys(columns + ["split"]))

    def run(batches):
        return write_partition_shards(batches, features, output_dir)

    return selected.mapInArrow(run, SHARD_SCHEMA)
