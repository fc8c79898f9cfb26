"""Does the input pipeline ever starve training? Read+parse rate against each model's step rate.

    python -m benchmarks.input_pipeline --samples SAMPLES [--batch-size 1024] [--steps 200]
        [--rows-per-record 1,256 --workdir DIR]

- `read+parse`: examples per second of `pipelines.training.dataset.make_dataset` for the train split
  (file shuffle, parallel interleave of the gzip shards, record shuffle, batch, then
  `tf.io.parse_example` on the whole batch, prefetch), iterated with no model. It reads
  whatever record layout the spec names (`rows_per_record`).
- `--rows-per-record 1,256`: also rewrite the train split of SAMPLES once per layout into
  `--workdir` (shard by shard, rows shuffled, through the project's writer with the
  `--compression` option, no Spark) and report read+parse for each layout
  (`read_parse_by_rows_per_record`, `input_over_step_by_rows_per_record`).
- `train step` of each model: examples per second of `model.fit` on the same batches held in
  memory (`take(N).cache().repeat()`), so the step rate excludes reading and parsing.

Starvation ratio = read+parse rate / step rate: above 1 the model never waits for input
(both share the same CPU cores here, so this is the rate each could reach alone).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.measure import emit  # noqa: E402

PARAMS = {"embedding_dim": 16, "hidden_units": [256, 128, 64]}


def read_parse_rate(samples: str, spec: dict, batch_size: int, steps: int) -> float:
    from pipelines.training.dataset import Samples, make_dataset

    ds = make_dataset(
        Samples.of(samples, spec), "train", batch_size, training=True, shuffle_buffer=100_000, seed=1, repeat=True
    )
    it = iter(ds)
    for _ in range(20):  # warm-up: fills the shuffle buffer partly, autotunes
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch_size / (time.perf_counter() - start)


def _shard_table(path: str, spec: dict, parse):
    """Every row of one shard as an Arrow table (with a `split` column), in a random order:
    the stand-in for the Spark-side shuffle before writing."""
    import numpy as np
    import pyarrow as pa
    import tensorflow as tf

    from feature_spec import compression_type

    compression = compression_type(spec)
    parts = [parse(batch) for batch in tf.data.TFRecordDataset(path, compression_type=compression).batch(8192)]
    columns = {}
    for entry in spec["features"]:
        values = np.concatenate([part[entry["name"]].numpy() for part in parts])
        if entry["shape"]:
            width = values.shape[1]
            offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32) * width)
            columns[entry["name"]] = pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))
        else:
            columns[entry["name"]] = pa.array(values.tolist() if values.dtype == object else values)
    table = pa.table(columns)
    table = table.append_column("split", pa.array(["train"] * table.num_rows))
    return table.take(np.random.default_rng(0).permutation(table.num_rows))


def relayout(samples: str, spec: dict, output: str, rows_per_record: int, compression: str) -> dict:
    """The train split of `samples` rewritten with `rows_per_record` rows per record; returns its spec."""
    import json
    import shutil

    from feature_spec import SPEC_FILE, compute_spec_hash
    from pipelines.samples.tfrecord import compression_options, write_partition_shards
    from pipelines.training.dataset import Samples, record_parser

    options = compression_options(compression)
    features = [(entry["name"], entry["dtype"]) for entry in spec["features"]]
    parse = record_parser(spec)
    shutil.rmtree(output, ignore_errors=True)
    os.makedirs(os.path.join(output, "train"))
    for k, path in enumerate(Samples.of(samples, spec).files("train")):
        # Outside Spark every shard is part-00000: write each alone, then give it its number.
        staging = os.path.join(output, f"shard{k}")
        written = list(
            write_partition_shards(
                iter([_shard_table(path, spec, parse)]),
                features,
                staging,
                compression=compression,
                rows_per_record=rows_per_record,
            )
        )
        final = os.path.join(output, "train", f"part-{k:05d}{options.extension}")
        os.rename(written[0].column("path")[0].as_py(), final)
        shutil.rmtree(staging)
    new = {key: value for key, value in spec.items() if key not in ("spec_hash", "rows_per_record")}
    new["compression"] = options.tf_type
    new["splits"] = {"train": dict(spec["splits"]["train"], pattern=f"train/part-*{options.extension}")}
    if rows_per_record != 1:
        new["rows_per_record"] = rows_per_record
    new["spec_hash"] = compute_spec_hash(new)
    with open(os.path.join(output, SPEC_FILE), "w") as fh:
        json.dump(new, fh, indent=2)
    return new


def step_rate(name: str, samples: str, spec: dict, batch_size: int, steps: int) -> float:
    import keras

    from models import build_model, compile_model
    from pipelines.training.dataset import Samples, make_dataset

    keras.utils.set_random_seed(1)
    model = build_model(name, spec, PARAMS)
    compile_model(model, PARAMS)
    batches = min(steps, 50)
    cached = (
        make_dataset(
            Samples.of(samples, spec),
            "train",
            batch_size,
            training=True,
            shuffle_buffer=0,
            seed=1,
            repeat=True,
            drop_remainder=True,
        )
        .take(batches)
        .cache()
        .repeat()
    )
    model.fit(cached, steps_per_epoch=batches, epochs=1, verbose=0)  # warm-up: tracing, cache fill
    start = time.perf_counter()
    model.fit(cached, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", required=True)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--models", default=None, help="comma-separated; default: every model of models/registry.py")
    parser.add_argument("--rows-per-record", default="", help="comma-separated layouts to rewrite and compare")
    parser.add_argument("--compression", default="gzip_fast", help="of the rewritten layouts")
    parser.add_argument("--workdir", default="/tmp/ctr-bench/input_layouts", help="for the rewritten layouts")
    args = parser.parse_args(argv)

    from feature_spec import load_spec

    spec = load_spec(args.samples)
    result = {
        "batch_size": args.batch_size,
        "steps": args.steps,
        "read_parse_examples_per_second": read_parse_rate(args.samples, spec, args.batch_size, args.steps),
        "train_step_examples_per_second": {},
    }
    if args.rows_per_record:
        result["read_parse_by_rows_per_record"] = {}
        for n in [int(v) for v in args.rows_per_record.split(",")]:
            folder = os.path.join(args.workdir, f"rows_per_record_{n}")
            layout = relayout(args.samples, spec, folder, n, args.compression)
            result["read_parse_by_rows_per_record"][n] = read_parse_rate(folder, layout, args.batch_size, args.steps)
    from models import MODEL_NAMES

    for name in args.models.split(",") if args.models else MODEL_NAMES:
        result["train_step_examples_per_second"][name] = step_rate(
            name, args.samples, spec, args.batch_size, args.steps
        )
    steps = result["train_step_examples_per_second"]
    result["input_over_step"] = {name: result["read_parse_examples_per_second"] / rate for name, rate in steps.items()}
    if args.rows_per_record:
        result["input_over_step_by_rows_per_record"] = {
            n: {name: rate / step for name, step in steps.items()}
            for n, rate in result["read_parse_by_rows_per_record"].items()
        }
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
