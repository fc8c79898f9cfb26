"""Encoding rows as `tf.train.Example` bytes and writing sharded TFRecord from Spark.

The encoder writes the protobuf wire format directly (Example -> Features ->
map<string, Feature>), with per-feature prefixes computed once, so encoding
needs no TensorFlow object per row. Its output parses with
`tf.io.parse_example` exactly like a `tf.train.Example` built value by value
(see tests/test_tfrecord.py).

`ExampleEncoder` encodes one row at a time and is the readable reference;
the writer uses the vectorized `pipelines.samples.example_batch.frame_batch`, which
produces the same bytes for whole Arrow batches, already framed as TFRecord
(length, masked CRC32C), so a batch is one file write.

The writer runs inside Spark tasks (`mapInArrow`): each task writes its own
shard per split and returns one small row of counts, so sample data never
reaches the driver. Shards are uncompressed or one standard gzip stream
each (COMPRESSIONS). With `rows_per_record` n > 1 a record is a block of n
samples (docs/feature_spec.md, "Record layout"): each shard's rows are shuffled
(seeded by the task's partition) and cut into blocks, only its last block shorter.
"""

from __future__ import annotations

import posixpath
import zlib
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from pipelines.samples.example_batch import frame_batch, varint

BYTES, FLOAT, INT64 = "string", "float32", "int64"


def _len_delimited(field: int, payload: bytes) -> bytes:
    return varint((field << 3) | 2) + varint(len(payload)) + payload


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
            self.features.append((name, dtype, varint((1 << 3) | 2) + varint(len(key)) + key))

    @staticmethod
    def _feature_bytes(dtype: str, value) -> bytes:
        if dtype == INT64:
            values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
            packed = b"".join(varint(int(v)) for v in values)
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
            entry = prefix + varint((2 << 3) | 2) + varint(len(feature)) + feature
            entries.append(_len_delimited(1, entry))
        return _len_delimited(1, b"".join(entries))


class Compression(NamedTuple):
    """How shards are compressed: the file extension, TFRecordDataset's `compression_type`,
    and a factory of a compressor object (`compress`, `flush`), None for no compression."""

    extension: str
    tf_type: str
    compressor: Callable | None


def _zlib_gzip(level: int) -> Callable:
    return lambda: zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip container


def _isal_gzip(level: int) -> Callable:
    def make():
        from isal import isal_zlib  # only where the option is used

        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)

    return make


# All gzip options write one standard gzip stream per shard: TFRecordDataset(..., "GZIP") reads any.
COMPRESSIONS = {
    "none": Compression(".tfrecord", "", None),
    "gzip": Compression(".tfrecord.gz", "GZIP", _zlib_gzip(6)),  # zlib's default level
    "gzip_fast": Compression(".tfrecord.gz", "GZIP", _isal_gzip(1)),  # ISA-L igzip: about zlib -1's size, 5x faster
}
# Measured (benchmarks/encoding.py): gzip_fast writes at about the Parquet write's time, like
# none, with files ~4x smaller than none and read cost like gzip's; gzip doubles the write time.
DEFAULT_COMPRESSION = "gzip_fast"


def compression_options(name: str) -> Compression:
    if name not in COMPRESSIONS:
        raise ValueError(f"unknown TFRecord compression {name!r}; expected one of {sorted(COMPRESSIONS)}")
    return COMPRESSIONS[name]


class ShardWriter:
    """One shard: framed records go to a temporary file, one write per batch; `commit` renames it."""

    def __init__(self, final: str, attempt: int, compression: Compression):
        import tensorflow as tf

        from pipelines import storage

        storage.register_file_system(final)  # s3://, hdfs:// shards: tensorflow-io's file systems
        self.final = final
        # A retried task writes its own temporary file; the rename in `commit` makes it whole.
        self.temporary = f"{final}.attempt{attempt}.tmp"
        tf.io.gfile.makedirs(posixpath.dirname(final))
        self._file = tf.io.gfile.GFile(self.temporary, "wb")
        self._compressor = compression.compressor() if compression.compressor else None
        self.rows = self.positives = 0

    def write(self, framed) -> None:
        data = self._compressor.compress(framed) if self._compressor else framed.tobytes()
        if data:
            self._file.write(data)

    def close(self) -> None:
        if self._file is None:
            return
        try:
            if self._compressor:
                self._file.write(self._compressor.flush())
        finally:
            self._file.close()
            self._file = None

    def commit(self) -> None:
        import tensorflow as tf

        tf.io.gfile.rename(self.temporary, self.final, overwrite=True)


class BlockCutter:
    """Cuts one shard's rows into blocks of `rows_per_record` rows.

    Rows are shuffled before they are cut, so a block is not a run of neighbouring samples;
    the rows short of a whole block wait for the next batch, so that only the shard's last
    block (`last_block`) is shorter.
    """

    def __init__(self, rows_per_record: int, rng: np.random.Generator):
        self.rows_per_record = rows_per_record
        self.rng = rng
        self.waiting = None

    def whole_blocks(self, rows):
        """`rows` (and the rows waiting) in a random order, as many as make whole blocks."""
        import pyarrow as pa

        rows = pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows
        if self.waiting is not None:
            rows = pa.concat_tables([self.waiting, rows])
        rows = rows.take(self.rng.permutation(rows.num_rows))
        whole = rows.num_rows - rows.num_rows % self.rows_per_record
        self.waiting = rows.slice(whole)
        return rows.slice(0, whole)

    def last_block(self):
        return self.waiting


def _grouped_by_split(batch, split_column: str):
    """`batch` with each split's rows contiguous (one take, not a filter per split), and
    (split, first row, end row) of each split."""
    import pyarrow.compute as pc

    values = batch.column(split_column)
    splits = pc.unique(values)
    if len(splits) <= 1:
        return batch, [(split, 0, batch.num_rows) for split in splits.to_pylist()]
    codes = pc.index_in(values, value_set=splits).to_numpy(zero_copy_only=False)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(splits)))]).tolist()
    return batch.take(np.argsort(codes, kind="stable")), list(zip(splits.to_pylist(), bounds, bounds[1:]))


def write_partition_shards(
    batches: Iterable,
    features: list[tuple[str, str]],
    output_dir: str,
    split_column: str = "split",
    label_column: str = "label",
    compression: str = DEFAULT_COMPRESSION,
    rows_per_record: int = 1,
) -> Iterator:
    """mapInArrow body: write this task's rows to `{output_dir}/{split}/part-NNNNN{extension}`.

    Yields one Arrow batch of (split, path, rows, positives) per shard written; rows and
    positives count samples, whatever the number of rows per record.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark import TaskContext

    options = compression_options(compression)
    context = TaskContext.get()
    partition = context.partitionId() if context else 0
    attempt = context.attemptNumber() if context else 0
    shards: dict[str, ShardWriter] = {}
    cutters: dict[str, BlockCutter] = {}
    rng = np.random.default_rng(partition)  # a rerun of the task cuts the same blocks

    def write_blocks(split, rows):
        if rows is not None and rows.num_rows:
            shards[split].write(frame_batch(rows, features, min(rows_per_record, rows.num_rows)).data)

    try:
        for batch in batches:
            batch, groups = _grouped_by_split(batch, split_column)
            if rows_per_record == 1:
                # One encoding per batch: its records come out grouped by split, one slice each.
                records = frame_batch(batch, features)
                offsets = np.concatenate([[0], np.cumsum(records.lengths)]).tolist()
            for split, first, end in groups:
                if split not in shards:
                    final = posixpath.join(output_dir, split, f"part-{partition:05d}{options.extension}")
                    shards[split] = ShardWriter(final, attempt, options)
                    cutters[split] = BlockCutter(rows_per_record, rng)
                shard = shards[split]
                if rows_per_record == 1:
                    shard.write(records.data[offsets[first] : offsets[end]])
                else:  # blocks never mix splits
                    write_blocks(split, cutters[split].whole_blocks(batch.slice(first, end - first)))
                shard.rows += end - first
                if label_column in batch.schema.names:
                    labels = batch.column(label_column).slice(first, end - first)
                    shard.positives += int(pc.sum(labels).as_py() or 0)
        if rows_per_record > 1:
            for split, cutter in cutters.items():
                write_blocks(split, cutter.last_block())
    finally:
        for shard in shards.values():
            shard.close()
    for shard in shards.values():
        shard.commit()
    if shards:
        yield pa.RecordBatch.from_pydict(
            {
                "split": list(shards),
                "path": [s.final for s in shards.values()],
                "rows": [s.rows for s in shards.values()],
                "positives": [s.positives for s in shards.values()],
            }
        )


SHARD_SCHEMA = "split string, path string, rows long, positives long"


def write_tfrecords(
    df,
    features: list[tuple[str, str]],
    output_dir: str,
    compression: str = DEFAULT_COMPRESSION,
    rows_per_record: int = 1,
):
    """Write every row of `df` (which has a `split` column) as TFRecord shards.

    `compression` is a key of COMPRESSIONS ("none", "gzip", "gzip_fast"); it decides the
    shard extension and the `compression_type` a reader passes to TFRecordDataset.
    `rows_per_record` > 1 writes blocks of that many samples per record (the spec's
    `rows_per_record`); shuffle `df` within its partitions first, since a block keeps its
    rows together for good. Returns a small DataFrame of per-shard counts (one row per shard written).
    """
    compression_options(compression)  # fail on the driver, not in every task
    if isinstance(rows_per_record, bool) or not isinstance(rows_per_record, int) or rows_per_record < 1:
        raise ValueError(f"rows_per_record must be a positive integer, got {rows_per_record!r}")
    columns = [name for name, _ in features]
    missing = [c for c in columns + ["split"] if c not in df.columns]
    if missing:
        raise ValueError(f"cannot write TFRecords: columns {missing} are missing")
    selected = df.select(*dict.fromkeys(columns + ["split"]))

    def run(batches):
        return write_partition_shards(
            batches, features, output_dir, compression=compression, rows_per_record=rows_per_record
        )

    return selected.mapInArrow(run, SHARD_SCHEMA)
