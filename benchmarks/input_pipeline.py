"""Does the input pipeline ever starve training? Read+parse rate against each model's step rate.

    python -m benchmarks.input_pipeline --samples SAMPLES [--batch-size 1024] [--steps 200]

- `read+parse`: examples per second of `pipelines.tf_input.make_dataset` for the train split
  (file shuffle, parallel interleave of the gzip shards, record shuffle, batch, then
  `tf.io.parse_example` on the whole batch, prefetch), iterated with no model.
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
    from pipelines.tf_input import make_dataset

    ds = make_dataset(samples, spec, "train", batch_size, training=True, shuffle_buffer=100_000, seed=1,
                      repeat=True)
    it = iter(ds)
    for _ in range(20):  # warm-up: fills the shuffle buffer partly, autotunes
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch_size / (time.perf_counter() - start)


def step_rate(name: str, samples: str, spec: dict, batch_size: int, steps: int) -> float:
    import keras

    from models import build_model, compile_model
    from pipelines.tf_input import make_dataset

    keras.utils.set_random_seed(1)
    model = build_model(name, spec, PARAMS)
    compile_model(model, PARAMS)
    batches = min(steps, 50)
    cached = make_dataset(samples, spec, "train", batch_size, training=True, shuffle_buffer=0, seed=1,
                          repeat=True, drop_remainder=True).take(batches).cache().repeat()
    model.fit(cached, steps_per_epoch=batches, epochs=1, verbose=0)  # warm-up: tracing, cache fill
    start = time.perf_counter()
    model.fit(cached, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", required=True)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--models", default="emb_mlp,wide_deep,deepfm,dcn,dcn_v2")
    args = parser.parse_args(argv)

    from pipelines.feature_spec import load_spec

    spec = load_spec(args.samples)
    result = {"batch_size": args.batch_size, "steps": args.steps,
              "read_parse_examples_per_second": read_parse_rate(args.samples, spec, args.batch_size, args.steps),
              "train_step_examples_per_second": {}}
    for name in args.models.split(","):
        result["train_step_examples_per_second"][name] = step_rate(name, args.samples, spec, args.batch_size,
                                                                   args.steps)
    result["input_over_step"] = {name: result["read_parse_examples_per_second"] / rate
                                 for name, rate in result["train_step_examples_per_second"].items()}
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
