"""TFRecord encoding: the project's writer against a naive per-row encoder and Spark's Parquet write.

    python -m benchmarks.encoding --rows 1000000 --workdir /tmp/bench/encoding

A sample-shaped DataFrame (the columns and types of a real SAMPLES row: ids,
20-long history sequences, genre lists, normalized floats, metadata strings) is
written once as Parquet. Each contender then reads that Parquet and writes it out
again in one Spark job, with the same partitions:

- `parquet`: Spark's own Parquet write (the baseline);
- `ours`: `pipelines.tfrecord.write_tfrecords` (vectorized Arrow-batch encoder, gzip TFRecord);
- `naive`: the same `mapInArrow` + gzip TFRecordWriter harness, but one `tf.train.Example`
  built value by value per row, the way most peers write TFRecord.

So the three differ only in how a row becomes bytes. The naive encoder runs on at most
`--naive-rows` rows (it is slow); rates are rows per second.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from benchmarks.measure import emit, timed

HIST_LEN, TOP_GENRES, MAX_GENRES = 20, 3, 4
NUMERICS = ["hist_click_len", "hist_skip_len", "user_impressions", "user_clicks", "item_impressions",
            "item_clicks", "item_ctr", "item_impressions_recent", "item_clicks_recent", "item_ctr_recent",
            "release_year"]
CATEGORICALS = ["user_idx", "item_idx", "position_idx", "item_primary_genre", "item_ctr_bucket",
                "item_impressions_bucket", "release_year_bucket", "label"]
SEQUENCES = {"hist_click_items": HIST_LEN, "hist_skip_items": HIST_LEN, "user_top_genres": TOP_GENRES,
             "item_genres": MAX_GENRES}
FEATURES = ([(c, "int64") for c in CATEGORICALS] + [(s, "int64") for s in SEQUENCES]
            + [(n, "float32") for n in NUMERICS]
            + [("user_id", "string"), ("item_id", "string"), ("ts", "int64"), ("p_click", "float32")])


def _padded_ids(n, salt: int):
    """Element k of a sequence: an id in [2, 5002) for k < n, else the padding 0."""
    from pyspark.sql import functions as F

    def element(k):
        return F.when(k < n, F.abs(F.xxhash64(F.col("id"), k, F.lit(salt))) % 5000 + 2).otherwise(F.lit(0)).cast("long")
    return element


def sample_frame(spark, rows: int, partitions: int):
    """Rows shaped like SAMPLES rows, with varied values (deterministic in the row id)."""
    from pyspark.sql import functions as F

    df = spark.range(0, rows, numPartitions=partitions)
    h = lambda salt, mod: (F.abs(F.xxhash64(F.col("id"), F.lit(salt))) % mod).cast("long")  # noqa: E731
    cols = [h(i, 10_000 if i < 2 else 50).alias(c) for i, c in enumerate(CATEGORICALS[:-1])]
    cols.append(h(99, 2).alias("label"))
    for j, (name, length) in enumerate(SEQUENCES.items()):
        # A variable-length prefix of real ids, padded with 0 like the pipeline's sequences.
        cols.append(F.transform(F.sequence(F.lit(0), F.lit(length - 1)), _padded_ids(h(100 + j, length + 1), j))
                    .alias(name))
    for k, name in enumerate(NUMERICS):
        cols.append(((h(200 + k, 100_000) / 50_000.0) - 1.0).cast("float").alias(name))
    cols += [F.concat(F.lit("u"), h(300, 10_000).cast("string")).alias("user_id"),
             F.concat(F.lit("i"), h(301, 5_000).cast("string")).alias("item_id"),
             (F.lit(1_767_225_600) + h(302, 2_000_000)).alias("ts"),
             (h(303, 1000) / 1000.0).cast("float").alias("p_click"),
             F.when(h(304, 10) < 8, "train").when(h(304, 10) < 9, "valid").otherwise("test").alias("split")]
    return df.select(*cols)


def naive_writer(features, output_dir):
    """mapInArrow body: one tf.train.Example per row, built value by value."""
    def run(batches):
        import pyarrow as pa
        import tensorflow as tf
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        writers, counts = {}, {}
        try:
            for batch in batches:
                for row in batch.to_pylist():
                    feature = {}
                    for name, dtype in features:
                        value = row[name]
                        if value is None:
                            continue
                        values = value if isinstance(value, list) else [value]
                        if dtype == "int64":
                            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                        elif dtype == "float32":
                            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                        else:
                            feature[name] = tf.train.Feature(
                                bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
                    split = row["split"]
                    if split not in writers:
                        os.makedirs(os.path.join(output_dir, split), exist_ok=True)
                        writers[split] = tf.io.TFRecordWriter(
                            os.path.join(output_dir, split, f"part-{part:05d}.tfrecord.gz"), options)
                        counts[split] = 0
                    writers[split].write(tf.train.Example(features=tf.train.Features(feature=feature))
                                         .SerializeToString())
                    counts[split] += 1
        finally:
            for writer in writers.values():
                writer.close()
        yield pa.RecordBatch.from_pydict({"split": list(counts), "rows": list(counts.values())})
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-rows", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)

    from pipelines.spark import get_spark
    from pipelines.tfrecord import write_tfrecords

    spark = get_spark("bench-encoding", {"spark.sql.shuffle.partitions": str(args.partitions)})
    shutil.rmtree(args.workdir, ignore_errors=True)
    src = os.path.join(args.workdir, "source.parquet")
    sample_frame(spark, args.rows, args.partitions).write.parquet(src)
    naive_rows = min(args.rows, args.naive_rows)
    naive_src = src
    if naive_rows < args.rows:
        naive_src = os.path.join(args.workdir, "source_naive.parquet")
        spark.read.parquet(src).limit(naive_rows).repartition(args.partitions).write.parquet(naive_src)

    seconds = {}
    # Warm-up: JVM, Python workers and TensorFlow imports in the workers, on a few rows.
    write_tfrecords(spark.read.parquet(src).limit(1000), FEATURES, os.path.join(args.workdir, "warm")).collect()
    with timed(seconds, "parquet"):
        spark.read.parquet(src).write.parquet(os.path.join(args.workdir, "out_parquet"))
    with timed(seconds, "ours"):
        shards = write_tfrecords(spark.read.parquet(src), FEATURES, os.path.join(args.workdir, "out_ours")).collect()
    assert sum(s["rows"] for s in shards) == args.rows
    with timed(seconds, "naive"):
        shards = spark.read.parquet(naive_src).mapInArrow(
            naive_writer(FEATURES, os.path.join(args.workdir, "out_naive")), "split string, rows long").collect()
    assert sum(s["rows"] for s in shards) == naive_rows
    rates = {"parquet": args.rows / seconds["parquet"], "ours": args.rows / seconds["ours"],
             "naive": naive_rows / seconds["naive"]}
    emit({"rows": args.rows, "naive_rows": naive_rows, "seconds": seconds, "rows_per_second": rates,
          "ours_vs_naive": rates["ours"] / rates["naive"],
          "ours_time_vs_parquet_time": rates["parquet"] / rates["ours"]})
    spark.stop()
    shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
