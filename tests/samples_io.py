"""Test helpers: read a SAMPLES directory back into pandas (small data only)."""

import glob
import json
import os

import numpy as np
import pandas as pd
import tensorflow as tf

from feature_spec import load_spec
from pipelines.training.dataset import record_parser


def shard_files(samples_dir: str, split: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(samples_dir), split, "part-*.tfrecord.gz")))


def read_split(samples_dir: str, split: str) -> pd.DataFrame:
    return read_files(load_spec(samples_dir), shard_files(samples_dir, split))


def read_files(spec: dict, files: list[str]) -> pd.DataFrame:
    """The rows of these shards, in the order they were written."""
    frames = []
    if not files:
        return pd.DataFrame()
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096)
    parse = record_parser(spec)  # either record layout (rows_per_record)
    for batch in dataset:
        parsed = parse(batch)
        frame = {}
        for name, tensor in parsed.items():
            values = tensor.numpy()
            if values.dtype == object:
                frame[name] = [v.decode() for v in values]
            else:
                frame[name] = list(values) if values.ndim > 1 else values
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def read_all(samples_dir: str) -> pd.DataFrame:
    parts = []
    for split in ("train", "valid", "test"):
        df = read_split(samples_dir, split)
        df["split"] = split
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def raw_value(spec: dict, name: str, values: np.ndarray) -> np.ndarray:
    """Undo a numeric feature's normalization."""
    entry = next(f for f in spec["features"] if f["name"] == name)
    norm = entry["normalization"]
    x = np.asarray(values, dtype=np.float64) * norm["std"] + norm["mean"]
    return np.expm1(x) if norm["log1p"] else x


def report(samples_dir: str) -> dict:
    with open(os.path.join(samples_dir, "report.json")) as fh:
        return json.load(fh)
