"""Peer benchmark: train DeepCTR (https://github.com/shenweichen/DeepCTR) on our samples.

    python -m benchmarks.peer_deepctr --samples SAMPLES --model {deepfm,dcn,wide_deep} \
        --embedding-dim 16 --hidden-units 256,128,64 --batch-size 1024 --epochs 1 \
        [--cross-layers 3] --learning-rate 1e-3 [--seed 42]

prints one `RESULT {json}` line on stdout (benchmarks.measure.emit): model, deepctr_version, examples (train rows), epochs,
load_seconds (TFRecord -> NumPy, train and test), train_seconds (`model.fit` alone),
examples_per_second (examples * epochs / train_seconds) and test_auc
(`pipelines.training.metrics.auc` on the test split), for a side-by-side look at our own models.

It reads the same SAMPLES directory as `jobs.train`: the spec's model inputs become
DeepCTR feature columns (categorical -> SparseFeat, sequence / multi_categorical ->
VarLenSparseFeat with mean pooling over the non-zero indices, numeric -> DenseFeat of the
feature's width: 1 for a scalar, d for a vector [d]), features with the same `embedding_table` share one embedding (`embedding_name`), like
ours. Unlike ours, the splits are loaded into NumPy arrays first (DeepCTR's way), so
`load_seconds` is reported apart and `train_seconds` excludes it.

Why a process of its own: DeepCTR predates Keras 3 and needs `tf.keras` to be Keras 2
(the `tf_keras` package), which TensorFlow picks once, at import, from
TF_USE_LEGACY_KERAS. Our models use Keras 3, so the two cannot share a process; this
module sets the variable before anything imports TensorFlow.

Install (benchmark only; TensorFlow stays at the project's 2.17.1):

    .venv/bin/pip install "deepctr==0.9.4" "tf_keras==2.17.*" "tensorflow==2.17.1"
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported anywhere

import argparse  # noqa: E402
import contextlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import requests  # noqa: E402

# deepctr/__init__ asks PyPI for newer releases in a non-daemon thread (no timeout) and may
# print to stdout: answer it locally, so runs stay offline, quiet and exit promptly.
requests.get = lambda *args, **kwargs: types.SimpleNamespace(status_code=None)

import deepctr  # noqa: E402
import tensorflow as tf  # noqa: E402
from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat  # noqa: E402
from deepctr.models import DCN, WDL, DeepFM  # noqa: E402

from benchmarks.measure import emit  # noqa: E402
from feature_spec import load_spec, model_inputs, numeric_width  # noqa: E402
from pipelines.training.dataset import Samples, make_dataset  # noqa: E402
from pipelines.training.metrics import auc  # noqa: E402

LOAD_BATCH = 8192


def feature_columns(spec: dict, embedding_dim: int) -> list:
    columns = []
    for entry in model_inputs(spec):
        name, kind = entry["name"], entry["kind"]
        if kind == "numeric":
            columns.append(DenseFeat(name, numeric_width(entry)))
            continue
        sparse = SparseFeat(
            name,
            int(entry["vocab_size"]),
            embedding_dim,
            dtype="int64",
            embedding_name=entry.get("embedding_table", name),
        )
        if kind == "categorical":
            columns.append(sparse)
        elif kind in ("sequence", "multi_categorical"):
            # No length_name: DeepCTR then pools with the embedding's mask_zero mask, so
            # index 0 (our padding) is left out of the mean; an empty list pools to zeros.
            columns.append(VarLenSparseFeat(sparse, maxlen=int(entry["shape"][0]), combiner="mean"))
        else:
            raise ValueError(f"feature '{name}' has kind {kind!r}, which this benchmark does not map")
    return columns


def load_split(samples: str, spec: dict, split: str) -> tuple[dict, np.ndarray]:
    """One split as {feature: array} (scalars as [n, 1], DeepCTR's input shape) and labels [n]."""
    parts, labels = {}, []
    for features, label in make_dataset(Samples.of(samples, spec), split, LOAD_BATCH).as_numpy_iterator():
        for name, value in features.items():
            parts.setdefault(name, []).append(value.reshape(len(value), -1))
        labels.append(label.reshape(-1))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}, np.concatenate(labels)


def build_model(args, columns):
    hidden = tuple(int(units) for units in args.hidden_units.split(","))
    if args.model == "deepfm":
        return DeepFM(columns, columns, dnn_hidden_units=hidden, seed=args.seed)
    if args.model == "dcn":
        return DCN(columns, columns, cross_num=args.cross_layers, dnn_hidden_units=hidden, seed=args.seed)
    return WDL(columns, columns, dnn_hidden_units=hidden, seed=args.seed)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", required=True, help="samples directory written by jobs.build_samples")
    parser.add_argument("--model", required=True, choices=("deepfm", "dcn", "wide_deep"))
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--hidden-units", default="256,128,64", help="comma-separated DNN layer sizes")
    parser.add_argument("--cross-layers", type=int, default=3, help="cross layers of dcn")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    tf.keras.utils.set_random_seed(args.seed)
    spec = load_spec(args.samples)

    start = time.perf_counter()
    x_train, y_train = load_split(args.samples, spec, "train")
    x_test, y_test = load_split(args.samples, spec, "test")
    load_seconds = time.perf_counter() - start

    model = build_model(args, feature_columns(spec, args.embedding_dim))
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=args.learning_rate), loss="binary_crossentropy")
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0)
    train_seconds = time.perf_counter() - start

    scores = model.predict(x_test, batch_size=LOAD_BATCH, verbose=0)
    examples = int(y_train.size)
    return {
        "model": args.model,
        "deepctr_version": deepctr.__version__,
        "examples": examples,
        "epochs": args.epochs,
        "load_seconds": round(load_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "examples_per_second": round(examples * args.epochs / train_seconds, 1),
        "test_auc": round(auc(y_test, scores), 6),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # DeepCTR prints (DCN: "CrossNet parameterization")
        result = run(args)
    emit(result)  # stdout carries this one RESULT line only
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
